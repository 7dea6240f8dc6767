/* SPDX-License-Identifier: MIT */
/*
 * Check suite for the descriptor and file stages (sluice/fd.h): byte-exact
 * copies file to file, pipe to pipe and socket to socket; short writes,
 * EINTR and EAGAIN; EPIPE as an error that never kills the process; a
 * source blocked on an idle pipe woken by cancel; the atomic file sink
 * (its name only on success, nothing left behind on failure, cancel or
 * SIGKILL, no overwrite unless told, modes, the commit hook), with an
 * unnamed temporary and with the named one it falls back to; error codes
 * and messages; bad arguments and allocation failure in every
 * constructor.
 *
 * Nothing here sleeps to synchronise. A test that needs a stage thread to
 * be blocked waits for it: on a ring (sl__ring_wait_blocked), or in poll(2)
 * (the thread's current system call, read from /proc/self/task/<tid>/
 * syscall, when the kernel shows it). Helper threads are coordinated with
 * condition variables and atomics.
 *
 * Files live in a directory made per test inside one made per test case;
 * the per-case one is made and removed by an unchecked fixture, which runs
 * in the parent process, so nothing is left behind even by a test that
 * crashes. The checked fixture installs the counting allocator and checks
 * that the library holds no block and runs no thread afterwards.
 */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* pipe2, F_GETPIPE_SZ, syscall, mkdtemp */
#endif

#include "pipeutil.h"
#include "stage-int.h"     /* a sink's write op, called directly */
#include "stages/fd-int.h" /* sl__fd_no_tmpfile */

#include <sluice/fd.h>

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Fixtures and files
 * ---------------------------------------------------------------------- */

static char case_dir[1024]; /* per test case, made in the parent */
static char dir[2048];      /* per test, inside case_dir */
static int base_threads;

static void case_setup(void) {
  const char *tmp = getenv("TMPDIR");

  snprintf(case_dir, sizeof case_dir, "%s/sluice-fd-XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(case_dir) == NULL)
    ck_abort_msg("mkdtemp %s: %s", case_dir, strerror(errno));
}

static int rm_entry(const char *path, const struct stat *sb, int type,
                    struct FTW *ftw) {
  (void)sb;
  (void)type;
  (void)ftw;
  remove(path);
  return 0;
}

static void rm_tree(const char *path) {
  nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void case_teardown(void) {
  rm_tree(case_dir);
}

static void setup(void) {
  snprintf(dir, sizeof dir, "%s/t-XXXXXX", case_dir);
  ck_assert_ptr_nonnull(mkdtemp(dir));
  ck_assert_int_eq(test_alloc_install(), 0);
  base_threads = pu_thread_count();
  ck_assert_int_gt(base_threads, 0);
}

static void teardown(void) {
  fail_alloc_disarm();
  ck_assert_int_eq(test_alloc_live(), 0);
  ck_assert_int_eq(test_alloc_uninstall(), 0);
  ck_assert_int_eq(pu_threads_left(base_threads), 0);
  rm_tree(dir);
}

/* dir/name in a static buffer (one of four, so a test may hold a few). */
static const char *in_dir(const char *name) {
  static char bufs[4][PATH_MAX];
  static int next;
  char *b = bufs[next++ % 4];

  snprintf(b, PATH_MAX, "%s/%s", dir, name);
  return b;
}

/* Entries of dir (not . and ..); *hidden gets those starting with '.',
 * which is what a temporary of the file sink looks like. */
static int dir_entries(int *hidden) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;

  *hidden = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    n++;
    if (e->d_name[0] == '.')
      (*hidden)++;
  }
  closedir(d);
  return n;
}

/* The hidden entries a file sink's temporary makes in dir while it is
 * written: none when it is an unnamed file (O_TMPFILE works in dir and
 * the "atomic" test case did not turn it off), else one. */
static int temp_entries(void) {
#ifdef O_TMPFILE
  char proc[64];
  struct stat sb;
  if (sl__fd_no_tmpfile)
    return 1;
  int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0)
    return 1;
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  int named = stat(proc, &sb) != 0;
  close(fd);
  return named;
#else
  return 1;
#endif
}

/* Open descriptors of this process (entries of /proc/self/fd). */
static int fd_count(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int n = 0;

  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static bool fd_is_open(int fd) {
  return fcntl(fd, F_GETFD) != -1;
}

/* write(2) all of len bytes, retrying EINTR and short writes. */
static int write_all(int fd, const void *p, size_t len) {
  const unsigned char *c = p;

  while (len > 0) {
    ssize_t n = write(fd, c, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    c += n;
    len -= (size_t)n;
  }
  return 0;
}

/* A file of size bytes in seed's pattern; 0 or -1. */
static int write_pattern_file(const char *path, uint64_t size, uint32_t seed) {
  enum { BLOCK = 1 << 20 };
  unsigned char *b = malloc(BLOCK);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int rc = b != NULL && fd >= 0 ? 0 : -1;

  for (uint64_t at = 0; rc == 0 && at < size; at += BLOCK) {
    size_t n = size - at < BLOCK ? (size_t)(size - at) : BLOCK;
    for (size_t i = 0; i < n; i++)
      b[i] = test_pattern_byte(seed, (size_t)(at + i));
    rc = write_all(fd, b, n);
  }
  if (fd >= 0 && close(fd) != 0)
    rc = -1;
  free(b);
  return rc;
}

/* True when path holds exactly size bytes in seed's pattern. */
static bool check_pattern_file(const char *path, uint64_t size, uint32_t seed) {
  enum { BLOCK = 1 << 20 };
  unsigned char *b = malloc(BLOCK);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  uint64_t at = 0;
  bool ok = b != NULL && fd >= 0;

  while (ok) {
    ssize_t n = read(fd, b, BLOCK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      ok = n == 0 && at == size;
      break;
    }
    for (ssize_t i = 0; i < n && ok; i++)
      ok = b[i] == test_pattern_byte(seed, (size_t)(at + (uint64_t)i));
    at += (uint64_t)n;
  }
  if (fd >= 0)
    close(fd);
  free(b);
  return ok;
}

/* True when path holds exactly the string s. */
static bool file_is(const char *path, const char *s) {
  char buf[256];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n;

  if (fd < 0)
    return false;
  n = read(fd, buf, sizeof buf);
  close(fd);
  return n >= 0 && (size_t)n == strlen(s) && memcmp(buf, s, (size_t)n) == 0;
}

static int write_string_file(const char *path, const char *s, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  int rc;

  if (fd < 0)
    return -1;
  rc = write_all(fd, s, strlen(s));
  if (fchmod(fd, mode) != 0)
    rc = -1;
  return close(fd) == 0 ? rc : -1;
}

/* ------------------------------------------------------------------------
 * Pipelines
 * ---------------------------------------------------------------------- */

/* A pipeline of a then b (each freed on failure); NULL when it cannot be
 * built. */
static sl_pipeline *chain2(sl_stage *a, sl_stage *b,
                           const sl_pipeline_opts *o) {
  sl_pipeline *p = NULL;

  if (a == NULL || b == NULL || sl_pipeline_new(&p, o) != 0 ||
      sl_pipeline_chain(p, a, b, NULL) != 0) {
    sl_stage_free(a);
    sl_stage_free(b);
    sl_pipeline_free(p);
    return NULL;
  }
  return p;
}

static int start_wait(sl_pipeline *p) {
  int rc = sl_pipeline_start(p);
  int w = sl_pipeline_wait(p);

  return rc != 0 ? rc : w;
}

/* What a progress callback saw (one stage thread writes, the test reads
 * after sl_pipeline_wait). */
typedef struct progress_rec {
  long calls;
  uint64_t last, total;
  bool monotonic;
  /* Optional: cancel p once at least cancel_after bytes went through, and
   * note whether the file sink's temporary was in dir then. */
  sl_pipeline *p;
  uint64_t cancel_after;
  int hidden_then;
} progress_rec;

static void progress_init(progress_rec *r) {
  memset(r, 0, sizeof *r);
  r->monotonic = true;
  r->total = 1; /* neither 0 nor unknown: shows it was written */
}

static void progress_cb(sl_stage *stage, uint64_t bytes, uint64_t total,
                        void *arg) {
  progress_rec *r = arg;

  (void)stage;
  if (bytes < r->last)
    r->monotonic = false;
  r->calls++;
  r->last = bytes;
  r->total = total;
  if (r->p != NULL && bytes >= r->cancel_after) {
    dir_entries(&r->hidden_then);
    sl_pipeline_cancel(r->p);
    r->p = NULL;
  }
}

/* ------------------------------------------------------------------------
 * Helper threads: a pattern writer and a pattern checker on a descriptor
 * ---------------------------------------------------------------------- */

typedef struct feeder {
  pthread_t t;
  int fd;
  size_t len;
  uint32_t seed;
  bool close_fd;
  bool open_path; /* open path for writing first (a FIFO) */
  const char *path;
  int rc;
} feeder;

static void *feeder_main(void *arg) {
  feeder *f = arg;
  enum { PIECE = 50000 };
  unsigned char *b = malloc(PIECE);

  f->rc = -1;
  if (f->open_path)
    f->fd = open(f->path, O_WRONLY | O_CLOEXEC);
  if (b != NULL && f->fd >= 0) {
    f->rc = 0;
    for (size_t at = 0; at < f->len && f->rc == 0; at += PIECE) {
      size_t n = f->len - at < PIECE ? f->len - at : PIECE;
      for (size_t i = 0; i < n; i++)
        b[i] = test_pattern_byte(f->seed, at + i);
      f->rc = write_all(f->fd, b, n);
    }
  }
  if (f->close_fd && f->fd >= 0)
    close(f->fd);
  free(b);
  return NULL;
}

static int feeder_start(feeder *f, int fd, size_t len, uint32_t seed,
                        bool close_fd) {
  memset(f, 0, sizeof *f);
  f->fd = fd;
  f->len = len;
  f->seed = seed;
  f->close_fd = close_fd;
  return pthread_create(&f->t, NULL, feeder_main, f);
}

/* Reads fd to end of file, checking seed's pattern; optionally waits at a
 * gate before the first read. Blocks SIGUSR1 when asked, so that a storm
 * aimed at another thread misses it. */
typedef struct drain {
  pthread_t t;
  int fd;
  uint32_t seed;
  bool block_usr1;
  size_t got;
  long bad;
  int rc;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool gated, go;
  atomic_long *wait_hits; /* when set: start once *wait_hits >= hits */
  long hits;
} drain;

static void *drain_main(void *arg) {
  drain *d = arg;
  unsigned char b[65536];

  if (d->block_usr1) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
  }
  pthread_mutex_lock(&d->mu);
  while (d->gated && !d->go)
    pthread_cond_wait(&d->cv, &d->mu);
  pthread_mutex_unlock(&d->mu);
  while (d->wait_hits != NULL && atomic_load(d->wait_hits) < d->hits)
    sched_yield();
  for (;;) {
    ssize_t n = read(d->fd, b, sizeof b);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      d->rc = -1;
      break;
    }
    if (n == 0)
      break;
    for (ssize_t i = 0; i < n; i++)
      if (b[i] != test_pattern_byte(d->seed, d->got + (size_t)i))
        d->bad++;
    d->got += (size_t)n;
  }
  return NULL;
}

static void drain_init(drain *d, int fd, uint32_t seed) {
  memset(d, 0, sizeof *d);
  d->fd = fd;
  d->seed = seed;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->cv, NULL);
}

static int drain_start(drain *d) {
  return pthread_create(&d->t, NULL, drain_main, d);
}

static void drain_open_gate(drain *d) {
  pthread_mutex_lock(&d->mu);
  d->go = true;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
}

static void drain_fini(drain *d) {
  pthread_cond_destroy(&d->cv);
  pthread_mutex_destroy(&d->mu);
}

/* ------------------------------------------------------------------------
 * Is a stage thread blocked in poll(2)?
 * ---------------------------------------------------------------------- */

/* ------------------------------------------------------------------------
 * Copies
 * ---------------------------------------------------------------------- */

static const uint64_t copy_sizes[] = {
    0, 1, 2, 3, 65536, 65537, (uint64_t)50 << 20};

START_TEST(test_copy_file_to_file) {
  uint64_t size = copy_sizes[_i];
  const char *src_path = in_dir("src.bin"), *dst_path = in_dir("dst.bin");
  progress_rec rp, wp;
  sl_stage *src = NULL, *dst = NULL;
  int hidden;

  if (_i == 6) /* SL_TEST_BIG_MB scales the big one (slow sanitizers) */
    size = (uint64_t)test_iterations("SL_TEST_BIG_MB", 50) << 20;
  ck_assert_int_eq(write_pattern_file(src_path, size, 11), 0);
  progress_init(&rp);
  progress_init(&wp);
  sl_fd_opts so = {.progress = progress_cb, .progress_arg = &rp};
  sl_fd_opts ko = {.progress = progress_cb, .progress_arg = &wp};
  ck_assert_int_eq(sl_file_source_new(&src, src_path, &so), 0);
  ck_assert_int_eq(sl_file_sink_new(&dst, dst_path, &ko), 0);
  sl_pipeline *p = chain2(src, dst, NULL);
  ck_assert_ptr_nonnull(p);

  ck_assert_int_eq(start_wait(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));
  ck_assert_uint_eq(sl_fd_bytes(src), size);
  ck_assert_uint_eq(sl_fd_bytes(dst), size);
  ck_assert(rp.monotonic && wp.monotonic);
  if (size > 0) {
    ck_assert_int_gt(rp.calls, 0);
    ck_assert_uint_eq(rp.last, size);
    ck_assert_uint_eq(rp.total, size);
    ck_assert_uint_eq(wp.last, size);
    ck_assert(wp.total == SL_FD_SIZE_UNKNOWN);
  } else {
    ck_assert_int_eq(rp.calls, 0);
  }
  sl_pipeline_free(p);

  ck_assert(check_pattern_file(dst_path, size, 11));
  ck_assert_int_eq(dir_entries(&hidden), 2); /* src and dst, nothing else */
  ck_assert_int_eq(hidden, 0);
}
END_TEST

/* chunk_size bounds every chunk; 0 gives full pooled buffers. */
START_TEST(test_source_chunk_size) {
  const size_t len = 10007;
  const char *path = in_dir("src.bin");
  sl_pipeline_opts po = {.buf_size = 4096};
  sl_stage_stats st;
  pu_sink sink;
  sl_stage *src = NULL;

  ck_assert_int_eq(write_pattern_file(path, len, 12), 0);
  pu_sink_init(&sink);
  sl_fd_opts o = {.chunk_size = _i == 0 ? 1000 : 0};
  ck_assert_int_eq(sl_file_source_new(&src, path, &o), 0);
  sl_pipeline *p = chain2(src, pu_sink_stage("sink", &sink), &po);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), 0);
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 0, &st), 0);
  ck_assert_uint_eq(st.chunks_out, _i == 0 ? 11 : 3); /* 10007 / 4096 */
  ck_assert_uint_eq(st.bytes_out, len);
  sl_pipeline_free(p);
  ck_assert_uint_eq(sink.got.len, len);
  for (size_t i = 0; i < len; i++)
    test_check(sink.got.p[i] == test_pattern_byte(12, i));
  pu_sink_fini(&sink);
}
END_TEST

/* pipe -> fd source -> fd sink -> pipe, helper threads at both ends. The
 * sink owns its descriptor and closes it at the end of the stream, which
 * is how the reader at the far end sees end of file. Loop 1: sockets. */
START_TEST(test_pipe_through_pipeline) {
  const size_t len = ((size_t)3 << 20) + 17;
  int a[2], b[2];
  feeder in;
  drain out;
  sl_stage *src = NULL, *dst = NULL;

  if (_i == 0) {
    ck_assert_int_eq(pipe2(a, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(b, O_CLOEXEC), 0);
  } else {
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
  }
  ck_assert_int_eq(sl_fd_source_new(&src, a[0], NULL), 0);
  sl_fd_opts ko = {.flags = SL_FD_CLOSE};
  ck_assert_int_eq(sl_fd_sink_new(&dst, b[1], &ko), 0);
  ck_assert_str_eq(sl_stage_name(src), "fd-source");
  ck_assert_str_eq(sl_stage_name(dst), "fd-sink");
  sl_pipeline *p = chain2(src, dst, NULL);
  ck_assert_ptr_nonnull(p);

  drain_init(&out, b[0], 21);
  ck_assert_int_eq(drain_start(&out), 0);
  ck_assert_int_eq(feeder_start(&in, a[1], len, 21, true), 0);
  ck_assert_int_eq(start_wait(p), 0);
  pthread_join(in.t, NULL);
  pthread_join(out.t, NULL);
  ck_assert_int_eq(in.rc, 0);
  ck_assert_int_eq(out.rc, 0);
  ck_assert_uint_eq(out.got, len);
  ck_assert_int_eq(out.bad, 0);
  ck_assert_uint_eq(sl_fd_bytes(src), len);
  ck_assert_uint_eq(sl_fd_bytes(dst), len);
  sl_pipeline_free(p);

  ck_assert(fd_is_open(a[0])); /* not owned: left open */
  close(a[0]);
  close(b[0]);
  drain_fini(&out);
}
END_TEST

/* A FIFO by path: the source is made before any writer exists (the open
 * must not wait) and reads what a writer that comes later sends. */
START_TEST(test_fifo_file_source) {
  const size_t len = 300001;
  const char *fifo = in_dir("fifo"), *dst_path = in_dir("out");
  sl_stage *src = NULL, *dst = NULL;
  feeder in;

  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  ck_assert_int_eq(sl_file_source_new(&src, fifo, NULL), 0);
  ck_assert_int_eq(sl_file_sink_new(&dst, dst_path, NULL), 0);
  sl_pipeline *p = chain2(src, dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  memset(&in, 0, sizeof in);
  in.len = len;
  in.seed = 22;
  in.close_fd = true;
  in.open_path = true;
  in.path = fifo;
  in.fd = -1;
  ck_assert_int_eq(pthread_create(&in.t, NULL, feeder_main, &in), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  pthread_join(in.t, NULL);
  ck_assert_int_eq(in.rc, 0);
  sl_pipeline_free(p);
  ck_assert(check_pattern_file(dst_path, len, 22));
}
END_TEST

/* ------------------------------------------------------------------------
 * EPIPE
 * ---------------------------------------------------------------------- */

static const size_t sizes_64k[] = {65536};

/* The process keeps the default disposition of SIGPIPE (terminate) and
 * the test thread does not block it: a SIGPIPE delivered anywhere would
 * kill the test. The sink must report SL_EPIPE and leave no SIGPIPE
 * pending. Loop 1: a socket whose peer is closed. */
START_TEST(test_sink_epipe_survives) {
  const size_t len = 1 << 20;
  unsigned char *data = pu_pattern(len, 31);
  struct sigaction sa, now;
  sigset_t set, pending;
  int fds[2];
  pu_src src;
  sl_stage *dst = NULL;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  ck_assert_int_eq(sigaction(SIGPIPE, &sa, NULL), 0);
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  ck_assert_int_eq(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
  if (_i == 0)
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  else
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds),
                     0);
  close(fds[0]); /* the reader is gone */

  pu_src_init(&src, data, len, sizes_64k, 1);
  ck_assert_int_eq(sl_fd_sink_new(&dst, fds[1], NULL), 0);
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), SL_EPIPE);
  ck_assert_int_eq(sl_stage_status(dst), SL_EPIPE);
  ck_assert_ptr_nonnull(strstr(sl_pipeline_error(p), "fd-sink: write fd "));
  ck_assert_ptr_nonnull(strstr(sl_pipeline_error(p), "Broken pipe"));
  sl_pipeline_free(p);

  /* Still alive; nothing pending; the disposition untouched. */
  ck_assert_int_eq(sigpending(&pending), 0);
  ck_assert_int_eq(sigismember(&pending, SIGPIPE), 0);
  ck_assert_int_eq(sigaction(SIGPIPE, NULL, &now), 0);
  ck_assert(now.sa_handler == SIG_DFL);
  close(fds[1]);
  free(data);
}
END_TEST

/* Blocking SIGPIPE is what keeps the process alive: the signal then stays
 * pending on the writing thread. The sink must also take it back, so that
 * it is never delivered later. Its write op, called on a thread that
 * blocks every signal as a stage thread does, leaves nothing pending. */
typedef struct blocked_write {
  sl_stage *stage;
  sl_buf *buf;
  int rc;
  int pending; /* SIGPIPE pending afterwards: 1, 0, or -1 (unknown) */
} blocked_write;

static void *blocked_write_main(void *arg) {
  blocked_write *w = arg;
  sigset_t all, pending;

  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  w->rc = w->stage->ops.write(w->stage, w->stage->ctx, w->buf);
  w->pending = sigpending(&pending) == 0 ? sigismember(&pending, SIGPIPE) : -1;
  return NULL;
}

START_TEST(test_sink_epipe_takes_back_sigpipe) {
  blocked_write w;
  pthread_t t;
  int fds[2];

  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  close(fds[0]);
  memset(&w, 0, sizeof w);
  ck_assert_int_eq(sl_fd_sink_new(&w.stage, fds[1], NULL), 0);
  w.buf = test_buf_pattern(NULL, 1000, 32);
  ck_assert_ptr_nonnull(w.buf);
  ck_assert_int_eq(pthread_create(&t, NULL, blocked_write_main, &w), 0);
  pthread_join(t, NULL);
  ck_assert_int_eq(w.rc, SL_EPIPE);
  ck_assert_int_eq(w.pending, 0);
  sl_stage_free(w.stage);
  close(fds[1]);
}
END_TEST

/* ------------------------------------------------------------------------
 * EAGAIN: non-blocking descriptors
 * ---------------------------------------------------------------------- */

/* The sink writes a non-blocking pipe that the reader leaves full until
 * the sink waits in poll(2), which it does only after EAGAIN; then the
 * reader drains and every byte arrives. */
START_TEST(test_sink_eagain_nonblocking) {
  int fds[2];
  drain out;
  pu_src src;
  sl_stage *dst = NULL;

  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  ck_assert_int_eq(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
  int cap = fcntl(fds[1], F_GETPIPE_SZ);
  ck_assert_int_gt(cap, 0);
  size_t len = (size_t)cap * 8 + 12345;
  static const size_t sizes[] = {65536, 1000, 300000};
  unsigned char *data = pu_pattern(len, 41);
  pu_src_init(&src, data, len, sizes, 3);
  sl_fd_opts ko = {.flags = SL_FD_CLOSE};
  ck_assert_int_eq(sl_fd_sink_new(&dst, fds[1], &ko), 0);
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  drain_init(&out, fds[0], 41);
  out.gated = true;
  ck_assert_int_eq(drain_start(&out), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);

  if (pu_wait_in_poll("sl:fd-sink") != 1) {
    /* No system call shown: wait at least for a full pipe. */
    int level = 0;
    while (ioctl(fds[0], FIONREAD, &level) == 0 && level < cap)
      sched_yield();
  }
  drain_open_gate(&out);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  pthread_join(out.t, NULL);
  ck_assert_int_eq(out.rc, 0);
  ck_assert_uint_eq(out.got, len);
  ck_assert_int_eq(out.bad, 0);
  ck_assert_uint_eq(sl_fd_bytes(dst), len);
  sl_pipeline_free(p);
  close(fds[0]);
  drain_fini(&out);
  free(data);
}
END_TEST

/* A non-blocking sink stuck on a full pipe nobody reads is cancellable. */
START_TEST(test_sink_cancel_while_pipe_full) {
  const size_t len = 1 << 20;
  unsigned char *data = pu_pattern(len, 42);
  int fds[2];
  pu_src src;
  sl_stage *dst = NULL;

  ck_assert_int_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  pu_src_init(&src, data, len, sizes_64k, 1);
  src.forever = true;
  ck_assert_int_eq(sl_fd_sink_new(&dst, fds[1], NULL), 0);
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  /* Whether or not the kernel shows it, the sink ends up in poll: the
   * source never ends and nobody reads. */
  ck_assert_int_ge(pu_wait_in_poll("sl:fd-sink"), 0);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(dst), SL_ECANCELED);
  sl_pipeline_free(p);
  close(fds[0]);
  close(fds[1]);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Signals: EINTR and a storm
 * ---------------------------------------------------------------------- */

static atomic_long usr1_hits;

static void on_usr1(int sig) {
  (void)sig;
  atomic_fetch_add(&usr1_hits, 1);
}

/* A no-op SIGUSR1 handler without SA_RESTART: a blocked read or write in a
 * thread that takes the signal fails with EINTR or returns short. */
static void install_usr1(struct sigaction *old) {
  struct sigaction sa;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  atomic_store(&usr1_hits, 0);
  ck_assert_int_eq(sigaction(SIGUSR1, &sa, old), 0);
}

typedef struct storm {
  pthread_t t;
  atomic_bool stop;
  pthread_t target; /* aim at this thread, or the process when !aimed */
  bool aimed;
  long sent;
} storm;

/* Stage threads ("sl:...") block SIGUSR1, so it stays pending there. */
static void hit_stage_threads(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;

  if (d == NULL)
    return;
  while ((e = readdir(d)) != NULL) {
    char path[300], comm[32] = "";
    FILE *f;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    if ((f = fopen(path, "r")) == NULL)
      continue;
    if (fgets(comm, sizeof comm, f) != NULL && strncmp(comm, "sl:", 3) == 0)
      syscall(SYS_tgkill, (long)getpid(), atol(e->d_name), SIGUSR1);
    fclose(f);
  }
  closedir(d);
}

static void *storm_main(void *arg) {
  storm *s = arg;
  sigset_t set;

  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  while (!atomic_load(&s->stop)) {
    if (s->aimed) {
      pthread_kill(s->target, SIGUSR1);
    } else {
      kill(getpid(), SIGUSR1);
      if (s->sent % 64 == 0)
        hit_stage_threads();
    }
    s->sent++;
    sched_yield();
  }
  return NULL;
}

static int storm_start(storm *s, bool aimed, pthread_t target) {
  memset(s, 0, sizeof *s);
  atomic_init(&s->stop, false);
  s->aimed = aimed;
  s->target = target;
  return pthread_create(&s->t, NULL, storm_main, s);
}

static void storm_stop(storm *s) {
  atomic_store(&s->stop, true);
  pthread_join(s->t, NULL);
}

/* pipe -> source -> sink -> pipe while SIGUSR1 rains on the whole
 * process (the helper threads at both ends get EINTR) and on the stage
 * threads (which block it): the stream arrives byte-exact. */
START_TEST(test_signal_storm_byte_exact) {
  const size_t len = (size_t)8 << 20;
  struct sigaction old;
  int a[2], b[2];
  feeder in;
  drain out;
  storm st;
  sl_stage *src = NULL, *dst = NULL;

  install_usr1(&old);
  ck_assert_int_eq(pipe2(a, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(b, O_CLOEXEC), 0);
  ck_assert_int_eq(sl_fd_source_new(&src, a[0], NULL), 0);
  sl_fd_opts ko = {.flags = SL_FD_CLOSE};
  ck_assert_int_eq(sl_fd_sink_new(&dst, b[1], &ko), 0);
  sl_pipeline *p = chain2(src, dst, NULL);
  ck_assert_ptr_nonnull(p);
  drain_init(&out, b[0], 51);
  ck_assert_int_eq(drain_start(&out), 0);
  ck_assert_int_eq(feeder_start(&in, a[1], len, 51, true), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(storm_start(&st, false, pthread_self()), 0);
  int rc = sl_pipeline_wait(p);
  storm_stop(&st);
  pthread_join(in.t, NULL);
  pthread_join(out.t, NULL);
  ck_assert_int_eq(sigaction(SIGUSR1, &old, NULL), 0);

  ck_assert_int_eq(rc, 0);
  ck_assert_int_gt(st.sent, 0);
  ck_assert_int_gt(atomic_load(&usr1_hits), 0);
  ck_assert_int_eq(in.rc, 0);
  ck_assert_int_eq(out.rc, 0);
  ck_assert_uint_eq(out.got, len);
  ck_assert_int_eq(out.bad, 0);
  sl_pipeline_free(p);
  close(a[0]);
  close(b[0]);
  drain_fini(&out);
}
END_TEST

/* The sink's write op on a thread that takes signals: a blocking pipe that
 * stays full until the writer has been interrupted a few times, so write(2)
 * returns short, then fails with EINTR, again and again; the op carries on
 * and every byte arrives once. (Stage threads block signals, so this calls
 * the op directly, from the test's thread.) */
START_TEST(test_sink_write_eintr) {
  const size_t len = (size_t)4 << 20;
  struct sigaction old;
  int fds[2];
  drain out;
  storm st;
  sl_stage *dst = NULL;

  install_usr1(&old);
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  ck_assert_int_eq(sl_fd_sink_new(&dst, fds[1], NULL), 0);
  sl_buf *b = test_buf_pattern(NULL, len, 52);
  ck_assert_ptr_nonnull(b);
  drain_init(&out, fds[0], 52);
  out.block_usr1 = true;
  out.wait_hits = &usr1_hits;
  out.hits = 5;
  ck_assert_int_eq(drain_start(&out), 0);
  ck_assert_int_eq(storm_start(&st, true, pthread_self()), 0);

  int rc = dst->ops.write(dst, dst->ctx, b); /* takes b */

  storm_stop(&st);
  close(fds[1]);
  pthread_join(out.t, NULL);
  ck_assert_int_eq(sigaction(SIGUSR1, &old, NULL), 0);
  ck_assert_int_eq(rc, 0);
  ck_assert_int_ge(atomic_load(&usr1_hits), 5);
  ck_assert_int_eq(out.rc, 0);
  ck_assert_uint_eq(out.got, len);
  ck_assert_int_eq(out.bad, 0);
  ck_assert_uint_eq(sl_fd_bytes(dst), len);
  sl_stage_free(dst);
  close(fds[0]);
  drain_fini(&out);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancel
 * ---------------------------------------------------------------------- */

/* A source blocked on an idle pipe (loop 1: socket) is woken by cancel:
 * once the sink waits on an empty ring (and the source sits in poll, when
 * the kernel shows it), cancel; wait returns SL_ECANCELED. That it returns
 * at all within the test's timeout is the promptness. */
START_TEST(test_cancel_blocked_source) {
  int fds[2];
  pu_sink sink;
  sl_stage *src = NULL;

  if (_i == 0)
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  else
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds),
                     0);
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_fd_source_new(&src, fds[0], NULL), 0);
  sl_pipeline *p = chain2(src, pu_sink_stage("sink", &sink), NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(src), SL__READER), 0);
  ck_assert_int_ge(pu_wait_in_poll("sl:fd-source"), 0);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(src), SL_ECANCELED);
  ck_assert_uint_eq(sl_fd_bytes(src), 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&sink), 1);
  pu_sink_fini(&sink);
  close(fds[0]);
  close(fds[1]);
}
END_TEST

/* ------------------------------------------------------------------------
 * The atomic file sink
 * ---------------------------------------------------------------------- */

/* A new file gets 0666 & ~umask, or opts.mode through the umask; the
 * temporary is gone. */
START_TEST(test_atomic_new_file_mode) {
  const size_t len = 200000;
  unsigned char *data = pu_pattern(len, 61);
  const char *path = in_dir("out");
  mode_t old_mask = umask(022);
  struct stat sb;
  pu_src src;
  sl_stage *dst = NULL;
  int hidden;

  pu_src_init(&src, data, len, sizes_64k, 1);
  sl_fd_opts ko = {.mode = _i == 0 ? 0 : 0640};
  ck_assert_int_eq(sl_file_sink_new(&dst, path, &ko), 0);
  ck_assert_str_eq(sl_stage_name(dst), "file-sink");
  ck_assert_int_eq(dir_entries(&hidden), temp_entries()); /* the temporary */
  ck_assert_int_eq(hidden, temp_entries());
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), 0);
  sl_pipeline_free(p);
  umask(old_mask);

  ck_assert(check_pattern_file(path, len, 61));
  ck_assert_int_eq(stat(path, &sb), 0);
  ck_assert_uint_eq(sb.st_mode & 07777, _i == 0 ? 0644 : 0640);
  ck_assert_int_eq(dir_entries(&hidden), 1);
  ck_assert_int_eq(hidden, 0);
  free(data);
}
END_TEST

/* The stream fails at chunk 3 (loop 0: new target; loop 1: replacing a
 * file with SL_FILE_OVERWRITE) or is cancelled midway (loop 2): the
 * target is as it was and no temporary is left. */
START_TEST(test_atomic_failure_leaves_nothing) {
  const size_t len = 1 << 20;
  unsigned char *data = pu_pattern(len, 62);
  const char *path = in_dir("out");
  progress_rec rec;
  pu_src src;
  sl_stage *dst = NULL;
  int hidden;

  if (_i == 1)
    ck_assert_int_eq(write_string_file(path, "old contents", 0640), 0);
  pu_src_init(&src, data, len, sizes_64k, 1);
  if (_i == 2) {
    src.forever = true;
  } else {
    src.fault.at = 3;
    src.fault.code = SL_EIO;
  }
  progress_init(&rec);
  sl_fd_opts ko = {.flags = _i == 1 ? SL_FILE_OVERWRITE : 0,
                   .progress = progress_cb,
                   .progress_arg = &rec};
  ck_assert_int_eq(sl_file_sink_new(&dst, path, &ko), 0);
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  if (_i == 2) {
    rec.p = p;
    rec.cancel_after = (uint64_t)3 << 20;
    rec.hidden_then = -1;
  }
  int rc = start_wait(p);
  if (_i == 2) {
    ck_assert_int_eq(rc, SL_ECANCELED);
    ck_assert_int_eq(rec.hidden_then, temp_entries()); /* while writing */
  } else {
    ck_assert_int_eq(rc, SL_EIO);
    ck_assert_str_eq(sl_pipeline_error(p), "src: boom at 3");
  }
  ck_assert_int_ne(sl_stage_status(dst), 0);
  sl_pipeline_free(p);

  if (_i == 1) {
    struct stat sb;
    ck_assert(file_is(path, "old contents"));
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, 0640);
    ck_assert_int_eq(dir_entries(&hidden), 1);
  } else {
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(dir_entries(&hidden), 0);
  }
  ck_assert_int_eq(hidden, 0);
  free(data);
}
END_TEST

/* A sink freed without ever running removes its temporary. */
START_TEST(test_atomic_unused_sink_removes_temporary) {
  sl_stage *dst = NULL;
  int hidden;

  ck_assert_int_eq(sl_file_sink_new(&dst, in_dir("out"), NULL), 0);
  ck_assert_int_eq(dir_entries(&hidden), temp_entries());
  ck_assert_int_eq(hidden, temp_entries());
  sl_stage_free(dst);
  ck_assert_int_eq(dir_entries(&hidden), 0);
}
END_TEST

/* An existing file is refused (loop 1: in place too), untouched. */
START_TEST(test_refuse_overwrite) {
  const char *path = in_dir("out");
  sl_stage *dst = (sl_stage *)&dst;
  int hidden, before = fd_count();

  ck_assert_int_eq(write_string_file(path, "keep me", 0600), 0);
  sl_fd_opts ko = {.flags = _i == 1 ? SL_FILE_IN_PLACE : 0};
  errno = 0;
  ck_assert_int_eq(sl_file_sink_new(&dst, path, &ko), SL_EEXIST);
  ck_assert_int_eq(errno, EEXIST);
  ck_assert_ptr_null(dst);
  ck_assert(file_is(path, "keep me"));
  ck_assert_int_eq(dir_entries(&hidden), 1);
  ck_assert_int_eq(hidden, 0);
  ck_assert_int_eq(fd_count(), before);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* Told to, the sink replaces an existing file and keeps its permission
 * bits (loop 1: in place). */
START_TEST(test_overwrite_when_told) {
  const size_t len = 100000;
  unsigned char *data = pu_pattern(len, 63);
  const char *path = in_dir("out");
  struct stat sb;
  pu_src src;
  sl_stage *dst = NULL;
  int hidden;

  ck_assert_int_eq(write_string_file(path, "old contents", 0604), 0);
  pu_src_init(&src, data, len, sizes_64k, 1);
  sl_fd_opts ko = {.flags =
                       SL_FILE_OVERWRITE | (_i == 1 ? SL_FILE_IN_PLACE : 0)};
  ck_assert_int_eq(sl_file_sink_new(&dst, path, &ko), 0);
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), 0);
  sl_pipeline_free(p);
  ck_assert(check_pattern_file(path, len, 63));
  ck_assert_int_eq(stat(path, &sb), 0);
  ck_assert_uint_eq(sb.st_mode & 07777, 0604);
  ck_assert_int_eq(dir_entries(&hidden), 1);
  ck_assert_int_eq(hidden, 0);
  free(data);
}
END_TEST

/* A file that appears at the target while the sink runs is not replaced
 * without SL_FILE_OVERWRITE: the end of the stream fails with SL_EEXIST
 * and the temporary goes. */
START_TEST(test_atomic_target_appears_meanwhile) {
  const size_t len = 1000;
  unsigned char *data = pu_pattern(len, 64);
  const char *path = in_dir("out");
  pu_src src;
  sl_stage *dst = NULL;
  int hidden;

  pu_src_init(&src, data, len, sizes_64k, 1);
  ck_assert_int_eq(sl_file_sink_new(&dst, path, NULL), 0);
  ck_assert_int_eq(write_string_file(path, "first come", 0600), 0);
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), SL_EEXIST);
  ck_assert_ptr_nonnull(
      strstr(sl_pipeline_error(p),
             temp_entries() == 0 ? "file-sink: link " : "file-sink: rename "));
  sl_pipeline_free(p);
  ck_assert(file_is(path, "first come"));
  ck_assert_int_eq(dir_entries(&hidden), 1);
  ck_assert_int_eq(hidden, 0);
  free(data);
}
END_TEST

/* In place: no temporary at any time; a failure leaves what was written. */
START_TEST(test_in_place) {
  const size_t len = 1 << 20;
  unsigned char *data = pu_pattern(len, 65);
  const char *path = in_dir("out");
  pu_src src;
  sl_stage *dst = NULL;
  int hidden;

  pu_src_init(&src, data, len, sizes_64k, 1);
  if (_i == 1) {
    src.fault.at = 4;
    src.fault.code = SL_EIO;
  }
  sl_fd_opts ko = {.flags = SL_FILE_IN_PLACE};
  ck_assert_int_eq(sl_file_sink_new(&dst, path, &ko), 0);
  ck_assert_int_eq(dir_entries(&hidden), 1);
  ck_assert_int_eq(hidden, 0);
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), _i == 0 ? 0 : SL_EIO);
  sl_pipeline_free(p);
  if (_i == 0) {
    ck_assert(check_pattern_file(path, len, 65));
  } else {
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_le(sb.st_size, 4 * 65536);
  }
  ck_assert_int_eq(dir_entries(&hidden), 1);
  ck_assert_int_eq(hidden, 0);
  free(data);
}
END_TEST

/* SIGKILL while a file is written: with an unnamed temporary nothing is
 * left in the directory; the named one it falls back to stays (the limit
 * the header states). A child writes an endless stream and stops in the
 * sink's progress callback once 1 MiB is out, after telling the parent
 * through a pipe; the parent kills it there. */
static void stop_here(sl_stage *stage, uint64_t bytes, uint64_t total,
                      void *arg) {
  int *fds = arg;
  char c = 'x';

  (void)stage;
  (void)total;
  if (bytes < ((uint64_t)1 << 20))
    return;
  if (write(fds[1], &c, 1) != 1)
    _exit(3);
  for (;;)
    pause(); /* until killed */
}

START_TEST(test_atomic_sigkill_leaves_nothing) {
  const size_t len = 1 << 16;
  const char *path = in_dir("out");
  int fds[2], hidden, status, expect = temp_entries();
  char c;

  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    unsigned char *data = pu_pattern(len, 66);
    pu_src src;
    sl_stage *dst = NULL;
    pu_src_init(&src, data, len, sizes_64k, 1);
    src.forever = true;
    sl_fd_opts ko = {.progress = stop_here, .progress_arg = fds};
    if (sl_file_sink_new(&dst, path, &ko) != 0)
      _exit(1);
    sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
    if (p == NULL)
      _exit(1);
    start_wait(p);
    _exit(2); /* never: the sink stops for good */
  }
  close(fds[1]);
  ck_assert_int_eq(read(fds[0], &c, 1), 1); /* 1 MiB written, stopped */
  ck_assert_int_eq(dir_entries(&hidden), expect);
  ck_assert_int_eq(kill(pid, SIGKILL), 0);
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  close(fds[0]);
  ck_assert_int_eq(access(path, F_OK), -1);
  ck_assert_int_eq(dir_entries(&hidden), expect);
  ck_assert_int_eq(hidden, expect);
}
END_TEST

/* The commit hook: called once, with every byte in the file and (atomic)
 * before the file has its name; what it sets through the descriptor
 * (mode, times) is what the target has. Loops: 0 a new file, 1 replacing
 * one, 2 in place, 3 the hook fails: the stream fails with its code and
 * nothing is left. */
typedef struct commit_rec {
  const char *path;
  size_t len;
  bool in_place;
  int fail;
  int calls;
  bool size_ok, unnamed_then;
} commit_rec;

static int commit_cb(sl_stage *stage, int fd, void *arg) {
  commit_rec *r = arg;
  struct stat sb;
  struct timespec ts[2] = {{1000000000, 0}, {1234567890, 0}};

  r->calls++;
  r->size_ok = fstat(fd, &sb) == 0 && (size_t)sb.st_size == r->len;
  /* Not yet at the target: absent, or still the old contents. */
  r->unnamed_then =
      r->in_place || access(r->path, F_OK) != 0 || file_is(r->path, "x");
  if (r->fail) {
    sl_stage_set_error(stage, "hook says no");
    return r->fail;
  }
  if (fchmod(fd, 0604) != 0 || futimens(fd, ts) != 0)
    return SL_EIO;
  return 0;
}

START_TEST(test_commit_hook) {
  const size_t len = 300000;
  unsigned char *data = pu_pattern(len, 67);
  const char *path = in_dir("out");
  commit_rec rec = {.path = path, .len = len, .in_place = _i == 2};
  struct stat sb;
  pu_src src;
  sl_stage *dst = NULL;
  int hidden;

  if (_i == 1)
    ck_assert_int_eq(write_string_file(path, "x", 0600), 0);
  if (_i == 3)
    rec.fail = SL_EACCES;
  pu_src_init(&src, data, len, sizes_64k, 1);
  sl_fd_opts ko = {.flags = (_i == 1 ? SL_FILE_OVERWRITE : 0) |
                            (_i == 2 ? SL_FILE_IN_PLACE : 0),
                   .commit = commit_cb,
                   .commit_arg = &rec};
  ck_assert_int_eq(sl_file_sink_new(&dst, path, &ko), 0);
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), _i == 3 ? SL_EACCES : 0);
  if (_i == 3)
    ck_assert_str_eq(sl_pipeline_error(p), "file-sink: hook says no");
  sl_pipeline_free(p);
  ck_assert_int_eq(rec.calls, 1);
  ck_assert(rec.size_ok);
  ck_assert(rec.unnamed_then);
  if (_i == 3) {
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(dir_entries(&hidden), 0);
  } else {
    ck_assert(check_pattern_file(path, len, 67));
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, 0604);
    ck_assert_int_eq(sb.st_mtim.tv_sec, 1234567890);
    ck_assert_int_eq(dir_entries(&hidden), 1);
  }
  ck_assert_int_eq(hidden, 0);
  free(data);
}
END_TEST

/* A FIFO at the path is written in place, and the hook is not called:
 * it is not a file of the sink's to finish. */
START_TEST(test_commit_hook_not_for_fifo) {
  const char *path = in_dir("fifo");
  commit_rec rec = {.path = path, .len = 5};
  sl_stage *dst = NULL;

  ck_assert_int_eq(mkfifo(path, 0600), 0);
  int rd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ck_assert_int_ge(rd, 0);
  sl_fd_opts ko = {.commit = commit_cb, .commit_arg = &rec};
  ck_assert_int_eq(sl_file_sink_new(&dst, path, &ko), 0);
  sl_stage *src = NULL;
  ck_assert_int_eq(sl_mem_source_new(&src, "hello", 5, NULL), 0);
  sl_pipeline *p = chain2(src, dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), 0);
  sl_pipeline_free(p);
  char buf[8];
  ck_assert_int_eq(read(rd, buf, sizeof buf), 5);
  close(rd);
  ck_assert_int_eq(rec.calls, 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

/* /dev/full by path (loop 0: written in place, never replaced) and by
 * descriptor (loop 1): SL_ENOSPC, with the reason in the message. */
START_TEST(test_dev_full) {
  const size_t len = 100000;
  unsigned char *data = pu_pattern(len, 71);
  pu_src src;
  sl_stage *dst = NULL;
  int fd = -1;

  if (access("/dev/full", W_OK) != 0) {
    free(data);
    return; /* no such device here */
  }
  pu_src_init(&src, data, len, sizes_64k, 1);
  if (_i == 0) {
    ck_assert_int_eq(sl_file_sink_new(&dst, "/dev/full", NULL), 0);
  } else {
    fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(sl_fd_sink_new(&dst, fd, NULL), 0);
  }
  sl_pipeline *p = chain2(pu_src_stage("src", &src), dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), SL_ENOSPC);
  const char *msg = sl_pipeline_error(p);
  ck_assert_ptr_nonnull(msg);
  ck_assert_ptr_nonnull(strstr(msg, "No space left"));
  if (_i == 0)
    ck_assert_str_eq(msg,
                     "file-sink: write /dev/full: No space left on device");
  else
    ck_assert_ptr_nonnull(strstr(msg, "fd-sink: write fd "));
  sl_pipeline_free(p);
  if (fd >= 0)
    close(fd);
  free(data);
}
END_TEST

START_TEST(test_source_missing_file) {
  sl_stage *s = (sl_stage *)&s;
  int before = fd_count();

  errno = 0;
  ck_assert_int_eq(sl_file_source_new(&s, in_dir("nope"), NULL), SL_ENOENT);
  ck_assert_int_eq(errno, ENOENT);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(fd_count(), before);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

START_TEST(test_source_directory) {
  sl_stage *s = (sl_stage *)&s;
  int before = fd_count();

  errno = 0;
  ck_assert_int_eq(sl_file_source_new(&s, dir, NULL), SL_EISDIR);
  ck_assert_int_eq(errno, EISDIR);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(fd_count(), before);
}
END_TEST

/* A sink into a missing directory, onto a directory, into a directory
 * that cannot be written (as a user that permissions bind). */
START_TEST(test_sink_open_errors) {
  sl_stage *s = (sl_stage *)&s;
  int before = fd_count(), hidden;

  errno = 0;
  ck_assert_int_eq(sl_file_sink_new(&s, in_dir("no/such/out"), NULL),
                   SL_ENOENT);
  ck_assert_int_eq(errno, ENOENT);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(sl_file_sink_new(&s, dir, NULL), SL_EISDIR);
  ck_assert_int_eq(errno, EISDIR);
  ck_assert_int_eq(mkdir(in_dir("ro"), 0500), 0);
  if (geteuid() != 0) {
    sl_fd_opts ko = {.flags = SL_FILE_OVERWRITE};
    ck_assert_int_eq(sl_file_sink_new(&s, in_dir("ro/out"), &ko), SL_EACCES);
    ck_assert_int_eq(errno, EACCES);
  }
  chmod(in_dir("ro"), 0700);
  ck_assert_int_eq(fd_count(), before);
  ck_assert_int_eq(dir_entries(&hidden), 1);
  ck_assert_int_eq(hidden, 0);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

START_TEST(test_bad_args) {
  sl_stage *s = (sl_stage *)&s;
  int fds[2];

  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  sl_fd_opts empty_name = {.name = ""};
  sl_fd_opts bad_flag = {.flags = 1u << 9};
  sl_fd_opts file_flag = {.flags = SL_FILE_OVERWRITE};
  sl_fd_opts close_flag = {.flags = SL_FD_CLOSE};
  sl_fd_opts bad_mode = {.mode = 010000};

  ck_assert_int_eq(sl_fd_source_new(NULL, fds[0], NULL), SL_EINVAL);
  ck_assert_int_eq(sl_fd_sink_new(NULL, fds[1], NULL), SL_EINVAL);
  ck_assert_int_eq(sl_file_source_new(NULL, "x", NULL), SL_EINVAL);
  ck_assert_int_eq(sl_file_sink_new(NULL, in_dir("x"), NULL), SL_EINVAL);

  ck_assert_int_eq(sl_fd_source_new(&s, -1, NULL), SL_EINVAL);
  ck_assert_ptr_null(s);
  s = (sl_stage *)&s;
  ck_assert_int_eq(sl_fd_sink_new(&s, -5, NULL), SL_EINVAL);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(sl_fd_source_new(&s, fds[0], &empty_name), SL_EINVAL);
  ck_assert_int_eq(sl_fd_sink_new(&s, fds[1], &bad_flag), SL_EINVAL);
  ck_assert_int_eq(sl_fd_sink_new(&s, fds[1], &file_flag), SL_EINVAL);
  ck_assert_int_eq(sl_fd_source_new(&s, fds[0], &file_flag), SL_EINVAL);

  ck_assert_int_eq(sl_file_source_new(&s, NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_file_source_new(&s, "", NULL), SL_EINVAL);
  ck_assert_int_eq(sl_file_source_new(&s, dir, &close_flag), SL_EINVAL);
  ck_assert_int_eq(sl_file_source_new(&s, dir, &empty_name), SL_EINVAL);
  ck_assert_int_eq(sl_file_sink_new(&s, NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_file_sink_new(&s, "", NULL), SL_EINVAL);
  ck_assert_int_eq(sl_file_sink_new(&s, in_dir("sub/"), NULL), SL_EINVAL);
  ck_assert_int_eq(sl_file_sink_new(&s, in_dir("x"), &close_flag), SL_EINVAL);
  ck_assert_int_eq(sl_file_sink_new(&s, in_dir("x"), &bad_mode), SL_EINVAL);
  ck_assert_int_eq(sl_file_sink_new(&s, in_dir("x"), &empty_name), SL_EINVAL);
  ck_assert_ptr_null(s);

  ck_assert_uint_eq(sl_fd_bytes(NULL), 0);
  pu_sink sink;
  pu_sink_init(&sink);
  sl_stage *other = pu_sink_stage("other", &sink);
  ck_assert_ptr_nonnull(other);
  ck_assert_uint_eq(sl_fd_bytes(other), 0);
  sl_stage_free(other);
  pu_sink_fini(&sink);

  ck_assert(fd_is_open(fds[0]) && fd_is_open(fds[1]));
  close(fds[0]);
  close(fds[1]);
  int hidden;
  ck_assert_int_eq(dir_entries(&hidden), 0);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* A descriptor that is not open is SL_EBADF. */
START_TEST(test_closed_fd) {
  sl_stage *s = (sl_stage *)&s;
  int fds[2];

  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  close(fds[0]);
  close(fds[1]);
  ck_assert_int_eq(sl_fd_source_new(&s, fds[0], NULL), SL_EBADF);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(sl_fd_sink_new(&s, fds[1], NULL), SL_EBADF);
  ck_assert_ptr_null(s);
}
END_TEST

/* SL_FD_CLOSE hands the descriptor over: closed when the stage goes,
 * and only on success. */
START_TEST(test_fd_close_ownership) {
  int fds[2];
  sl_stage *src = NULL, *dst = NULL;

  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  sl_fd_opts o = {.flags = SL_FD_CLOSE};
  ck_assert_int_eq(sl_fd_source_new(&src, fds[0], &o), 0);
  ck_assert_int_eq(sl_fd_sink_new(&dst, fds[1], NULL), 0);
  sl_stage_free(src);
  sl_stage_free(dst);
  ck_assert(!fd_is_open(fds[0]));
  ck_assert(fd_is_open(fds[1]));
  close(fds[1]);
}
END_TEST

/* ------------------------------------------------------------------------
 * Flush markers
 * ---------------------------------------------------------------------- */

/* Pushes data, a marker, more data, a marker, then ends. */
typedef struct marksrc {
  pu_common c;
  const unsigned char *data;
  size_t len;
  int step;
} marksrc;

static int marksrc_piece(sl_stage *st, marksrc *m, size_t from, size_t to) {
  sl_buf *b = NULL;
  int rc = sl_stage_buf(st, to - from, &b);

  if (rc != 0)
    return rc;
  memcpy(sl_buf_data(b), m->data + from, to - from);
  sl_buf_set_len(b, to - from);
  return sl_stage_push(st, b);
}

static int marksrc_read(sl_stage *st, void *ctx) {
  marksrc *m = ctx;

  pu_common_note(&m->c);
  switch (m->step++) {
  case 0:
    return marksrc_piece(st, m, 0, m->len / 2);
  case 1:
  case 3:
    return sl_stage_push_flush(st);
  case 2:
    return marksrc_piece(st, m, m->len / 2, m->len);
  default:
    return SL_EOF;
  }
}

/* A marker reaches the sink's sync: a pipe (loop 0: nothing to do), a
 * regular file's descriptor (1: fdatasync), /dev/null (2: a device that
 * cannot sync), the atomic file sink (3). No error, every byte through. */
START_TEST(test_flush_marker_sync) {
  const size_t len = 100001;
  unsigned char *data = pu_pattern(len, 81);
  const char *path = in_dir("out");
  sl_stage_ops ops = {.read = marksrc_read, .destroy = pu_destroy};
  sl_stage *src = NULL, *dst = NULL;
  marksrc m;
  drain out;
  int fds[2] = {-1, -1}, fd = -1;

  memset(&m, 0, sizeof m);
  pu_common_init(&m.c);
  m.data = data;
  m.len = len;
  ck_assert_int_eq(sl_stage_new(&src, "marks", &ops, &m), 0);
  if (_i == 0) {
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    drain_init(&out, fds[0], 81);
    ck_assert_int_eq(drain_start(&out), 0);
    sl_fd_opts ko = {.flags = SL_FD_CLOSE};
    ck_assert_int_eq(sl_fd_sink_new(&dst, fds[1], &ko), 0);
  } else if (_i == 1 || _i == 2) {
    fd = _i == 1 ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)
                 : open("/dev/null", O_WRONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(sl_fd_sink_new(&dst, fd, NULL), 0);
  } else {
    ck_assert_int_eq(sl_file_sink_new(&dst, path, NULL), 0);
  }
  sl_pipeline *p = chain2(src, dst, NULL);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(start_wait(p), 0);
  ck_assert_uint_eq(sl_fd_bytes(dst), len);
  sl_pipeline_free(p);
  if (_i == 0) {
    pthread_join(out.t, NULL);
    ck_assert_uint_eq(out.got, len);
    ck_assert_int_eq(out.bad, 0);
    close(fds[0]);
    drain_fini(&out);
  }
  if (fd >= 0)
    close(fd);
  if (_i == 1 || _i == 3)
    ck_assert(check_pattern_file(path, len, 81));
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Allocation failure
 * ---------------------------------------------------------------------- */

/* Fail each allocation of a constructor in turn (loop: fd source, fd
 * sink, file source, file sink): SL_ENOMEM, nothing allocated, opened or
 * created is left, and a descriptor handed in stays open; then one that
 * succeeds. */
START_TEST(test_alloc_failure_in_constructors) {
  const char *src_path = in_dir("src"), *dst_path = in_dir("dst");
  sl_fd_opts o = {.flags = _i < 2 ? SL_FD_CLOSE : 0};
  int fds[2], hidden, n;
  bool done = false;

  ck_assert_int_eq(write_string_file(src_path, "abc", 0600), 0);
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  int before = fd_count();
  for (n = 1; n < 100 && !done; n++) {
    sl_stage *s = (sl_stage *)&s;
    int rc;
    fail_alloc_arm(n);
    switch (_i) {
    case 0:
      rc = sl_fd_source_new(&s, fds[0], &o);
      break;
    case 1:
      rc = sl_fd_sink_new(&s, fds[1], &o);
      break;
    case 2:
      rc = sl_file_source_new(&s, src_path, &o);
      break;
    default:
      rc = sl_file_sink_new(&s, dst_path, &o);
      break;
    }
    long failed = fail_alloc_failed();
    fail_alloc_disarm();
    if (failed == 0) {
      ck_assert_int_eq(rc, 0);
      ck_assert_ptr_nonnull(s);
      sl_stage_free(s);
      done = true;
    } else {
      ck_assert_int_eq(rc, SL_ENOMEM);
      ck_assert_ptr_null(s);
    }
    ck_assert_int_eq(test_alloc_live(), 0);
    ck_assert_int_eq(dir_entries(&hidden), 1); /* src only */
    ck_assert_int_eq(hidden, 0);
    if (_i < 2 && !done)
      ck_assert_int_eq(fd_count(), before);
  }
  ck_assert(done);
  ck_assert_int_gt(n, 2); /* at least one allocation was failed */
  if (_i < 2) {
    /* The stage that was made owned its descriptor and closed it. */
    ck_assert(!fd_is_open(fds[_i]));
    close(fds[1 - _i]);
  } else {
    ck_assert_int_eq(fd_count(), before);
    close(fds[0]);
    close(fds[1]);
  }
}
END_TEST

/* ------------------------------------------------------------------------ */

static void named_temporaries(void) {
  sl__fd_no_tmpfile = true;
}

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);

  tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

static Suite *fd_suite(void) {
  Suite *s = suite_create("fd");
  TCase *tc;

  tc = tcase("copy", 300);
  tcase_add_loop_test(tc, test_copy_file_to_file, 0, 7);
  tcase_add_loop_test(tc, test_source_chunk_size, 0, 2);
  tcase_add_loop_test(tc, test_pipe_through_pipeline, 0, 2);
  tcase_add_test(tc, test_fifo_file_source);
  suite_add_tcase(s, tc);

  tc = tcase("epipe", 60);
  tcase_add_loop_test(tc, test_sink_epipe_survives, 0, 2);
  tcase_add_test(tc, test_sink_epipe_takes_back_sigpipe);
  suite_add_tcase(s, tc);

  tc = tcase("eagain", 60);
  tcase_add_test(tc, test_sink_eagain_nonblocking);
  tcase_add_test(tc, test_sink_cancel_while_pipe_full);
  suite_add_tcase(s, tc);

  tc = tcase("signals", 120);
  tcase_add_test(tc, test_signal_storm_byte_exact);
  tcase_add_test(tc, test_sink_write_eintr);
  suite_add_tcase(s, tc);

  tc = tcase("cancel", 30);
  tcase_add_loop_test(tc, test_cancel_blocked_source, 0, 2);
  suite_add_tcase(s, tc);

  tc = tcase("atomic", 60);
  tcase_add_loop_test(tc, test_atomic_new_file_mode, 0, 2);
  tcase_add_loop_test(tc, test_atomic_failure_leaves_nothing, 0, 3);
  tcase_add_test(tc, test_atomic_unused_sink_removes_temporary);
  tcase_add_loop_test(tc, test_refuse_overwrite, 0, 2);
  tcase_add_loop_test(tc, test_overwrite_when_told, 0, 2);
  tcase_add_test(tc, test_atomic_target_appears_meanwhile);
  tcase_add_loop_test(tc, test_in_place, 0, 2);
  tcase_add_test(tc, test_atomic_sigkill_leaves_nothing);
  tcase_add_loop_test(tc, test_commit_hook, 0, 4);
  tcase_add_test(tc, test_commit_hook_not_for_fifo);
  suite_add_tcase(s, tc);

  /* The same with the named temporary, as where O_TMPFILE is refused. */
  tc = tcase("atomic-named", 60);
  tcase_add_checked_fixture(tc, named_temporaries, NULL);
  tcase_add_loop_test(tc, test_atomic_new_file_mode, 0, 2);
  tcase_add_loop_test(tc, test_atomic_failure_leaves_nothing, 0, 3);
  tcase_add_test(tc, test_atomic_unused_sink_removes_temporary);
  tcase_add_loop_test(tc, test_overwrite_when_told, 0, 2);
  tcase_add_test(tc, test_atomic_target_appears_meanwhile);
  tcase_add_test(tc, test_atomic_sigkill_leaves_nothing);
  tcase_add_loop_test(tc, test_commit_hook, 0, 4);
  suite_add_tcase(s, tc);

  tc = tcase("errors", 60);
  tcase_add_loop_test(tc, test_dev_full, 0, 2);
  tcase_add_test(tc, test_source_missing_file);
  tcase_add_test(tc, test_source_directory);
  tcase_add_test(tc, test_sink_open_errors);
  tcase_add_test(tc, test_bad_args);
  tcase_add_test(tc, test_closed_fd);
  tcase_add_test(tc, test_fd_close_ownership);
  suite_add_tcase(s, tc);

  tc = tcase("sync", 60);
  tcase_add_loop_test(tc, test_flush_marker_sync, 0, 4);
  suite_add_tcase(s, tc);

  tc = tcase("alloc", 60);
  tcase_add_loop_test(tc, test_alloc_failure_in_constructors, 0, 4);
  suite_add_tcase(s, tc);

  return s;
}

int main(void) {
  return run_suite(fd_suite());
}

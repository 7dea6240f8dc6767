/* SPDX-License-Identifier: MIT */
/*
 * EINTR and short counts, injected into the system calls of the fd, file
 * and socket stages.
 *
 * A signal cannot do this job: stage threads block every asynchronous
 * signal, so no read(2) or poll(2) of theirs is ever interrupted by one,
 * and the library's EINTR loops would go untested however many signals a
 * test sent. This program is linked with the linker's --wrap for each call
 * the stages retry on EINTR (read, write, poll, recv, send, fsync,
 * fdatasync) and for close, whose EINTR means "closed" on Linux. The
 * suites link the library's objects statically, so the stages' calls land
 * in the __wrap_ functions below, which pass everything through to the
 * real call (__real_) except on the descriptors a test names as targets:
 * on those, one call in three fails with EINTR without doing anything, and
 * one in three of the reads and writes is cut to half its length, which
 * the kernel may always do. fsync and fdatasync fail every other call, the
 * first included, so that even a stage that syncs once meets one; every
 * close of a target closes it and then says EINTR. The test framework's
 * own descriptors, and the test's ends of its pipes and sockets, are never
 * targets.
 *
 * Then fd source -> transform -> fd sink on pipes, file source -> transform
 * -> atomic file sink (with flush markers, so fdatasync runs), and a socket
 * stage with an echoing peer must each carry the data byte for byte and
 * end without an error. Counters prove the injection happened: for each
 * call, how many EINTRs were injected and how many of them were retried
 * (the same thread made the same call on the same descriptor again). Each
 * test asserts that EINTRs were injected into every call it expects, that
 * every one was retried, and that no close was retried: the test fails if
 * the wrapping stops working as much as when a stage stops retrying.
 */
#include "pipeutil.h"

#include <sluice/fd.h>

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define EINTR_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define EINTR_SANITIZED 1
#endif
#endif
#ifndef EINTR_SANITIZED
#define EINTR_SANITIZED 0
#endif

#define DATA_LEN (EINTR_SANITIZED ? (size_t)1 << 20 : (size_t)4 << 20)

/* ------------------------------------------------------------------------
 * The wrapped calls
 * ---------------------------------------------------------------------- */

enum { F_READ, F_WRITE, F_POLL, F_RECV, F_SEND, F_FSYNC, F_FDATASYNC, F_CLOSE };
#define F_COUNT 8
static const char *const fn_names[F_COUNT] = {
    "read", "write", "poll", "recv", "send", "fsync", "fdatasync", "close"};

/* Fail call k (counted from 1) of a function with EINTR when k % every is
 * 1; cut it short when k % every is 2 (and every is 3). close has its own
 * rule (__wrap_close). */
static const int fn_every[F_COUNT] = {3, 3, 3, 3, 3, 2, 2, 1};

typedef struct fn_stats {
  atomic_long calls;   /* on targets */
  atomic_long eintr;   /* failed with EINTR, nothing done */
  atomic_long retried; /* an EINTR followed by the same call again */
  atomic_long cut;     /* made with half the length asked */
} fn_stats;

static fn_stats stats[F_COUNT];

/* The descriptors under test, each as fd + 1, so that the zeroed array
 * the process starts with names none. */
#define MAX_TARGETS 8
static atomic_int targets[MAX_TARGETS];

/* Per thread and call: the target descriptor + 1 whose last call of this
 * kind was failed with EINTR, 0 for none. */
static _Thread_local int pending[F_COUNT];

static bool is_target(int fd) {
  if (fd < 0)
    return false;
  for (int i = 0; i < MAX_TARGETS; i++)
    if (atomic_load(&targets[i]) == fd + 1)
      return true;
  return false;
}

static void target_add(int fd) {
  for (int i = 0; i < MAX_TARGETS; i++) {
    int free_slot = 0;
    if (atomic_compare_exchange_strong(&targets[i], &free_slot, fd + 1))
      return;
  }
  ck_abort_msg("more than %d target descriptors", MAX_TARGETS);
}

static void target_remove(int fd) {
  for (int i = 0; i < MAX_TARGETS; i++) {
    int want = fd + 1;
    atomic_compare_exchange_strong(&targets[i], &want, 0);
  }
}

static void targets_reset(void) {
  for (int i = 0; i < MAX_TARGETS; i++)
    atomic_store(&targets[i], 0);
  for (int f = 0; f < F_COUNT; f++) {
    atomic_store(&stats[f].calls, 0);
    atomic_store(&stats[f].eintr, 0);
    atomic_store(&stats[f].retried, 0);
    atomic_store(&stats[f].cut, 0);
  }
}

enum verdict { PASS, FAIL_EINTR, CUT_SHORT };

/* What to do with this call of f on fd; counts it. */
static enum verdict judge(int f, int fd) {
  long k;

  if (!is_target(fd))
    return PASS;
  if (pending[f] == fd + 1) {
    atomic_fetch_add(&stats[f].retried, 1);
    pending[f] = 0;
  }
  k = atomic_fetch_add(&stats[f].calls, 1) + 1;
  if (k % fn_every[f] == 1) {
    atomic_fetch_add(&stats[f].eintr, 1);
    pending[f] = fd + 1;
    return FAIL_EINTR;
  }
  if (fn_every[f] > 2 && k % fn_every[f] == 2)
    return CUT_SHORT;
  return PASS;
}

/* Half of n, never 0 (a write of 0 bytes would be a different thing). */
static size_t cut(int f, size_t n) {
  if (n < 2)
    return n;
  atomic_fetch_add(&stats[f].cut, 1);
  return n / 2;
}

ssize_t __real_read(int fd, void *buf, size_t n);
ssize_t __real_write(int fd, const void *buf, size_t n);
int __real_poll(struct pollfd *fds, nfds_t nfds, int timeout);
ssize_t __real_recv(int fd, void *buf, size_t n, int flags);
ssize_t __real_send(int fd, const void *buf, size_t n, int flags);
int __real_fsync(int fd);
int __real_fdatasync(int fd);
int __real_close(int fd);

ssize_t __wrap_read(int fd, void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
int __wrap_poll(struct pollfd *fds, nfds_t nfds, int timeout);
ssize_t __wrap_recv(int fd, void *buf, size_t n, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t n, int flags);
int __wrap_fsync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_close(int fd);

ssize_t __wrap_read(int fd, void *buf, size_t n) {
  switch (judge(F_READ, fd)) {
  case FAIL_EINTR:
    errno = EINTR;
    return -1;
  case CUT_SHORT:
    return __real_read(fd, buf, cut(F_READ, n));
  default:
    return __real_read(fd, buf, n);
  }
}

ssize_t __wrap_write(int fd, const void *buf, size_t n) {
  switch (judge(F_WRITE, fd)) {
  case FAIL_EINTR:
    errno = EINTR;
    return -1;
  case CUT_SHORT:
    return __real_write(fd, buf, cut(F_WRITE, n));
  default:
    return __real_write(fd, buf, n);
  }
}

/* A poll is a target's when its first descriptor is (the stages poll
 * their own descriptor first, the cancel descriptor second). */
int __wrap_poll(struct pollfd *fds, nfds_t nfds, int timeout) {
  if (nfds > 0 && judge(F_POLL, fds[0].fd) == FAIL_EINTR) {
    errno = EINTR;
    return -1;
  }
  return __real_poll(fds, nfds, timeout);
}

ssize_t __wrap_recv(int fd, void *buf, size_t n, int flags) {
  switch (judge(F_RECV, fd)) {
  case FAIL_EINTR:
    errno = EINTR;
    return -1;
  case CUT_SHORT:
    return __real_recv(fd, buf, cut(F_RECV, n), flags);
  default:
    return __real_recv(fd, buf, n, flags);
  }
}

ssize_t __wrap_send(int fd, const void *buf, size_t n, int flags) {
  switch (judge(F_SEND, fd)) {
  case FAIL_EINTR:
    errno = EINTR;
    return -1;
  case CUT_SHORT:
    return __real_send(fd, buf, cut(F_SEND, n), flags);
  default:
    return __real_send(fd, buf, n, flags);
  }
}

int __wrap_fsync(int fd) {
  if (judge(F_FSYNC, fd) == FAIL_EINTR) {
    errno = EINTR;
    return -1;
  }
  return __real_fsync(fd);
}

int __wrap_fdatasync(int fd) {
  if (judge(F_FDATASYNC, fd) == FAIL_EINTR) {
    errno = EINTR;
    return -1;
  }
  return __real_fdatasync(fd);
}

/* Linux frees the descriptor even when close says EINTR, so a caller must
 * not close it again: a retry would close whatever took the number next.
 * Every close of a target closes it, and says EINTR; the number stops
 * being a target before it can be reused, and a second close of it by the
 * same thread, as its next close, counts as a retry. */
int __wrap_close(int fd) {
  int rc;

  if (fd >= 0 && pending[F_CLOSE] == fd + 1)
    atomic_fetch_add(&stats[F_CLOSE].retried, 1);
  pending[F_CLOSE] = 0;
  if (!is_target(fd))
    return __real_close(fd);
  target_remove(fd);
  atomic_fetch_add(&stats[F_CLOSE].calls, 1);
  rc = __real_close(fd);
  if (rc != 0)
    return rc;
  atomic_fetch_add(&stats[F_CLOSE].eintr, 1);
  pending[F_CLOSE] = fd + 1;
  errno = EINTR;
  return -1;
}

/* ------------------------------------------------------------------------
 * Fixture and checks
 * ---------------------------------------------------------------------- */

static int base_threads;

static void setup(void) {
  targets_reset();
  ck_assert_int_eq(test_alloc_install(), 0);
  base_threads = pu_thread_count();
  ck_assert_int_gt(base_threads, 0);
}

static void teardown(void) {
  targets_reset();
  ck_assert_int_eq(test_alloc_live(), 0);
  ck_assert_int_eq(test_alloc_uninstall(), 0);
  ck_assert_int_eq(pu_threads_left(base_threads), 0);
}

/* Print what was injected, then assert that each call in want met EINTRs,
 * each of which was retried, that reads and writes in want were also cut
 * short, and that no close was ever retried. */
static void check_injected(const char *test, const int *want, int nwant) {
  printf("eintr: %s:", test);
  for (int f = 0; f < F_COUNT; f++)
    if (atomic_load(&stats[f].calls) > 0)
      printf(" %s %ld calls, %ld EINTR, %ld retried, %ld cut;", fn_names[f],
             atomic_load(&stats[f].calls), atomic_load(&stats[f].eintr),
             atomic_load(&stats[f].retried), atomic_load(&stats[f].cut));
  printf("\n");
  fflush(stdout);
  for (int i = 0; i < nwant; i++) {
    int f = want[i];
    long eintr = atomic_load(&stats[f].eintr);
    long retried = atomic_load(&stats[f].retried);
    ck_assert_msg(eintr > 0, "%s: no EINTR was injected into %s", test,
                  fn_names[f]);
    if (f == F_CLOSE)
      ck_assert_msg(retried == 0, "%s: close retried %ld times after EINTR",
                    test, retried);
    else
      ck_assert_msg(retried == eintr, "%s: %s: %ld EINTRs, %ld retried", test,
                    fn_names[f], eintr, retried);
    if (f == F_READ || f == F_WRITE || f == F_RECV || f == F_SEND)
      ck_assert_msg(atomic_load(&stats[f].cut) > 0, "%s: no %s was cut short",
                    test, fn_names[f]);
  }
}

static void check_upper(const unsigned char *got, size_t glen,
                        const unsigned char *data, size_t len) {
  ck_assert_uint_eq(glen, len);
  for (size_t i = 0; i < len; i++)
    test_check_msg(got[i] == pu_upper(data[i]), "byte %zu differs", i);
}

/* ------------------------------------------------------------------------
 * fd source -> upper -> fd sink, on pipes
 * ---------------------------------------------------------------------- */

typedef struct ends {
  int in_fd; /* the feeder writes data here */
  const unsigned char *data;
  size_t len;
  int feed_err;
  int out_fd; /* the drainer reads from here */
  pu_bytes got;
  int drain_err;
} ends;

/* The test's ends are no targets: what they meet is the real thing. */
static void *feeder_main(void *arg) {
  ends *e = arg;
  size_t off = 0;

  while (off < e->len) {
    size_t n = e->len - off > 10000 ? 10000 : e->len - off;
    ssize_t w = write(e->in_fd, e->data + off, n);
    if (w < 0) {
      e->feed_err = errno;
      break;
    }
    off += (size_t)w;
  }
  close(e->in_fd);
  return NULL;
}

static void *drainer_main(void *arg) {
  ends *e = arg;
  unsigned char buf[16384];

  for (;;) {
    ssize_t r = read(e->out_fd, buf, sizeof buf);
    if (r <= 0) {
      e->drain_err = r < 0 ? errno : 0;
      break;
    }
    if (!pu_bytes_add(&e->got, buf, (size_t)r)) {
      e->drain_err = ENOMEM;
      break;
    }
  }
  return NULL;
}

/* The sink's pipe is non-blocking, so that a full pipe sends its write
 * into poll too. */
START_TEST(test_fd_pipeline_survives_eintr) {
  static const int want[] = {F_READ, F_WRITE, F_POLL, F_CLOSE};
  unsigned char *data = pu_mixed_data(DATA_LEN, 31);
  sl_fd_opts so = {.name = "in", .flags = SL_FD_CLOSE, .chunk_size = 3000};
  sl_fd_opts ko = {.name = "out", .flags = SL_FD_CLOSE};
  sl_pipeline_opts po = {.buf_size = 4096, .hwm = 16384};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *sink = NULL, *xf;
  pthread_t feeder, drainer;
  int in[2], out[2], rc;
  uint64_t written;
  char err[256];
  pu_xf upper;
  ends e;

  ck_assert_ptr_nonnull(data);
  signal(SIGPIPE, SIG_IGN);
  memset(&e, 0, sizeof e);
  ck_assert_int_eq(pipe(in), 0);
  ck_assert_int_eq(pipe(out), 0);
  ck_assert_int_eq(fcntl(out[1], F_SETFL, fcntl(out[1], F_GETFL) | O_NONBLOCK),
                   0);
  pu_xf_init(&upper, PU_UPPER);
  ck_assert_int_eq(sl_pipeline_new(&p, &po), 0);
  ck_assert_int_eq(sl_fd_source_new(&src, in[0], &so), 0);
  ck_assert_ptr_nonnull(xf = pu_xf_stage("upper", &upper, false));
  ck_assert_int_eq(sl_fd_sink_new(&sink, out[1], &ko), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, xf, sink, NULL), 0);
  target_add(in[0]);
  target_add(out[1]);

  e.in_fd = in[1];
  e.data = data;
  e.len = DATA_LEN;
  e.out_fd = out[0];
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(pthread_create(&feeder, NULL, feeder_main, &e), 0);
  ck_assert_int_eq(pthread_create(&drainer, NULL, drainer_main, &e), 0);
  rc = sl_pipeline_wait(p);
  snprintf(err, sizeof err, "%s",
           sl_pipeline_error(p) ? sl_pipeline_error(p) : "");
  written = sl_fd_bytes(sink);
  /* Freed before the joins: a pipeline that failed reads no more, and
   * only closing its ends frees a feeder blocked on a full pipe (EPIPE,
   * with SIGPIPE ignored) and ends the drainer's read. */
  sl_pipeline_free(p);
  pthread_join(feeder, NULL);
  pthread_join(drainer, NULL);
  close(out[0]);
  ck_assert_msg(rc == 0, "%s: %s", sl_err_name(rc), err);
  ck_assert_uint_eq(written, DATA_LEN);

  ck_assert_int_eq(e.feed_err, 0);
  ck_assert_int_eq(e.drain_err, 0);
  check_upper(e.got.p, e.got.len, data, DATA_LEN);
  check_injected("fd source -> upper -> fd sink", want,
                 (int)(sizeof want / sizeof want[0]));
  pu_bytes_free(&e.got);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * file source -> upper -> markers -> atomic file sink
 * ---------------------------------------------------------------------- */

/* A file stage opens its descriptors itself: whatever a constructor
 * opened is a target. Nothing else opens descriptors meanwhile. */
#define FD_SCAN 1024

static void fds_open(bool open_now[FD_SCAN]) {
  for (int fd = 0; fd < FD_SCAN; fd++)
    open_now[fd] = fcntl(fd, F_GETFD) != -1;
}

static int target_new_fds(const bool before[FD_SCAN]) {
  int n = 0;

  for (int fd = 0; fd < FD_SCAN; fd++)
    if (!before[fd] && fcntl(fd, F_GETFD) != -1) {
      target_add(fd);
      n++;
    }
  return n;
}

/* A flush marker after every third chunk, so the sink's sync op runs. */
typedef struct marker {
  pu_common c;
  long chunks, marks;
} marker;

static int marker_transform(sl_stage *st, void *ctx, sl_buf *in) {
  marker *m = ctx;
  int rc = sl_stage_push(st, in);

  if (rc == 0 && ++m->chunks % 3 == 0) {
    rc = sl_stage_push_flush(st);
    m->marks += rc == 0;
  }
  return rc;
}

static char *path_in(const char *dir, const char *name) {
  static char buf[2][512];
  static int next;
  char *p = buf[next++ % 2];

  snprintf(p, sizeof buf[0], "%s/%s", dir, name);
  return p;
}

/* The directory holds exactly the two names (no temporary left). */
static void check_dir_holds(const char *dir, const char *a, const char *b) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int n = 0;

  ck_assert_ptr_nonnull(d);
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    ck_assert_msg(strcmp(de->d_name, a) == 0 || strcmp(de->d_name, b) == 0,
                  "left in the directory: %s", de->d_name);
    n++;
  }
  closedir(d);
  ck_assert_int_eq(n, 2);
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  pu_bytes b = {0};
  unsigned char buf[65536];
  size_t n;

  if (f == NULL)
    return NULL;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    if (!pu_bytes_add(&b, buf, n))
      break;
  fclose(f);
  *len = b.len;
  return b.p ? b.p : malloc(1);
}

START_TEST(test_file_pipeline_survives_eintr) {
  static const int want[] = {F_READ, F_WRITE, F_FSYNC, F_FDATASYNC, F_CLOSE};
  unsigned char *data = pu_mixed_data(DATA_LEN, 32), *got;
  const char *tmp = getenv("TMPDIR");
  char dirbuf[512];
  const char *dir;
  sl_stage_ops mops = {.transform = marker_transform, .destroy = pu_destroy};
  sl_fd_opts so = {.name = "in", .chunk_size = 5000};
  sl_fd_opts ko = {.name = "out"};
  sl_pipeline_opts po = {.buf_size = 8192, .hwm = 32768};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *sink = NULL, *xf, *mk = NULL;
  bool before[FD_SCAN];
  size_t glen = 0;
  pu_xf upper;
  marker m;
  FILE *f;
  int rc;

  ck_assert_ptr_nonnull(data);
  snprintf(dirbuf, sizeof dirbuf, "%s/sl-eintr.XXXXXX",
           tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
  ck_assert_ptr_nonnull(dir = mkdtemp(dirbuf));
  ck_assert_ptr_nonnull(f = fopen(path_in(dir, "in"), "wb"));
  ck_assert_uint_eq(fwrite(data, 1, DATA_LEN, f), DATA_LEN);
  ck_assert_int_eq(fclose(f), 0);

  memset(&m, 0, sizeof m);
  pu_common_init(&m.c);
  pu_xf_init(&upper, PU_UPPER);
  ck_assert_int_eq(sl_pipeline_new(&p, &po), 0);
  fds_open(before);
  ck_assert_int_eq(sl_file_source_new(&src, path_in(dir, "in"), &so), 0);
  ck_assert_int_eq(sl_file_sink_new(&sink, path_in(dir, "out"), &ko), 0);
  /* the source's file, the sink's temporary and its directory */
  ck_assert_int_eq(target_new_fds(before), 3);
  ck_assert_ptr_nonnull(xf = pu_xf_stage("upper", &upper, false));
  ck_assert_int_eq(sl_stage_new(&mk, "marks", &mops, &m), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, xf, mk, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  rc = sl_pipeline_wait(p);
  ck_assert_msg(rc == 0, "%s: %s", sl_err_name(rc),
                sl_pipeline_error(p) ? sl_pipeline_error(p) : "");
  ck_assert_uint_eq(sl_fd_bytes(sink), DATA_LEN);
  sl_pipeline_free(p);
  ck_assert_int_gt(m.marks, 0);

  ck_assert_ptr_nonnull(got = read_file(path_in(dir, "out"), &glen));
  check_upper(got, glen, data, DATA_LEN);
  check_dir_holds(dir, "in", "out");
  check_injected("file source -> upper -> file sink", want,
                 (int)(sizeof want / sizeof want[0]));
  /* The source's file is kept as it was. */
  free(got);
  ck_assert_ptr_nonnull(got = read_file(path_in(dir, "in"), &glen));
  ck_assert_uint_eq(glen, DATA_LEN);
  ck_assert(memcmp(got, data, DATA_LEN) == 0);
  free(got);
  unlink(path_in(dir, "in"));
  unlink(path_in(dir, "out"));
  rmdir(dir);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * memory source -> socket -> echoing peer -> socket -> upper -> memory sink
 * ---------------------------------------------------------------------- */

typedef struct echo {
  int fd;
  size_t echoed;
  int err;
} echo;

/* Send back everything until the stage's half-close, then half-close. */
static void *echo_main(void *arg) {
  echo *e = arg;
  unsigned char buf[16384];

  for (;;) {
    ssize_t r = read(e->fd, buf, sizeof buf);
    if (r <= 0) {
      e->err = r < 0 ? errno : 0;
      break;
    }
    for (ssize_t off = 0; off < r;) {
      ssize_t w = send(e->fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
      if (w < 0) {
        e->err = errno;
        return NULL;
      }
      off += w;
    }
    e->echoed += (size_t)r;
  }
  shutdown(e->fd, SHUT_WR);
  return NULL;
}

START_TEST(test_socket_survives_eintr) {
  static const int want[] = {F_RECV, F_SEND, F_POLL};
  unsigned char *data = pu_mixed_data(DATA_LEN, 33);
  sl_mem_opts mo = {.chunk_size = 7000};
  sl_socket_opts to = {.flags = SL_SOCKET_CLOSE, .chunk_size = 6000};
  sl_pipeline_opts po = {.buf_size = 8192, .hwm = 32768};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *sock = NULL, *xf, *sink = NULL;
  const void *got = NULL;
  size_t glen = 0;
  pthread_t peer;
  int fds[2], rc, small = 16384;
  char err[256];
  pu_xf upper;
  echo e;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  /* Small buffers: both of the stage's sides meet a full or empty socket
   * often, and so poll. */
  for (int i = 0; i < 2; i++) {
    setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  }
  memset(&e, 0, sizeof e);
  e.fd = fds[1];
  pu_xf_init(&upper, PU_UPPER);
  ck_assert_int_eq(sl_pipeline_new(&p, &po), 0);
  ck_assert_int_eq(sl_mem_source_new(&src, data, DATA_LEN, &mo), 0);
  ck_assert_int_eq(sl_socket_new(&sock, "sock", fds[0], &to), 0);
  ck_assert_ptr_nonnull(xf = pu_xf_stage("upper", &upper, false));
  ck_assert_int_eq(sl_mem_sink_new(&sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, sock, xf, sink, NULL), 0);
  target_add(fds[0]);

  ck_assert_int_eq(pthread_create(&peer, NULL, echo_main, &e), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  rc = sl_pipeline_wait(p);
  if (rc != 0) { /* the socket's close (in free) ends the peer */
    snprintf(err, sizeof err, "%s",
             sl_pipeline_error(p) ? sl_pipeline_error(p) : "");
    sl_pipeline_free(p);
    pthread_join(peer, NULL);
    ck_abort_msg("%s: %s", sl_err_name(rc), err);
  }
  pthread_join(peer, NULL);
  ck_assert_int_eq(e.err, 0);
  ck_assert_uint_eq(e.echoed, DATA_LEN);
  ck_assert_int_eq(sl_mem_sink_data(sink, &got, &glen), 0);
  check_upper(got, glen, data, DATA_LEN);
  sl_pipeline_free(p);
  close(fds[1]);
  check_injected("memory -> socket -> echo -> socket -> upper -> memory", want,
                 (int)(sizeof want / sizeof want[0]));
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *eintr_suite(void) {
  Suite *s = suite_create("eintr");
  TCase *tc = tcase_create("injected");

  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_fd_pipeline_survives_eintr);
  tcase_add_test(tc, test_file_pipeline_survives_eintr);
  tcase_add_test(tc, test_socket_survives_eintr);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(eintr_suite());
}

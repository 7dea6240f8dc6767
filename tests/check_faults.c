/* SPDX-License-Identifier: MIT */
/*
 * Faults from outside a pipeline: memory that runs out and descriptors
 * that fail.
 *
 * Allocation failure, SQLite's way. Through the allocator hook, the 1st,
 * 2nd, 3rd ... allocation is made to fail while a compressing round trip
 * (memory source -> gzip -> gunzip -> memory sink, and the same with the
 * parallel gzip stage on two workers and the two-thread gunzip) is built
 * and run, until a run makes fewer allocations than the one that would
 * fail. Every run must end in SL_ENOMEM, from the call that builds or from
 * sl_pipeline_wait, or in success with byte-exact output; never a crash, a
 * hang (each run has a 10 s watchdog) or a leak (the library holds no
 * block after sl_pipeline_free). zlib's own state must come through the
 * same hook, or failing it would prove nothing: a sized allocator shows
 * that a gzip stage's deflate state is counted.
 *
 * Descriptors. A sink on /dev/full fails with SL_ENOSPC and a message that
 * names the stage. A storm of SIGUSR1, with a handler installed without
 * SA_RESTART and sent to every stage thread, to the threads feeding and
 * draining the pipes and to the process, changes nothing in what an
 * fd source -> transform -> fd sink pipeline carries. Stage threads block
 * those signals, so the storm proves just that, and interrupts only the
 * feeder, the drainer and the main thread; the stages' own EINTR loops
 * are reached by tests/check_eintr.c, which injects the error into their
 * system calls. A pipe whose reader has gone gives SL_EPIPE from
 * sl_pipeline_wait, and the process, with SIGPIPE at its default (fatal)
 * disposition, lives on. A fault in an op (a real SIGSEGV, on the stage's
 * thread) runs the handler the process installed for it.
 */
#include "pipeutil.h"
#include "stage-int.h" /* the stage threads a signal storm aims at */

#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define FAULTS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define FAULTS_SANITIZED 1
#endif
#endif
#ifndef FAULTS_SANITIZED
#define FAULTS_SANITIZED 0
#endif

#define WATCHDOG_S 10

static int base_threads;

static void setup(void) {
  ck_assert_int_eq(test_alloc_install(), 0);
  base_threads = pu_thread_count();
  ck_assert_int_gt(base_threads, 0);
}

static void teardown(void) {
  fail_alloc_disarm();
  ck_assert_int_eq(test_alloc_live(), 0);
  ck_assert_int_eq(test_alloc_uninstall(), 0);
  ck_assert_int_eq(pu_threads_left(base_threads), 0);
}

/* ------------------------------------------------------------------------
 * A finished callback with a deadline
 * ---------------------------------------------------------------------- */

typedef struct finish {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int calls, status;
} finish;

static void finish_init(finish *f) {
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  f->calls = 0;
  f->status = 1;
}

static void finish_fini(finish *f) {
  pthread_cond_destroy(&f->cv);
  pthread_mutex_destroy(&f->mu);
}

static void finish_cb(sl_pipeline *p, int status, void *arg) {
  finish *f = arg;

  (void)p;
  pthread_mutex_lock(&f->mu);
  f->calls++;
  f->status = status;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
}

/* Wait for the callback at most WATCHDOG_S seconds; false (after printing
 * the pipeline's counters) when it did not come. */
static bool finish_wait(finish *f, sl_pipeline *p) {
  test_hang_clock hc;
  bool over = false, came;

  test_hang_clock_start(&hc, CLOCK_REALTIME); /* f->cv's clock */
  pthread_mutex_lock(&f->mu);
  while (f->calls == 0 && !over) {
    struct timespec next = test_hang_clock_next(&hc);
    pthread_cond_timedwait(&f->cv, &f->mu, &next);
    over = test_hang_clock_over(&hc, WATCHDOG_S);
  }
  came = f->calls != 0;
  pthread_mutex_unlock(&f->mu);
  if (!came) {
    sl_pipeline_stats_print(p, stderr);
    sl_pipeline_stall_report(p, stderr);
  }
  return came;
}

/* ------------------------------------------------------------------------
 * zlib's memory comes through the hook
 * ---------------------------------------------------------------------- */

static atomic_long sized_live_bytes;

typedef union sized_hdr {
  size_t size;
  max_align_t align;
} sized_hdr;

static void *sized_malloc(size_t n) {
  sized_hdr *h = malloc(sizeof *h + n);
  if (h == NULL)
    return NULL;
  h->size = n;
  atomic_fetch_add(&sized_live_bytes, (long)n);
  return h + 1;
}

static void *sized_calloc(size_t c, size_t n) {
  void *p;
  if (n != 0 && c > ((size_t)1 << 40) / n)
    return NULL;
  p = sized_malloc(c * n);
  if (p != NULL)
    memset(p, 0, c * n);
  return p;
}

static void sized_free(void *p) {
  sized_hdr *h = p;
  if (p == NULL)
    return;
  h--;
  atomic_fetch_sub(&sized_live_bytes, (long)h->size);
  free(h);
}

static void *sized_realloc(void *p, size_t n) {
  sized_hdr *h = p, *g;
  size_t old;
  if (p == NULL)
    return sized_malloc(n);
  h--;
  old = h->size;
  g = realloc(h, sizeof *g + n);
  if (g == NULL)
    return NULL;
  g->size = n;
  atomic_fetch_add(&sized_live_bytes, (long)n - (long)old);
  return g + 1;
}

/* A gzip stage at mem_level 9 holds zlib's deflate state: its window (64
 * KiB), hash chains (64 KiB), hash heads (128 KiB) and pending buffer (128
 * KiB). Only an allocator that sees zlib's own calls counts that much. */
START_TEST(test_zlib_state_comes_through_the_hook) {
  sl_zlib_opts o;
  sl_stage *gz = NULL;

  ck_assert_int_eq(test_alloc_uninstall(), 0); /* the fixture's */
  atomic_store(&sized_live_bytes, 0);
  ck_assert_int_eq(
      sl_set_allocator(sized_malloc, sized_realloc, sized_calloc, sized_free),
      0);
  ck_assert_int_eq(sl_zlib_opts_init(&o), 0);
  o.mem_level = 9;
  ck_assert_int_eq(sl_gzip_new(&gz, &o), 0);
  ck_assert_int_gt(atomic_load(&sized_live_bytes), 300L << 10);
  sl_stage_free(gz);
  ck_assert_int_eq(atomic_load(&sized_live_bytes), 0);
  ck_assert_int_eq(sl_set_allocator(NULL, NULL, NULL, NULL), 0);
  ck_assert_int_eq(test_alloc_install(), 0); /* for the teardown */
}
END_TEST

/* ------------------------------------------------------------------------
 * Failing the nth allocation of a gzip round trip
 * ---------------------------------------------------------------------- */

enum { RT_GZIP, RT_PGZIP, RT_GZIP_SET };

#define RT_LEN (FAULTS_SANITIZED ? (size_t)70000 : (size_t)300000)

/* Build src -> compress -> decompress -> sink with every call checked;
 * the first failure is returned (and everything made so far freed by the
 * caller through *p and the stages left in st). */
typedef struct round_trip {
  sl_pipeline *p;
  sl_threads *threads; /* RT_GZIP_SET: the stage threads' set */
  sl_stage *st[4];     /* src, compressor, sink; [3] unused */
  bool chained;
  finish fin;
} round_trip;

static int rt_build(round_trip *r, int kind, const unsigned char *data,
                    size_t len) {
  sl_pipeline_opts o = {.buf_size = 16384, .hwm = 65536, .max_cached = 1};
  sl_mem_opts mo = {.chunk_size = 5000};
  sl_zlib_opts zo;
  int rc;

  if (kind == RT_PGZIP)
    o.buf_size = 32768; /* a block from the pool */
  o.threads = r->threads;
  if (kind == RT_GZIP_SET)
    kind = RT_GZIP;
  rc = sl_pipeline_new(&r->p, &o);
  if (rc == 0)
    rc = sl_pipeline_on_finished(r->p, finish_cb, &r->fin);
  if (rc == 0)
    rc = sl_mem_source_new(&r->st[0], data, len, &mo);
  if (rc == 0 && kind == RT_GZIP) {
    rc = sl_zlib_opts_init(&zo);
    zo.level = 1;
    if (rc == 0)
      rc = sl_gzip_new(&r->st[1], &zo);
  } else if (rc == 0) {
    sl_pgzip_opts po;
    rc = sl_pgzip_opts_init(&po);
    po.level = 1;
    po.workers = 2;
    po.block_size = SL_PGZIP_BLOCK_MIN;
    if (rc == 0)
      rc = sl_pgzip_new(&r->st[1], &po);
  }
  if (rc == 0)
    rc = sl_mem_sink_new(&r->st[2], NULL);
  if (rc == 0 && kind == RT_GZIP) {
    sl_stage *gunzip = NULL;
    rc = sl_gunzip_new(&gunzip, NULL);
    if (rc == 0) {
      rc = sl_pipeline_chain(r->p, r->st[0], r->st[1], gunzip, r->st[2], NULL);
      if (rc != 0)
        sl_stage_free(gunzip);
    }
    r->chained = rc == 0;
  } else if (rc == 0) {
    rc = sl_pipeline_chain(r->p, r->st[0], r->st[1], NULL);
    r->chained = rc == 0;
    if (rc == 0) /* from here on the pipeline owns src and pgzip */
      rc = sl_pgunzip_chain(r->p, r->st[1], r->st[2], NULL);
    if (rc != 0)
      sl_stage_free(r->st[2]), r->st[2] = NULL; /* still ours */
  }
  return rc;
}

static void rt_free(round_trip *r) {
  if (!r->chained)
    for (int i = 0; i < 3; i++)
      sl_stage_free(r->st[i]);
  sl_pipeline_free(r->p);
}

static void alloc_loop(int kind) {
  unsigned char *data = pu_mixed_data(RT_LEN, 99);
  long n, enomem_build = 0, enomem_run = 0, absorbed = 0;

  ck_assert_ptr_nonnull(data);
  for (n = 1;; n++) {
    round_trip r;
    int rc, threads_before = pu_thread_count();
    bool started = false;

    test_check_msg(n < 200000, "allocations never stop");
    memset(&r, 0, sizeof r);
    finish_init(&r.fin);
    /* A set of its own, made before the failures start, so that every
     * stage thread is new: the set's allocations fail too. */
    if (kind == RT_GZIP_SET)
      ck_assert_int_eq(sl_threads_new(&r.threads, 0, 0), 0);
    fail_alloc_arm(n);
    rc = rt_build(&r, kind, data, RT_LEN);
    if (rc == 0) {
      started = true;
      rc = sl_pipeline_start(r.p);
      test_check_msg(rc == 0 || rc == SL_ENOMEM, "n=%ld: start %s", n,
                     sl_err_name(rc));
      test_check_msg(finish_wait(&r.fin, r.p), "n=%ld: no finish within %d s",
                     n, WATCHDOG_S);
      test_check_msg(sl_pipeline_wait(r.p) == rc || rc == 0,
                     "n=%ld: start said %s, wait %s", n, sl_err_name(rc),
                     sl_err_name(sl_pipeline_wait(r.p)));
      rc = sl_pipeline_wait(r.p);
      enomem_run += rc != 0;
    } else {
      enomem_build++;
    }
    long count = fail_alloc_count(), failed = fail_alloc_failed();
    fail_alloc_disarm();

    test_check_msg(
        rc == 0 || rc == SL_ENOMEM, "n=%ld: %s (%s)", n, sl_err_name(rc),
        started && sl_pipeline_error(r.p) ? sl_pipeline_error(r.p) : "");
    test_check_msg(rc == 0 || failed == 1, "n=%ld: %s with no failure", n,
                   sl_err_name(rc));
    if (rc == 0) {
      const void *out = NULL;
      size_t len = 0;
      test_check(sl_mem_sink_data(r.st[2], &out, &len) == 0);
      test_check_msg(len == RT_LEN && memcmp(out, data, len) == 0,
                     "n=%ld: %zu bytes out of %zu", n, len, RT_LEN);
      absorbed += failed;
    }
    /* A zlib stage may keep the output buffer it was filling until it is
     * destroyed, so the pool is checked after free, through the live
     * count, not after wait. */
    if (started) {
      test_check(r.fin.calls == 1);
      test_check(r.fin.status == rc);
    }
    rt_free(&r);
    sl_threads_free(r.threads);
    finish_fini(&r.fin);
    test_check_msg(test_alloc_live() == 0, "n=%ld: %ld blocks leaked", n,
                   test_alloc_live());
    test_check_msg(pu_threads_left(threads_before) == 0, "n=%ld: threads left",
                   n);
    if (count < n) { /* this run did not reach allocation n */
      test_check(rc == 0);
      break;
    }
  }
  /* Both the building calls and the running pipeline met failures. */
  ck_assert_int_gt(enomem_build, 0);
  ck_assert_int_gt(enomem_run, 0);
  printf("faults: %s round trip: %ld allocations; a failure ended %ld "
         "builds and %ld runs in SL_ENOMEM, %ld were absorbed\n",
         kind == RT_GZIP       ? "gzip"
         : kind == RT_GZIP_SET ? "gzip (thread set)"
                               : "pgzip",
         n - 1, enomem_build, enomem_run, absorbed);
  free(data);
}

START_TEST(test_alloc_fail_gzip_round_trip) {
  alloc_loop(RT_GZIP);
}
END_TEST

/* The same, its stage threads from a thread set. */
START_TEST(test_alloc_fail_gzip_thread_set) {
  alloc_loop(RT_GZIP_SET);
}
END_TEST

START_TEST(test_alloc_fail_pgzip_round_trip) {
  alloc_loop(RT_PGZIP);
}
END_TEST

/* ------------------------------------------------------------------------
 * A full disk
 * ---------------------------------------------------------------------- */

/* Check has no "skipped" result: a test that cannot run here passes,
 * and says so in the log, so that a pass is never mistaken for a check. */
static void dev_full_skipped(const char *test) {
  fprintf(stderr, "check_faults: %s: no writable /dev/full (%s); skipped\n",
          test, strerror(errno));
}

static void run_to_full(sl_stage *sink, const char *name) {
  static unsigned char data[100000];
  sl_pipeline *p = NULL;
  sl_stage *src = NULL;
  const char *err;
  char want[64];

  memset(data, 'x', sizeof data);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_mem_source_new(&src, data, sizeof data, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ENOSPC);
  ck_assert_int_eq(sl_stage_status(sink), SL_ENOSPC);
  err = sl_pipeline_error(p);
  ck_assert_ptr_nonnull(err);
  snprintf(want, sizeof want, "%s: ", name);
  ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "message: %s", err);
  ck_assert_msg(strstr(err, "write ") != NULL, "message: %s", err);
  ck_assert_msg(strstr(err, strerror(ENOSPC)) != NULL, "message: %s", err);
  sl_pipeline_free(p);
}

START_TEST(test_file_sink_dev_full_enospc) {
  sl_fd_opts o = {.name = "out"};
  sl_stage *sink = NULL;

  if (access("/dev/full", W_OK) != 0) {
    dev_full_skipped("test_file_sink_dev_full_enospc");
    return;
  }
  ck_assert_int_eq(sl_file_sink_new(&sink, "/dev/full", &o), 0);
  run_to_full(sink, "out");
}
END_TEST

START_TEST(test_fd_sink_dev_full_enospc) {
  sl_fd_opts o = {.name = "full", .flags = SL_FD_CLOSE};
  sl_stage *sink = NULL;
  int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);

  if (fd < 0) {
    dev_full_skipped("test_fd_sink_dev_full_enospc");
    return;
  }
  ck_assert_int_eq(sl_fd_sink_new(&sink, fd, &o), 0);
  run_to_full(sink, "full");
}
END_TEST

/* ------------------------------------------------------------------------
 * A broken pipe
 * ---------------------------------------------------------------------- */

START_TEST(test_fd_sink_epipe_is_an_error) {
  static unsigned char data[1 << 20];
  sl_fd_opts o = {.name = "pipe-out", .flags = SL_FD_CLOSE};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *sink = NULL;
  sigset_t pending;
  int fds[2];

  /* The default disposition kills the process: if the library let a
   * SIGPIPE through, the test would die instead of failing. */
  signal(SIGPIPE, SIG_DFL);
  ck_assert_int_eq(pipe(fds), 0);
  close(fds[0]);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_mem_source_new(&src, data, sizeof data, NULL), 0);
  ck_assert_int_eq(sl_fd_sink_new(&sink, fds[1], &o), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EPIPE);
  ck_assert_msg(strncmp(sl_pipeline_error(p), "pipe-out: ", 10) == 0,
                "message: %s", sl_pipeline_error(p));
  sl_pipeline_free(p);
  ck_assert_int_eq(sigpending(&pending), 0);
  ck_assert_int_eq(sigismember(&pending, SIGPIPE), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * A crash on a stage thread
 * ---------------------------------------------------------------------- */

#define CRASH_HANDLED 42

static volatile unsigned char *crash_page;

static void crash_handler(int sig) {
  static const char msg[] = "check_faults: SIGSEGV handled\n";

  (void)sig;
  if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
    _exit(CRASH_HANDLED + 1);
  _exit(CRASH_HANDLED);
}

static int crash_read(sl_stage *st, void *ctx) {
  (void)st;
  (void)ctx;
  crash_page[0] = 1; /* PROT_NONE: the kernel raises SIGSEGV right here */
  return SL_EOF;
}

/* Run a pipeline whose source faults; only returns when it did not. */
static void crash_child(void) {
  sl_stage_ops ops = {.read = crash_read};
  struct sigaction sa;
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *sink = NULL;
  void *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

  if (page == MAP_FAILED)
    _exit(2);
  crash_page = page;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = crash_handler;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, NULL) != 0 || sl_pipeline_new(&p, NULL) != 0 ||
      sl_stage_new(&src, "crash", &ops, NULL) != 0 ||
      sl_mem_sink_new(&sink, NULL) != 0 ||
      sl_pipeline_chain(p, src, sink, NULL) != 0 || sl_pipeline_start(p) != 0)
    _exit(3);
  sl_pipeline_wait(p);
  _exit(4); /* the fault did not happen */
}

/* Stage threads block the asynchronous signals, not the synchronous ones:
 * a fault in an op reaches the handler the application installed for it
 * (which a blocked SIGSEGV never would: the kernel kills the process
 * instead). In a child process, which the handler ends with its own
 * status. */
START_TEST(test_stage_fault_reaches_the_handler) {
  int status = 0;
  pid_t pid;

  fflush(NULL);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    crash_child();
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(!WIFSIGNALED(status),
                "the child was killed by signal %d: no handler ran",
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CRASH_HANDLED,
                "the child exited with %d, want %d (the handler's)",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1, CRASH_HANDLED);
}
END_TEST

/* ------------------------------------------------------------------------
 * A storm of signals
 * ---------------------------------------------------------------------- */

static atomic_long storm_handled;

static void storm_handler(int sig) {
  (void)sig;
  atomic_fetch_add(&storm_handled, 1);
}

typedef struct storm {
  sl_pipeline *p;
  pthread_t others[2]; /* the feeder and the drainer */
  atomic_int stop;
  long sent;
  /* feeder */
  int in_fd;
  const unsigned char *data;
  size_t len;
  int feed_err;
  /* drainer */
  int out_fd;
  pu_bytes got;
  int drain_err;
} storm;

/* Write everything to the pipe, retrying what a signal interrupts. */
static void *feeder_main(void *arg) {
  storm *s = arg;
  size_t off = 0;

  while (off < s->len) {
    size_t n = s->len - off > 7000 ? 7000 : s->len - off;
    ssize_t w = write(s->in_fd, s->data + off, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      s->feed_err = errno;
      break;
    }
    off += (size_t)w;
  }
  close(s->in_fd);
  return NULL;
}

static void *drainer_main(void *arg) {
  storm *s = arg;
  unsigned char buf[9000];

  for (;;) {
    ssize_t r = read(s->out_fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      s->drain_err = errno;
      break;
    }
    if (r == 0)
      break;
    if (!pu_bytes_add(&s->got, buf, (size_t)r)) {
      s->drain_err = ENOMEM;
      break;
    }
  }
  return NULL;
}

/* Until told to stop, SIGUSR1 at every stage thread, at the feeder and
 * the drainer, and at the process. pthread_kill on a thread that has been
 * joined is undefined (its pthread_t may already name another thread), so
 * the test stops and joins this thread first: before it joins the feeder
 * and the drainer, and before sl_pipeline_wait joins the stage threads.
 * Until then every pthread_t here names a thread that may have ended but
 * has not been joined, which pthread_kill accepts. */
static void *storm_main(void *arg) {
  storm *s = arg;

  while (!atomic_load(&s->stop)) {
    for (size_t i = 0; i < sl_pipeline_stage_count(s->p); i++) {
      sl_stage *st = sl_pipeline_stage(s->p, i);
      for (int t = 0; t < st->nthreads; t++)
        if (pthread_kill(st->threads[t], SIGUSR1) == 0)
          s->sent++;
    }
    for (int t = 0; t < 2; t++)
      if (pthread_kill(s->others[t], SIGUSR1) == 0)
        s->sent++;
    if (kill(getpid(), SIGUSR1) == 0)
      s->sent++;
    sched_yield();
  }
  return NULL;
}

START_TEST(test_signal_storm_changes_nothing) {
  const size_t len = FAULTS_SANITIZED ? (size_t)1 << 20 : (size_t)8 << 20;
  unsigned char *data = pu_mixed_data(len, 5);
  struct sigaction sa, old;
  sl_fd_opts so = {.name = "in", .flags = SL_FD_CLOSE, .chunk_size = 3000};
  sl_fd_opts ko = {.name = "out", .flags = SL_FD_CLOSE};
  sl_pipeline_opts po = {.buf_size = 4096, .hwm = 16384};
  sl_stage *src = NULL, *sink = NULL, *xf;
  int in[2], out[2];
  pthread_t stormer;
  finish fin;
  storm s;
  pu_xf upper;
  bool finished;

  ck_assert_ptr_nonnull(data);
  memset(&s, 0, sizeof s);
  atomic_init(&s.stop, 0);
  atomic_store(&storm_handled, 0);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = storm_handler;
  sa.sa_flags = 0; /* no SA_RESTART: interrupted calls fail with EINTR */
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old), 0);

  ck_assert_int_eq(pipe(in), 0);
  ck_assert_int_eq(pipe(out), 0);
  finish_init(&fin);
  pu_xf_init(&upper, PU_UPPER);
  ck_assert_int_eq(sl_pipeline_new(&s.p, &po), 0);
  ck_assert_int_eq(sl_pipeline_on_finished(s.p, finish_cb, &fin), 0);
  ck_assert_int_eq(sl_fd_source_new(&src, in[0], &so), 0);
  ck_assert_ptr_nonnull(xf = pu_xf_stage("upper", &upper, false));
  ck_assert_int_eq(sl_fd_sink_new(&sink, out[1], &ko), 0);
  ck_assert_int_eq(sl_pipeline_chain(s.p, src, xf, sink, NULL), 0);

  s.in_fd = in[1];
  s.data = data;
  s.len = len;
  s.out_fd = out[0];
  ck_assert_int_eq(sl_pipeline_start(s.p), 0);
  ck_assert_int_eq(pthread_create(&s.others[0], NULL, feeder_main, &s), 0);
  ck_assert_int_eq(pthread_create(&s.others[1], NULL, drainer_main, &s), 0);
  ck_assert_int_eq(pthread_create(&stormer, NULL, storm_main, &s), 0);

  finished = finish_wait(&fin, s.p);
  atomic_store(&s.stop, 1);
  pthread_join(stormer, NULL); /* first: it names the other threads */
  pthread_join(s.others[0], NULL);
  pthread_join(s.others[1], NULL);
  ck_assert_msg(finished, "no finish within %d s", WATCHDOG_S);
  ck_assert_int_eq(sl_pipeline_wait(s.p), 0);
  ck_assert_ptr_null(sl_pipeline_error(s.p));
  sl_pipeline_free(s.p);
  close(out[0]);
  ck_assert_int_eq(sigaction(SIGUSR1, &old, NULL), 0);

  ck_assert_int_eq(s.feed_err, 0);
  ck_assert_int_eq(s.drain_err, 0);
  ck_assert_uint_eq(s.got.len, len);
  for (size_t i = 0; i < len; i++)
    test_check_msg(s.got.p[i] == pu_upper(data[i]), "byte %zu differs", i);
  ck_assert_int_eq(pu_destroyed(&upper), 1);
  /* The storm was real: signals were sent and handlers ran. */
  ck_assert_int_gt(s.sent, 0);
  ck_assert_int_gt(atomic_load(&storm_handled), 0);
  pu_bytes_free(&s.got);
  finish_fini(&fin);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);

  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

static Suite *faults_suite(void) {
  Suite *s = suite_create("faults");
  TCase *tc;

  tc = tcase("alloc", 300);
  tcase_add_test(tc, test_zlib_state_comes_through_the_hook);
  tcase_add_test(tc, test_alloc_fail_gzip_round_trip);
  tcase_add_test(tc, test_alloc_fail_gzip_thread_set);
  tcase_add_test(tc, test_alloc_fail_pgzip_round_trip);
  suite_add_tcase(s, tc);

  tc = tcase("io", 60);
  tcase_add_test(tc, test_file_sink_dev_full_enospc);
  tcase_add_test(tc, test_fd_sink_dev_full_enospc);
  tcase_add_test(tc, test_fd_sink_epipe_is_an_error);
  tcase_add_test(tc, test_stage_fault_reaches_the_handler);
  tcase_add_test(tc, test_signal_storm_changes_nothing);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(faults_suite());
}

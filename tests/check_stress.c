/* SPDX-License-Identifier: MIT */
/*
 * Randomized stress: many small pipelines, each built from a seeded
 * generator, each run once and checked against every promise the library
 * makes about how a pipeline ends.
 *
 * An iteration draws a shape (a linear chain, a tee with two or three
 * branches, a merge of two inputs), two to eight stages (sources,
 * transforms of every pu_xf kind with and without a flush trailer, sinks,
 * tee and merge stages, or a plain stage linked to several consumers or
 * from several producers), byte or object mode, a cycled schedule of chunk
 * sizes (zero included), ring marks from one unit to 1 MiB, at most one
 * fault in any op (read, transform, flush, write, final) at any chunk, and
 * perhaps a cancel from another thread (before start, at once, after the
 * sink consumed k chunks, after some work). Then it checks:
 *
 *   - no hang: the test waits for the finished callback for 10 s of its
 *     own running time (testutil.h, test_hang_clock: a process stopped or
 *     starved meanwhile is not hung); past them the run fails and prints
 *     the pipeline's counters and where each thread stands;
 *   - the result is the injected fault's code with "<stage>: boom at k",
 *     SL_ECANCELED with the bare message when a cancel came first, 0 when
 *     neither happened; the finished callback ran once with that status;
 *     sl_pipeline_wait says the same when asked again;
 *   - the output is byte-exact when the run succeeded, and a prefix of it
 *     otherwise (for a merge, each input's bytes are told apart by their
 *     alphabet and each is checked on its own); objects arrive in order;
 *   - every ring's peak level stayed within its high mark plus one chunk,
 *     every pooled buffer came back;
 *   - after sl_pipeline_free: every stage's destroy ran once, every object
 *     was destroyed once, the library holds no block, no thread is left.
 *
 * Reproducing. SL_STRESS_SEED sets the seed of the run (a fixed default),
 * SL_STRESS_ITER the number of iterations. Iteration i runs from seed
 * SEED + i, so every failure message names the seed that replays that one
 * iteration alone: SL_STRESS_SEED=<that> SL_STRESS_ITER=1. So do the two
 * ends no assertion sees:
 *
 *   - a crash: a handler for SIGSEGV, SIGBUS, SIGFPE and SIGABRT (an
 *     assert, a sanitizer run with abort_on_error) writes the line with
 *     write(2), puts back the disposition it found and raises the signal
 *     again, so the process still dies of it; a sanitizer that ends the
 *     process without a signal (halt_on_error) prints it from its death
 *     callback;
 *   - a hang where the finished callback's deadline cannot reach: a guard
 *     thread gives the rest of an iteration (the joins in
 *     sl_pipeline_wait, the checks, sl_pipeline_free) its own 10 s, and
 *     past them writes the line and aborts, since the stuck thread cannot
 *     fail by itself.
 *
 * Two tests check that both print the line, in a child process.
 */
#include "pipeutil.h"
#include "stage-int.h" /* every output ring of a stage */

#include <check.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define STRESS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define STRESS_SANITIZED 1
#endif
#endif
#ifndef STRESS_SANITIZED
#define STRESS_SANITIZED 0
#endif

#define DEFAULT_SEED 20240611u
/* About 30 s on two cores in a normal build; a sanitizer build runs a
 * fraction, with fewer chunks per pipeline. */
#define DEFAULT_ITER (STRESS_SANITIZED ? 100 : 400)
#define MAX_CHUNKS (STRESS_SANITIZED ? 3000 : 20000)
#define WATCHDOG_S 10

#define MAX_STAGES 8
#define MAX_SINKS 3
#define MAX_OBJECTS 2000

enum shape { SH_LINEAR, SH_TEE, SH_MERGE, SH_COUNT };
static const char *const shape_names[] = {"linear", "tee", "merge"};

enum cancel_mode {
  CANCEL_NONE,
  CANCEL_BEFORE_START,
  CANCEL_AT_ONCE,
  CANCEL_AFTER_CHUNKS,
  CANCEL_AFTER_WORK
};

/* Everything one iteration builds, and what it expects. */
typedef struct world {
  uint64_t seed; /* this iteration's: replays it alone */
  long iter;
  uint64_t rng;
  char desc[2048]; /* what was built, for failure messages */
  size_t dlen;

  bool objects;
  int shape;
  sl_pipeline *p;
  sl_pipeline_opts opts;
  size_t max_weight; /* the heaviest chunk a ring may admit past its mark */

  /* Byte mode: up to two sources with their data and schedules. */
  int nsrc;
  pu_src src[2];
  unsigned char *data[2];
  size_t len[2];
  size_t sizes[2][4];
  /* Object mode: one source. */
  pu_objsrc osrc;
  atomic_int *counts, *created;
  long nobj;

  pu_xf xf[MAX_STAGES];
  bool xf_flush[MAX_STAGES];
  char trailer[MAX_STAGES][16];
  int nxf;

  int nsink;
  pu_sink sink[MAX_SINKS];
  pu_objsink osink[MAX_SINKS];
  pu_bytes want[MAX_SINKS]; /* linear, tee: each sink's whole output */
  pu_bytes want_class[3];   /* merge: input a, input b, trailers after */

  /* The stages made, in order, with their names. */
  sl_stage *st[MAX_STAGES];
  pu_common *ctx[MAX_STAGES]; /* NULL for a tee or merge stage */
  int nst;

  /* The one fault, if any. */
  pu_fault *fault;
  int fault_stage; /* index into st */
  int fault_code;

  int cancel_mode;
  long cancel_after;
  unsigned long cancel_work;
  atomic_int cancel_issued;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  int fin_calls;
  int fin_status;
} world;

/* ------------------------------------------------------------------------
 * Replaying a crash or a hang
 * ---------------------------------------------------------------------- */

/* The iteration running and its seed; -1: none. Lock-free atomics (on
 * every platform with 64-bit atomics), so a signal handler may read them. */
static _Atomic long current_iter = -1;
static _Atomic uint64_t current_seed;
static atomic_int replay_written; /* the line is written once at most */

/* Append v in decimal; async-signal-safe, unlike snprintf. */
static size_t put_u64(char *buf, size_t n, size_t cap, uint64_t v) {
  char digits[20];
  int k = 0;

  do
    digits[k++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (k > 0 && n < cap)
    buf[n++] = digits[--k];
  return n;
}

static size_t put_str(char *buf, size_t n, size_t cap, const char *str) {
  while (*str && n < cap)
    buf[n++] = *str++;
  return n;
}

/* "stress: iteration I, seed S: <why>; replay with SL_STRESS_SEED=S
 * SL_STRESS_ITER=1" on standard error, with write(2) only; nothing when no
 * iteration runs or the line was written already. Async-signal-safe. */
static void write_replay(const char *why, const char *detail) {
  long iter = atomic_load(&current_iter);
  uint64_t seed = atomic_load(&current_seed);
  char buf[512];
  size_t n = 0, cap = sizeof buf - 1;

  if (iter < 0 || atomic_exchange(&replay_written, 1))
    return;
  n = put_str(buf, n, cap, "stress: iteration ");
  n = put_u64(buf, n, cap, (uint64_t)iter);
  n = put_str(buf, n, cap, ", seed ");
  n = put_u64(buf, n, cap, seed);
  n = put_str(buf, n, cap, ": ");
  n = put_str(buf, n, cap, why);
  n = put_str(buf, n, cap, detail);
  n = put_str(buf, n, cap, "; replay with SL_STRESS_SEED=");
  n = put_u64(buf, n, cap, seed);
  n = put_str(buf, n, cap, " SL_STRESS_ITER=1");
  buf[n++] = '\n';
  for (size_t off = 0; off < n;) {
    ssize_t w = write(STDERR_FILENO, buf + off, n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      break;
    off += (size_t)w;
  }
}

static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGABRT};
#define NCRASH (sizeof crash_signals / sizeof crash_signals[0])
static struct sigaction crash_old[NCRASH];

/* Write the line, give the signal back to whoever had it before (the
 * default, or a sanitizer's handler that reports the fault) and raise it
 * again: blocked while this handler runs, it is delivered on return, and
 * a fault's instruction faults again anyway. */
static void crash_handler(int sig) {
  static const char *const names[NCRASH] = {"SIGSEGV", "SIGBUS", "SIGFPE",
                                            "SIGABRT"};
  int saved = errno;

  for (size_t i = 0; i < NCRASH; i++)
    if (crash_signals[i] == sig) {
      write_replay("crashed with ", names[i]);
      sigaction(sig, &crash_old[i], NULL);
    }
  errno = saved;
  raise(sig);
}

static void crash_handlers_install(void) {
  struct sigaction sa;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = crash_handler;
  sa.sa_flags = SA_RESETHAND; /* a second fault in here kills at once */
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < NCRASH; i++)
    ck_assert_int_eq(sigaction(crash_signals[i], &sa, &crash_old[i]), 0);
}

static void crash_handlers_restore(void) {
  for (size_t i = 0; i < NCRASH; i++)
    sigaction(crash_signals[i], &crash_old[i], NULL);
}

#if STRESS_SANITIZED && defined(__has_include)
#if __has_include(<sanitizer/common_interface_defs.h>)
#include <sanitizer/common_interface_defs.h>
#define STRESS_DEATH_CALLBACK 1
/* A sanitizer's report ends the process from here when it does not abort
 * (halt_on_error without abort_on_error). */
static void sanitizer_death(void) {
  write_replay("a sanitizer ended the process", "");
}
#endif
#endif

/* The guard: a thread that fails an iteration stuck where no deadline of
 * the main thread's can see it. Armed with a phase and a number of
 * seconds, disarmed by the main thread; past the deadline it writes the
 * replay line and aborts the process. */
typedef struct guard {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC */
  const char *phase; /* NULL: disarmed */
  int seconds;
  test_hang_clock hc; /* running time since armed */
  bool quit;
  pthread_t thread;
} guard;

static guard the_guard;

static void *guard_main(void *arg) {
  guard *g = arg;

  pthread_mutex_lock(&g->mu);
  while (!g->quit) {
    if (g->phase == NULL) {
      pthread_cond_wait(&g->cv, &g->mu);
      continue;
    }
    /* Re-armed (the clock starts again) or disarmed meanwhile: the loop
     * looks again. */
    struct timespec next = test_hang_clock_next(&g->hc);
    pthread_cond_timedwait(&g->cv, &g->mu, &next);
    if (g->phase != NULL && !g->quit &&
        test_hang_clock_over(&g->hc, g->seconds)) {
      char why[160];
      snprintf(why, sizeof why, "hang: %s took more than %d s", g->phase,
               g->seconds);
      write_replay(why, "");
      abort(); /* with the line written, the crash handler adds nothing */
    }
  }
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

static void guard_start(void) {
  guard *g = &the_guard;
  pthread_condattr_t ca;

  memset(g, 0, sizeof *g);
  ck_assert_int_eq(pthread_mutex_init(&g->mu, NULL), 0);
  ck_assert_int_eq(pthread_condattr_init(&ca), 0);
  ck_assert_int_eq(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC), 0);
  ck_assert_int_eq(pthread_cond_init(&g->cv, &ca), 0);
  pthread_condattr_destroy(&ca);
  ck_assert_int_eq(pthread_create(&g->thread, NULL, guard_main, g), 0);
}

static void guard_stop(void) {
  guard *g = &the_guard;

  pthread_mutex_lock(&g->mu);
  g->quit = true;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
  pthread_join(g->thread, NULL);
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
}

static void guard_arm(const char *phase, int seconds) {
  guard *g = &the_guard;

  pthread_mutex_lock(&g->mu);
  test_hang_clock_start(&g->hc, CLOCK_MONOTONIC);
  g->seconds = seconds;
  g->phase = phase;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static void guard_disarm(void) {
  guard *g = &the_guard;

  pthread_mutex_lock(&g->mu);
  g->phase = NULL;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* Everything above, for the length of a test. */
static void replay_start(void) {
  atomic_store(&current_iter, -1);
  atomic_store(&replay_written, 0);
  crash_handlers_install();
#ifdef STRESS_DEATH_CALLBACK
  __sanitizer_set_death_callback(sanitizer_death);
#endif
  guard_start();
}

static void replay_stop(void) {
  guard_stop();
#ifdef STRESS_DEATH_CALLBACK
  __sanitizer_set_death_callback(NULL);
#endif
  crash_handlers_restore();
  atomic_store(&current_iter, -1);
}

/* ------------------------------------------------------------------------
 * Failure reports
 * ---------------------------------------------------------------------- */

static void desc_add(world *w, const char *fmt, ...) SL_PRINTF(2, 3);
static void desc_add(world *w, const char *fmt, ...) {
  va_list ap;
  int n;

  if (w->dlen >= sizeof w->desc - 1)
    return;
  va_start(ap, fmt);
  n = vsnprintf(w->desc + w->dlen, sizeof w->desc - w->dlen, fmt, ap);
  va_end(ap);
  if (n > 0)
    w->dlen += (size_t)n;
  if (w->dlen > sizeof w->desc - 1)
    w->dlen = sizeof w->desc - 1;
}

static void world_fail(world *w, const char *fmt, ...) SL_PRINTF(2, 3);
static void world_fail(world *w, const char *fmt, ...) {
  char msg[512];
  va_list ap;

  /* The test ends here (without fork, by a long jump): nothing of this
   * iteration may fire later. */
  guard_disarm();
  atomic_store(&current_iter, -1);
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "stress: iteration %ld, seed %" PRIu64 ": %s\n  %s\n",
          w->iter, w->seed, msg, w->desc);
  ck_abort_msg("%s (iteration %ld; replay with SL_STRESS_SEED=%" PRIu64
               " SL_STRESS_ITER=1)",
               msg, w->iter, w->seed);
}

#define W_CHECK(w, expr, ...)       \
  do {                              \
    if (!(expr))                    \
      world_fail((w), __VA_ARGS__); \
  } while (0)

/* ------------------------------------------------------------------------
 * Random choices
 * ---------------------------------------------------------------------- */

static uint64_t rnd(world *w, uint64_t n) {
  return n ? test_rand(&w->rng) % n : 0;
}

static bool chance(world *w, unsigned percent) {
  return rnd(w, 100) < percent;
}

/* From 1 to max, about evenly spread over the powers of two. */
static size_t rnd_log(world *w, size_t max) {
  unsigned bits = 0;
  size_t v;

  while (((size_t)1 << bits) < max)
    bits++;
  v = 1 + (size_t)rnd(w, (uint64_t)1 << rnd(w, bits + 1));
  return v > max ? max : v;
}

static const size_t chunk_choices[] = {0,    1,    2,     3,     17,    100,
                                       1000, 4096, 65535, 65536, 65537, 300000};

static const int fault_codes[] = {SL_EIO,    SL_EDATA,  SL_ENOSPC,  SL_EPIPE,
                                  SL_ESTAGE, SL_EINVAL, SL_EMSGSIZE};

/* ------------------------------------------------------------------------
 * Building
 * ---------------------------------------------------------------------- */

static void on_finished(sl_pipeline *p, int status, void *arg) {
  world *w = arg;

  (void)p;
  for (int i = 0; i < w->nsink; i++)
    pu_sink_mark_done(&w->sink[i]);
  pthread_mutex_lock(&w->mu);
  w->fin_calls++;
  w->fin_status = status;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Record a stage just made; fails the run when it could not be. */
static sl_stage *add(world *w, sl_stage *st, pu_common *ctx, const char *what) {
  W_CHECK(w, st != NULL, "could not make stage %s", what);
  w->st[w->nst] = st;
  w->ctx[w->nst] = ctx;
  w->nst++;
  return st;
}

/* Set a random output mark on a producing stage (or leave the default). */
static void random_marks(world *w, sl_stage *st) {
  size_t hwm, lwm = SL_LWM_DEFAULT;
  int rc;

  if (w->objects) {
    hwm = rnd_log(w, 64);
  } else {
    if (chance(w, 25))
      return; /* the pipeline's default */
    hwm = rnd_log(w, (size_t)1 << 20);
  }
  if (chance(w, 30))
    lwm = (size_t)rnd(w, hwm);
  rc = sl_stage_set_output(st, hwm, lwm,
                           w->objects ? SL_RING_OBJECTS : SL_RING_BYTES);
  W_CHECK(w, rc == 0, "set_output(%zu, %zu): %s", hwm, lwm, sl_err_name(rc));
  if (lwm == SL_LWM_DEFAULT)
    desc_add(w, "{hwm %zu}", hwm);
  else
    desc_add(w, "{hwm %zu lwm %zu}", hwm, lwm);
}

/* A source: bytes of the alphabet starting at base (13 letters), or
 * objects. */
static sl_stage *make_source(world *w, int i, char base) {
  char name[16];
  sl_stage *st;

  snprintf(name, sizeof name, "src%d", i);
  if (w->objects) {
    w->nobj = (long)rnd(w, STRESS_SANITIZED ? 300 : MAX_OBJECTS);
    w->counts = calloc((size_t)w->nobj + 1, sizeof *w->counts);
    w->created = calloc((size_t)w->nobj + 1, sizeof *w->created);
    W_CHECK(w, w->counts && w->created, "out of memory");
    pu_objsrc_init(&w->osrc, w->nobj, w->counts, w->created);
    st = add(w, pu_objsrc_stage(name, &w->osrc), &w->osrc.c, name);
    desc_add(w, "%s[%ld objects]", name, w->nobj);
  } else {
    size_t n = 1 + (size_t)rnd(w, 4), sum = 0, len;
    bool nonzero = false;
    for (size_t k = 0; k < n; k++) {
      w->sizes[i][k] =
          chunk_choices[rnd(w, sizeof chunk_choices / sizeof chunk_choices[0])];
      nonzero |= w->sizes[i][k] != 0;
      sum += w->sizes[i][k];
    }
    if (!nonzero)
      w->sizes[i][0] = 1 + (size_t)rnd(w, 5000), sum = w->sizes[i][0];
    len = chance(w, 5) ? 0 : rnd_log(w, (size_t)1 << 20);
    if (len / (sum / n + 1) > MAX_CHUNKS)
      len = (sum / n + 1) * MAX_CHUNKS;
    w->len[i] = len;
    w->data[i] = malloc(len ? len : 1);
    W_CHECK(w, w->data[i] != NULL, "out of memory");
    for (size_t k = 0; k < len; k++)
      w->data[i][k] = (unsigned char)(base + (char)(test_rand(&w->rng) % 13));
    pu_src_init(&w->src[i], w->data[i], len, w->sizes[i], n);
    if (chance(w, 20))
      w->src[i].per_call = 1 + (int)rnd(w, 4);
    st = add(w, pu_src_stage(name, &w->src[i]), &w->src[i].c, name);
    desc_add(w, "%s[%zu bytes, sizes", name, len);
    for (size_t k = 0; k < n; k++)
      desc_add(w, " %zu", w->sizes[i][k]);
    desc_add(w, "]");
    for (size_t k = 0; k < n; k++)
      if (2 * w->sizes[i][k] > w->max_weight)
        w->max_weight = 2 * w->sizes[i][k];
    w->nsrc++;
  }
  random_marks(w, st);
  return st;
}

/* A transform; cls says which alphabet its trailer uses: 0 'a'.., 1 'n'..,
 * 2 digits (a trailer after a merge, told apart from both inputs). */
static sl_stage *make_xf(world *w, int cls) {
  static const char *const kinds[] = {"identity", "upper", "copy", "split"};
  int i = w->nxf++;
  pu_xf *x = &w->xf[i];
  char name[16];
  sl_stage *st;

  snprintf(name, sizeof name, "xf%d", i);
  pu_xf_init(x, w->objects ? PU_IDENTITY : (int)rnd(w, 4));
  if (x->kind == PU_SPLIT) {
    size_t total = w->len[0] + w->len[1];
    x->split = rnd_log(w, 5000);
    if (total / x->split > MAX_CHUNKS)
      x->split = total / MAX_CHUNKS + 1;
  }
  w->xf_flush[i] = chance(w, 50);
  if (w->xf_flush[i] && !w->objects && chance(w, 70)) {
    char *t = w->trailer[i];
    if (cls == 2) {
      snprintf(t, sizeof w->trailer[i], "#%d;", i);
    } else {
      char b = cls == 0 ? 'a' : 'n';
      t[0] = (char)(b + i % 13);
      t[1] = (char)(b + (i * 5 + 3) % 13);
      t[2] = (char)(b + 12);
      t[3] = '\0';
    }
    x->trailer = t;
  }
  st = add(w, pu_xf_stage(name, x, w->xf_flush[i]), &x->c, name);
  desc_add(w, " -> %s(%s%s%s)", name, kinds[x->kind],
           w->xf_flush[i] ? ",flush" : "", x->trailer ? ",trailer" : "");
  if (x->kind == PU_SPLIT)
    desc_add(w, "[split %zu]", x->split);
  random_marks(w, st);
  return st;
}

static sl_stage *make_sink(world *w) {
  int i = w->nsink++;
  char name[16];

  snprintf(name, sizeof name, "sink%d", i);
  desc_add(w, " -> %s", name);
  pu_sink_init(&w->sink[i]); /* its lock and cond are used in either mode */
  if (w->objects) {
    pu_objsink_init(&w->osink[i], 0);
    return add(w, pu_objsink_stage(name, &w->osink[i]), &w->osink[i].c, name);
  }
  return add(w, pu_sink_stage(name, &w->sink[i]), &w->sink[i].c, name);
}

static void wire(world *w, sl_stage *from, sl_stage *to) {
  int rc = sl_pipeline_link(w->p, from, to);

  W_CHECK(w, rc == 0, "link %s -> %s: %s", sl_stage_name(from),
          sl_stage_name(to), sl_err_name(rc));
}

/* The effect of transform i on a stream: upper-case it, then add its
 * trailer (only_upper: the trailer goes elsewhere). */
static void apply_xf(world *w, pu_bytes *b, int i, bool only_upper) {
  if (w->xf[i].kind == PU_UPPER)
    for (size_t k = 0; k < b->len; k++)
      b->p[k] = pu_upper(b->p[k]);
  if (!only_upper && w->xf_flush[i] && w->xf[i].trailer != NULL)
    pu_bytes_add(b, w->xf[i].trailer, strlen(w->xf[i].trailer));
}

static void want_source(pu_bytes *b, const world *w, int src) {
  pu_bytes_add(b, w->data[src], w->len[src]);
}

/* src -> xf... -> sink */
static void build_linear(world *w) {
  int n = (int)rnd(w, MAX_STAGES - 1); /* 0..6 transforms */
  sl_stage *prev = make_source(w, 0, 'a');
  int first = w->nxf;

  for (int i = 0; i < n; i++) {
    sl_stage *x = make_xf(w, 2);
    wire(w, prev, x);
    prev = x;
  }
  wire(w, prev, make_sink(w));
  if (!w->objects) {
    want_source(&w->want[0], w, 0);
    for (int i = first; i < w->nxf; i++)
      apply_xf(w, &w->want[0], i, false);
  }
}

/* src -> xf... -> T, T -> xf... -> sink for each branch; T is a tee
 * stage, or the last transform or the source linked to every branch. */
static void build_tee(world *w) {
  int nb = 2 + (int)rnd(w, 2);
  int budget = MAX_STAGES - 1 - nb; /* beside the source and the sinks */
  bool tee_stage = chance(w, 60);
  int pre = (int)rnd(w, (uint64_t)(budget - tee_stage) + 1);
  sl_stage *t = make_source(w, 0, 'a');
  int pre_xf[MAX_STAGES], npre = 0;

  budget -= pre + tee_stage;
  for (int i = 0; i < pre; i++) {
    sl_stage *x = make_xf(w, 2);
    pre_xf[npre++] = w->nxf - 1;
    wire(w, t, x);
    t = x;
  }
  if (tee_stage) {
    sl_stage *tee = NULL;
    int rc = sl_tee_new(&tee, "tee");
    W_CHECK(w, rc == 0, "tee: %s", sl_err_name(rc));
    add(w, tee, NULL, "tee");
    desc_add(w, " -> tee");
    random_marks(w, tee);
    wire(w, t, tee);
    t = tee;
  }
  for (int b = 0; b < nb; b++) {
    int n = (int)rnd(w, (uint64_t)budget + 1), first = w->nxf;
    sl_stage *prev = t;
    budget -= n;
    desc_add(w, " | branch %d:", b);
    for (int i = 0; i < n; i++) {
      sl_stage *x = make_xf(w, 2);
      wire(w, prev, x);
      prev = x;
    }
    wire(w, prev, make_sink(w));
    if (!w->objects) {
      want_source(&w->want[b], w, 0);
      for (int i = 0; i < npre; i++)
        apply_xf(w, &w->want[b], pre_xf[i], false);
      for (int i = first; i < w->nxf; i++)
        apply_xf(w, &w->want[b], i, false);
    }
  }
}

/* src0 -> xf... -> M, src1 -> xf... -> M, M -> xf... -> sink; M is a merge
 * stage, or the first transform after it, or the sink. Byte mode only:
 * input 0 speaks 'a'..'m', input 1 'n'..'z' (either case), trailers after
 * the merge digits, so the sink's bytes can be told apart. */
static void build_merge(world *w) {
  int budget = MAX_STAGES - 3; /* beside the two sources and the sink */
  bool merge_stage = chance(w, 50);
  int mode = (int)rnd(w, 2);
  sl_stage *ends[2], *m, *prev;
  int in_first[2], in_last[2], post_first;

  if (merge_stage)
    budget--;
  for (int s = 0; s < 2; s++) {
    int n = (int)rnd(w, (uint64_t)budget + 1);
    budget -= n;
    if (s)
      desc_add(w, " | ");
    ends[s] = make_source(w, s, s ? 'n' : 'a');
    in_first[s] = w->nxf;
    for (int i = 0; i < n; i++) {
      sl_stage *x = make_xf(w, s);
      wire(w, ends[s], x);
      ends[s] = x;
    }
    in_last[s] = w->nxf;
  }
  desc_add(w, " | %s merge:", mode ? "round-robin" : "arrival");
  post_first = w->nxf;
  if (merge_stage) {
    int rc = sl_merge_new(&m, "merge", mode);
    W_CHECK(w, rc == 0, "merge: %s", sl_err_name(rc));
    add(w, m, NULL, "merge");
    desc_add(w, " merge");
    random_marks(w, m);
  } else if (budget > 0 && chance(w, 50)) {
    m = make_xf(w, 2);
    budget--;
  } else {
    m = make_sink(w);
  }
  if (!merge_stage) {
    int rc = sl_stage_set_merge(m, mode);
    W_CHECK(w, rc == 0, "set_merge: %s", sl_err_name(rc));
  }
  wire(w, ends[0], m);
  wire(w, ends[1], m);
  prev = m;
  if (w->nsink == 0) {
    int n = (int)rnd(w, (uint64_t)budget + 1);
    for (int i = 0; i < n; i++) {
      sl_stage *x = make_xf(w, 2);
      wire(w, prev, x);
      prev = x;
    }
    wire(w, prev, make_sink(w));
  }
  for (int s = 0; s < 2; s++) {
    want_source(&w->want_class[s], w, s);
    for (int i = in_first[s]; i < in_last[s]; i++)
      apply_xf(w, &w->want_class[s], i, false);
    for (int i = post_first; i < w->nxf; i++)
      apply_xf(w, &w->want_class[s], i, true);
  }
  for (int i = post_first; i < w->nxf; i++)
    apply_xf(w, &w->want_class[2], i, false);
}

/* At most one fault, in any op of any stage the test made. */
static void random_fault(world *w) {
  int candidates[MAX_STAGES], n = 0, i;
  long chunks = 1;
  const char *op;
  pu_fault *f;
  bool at_end_ok;

  if (!chance(w, 45))
    return;
  for (i = 0; i < w->nst; i++)
    if (w->ctx[i] != NULL)
      candidates[n++] = i;
  i = candidates[rnd(w, (uint64_t)n)];
  for (int s = 0; s < w->nsrc; s++)
    chunks += pu_plan_chunks(w->len[s], w->sizes[s], w->src[s].nsizes, NULL);
  if (w->objects)
    chunks = w->nobj + 1;

  /* Which op: the context tells the kind. */
  f = NULL;
  at_end_ok = false;
  op = "?";
  for (int s = 0; s < 2 && f == NULL; s++)
    if (w->ctx[i] == &w->src[s].c)
      f = &w->src[s].fault, at_end_ok = true, op = "read";
  if (w->ctx[i] == &w->osrc.c)
    f = &w->osrc.fault, op = "read";
  for (int x = 0; x < w->nxf && f == NULL; x++)
    if (w->ctx[i] == &w->xf[x].c)
      f = &w->xf[x].fault, at_end_ok = w->xf_flush[x], op = "transform";
  for (int k = 0; k < w->nsink && f == NULL; k++) {
    if (w->ctx[i] == &w->sink[k].c)
      f = &w->sink[k].fault, at_end_ok = true, op = "write";
    else if (w->ctx[i] == &w->osink[k].c)
      f = &w->osink[k].fault, op = "write";
  }
  W_CHECK(w, f != NULL, "no fault for stage %d", i);
  f->code = fault_codes[rnd(w, sizeof fault_codes / sizeof fault_codes[0])];
  if (at_end_ok && chance(w, 25)) {
    f->at = PU_AT_END;
    op = strcmp(op, "read") == 0        ? "read's end"
         : strcmp(op, "transform") == 0 ? "flush"
                                        : "final";
  } else {
    f->at =
        chance(w, 50) ? (long)rnd(w, 4) : (long)rnd(w, (uint64_t)chunks * 2);
  }
  w->fault = f;
  w->fault_stage = i;
  w->fault_code = f->code;
  desc_add(w, "; fault %s in %s at %ld: %s", sl_stage_name(w->st[i]), op, f->at,
           sl_err_name(f->code));
}

static void random_cancel(world *w) {
  static const char *const names[] = {"none", "before start", "at once",
                                      "after chunks", "after work"};
  uint64_t r = rnd(w, 100);

  w->cancel_mode = r < 65   ? CANCEL_NONE
                   : r < 70 ? CANCEL_BEFORE_START
                   : r < 78 ? CANCEL_AT_ONCE
                   : r < 90
                       ? (w->objects ? CANCEL_AFTER_WORK : CANCEL_AFTER_CHUNKS)
                       : CANCEL_AFTER_WORK;
  w->cancel_after = (long)rnd_log(w, 2000);
  w->cancel_work = (unsigned long)rnd(w, 200000);
  if (w->cancel_mode != CANCEL_NONE)
    desc_add(w, "; cancel %s (%ld chunks, %lu work)", names[w->cancel_mode],
             w->cancel_after, w->cancel_work);
}

static void *canceller_main(void *arg) {
  world *w = arg;

  if (w->cancel_mode == CANCEL_AFTER_CHUNKS)
    pu_sink_wait_chunks(&w->sink[0], w->cancel_after);
  else if (w->cancel_mode == CANCEL_AFTER_WORK)
    pu_spin(w->cancel_work);
  atomic_store(&w->cancel_issued, 1);
  sl_pipeline_cancel(w->p);
  return NULL;
}

static void world_init(world *w, uint64_t seed, long iter) {
  memset(w, 0, sizeof *w);
  w->seed = seed;
  w->iter = iter;
  w->rng = seed * 0x9e3779b97f4a7c15u + 0x632be59bd9b4e019u;
  atomic_init(&w->cancel_issued, 0);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->fault_stage = -1;
}

static void world_fini(world *w) {
  for (int i = 0; i < w->nsink; i++)
    pu_sink_fini(&w->sink[i]);
  for (int i = 0; i < MAX_SINKS; i++)
    pu_bytes_free(&w->want[i]);
  for (int i = 0; i < 3; i++)
    pu_bytes_free(&w->want_class[i]);
  for (int i = 0; i < 2; i++)
    free(w->data[i]);
  free(w->counts);
  free(w->created);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
}

static void build(world *w) {
  static const size_t buf_sizes[] = {0, 4096, 65536, 1 << 20};
  int rc;

  w->objects = chance(w, 20);
  w->shape = (int)rnd(w, w->objects ? SH_MERGE : SH_COUNT);
  w->opts.buf_size = buf_sizes[rnd(w, 4)];
  if (chance(w, 50))
    w->opts.hwm = rnd_log(w, (size_t)1 << 20);
  w->opts.max_cached = (size_t)rnd(w, 3);
  w->max_weight = w->opts.buf_size ? w->opts.buf_size : 65536;
  desc_add(w, "%s %s; buf %zu hwm %zu cached %zu: ", shape_names[w->shape],
           w->objects ? "objects" : "bytes", w->opts.buf_size, w->opts.hwm,
           w->opts.max_cached);
  rc = sl_pipeline_new(&w->p, &w->opts);
  W_CHECK(w, rc == 0, "pipeline_new: %s", sl_err_name(rc));
  switch (w->shape) {
  case SH_LINEAR:
    build_linear(w);
    break;
  case SH_TEE:
    build_tee(w);
    break;
  default:
    build_merge(w);
    break;
  }
  rc = sl_pipeline_on_finished(w->p, on_finished, w);
  W_CHECK(w, rc == 0, "on_finished: %s", sl_err_name(rc));
  random_fault(w);
  random_cancel(w);
}

/* ------------------------------------------------------------------------
 * Checking
 * ---------------------------------------------------------------------- */

/* Chunks moved so far by every stage, in and out: what a live pipeline,
 * however slow, keeps raising. */
static uint64_t chunks_moved(world *w) {
  uint64_t n = 0;
  sl_stage_stats st;

  for (size_t i = 0; sl_pipeline_stage_stats(w->p, i, &st) == 0; i++)
    n += st.chunks_in + st.chunks_out;
  return n;
}

/* Wait for the finished callback. A pipeline that moves no chunk for
 * WATCHDOG_S seconds of this thread's running time (test_hang_clock) is
 * hung: print what it is doing and fail. One that moves, however slowly
 * a loaded machine runs it, is waited for (Check's timeout bounds the
 * test): how long the run takes decides nothing. */
static void watchdog_wait(world *w) {
  test_hang_clock hc;
  bool over = false, came;
  uint64_t moved = chunks_moved(w);

  test_hang_clock_start(&hc, CLOCK_REALTIME); /* w->cv's clock */
  pthread_mutex_lock(&w->mu);
  while (w->fin_calls == 0 && !over) {
    struct timespec next = test_hang_clock_next(&hc);
    pthread_cond_timedwait(&w->cv, &w->mu, &next);
    over = test_hang_clock_over(&hc, WATCHDOG_S);
    if (over && w->fin_calls == 0) {
      pthread_mutex_unlock(&w->mu); /* the stats take the pipeline's */
      uint64_t now = chunks_moved(w);
      pthread_mutex_lock(&w->mu);
      if (now != moved) { /* alive: count the next WATCHDOG_S afresh */
        moved = now;
        over = false;
        test_hang_clock_start(&hc, CLOCK_REALTIME);
      }
    }
  }
  came = w->fin_calls != 0;
  pthread_mutex_unlock(&w->mu);
  if (!came) {
    fprintf(stderr, "stress: no chunk moved for %d s, the pipeline:\n",
            WATCHDOG_S);
    sl_pipeline_stats_print(w->p, stderr);
    sl_pipeline_stall_report(w->p, stderr);
    world_fail(w, "hang: the pipeline moved nothing for %d s", WATCHDOG_S);
  }
}

static void check_result(world *w, int rc) {
  bool fired = w->fault != NULL && atomic_load(&w->fault->fired);
  bool cancelled = atomic_load(&w->cancel_issued);
  const char *err = sl_pipeline_error(w->p);

  if (w->cancel_mode == CANCEL_BEFORE_START)
    W_CHECK(w, rc == SL_ECANCELED, "cancelled before start: %s",
            sl_err_name(rc));
  else if (fired)
    W_CHECK(w, rc == w->fault_code || (cancelled && rc == SL_ECANCELED),
            "fault %s fired, result %s", sl_err_name(w->fault_code),
            sl_err_name(rc));
  else if (cancelled)
    W_CHECK(w, rc == 0 || rc == SL_ECANCELED, "cancelled, result %s",
            sl_err_name(rc));
  else
    W_CHECK(w, rc == 0, "nothing injected, result %s (%s)", sl_err_name(rc),
            err ? err : "no message");

  if (rc == 0) {
    W_CHECK(w, err == NULL, "success with an error message: %s", err);
  } else if (rc == SL_ECANCELED) {
    W_CHECK(w, err != NULL && strcmp(err, sl_strerror(SL_ECANCELED)) == 0,
            "cancel message: %s", err ? err : "(none)");
  } else {
    char want[64];
    snprintf(want, sizeof want, "%s: boom at ",
             sl_stage_name(w->st[w->fault_stage]));
    W_CHECK(w, err != NULL && strncmp(err, want, strlen(want)) == 0,
            "error message '%s', want '%s...'", err ? err : "(none)", want);
    W_CHECK(w, sl_stage_status(w->st[w->fault_stage]) == rc,
            "failing stage's status %s",
            sl_err_name(sl_stage_status(w->st[w->fault_stage])));
  }
  for (int i = 0; i < w->nst; i++) {
    int s = sl_stage_status(w->st[i]);
    if (fired && i == w->fault_stage)
      continue; /* its own code, or SL_ECANCELED when a cancel came first */
    W_CHECK(w, s == 0 || (rc != 0 && s == SL_ECANCELED), "stage %s: status %s",
            sl_stage_name(w->st[i]), sl_err_name(s));
  }

  pthread_mutex_lock(&w->mu);
  W_CHECK(w, w->fin_calls == 1, "finished callback ran %d times", w->fin_calls);
  W_CHECK(w, w->fin_status == rc, "finished with %s, wait returned %s",
          sl_err_name(w->fin_status), sl_err_name(rc));
  pthread_mutex_unlock(&w->mu);
  W_CHECK(w, sl_pipeline_wait(w->p) == rc, "a second wait differs");
}

/* bytes got against want: equal when the run succeeded, else a prefix. */
static void check_bytes(world *w, const char *what, const unsigned char *got,
                        size_t glen, const pu_bytes *want, bool ok) {
  if (ok)
    W_CHECK(w, glen == want->len && (glen == 0 || !memcmp(got, want->p, glen)),
            "%s: %zu bytes, want %zu%s", what, glen, want->len,
            glen == want->len ? " (contents differ)" : "");
  else
    W_CHECK(w, pu_is_prefix(got, glen, want->p, want->len),
            "%s: %zu bytes after a failure are not a prefix of the %zu", what,
            glen, want->len);
}

static void check_output(world *w, int rc) {
  bool ok = rc == 0;

  for (int k = 0; k < w->nsink; k++) {
    char what[32];
    snprintf(what, sizeof what, "sink%d", k);
    if (w->objects) {
      pu_objsink *o = &w->osink[k];
      W_CHECK(w, o->bad == 0, "%s: %ld objects out of order", what, o->bad);
      W_CHECK(w, !ok || (o->chunks == w->nobj && o->final_calls == 1),
              "%s: %ld objects of %ld, final %d", what, o->chunks, w->nobj,
              o->final_calls);
      continue;
    }
    W_CHECK(w, !ok || w->sink[k].final_calls == 1, "%s: final ran %d times",
            what, w->sink[k].final_calls);
    W_CHECK(w, w->sink[k].final_calls <= 1, "%s: final ran %d times", what,
            w->sink[k].final_calls);
    if (w->shape != SH_MERGE) {
      check_bytes(w, what, w->sink[k].got.p, w->sink[k].got.len, &w->want[k],
                  ok);
    } else {
      pu_bytes cls[3] = {{0}};
      bool late = false;
      for (size_t i = 0; i < w->sink[k].got.len; i++) {
        unsigned char c = w->sink[k].got.p[i];
        unsigned char l = (unsigned char)(c | 0x20);
        int which = l >= 'a' && l <= 'm' ? 0 : l >= 'n' && l <= 'z' ? 1 : 2;
        W_CHECK(w, !(late && which < 2),
                "merge: input byte at %zu after a trailer", i);
        late |= which == 2;
        W_CHECK(w, pu_bytes_add(&cls[which], &c, 1), "out of memory");
      }
      check_bytes(w, "merge input 0", cls[0].p, cls[0].len, &w->want_class[0],
                  ok);
      check_bytes(w, "merge input 1", cls[1].p, cls[1].len, &w->want_class[1],
                  ok);
      check_bytes(w, "merge trailers", cls[2].p, cls[2].len, &w->want_class[2],
                  ok);
      for (int j = 0; j < 3; j++)
        pu_bytes_free(&cls[j]);
    }
  }
}

/* Every ring stayed within its mark plus one chunk; every buffer is back. */
static void check_memory(world *w) {
  sl_pool_stats ps = pu_pool_stats(w->p);

  W_CHECK(w, ps.outstanding == 0, "%zu pooled buffers not returned",
          ps.outstanding);
  for (size_t i = 0; i < sl_pipeline_stage_count(w->p); i++) {
    sl_stage *s = sl_pipeline_stage(w->p, i);
    for (size_t j = 0; j < s->ncons; j++) {
      sl_ring_stats rs = pu_ring_stats(s->outs[j]);
      size_t bound = rs.hwm + (w->objects ? 1 : w->max_weight);
      W_CHECK(w, rs.peak_level <= bound,
              "ring %s -> %s: peak %zu above mark %zu + one chunk",
              sl_stage_name(s), sl_stage_name(s->cons[j]), rs.peak_level,
              rs.hwm);
    }
  }
}

static void check_after_free(world *w, int threads_before) {
  for (int i = 0; i < w->nst; i++)
    if (w->ctx[i] != NULL)
      W_CHECK(w, pu_destroyed(w->ctx[i]) == 1, "stage %d: destroy ran %d times",
              i, pu_destroyed(w->ctx[i]));
  for (long id = 0; w->objects && id < w->nobj; id++)
    W_CHECK(w,
            atomic_load(&w->created[id]) <= 1 &&
                atomic_load(&w->counts[id]) == atomic_load(&w->created[id]),
            "object %ld: made %d times, destroyed %d times", id,
            atomic_load(&w->created[id]), atomic_load(&w->counts[id]));
  W_CHECK(w, test_alloc_live() == 0, "%ld blocks leaked", test_alloc_live());
  W_CHECK(w, pu_threads_left(threads_before) == 0, "threads left running");
}

/* What the iterations ended in, printed at the end of the run so a log
 * shows that faults, cancels and clean runs all happened. */
typedef struct tally {
  long ok, fault, cancel, objects, shapes[SH_COUNT];
} tally;

static void run_one(uint64_t seed, long iter, tally *t) {
  world w;
  pthread_t canceller;
  bool have_canceller = false;
  int threads_before = pu_thread_count(), rc;

  atomic_store(&current_seed, seed);
  atomic_store(&current_iter, iter);
  world_init(&w, seed, iter);
  guard_arm("building and starting", WATCHDOG_S);
  build(&w);
  if (w.cancel_mode == CANCEL_BEFORE_START) {
    atomic_store(&w.cancel_issued, 1);
    sl_pipeline_cancel(w.p);
  }
  rc = sl_pipeline_start(w.p);
  W_CHECK(&w, rc == 0, "start: %s", sl_err_name(rc));
  if (w.cancel_mode >= CANCEL_AT_ONCE) {
    W_CHECK(&w, pthread_create(&canceller, NULL, canceller_main, &w) == 0,
            "cannot start the canceller");
    have_canceller = true;
  }
  guard_disarm(); /* the finished callback has its own deadline */
  watchdog_wait(&w);
  guard_arm("the joins, the checks and sl_pipeline_free", WATCHDOG_S);
  if (have_canceller)
    pthread_join(canceller, NULL);
  rc = sl_pipeline_wait(w.p);
  check_result(&w, rc);
  check_output(&w, rc);
  check_memory(&w);
  t->ok += rc == 0;
  t->fault += rc != 0 && rc != SL_ECANCELED;
  t->cancel += rc == SL_ECANCELED;
  t->objects += w.objects;
  t->shapes[w.shape]++;
  sl_pipeline_free(w.p);
  w.p = NULL;
  check_after_free(&w, threads_before);
  guard_disarm();
  world_fini(&w);
  atomic_store(&current_iter, -1);
}

static void setup(void) {
  ck_assert_int_eq(test_alloc_install(), 0);
}

static void teardown(void) {
  ck_assert_int_eq(test_alloc_live(), 0);
  ck_assert_int_eq(test_alloc_uninstall(), 0);
}

static uint64_t stress_seed(void) {
  const char *s = getenv("SL_STRESS_SEED");
  char *end;
  unsigned long long v;

  if (s == NULL || *s == '\0')
    return DEFAULT_SEED;
  errno = 0;
  v = strtoull(s, &end, 0);
  if (*end != '\0' || errno != 0)
    return DEFAULT_SEED;
  return (uint64_t)v;
}

START_TEST(test_random_pipelines_keep_every_promise) {
  uint64_t seed = stress_seed();
  long iterations = test_iterations("SL_STRESS_ITER", DEFAULT_ITER);

  tally t = {0};

  replay_start();
  for (long i = 0; i < iterations; i++)
    run_one(seed + (uint64_t)i, i, &t);
  replay_stop();
  printf("stress: seed %" PRIu64 ", %ld pipelines (%ld linear, %ld tee, %ld "
         "merge, %ld in object mode): %ld succeeded, %ld failed with the "
         "injected fault, %ld cancelled\n",
         seed, iterations, t.shapes[SH_LINEAR], t.shapes[SH_TEE],
         t.shapes[SH_MERGE], t.objects, t.ok, t.fault, t.cancel);
  /* A run long enough to mean something met every outcome. */
  if (iterations >= 100) {
    ck_assert_int_gt(t.ok, 0);
    ck_assert_int_gt(t.fault, 0);
    ck_assert_int_gt(t.cancel, 0);
  }
}
END_TEST

/* ------------------------------------------------------------------------
 * The replay line after a crash and after a hang
 * ---------------------------------------------------------------------- */

static volatile unsigned char *crash_page;

static int crash_read(sl_stage *st, void *ctx) {
  (void)st;
  (void)ctx;
  crash_page[0] = 1; /* PROT_NONE: SIGSEGV on this stage thread */
  return SL_EOF;
}

/* In a child: a pipeline whose source faults, as iteration 7 of seed
 * 987654321. Never returns. */
static void crash_child(void) {
  sl_stage_ops ops = {.read = crash_read};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *sink = NULL;
  void *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

  if (page == MAP_FAILED)
    _exit(2);
  crash_page = page;
  replay_start();
  atomic_store(&current_seed, 987654321);
  atomic_store(&current_iter, 7);
  if (sl_pipeline_new(&p, NULL) != 0 ||
      sl_stage_new(&src, "crash", &ops, NULL) != 0 ||
      sl_mem_sink_new(&sink, NULL) != 0 ||
      sl_pipeline_chain(p, src, sink, NULL) != 0 || sl_pipeline_start(p) != 0)
    _exit(3);
  sl_pipeline_wait(p);
  _exit(4); /* no fault */
}

/* In a child: iteration 3 of seed 42 stuck (here: joining the guard) past
 * a deadline of 0 s. Never returns. */
static void hang_child(void) {
  replay_start();
  atomic_store(&current_seed, 42);
  atomic_store(&current_iter, 3);
  guard_arm("a test's hang", 0);
  pthread_join(the_guard.thread, NULL);
  _exit(4); /* the guard let it be */
}

/* Run child() in a child process without core dumps, its standard error
 * into *err; returns its wait status. */
static int run_child(void (*child)(void), pu_bytes *err) {
  unsigned char buf[4096];
  int fds[2], status = 0;
  ssize_t n;
  pid_t pid;

  ck_assert_int_eq(pipe(fds), 0);
  fflush(NULL);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    close(fds[0]);
    if (dup2(fds[1], STDERR_FILENO) < 0)
      _exit(5);
    child();
  }
  close(fds[1]);
  while ((n = read(fds[0], buf, sizeof buf)) != 0) {
    if (n < 0 && errno == EINTR)
      continue;
    ck_assert_int_gt(n, 0);
    ck_assert(pu_bytes_add(err, buf, (size_t)n));
  }
  close(fds[0]);
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(pu_bytes_add(err, "", 1)); /* a string */
  return status;
}

/* The child still dies of its signal (a sanitizer whose handler the
 * signal goes back to may end it with a status instead), after the line. */
static void check_died(int status, int sig, const pu_bytes *err,
                       const char *line) {
  ck_assert_msg(strstr((const char *)err->p, line) != NULL, "want '%s' in:\n%s",
                line, (const char *)err->p);
  ck_assert_msg(!WIFEXITED(status) || WEXITSTATUS(status) < 2 ||
                    WEXITSTATUS(status) > 5,
                "the child exited with %d: %s", WEXITSTATUS(status),
                WEXITSTATUS(status) == 4 ? "it ran on" : "it could not start");
  if (STRESS_SANITIZED)
    ck_assert_msg(WIFSIGNALED(status) ||
                      (WIFEXITED(status) && WEXITSTATUS(status) != 0),
                  "status %#x", status);
  else
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == sig,
                  "status %#x, want death by signal %d", status, sig);
}

START_TEST(test_a_crash_writes_the_replay_line) {
  pu_bytes err = {0};
  int status = run_child(crash_child, &err);

  check_died(status, SIGSEGV, &err,
             "stress: iteration 7, seed 987654321: crashed with SIGSEGV; "
             "replay with SL_STRESS_SEED=987654321 SL_STRESS_ITER=1\n");
  pu_bytes_free(&err);
}
END_TEST

START_TEST(test_a_hang_writes_the_replay_line) {
  pu_bytes err = {0};
  int status = run_child(hang_child, &err);

  check_died(status, SIGABRT, &err,
             "stress: iteration 3, seed 42: hang: a test's hang took more "
             "than 0 s; replay with SL_STRESS_SEED=42 SL_STRESS_ITER=1\n");
  pu_bytes_free(&err);
}
END_TEST

/* The hang bound counts running time: a wait that comes back long after
 * its slice (the process was stopped) counts as one slice, a wait on time
 * counts in full, and the bound is over once its seconds are counted. The
 * clock's last look is moved back instead of waiting. */
START_TEST(test_hang_clock_skips_stopped_time) {
  test_hang_clock h;

  test_hang_clock_start(&h, CLOCK_MONOTONIC);
  h.last.tv_sec -= 60; /* stopped for a minute */
  ck_assert(!test_hang_clock_over(&h, 10));
  ck_assert_int_le(h.spent_ns, TEST_HANG_SLICE_NS);
  h.last.tv_sec -= 1; /* a second, on time */
  ck_assert(!test_hang_clock_over(&h, 10));
  ck_assert_int_ge(h.spent_ns, 1000000000LL);
  for (int i = 0; i < 9; i++) {
    h.last.tv_sec -= 1;
    test_hang_clock_over(&h, 10);
  }
  ck_assert(test_hang_clock_over(&h, 10));
}
END_TEST

static Suite *stress_suite(void) {
  Suite *s = suite_create("stress");
  TCase *tc = tcase_create("random");
  long iterations = test_iterations("SL_STRESS_ITER", DEFAULT_ITER);

  tcase_add_checked_fixture(tc, setup, teardown);
  /* Each iteration has its own 10 s watchdog; this bounds the whole. */
  tcase_set_timeout(tc, 120.0 + 0.5 * (double)iterations);
  tcase_add_test(tc, test_random_pipelines_keep_every_promise);
  suite_add_tcase(s, tc);

  tc = tcase_create("replay");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_a_crash_writes_the_replay_line);
  tcase_add_test(tc, test_a_hang_writes_the_replay_line);
  tcase_add_test(tc, test_hang_clock_skips_stopped_time);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(stress_suite());
}

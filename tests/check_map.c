/* SPDX-License-Identifier: MIT */
/*
 * The ordered parallel map stage.
 *
 * Results leave in input order whatever order the workers finish in (or
 * in completion order, unordered); no more than in_flight chunks are
 * inside the stage at once; each worker's state is made and freed on its
 * own thread; a worker's error fails the pipeline once, with its message;
 * a cancel or a failure elsewhere leaves no worker behind.
 *
 * Workers are made to finish out of order by work whose length depends on
 * the chunk (a counted spin, not a sleep). No test sleeps.
 */
#include "map-int.h"
#include "pipeutil.h"

#include <check.h>

#define TIMEOUT 120

/* ------------------------------------------------------------------------
 * A source of numbered 8-byte chunks, and a map that squares the number
 * after work that makes early chunks slow and late chunks fast.
 * ---------------------------------------------------------------------- */

typedef struct numbers {
  long n, next;
} numbers;

static int numbers_read(sl_stage *stage, void *ctx) {
  numbers *s = ctx;
  if (s->next == s->n)
    return SL_EOF;
  uint64_t v = (uint64_t)s->next++;
  sl_buf *b;
  int rc = sl_buf_new_copy(sl_stage_pool(stage), &v, sizeof v, &b);
  return rc ? rc : sl_stage_push(stage, b);
}

static sl_stage *numbers_stage(numbers *s, long n) {
  static const sl_stage_ops ops = {.read = numbers_read};
  sl_stage *st = NULL;
  *s = (numbers){.n = n};
  ck_assert_int_eq(sl_stage_new(&st, "numbers", &ops, s), 0);
  return st;
}

static uint64_t num_of(const sl_buf *b) {
  uint64_t v;
  memcpy(&v, sl_buf_data(b), sizeof v);
  return v;
}

typedef struct square {
  atomic_int inside, most_inside; /* calls running at once */
  atomic_long calls;
  long fail_at;  /* -1: never */
  long drop_odd; /* 1: odd numbers map to nothing */
  atomic_int inits, finis;
  atomic_uint worker_seen; /* bit i: worker i made its state */
  unsigned long spin;      /* work per chunk, times (v % 7) */
} square;

static int square_map(sl_stage *stage, void *ctx, void *wctx, sl_buf *in,
                      sl_buf **out) {
  square *q = ctx;
  unsigned *me = wctx;
  uint64_t v = num_of(in);
  sl_buf_unref(in);
  int now = atomic_fetch_add(&q->inside, 1) + 1;
  for (int seen = atomic_load(&q->most_inside);
       now > seen &&
       !atomic_compare_exchange_weak(&q->most_inside, &seen, now);)
    ;
  atomic_fetch_add(&q->calls, 1);
  pu_spin((unsigned long)(v % 7) * q->spin); /* finish out of order */
  atomic_fetch_sub(&q->inside, 1);
  if (me == NULL || *me >= 64)
    return SL_EINVAL; /* worker_init did not run on this thread */
  if ((long)v == q->fail_at) {
    sl_stage_set_error(stage, "cannot square %llu", (unsigned long long)v);
    return SL_EDATA;
  }
  if (q->drop_odd && v % 2) {
    *out = NULL;
    return 0;
  }
  v *= v;
  return sl_buf_new_copy(sl_stage_pool(stage), &v, sizeof v, out);
}

static int square_init(void *ctx, unsigned i, void **wctx) {
  square *q = ctx;
  unsigned *me = malloc(sizeof *me);
  if (!me)
    return SL_ENOMEM;
  *me = i;
  *wctx = me;
  atomic_fetch_add(&q->inits, 1);
  atomic_fetch_or(&q->worker_seen, 1u << (i % 32));
  return 0;
}

static void square_fini(void *ctx, void *wctx) {
  square *q = ctx;
  free(wctx);
  atomic_fetch_add(&q->finis, 1);
}

static const sl_map_ops square_ops = {
    .map = square_map, .worker_init = square_init, .worker_fini = square_fini};

typedef struct run {
  sl_pipeline *p;
  numbers src;
  square q;
  pu_sink sink;
  sl_stage *map;
} run;

static void run_init(run *r, long n, const sl_map_opts *o) {
  memset(r, 0, sizeof *r);
  r->q.fail_at = -1;
  r->q.spin = (unsigned long)test_iterations("SL_TEST_SPIN", 20000);
  pu_sink_init(&r->sink);
  ck_assert_int_eq(sl_pipeline_new(&r->p, NULL), 0);
  sl_stage *a = numbers_stage(&r->src, n);
  ck_assert_int_eq(sl_map_new(&r->map, "square", &square_ops, &r->q, o), 0);
  sl_stage *k = pu_sink_stage("sink", &r->sink);
  ck_assert_int_eq(sl_pipeline_chain(r->p, a, r->map, k, NULL), 0);
}

static void run_fini(run *r) {
  sl_pipeline_free(r->p);
  pu_sink_fini(&r->sink);
}

static size_t got_count(const run *r) {
  return r->sink.got.len / 8;
}

static uint64_t got_at(const run *r, size_t i) {
  uint64_t v;
  memcpy(&v, r->sink.got.p + 8 * i, 8);
  return v;
}

/* ------------------------------------------------------------------------ */

START_TEST(test_map_keeps_input_order) {
  run r;
  sl_map_opts o = {.workers = 4};
  run_init(&r, 3000, &o);
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  ck_assert_uint_eq(got_count(&r), 3000);
  for (size_t i = 0; i < 3000; i++)
    ck_assert_uint_eq(got_at(&r, i), (uint64_t)i * i);
  ck_assert_int_eq(atomic_load(&r.q.inits), 4);
  ck_assert_int_eq(atomic_load(&r.q.finis), 4);
  ck_assert_uint_eq(atomic_load(&r.q.worker_seen), 0xf);
  ck_assert_int_le(atomic_load(&r.q.most_inside), 4);
  run_fini(&r);
}
END_TEST

START_TEST(test_map_unordered_emits_everything) {
  run r;
  sl_map_opts o = {.workers = 3, .unordered = 1};
  run_init(&r, 2000, &o);
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  ck_assert_uint_eq(got_count(&r), 2000);
  bool *seen = calloc(2000, 1);
  for (size_t i = 0; i < 2000; i++) {
    uint64_t v = got_at(&r, i);
    uint64_t root = 0;
    while (root * root < v)
      root++;
    ck_assert_uint_eq(root * root, v);
    ck_assert_uint_lt(root, 2000);
    ck_assert(!seen[root]);
    seen[root] = true;
  }
  free(seen);
  run_fini(&r);
}
END_TEST

START_TEST(test_map_single_worker) {
  run r;
  sl_map_opts o = {.workers = 1, .in_flight = 1};
  run_init(&r, 500, &o);
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  ck_assert_uint_eq(got_count(&r), 500);
  for (size_t i = 0; i < 500; i++)
    ck_assert_uint_eq(got_at(&r, i), (uint64_t)i * i);
  ck_assert_int_eq(atomic_load(&r.q.most_inside), 1);
  run_fini(&r);
}
END_TEST

START_TEST(test_map_null_result_emits_nothing) {
  run r;
  sl_map_opts o = {.workers = 2};
  run_init(&r, 1001, &o);
  r.q.drop_odd = 1;
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  ck_assert_uint_eq(got_count(&r), 501);
  for (size_t i = 0; i < 501; i++)
    ck_assert_uint_eq(got_at(&r, i), (uint64_t)(2 * i) * (2 * i));
  run_fini(&r);
}
END_TEST

/* The sink holds the first result at its gate: the map stops taking input
 * once in_flight chunks are inside it, and the source pauses behind it. */
START_TEST(test_map_bounds_chunks_in_flight) {
  run r;
  sl_map_opts o = {.workers = 2, .in_flight = 5};
  run_init(&r, 20000, &o);
  ck_assert_int_eq(sl_stage_set_output(sl_pipeline_stage(r.p, 0), 64,
                                       SL_LWM_DEFAULT, SL_RING_BYTES),
                   0);
  ck_assert_int_eq(
      sl_stage_set_output(r.map, 64, SL_LWM_DEFAULT, SL_RING_BYTES), 0);
  pu_sink_hold(&r.sink);
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  pu_sink_wait_at_gate(&r.sink);
  sl_ring *in = sl_stage_output(sl_pipeline_stage(r.p, 0));
  ck_assert_int_eq(pu_ring_wait_paused(in), 0);
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(r.map), SL__WRITER),
                   0);
  /* Inside the map: in_flight slots; in its output ring: hwm + 1 chunk;
   * one in the sink's hands. */
  long calls = atomic_load(&r.q.calls);
  sl_ring_stats st;
  ck_assert_int_eq(sl_ring_stats_get(sl_stage_output(r.map), &st), 0);
  ck_assert_int_le(calls, 5 + (long)st.chunks + 1);
  ck_assert_int_lt(calls, 1000);
  pu_sink_release(&r.sink);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  ck_assert_uint_eq(got_count(&r), 20000);
  run_fini(&r);
}
END_TEST

START_TEST(test_map_worker_error_fails_once) {
  run r;
  sl_map_opts o = {.workers = 4};
  int before = pu_thread_count();
  run_init(&r, 100000, &o);
  r.q.fail_at = 777;
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(r.p), SL_EDATA);
  ck_assert_str_eq(sl_pipeline_error(r.p), "square: cannot square 777");
  ck_assert_int_eq(sl_stage_status(r.map), SL_EDATA);
  ck_assert_int_eq(pu_threads_left(before), 0);
  ck_assert_int_eq(atomic_load(&r.q.inits), atomic_load(&r.q.finis));
  /* Results before the failure left in order. */
  for (size_t i = 0; i < got_count(&r); i++)
    ck_assert_uint_eq(got_at(&r, i), (uint64_t)i * i);
  ck_assert_uint_le(got_count(&r), 777); /* 777 itself never leaves */
  run_fini(&r);
}
END_TEST

START_TEST(test_map_cancel_leaves_no_worker) {
  for (int k = 0; k < 20; k++) {
    run r;
    sl_map_opts o = {.workers = 3};
    int before = pu_thread_count();
    run_init(&r, 1000000, &o);
    ck_assert_int_eq(sl_pipeline_start(r.p), 0);
    pu_sink_wait_chunks(&r.sink, k * 10);
    sl_pipeline_cancel(r.p);
    ck_assert_int_eq(sl_pipeline_wait(r.p), SL_ECANCELED);
    ck_assert_int_eq(pu_threads_left(before), 0);
    ck_assert_int_eq(atomic_load(&r.q.inits), atomic_load(&r.q.finis));
    run_fini(&r);
  }
}
END_TEST

/* A flush marker leaves after every result before it. */
static long marker_at = -1;
static int count_write(sl_stage *stage, void *ctx, sl_buf *in) {
  long *n = ctx;
  (void)stage;
  ++*n;
  sl_buf_unref(in);
  return 0;
}
static int count_sync(sl_stage *stage, void *ctx) {
  (void)stage;
  marker_at = *(long *)ctx;
  return 0;
}
static int marker_read(sl_stage *stage, void *ctx) {
  numbers *s = ctx;
  if (s->next == s->n / 2 && marker_at == -1) {
    marker_at = -2; /* sent */
    return sl_stage_push_flush(stage);
  }
  return numbers_read(stage, ctx);
}

START_TEST(test_map_flush_marker_in_order) {
  sl_pipeline *p;
  numbers src = {.n = 400};
  square q = {.fail_at = -1, .spin = 100};
  long n = 0;
  sl_stage_ops so = {.read = marker_read};
  sl_stage_ops ko = {.write = count_write, .sync = count_sync};
  sl_stage *a, *m, *k;
  sl_map_opts o = {.workers = 4};
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&a, "src", &so, &src), 0);
  ck_assert_int_eq(sl_map_new(&m, "square", &square_ops, &q, &o), 0);
  ck_assert_int_eq(sl_stage_new(&k, "sink", &ko, &n), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, a, m, k, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(marker_at, 200);
  ck_assert_int_eq(n, 400);
  sl_pipeline_free(p);
}
END_TEST

START_TEST(test_map_rejects_bad_input) {
  sl_stage *s = (sl_stage *)&s;
  square q;
  sl_map_opts many = {.workers = SL_MAP_MAX_WORKERS + 1};
  sl_map_ops none = {0};
  ck_assert_int_eq(sl_map_new(NULL, "m", &square_ops, &q, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_map_new(&s, NULL, &square_ops, &q, NULL), SL_EINVAL);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(sl_map_new(&s, "m", NULL, &q, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_map_new(&s, "m", &none, &q, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_map_new(&s, "m", &square_ops, &q, &many), SL_EINVAL);
  ck_assert_uint_ge(sl_cpu_count(), 1);
}
END_TEST

static int destroyed;
static void count_destroy(void *ctx) {
  (void)ctx;
  destroyed++;
}

START_TEST(test_map_new_enomem_leaks_nothing) {
  sl_map_ops ops = square_ops;
  ops.destroy = count_destroy;
  square q;
  for (long n = 1;; n++) {
    sl_stage *s = NULL;
    ck_assert_int_eq(test_alloc_install(), 0);
    fail_alloc_arm(n);
    int rc = sl_map_new(&s, "m", &ops, &q, NULL);
    long count = fail_alloc_count();
    fail_alloc_arm(0);
    if (rc == 0) {
      sl_stage_free(s);
      ck_assert_int_eq(destroyed, 1);
    } else {
      ck_assert_int_eq(rc, SL_ENOMEM);
      ck_assert_int_eq(destroyed, 0); /* ctx stays the caller's */
    }
    ck_assert_int_eq(test_alloc_live(), 0);
    test_alloc_uninstall();
    if (count < n) {
      ck_assert_int_eq(rc, 0);
      break;
    }
  }
}
END_TEST

/* ------------------------------------------------------------------------
 * The engine's two bounds (what pgzip uses): in_flight slots from submit
 * to emit, and at most max_pending of them queued or running.
 * ---------------------------------------------------------------------- */

enum { GATE_JOBS = 5 };

typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool go[GATE_JOBS]; /* job k may finish */
  int done;           /* jobs finished */
  int emitted;
  sl__map *m;
  int submit_rc;
  bool submitted;     /* the helper's submit returned */
  int done_at_submit; /* jobs finished when it did */
} gate;

static int gate_run(void *owner, void *wctx, sl_buf *in, void *arg,
                    sl_buf **out) {
  gate *g = owner;
  size_t k = (size_t)(uintptr_t)arg;

  (void)wctx;
  sl_buf_unref(in);
  *out = NULL;
  pthread_mutex_lock(&g->mu);
  while (!g->go[k])
    pthread_cond_wait(&g->cv, &g->mu);
  g->done++;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
  return 0;
}

static int gate_emit(void *owner, sl_buf *out, void *arg) {
  gate *g = owner;

  (void)arg;
  sl_buf_unref(out);
  g->emitted++; /* the stage's thread: the test's, then the helper's */
  return 0;
}

static void *gate_submit_last(void *p) {
  gate *g = p;
  int rc = sl__map_submit(g->m, NULL, (void *)(uintptr_t)(GATE_JOBS - 1));

  pthread_mutex_lock(&g->mu);
  g->submit_rc = rc;
  g->done_at_submit = g->done;
  g->submitted = true;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

static int gate_transform(sl_stage *st, void *ctx, sl_buf *in) {
  (void)st;
  (void)ctx;
  sl_buf_unref(in);
  return 0;
}

/* Eight slots, four pending, two workers; job 0 never finishes until the
 * end. Jobs 0 to 3 go in at once. The fifth submit waits, although slots
 * are free, until a job finishes, and that job need not be the next to
 * emit: it returns once job 1 has finished, with job 0 still running. */
START_TEST(test_engine_pending_bound) {
  static const sl_stage_ops st_ops = {.transform = gate_transform};
  static const sl__map_ops ops = {.run = gate_run, .emit = gate_emit};
  gate g = {.submit_rc = -1};
  sl_stage *st = NULL;
  pthread_t helper;

  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  ck_assert_int_eq(sl_stage_new(&st, "gate", &st_ops, NULL), 0);
  ck_assert_int_eq(sl__map_new(&g.m, st, &ops, &g, 2, 8, 4, false), 0);
  for (size_t k = 0; k + 1 < GATE_JOBS; k++)
    ck_assert_int_eq(sl__map_submit(g.m, NULL, (void *)(uintptr_t)k), 0);
  ck_assert_int_eq(pthread_create(&helper, NULL, gate_submit_last, &g), 0);

  pthread_mutex_lock(&g.mu);
  g.go[1] = true;
  pthread_cond_broadcast(&g.cv);
  while (!g.submitted)
    pthread_cond_wait(&g.cv, &g.mu);
  ck_assert_int_eq(g.submit_rc, 0);
  ck_assert_int_eq(g.done_at_submit, 1); /* job 1; job 0 still runs */
  ck_assert_int_eq(g.emitted, 0);
  for (size_t k = 0; k < GATE_JOBS; k++)
    g.go[k] = true;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  ck_assert_int_eq(pthread_join(helper, NULL), 0);

  ck_assert_int_eq(sl__map_drain(g.m), 0);
  ck_assert_int_eq(g.emitted, GATE_JOBS);
  ck_assert_int_eq(g.done, GATE_JOBS);
  sl__map_free(g.m);
  sl_stage_free(st);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
}
END_TEST

/* ------------------------------------------------------------------------
 * The emit path: whichever thread finds the next result ready emits it,
 * one thread at a time, in order.
 * ---------------------------------------------------------------------- */

typedef struct emitter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t stage_thread;
  atomic_int inside;    /* emits running at once */
  atomic_long overlaps; /* an emit found another running */
  atomic_long out_of_order;
  atomic_long by_worker, by_stage, agains, drops;
  long next;          /* the next seq to emit: only the emitting thread */
  unsigned long spin; /* the most work per job */
  long fail_at;       /* -1: never */
  long again_every;   /* emit_try says SL_AGAIN for seq % again_every == 1 */
  bool gate_first;    /* the emit of job 0 waits for open */
  bool in_gate, open;
} emitter;

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

static void em_wait_gate(emitter *e);

static int em_run(void *owner, void *wctx, sl_buf *in, void *arg,
                  sl_buf **out) {
  emitter *e = owner;
  long seq = (long)(uintptr_t)arg;
  (void)wctx;
  sl_buf_unref(in);
  *out = NULL;
  /* A random amount of work, so that jobs finish in every order. */
  pu_spin(e->spin ? mix((uint64_t)seq) % e->spin : 0);
  if (seq != e->fail_at)
    return 0;
  /* With the gate, fail only once job 0 is inside its emit: a failure
   * filed before job 0 finished would stop its emit from ever starting,
   * and the test means the failure to come while it runs. */
  if (e->gate_first)
    em_wait_gate(e);
  return SL_EDATA;
}

/* The checks of every emit: nobody else inside, the seq the next one. */
static void em_check(emitter *e, long seq) {
  if (atomic_fetch_add(&e->inside, 1) != 0)
    atomic_fetch_add(&e->overlaps, 1);
  if (seq != e->next)
    atomic_fetch_add(&e->out_of_order, 1);
  pu_spin(mix((uint64_t)seq + 1) % 64); /* stay inside a while */
}

static void em_leave(emitter *e) {
  e->next++;
  atomic_fetch_sub(&e->inside, 1);
}

static int em_emit(void *owner, sl_buf *out, void *arg) {
  emitter *e = owner;
  sl_buf_unref(out);
  em_check(e, (long)(uintptr_t)arg);
  if (!pthread_equal(pthread_self(), e->stage_thread))
    atomic_fetch_add(&e->overlaps, 1000000); /* emit is the stage's */
  atomic_fetch_add(&e->by_stage, 1);
  em_leave(e);
  return 0;
}

static int em_emit_try(void *owner, sl_buf *out, void *arg) {
  emitter *e = owner;
  long seq = (long)(uintptr_t)arg;
  if (e->again_every && seq % e->again_every == 1 &&
      !pthread_equal(pthread_self(), e->stage_thread)) {
    atomic_fetch_add(&e->agains, 1);
    return SL_AGAIN;
  }
  sl_buf_unref(out);
  em_check(e, seq);
  if (seq == 0 && e->gate_first) {
    pthread_mutex_lock(&e->mu);
    e->in_gate = true;
    pthread_cond_broadcast(&e->cv);
    while (!e->open)
      pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
  }
  if (pthread_equal(pthread_self(), e->stage_thread))
    atomic_fetch_add(&e->by_stage, 1);
  else
    atomic_fetch_add(&e->by_worker, 1);
  em_leave(e);
  return 0;
}

static void em_drop(void *owner, void *arg) {
  emitter *e = owner;
  (void)arg;
  atomic_fetch_add(&e->drops, 1);
}

static const sl__map_ops em_ops = {
    .run = em_run, .emit = em_emit, .emit_try = em_emit_try, .drop = em_drop};

static void em_init(emitter *e) {
  memset(e, 0, sizeof *e);
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  e->stage_thread = pthread_self();
  e->fail_at = -1;
}

static void em_fini(emitter *e) {
  pthread_cond_destroy(&e->cv);
  pthread_mutex_destroy(&e->mu);
}

static void em_open(emitter *e) {
  pthread_mutex_lock(&e->mu);
  e->open = true;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

static void em_wait_gate(emitter *e) {
  pthread_mutex_lock(&e->mu);
  while (!e->in_gate)
    pthread_cond_wait(&e->cv, &e->mu);
  pthread_mutex_unlock(&e->mu);
}

static sl_stage *em_stage(void) {
  static const sl_stage_ops st_ops = {.transform = gate_transform};
  sl_stage *st = NULL;
  ck_assert_int_eq(sl_stage_new(&st, "emit", &st_ops, NULL), 0);
  return st;
}

/* Many tiny jobs finishing in random order, four workers, the output now
 * and then full (emit_try says SL_AGAIN, and the stage's thread takes
 * over): never two emits at once, never one out of order, each job once.
 * Both the slot window and the byte window. */
START_TEST(test_engine_one_emitter_in_order) {
  long n = test_iterations("SL_TEST_CHUNKS", 200000) / 10;
  for (int variant = 0; variant < 4; variant++) {
    emitter e;
    sl__map *m;
    sl_stage *st = em_stage();
    em_init(&e);
    e.spin = 2000;
    e.again_every = variant & 1 ? 0 : 97;
    ck_assert_int_eq(sl__map_new(&m, st, &em_ops, &e, 4, 64, 0, false), 0);
    if (variant & 2)
      sl__map_set_window(m, 4096, 2);
    for (long i = 0; i < n; i++) {
      sl_buf *b = NULL;
      if (variant & 2) { /* weigh something in the byte window */
        ck_assert_int_eq(sl_buf_new(NULL, 512, &b), 0);
        sl_buf_set_len(b, 512);
      }
      ck_assert_int_eq(sl__map_submit(m, b, (void *)(uintptr_t)i), 0);
    }
    ck_assert_int_eq(sl__map_drain(m), 0);
    sl__map_free(m);
    ck_assert_int_eq(atomic_load(&e.overlaps), 0);
    ck_assert_int_eq(atomic_load(&e.out_of_order), 0);
    ck_assert_int_eq(e.next, n);
    ck_assert_int_eq(atomic_load(&e.by_worker) + atomic_load(&e.by_stage), n);
    ck_assert_int_eq(atomic_load(&e.drops), 0);
    if (e.again_every) /* every SL_AGAIN went to the stage's thread */
      ck_assert_int_ge(atomic_load(&e.by_stage), n / e.again_every);
    sl_stage_free(st);
    em_fini(&e);
  }
}
END_TEST

/* The worker that files the next result emits it: job 0's result is
 * emitted through emit_try on the worker, not by the stage's thread
 * waiting in drain. */
START_TEST(test_engine_worker_emits) {
  emitter e;
  sl__map *m;
  sl_stage *st = em_stage();
  em_init(&e);
  e.gate_first = true;
  ck_assert_int_eq(sl__map_new(&m, st, &em_ops, &e, 1, 8, 0, false), 0);
  ck_assert_int_eq(sl__map_submit(m, NULL, (void *)(uintptr_t)0), 0);
  em_wait_gate(&e); /* a worker is inside emit_try */
  em_open(&e);
  ck_assert_int_eq(sl__map_drain(m), 0);
  ck_assert_int_eq(atomic_load(&e.by_worker), 1);
  ck_assert_int_eq(atomic_load(&e.by_stage), 0);
  sl__map_free(m);
  sl_stage_free(st);
  em_fini(&e);
}
END_TEST

/* A worker fails while another is emitting: drain returns the failure at
 * once (the emitter still inside), a later submit returns it too, and
 * once the emitter is let go it emits nothing more (jobs 1 and 2 are
 * ready behind it); the jobs not emitted are dropped, the workers
 * joined. */
START_TEST(test_engine_error_while_emitting) {
  emitter e;
  sl__map *m;
  sl_stage *st = em_stage();
  int before = pu_thread_count();
  em_init(&e);
  e.gate_first = true;
  e.fail_at = 3; /* the last submitted: every submit finds no error */
  ck_assert_int_eq(sl__map_new(&m, st, &em_ops, &e, 2, 8, 0, false), 0);
  for (long i = 0; i < 4; i++)
    ck_assert_int_eq(sl__map_submit(m, NULL, (void *)(uintptr_t)i), 0);
  em_wait_gate(&e);
  ck_assert_int_eq(sl__map_drain(m), SL_EDATA); /* job 0 still emitting */
  ck_assert_int_eq(sl__map_submit(m, NULL, (void *)(uintptr_t)4), SL_EDATA);
  em_open(&e);
  sl__map_stop(m);
  ck_assert_int_eq(pu_threads_left(before), 0);
  ck_assert_int_eq(e.next, 1);                /* job 0 only */
  ck_assert_int_eq(atomic_load(&e.drops), 4); /* 1, 2, 3 and 4 */
  ck_assert_int_eq(atomic_load(&e.overlaps), 0);
  sl__map_free(m);
  sl_stage_free(st);
  em_fini(&e);
}
END_TEST

static void *em_open_main(void *p) {
  em_open(p);
  return NULL;
}

/* Stop while a worker is emitting: stop waits for that emit, joins every
 * worker, and every job is either emitted (in order, once) or dropped. */
START_TEST(test_engine_stop_while_emitting) {
  emitter e;
  sl__map *m;
  sl_stage *st = em_stage();
  pthread_t opener;
  int before = pu_thread_count();
  em_init(&e);
  e.gate_first = true;
  ck_assert_int_eq(sl__map_new(&m, st, &em_ops, &e, 2, 8, 0, false), 0);
  for (long i = 0; i < 6; i++)
    ck_assert_int_eq(sl__map_submit(m, NULL, (void *)(uintptr_t)i), 0);
  em_wait_gate(&e);
  ck_assert_int_eq(pthread_create(&opener, NULL, em_open_main, &e), 0);
  sl__map_stop(m);
  ck_assert_int_eq(pthread_join(opener, NULL), 0);
  ck_assert_int_eq(pu_threads_left(before), 0);
  ck_assert_int_ge(e.next, 1);
  ck_assert_int_eq(e.next + atomic_load(&e.drops), 6);
  ck_assert_int_eq(atomic_load(&e.overlaps), 0);
  ck_assert_int_eq(atomic_load(&e.out_of_order), 0);
  sl__map_free(m);
  sl_stage_free(st);
  em_fini(&e);
}
END_TEST

/* The consumer stops: the workers find the output full and hand over, and
 * the stage's thread waits in the output's writer side, as a paused
 * stage. A cancel then wakes it; every thread ends, every worker's state
 * is freed, and what left did so in order. */
START_TEST(test_map_cancel_while_output_full) {
  run r;
  sl_map_opts o = {.workers = 2};
  int before = pu_thread_count();
  run_init(&r, 100000, &o);
  r.q.spin = 0;
  pu_sink_hold(&r.sink);
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  pu_sink_wait_at_gate(&r.sink);
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(r.map), SL__WRITER),
                   0);
  sl_pipeline_cancel(r.p);
  pu_sink_release(&r.sink);
  ck_assert_int_eq(sl_pipeline_wait(r.p), SL_ECANCELED);
  ck_assert_int_eq(pu_threads_left(before), 0);
  ck_assert_int_eq(atomic_load(&r.q.inits), atomic_load(&r.q.finis));
  for (size_t i = 0; i < got_count(&r); i++)
    ck_assert_uint_eq(got_at(&r, i), (uint64_t)i * i);
  run_fini(&r);
}
END_TEST

static Suite *map_suite(void) {
  Suite *s = suite_create("map");
  TCase *tc = tcase_create("order");
  tcase_set_timeout(tc, TIMEOUT);
  tcase_add_test(tc, test_map_keeps_input_order);
  tcase_add_test(tc, test_map_unordered_emits_everything);
  tcase_add_test(tc, test_map_single_worker);
  tcase_add_test(tc, test_map_null_result_emits_nothing);
  tcase_add_test(tc, test_map_flush_marker_in_order);
  suite_add_tcase(s, tc);

  tc = tcase_create("bounds");
  tcase_set_timeout(tc, TIMEOUT);
  tcase_add_test(tc, test_map_bounds_chunks_in_flight);
  tcase_add_test(tc, test_engine_pending_bound);
  suite_add_tcase(s, tc);

  tc = tcase_create("failure");
  tcase_set_timeout(tc, TIMEOUT);
  tcase_add_test(tc, test_map_worker_error_fails_once);
  tcase_add_test(tc, test_map_cancel_leaves_no_worker);
  tcase_add_test(tc, test_map_rejects_bad_input);
  tcase_add_test(tc, test_map_new_enomem_leaks_nothing);
  suite_add_tcase(s, tc);

  tc = tcase_create("emit");
  tcase_set_timeout(tc, TIMEOUT);
  tcase_add_test(tc, test_engine_one_emitter_in_order);
  tcase_add_test(tc, test_engine_worker_emits);
  tcase_add_test(tc, test_engine_error_while_emitting);
  tcase_add_test(tc, test_engine_stop_while_emitting);
  tcase_add_test(tc, test_map_cancel_while_output_full);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(map_suite());
}

/* SPDX-License-Identifier: MIT */
/*
 * Check suite for watching a pipeline: the stats name the stage that
 * holds the others back, the stall report of a held pipeline names the
 * held stage and the full ring, the watchdog fires for a stall and never
 * for a finished pipeline, stats read while the pipeline runs only grow,
 * and a trace file holds a named track with spans for every stage thread.
 *
 * Nothing here sleeps: a held sink waits at a gate the test opens, and the
 * test waits for the writers upstream to block with sl__ring_wait_blocked
 * (pu_ring_wait_paused) or for the watchdog's callback on a condition
 * variable. Where a test compares times, it holds the pipeline still and
 * reads the stats again, yielding, until the waits that grow while it is
 * held outweigh what the start left (whatever the machine's speed), and
 * asserts only on what follows from that.
 */
#include "pipeutil.h"

#include <unistd.h>

static int base_threads;

static void setup(void) {
  ck_assert_int_eq(test_alloc_install(), 0);
  base_threads = pu_thread_count();
  ck_assert_int_gt(base_threads, 0);
}

static void teardown(void) {
  ck_assert_int_eq(test_alloc_live(), 0);
  ck_assert_int_eq(test_alloc_uninstall(), 0);
  ck_assert_int_eq(pu_threads_left(base_threads), 0);
}

static const size_t sizes_4k[] = {4096};

/* src -(16 KiB)-> xf -(8 KiB)-> sink. */
typedef struct rig {
  unsigned char *data;
  size_t len;
  sl_pipeline *p;
  pu_src src;
  pu_xf xf;
  pu_sink sink;
  sl_stage *s0, *s1, *s2;
} rig;

static void rig_build(rig *r, size_t len, const sl_pipeline_opts *opts) {
  r->len = len;
  r->data = pu_pattern(len, 5);
  ck_assert_ptr_nonnull(r->data);
  pu_src_init(&r->src, r->data, len, sizes_4k, 1);
  pu_xf_init(&r->xf, PU_IDENTITY);
  pu_sink_init(&r->sink);
  r->sink.collect = false;
  ck_assert_int_eq(sl_pipeline_new(&r->p, opts), 0);
  r->s0 = pu_src_stage("src", &r->src);
  r->s1 = pu_xf_stage("xf", &r->xf, false);
  r->s2 = pu_sink_stage("sink", &r->sink);
  ck_assert(r->s0 && r->s1 && r->s2);
  ck_assert_int_eq(
      sl_stage_set_output(r->s0, 16384, SL_LWM_DEFAULT, SL_RING_BYTES), 0);
  ck_assert_int_eq(
      sl_stage_set_output(r->s1, 8192, SL_LWM_DEFAULT, SL_RING_BYTES), 0);
  ck_assert_int_eq(sl_pipeline_chain(r->p, r->s0, r->s1, r->s2, NULL), 0);
}

/* Start with the sink held at its gate; return once both writers
 * upstream are paused on their full rings. */
static void rig_start_held(rig *r) {
  pu_sink_hold(&r->sink);
  ck_assert_int_eq(sl_pipeline_start(r->p), 0);
  pu_sink_wait_at_gate(&r->sink);
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(r->s1)), 0);
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(r->s0)), 0);
}

static void rig_free(rig *r) {
  sl_pipeline_free(r->p);
  pu_sink_fini(&r->sink);
  free(r->data);
}

/* What f printed, as a string the caller frees. */
typedef struct memout {
  char *buf;
  size_t len;
  FILE *f;
} memout;

static void memout_open(memout *m) {
  m->buf = NULL;
  m->len = 0;
  m->f = open_memstream(&m->buf, &m->len);
  ck_assert_ptr_nonnull(m->f);
}

static char *memout_close(memout *m) {
  ck_assert_int_eq(fclose(m->f), 0);
  return m->buf;
}

/* ------------------------------------------------------------------------
 * Stats: the bottleneck
 * ---------------------------------------------------------------------- */

/* The bottleneck line of a stats table: the stage's name and its three
 * shares, in percent. False when there is none or it does not parse. */
static bool bottleneck_line(const char *table, char name[32], double pct[3]) {
  const char *at = strstr(table, "\nbottleneck: ");
  return at != NULL &&
         sscanf(at,
                "\nbottleneck: %31s (busy %lf%% of its time; upstream "
                "blocked on it %lf%% of their time, downstream starved by "
                "it %lf%% of theirs)",
                name, &pct[0], &pct[1], &pct[2]) == 4;
}

static void check_shares(const double pct[3]) {
  for (int i = 0; i < 3; i++)
    ck_assert_msg(pct[i] >= 0.0 && pct[i] <= 100.0, "share %d is %.1f%%", i,
                  pct[i]);
}

/* The counters of the rig's three stages. */
static void rig_stats(rig *r, sl_stage_stats st[3]) {
  for (size_t i = 0; i < 3; i++)
    ck_assert_int_eq(sl_pipeline_stage_stats(r->p, i, &st[i]), 0);
}

/* With the sink held and both writers upstream paused, nothing in the
 * pipeline moves: the sink's busy time (it runs its op, held in it) and
 * the upstream stages' ongoing full waits grow with the clock, and every
 * other figure stands still. Look again, yielding, until what grows
 * outweighs what stands still ninefold: from then on the stats show a
 * held sink and blocked producers whatever the machine's speed or load
 * did to the start (a sink that waited long for its first chunk, a stage
 * preempted while it ran). */
static void rig_hold_until_dominant(rig *r, sl_stage_stats st[3]) {
  for (;;) {
    rig_stats(r, st);
    if (st[2].busy_ns > 9 * st[2].blocked_empty_ns &&
        st[1].blocked_full_ns > 9 * (st[1].busy_ns + st[1].blocked_empty_ns) &&
        st[0].blocked_full_ns > 9 * (st[0].busy_ns + st[0].blocked_empty_ns))
      return;
    sched_yield();
  }
}

/* A throttled sink, throttled all the way: held at its gate, it is busy
 * while both stages upstream block on full rings, so it is named, and
 * the upstream stages show time blocked on a full output, both at the
 * held moment and after the run. */
START_TEST(test_bottleneck_is_throttled_sink) {
  rig r;
  sl_stage_stats st[3];
  size_t b = 99;
  memout m;
  char name[32];
  double pct[3];

  rig_build(&r, (size_t)1 << 20, NULL);
  rig_start_held(&r);
  rig_hold_until_dominant(&r, st);
  ck_assert_uint_gt(st[0].blocked_full_ns, 0);
  ck_assert_uint_gt(st[1].blocked_full_ns, 0);
  ck_assert_uint_eq(st[2].blocked_full_ns, 0);
  ck_assert_uint_gt(st[2].busy_ns, st[2].blocked_empty_ns);
  ck_assert_int_eq(sl_pipeline_bottleneck(r.p, &b), 0);
  ck_assert_uint_eq(b, 2);
  memout_open(&m);
  ck_assert_int_eq(sl_pipeline_stats_print(r.p, m.f), 0);
  char *out = memout_close(&m);
  ck_assert_msg(bottleneck_line(out, name, pct), "no bottleneck in:\n%s", out);
  ck_assert_str_eq(name, "sink");
  check_shares(pct);
  free(out);

  /* The waits that ended stay counted. */
  pu_sink_release(&r.sink);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  rig_stats(&r, st);
  ck_assert_uint_gt(st[0].blocked_full_ns, 0);
  ck_assert_uint_gt(st[1].blocked_full_ns, 0);
  ck_assert_uint_eq(st[2].blocked_full_ns, 0);
  ck_assert_uint_eq(st[2].bytes_in, r.len);
  rig_free(&r);
}
END_TEST

/* Held: the stats count the waits going on now, so the stages upstream
 * of the held sink show time blocked on a full output at once. */
START_TEST(test_stats_count_ongoing_waits) {
  rig r;
  sl_stage_stats a, b;

  rig_build(&r, (size_t)1 << 20, NULL);
  rig_start_held(&r);
  ck_assert_int_eq(sl_pipeline_stage_stats(r.p, 0, &a), 0);
  ck_assert_int_eq(sl_pipeline_stage_stats(r.p, 1, &b), 0);
  ck_assert_uint_gt(a.blocked_full_ns, 0);
  ck_assert_uint_gt(b.blocked_full_ns, 0);
  ck_assert_int_eq(a.running, 1);
  pu_sink_release(&r.sink);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  rig_free(&r);
}
END_TEST

START_TEST(test_bottleneck_args) {
  sl_pipeline *p = NULL;
  size_t i = 7;

  ck_assert_int_eq(sl_pipeline_bottleneck(NULL, &i), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_bottleneck(p, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_bottleneck(p, &i), SL_EINVAL); /* no stage */
  ck_assert_uint_eq(i, 7);
  sl_pipeline_free(p);
}
END_TEST

/* Stats read on this thread while the stages run never go down. */
START_TEST(test_stats_monotonic_while_running) {
  rig r;
  sl_stage_stats prev[3], cur;
  long rounds = test_iterations("SL_TEST_ROUNDS", 200);

  rig_build(&r, (size_t)4 << 20, NULL);
  r.sink.spin = 500;
  memset(prev, 0, sizeof prev);
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  for (long n = 1; n <= rounds; n++) {
    pu_sink_wait_chunks(&r.sink, n); /* the pipeline moves between reads */
    for (size_t i = 0; i < 3; i++) {
      ck_assert_int_eq(sl_pipeline_stage_stats(r.p, i, &cur), 0);
      test_check(cur.chunks_in >= prev[i].chunks_in);
      test_check(cur.bytes_in >= prev[i].bytes_in);
      test_check(cur.chunks_out >= prev[i].chunks_out);
      test_check(cur.bytes_out >= prev[i].bytes_out);
      test_check_msg(cur.busy_ns >= prev[i].busy_ns, "busy of %zu went down",
                     i);
      test_check(cur.blocked_full_ns >= prev[i].blocked_full_ns);
      test_check(cur.blocked_empty_ns >= prev[i].blocked_empty_ns);
      prev[i] = cur;
    }
  }
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  ck_assert_uint_eq(prev[2].chunks_in > 0, 1);
  rig_free(&r);
}
END_TEST

/* A monitor on a thread of its own reads every figure, round after
 * round, from before the first stage is added until the pipeline has
 * ended, while the test's thread builds a long chain one link at a time
 * (the stage list grows, and moves, several times) and starts it. A read
 * of the graph that is not ordered after its writing is a data race,
 * which ThreadSanitizer reports; the monitor itself checks what it can
 * see: each stage it finds has a name it knows, no figure goes down, and
 * a stage shows no counts before the pipeline is started. While the
 * chain is built the two threads meet only through relaxed counters,
 * which order nothing, so the library's own ordering is what is tested. */
#define MON_XF 30 /* transforms between the source and the sink */
#define MON_STAGES (MON_XF + 2)

typedef struct monitor {
  sl_pipeline *p;
  FILE *null;
  atomic_int stop;    /* set by the test's thread */
  atomic_int started; /* set (release) just before sl_pipeline_start */
  atomic_long rounds;
  /* The monitor's own, read by the test after the join. */
  sl_stage_stats prev[MON_STAGES];
  long bad;
  char why[160];
  size_t most_seen;
  bool saw_partial, saw_counts;
} monitor;

static void mon_bad(monitor *m, const char *what, size_t i) {
  if (m->bad++ == 0)
    snprintf(m->why, sizeof m->why, "%s (stage %zu)", what, i);
}

static bool mon_known(const char *name) {
  if (name == NULL)
    return false;
  if (strcmp(name, "src") == 0 || strcmp(name, "sink") == 0)
    return true;
  return name[0] == 'x' && atoi(name + 1) < MON_XF;
}

static void *mon_main(void *arg) {
  monitor *m = arg;
  while (!atomic_load_explicit(&m->stop, memory_order_relaxed)) {
    bool counts = false;
    size_t n = 0;
    sl_stage_stats st;
    int rc;
    while ((rc = sl_pipeline_stage_stats(m->p, n, &st)) == 0) {
      if (n >= MON_STAGES || !mon_known(st.name)) {
        mon_bad(m, "a stage it does not know", n);
        break;
      }
      sl_stage_stats *pv = &m->prev[n];
      if (st.chunks_in < pv->chunks_in || st.bytes_in < pv->bytes_in ||
          st.chunks_out < pv->chunks_out || st.bytes_out < pv->bytes_out ||
          st.busy_ns < pv->busy_ns ||
          st.blocked_full_ns < pv->blocked_full_ns ||
          st.blocked_empty_ns < pv->blocked_empty_ns)
        mon_bad(m, "a figure went down", n);
      if (st.chunks_in || st.chunks_out || st.busy_ns)
        counts = true;
      *pv = st;
      n++;
    }
    if (rc != SL_EINVAL)
      mon_bad(m, "sl_pipeline_stage_stats failed", n);
    /* Read after the counts: a count comes from a thread that start made
     * after the test's thread set started. */
    if (counts && !atomic_load_explicit(&m->started, memory_order_acquire))
      mon_bad(m, "counts before start", n);
    m->saw_counts |= counts;
    if (n > m->most_seen)
      m->most_seen = n;
    if (n >= 2 && n < MON_STAGES)
      m->saw_partial = true;
    size_t b = SIZE_MAX;
    if (sl_pipeline_bottleneck(m->p, &b) == 0 && b >= MON_STAGES)
      mon_bad(m, "a bottleneck out of range", b);
    if (sl_pipeline_stats_print(m->p, m->null) != 0)
      mon_bad(m, "sl_pipeline_stats_print failed", n);
    if (sl_pipeline_stall_report(m->p, m->null) != 0)
      mon_bad(m, "sl_pipeline_stall_report failed", n);
    atomic_fetch_add_explicit(&m->rounds, 1, memory_order_relaxed);
  }
  return NULL;
}

/* Let the monitor finish a round that began after this call. */
static void mon_round(monitor *m) {
  long r = atomic_load_explicit(&m->rounds, memory_order_relaxed);
  while (atomic_load_explicit(&m->rounds, memory_order_relaxed) < r + 2)
    sched_yield();
}

START_TEST(test_stats_while_building_and_starting) {
  size_t len = (size_t)256 << 10;
  unsigned char *data = pu_pattern(len, 9);
  pu_src src;
  pu_xf xf[MON_XF];
  pu_sink sink;
  sl_stage *v[MON_STAGES];
  monitor m;
  pthread_t t;

  ck_assert_ptr_nonnull(data);
  memset(&m, 0, sizeof m);
  m.null = fopen("/dev/null", "w");
  ck_assert_ptr_nonnull(m.null);
  pu_src_init(&src, data, len, sizes_4k, 1);
  pu_sink_init(&sink);
  sink.collect = false;
  v[0] = pu_src_stage("src", &src);
  for (int i = 0; i < MON_XF; i++) {
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    pu_xf_init(&xf[i], PU_IDENTITY);
    v[1 + i] = pu_xf_stage(name, &xf[i], false);
  }
  v[MON_STAGES - 1] = pu_sink_stage("sink", &sink);
  for (int i = 0; i < MON_STAGES; i++)
    ck_assert_ptr_nonnull(v[i]);

  ck_assert_int_eq(sl_pipeline_new(&m.p, NULL), 0);
  ck_assert_int_eq(pthread_create(&t, NULL, mon_main, &m), 0);
  mon_round(&m);
  for (int i = 0; i + 1 < MON_STAGES; i++) {
    ck_assert_int_eq(sl_pipeline_link(m.p, v[i], v[i + 1]), 0);
    mon_round(&m);
  }
  atomic_store_explicit(&m.started, 1, memory_order_release);
  ck_assert_int_eq(sl_pipeline_start(m.p), 0);
  mon_round(&m);
  ck_assert_int_eq(sl_pipeline_wait(m.p), 0);
  mon_round(&m);
  atomic_store_explicit(&m.stop, 1, memory_order_relaxed);
  ck_assert_int_eq(pthread_join(t, NULL), 0);

  ck_assert_msg(m.bad == 0, "%ld bad reads, first: %s", m.bad, m.why);
  ck_assert_uint_eq(m.most_seen, MON_STAGES);
  ck_assert(m.saw_partial); /* it read while the list grew */
  ck_assert(m.saw_counts);  /* and while (or after) the stages ran */
  ck_assert_uint_eq(m.prev[MON_STAGES - 1].bytes_in, len);
  sl_pipeline_free(m.p);
  fclose(m.null);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * The stall report
 * ---------------------------------------------------------------------- */

START_TEST(test_stall_report_names_held_sink) {
  rig r;
  memout m;

  rig_build(&r, (size_t)1 << 20, NULL);
  rig_start_held(&r);
  memout_open(&m);
  ck_assert_int_eq(sl_pipeline_stall_report(r.p, m.f), 0);
  char *out = memout_close(&m);
  ck_assert_ptr_nonnull(strstr(out, "suspect: sink (running an op"));
  ck_assert_ptr_nonnull(strstr(out, "while its input xf -> sink is full"));
  ck_assert_ptr_nonnull(strstr(
      out, "sl:xf                blocked on a full output (xf -> sink)"));
  ck_assert_ptr_nonnull(
      strstr(out, "sl:src               blocked on a full output (src -> xf)"));
  ck_assert_ptr_nonnull(strstr(out, "sl:sink              running an op"));
  ck_assert_ptr_nonnull(strstr(out, "xf -> sink                        full"));
  free(out);
  pu_sink_release(&r.sink);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);

  /* After the end every thread says so, and nobody is suspected. */
  memout_open(&m);
  ck_assert_int_eq(sl_pipeline_stall_report(r.p, m.f), 0);
  out = memout_close(&m);
  ck_assert_ptr_null(strstr(out, "suspect"));
  ck_assert_ptr_nonnull(strstr(out, "sl:sink              ended"));
  free(out);
  rig_free(&r);
}
END_TEST

/* A source that waits in its op until the test lets it end. */
typedef struct gate_src {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool inside, open;
} gate_src;

static int gate_src_read(sl_stage *stage, void *ctx) {
  gate_src *g = ctx;
  (void)stage;
  pthread_mutex_lock(&g->mu);
  g->inside = true;
  pthread_cond_broadcast(&g->cv);
  while (!g->open)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
  return SL_EOF;
}

/* Everything downstream of a source that waits in its op is starved. */
START_TEST(test_stall_report_empty_input) {
  gate_src g = {.inside = false, .open = false};
  sl_stage_ops ops = {.read = gate_src_read};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *xf, *sink;
  pu_xf x;
  pu_sink k;
  memout m;

  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  pu_xf_init(&x, PU_IDENTITY);
  pu_sink_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&src, "src", &ops, &g), 0);
  xf = pu_xf_stage("xf", &x, false);
  sink = pu_sink_stage("sink", &k);
  ck_assert(xf && sink);
  ck_assert_int_eq(sl_pipeline_chain(p, src, xf, sink, NULL), 0);

  memout_open(&m);
  ck_assert_int_eq(sl_pipeline_stall_report(p, m.f), 0);
  char *out = memout_close(&m);
  ck_assert_ptr_nonnull(strstr(out, "not started"));
  free(out);

  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pthread_mutex_lock(&g.mu);
  while (!g.inside)
    pthread_cond_wait(&g.cv, &g.mu);
  pthread_mutex_unlock(&g.mu);
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(src), SL__READER), 0);
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(xf), SL__READER), 0);
  memout_open(&m);
  ck_assert_int_eq(sl_pipeline_stall_report(p, m.f), 0);
  out = memout_close(&m);
  ck_assert_ptr_nonnull(strstr(out, "sl:src               running an op"));
  ck_assert_ptr_nonnull(strstr(
      out, "sl:xf                waiting on an empty input (src -> xf)"));
  ck_assert_ptr_nonnull(strstr(
      out, "sl:sink              waiting on an empty input (xf -> sink)"));
  ck_assert_ptr_nonnull(strstr(out, "src -> xf                         empty"));
  ck_assert_ptr_nonnull(strstr(out, "reader starved for"));
  ck_assert_ptr_null(strstr(out, "suspect"));
  free(out);

  pthread_mutex_lock(&g.mu);
  g.open = true;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);
  pu_sink_fini(&k);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
}
END_TEST

/* A source that waits in its op, linked to two sinks (a tee): both sinks
 * starve on it the whole time, so it is the bottleneck and downstream is
 * starved by it nearly all of the sinks' time, but no more than all of
 * it. Measured against the source's own time, the two sinks' waits add
 * up to nearly twice that; the test holds until they add up to more than
 * 1.5 times, so a share of the wrong base cannot pass for right. The
 * hold ends when the stats say so: the source is in its op, both sinks
 * have been starved nine times longer than they ran, and together longer
 * than the source's time by half. */
START_TEST(test_bottleneck_shares_within_100) {
  gate_src g = {.inside = false, .open = false};
  sl_stage_ops ops = {.read = gate_src_read};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *k1, *k2;
  pu_sink a, b;
  sl_stage_stats st[3];
  memout m;
  char name[32];
  double pct[3];

  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  pu_sink_init(&a);
  pu_sink_init(&b);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&src, "src", &ops, &g), 0);
  k1 = pu_sink_stage("k1", &a);
  k2 = pu_sink_stage("k2", &b);
  ck_assert(k1 && k2);
  ck_assert_int_eq(sl_pipeline_link(p, src, k1), 0);
  ck_assert_int_eq(sl_pipeline_link(p, src, k2), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pthread_mutex_lock(&g.mu); /* the source runs: its time has begun */
  while (!g.inside)
    pthread_cond_wait(&g.cv, &g.mu);
  pthread_mutex_unlock(&g.mu);
  for (;; sched_yield()) {
    for (size_t i = 0; i < 3; i++)
      ck_assert_int_eq(sl_pipeline_stage_stats(p, i, &st[i]), 0);
    uint64_t src_wall =
        st[0].busy_ns + st[0].blocked_full_ns + st[0].blocked_empty_ns;
    if (st[1].blocked_empty_ns > 9 * st[1].busy_ns &&
        st[2].blocked_empty_ns > 9 * st[2].busy_ns &&
        2 * (st[1].blocked_empty_ns + st[2].blocked_empty_ns) > 3 * src_wall)
      break;
  }
  memout_open(&m);
  ck_assert_int_eq(sl_pipeline_stats_print(p, m.f), 0);
  char *out = memout_close(&m);
  ck_assert_msg(bottleneck_line(out, name, pct), "no bottleneck in:\n%s", out);
  ck_assert_str_eq(name, "src");
  check_shares(pct);
  ck_assert_msg(pct[2] > 80.0, "downstream starved only %.1f%%", pct[2]);
  free(out);

  pthread_mutex_lock(&g.mu);
  g.open = true;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);
  pu_sink_fini(&a);
  pu_sink_fini(&b);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
}
END_TEST

START_TEST(test_stall_report_args) {
  sl_pipeline *p = NULL;

  ck_assert_int_eq(sl_pipeline_stall_report(NULL, stderr), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_stall_report(p, NULL), SL_EINVAL);
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * The watchdog
 * ---------------------------------------------------------------------- */

typedef struct wd {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int fired;
  char *report;
} wd;

static void wd_init(wd *w) {
  memset(w, 0, sizeof *w);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
}

static void wd_fini(wd *w) {
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w->report);
}

static void wd_cb(sl_pipeline *p, void *arg) {
  wd *w = arg;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);

  if (f != NULL) {
    sl_pipeline_stall_report(p, f);
    fclose(f);
  }
  pthread_mutex_lock(&w->mu);
  if (w->report == NULL) {
    w->report = buf;
    buf = NULL;
  }
  w->fired++;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  free(buf);
}

START_TEST(test_watchdog_fires_for_held_pipeline) {
  rig r;
  wd w;

  wd_init(&w);
  rig_build(&r, (size_t)1 << 20, NULL);
  ck_assert_int_eq(sl_pipeline_set_watchdog(r.p, 5, wd_cb, &w), 0);
  rig_start_held(&r);
  pthread_mutex_lock(&w.mu);
  while (w.fired == 0)
    pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);
  ck_assert_ptr_nonnull(w.report);
  ck_assert_ptr_nonnull(strstr(w.report, "stall report"));
  ck_assert_int_eq(sl_pipeline_set_watchdog(r.p, 5, wd_cb, &w), SL_EBUSY);
  pu_sink_release(&r.sink);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  rig_free(&r);
  wd_fini(&w);
}
END_TEST

/* With a period far longer than the run, the watchdog never fires, and
 * its thread ends with the pipeline: wait would not return otherwise. */
START_TEST(test_watchdog_quiet_for_finished_pipeline) {
  rig r;
  wd w;

  wd_init(&w);
  rig_build(&r, (size_t)256 << 10, NULL);
  ck_assert_int_eq(sl_pipeline_set_watchdog(r.p, 3600u * 1000u, wd_cb, &w), 0);
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  pthread_mutex_lock(&w.mu);
  ck_assert_int_eq(w.fired, 0);
  pthread_mutex_unlock(&w.mu);
  rig_free(&r);
  wd_fini(&w);
}
END_TEST

START_TEST(test_watchdog_args) {
  sl_pipeline *p = NULL;
  wd w;

  wd_init(&w);
  ck_assert_int_eq(sl_pipeline_set_watchdog(NULL, 5, wd_cb, &w), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_set_watchdog(p, 5, wd_cb, &w), 0);
  ck_assert_int_eq(sl_pipeline_set_watchdog(p, 0, NULL, NULL), 0); /* off */
  sl_pipeline_free(p); /* never started: no thread to join */
  wd_fini(&w);
}
END_TEST

/* ------------------------------------------------------------------------
 * The trace
 * ---------------------------------------------------------------------- */

static char *slurp(FILE *f) {
  long n;
  char *s;

  ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
  n = ftell(f);
  ck_assert_int_gt(n, 0);
  rewind(f);
  s = malloc((size_t)n + 1);
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
  s[n] = '\0';
  return s;
}

static int count(const char *s, const char *what) {
  int n = 0;
  for (const char *at = s; (at = strstr(at, what)) != NULL; at++)
    n++;
  return n;
}

/* Every thread has a track with spans on it, every ring a counter. The
 * stages upstream of the held sink wait on full rings for longer than the
 * 5 us below which a wait is merged into the busy span around it, so
 * their tracks hold a "blocked full" span. The buffers hold 4096 spans,
 * more than a thread here can make (two per wait, two waits per chunk),
 * so none is dropped. */
START_TEST(test_trace_has_a_track_per_thread) {
  rig r;
  FILE *f = tmpfile();
  sl_stage_stats a, b;

  ck_assert_ptr_nonnull(f);
  rig_build(&r, (size_t)2 << 20, NULL);
  ck_assert_int_eq(sl_pipeline_trace_file(r.p, f), 0);
  rig_start_held(&r);
  ck_assert_int_eq(sl_pipeline_trace_file(r.p, f), SL_EBUSY);
  /* The ongoing waits count in the stats: once both grew by 10 us, each
   * has lasted that long (the held sink lets neither end). */
  ck_assert_int_eq(sl_pipeline_stage_stats(r.p, 0, &a), 0);
  ck_assert_int_eq(sl_pipeline_stage_stats(r.p, 1, &b), 0);
  for (sl_stage_stats a2 = a, b2 = b;
       a2.blocked_full_ns < a.blocked_full_ns + 10000 ||
       b2.blocked_full_ns < b.blocked_full_ns + 10000;
       sched_yield()) {
    ck_assert_int_eq(sl_pipeline_stage_stats(r.p, 0, &a2), 0);
    ck_assert_int_eq(sl_pipeline_stage_stats(r.p, 1, &b2), 0);
  }
  pu_sink_release(&r.sink);
  ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
  ck_assert_int_eq(ferror(f), 0);
  char *s = slurp(f);
  ck_assert_ptr_eq(strstr(s, "{\"traceEvents\":["), s);
  ck_assert_ptr_nonnull(strstr(s, "\"displayTimeUnit\":\"ms\""));
  ck_assert_int_eq(count(s, "\"name\":\"thread_name\""), 3);
  const char *names[] = {"sl:src", "sl:xf", "sl:sink"};
  for (int t = 1; t <= 3; t++) {
    char want[64];
    snprintf(want, sizeof want, "\"tid\":%d,\"args\":{\"name\":\"%s\"}", t,
             names[t - 1]);
    ck_assert_msg(strstr(s, want) != NULL, "no track %s", names[t - 1]);
    snprintf(want, sizeof want, "\"pid\":1,\"tid\":%d,\"ts\":", t);
    ck_assert_msg(strstr(s, want) != NULL, "no span on %s", names[t - 1]);
  }
  ck_assert_ptr_nonnull(strstr(s, "\"name\":\"blocked full\",\"cat\":\"stage\","
                                  "\"pid\":1,\"tid\":1,"));
  ck_assert_ptr_nonnull(strstr(s, "\"name\":\"blocked full\",\"cat\":\"stage\","
                                  "\"pid\":1,\"tid\":2,"));
  ck_assert_ptr_nonnull(strstr(s, "\"dropped_events\":0}"));
  ck_assert_int_gt(count(s, "\"ph\":\"C\",\"name\":\"src -> xf\""), 0);
  ck_assert_int_gt(count(s, "\"ph\":\"C\",\"name\":\"xf -> sink\""), 0);
  free(s);
  fclose(f);
  rig_free(&r);
}
END_TEST

/* A source that pushes one byte each time the test grants one, and ends
 * when the test says so. */
typedef struct step_src {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long granted, pushed;
  bool end;
} step_src;

static int step_src_read(sl_stage *stage, void *ctx) {
  step_src *g = ctx;
  sl_buf *b;
  bool more;

  pthread_mutex_lock(&g->mu);
  while (g->granted == g->pushed && !g->end)
    pthread_cond_wait(&g->cv, &g->mu);
  more = g->granted > g->pushed;
  if (more)
    g->pushed++;
  pthread_mutex_unlock(&g->mu);
  if (!more)
    return SL_EOF;
  int rc = sl_stage_buf(stage, 1, &b);
  if (rc != 0)
    return rc;
  sl_buf_data(b)[0] = 'x';
  sl_buf_set_len(b, 1);
  return sl_stage_push(stage, b);
}

static void step_src_grant(step_src *g, bool end) {
  pthread_mutex_lock(&g->mu);
  if (end)
    g->end = true;
  else
    g->granted++;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* The trace writer sleeps while nothing happens, and a thread whose
 * buffer is half full wakes it. Here the writer has no timeout at all,
 * so only that wake can empty a buffer: the source pushes one byte each
 * time the test grants one, the sink waits for each (a span, none merged
 * away), for many times the 16 spans its buffer holds, and after each
 * the test waits until the writer sleeps again owing nothing. Without the
 * wake that wait would never end (the test's timeout fails it), and every
 * span past a buffer's worth would be dropped. */
START_TEST(test_trace_half_full_buffer_wakes_writer) {
  enum { STEPS = 100 };
  step_src g = {.granted = 0};
  sl_stage_ops ops = {.read = step_src_read};
  sl_pipeline_opts o = {.trace_events = 16};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *sink;
  pu_sink k;
  FILE *f = tmpfile();

  ck_assert_ptr_nonnull(f);
  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  pu_sink_init(&k);
  k.collect = false;
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  ck_assert_int_eq(sl_stage_new(&src, "src", &ops, &g), 0);
  sink = pu_sink_stage("sink", &k);
  ck_assert_ptr_nonnull(sink);
  ck_assert_int_eq(sl_pipeline_chain(p, src, sink, NULL), 0);
  ck_assert_int_eq(sl__trace_tune(p, 1, 1, 0), SL_EINVAL); /* no trace */
  ck_assert_int_eq(sl_pipeline_trace_file(p, f), 0);
  ck_assert_int_eq(sl__trace_tune(p, UINT64_MAX, UINT64_MAX, 0), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl__trace_tune(p, 1, 1, 0), SL_EBUSY);
  for (long n = 1; n <= STEPS; n++) {
    step_src_grant(&g, false);
    ck_assert_int_eq(pu_sink_wait_chunks(&k, n), n);
    ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(src), SL__READER),
                     0);
    ck_assert_int_eq(sl__trace_wait_caught_up(p), 0);
  }
  step_src_grant(&g, true);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(sl__trace_wait_caught_up(p), SL_EINVAL); /* joined */

  ck_assert_int_eq(ferror(f), 0);
  char *s = slurp(f);
  ck_assert_ptr_nonnull(strstr(s, "\"dropped_events\":0}"));
  /* Every wait of the sink is there: one before each byte after the
   * first (the test saw it wait), one before the end. */
  ck_assert_int_ge(count(s, "\"name\":\"blocked empty\",\"cat\":\"stage\","
                            "\"pid\":1,\"tid\":2,"),
                   STEPS);
  free(s);
  fclose(f);
  sl_pipeline_free(p);
  pu_sink_fini(&k);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
}
END_TEST

/* A trace that cannot be written does not fail the pipeline; the first
 * error is kept for sl_pipeline_trace_error, for a file the library
 * opened (here the error shows when it is closed, or sooner) and for one
 * the caller gave. */
START_TEST(test_trace_write_error_is_kept) {
  if (access("/dev/full", W_OK) != 0)
    return; /* no /dev/full here */
  for (int own = 0; own < 2; own++) {
    rig r;
    FILE *f = NULL;

    rig_build(&r, (size_t)256 << 10, NULL);
    ck_assert_int_eq(sl_pipeline_trace_error(r.p), 0); /* no trace */
    if (own) {
      ck_assert_int_eq(sl_pipeline_trace(r.p, "/dev/full"), 0);
    } else {
      f = fopen("/dev/full", "w");
      ck_assert_ptr_nonnull(f);
      ck_assert_int_eq(sl_pipeline_trace_file(r.p, f), 0);
    }
    ck_assert_int_eq(sl_pipeline_start(r.p), 0);
    ck_assert_int_eq(sl_pipeline_wait(r.p), 0);
    ck_assert_int_eq(sl_pipeline_trace_error(r.p), SL_ENOSPC);
    ck_assert_uint_eq(pu_sink_wait_chunks(&r.sink, 0), r.len / 4096);
    if (f != NULL) {
      ck_assert_int_ne(ferror(f), 0);
      fclose(f);
    }
    rig_free(&r);
  }
  ck_assert_int_eq(sl_pipeline_trace_error(NULL), SL_EINVAL);
}
END_TEST

START_TEST(test_trace_args) {
  sl_pipeline *p = NULL;

  ck_assert_int_eq(sl_pipeline_trace(NULL, "x"), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_trace(p, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_trace(p, "/nonexistent-dir/x/trace.json"),
                   SL_ENOENT);
  ck_assert_int_eq(sl_pipeline_trace_file(p, NULL), 0);
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);

  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

int main(void) {
  Suite *s = suite_create("observe");
  TCase *tc;

  tc = tcase("stats", 60);
  tcase_add_test(tc, test_bottleneck_is_throttled_sink);
  tcase_add_test(tc, test_stats_count_ongoing_waits);
  tcase_add_test(tc, test_bottleneck_args);
  tcase_add_test(tc, test_stats_monotonic_while_running);
  tcase_add_test(tc, test_stats_while_building_and_starting);
  tcase_add_test(tc, test_bottleneck_shares_within_100);
  suite_add_tcase(s, tc);

  tc = tcase("stall", 30);
  tcase_add_test(tc, test_stall_report_names_held_sink);
  tcase_add_test(tc, test_stall_report_empty_input);
  tcase_add_test(tc, test_stall_report_args);
  suite_add_tcase(s, tc);

  tc = tcase("watchdog", 30);
  tcase_add_test(tc, test_watchdog_fires_for_held_pipeline);
  tcase_add_test(tc, test_watchdog_quiet_for_finished_pipeline);
  tcase_add_test(tc, test_watchdog_args);
  suite_add_tcase(s, tc);

  tc = tcase("trace", 60);
  tcase_add_test(tc, test_trace_has_a_track_per_thread);
  tcase_add_test(tc, test_trace_half_full_buffer_wakes_writer);
  tcase_add_test(tc, test_trace_write_error_is_kept);
  tcase_add_test(tc, test_trace_args);
  suite_add_tcase(s, tc);

  return run_suite(s);
}

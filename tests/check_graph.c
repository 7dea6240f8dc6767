/* SPDX-License-Identifier: MIT */
/*
 * Pipeline graphs beyond a chain, and what travels with the data.
 *
 * Fan-out (a producer linked to several consumers: a tee) hands every
 * branch the same buffers and is governed by its slowest branch; a failing
 * branch fails the pipeline. Fan-in (a consumer linked from several
 * producers: a merge) keeps each input's order, in arrival or round-robin
 * order, and ends when every input has ended. Flush markers run each
 * stage's sync op in order with the data and never reach transform or
 * write. The cancel descriptor wakes an op blocked in poll().
 *
 * No test sleeps: a held sink waits at a gate the test opens, and
 * sl__ring_wait_blocked tells when a side of a ring is waiting.
 */
#include "pipeutil.h"
#include "stage-int.h" /* the rings of a tee's branches */

#include <check.h>
#include <poll.h>

#define TIMEOUT 60

/* ------------------------------------------------------------------------
 * A source of numbered 8-byte chunks: (id << 32) | sequence
 * ---------------------------------------------------------------------- */

typedef struct seq_src {
  uint32_t id;
  long n, next;
} seq_src;

static int seq_read(sl_stage *stage, void *ctx) {
  seq_src *s = ctx;
  if (s->next == s->n)
    return SL_EOF;
  uint64_t v = ((uint64_t)s->id << 32) | (uint64_t)s->next++;
  sl_buf *b;
  int rc = sl_buf_new_copy(sl_stage_pool(stage), &v, sizeof v, &b);
  return rc ? rc : sl_stage_push(stage, b);
}

static sl_stage *seq_stage(const char *name, seq_src *s, uint32_t id, long n) {
  static const sl_stage_ops ops = {.read = seq_read};
  sl_stage *st = NULL;
  *s = (seq_src){.id = id, .n = n};
  ck_assert_int_eq(sl_stage_new(&st, name, &ops, s), 0);
  return st;
}

/* Decode what a sink collected into (id, seq) pairs. */
static size_t seq_count(const pu_sink *k) {
  return k->got.len / 8;
}

static uint64_t seq_at(const pu_sink *k, size_t i) {
  uint64_t v;
  memcpy(&v, k->got.p + i * 8, 8);
  return v;
}

/* A pipeline and the pattern the usual source sends. */
typedef struct fixture {
  sl_pipeline *p;
  unsigned char *data;
  size_t len;
  pu_src src;
  pu_sink a, b;
} fixture;

static const size_t sizes[] = {1000, 1, 0, 4096, 65536, 3};

static void fx_init(fixture *f, size_t len) {
  memset(f, 0, sizeof *f);
  sl_pipeline_opts o = {.hwm = 8192, .buf_size = 65536};
  ck_assert_int_eq(sl_pipeline_new(&f->p, &o), 0);
  f->len = len;
  f->data = pu_pattern(len, 7);
  ck_assert_ptr_nonnull(f->data);
  pu_src_init(&f->src, f->data, len, sizes, sizeof sizes / sizeof sizes[0]);
  pu_sink_init(&f->a);
  pu_sink_init(&f->b);
}

static void fx_fini(fixture *f) {
  sl_pipeline_free(f->p);
  pu_sink_fini(&f->a);
  pu_sink_fini(&f->b);
  free(f->data);
}

/* ------------------------------------------------------------------------
 * Fan-out
 * ---------------------------------------------------------------------- */

START_TEST(test_tee_every_branch_byte_exact) {
  fixture f;
  fx_init(&f, 300000);
  sl_stage *src = pu_src_stage("src", &f.src), *tee;
  sl_stage *a = pu_sink_stage("a", &f.a), *b = pu_sink_stage("b", &f.b);
  ck_assert_int_eq(sl_tee_new(&tee, NULL), 0);
  ck_assert_str_eq(sl_stage_name(tee), "tee");
  ck_assert_int_eq(sl_pipeline_chain(f.p, src, tee, a, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(f.p, tee, b), 0);
  ck_assert_int_eq(sl_pipeline_start(f.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(f.p), 0);
  ck_assert_uint_eq(f.a.got.len, f.len);
  ck_assert_uint_eq(f.b.got.len, f.len);
  ck_assert(memcmp(f.a.got.p, f.data, f.len) == 0);
  ck_assert(memcmp(f.b.got.p, f.data, f.len) == 0);
  /* The tee pushed each chunk once, whatever the number of branches. */
  sl_stage_stats st;
  ck_assert_int_eq(sl_pipeline_stage_stats(f.p, 1, &st), 0);
  ck_assert_uint_eq(st.chunks_out, st.chunks_in);
  ck_assert_int_eq(f.a.final_calls, 1);
  ck_assert_int_eq(f.b.final_calls, 1);
  fx_fini(&f);
}
END_TEST

/* Branch b is held at its gate: the tee fills b's ring and waits on it,
 * so branch a, fast as it is, starves: the slowest branch governs. */
START_TEST(test_tee_slowest_branch_governs) {
  fixture f;
  fx_init(&f, 2000000);
  sl_stage *src = pu_src_stage("src", &f.src), *tee;
  sl_stage *a = pu_sink_stage("a", &f.a), *b = pu_sink_stage("b", &f.b);
  ck_assert_int_eq(sl_tee_new(&tee, "split"), 0);
  ck_assert_int_eq(sl_pipeline_chain(f.p, src, tee, a, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(f.p, tee, b), 0);
  pu_sink_hold(&f.b);
  ck_assert_int_eq(sl_pipeline_start(f.p), 0);
  pu_sink_wait_at_gate(&f.b);

  sl_ring *to_a = tee->outs[0], *to_b = tee->outs[1];
  ck_assert_int_eq(sl__ring_wait_blocked(to_b, SL__WRITER), 0);
  ck_assert_int_eq(sl__ring_wait_blocked(to_a, SL__READER), 0);
  sl_ring_stats sa, sb;
  ck_assert_int_eq(sl_ring_stats_get(to_a, &sa), 0);
  ck_assert_int_eq(sl_ring_stats_get(to_b, &sb), 0);
  ck_assert_int_eq(sa.level, 0);         /* a has taken all it got */
  ck_assert_uint_ge(sb.level, sb.hwm);   /* b is full */
  ck_assert_uint_lt(f.a.got.len, f.len); /* a is held back too */

  pu_sink_release(&f.b);
  ck_assert_int_eq(sl_pipeline_wait(f.p), 0);
  ck_assert(memcmp(f.a.got.p, f.data, f.len) == 0);
  ck_assert(memcmp(f.b.got.p, f.data, f.len) == 0);
  fx_fini(&f);
}
END_TEST

START_TEST(test_tee_failing_branch_fails_pipeline) {
  fixture f;
  fx_init(&f, 1000000);
  f.src.forever = true;
  f.b.fault.at = 5;
  f.b.fault.code = SL_EIO;
  sl_stage *src = pu_src_stage("src", &f.src), *tee;
  sl_stage *a = pu_sink_stage("a", &f.a), *b = pu_sink_stage("b", &f.b);
  ck_assert_int_eq(sl_tee_new(&tee, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(f.p, src, tee, a, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(f.p, tee, b), 0);
  ck_assert_int_eq(sl_pipeline_start(f.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(f.p), SL_EIO);
  ck_assert_str_eq(sl_pipeline_error(f.p), "b: boom at 5");
  ck_assert_int_eq(sl_stage_status(b), SL_EIO);
  ck_assert_int_eq(sl_stage_status(a), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(tee), SL_ECANCELED);
  fx_fini(&f);
}
END_TEST

/* ------------------------------------------------------------------------
 * Fan-in
 * ---------------------------------------------------------------------- */

/* Every chunk of every input arrives once, each input in its order. */
static void assert_merged(const pu_sink *k, long n0, long n1) {
  long next[2] = {0, 0};
  ck_assert_uint_eq(seq_count(k), (size_t)(n0 + n1));
  for (size_t i = 0; i < seq_count(k); i++) {
    uint64_t v = seq_at(k, i);
    uint32_t id = (uint32_t)(v >> 32);
    ck_assert_uint_lt(id, 2);
    ck_assert_int_eq((long)(uint32_t)v, next[id]);
    next[id]++;
  }
  ck_assert_int_eq(next[0], n0);
  ck_assert_int_eq(next[1], n1);
}

START_TEST(test_merge_arrival_keeps_each_input_order) {
  fixture f;
  fx_init(&f, 1);
  seq_src s0, s1;
  sl_stage *a = seq_stage("s0", &s0, 0, 20000);
  sl_stage *b = seq_stage("s1", &s1, 1, 15000);
  sl_stage *m, *k = pu_sink_stage("sink", &f.a);
  ck_assert_int_eq(sl_merge_new(&m, NULL, SL_MERGE_ARRIVAL), 0);
  ck_assert_int_eq(sl_pipeline_chain(f.p, a, m, k, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(f.p, b, m), 0);
  ck_assert_int_eq(sl_pipeline_start(f.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(f.p), 0);
  assert_merged(&f.a, 20000, 15000);
  ck_assert_int_eq(f.a.final_calls, 1); /* the merge ended once */
  fx_fini(&f);
}
END_TEST

START_TEST(test_merge_round_robin_alternates) {
  fixture f;
  fx_init(&f, 1);
  seq_src s0, s1;
  sl_stage *a = seq_stage("s0", &s0, 0, 300);
  sl_stage *b = seq_stage("s1", &s1, 1, 200);
  sl_stage *m, *k = pu_sink_stage("sink", &f.a);
  ck_assert_int_eq(sl_merge_new(&m, "rr", SL_MERGE_ROUND_ROBIN), 0);
  ck_assert_int_eq(sl_pipeline_chain(f.p, a, m, k, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(f.p, b, m), 0);
  ck_assert_int_eq(sl_pipeline_start(f.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(f.p), 0);
  assert_merged(&f.a, 300, 200);
  /* Strict turns while both are open, then the rest of the longer. */
  for (size_t i = 0; i < 400; i++)
    ck_assert_uint_eq(seq_at(&f.a, i) >> 32, i % 2);
  for (size_t i = 400; i < 500; i++)
    ck_assert_uint_eq(seq_at(&f.a, i) >> 32, 0);
  fx_fini(&f);
}
END_TEST

/* A tee whose branches meet again in an arrival merge: a diamond. */
START_TEST(test_diamond_tee_then_merge) {
  fixture f;
  fx_init(&f, 1);
  seq_src s0;
  pu_xf x0, x1;
  pu_xf_init(&x0, PU_IDENTITY);
  pu_xf_init(&x1, PU_COPY);
  sl_stage *src = seq_stage("s0", &s0, 0, 5000), *tee, *m;
  sl_stage *l = pu_xf_stage("left", &x0, false);
  sl_stage *r = pu_xf_stage("right", &x1, false);
  sl_stage *k = pu_sink_stage("sink", &f.a);
  ck_assert_int_eq(sl_tee_new(&tee, NULL), 0);
  ck_assert_int_eq(sl_merge_new(&m, NULL, SL_MERGE_ARRIVAL), 0);
  ck_assert_int_eq(sl_pipeline_chain(f.p, src, tee, l, m, k, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(f.p, tee, r, m, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(f.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(f.p), 0);
  ck_assert_uint_eq(seq_count(&f.a), 10000); /* every chunk twice */
  fx_fini(&f);
}
END_TEST

START_TEST(test_graph_rejects_cycles_and_duplicates) {
  fixture f;
  fx_init(&f, 10);
  pu_xf x0, x1;
  pu_xf_init(&x0, PU_IDENTITY);
  pu_xf_init(&x1, PU_IDENTITY);
  sl_stage *src = pu_src_stage("src", &f.src);
  sl_stage *b = pu_xf_stage("b", &x0, false), *c = pu_xf_stage("c", &x1, false);
  sl_stage *k = pu_sink_stage("sink", &f.a);
  ck_assert_int_eq(sl_pipeline_chain(f.p, src, b, c, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(f.p, b, c), SL_EINVAL); /* twice */
  ck_assert_int_eq(sl_pipeline_link(f.p, b, b), SL_EINVAL); /* to itself */
  ck_assert_int_eq(sl_pipeline_link(f.p, c, b), 0);         /* a cycle */
  ck_assert_int_eq(sl_pipeline_link(f.p, c, k), 0);
  ck_assert_int_eq(sl_pipeline_start(f.p), SL_EINVAL);
  fx_fini(&f);
}
END_TEST

START_TEST(test_set_merge_rejects_bad_input) {
  fixture f;
  fx_init(&f, 10);
  sl_stage *src = pu_src_stage("src", &f.src), *m;
  ck_assert_int_eq(sl_stage_set_merge(src, SL_MERGE_ARRIVAL), SL_EINVAL);
  ck_assert_int_eq(sl_stage_set_merge(NULL, SL_MERGE_ARRIVAL), SL_EINVAL);
  ck_assert_int_eq(sl_merge_new(&m, NULL, 7), SL_EINVAL);
  ck_assert_ptr_null(m);
  ck_assert_int_eq(sl_merge_new(&m, NULL, SL_MERGE_ROUND_ROBIN), 0);
  ck_assert_int_eq(sl_stage_set_merge(m, 7), SL_EINVAL);
  sl_stage_free(m);
  sl_stage_free(src);
  fx_fini(&f);
}
END_TEST

/* ------------------------------------------------------------------------
 * Flush markers
 * ---------------------------------------------------------------------- */

typedef struct marks {
  size_t first, total;   /* the source sends first bytes, a marker, rest */
  size_t seen_xf, at_xf; /* bytes through the transform, and at its sync */
  size_t seen_sink, at_sink;
  size_t seen_plain;
  int syncs_xf, syncs_sink;
  int leaks_xf, leaks_plain, leaks_sink; /* markers seen by transform/write */
  bool sent;
} marks;

static int mark_read(sl_stage *stage, void *ctx) {
  marks *m = ctx;
  sl_buf *b;
  int rc;
  if (!m->sent) {
    m->sent = true;
    if ((rc = sl_stage_buf(stage, m->first, &b)) != 0)
      return rc;
    memset(sl_buf_data(b), 'a', m->first);
    sl_buf_set_len(b, m->first);
    if ((rc = sl_stage_push(stage, b)) != 0)
      return rc;
    return sl_stage_push_flush(stage);
  }
  if ((rc = sl_stage_buf(stage, m->total - m->first, &b)) != 0)
    return rc;
  memset(sl_buf_data(b), 'b', m->total - m->first);
  sl_buf_set_len(b, m->total - m->first);
  rc = sl_stage_push(stage, b);
  return rc ? rc : SL_EOF;
}

static int mark_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  marks *m = ctx;
  m->leaks_xf += sl_buf_is_flush(in);
  m->seen_xf += sl_buf_len(in);
  return sl_stage_push(stage, in);
}

/* Another thread: its own fields. */
static int plain_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  marks *m = ctx;
  m->leaks_plain += sl_buf_is_flush(in);
  m->seen_plain += sl_buf_len(in);
  return sl_stage_push(stage, in);
}

static int mark_xf_sync(sl_stage *stage, void *ctx) {
  marks *m = ctx;
  (void)stage;
  m->syncs_xf++;
  m->at_xf = m->seen_xf;
  return 0;
}

static int mark_write(sl_stage *stage, void *ctx, sl_buf *in) {
  marks *m = ctx;
  (void)stage;
  m->leaks_sink += sl_buf_is_flush(in);
  m->seen_sink += sl_buf_len(in);
  sl_buf_unref(in);
  return 0;
}

static int mark_sink_sync(sl_stage *stage, void *ctx) {
  marks *m = ctx;
  (void)stage;
  m->syncs_sink++;
  m->at_sink = m->seen_sink;
  return 0;
}

START_TEST(test_flush_marker_runs_sync_in_order) {
  sl_pipeline *p;
  marks m = {.first = 70000, .total = 100000};
  sl_stage_ops so = {.read = mark_read};
  sl_stage_ops xo = {.transform = mark_transform, .sync = mark_xf_sync};
  sl_stage_ops plain = {.transform = plain_transform};
  sl_stage_ops ko = {.write = mark_write, .sync = mark_sink_sync};
  sl_stage *a, *b, *c, *d;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&a, "src", &so, &m), 0);
  ck_assert_int_eq(sl_stage_new(&b, "xf", &xo, &m), 0);
  ck_assert_int_eq(sl_stage_new(&c, "plain", &plain, &m), 0);
  ck_assert_int_eq(sl_stage_new(&d, "sink", &ko, &m), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, a, b, c, d, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(m.leaks_xf + m.leaks_plain + m.leaks_sink, 0);
  ck_assert_int_eq(m.syncs_xf, 1);
  ck_assert_int_eq(m.syncs_sink, 1);     /* passed "plain", which has no sync */
  ck_assert_uint_eq(m.at_xf, m.first);   /* after the bytes before it */
  ck_assert_uint_eq(m.at_sink, m.first); /* and before the bytes after */
  ck_assert_uint_eq(m.seen_plain, m.total);
  ck_assert_uint_eq(m.seen_sink, m.total);
  sl_pipeline_free(p);
}
END_TEST

START_TEST(test_flush_marker_buffers) {
  sl_buf *b;
  ck_assert_int_eq(sl_buf_new_flush(NULL, &b), 0);
  ck_assert_int_eq(sl_buf_is_flush(b), 1);
  ck_assert_int_eq(sl_buf_is_object(b), 0);
  ck_assert_uint_eq(sl_buf_len(b), 0);
  ck_assert_int_eq(sl_buf_new_flush(NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_buf_is_flush(NULL), 0);
  /* A marker fits a ring of either mode. */
  sl_ring *r;
  sl_ring_opts o = {.hwm = 4, .lwm = SL_LWM_DEFAULT, .mode = SL_RING_OBJECTS};
  ck_assert_int_eq(sl_ring_new(&r, &o), 0);
  ck_assert_int_eq(sl_ring_write(r, b), 0);
  ck_assert_uint_eq(sl_ring_level(r), 1);
  sl_ring_free(r);

  sl_pool *pool;
  ck_assert_int_eq(sl_pool_new(&pool, 4096, 0), 0);
  ck_assert_int_eq(sl_buf_new_flush(pool, &b), 0);
  ck_assert_int_eq(sl_buf_is_flush(b), 1);
  sl_buf_unref(b);
  /* The header goes back to the pool and comes out as a plain object. */
  ck_assert_int_eq(sl_buf_new_object(pool, &o, NULL, &b), 0);
  ck_assert_int_eq(sl_buf_is_flush(b), 0);
  ck_assert_int_eq(sl_buf_is_object(b), 1);
  sl_buf_unref(b);
  sl_pool_free(pool);
}
END_TEST

/* ------------------------------------------------------------------------
 * The cancel descriptor
 * ---------------------------------------------------------------------- */

typedef struct poller {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool polling;
  int fd_rc, poll_rc;
} poller;

/* A source waiting for input that never comes, in poll() on the cancel
 * descriptor, as a source on an idle socket would. */
static int poll_read(sl_stage *stage, void *ctx) {
  poller *w = ctx;
  int fd = sl_stage_cancel_fd(stage);
  pthread_mutex_lock(&w->mu);
  w->fd_rc = fd;
  w->polling = true;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (fd < 0)
    return fd;
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  w->poll_rc = poll(&pfd, 1, -1);
  return w->poll_rc == 1 && (pfd.revents & POLLIN) ? SL_ECANCELED : SL_EIO;
}

START_TEST(test_cancel_fd_wakes_poll) {
  sl_pipeline *p;
  poller w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  pu_sink k;
  pu_sink_init(&k);
  sl_stage_ops so = {.read = poll_read};
  sl_stage *a, *b = pu_sink_stage("sink", &k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&a, "idle", &so, &w), 0);
  ck_assert_int_eq(sl_stage_cancel_fd(a), SL_EINVAL); /* no pipeline yet */
  ck_assert_int_eq(sl_pipeline_chain(p, a, b, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pthread_mutex_lock(&w.mu);
  while (!w.polling)
    pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);
  ck_assert_int_ge(w.fd_rc, 0);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(w.poll_rc, 1);
  ck_assert_int_eq(sl_stage_status(a), SL_ECANCELED);
  sl_pipeline_free(p);
  pu_sink_fini(&k);
}
END_TEST

/* Asked for after the failure, the descriptor is readable at once. */
START_TEST(test_cancel_fd_after_cancel_is_readable) {
  sl_pipeline *p;
  poller w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  pu_sink k;
  pu_sink_init(&k);
  sl_stage_ops so = {.read = poll_read};
  sl_stage *a, *b = pu_sink_stage("sink", &k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&a, "idle", &so, &w), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, a, b, NULL), 0);
  sl_pipeline_cancel(p); /* before start: it starts cancelled */
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  sl_pipeline_free(p);
  pu_sink_fini(&k);
}
END_TEST

static Suite *graph_suite(void) {
  Suite *s = suite_create("graph");
  TCase *tc = tcase_create("fanout");
  tcase_set_timeout(tc, TIMEOUT);
  tcase_add_test(tc, test_tee_every_branch_byte_exact);
  tcase_add_test(tc, test_tee_slowest_branch_governs);
  tcase_add_test(tc, test_tee_failing_branch_fails_pipeline);
  suite_add_tcase(s, tc);

  tc = tcase_create("fanin");
  tcase_set_timeout(tc, TIMEOUT);
  tcase_add_test(tc, test_merge_arrival_keeps_each_input_order);
  tcase_add_test(tc, test_merge_round_robin_alternates);
  tcase_add_test(tc, test_diamond_tee_then_merge);
  tcase_add_test(tc, test_graph_rejects_cycles_and_duplicates);
  tcase_add_test(tc, test_set_merge_rejects_bad_input);
  suite_add_tcase(s, tc);

  tc = tcase_create("markers");
  tcase_set_timeout(tc, TIMEOUT);
  tcase_add_test(tc, test_flush_marker_runs_sync_in_order);
  tcase_add_test(tc, test_flush_marker_buffers);
  suite_add_tcase(s, tc);

  tc = tcase_create("cancel_fd");
  tcase_set_timeout(tc, TIMEOUT);
  tcase_add_test(tc, test_cancel_fd_wakes_poll);
  tcase_add_test(tc, test_cancel_fd_after_cancel_is_readable);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(graph_suite());
}

/* SPDX-License-Identifier: MIT */
/*
 * Check suite for backpressure across a pipeline: a held sink pauses the
 * stages upstream at their high marks, every pause ends with one drain,
 * memory stays bounded by the marks whatever the length of the input, and
 * a slow sink shows up as time the source spent blocked on a full ring.
 *
 * Nothing here sleeps: the tests hold the sink at a gate and wait for the
 * writers upstream to block with sl__ring_wait_blocked, so what they look
 * at is a frozen pipeline.
 */
#include "pipeutil.h"

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

/* ------------------------------------------------------------------------
 * A held sink pauses everything upstream
 * ---------------------------------------------------------------------- */

#define SRC_HWM 16384
#define XF_HWM 8192
#define XF_LWM 1024

static const size_t held_sizes[] = {1, 100, 1000, 4096, 3000, 2, 777};
#define NSIZES_HELD (sizeof held_sizes / sizeof held_sizes[0])

typedef struct held {
  unsigned char *data;
  size_t len, max_chunk;
  sl_pipeline *p;
  pu_src src;
  pu_xf xf;
  pu_sink sink;
  sl_stage *s0, *s1, *s2;
} held;

/* src -(16 KiB)-> xf -(8 KiB, low 1 KiB)-> sink, the sink held at its
 * gate; returns once both writers are paused: nothing moves until the
 * gate opens or the pipeline is cancelled. */
static void held_start(held *h) {
  h->len = (size_t)1 << 20;
  h->data = pu_pattern(h->len, 21);
  ck_assert_ptr_nonnull(h->data);
  pu_plan_chunks(h->len, held_sizes, NSIZES_HELD, &h->max_chunk);
  pu_src_init(&h->src, h->data, h->len, held_sizes, NSIZES_HELD);
  pu_xf_init(&h->xf, PU_IDENTITY);
  pu_sink_init(&h->sink);
  pu_sink_hold(&h->sink);
  ck_assert_int_eq(sl_pipeline_new(&h->p, NULL), 0);
  h->s0 = pu_src_stage("src", &h->src);
  h->s1 = pu_xf_stage("xf", &h->xf, false);
  h->s2 = pu_sink_stage("sink", &h->sink);
  ck_assert(h->s0 && h->s1 && h->s2);
  ck_assert_int_eq(
      sl_stage_set_output(h->s0, SRC_HWM, SL_LWM_DEFAULT, SL_RING_BYTES), 0);
  ck_assert_int_eq(sl_stage_set_output(h->s1, XF_HWM, XF_LWM, SL_RING_BYTES),
                   0);
  ck_assert_int_eq(sl_pipeline_chain(h->p, h->s0, h->s1, h->s2, NULL), 0);
  ck_assert_ptr_null(sl_stage_output(h->s0)); /* rings come with start */
  ck_assert_int_eq(sl_pipeline_start(h->p), 0);
  ck_assert_ptr_nonnull(sl_stage_output(h->s0));
  ck_assert_ptr_nonnull(sl_stage_output(h->s1));

  pu_sink_wait_at_gate(&h->sink);
  /* The sink reads nothing more, so xf fills its ring and pauses for good;
   * then src fills its own and pauses too. */
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(h->s1)), 0);
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(h->s0)), 0);
}

static void held_free(held *h) {
  sl_pipeline_free(h->p);
  ck_assert_int_eq(pu_destroyed(&h->src), 1);
  ck_assert_int_eq(pu_destroyed(&h->xf), 1);
  ck_assert_int_eq(pu_destroyed(&h->sink), 1);
  pu_sink_fini(&h->sink);
  free(h->data);
}

/* A ring whose writer is paused right now: it is full (the level reached
 * the mark; no chunk here is small enough to fill the slots first), the
 * level is within one chunk of the mark, and the pause in progress has not
 * been drained. */
static void expect_paused(sl_ring *r, size_t hwm, size_t max_chunk) {
  sl_ring_stats st = pu_ring_stats(r);

  ck_assert_uint_eq(st.hwm, hwm);
  ck_assert_int_eq(st.writer_waiting, 1);
  ck_assert_uint_ge(st.level, hwm);
  ck_assert_uint_le(st.level, hwm + max_chunk);
  ck_assert_uint_le(st.peak_level, hwm + max_chunk);
  ck_assert_uint_ge(st.pauses, 1);
  ck_assert_uint_eq(st.pauses, st.drains + 1);
  ck_assert_int_eq(st.closed, 0);
  ck_assert_int_eq(st.error, 0);
}

START_TEST(test_held_sink_pauses_upstream) {
  held h;
  sl_stage_stats ss;

  held_start(&h);
  expect_paused(sl_stage_output(h.s0), SRC_HWM, h.max_chunk);
  expect_paused(sl_stage_output(h.s1), XF_HWM, h.max_chunk);
  ck_assert_uint_eq(pu_ring_stats(sl_stage_output(h.s1)).lwm, XF_LWM);
  ck_assert_uint_eq(pu_ring_stats(sl_stage_output(h.s0)).lwm, SRC_HWM / 2);
  /* Paused, not finished: far from all the input has been read. */
  ck_assert_uint_lt(h.src.pos, h.len);
  ck_assert_int_eq(sl_pipeline_stage_stats(h.p, 0, &ss), 0);
  ck_assert_int_eq(ss.running, 1);
  ck_assert_int_eq(ss.status, 0);

  pu_sink_release(&h.sink);
  ck_assert_int_eq(sl_pipeline_wait(h.p), 0);
  ck_assert_uint_eq(h.sink.got.len, h.len);
  ck_assert(memcmp(h.sink.got.p, h.data, h.len) == 0);
  held_free(&h);
}
END_TEST

/* After a successful run every pause ended with exactly one drain: only
 * the writer closes its ring, so no pause can end by close, and the run
 * had no abort. The level never passed the mark by a chunk or more. */
START_TEST(test_every_pause_drained) {
  held h;
  sl_ring *rings[2];
  size_t hwm[2] = {SRC_HWM, XF_HWM};

  held_start(&h);
  rings[0] = sl_stage_output(h.s0);
  rings[1] = sl_stage_output(h.s1);
  pu_sink_release(&h.sink);
  ck_assert_int_eq(sl_pipeline_wait(h.p), 0);
  for (int i = 0; i < 2; i++) {
    sl_ring_stats st = pu_ring_stats(rings[i]);
    ck_assert_uint_ge(st.pauses, 1);
    ck_assert_msg(st.pauses == st.drains, "ring %d: %llu pauses, %llu drains",
                  i, (unsigned long long)st.pauses,
                  (unsigned long long)st.drains);
    ck_assert_uint_lt(st.peak_level, hwm[i] + h.max_chunk);
    ck_assert_uint_ge(st.peak_level, hwm[i]);
    ck_assert_int_eq(st.writer_waiting, 0);
    ck_assert_int_eq(st.closed, 1);
    ck_assert_uint_eq(st.level, 0);
    ck_assert_uint_eq(st.bytes_in, h.len);
    ck_assert_uint_eq(st.bytes_out, h.len);
  }
  held_free(&h);
}
END_TEST

/* A pause cut short by an abort ends without a drain: the paused writers
 * saw the sink read nothing, so each ring has exactly one pause more than
 * drains, and the sink's ring is torn down, not drained. */
START_TEST(test_pause_ended_by_abort) {
  held h;
  sl_ring *rings[2];

  held_start(&h);
  rings[0] = sl_stage_output(h.s0);
  rings[1] = sl_stage_output(h.s1);
  sl_pipeline_cancel(h.p);
  pu_sink_release(&h.sink);
  ck_assert_int_eq(sl_pipeline_wait(h.p), SL_ECANCELED);
  for (int i = 0; i < 2; i++) {
    sl_ring_stats st = pu_ring_stats(rings[i]);
    ck_assert_uint_ge(st.pauses, 1);
    ck_assert_uint_eq(st.pauses, st.drains + 1);
    ck_assert_int_eq(st.error, SL_ECANCELED);
    ck_assert_int_eq(st.writer_waiting, 0);
    ck_assert_uint_eq(st.level, 0);
  }
  ck_assert_uint_lt(h.sink.got.len, h.len);
  ck_assert(pu_is_prefix(h.sink.got.p, h.sink.got.len, h.data, h.len));
  ck_assert_uint_eq(pu_pool_stats(h.p).outstanding, 0);
  held_free(&h);
}
END_TEST

/* In object mode the level counts chunks: a paused writer stops at hwm
 * items exactly, whatever the objects are. */
START_TEST(test_object_ring_pauses_at_item_mark) {
  static atomic_int counts[300], created[300];
  sl_pipeline *p = NULL;
  pu_objsrc src;
  pu_objsink sink;
  pu_sink gate;
  sl_stage *s0, *s1;
  sl_ring_stats st;

  for (int i = 0; i < 300; i++) {
    atomic_init(&counts[i], 0);
    atomic_init(&created[i], 0);
  }
  pu_objsrc_init(&src, 300, counts, created);
  pu_objsink_init(&sink, 0);
  pu_sink_init(&gate);
  pu_sink_hold(&gate);
  sink.gate = &gate;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_objsrc_stage("objsrc", &src);
  s1 = pu_objsink_stage("objsink", &sink);
  ck_assert(s0 && s1);
  ck_assert_int_eq(sl_stage_set_output(s0, 8, SL_LWM_DEFAULT, SL_RING_OBJECTS),
                   0);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pu_sink_wait_at_gate(&gate);
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(s0)), 0);
  st = pu_ring_stats(sl_stage_output(s0));
  ck_assert_uint_eq(st.level, 8);
  ck_assert_uint_eq(st.chunks, 8);
  ck_assert_uint_eq(st.pauses, st.drains + 1);
  ck_assert_uint_eq(st.lwm, 4);

  pu_sink_release(&gate);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  st = pu_ring_stats(sl_stage_output(s0));
  ck_assert_uint_eq(st.peak_level, 8);
  ck_assert_uint_eq(st.pauses, st.drains);
  ck_assert_uint_eq(st.chunks_out, 300);
  ck_assert_int_eq(sink.chunks, 300);
  ck_assert_int_eq(sink.bad, 0);
  for (int i = 0; i < 300; i++)
    test_check(atomic_load(&counts[i]) == 1);
  sl_pipeline_free(p);
  pu_sink_fini(&gate);
}
END_TEST

/* Hysteresis: a paused writer resumes only once the reader has taken the
 * level down to the low mark, so between two pauses it pushes at least
 * hwm - lwm bytes. The level counts what a chunk holds in memory, the
 * capacity of its pooled buffer (unit, for a one-byte chunk): the marks
 * are set in units of it. With one-byte chunks the reader's batches (16
 * chunks) take far less than hwm - lwm at a time, so a ring that woke its
 * writer before the low mark would pause it about once per batch. */
START_TEST(test_writer_resumes_at_low_mark) {
  static const size_t sizes[] = {1};
  const size_t len = 5000;
  unsigned char *data = pu_pattern(len, 5);
  sl_pipeline *p = NULL;
  pu_src src;
  pu_sink sink;
  sl_stage *s0, *s1;
  sl_ring_stats st;
  sl_buf *probe;

  pu_src_init(&src, data, len, sizes, 1);
  pu_sink_init(&sink);
  sink.spin = 2000; /* a slow sink keeps the ring at its mark */
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_buf_new(sl_pipeline_pool(p), 1, &probe), 0);
  const size_t unit = sl_buf_cap(probe), hwm = 64 * unit, lwm = 8 * unit;
  sl_buf_unref(probe);
  s0 = pu_src_stage("src", &src);
  s1 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1);
  ck_assert_int_eq(sl_stage_set_output(s0, hwm, lwm, SL_RING_BYTES), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(sink.got.len, len);
  ck_assert(memcmp(sink.got.p, data, len) == 0);
  st = pu_ring_stats(sl_stage_output(s0));
  ck_assert_uint_eq(st.lwm, lwm);
  ck_assert_uint_ge(st.pauses, 1);
  ck_assert_uint_eq(st.pauses, st.drains);
  ck_assert_uint_le(st.peak_level, hwm);
  ck_assert_msg(st.pauses <= 1 + len * unit / (hwm - lwm),
                "%llu pauses for %zu bytes: resumed above the low mark",
                (unsigned long long)st.pauses, len);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * The pool's peak does not grow with the input
 * ---------------------------------------------------------------------- */

/*
 * src -> copy -> sink, every chunk a full pooled buffer of C bytes (the
 * pool's buffer size, so capacity == length and one size class), every
 * ring's high mark H = 4 C. Pooled bytes outstanding at any moment are at
 * most:
 *
 *   rings      2 (H + C)  a chunk is admitted while the level is below H,
 *                         so a ring holds less than H + C bytes
 *   batches    2 min(B C, H + C)  each consumer (copy, sink) pops up to B
 *                         chunks at once (STAGE_BATCH in src/stage.c, 16),
 *                         never more than its ring held
 *   in flight  3 C        per stage, the chunk it is filling or pushing
 *                         (a paused push holds one)
 *
 * = 2 (5 C) + 2 (5 C) + 3 C = 23 C, whatever the input length. The test
 * holds the sink at its gate until both writers are paused, so each run
 * starts from the pipeline full up to its marks: the short run already
 * reaches the rings' share. What can differ between runs is how much the
 * consumers hold in their batches and in flight, which depends on timing:
 * that is the slack allowed between the two runs.
 */
#define POOL_C ((size_t)16384)
#define POOL_H (4 * POOL_C)
#define POOL_BATCH 16 /* STAGE_BATCH */
#define POOL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define POOL_BOUND         \
  (2 * (POOL_H + POOL_C) + \
   2 * POOL_MIN(POOL_BATCH * POOL_C, POOL_H + POOL_C) + 3 * POOL_C)
#define POOL_SLACK (2 * (POOL_H + POOL_C))

/* Chunks of C bytes: the sequence number, then its low byte repeated. */
typedef struct seqsrc {
  pu_common c;
  uint64_t n, next;
} seqsrc;

static int seqsrc_read(sl_stage *stage, void *ctx) {
  seqsrc *s = ctx;
  sl_buf *b = NULL;
  int rc;

  if (s->next == s->n)
    return SL_EOF;
  rc = sl_stage_buf(stage, POOL_C, &b);
  if (rc != 0)
    return rc;
  memset(sl_buf_data(b), (int)(s->next & 0xff), POOL_C);
  memcpy(sl_buf_data(b), &s->next, sizeof s->next);
  sl_buf_set_len(b, POOL_C);
  s->next++;
  return sl_stage_push(stage, b);
}

typedef struct seqcheck {
  uint64_t next;
} seqcheck;

static bool seq_check(pu_sink *k, const sl_buf *b) {
  seqcheck *c = k->check_arg;
  uint64_t seq;
  const unsigned char *d = sl_buf_data(b);

  if (sl_buf_len(b) != POOL_C)
    return false;
  memcpy(&seq, d, sizeof seq);
  if (seq != c->next++)
    return false;
  return d[8] == (seq & 0xff) && d[POOL_C - 1] == (seq & 0xff);
}

static sl_pool_stats run_pool(size_t mib) {
  sl_pipeline_opts o = {.buf_size = POOL_C, .hwm = POOL_H};
  sl_pipeline *p = NULL;
  seqsrc src;
  pu_xf copy;
  pu_sink sink;
  seqcheck chk = {0};
  sl_stage_ops ops = {.read = seqsrc_read, .destroy = pu_destroy};
  sl_stage *s0 = NULL, *s1, *s2;
  sl_pool_stats ps;

  memset(&src, 0, sizeof src);
  pu_common_init(&src.c);
  src.n = (uint64_t)(mib << 20) / POOL_C;
  pu_xf_init(&copy, PU_COPY);
  pu_sink_init(&sink);
  sink.collect = false;
  sink.check = seq_check;
  sink.check_arg = &chk;
  pu_sink_hold(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  ck_assert_int_eq(sl_stage_new(&s0, "seq", &ops, &src), 0);
  s1 = pu_xf_stage("copy", &copy, false);
  s2 = pu_sink_stage("check", &sink);
  ck_assert(s1 && s2);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pu_sink_wait_at_gate(&sink);
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(s1)), 0);
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(s0)), 0);
  pu_sink_release(&sink);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);

  ck_assert_int_eq(sink.chunks, (long)src.n);
  ck_assert_int_eq(sink.bad, 0);
  ps = pu_pool_stats(p);
  ck_assert_uint_eq(ps.buf_size, POOL_C);
  ck_assert_uint_eq(ps.outstanding, 0);
  ck_assert_uint_eq(ps.bytes_outstanding, 0);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  return ps;
}

START_TEST(test_pool_peak_independent_of_length) {
  const long long_mib = test_iterations("SL_TEST_POOL_MIB", 64);
  sl_pool_stats shortrun = run_pool(1);
  sl_pool_stats longrun = run_pool((size_t)long_mib);

  ck_assert_uint_le(shortrun.peak_bytes, POOL_BOUND);
  ck_assert_msg(longrun.peak_bytes <= POOL_BOUND,
                "%ld MiB run peaked at %zu pooled bytes, bound %zu", long_mib,
                longrun.peak_bytes, (size_t)POOL_BOUND);
  ck_assert_msg(longrun.peak_bytes <= shortrun.peak_bytes + POOL_SLACK,
                "peak %zu for %ld MiB, %zu for 1 MiB", longrun.peak_bytes,
                long_mib, shortrun.peak_bytes);
  /* Every buffer counted was a whole class: the bytes and the buffers
   * tell the same story, and the steady state allocated nothing: every
   * allocation raised the peak. */
  ck_assert_uint_eq(longrun.peak_bytes, longrun.peak_outstanding * POOL_C);
  ck_assert_uint_le(longrun.allocations, longrun.peak_outstanding);
  ck_assert_uint_gt(longrun.reuses, 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * A slow sink backpressures the source
 * ---------------------------------------------------------------------- */

START_TEST(test_throttled_sink_blocks_source) {
  static const size_t sizes[] = {4096};
  const size_t len = (size_t)1 << 20;
  unsigned char *data = pu_pattern(len, 31);
  sl_pipeline *p = NULL;
  pu_src src;
  pu_sink sink;
  sl_stage *s0, *s1;
  sl_stage_stats ss0, ss1;
  sl_ring_stats rs;

  pu_src_init(&src, data, len, sizes, 1);
  pu_sink_init(&sink);
  sink.spin = 20000; /* per chunk: far slower than a memcpy of 4 KiB */
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("src", &src);
  s1 = pu_sink_stage("slow", &sink);
  ck_assert(s0 && s1);
  ck_assert_int_eq(
      sl_stage_set_output(s0, 16384, SL_LWM_DEFAULT, SL_RING_BYTES), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);

  ck_assert_uint_eq(sink.got.len, len);
  ck_assert(memcmp(sink.got.p, data, len) == 0);
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 0, &ss0), 0);
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 1, &ss1), 0);
  rs = pu_ring_stats(sl_stage_output(s0));
  ck_assert_uint_gt(rs.pauses, 0);
  ck_assert_uint_eq(rs.pauses, rs.drains);
  ck_assert_uint_gt(ss0.blocked_full_ns, 0);
  ck_assert_uint_eq(ss0.blocked_full_ns, rs.writer_wait_ns);
  ck_assert_uint_eq(ss0.blocked_empty_ns, 0); /* a source has no input */
  ck_assert_uint_eq(ss1.blocked_full_ns, 0);  /* a sink has no output */
  ck_assert_uint_gt(ss1.busy_ns, 0);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
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

static Suite *backpressure_suite(void) {
  Suite *s = suite_create("backpressure");
  TCase *tc;

  tc = tcase("pause", 60);
  tcase_add_test(tc, test_held_sink_pauses_upstream);
  tcase_add_test(tc, test_every_pause_drained);
  tcase_add_test(tc, test_pause_ended_by_abort);
  tcase_add_test(tc, test_object_ring_pauses_at_item_mark);
  tcase_add_test(tc, test_writer_resumes_at_low_mark);
  suite_add_tcase(s, tc);

  tc = tcase("memory", 300);
  tcase_add_test(tc, test_pool_peak_independent_of_length);
  suite_add_tcase(s, tc);

  tc = tcase("throttle", 120);
  tcase_add_test(tc, test_throttled_sink_blocks_source);
  suite_add_tcase(s, tc);

  return s;
}

int main(void) {
  return run_suite(backpressure_suite());
}

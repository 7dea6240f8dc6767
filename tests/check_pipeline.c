/* SPDX-License-Identifier: MIT */
/*
 * Check suite for sl_pipeline and sl_stage: bytes and objects through
 * chains of stages, failure reporting, the finished callback, cancellation,
 * duplex stages, chain and start validation, thread names and counters.
 *
 * Every test runs with the counting allocator installed (the fixture
 * checks that every block the library allocated was freed) and checks in
 * its teardown that no thread outlived the test.
 */
#include "pipeutil.h"

#include <stdio.h>

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

/* Chunk sizes: the edge sizes, a page, more than a pooled buffer (64 KiB
 * by default) and exactly one. */
static const size_t sizes_mixed[] = {0, 1,     2,      3,    4096, 1,
                                     2, 65536, 100000, 0,    7,    65537,
                                     3, 31,    1000,   4095, 0,    12345};
#define NSIZES(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------------
 * Bytes through 1 to 5 transforms
 * ---------------------------------------------------------------------- */

/* Transform i of a chain of n is stage_table[(i + n) % 5], so each length
 * gets a different mix. Trailers are upper-case, digits and brackets only,
 * so an upper-case stage after them leaves them as they are. */
static const struct {
  int kind;
  size_t split;
  bool flush;
  const char *trailer;
} stage_table[5] = {
    {PU_UPPER, 0, true, "[T-UPPER]"},        {PU_SPLIT, 777, true, NULL},
    {PU_IDENTITY, 0, false, NULL},           {PU_COPY, 0, true, "[T-COPY]"},
    {PU_SPLIT, 4096, true, "[T-SPLIT4096]"},
};

START_TEST(test_bytes_through_transforms) {
  const int n = _i;
  /* 1 MiB + 3 by default; SL_TEST_BYTES shortens it for race checkers,
   * which instrument every byte each transform touches. */
  const size_t len = (size_t)test_iterations("SL_TEST_BYTES", 1 << 20) + 3;
  unsigned char *data = pu_pattern(len, (uint32_t)n);
  sl_pipeline_opts o = {0};
  sl_pipeline *p = NULL;
  sl_stage *st[7];
  pu_src src;
  pu_xf xf[5];
  pu_sink sink;
  pu_bytes want = {0};
  bool upper = false;

  ck_assert_ptr_nonnull(data);
  if (n % 2 == 0)
    o.hwm = 8192; /* small rings: backpressure all the way */
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);

  pu_src_init(&src, data, len, sizes_mixed, NSIZES(sizes_mixed));
  src.per_call = 1 + n % 3;
  st[0] = pu_src_stage("src", &src);
  ck_assert_ptr_nonnull(st[0]);
  for (int i = 0; i < n; i++) {
    char name[16];
    int t = (i + n) % 5;
    pu_xf_init(&xf[i], stage_table[t].kind);
    if (stage_table[t].split)
      xf[i].split = stage_table[t].split;
    xf[i].trailer = stage_table[t].trailer;
    upper |= stage_table[t].kind == PU_UPPER;
    snprintf(name, sizeof name, "xf%d", i);
    st[i + 1] = pu_xf_stage(name, &xf[i], stage_table[t].flush);
    ck_assert_ptr_nonnull(st[i + 1]);
  }
  pu_sink_init(&sink);
  st[n + 1] = pu_sink_stage("sink", &sink);
  ck_assert_ptr_nonnull(st[n + 1]);
  ck_assert_int_eq(sl_pipeline_chainv(p, st, (size_t)n + 2), 0);
  ck_assert_uint_eq(sl_pipeline_stage_count(p), (size_t)n + 2);

  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));

  /* The input, upper-cased if any stage does it, then each flushing
   * stage's trailer in chain order. */
  ck_assert(pu_bytes_add(&want, data, len));
  if (upper)
    for (size_t i = 0; i < len; i++)
      want.p[i] = pu_upper(want.p[i]);
  for (int i = 0; i < n; i++) {
    int t = (i + n) % 5;
    if (stage_table[t].flush && stage_table[t].trailer)
      ck_assert(pu_bytes_add(&want, stage_table[t].trailer,
                             strlen(stage_table[t].trailer)));
  }
  ck_assert_uint_eq(sink.got.len, want.len);
  ck_assert(memcmp(sink.got.p, want.p, want.len) == 0);

  ck_assert_int_eq(src.chunks,
                   pu_plan_chunks(len, sizes_mixed, NSIZES(sizes_mixed), NULL));
  for (int i = 0; i < n; i++) {
    int t = (i + n) % 5;
    ck_assert_int_eq(xf[i].chunks, i == 0 ? src.chunks : xf[i - 1].pushed);
    /* flush exactly once, after every input */
    ck_assert_int_eq(xf[i].flush_calls, stage_table[t].flush ? 1 : 0);
    if (stage_table[t].flush)
      ck_assert_int_eq(xf[i].chunks_at_flush, xf[i].chunks);
  }
  /* final exactly once, at the end */
  ck_assert_int_eq(sink.final_calls, 1);
  ck_assert_int_eq(sink.chunks_at_final, sink.chunks);
  ck_assert_uint_eq(sink.bytes_at_final, want.len);
  ck_assert_int_eq(sink.chunks, xf[n - 1].pushed);

  for (int i = 0; i < n + 2; i++)
    ck_assert_int_eq(sl_stage_status(st[i]), 0);
  ck_assert_int_eq(pu_destroyed(&src), 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&src), 1);
  for (int i = 0; i < n; i++)
    ck_assert_int_eq(pu_destroyed(&xf[i]), 1);
  ck_assert_int_eq(pu_destroyed(&sink), 1);
  pu_sink_fini(&sink);
  pu_bytes_free(&want);
  free(data);
}
END_TEST

/* An empty stream still ends properly: flush and final once each, and the
 * trailers are all that comes out. */
START_TEST(test_empty_stream) {
  static const size_t sizes[] = {1};
  sl_pipeline *p = NULL;
  pu_src src;
  pu_xf a, b;
  pu_sink sink;
  sl_stage *s0, *s1, *s2, *s3;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&src, (const unsigned char *)"", 0, sizes, 1);
  pu_xf_init(&a, PU_UPPER);
  a.trailer = "[A]";
  pu_xf_init(&b, PU_SPLIT);
  b.split = 1;
  b.trailer = "[B]";
  pu_sink_init(&sink);
  s0 = pu_src_stage("src", &src);
  s1 = pu_xf_stage("a", &a, true);
  s2 = pu_xf_stage("b", &b, true);
  s3 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1 && s2 && s3);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, s3, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);

  ck_assert_int_eq(src.chunks, 0);
  ck_assert_int_eq(a.flush_calls, 1);
  ck_assert_int_eq(b.flush_calls, 1);
  ck_assert_int_eq(sink.final_calls, 1);
  /* "[A]" split into 3 one-byte chunks, then "[B]" in one */
  ck_assert_int_eq(sink.chunks, 4);
  ck_assert_uint_eq(sink.got.len, 6);
  ck_assert(memcmp(sink.got.p, "[A][B]", 6) == 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&sink), 1);
  pu_sink_fini(&sink);
}
END_TEST

/* Run src -> upper -> sink over data in pipeline p; returns what came out
 * (malloc'd, *n bytes). */
static unsigned char *run_upper(sl_pipeline *p, const unsigned char *data,
                                size_t len, size_t *n) {
  static const size_t sizes[] = {4096, 65536, 1, 30000};
  pu_src src;
  pu_xf up;
  pu_sink sink;
  unsigned char *out;

  pu_src_init(&src, data, len, sizes, 4);
  pu_xf_init(&up, PU_UPPER);
  pu_sink_init(&sink);
  sl_stage *a = pu_src_stage("src", &src), *b = pu_xf_stage("up", &up, true),
           *c = pu_sink_stage("sink", &sink);
  ck_assert(a && b && c);
  ck_assert_int_eq(sl_pipeline_chain(p, a, b, c, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  *n = sink.got.len;
  out = malloc(*n ? *n : 1);
  ck_assert_ptr_nonnull(out);
  memcpy(out, sink.got.p, *n);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  return out;
}

/* Pipelines given one pool take their buffers from it, one after another
 * reuse what the first gave back, and the pool outlives them. */
START_TEST(test_shared_pool) {
  const size_t len = (1 << 20) + 7;
  unsigned char *data = pu_pattern(len, 5), *want = malloc(len), *got;
  sl_pool *pool;
  sl_pool_stats st;
  sl_pipeline *p;
  size_t n;
  uint64_t reuses = 0;

  ck_assert_ptr_nonnull(want);
  for (size_t i = 0; i < len; i++)
    want[i] = pu_upper(data[i]);
  ck_assert_int_eq(sl_pool_new(&pool, 32768, 0), 0);
  /* A buffer size other than the pool's is refused; 0 takes the pool's. */
  ck_assert_int_eq(
      sl_pipeline_new(&p, &(sl_pipeline_opts){.pool = pool, .buf_size = 4096}),
      SL_EINVAL);
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(sl_pipeline_new(&p, &(sl_pipeline_opts){.pool = pool}), 0);
    ck_assert_ptr_eq(sl_pipeline_pool(p), pool);
    got = run_upper(p, data, len, &n);
    ck_assert_uint_eq(n, len);
    ck_assert(memcmp(got, want, len) == 0);
    free(got);
    ck_assert_int_eq(sl_pool_stats_get(pool, &st), 0);
    ck_assert_uint_eq(st.buf_size, 32768);
    ck_assert_uint_eq(st.outstanding, 0);
    ck_assert_uint_gt(st.allocations, 0); /* it was this pool's work */
    ck_assert_uint_gt(st.cached, 0);
    if (k > 0) /* and a later pipeline took what an earlier gave back */
      ck_assert_uint_gt(st.reuses, reuses);
    reuses = st.reuses;
  }
  sl_pool_free(pool);
  free(want);
  free(data);
}
END_TEST

/* An op's positive return other than a source's SL_EOF and SL_DONE counts
 * as 0 (a final's or a flush's SL_DONE too). */
static int pos_read(sl_stage *st, void *ctx) {
  int rc = pu_src_read(st, ctx);
  return rc == 0 ? SL_AGAIN : rc;
}

static int pos_transform(sl_stage *st, void *ctx, sl_buf *in) {
  int rc = pu_xf_transform(st, ctx, in);
  return rc == 0 ? 7 : rc;
}

static int pos_flush(sl_stage *st, void *ctx) {
  int rc = pu_xf_flush(st, ctx);
  return rc == 0 ? 1 : rc;
}

static int pos_write(sl_stage *st, void *ctx, sl_buf *in) {
  int rc = pu_sink_write(st, ctx, in);
  return rc == 0 ? 4 : rc;
}

static int pos_final(sl_stage *st, void *ctx) {
  int rc = pu_sink_final(st, ctx);
  return rc == 0 ? SL_DONE : rc;
}

START_TEST(test_positive_op_return_is_success) {
  static const sl_stage_ops src_ops = {.read = pos_read, .destroy = pu_destroy};
  static const sl_stage_ops xf_ops = {
      .transform = pos_transform, .flush = pos_flush, .destroy = pu_destroy};
  static const sl_stage_ops sink_ops = {
      .write = pos_write, .final = pos_final, .destroy = pu_destroy};
  const size_t len = 100000;
  unsigned char *data = pu_pattern(len, 12);
  sl_pipeline *p = NULL;
  pu_src src;
  pu_xf xf;
  pu_sink sink;
  sl_stage *s0 = NULL, *s1 = NULL, *s2 = NULL;

  pu_src_init(&src, data, len, sizes_mixed, NSIZES(sizes_mixed));
  pu_xf_init(&xf, PU_UPPER);
  xf.trailer = "[P]";
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&s0, "src", &src_ops, &src), 0);
  ck_assert_int_eq(sl_stage_new(&s1, "xf", &xf_ops, &xf), 0);
  ck_assert_int_eq(sl_stage_new(&s2, "sink", &sink_ops, &sink), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));
  ck_assert_uint_eq(sink.got.len, len + 3);
  for (size_t i = 0; i < len; i++)
    test_check(sink.got.p[i] == pu_upper(data[i]));
  ck_assert(memcmp(sink.got.p + len, "[P]", 3) == 0);
  ck_assert_int_eq(xf.flush_calls, 1);
  ck_assert_int_eq(sink.final_calls, 1);
  ck_assert_int_eq(sl_stage_status(s0), 0);
  ck_assert_int_eq(sl_stage_status(s1), 0);
  ck_assert_int_eq(sl_stage_status(s2), 0);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Object mode
 * ---------------------------------------------------------------------- */

#define NOBJ 500

/* Object transform: each input object i becomes a new object NOBJ + i;
 * the input is released here, so its destructor runs on this thread. */
typedef struct objxf {
  pu_common c;
  atomic_int *counts, *created;
  long chunks, bad;
} objxf;

static int objxf_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  objxf *x = ctx;
  pu_obj *obj = sl_buf_object(in);
  sl_buf *out;
  int rc;

  pu_common_note(&x->c);
  if (!sl_buf_is_object(in) || obj == NULL || obj->id != x->chunks)
    x->bad++;
  rc = pu_obj_new(stage, NOBJ + (obj ? obj->id : 0), x->counts, x->created,
                  &out);
  sl_buf_unref(in);
  if (rc != 0)
    return rc;
  x->chunks++;
  return sl_stage_push(stage, out);
}

static sl_stage *objxf_stage(const char *name, objxf *x) {
  sl_stage_ops ops = {.transform = objxf_transform, .destroy = pu_destroy};
  sl_stage *st = NULL;

  return sl_stage_new(&st, name, &ops, x) == 0 ? st : NULL;
}

static atomic_int obj_counts[2 * NOBJ], obj_created[2 * NOBJ];

static void obj_counts_reset(void) {
  for (int i = 0; i < 2 * NOBJ; i++) {
    atomic_init(&obj_counts[i], 0);
    atomic_init(&obj_created[i], 0);
  }
}

/* Builds src -> xf -> sink in object mode with small marks; the sink may
 * fail at fail_at. Returns the wait status. */
static int run_objects(long fail_at, pu_objsrc *src, objxf *x,
                       pu_objsink *sink) {
  sl_pipeline *p = NULL;
  sl_stage *s0, *s1, *s2;
  int rc;

  obj_counts_reset();
  pu_objsrc_init(src, NOBJ, obj_counts, obj_created);
  memset(x, 0, sizeof *x);
  pu_common_init(&x->c);
  x->counts = obj_counts;
  x->created = obj_created;
  pu_objsink_init(sink, NOBJ);
  sink->fault.at = fail_at;
  sink->fault.code = SL_EIO;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_objsrc_stage("objsrc", src);
  s1 = objxf_stage("objxf", x);
  s2 = pu_objsink_stage("objsink", sink);
  ck_assert(s0 && s1 && s2);
  ck_assert_int_eq(sl_stage_set_output(s0, 4, SL_LWM_DEFAULT, SL_RING_OBJECTS),
                   0);
  ck_assert_int_eq(sl_stage_set_output(s1, 3, 1, SL_RING_OBJECTS), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  rc = sl_pipeline_wait(p);

  /* The object rings count items, one per chunk, admitted while the level
   * is below hwm: the level never passes hwm. */
  ck_assert_uint_le(pu_ring_stats(sl_stage_output(s0)).peak_level, 4);
  ck_assert_uint_le(pu_ring_stats(sl_stage_output(s1)).peak_level, 3);
  /* Once wait returns every buffer is released: no object is alive. */
  for (int i = 0; i < 2 * NOBJ; i++)
    test_check_msg(atomic_load(&obj_counts[i]) == atomic_load(&obj_created[i]),
                   "object %d: created %d, destroyed %d", i,
                   atomic_load(&obj_created[i]), atomic_load(&obj_counts[i]));
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(src), 1);
  ck_assert_int_eq(pu_destroyed(x), 1);
  ck_assert_int_eq(pu_destroyed(sink), 1);
  return rc;
}

START_TEST(test_objects_destructors_run_once) {
  pu_objsrc src;
  objxf x;
  pu_objsink sink;

  ck_assert_int_eq(run_objects(PU_NEVER, &src, &x, &sink), 0);
  ck_assert_int_eq(sink.chunks, NOBJ);
  ck_assert_int_eq(sink.bad, 0);
  ck_assert_int_eq(x.bad, 0);
  ck_assert_int_eq(sink.final_calls, 1);
  for (int i = 0; i < 2 * NOBJ; i++) {
    test_check(atomic_load(&obj_created[i]) == 1);
    test_check(atomic_load(&obj_counts[i]) == 1);
  }
}
END_TEST

/* A failure leaves objects in rings and batches: each still destroyed
 * exactly once (run_objects checks counts == created). */
START_TEST(test_objects_released_on_failure) {
  pu_objsrc src;
  objxf x;
  pu_objsink sink;
  long created = 0;

  ck_assert_int_eq(run_objects(5, &src, &x, &sink), SL_EIO);
  ck_assert_int_eq(sink.chunks, 5);
  ck_assert_int_eq(sink.final_calls, 0);
  for (int i = 0; i < 2 * NOBJ; i++) {
    test_check(atomic_load(&obj_created[i]) <= 1);
    created += atomic_load(&obj_created[i]);
  }
  ck_assert_int_gt(created, 5);
}
END_TEST

/* ------------------------------------------------------------------------
 * Failures: src -> mid -> sink, one of them fails at chunk k
 * ---------------------------------------------------------------------- */

#define FAIL_CHUNKS 20L

static const long fail_ks[] = {0, 1, 7, FAIL_CHUNKS - 1, PU_AT_END};
static const char *const fail_names[] = {"src", "mid", "sink"};
static const int fail_codes[] = {SL_EIO, SL_EDATA, SL_ENOSPC};

START_TEST(test_failure_reported) {
  static const size_t sizes[] = {100, 1, 0, 3000, 2};
  const int where = _i / 5;
  const long k = fail_ks[_i % 5];
  const bool last = k == FAIL_CHUNKS - 1;
  sl_pipeline_opts o = {.hwm = 256};
  size_t len = 0;
  unsigned char *data;
  sl_pipeline *p = NULL;
  sl_stage *st[3];
  pu_src src;
  pu_xf mid;
  pu_sink sink;
  pu_fault *f;
  char want[64];
  int rc, threads_before;
  const void *ctxs[3] = {&src, &mid, &sink};

  for (long i = 0; i < FAIL_CHUNKS; i++)
    len += sizes[i % 5];
  data = pu_pattern(len, 7);
  ck_assert_int_eq(pu_plan_chunks(len, sizes, 5, NULL), FAIL_CHUNKS);

  pu_src_init(&src, data, len, sizes, 5);
  pu_xf_init(&mid, PU_IDENTITY);
  pu_sink_init(&sink);
  /* Rings far smaller than the stream: before the last chunk, the stages
   * upstream of the failing one are still running when it fails. */
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  st[0] = pu_src_stage("src", &src);
  st[1] = pu_xf_stage("mid", &mid, true);
  st[2] = pu_sink_stage("sink", &sink);
  ck_assert(st[0] && st[1] && st[2]);

  f = where == 0 ? &src.fault : where == 1 ? &mid.fault : &sink.fault;
  f->at = k;
  f->code = fail_codes[where];
  for (int i = 0; i < where; i++)
    f->upstream[f->nupstream++] = st[i];
  /* At the last chunk, let every stage upstream finish first: then their
   * status is known to be 0. */
  f->wait_upstream = last;

  ck_assert_int_eq(sl_pipeline_chain(p, st[0], st[1], st[2], NULL), 0);
  threads_before = pu_thread_count();
  ck_assert_int_gt(threads_before, 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  rc = sl_pipeline_wait(p);

  ck_assert_int_eq(atomic_load(&f->fired), 1);
  ck_assert_msg(rc == fail_codes[where], "wait returned %s, want %s",
                sl_err_name(rc), sl_err_name(fail_codes[where]));
  ck_assert_int_eq(sl_pipeline_wait(p), rc); /* again: the same */
  snprintf(want, sizeof want, "%s: boom at %ld", fail_names[where],
           k == PU_AT_END ? FAIL_CHUNKS : k);
  ck_assert_ptr_nonnull(sl_pipeline_error(p));
  ck_assert_str_eq(sl_pipeline_error(p), want);

  /* The failing stage has its code. Downstream of it nothing can have
   * finished (it never closed its output): SL_ECANCELED. Upstream, a stage
   * that finished before the failure (its output was closed when the fault
   * fired) ended well, so 0; one not seen finished was cancelled, or
   * finished in the moment between that look and the failure: either. */
  for (int i = 0; i < 3; i++) {
    int s = sl_stage_status(st[i]);
    sl_stage_stats ss;
    ck_assert_int_eq(sl_pipeline_stage_stats(p, (size_t)i, &ss), 0);
    ck_assert_int_eq(ss.status, s);
    ck_assert_int_eq(ss.running, 0);
    if (i == where)
      ck_assert_int_eq(s, fail_codes[where]);
    else if (i > where)
      ck_assert_msg(s == SL_ECANCELED, "stage %s: %s, want SL_ECANCELED",
                    fail_names[i], sl_err_name(s));
    else if (f->upstream_closed[i])
      ck_assert_msg(s == 0, "stage %s finished before the failure: %s, want 0",
                    fail_names[i], sl_err_name(s));
    else
      ck_assert_msg(s == SL_ECANCELED || s == 0, "stage %s: %s", fail_names[i],
                    sl_err_name(s));
  }
  if (last)
    for (int i = 0; i < where; i++)
      ck_assert(f->upstream_closed[i]);

  /* What reached the sink is a prefix of the input, and exactly the
   * chunks before k when the sink is the one failing. */
  ck_assert(pu_is_prefix(sink.got.p, sink.got.len, data, len));
  if (where == 2) {
    size_t before = 0;
    for (long i = 0; i < (k == PU_AT_END ? FAIL_CHUNKS : k); i++)
      before += sizes[i % 5];
    ck_assert_uint_eq(sink.got.len, before);
  }
  /* final only when the sink itself fails in it; flush when mid fails in
   * it, or when the sink fails once mid has finished (at the last chunk it
   * waited for that; earlier it may or may not have happened). */
  ck_assert_int_eq(sink.final_calls, where == 2 && k == PU_AT_END ? 1 : 0);
  if (where == 0 || (where == 1 && k != PU_AT_END))
    ck_assert_int_eq(mid.flush_calls, 0);
  else if (where == 1 || k == PU_AT_END || last)
    ck_assert_int_eq(mid.flush_calls, 1);
  else
    ck_assert_int_le(mid.flush_calls, 1);

  /* Every buffer is back in the pool, every thread is gone. */
  ck_assert_uint_eq(pu_pool_stats(p).outstanding, 0);
  ck_assert_int_eq(pu_threads_left(threads_before), 0);

  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(pu_destroyed(ctxs[i]), 0);
  sl_pipeline_free(p);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(pu_destroyed(ctxs[i]), 1);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* The first message per failure is the one reported, and it is cut at 255
 * bytes. */
typedef struct msgxf {
  pu_common c;
  const char *first;
} msgxf;

static int msgxf_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  msgxf *m = ctx;

  sl_buf_unref(in);
  sl_stage_set_error(stage, "%s", m->first);
  sl_stage_set_error(stage, "a later message");
  return SL_EDATA;
}

static int run_message(const char *first, char *out, size_t outsz) {
  static const size_t sizes[] = {10};
  unsigned char data[10] = "abcdefghij";
  sl_pipeline *p = NULL;
  pu_src src;
  msgxf m;
  pu_sink sink;
  sl_stage_ops ops = {.transform = msgxf_transform, .destroy = pu_destroy};
  sl_stage *s0, *s1 = NULL, *s2;
  int rc;

  pu_src_init(&src, data, sizeof data, sizes, 1);
  pu_common_init(&m.c);
  m.first = first;
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("src", &src);
  ck_assert_int_eq(sl_stage_new(&s1, "mid", &ops, &m), 0);
  s2 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1 && s2);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  rc = sl_pipeline_wait(p);
  ck_assert_ptr_nonnull(sl_pipeline_error(p));
  snprintf(out, outsz, "%s", sl_pipeline_error(p));
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  return rc;
}

START_TEST(test_error_first_message_kept) {
  char msg[1024];

  ck_assert_int_eq(run_message("the first message", msg, sizeof msg), SL_EDATA);
  ck_assert_str_eq(msg, "mid: the first message");
}
END_TEST

START_TEST(test_error_message_truncated) {
  char longmsg[400], msg[1024];

  memset(longmsg, 'x', sizeof longmsg - 1);
  longmsg[sizeof longmsg - 1] = '\0';
  ck_assert_int_eq(run_message(longmsg, msg, sizeof msg), SL_EDATA);
  ck_assert_uint_eq(strlen(msg), strlen("mid: ") + 255);
  ck_assert(strncmp(msg, "mid: xxxx", 9) == 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * The finished callback
 * ---------------------------------------------------------------------- */

/* _i: 0 success, 1 failure in the sink, 2 cancel once the sink has seen
 * chunks of an endless source. */
START_TEST(test_finished_callback_once) {
  static const size_t sizes[] = {100, 1, 0, 3000};
  const int mode = _i;
  unsigned char *data = pu_pattern(50000, 3);
  sl_pipeline *p = NULL;
  pu_src src;
  pu_sink sink;
  pu_finished fin;
  sl_stage *s0, *s1;
  int rc;

  pu_src_init(&src, data, 50000, sizes, 4);
  src.forever = mode == 2;
  pu_sink_init(&sink);
  if (mode == 1) {
    sink.fault.at = 3;
    sink.fault.code = SL_EPIPE;
  }
  pu_finished_init(&fin);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("src", &src);
  s1 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &fin), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  if (mode == 2) {
    ck_assert_int_ge(pu_sink_wait_chunks(&sink, 10), 10);
    sl_pipeline_cancel(p);
  }
  rc = sl_pipeline_wait(p);
  ck_assert_int_eq(rc, mode == 0 ? 0 : mode == 1 ? SL_EPIPE : SL_ECANCELED);
  ck_assert_int_eq(atomic_load(&fin.calls), 1);
  ck_assert_int_eq(atomic_load(&fin.status), rc);
  ck_assert_int_eq(sl_pipeline_wait(p), rc);
  sl_pipeline_free(p);
  ck_assert_int_eq(atomic_load(&fin.calls), 1);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* The callback runs once every stage thread has ended: the pipeline has
 * finished, so a cancel from the callback (allowed: any thread, stage
 * threads included) must change nothing, and wait returns the status the
 * callback was given. */
START_TEST(test_finished_cancel_from_callback_is_noop) {
  static const size_t sizes[] = {100};
  unsigned char *data = pu_pattern(1000, 3);
  sl_pipeline *p = NULL;
  pu_src src;
  pu_sink sink;
  pu_finished fin;
  sl_stage *s0, *s1;
  int rc;

  pu_src_init(&src, data, 1000, sizes, 1);
  pu_sink_init(&sink);
  pu_finished_init(&fin);
  fin.cancel_in_callback = true;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("src", &src);
  s1 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &fin), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  rc = sl_pipeline_wait(p);
  ck_assert_int_eq(atomic_load(&fin.calls), 1);
  ck_assert_int_eq(atomic_load(&fin.status), 0);
  ck_assert_msg(rc == 0, "wait returned %s after the callback was given 0",
                sl_err_name(rc));
  ck_assert_ptr_null(sl_pipeline_error(p));
  ck_assert_int_eq(sl_stage_status(s0), 0);
  ck_assert_int_eq(sl_stage_status(s1), 0);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* Several threads may wait at once: each gets the same status. */
typedef struct waiter {
  sl_pipeline *p;
  int rc;
} waiter;

static void *waiter_main(void *arg) {
  waiter *w = arg;

  w->rc = sl_pipeline_wait(w->p);
  return NULL;
}

START_TEST(test_wait_from_several_threads) {
  static const size_t sizes[] = {100, 1, 3000};
  unsigned char *data = pu_pattern(200000, 3);
  sl_pipeline *p = NULL;
  pu_src src;
  pu_sink sink;
  pu_finished fin;
  sl_stage *s0, *s1;
  waiter w[3];
  pthread_t t[3];

  pu_src_init(&src, data, 200000, sizes, 3);
  pu_sink_init(&sink);
  sink.fault.at = 40;
  sink.fault.code = SL_EPIPE;
  pu_sink_hold(&sink);
  pu_finished_init(&fin);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("src", &src);
  s1 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &fin), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  for (int i = 0; i < 3; i++) {
    w[i].p = p;
    w[i].rc = 1;
    ck_assert_int_eq(pthread_create(&t[i], NULL, waiter_main, &w[i]), 0);
  }
  /* The waiters are in (or about to be in) wait while the sink is held;
   * then let it fail. */
  pu_sink_wait_at_gate(&sink);
  pu_sink_release(&sink);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EPIPE);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    ck_assert_int_eq(w[i].rc, SL_EPIPE);
  }
  ck_assert_int_eq(atomic_load(&fin.calls), 1);
  ck_assert_int_eq(atomic_load(&fin.status), SL_EPIPE);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&src), 1);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancellation
 * ---------------------------------------------------------------------- */

typedef struct canceller {
  sl_pipeline *p;
  pu_sink *sink;
  long target;        /* chunks the sink must have seen first */
  unsigned long spin; /* then this much work */
} canceller;

static void *canceller_main(void *arg) {
  canceller *c = arg;

  if (c->target > 0)
    pu_sink_wait_chunks(c->sink, c->target);
  pu_spin(c->spin);
  sl_pipeline_cancel(c->p);
  return NULL;
}

enum {
  CANCEL_BEFORE_START,
  CANCEL_RACING_START,
  CANCEL_AFTER_CHUNKS,
  CANCEL_AFTER_FINISH,
  CANCEL_MODES
};

START_TEST(test_cancel_stress) {
  static const size_t sizes[] = {64, 1, 500, 0, 4096, 3};
  const long iterations = test_iterations("SL_TEST_CANCELS", 1000);
  const size_t dlen = 20000;
  unsigned char *data = pu_pattern(dlen, 11);
  uint64_t rng = 0x5eed;
  long seen[CANCEL_MODES][2] = {{0}};

  ck_assert_ptr_nonnull(data);
  for (long it = 0; it < iterations; it++) {
    uint64_t r = test_rand(&rng);
    int mode = (int)(r % CANCEL_MODES);
    bool finite = mode == CANCEL_AFTER_FINISH || (r >> 8) % 3 == 0;
    size_t len = finite ? (size_t)((r >> 16) % dlen) : dlen;
    bool with_xf = (r >> 32) & 1;
    sl_pipeline_opts o = {.hwm = 4096};
    sl_pipeline *p = NULL;
    pu_src src;
    pu_xf xf;
    pu_sink sink;
    pu_finished fin;
    sl_stage *st[3];
    size_t n = 0;
    canceller c = {0};
    pthread_t t;
    bool thread = false;
    int rc;

    pu_src_init(&src, data, len, sizes, NSIZES(sizes));
    src.forever = !finite;
    pu_xf_init(&xf, PU_IDENTITY);
    pu_sink_init(&sink);
    pu_finished_init(&fin);
    fin.sink = &sink;
    ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
    st[n++] = pu_src_stage("src", &src);
    if (with_xf)
      st[n++] = pu_xf_stage("xf", &xf, false);
    st[n++] = pu_sink_stage("sink", &sink);
    for (size_t i = 0; i < n; i++)
      ck_assert_ptr_nonnull(st[i]);
    ck_assert_int_eq(sl_pipeline_chainv(p, st, n), 0);
    ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &fin), 0);

    c.p = p;
    c.sink = &sink;
    c.spin = (unsigned long)((r >> 40) % 20000);
    switch (mode) {
    case CANCEL_BEFORE_START:
      sl_pipeline_cancel(p);
      ck_assert_int_eq(sl_pipeline_start(p), 0);
      break;
    case CANCEL_RACING_START: /* the canceller may beat start */
      c.target = 0;
      ck_assert_int_eq(pthread_create(&t, NULL, canceller_main, &c), 0);
      thread = true;
      ck_assert_int_eq(sl_pipeline_start(p), 0);
      break;
    case CANCEL_AFTER_CHUNKS:
      c.target = 1 + (long)((r >> 24) % 64);
      ck_assert_int_eq(sl_pipeline_start(p), 0);
      ck_assert_int_eq(pthread_create(&t, NULL, canceller_main, &c), 0);
      thread = true;
      break;
    default:
      ck_assert_int_eq(sl_pipeline_start(p), 0);
      ck_assert_int_eq(sl_pipeline_wait(p), 0);
      sl_pipeline_cancel(p);
      break;
    }
    rc = sl_pipeline_wait(p);
    if (thread)
      ck_assert_int_eq(pthread_join(t, NULL), 0);

    long planned = pu_plan_chunks(len, sizes, NSIZES(sizes), NULL);
    if (mode == CANCEL_BEFORE_START || !finite)
      ck_assert_msg(rc == SL_ECANCELED, "iteration %ld mode %d: %s", it, mode,
                    sl_err_name(rc));
    else if (mode == CANCEL_AFTER_FINISH)
      ck_assert_msg(rc == 0, "iteration %ld: cancel after finish gave %s", it,
                    sl_err_name(rc));
    else
      ck_assert_msg(rc == 0 || rc == SL_ECANCELED, "iteration %ld: %s", it,
                    sl_err_name(rc));
    if (rc == 0) {
      ck_assert_ptr_null(sl_pipeline_error(p));
      ck_assert_int_eq(sink.final_calls, 1);
      ck_assert_int_eq(sink.chunks, planned);
      ck_assert_uint_eq(sink.got.len, len);
    } else {
      ck_assert_ptr_nonnull(sl_pipeline_error(p));
    }
    /* What arrived is the start of the stream (an endless source repeats
     * data: compare its first round). */
    if (src.forever)
      ck_assert(pu_is_prefix(
          sink.got.p, sink.got.len < dlen ? sink.got.len : dlen, data, dlen));
    else
      ck_assert(pu_is_prefix(sink.got.p, sink.got.len, data, len));
    ck_assert_int_eq(atomic_load(&fin.calls), 1);
    ck_assert_msg(atomic_load(&fin.status) == rc,
                  "iteration %ld: callback got %s, wait %s", it,
                  sl_err_name(atomic_load(&fin.status)), sl_err_name(rc));
    ck_assert_uint_eq(pu_pool_stats(p).outstanding, 0);
    sl_pipeline_free(p);
    ck_assert_int_eq(pu_destroyed(&src), 1);
    ck_assert_int_eq(pu_destroyed(&xf), with_xf ? 1 : 0);
    ck_assert_int_eq(pu_destroyed(&sink), 1);
    pu_sink_fini(&sink);
    seen[mode][rc == 0]++;
  }
  /* With the default count every mode ran and some cancels lost the race
   * against a finite stream (the point of making the source finite). */
  if (iterations >= 1000) {
    for (int m = 0; m < CANCEL_MODES; m++)
      ck_assert_int_gt(seen[m][0] + seen[m][1], 0);
    ck_assert_int_gt(
        seen[CANCEL_AFTER_CHUNKS][1] + seen[CANCEL_RACING_START][1], 0);
  }
  free(data);
}
END_TEST

/* Cancelled before start, the pipeline starts already cancelled: start
 * succeeds, the stream never ends properly, wait says SL_ECANCELED. */
START_TEST(test_cancel_before_start) {
  static const size_t sizes[] = {10};
  unsigned char data[100] = {0};
  sl_pipeline *p = NULL;
  pu_src src;
  pu_sink sink;
  pu_finished fin;
  sl_stage *s0, *s1;

  pu_src_init(&src, data, sizeof data, sizes, 1);
  pu_sink_init(&sink);
  pu_finished_init(&fin);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("src", &src);
  s1 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &fin), 0);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(atomic_load(&fin.calls), 1);
  ck_assert_int_eq(atomic_load(&fin.status), SL_ECANCELED);
  ck_assert_int_eq(sink.final_calls, 0);
  ck_assert_int_eq(sl_stage_status(s0), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(s1), SL_ECANCELED);
  ck_assert_ptr_nonnull(sl_pipeline_error(p));
  ck_assert_str_eq(sl_pipeline_error(p), sl_strerror(SL_ECANCELED));
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&src), 1);
  ck_assert_int_eq(pu_destroyed(&sink), 1);
  pu_sink_fini(&sink);
}
END_TEST

/* A source whose read keeps returning 0 without pushing (waiting for
 * input that does not come) never meets a ring: the framework must stop
 * calling it once the pipeline is cancelled. */
typedef struct idle_src {
  pu_common c;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long calls;
} idle_src;

static int idle_read(sl_stage *stage, void *ctx) {
  idle_src *s = ctx;

  (void)stage;
  pthread_mutex_lock(&s->mu);
  s->calls++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

START_TEST(test_cancel_idle_source) {
  static const sl_stage_ops ops = {.read = idle_read, .destroy = pu_destroy};
  sl_pipeline *p = NULL;
  idle_src src;
  pu_sink sink;
  sl_stage *s0 = NULL, *s1;

  pu_common_init(&src.c);
  pthread_mutex_init(&src.mu, NULL);
  pthread_cond_init(&src.cv, NULL);
  src.calls = 0;
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&s0, "idle", &ops, &src), 0);
  s1 = pu_sink_stage("sink", &sink);
  ck_assert_ptr_nonnull(s1);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pthread_mutex_lock(&src.mu);
  while (src.calls < 100)
    pthread_cond_wait(&src.cv, &src.mu);
  pthread_mutex_unlock(&src.mu);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(s0), SL_ECANCELED);
  ck_assert_int_eq(sink.chunks, 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&src), 1);
  pthread_cond_destroy(&src.cv);
  pthread_mutex_destroy(&src.mu);
  pu_sink_fini(&sink);
}
END_TEST

/* Cancel while the source is paused on a full ring and the sink is held:
 * every stage ends SL_ECANCELED, nothing is left. */
START_TEST(test_cancel_while_paused) {
  static const size_t sizes[] = {1000};
  unsigned char *data = pu_pattern(4096, 5);
  sl_pipeline_opts o = {.hwm = 4096};
  sl_pipeline *p = NULL;
  pu_src src;
  pu_sink sink;
  sl_stage *s0, *s1;
  int threads_before;

  pu_src_init(&src, data, 4096, sizes, 1);
  src.forever = true;
  pu_sink_init(&sink);
  pu_sink_hold(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  s0 = pu_src_stage("src", &src);
  s1 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  threads_before = pu_thread_count();
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pu_sink_wait_at_gate(&sink);
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(s0), SL__WRITER), 0);
  ck_assert_int_eq(sl_stage_cancelled(s0), 0);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_stage_cancelled(s0), 1);
  ck_assert_int_eq(sl_stage_cancelled(s1), 1);
  pu_sink_release(&sink);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(s0), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(s1), SL_ECANCELED);
  ck_assert_ptr_nonnull(sl_pipeline_error(p));
  ck_assert_str_eq(sl_pipeline_error(p), sl_strerror(SL_ECANCELED));
  ck_assert_int_eq(sink.final_calls, 0);
  ck_assert_uint_eq(pu_pool_stats(p).outstanding, 0);
  ck_assert_int_eq(pu_threads_left(threads_before), 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&src), 1);
  ck_assert_int_eq(pu_destroyed(&sink), 1);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Duplex in the middle
 * ---------------------------------------------------------------------- */

#define DX_CAP 8

/* The write side queues chunks (at most DX_CAP), the read side emits them;
 * final marks the end. The two sides share only this queue, guarded by its
 * own lock. A side waiting on the queue cannot be woken by the framework,
 * so it polls sl_stage_cancelled between bounded waits. */
typedef struct dx {
  pu_common c;  /* destroy, and the read side's thread */
  pu_common cw; /* the write side's thread */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  sl_buf *q[DX_CAP];
  size_t head, count;
  bool eof;
  int final_calls;
  long written, emitted;
  pthread_t rd, wr;
  bool cancel_seen;
} dx;

static void dx_timed_wait(dx *d) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += 20 * 1000 * 1000;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(&d->cv, &d->mu, &ts);
}

static int dx_write(sl_stage *stage, void *ctx, sl_buf *in) {
  dx *d = ctx;

  pu_common_note(&d->cw);
  d->wr = pthread_self();
  pthread_mutex_lock(&d->mu);
  while (d->count == DX_CAP) {
    if (sl_stage_cancelled(stage)) {
      d->cancel_seen = true;
      pthread_mutex_unlock(&d->mu);
      sl_buf_unref(in);
      return SL_ECANCELED;
    }
    dx_timed_wait(d);
  }
  d->q[(d->head + d->count++) % DX_CAP] = in;
  d->written++;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
  return 0;
}

static int dx_final(sl_stage *stage, void *ctx) {
  dx *d = ctx;

  (void)stage;
  pu_common_note(&d->cw);
  pthread_mutex_lock(&d->mu);
  d->eof = true;
  d->final_calls++;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
  return 0;
}

static int dx_read(sl_stage *stage, void *ctx) {
  dx *d = ctx;
  sl_buf *b;

  pu_common_note(&d->c);
  d->rd = pthread_self();
  pthread_mutex_lock(&d->mu);
  while (d->count == 0 && !d->eof) {
    if (sl_stage_cancelled(stage)) {
      d->cancel_seen = true;
      pthread_mutex_unlock(&d->mu);
      return SL_ECANCELED;
    }
    dx_timed_wait(d);
  }
  if (d->count == 0) {
    pthread_mutex_unlock(&d->mu);
    return SL_EOF;
  }
  b = d->q[d->head];
  d->head = (d->head + 1) % DX_CAP;
  d->count--;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
  d->emitted++;
  return sl_stage_push(stage, b);
}

static void dx_destroy(void *ctx) {
  dx *d = ctx;

  while (d->count) {
    sl_buf_unref(d->q[d->head]);
    d->head = (d->head + 1) % DX_CAP;
    d->count--;
  }
  pu_destroy(ctx);
}

static sl_stage *dx_stage(const char *name, dx *d) {
  sl_stage_ops ops = {.read = dx_read,
                      .write = dx_write,
                      .final = dx_final,
                      .destroy = dx_destroy};
  sl_stage *st = NULL;

  memset(d, 0, sizeof *d);
  pu_common_init(&d->c);
  pu_common_init(&d->cw);
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->cv, NULL);
  return sl_stage_new(&st, name, &ops, d) == 0 ? st : NULL;
}

static void dx_fini(dx *d) {
  pthread_cond_destroy(&d->cv);
  pthread_mutex_destroy(&d->mu);
}

START_TEST(test_duplex_in_middle) {
  const size_t len = 300001;
  unsigned char *data = pu_pattern(len, 9);
  sl_pipeline_opts o = {.hwm = 16384};
  sl_pipeline *p = NULL;
  pu_src src;
  pu_xf up, split;
  dx d;
  pu_sink sink;
  sl_stage *st[5];
  sl_stage_stats ss;

  pu_src_init(&src, data, len, sizes_mixed, NSIZES(sizes_mixed));
  pu_xf_init(&up, PU_UPPER);
  pu_xf_init(&split, PU_SPLIT);
  split.split = 999;
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  st[0] = pu_src_stage("src", &src);
  st[1] = pu_xf_stage("upper", &up, false);
  st[2] = dx_stage("dx", &d);
  st[3] = pu_xf_stage("split", &split, false);
  st[4] = pu_sink_stage("sink", &sink);
  for (int i = 0; i < 5; i++)
    ck_assert_ptr_nonnull(st[i]);
  ck_assert_int_eq(sl_pipeline_chainv(p, st, 5), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);

  ck_assert_uint_eq(sink.got.len, len);
  for (size_t i = 0; i < len; i++)
    if (sink.got.p[i] != pu_upper(data[i]))
      ck_abort_msg("byte %zu differs", i);
  ck_assert_int_eq(d.final_calls, 1);
  ck_assert_int_eq(d.written, src.chunks);
  ck_assert_int_eq(d.emitted, src.chunks);
  ck_assert_int_eq(split.chunks, src.chunks);
  /* Two threads, one per direction. */
  ck_assert(!pthread_equal(d.rd, d.wr));
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 2, &ss), 0);
  ck_assert_int_eq(ss.chunks_in, src.chunks);
  ck_assert_int_eq(ss.chunks_out, src.chunks);
  ck_assert_int_eq(ss.bytes_in, len);
  ck_assert_int_eq(ss.bytes_out, len);
  ck_assert_int_eq(sl_stage_status(st[2]), 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&d), 1);
  dx_fini(&d);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* A cancel reaches a duplex whose sides wait on their own queue: they see
 * sl_stage_cancelled and end. */
START_TEST(test_duplex_cancel) {
  static const size_t sizes[] = {512};
  unsigned char *data = pu_pattern(4096, 1);
  sl_pipeline_opts o = {.hwm = 4096};
  sl_pipeline *p = NULL;
  pu_src src;
  dx d;
  pu_sink sink;
  sl_stage *s0, *s1, *s2;

  pu_src_init(&src, data, 4096, sizes, 1);
  src.forever = true;
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  s0 = pu_src_stage("src", &src);
  s1 = dx_stage("dx", &d);
  s2 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1 && s2);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_ge(pu_sink_wait_chunks(&sink, 50), 50);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(s1), SL_ECANCELED);
  ck_assert_int_eq(d.final_calls, 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&d), 1);
  ck_assert_int_eq(pu_destroyed(&src), 1);
  ck_assert_int_eq(pu_destroyed(&sink), 1);
  dx_fini(&d);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Chain and start validation
 * ---------------------------------------------------------------------- */

/* Three fresh stages the chain tests misuse: two sources, a transform, two
 * sinks, with the data a correct chain of them would carry. */
typedef struct kit {
  unsigned char data[3000];
  pu_src src, src2;
  pu_xf xf;
  pu_sink sink, sink2;
  sl_stage *s_src, *s_src2, *s_xf, *s_sink, *s_sink2;
} kit;

static const size_t kit_sizes[] = {100, 0, 7};

static void kit_init(kit *k) {
  for (size_t i = 0; i < sizeof k->data; i++)
    k->data[i] = test_pattern_byte(4, i);
  pu_src_init(&k->src, k->data, sizeof k->data, kit_sizes, 3);
  pu_src_init(&k->src2, k->data, sizeof k->data, kit_sizes, 3);
  pu_xf_init(&k->xf, PU_IDENTITY);
  pu_sink_init(&k->sink);
  pu_sink_init(&k->sink2);
  k->s_src = pu_src_stage("src", &k->src);
  k->s_src2 = pu_src_stage("src2", &k->src2);
  k->s_xf = pu_xf_stage("xf", &k->xf, false);
  k->s_sink = pu_sink_stage("sink", &k->sink);
  k->s_sink2 = pu_sink_stage("sink2", &k->sink2);
  ck_assert(k->s_src && k->s_src2 && k->s_xf && k->s_sink && k->s_sink2);
}

/* The stages are still the caller's: free them, destroy runs once each. */
static void kit_free_all(kit *k) {
  sl_stage_free(k->s_src);
  sl_stage_free(k->s_src2);
  sl_stage_free(k->s_xf);
  sl_stage_free(k->s_sink);
  sl_stage_free(k->s_sink2);
  ck_assert_int_eq(pu_destroyed(&k->src), 1);
  ck_assert_int_eq(pu_destroyed(&k->src2), 1);
  ck_assert_int_eq(pu_destroyed(&k->xf), 1);
  ck_assert_int_eq(pu_destroyed(&k->sink), 1);
  ck_assert_int_eq(pu_destroyed(&k->sink2), 1);
  pu_sink_fini(&k->sink);
  pu_sink_fini(&k->sink2);
}

/* After a rejected chain, p is as it was: empty, and freeing it touches no
 * stage. Then the caller frees the stages. */
static void expect_rejected(sl_pipeline *p, kit *k, int rc) {
  ck_assert_msg(rc == SL_EINVAL, "chain returned %s, want SL_EINVAL",
                sl_err_name(rc));
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 0);
  ck_assert_ptr_null(sl_pipeline_stage(p, 0));
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&k->src), 0);
  ck_assert_int_eq(pu_destroyed(&k->xf), 0);
  ck_assert_int_eq(pu_destroyed(&k->sink), 0);
  kit_free_all(k);
}

START_TEST(test_chain_rejects_null) {
  kit k;
  sl_pipeline *p = NULL;
  sl_stage *v[3];

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(NULL, k.s_src, k.s_sink, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(p, NULL), SL_EINVAL);
  v[0] = k.s_src;
  v[1] = NULL;
  v[2] = k.s_sink;
  ck_assert_int_eq(sl_pipeline_chainv(p, v, 3), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chainv(p, NULL, 2), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chainv(p, v, 0), SL_EINVAL);
  v[1] = k.s_sink;
  v[2] = NULL;
  expect_rejected(p, &k, sl_pipeline_chainv(p, v + 1, 2));
}
END_TEST

/* A NULL stage anywhere in the list (a constructor that failed) is an
 * error, never the end of a shorter list: nothing is built. So is a list
 * that does not end with NULL. And any number of stages is taken. */
START_TEST(test_chain_null_stage_never_shortens) {
  kit k;
  sl_pipeline *p = NULL;
  sl_stage *failed = NULL; /* what a failed sl_*_new leaves */

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  /* The README's gzip program with its output missing: in -> gz -> NULL
   * used to build in -> gz and report success. */
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_xf, failed, NULL),
                   SL_EINVAL);
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, failed, k.s_sink, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(p, failed, k.s_xf, k.s_sink, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(p, failed, NULL), SL_EINVAL);
  /* No NULL at the end: it could not be told from a failed last stage. */
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_sink), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain_list(p, NULL, 3), SL_EINVAL);
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 0);
  /* The same stages, given right, run. */
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_xf, k.s_sink, NULL), 0);
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 3);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(k.sink.got.len, sizeof k.data);
  ck_assert_int_eq(sl_pipeline_free(p), 0);
  sl_stage_free(k.s_src2);
  sl_stage_free(k.s_sink2);
  pu_sink_fini(&k.sink);
  pu_sink_fini(&k.sink2);
}
END_TEST

/* The macro takes more stages than the old function's 64. */
START_TEST(test_chain_many_stages) {
  static const size_t sizes[] = {100};
  unsigned char data[1000];
  sl_pipeline *p = NULL;
  pu_src src;
  pu_xf xf[70];
  pu_sink sink;
  sl_stage *x[70];

  memset(data, 'q', sizeof data);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&src, data, sizeof data, sizes, 1);
  pu_sink_init(&sink);
  for (int i = 0; i < 70; i++) {
    pu_xf_init(&xf[i], PU_IDENTITY);
    x[i] = pu_xf_stage("x", &xf[i], false);
    ck_assert_ptr_nonnull(x[i]);
  }
#define X10(b)                                                                \
  x[b], x[b + 1], x[b + 2], x[b + 3], x[b + 4], x[b + 5], x[b + 6], x[b + 7], \
      x[b + 8], x[b + 9]
  ck_assert_int_eq(sl_pipeline_chain(p, pu_src_stage("src", &src), X10(0),
                                     X10(10), X10(20), X10(30), X10(40),
                                     X10(50), X10(60),
                                     pu_sink_stage("sink", &sink), NULL),
                   0);
#undef X10
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 72);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(sink.got.len, sizeof data);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
}
END_TEST

/* After a refused start or wait, sl_pipeline_error says why: a program
 * that prints it on any non-zero return never prints "(null)". */
START_TEST(test_error_says_why_refused) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EINVAL);
  ck_assert_str_eq(sl_pipeline_error(p), "wait: the pipeline was not started");
  ck_assert_int_eq(sl_pipeline_start(p), SL_EINVAL);
  ck_assert_str_eq(sl_pipeline_error(p), "start: the pipeline has no stage");
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_xf, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), SL_EINVAL);
  ck_assert_str_eq(sl_pipeline_error(p),
                   "start: a stage that produces has no consumer");
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_xf, k.s_sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p)); /* a start that went through */
  ck_assert_int_eq(sl_pipeline_start(p), SL_EBUSY);
  ck_assert_str_eq(sl_pipeline_error(p), "start: started before");
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);
  sl_stage_free(k.s_src2);
  sl_stage_free(k.s_sink2);
  pu_sink_fini(&k.sink);
  pu_sink_fini(&k.sink2);
}
END_TEST

START_TEST(test_chain_rejects_sink_first) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  expect_rejected(p, &k,
                  sl_pipeline_chain(p, k.s_sink, k.s_xf, k.s_sink2, NULL));
}
END_TEST

START_TEST(test_chain_rejects_source_last) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  expect_rejected(p, &k, sl_pipeline_chain(p, k.s_src, k.s_xf, k.s_src2, NULL));
}
END_TEST

START_TEST(test_chain_rejects_same_stage_twice) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(
      sl_pipeline_chain(p, k.s_src, k.s_xf, k.s_xf, k.s_sink, NULL), SL_EINVAL);
  expect_rejected(p, &k, sl_pipeline_chain(p, k.s_xf, k.s_xf, NULL));
}
END_TEST

/* A chain of one fresh stage that does not both produce and consume leaves
 * a producer without a consumer (or the reverse): the kinds do not fit. */
START_TEST(test_chain_rejects_lone_source_or_sink) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_sink, NULL), SL_EINVAL);
  expect_rejected(p, &k, sl_pipeline_chain(p, k.s_src, NULL));
}
END_TEST

START_TEST(test_chain_rejects_stage_of_other_pipeline) {
  kit k;
  sl_pipeline *p1 = NULL, *p2 = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_new(&p2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p1, k.s_src, k.s_sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p2, k.s_src2, k.s_xf, k.s_sink, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(p2, k.s_src, k.s_sink2, NULL), SL_EINVAL);
  ck_assert_uint_eq(sl_pipeline_stage_count(p2), 0);
  ck_assert_uint_eq(sl_pipeline_stage_count(p1), 2);
  sl_pipeline_free(p2);
  ck_assert_int_eq(pu_destroyed(&k.src2), 0);
  ck_assert_int_eq(pu_destroyed(&k.xf), 0);
  /* p1 owns src and sink; the rest are still ours. */
  sl_pipeline_free(p1);
  ck_assert_int_eq(pu_destroyed(&k.src), 1);
  ck_assert_int_eq(pu_destroyed(&k.sink), 1);
  sl_stage_free(k.s_src2);
  sl_stage_free(k.s_xf);
  sl_stage_free(k.s_sink2);
  ck_assert_int_eq(pu_destroyed(&k.src2), 1);
  ck_assert_int_eq(pu_destroyed(&k.xf), 1);
  ck_assert_int_eq(pu_destroyed(&k.sink2), 1);
  ck_assert_int_eq(pu_destroyed(&k.src), 1);
  ck_assert_int_eq(pu_destroyed(&k.sink), 1);
  pu_sink_fini(&k.sink);
  pu_sink_fini(&k.sink2);
}
END_TEST

/* Rejected chains leave no link behind: the same stages then chain and
 * run correctly. */
START_TEST(test_chain_rejection_leaves_stages_usable) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_xf, k.s_src2, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_sink2, k.s_xf, k.s_sink, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_xf, k.s_xf, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_xf, k.s_sink, NULL), 0);
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 3);
  ck_assert_ptr_eq(sl_pipeline_stage(p, 0), k.s_src);
  ck_assert_ptr_eq(sl_pipeline_stage(p, 1), k.s_xf);
  ck_assert_ptr_eq(sl_pipeline_stage(p, 2), k.s_sink);
  ck_assert_ptr_null(sl_pipeline_stage(p, 3));
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(k.sink.got.len, sizeof k.data);
  ck_assert(memcmp(k.sink.got.p, k.data, sizeof k.data) == 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&k.src), 1);
  ck_assert_int_eq(pu_destroyed(&k.xf), 1);
  ck_assert_int_eq(pu_destroyed(&k.sink), 1);
  sl_stage_free(k.s_src2);
  sl_stage_free(k.s_sink2);
  ck_assert_int_eq(pu_destroyed(&k.src2), 1);
  ck_assert_int_eq(pu_destroyed(&k.sink2), 1);
  pu_sink_fini(&k.sink);
  pu_sink_fini(&k.sink2);
}
END_TEST

/* An incomplete graph does not start; chaining onto the stages already
 * added completes it. */
START_TEST(test_start_rejects_incomplete_graph) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), SL_EINVAL); /* no stage */
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_xf, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), SL_EINVAL); /* xf feeds nothing */
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EINVAL);  /* not started */
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_xf, k.s_sink, NULL), 0);
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 3);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(k.sink.got.len, sizeof k.data);
  ck_assert(memcmp(k.sink.got.p, k.data, sizeof k.data) == 0);
  sl_pipeline_free(p);
  sl_stage_free(k.s_src2);
  sl_stage_free(k.s_sink2);
  ck_assert_int_eq(pu_destroyed(&k.src), 1);
  ck_assert_int_eq(pu_destroyed(&k.xf), 1);
  ck_assert_int_eq(pu_destroyed(&k.sink), 1);
  pu_sink_fini(&k.sink);
  pu_sink_fini(&k.sink2);
}
END_TEST

START_TEST(test_start_twice_busy) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_start(p), SL_EBUSY);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src2, k.s_sink2, NULL), SL_EBUSY);
  ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, NULL), SL_EBUSY);
  ck_assert_int_eq(
      sl_stage_set_output(k.s_src, 4096, SL_LWM_DEFAULT, SL_RING_BYTES),
      SL_EBUSY);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(sl_pipeline_start(p), SL_EBUSY);
  ck_assert_uint_eq(k.sink.got.len, sizeof k.data);
  ck_assert_int_eq(k.src.calls > 0, 1);
  sl_pipeline_free(p);
  sl_stage_free(k.s_src2);
  sl_stage_free(k.s_xf);
  sl_stage_free(k.s_sink2);
  ck_assert_int_eq(pu_destroyed(&k.src), 1);
  ck_assert_int_eq(pu_destroyed(&k.sink), 1);
  ck_assert_int_eq(pu_destroyed(&k.src2), 1);
  pu_sink_fini(&k.sink);
  pu_sink_fini(&k.sink2);
}
END_TEST

START_TEST(test_wait_before_start_rejected) {
  kit k;
  sl_pipeline *p = NULL;

  kit_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(p, k.s_src, k.s_sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EINVAL);
  ck_assert_int_eq(k.src.calls, 0); /* nothing ran */
  sl_pipeline_free(p);
  ck_assert_int_eq(pu_destroyed(&k.src), 1);
  ck_assert_int_eq(pu_destroyed(&k.sink), 1);
  ck_assert_int_eq(k.sink.final_calls, 0);
  sl_stage_free(k.s_src2);
  sl_stage_free(k.s_xf);
  sl_stage_free(k.s_sink2);
  pu_sink_fini(&k.sink);
  pu_sink_fini(&k.sink2);
}
END_TEST

/* ------------------------------------------------------------------------
 * Stage threads: names and signal masks
 * ---------------------------------------------------------------------- */

/* "sl:" + name, cut to the 15 characters a thread name holds. */
static void expect_thread_name(const pu_common *c, const char *name) {
  char want[16];

  snprintf(want, sizeof want, "sl:%s", name);
  ck_assert(c->seen);
  ck_assert_int_eq(c->name_rc, 0);
  ck_assert_str_eq(c->thread_name, want);
}

START_TEST(test_thread_names) {
  static const size_t sizes[] = {10};
  unsigned char data[100] = {0};
  /* short, exactly 12 characters (15 with "sl:"), longer than fits */
  const char *n0 = "src", *n1 = "exactly12chr",
             *n2 = "a-transform-with-a-long-name", *n3 = "k";
  sl_pipeline *p = NULL;
  pu_src src;
  pu_xf a, b;
  pu_sink sink;
  sl_stage *s0, *s1, *s2, *s3;

  pu_src_init(&src, data, sizeof data, sizes, 1);
  pu_xf_init(&a, PU_IDENTITY);
  pu_xf_init(&b, PU_IDENTITY);
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage(n0, &src);
  s1 = pu_xf_stage(n1, &a, true);
  s2 = pu_xf_stage(n2, &b, false);
  s3 = pu_sink_stage(n3, &sink);
  ck_assert(s0 && s1 && s2 && s3);
  ck_assert_str_eq(sl_stage_name(s2), n2); /* the stage keeps it whole */
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, s3, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  expect_thread_name(&src.c, n0);
  expect_thread_name(&a.c, n1);
  ck_assert_str_eq(a.c.thread_name, "sl:exactly12chr");
  expect_thread_name(&b.c, n2);
  ck_assert_str_eq(b.c.thread_name, "sl:a-transform-");
  expect_thread_name(&sink.c, n3);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
}
END_TEST

/* Every stage thread carries its name by the time sl_pipeline_start
 * returns, not only once it has run: a monitor that lists the threads
 * right after start (the example server's --stats, ps, top -H) sees them
 * all. Thread creation and scheduling vary, so this looks many times
 * (SL_TEST_CANCELS: each round ends in a cancel). */
START_TEST(test_threads_named_when_start_returns) {
  static const size_t sizes[] = {10};
  unsigned char data[100] = {0};

  /* small rings: the source fills them in a few chunks and waits */
  const sl_pipeline_opts po = {.hwm = 4096};
  const long rounds = test_iterations("SL_TEST_CANCELS", 100);

  for (long round = 0; round < rounds; round++) {
    sl_pipeline *p = NULL;
    pu_src src;
    pu_xf xf;
    pu_sink sink;
    sl_stage *s0, *s1, *s2;
    int named = -1;

    pu_src_init(&src, data, sizeof data, sizes, 1);
    src.forever = true; /* it fills the rings and waits, never ends */
    pu_xf_init(&xf, PU_IDENTITY);
    pu_sink_init(&sink);
    pu_sink_hold(&sink); /* so does the sink, at its first chunk */
    ck_assert_int_eq(sl_pipeline_new(&p, &po), 0);
    s0 = pu_src_stage("src", &src);
    s1 = pu_xf_stage("xf", &xf, true);
    s2 = pu_sink_stage("sink", &sink);
    ck_assert(s0 && s1 && s2);
    ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
    ck_assert_int_eq(sl_pipeline_start(p), 0);
    ck_assert_int_ge(pu_thread_count_named(&named), 3);
    ck_assert_msg(named == 3, "round %ld: %d of 3 threads named", round, named);
    sl_pipeline_cancel(p);
    pu_sink_release(&sink);
    ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
    sl_pipeline_free(p);
    pu_sink_fini(&sink);
  }
}
END_TEST

/* Both sides of a duplex run on threads named after the stage. */
START_TEST(test_thread_names_duplex) {
  static const size_t sizes[] = {10};
  unsigned char data[100] = {0};
  sl_pipeline *p = NULL;
  pu_src src;
  dx d;
  pu_sink sink;
  sl_stage *s0, *s1, *s2;

  pu_src_init(&src, data, sizeof data, sizes, 1);
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("src", &src);
  s1 = dx_stage("duplex", &d);
  s2 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1 && s2);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert(d.c.seen && d.cw.seen);
  ck_assert_int_eq(d.c.name_rc, 0);
  ck_assert_int_eq(d.cw.name_rc, 0);
  ck_assert(strncmp(d.c.thread_name, "sl:duplex", 9) == 0);
  ck_assert(strncmp(d.cw.thread_name, "sl:duplex", 9) == 0);
  sl_pipeline_free(p);
  dx_fini(&d);
  pu_sink_fini(&sink);
}
END_TEST

/* Ops run with every async signal blocked, and start leaves the caller's
 * mask as it was. */
START_TEST(test_stage_threads_block_signals) {
  static const size_t sizes[] = {10};
  unsigned char data[100] = {0};
  sl_pipeline *p = NULL;
  pu_src src;
  pu_xf xf;
  pu_sink sink;
  sl_stage *s0, *s1, *s2;
  sigset_t before, after;

  pu_src_init(&src, data, sizeof data, sizes, 1);
  pu_xf_init(&xf, PU_IDENTITY);
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("src", &src);
  s1 = pu_xf_stage("xf", &xf, true);
  s2 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1 && s2);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &before), 0);
  ck_assert_int_eq(sigismember(&before, SIGUSR1), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &after), 0);
  ck_assert_int_eq(sigismember(&after, SIGUSR1), 0);
  ck_assert_int_eq(sigismember(&after, SIGINT), sigismember(&before, SIGINT));
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(src.c.signals_blocked, 1);
  ck_assert_int_eq(xf.c.signals_blocked, 1);
  ck_assert_int_eq(sink.c.signals_blocked, 1);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
}
END_TEST

/* ------------------------------------------------------------------------
 * Statistics
 * ---------------------------------------------------------------------- */

/* Builds src -> split(1000) -> sink over sizes_mixed; returns it started
 * and waited for. */
static sl_pipeline *run_stats(pu_src *src, pu_xf *xf, pu_sink *sink,
                              unsigned char *data, size_t len) {
  sl_pipeline *p = NULL;
  sl_stage *s0, *s1, *s2;

  pu_src_init(src, data, len, sizes_mixed, NSIZES(sizes_mixed));
  pu_xf_init(xf, PU_SPLIT);
  xf->split = 1000;
  xf->trailer = "[END]";
  pu_sink_init(sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  s0 = pu_src_stage("reader", src);
  s1 = pu_xf_stage("splitter", xf, true);
  s2 = pu_sink_stage("collector", sink);
  ck_assert(s0 && s1 && s2);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  return p;
}

START_TEST(test_stage_stats_exact) {
  const size_t len = 500000;
  unsigned char *data = pu_pattern(len, 2);
  pu_src src;
  pu_xf xf;
  pu_sink sink;
  sl_pipeline *p = run_stats(&src, &xf, &sink, data, len);
  sl_stage_stats st[3];
  long chunks = pu_plan_chunks(len, sizes_mixed, NSIZES(sizes_mixed), NULL);
  long pieces = 0;

  /* What the splitter must push: ceil(size / 1000) per chunk, one for an
   * empty chunk, one for the trailer. */
  for (size_t pos = 0, i = 0; pos < len; i++) {
    size_t n = sizes_mixed[i % NSIZES(sizes_mixed)];
    if (n > len - pos)
      n = len - pos;
    pieces += n == 0 ? 1 : (long)((n + 999) / 1000);
    pos += n;
  }
  pieces++;

  for (size_t i = 0; i < 3; i++) {
    ck_assert_int_eq(sl_pipeline_stage_stats(p, i, &st[i]), 0);
    ck_assert_int_eq(st[i].running, 0);
    ck_assert_int_eq(st[i].status, 0);
  }
  ck_assert_str_eq(st[0].name, "reader");
  ck_assert_str_eq(st[1].name, "splitter");
  ck_assert_str_eq(st[2].name, "collector");
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 3, &st[0]), SL_EINVAL);

  ck_assert_int_eq(st[0].chunks_in, 0);
  ck_assert_int_eq(st[0].bytes_in, 0);
  ck_assert_int_eq(st[0].chunks_out, chunks);
  ck_assert_int_eq(st[0].bytes_out, len);
  ck_assert_int_eq(st[1].chunks_in, chunks);
  ck_assert_int_eq(st[1].bytes_in, len);
  ck_assert_int_eq(st[1].chunks_out, pieces);
  ck_assert_int_eq(st[1].bytes_out, len + 5);
  ck_assert_int_eq(st[2].chunks_in, pieces);
  ck_assert_int_eq(st[2].bytes_in, len + 5);
  ck_assert_int_eq(st[2].chunks_out, 0);
  ck_assert_int_eq(st[2].bytes_out, 0);
  ck_assert_int_eq(sink.chunks, pieces);
  /* The rings agree with the stages. */
  sl_ring_stats r0 = pu_ring_stats(sl_stage_output(sl_pipeline_stage(p, 0)));
  ck_assert_int_eq(r0.chunks_in, chunks);
  ck_assert_int_eq(r0.chunks_out, chunks);
  ck_assert_int_eq(r0.bytes_in, len);
  ck_assert_ptr_null(sl_stage_output(sl_pipeline_stage(p, 2)));
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

START_TEST(test_stats_print_names_stages) {
  const size_t len = 100000;
  unsigned char *data = pu_pattern(len, 2);
  pu_src src;
  pu_xf xf;
  pu_sink sink;
  sl_pipeline *p = run_stats(&src, &xf, &sink, data, len);
  char *text = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&text, &size);

  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(sl_pipeline_stats_print(p, f), 0);
  ck_assert_int_eq(fclose(f), 0);
  ck_assert_ptr_nonnull(text);
  /* a row per stage, starting with its name */
  ck_assert_ptr_nonnull(strstr(text, "\nreader "));
  ck_assert_ptr_nonnull(strstr(text, "\nsplitter "));
  ck_assert_ptr_nonnull(strstr(text, "\ncollector "));
  ck_assert_int_eq(sl_pipeline_stats_print(p, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_stats_print(NULL, stderr), SL_EINVAL);
  free(text);
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

/* ------------------------------------------------------------------------
 * Thread sets: stage threads kept for reuse
 * ---------------------------------------------------------------------- */

/* Run src -> xf -> sink with the given names on p; the three contexts'
 * first-op records go to rec. Returns wait's code. */
static int run_named(sl_pipeline *p, const char *const names[3],
                     pu_common *rec[3], pu_fault **fault) {
  static const size_t sizes[] = {1000, 1, 70000};
  static unsigned char data[300000];
  static pu_src src;
  static pu_xf xf;
  static pu_sink sink;
  pu_src_init(&src, data, sizeof data, sizes, 3);
  pu_xf_init(&xf, PU_UPPER);
  pu_sink_init(&sink);
  sl_stage *a = pu_src_stage(names[0], &src),
           *b = pu_xf_stage(names[1], &xf, true),
           *c = pu_sink_stage(names[2], &sink);
  ck_assert(a && b && c);
  if (fault)
    *fault = &xf.fault;
  ck_assert_int_eq(sl_pipeline_chain(p, a, b, c, NULL), 0);
  rec[0] = &src.c;
  rec[1] = &xf.c;
  rec[2] = &sink.c;
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  int rc = sl_pipeline_wait(p);
  if (rc == 0)
    ck_assert_uint_eq(sink.got.len, sizeof data);
  pu_sink_fini(&sink);
  return rc;
}

/* The set has run `jobs` stages in all and `idle` threads wait. Whether a
 * stage found a thread waiting depends on whether an earlier stage of the
 * same start had already ended; the sum does not. Returns the threads
 * created. */
static uint64_t expect_set(sl_threads *t, uint64_t jobs, size_t idle) {
  sl_threads_stats st;
  ck_assert_int_eq(sl_threads_stats_get(t, &st), 0);
  ck_assert_uint_eq(st.created + st.reused, jobs);
  ck_assert_uint_eq(st.idle, idle);
  ck_assert_uint_eq(st.busy, 0);
  return st.created;
}

/* A second pipeline given the set runs its stages on the threads the
 * first one's stages ended on (the same kernel thread ids), each named
 * for its new stage and with the signals blocked; between the two they
 * wait in the set, named sl:idle. The set's last release joins them (the
 * teardown counts the threads left). The rings are far smaller than the
 * stream, so that no stage of the first can end before its last stage has
 * started: it starts three threads. */
START_TEST(test_thread_set_reuses_threads) {
  static const char *const first[3] = {"a-src", "a-up", "a-sink"};
  static const char *const second[3] = {"b-src", "b-up", "b-sink"};
  const sl_pipeline_opts o = {.hwm = 4096};
  sl_threads *t;
  sl_pipeline *p;
  pu_common *rec[3];
  long tids[3];

  ck_assert_int_eq(sl_threads_new(&t, 8, 0), 0);
  ck_assert_uint_eq(expect_set(t, 0, 0), 0);
  sl_pipeline_opts with = o;
  with.threads = t;
  ck_assert_int_eq(sl_pipeline_new(&p, &with), 0);
  ck_assert_int_eq(run_named(p, first, rec, NULL), 0);
  for (int i = 0; i < 3; i++) {
    tids[i] = rec[i]->tid;
    expect_thread_name(rec[i], first[i]);
  }
#ifdef SYS_gettid
  ck_assert(tids[0] != tids[1] && tids[1] != tids[2] && tids[0] != tids[2]);
#endif
  sl_pipeline_free(p);
  ck_assert_uint_eq(expect_set(t, 3, 3), 3);
  int named;
  ck_assert_int_ge(pu_thread_count_named(&named), 0);
  ck_assert_int_eq(named, 3); /* "sl:idle" */

  ck_assert_int_eq(sl_pipeline_new(&p, &with), 0);
  ck_assert_int_eq(run_named(p, second, rec, NULL), 0);
  for (int i = 0; i < 3; i++) {
    expect_thread_name(rec[i], second[i]);
    ck_assert_int_eq(rec[i]->signals_blocked, 1);
#ifdef SYS_gettid
    ck_assert(rec[i]->tid == tids[0] || rec[i]->tid == tids[1] ||
              rec[i]->tid == tids[2]);
#endif
  }
  sl_pipeline_free(p);
  /* No thread was started for the second: each stage found one waiting. */
  ck_assert_uint_eq(expect_set(t, 6, 3), 3);
  sl_threads_free(t);
}
END_TEST

/* sl_threads_trim ends the waiting threads beyond the number kept, and
 * joins them; the next pipeline starts threads anew where none waits. */
START_TEST(test_thread_set_trim) {
  static const char *const names[3] = {"src", "up", "sink"};
  const sl_pipeline_opts o = {.hwm = 4096};
  sl_threads *t;
  sl_pipeline *p;
  pu_common *rec[3];

  ck_assert_int_eq(sl_threads_new(&t, 8, 0), 0);
  sl_pipeline_opts with = o;
  with.threads = t;
  ck_assert_int_eq(sl_pipeline_new(&p, &with), 0);
  ck_assert_int_eq(run_named(p, names, rec, NULL), 0);
  sl_pipeline_free(p);
  ck_assert_uint_eq(expect_set(t, 3, 3), 3);

  ck_assert_int_eq(sl_threads_trim(t, 5), 0); /* fewer wait: none ends */
  expect_set(t, 3, 3);
  ck_assert_int_eq(sl_threads_trim(t, 1), 0);
  expect_set(t, 3, 1);

  ck_assert_int_eq(sl_pipeline_new(&p, &with), 0);
  ck_assert_int_eq(run_named(p, names, rec, NULL), 0);
  sl_pipeline_free(p);
  /* One stage found a thread waiting, two started threads. */
  ck_assert_uint_eq(expect_set(t, 6, 3), 5);
  ck_assert_int_eq(sl_threads_trim(t, 0), 0);
  expect_set(t, 6, 0);
  ck_assert_int_eq(sl_threads_trim(NULL, 0), SL_EINVAL);
  sl_threads_free(t);
}
END_TEST

/* At most max_idle threads wait; the others end with their stage. A
 * failed pipeline gives its threads back like any other. */
START_TEST(test_thread_set_max_idle) {
  static const char *const names[3] = {"src", "up", "sink"};
  sl_threads *t;
  sl_pipeline *p;
  pu_common *rec[3];
  pu_fault *f;

  ck_assert_int_eq(sl_threads_new(&t, 1, 0), 0);
  ck_assert_int_eq(sl_pipeline_new(&p, &(sl_pipeline_opts){.threads = t}), 0);
  ck_assert_int_eq(run_named(p, names, rec, NULL), 0);
  sl_pipeline_free(p);
  expect_set(t, 3, 1);

  ck_assert_int_eq(sl_pipeline_new(&p, &(sl_pipeline_opts){.threads = t}), 0);
  {
    /* fail the transform at its third chunk */
    static const size_t sizes[] = {1000};
    static unsigned char data[10000];
    static pu_src s2;
    static pu_xf x2;
    static pu_sink k2;
    pu_src_init(&s2, data, sizeof data, sizes, 1);
    pu_xf_init(&x2, PU_IDENTITY);
    pu_sink_init(&k2);
    x2.fault.at = 2;
    x2.fault.code = SL_EIO;
    f = &x2.fault;
    sl_stage *a = pu_src_stage("src", &s2), *b = pu_xf_stage("up", &x2, false),
             *c = pu_sink_stage("sink", &k2);
    ck_assert(a && b && c);
    ck_assert_int_eq(sl_pipeline_chain(p, a, b, c, NULL), 0);
    ck_assert_int_eq(sl_pipeline_start(p), 0);
    ck_assert_int_eq(sl_pipeline_wait(p), SL_EIO);
    ck_assert_int_eq(atomic_load(&f->fired), 1);
    pu_sink_fini(&k2);
  }
  sl_pipeline_free(p);
  expect_set(t, 6, 1);
  sl_threads_free(t);
}
END_TEST

/* Pipelines hold references: the owner may release the set first, and
 * the last pipeline freed ends its threads. A stack size other than the
 * set's is refused. */
START_TEST(test_thread_set_references) {
  static const char *const names[3] = {"src", "up", "sink"};
  sl_threads *t;
  sl_pipeline *p, *q;
  pu_common *rec[3];

  ck_assert_int_eq(sl_threads_new(NULL, 4, 0), SL_EINVAL);
  ck_assert_int_eq(sl_threads_stats_get(NULL, &(sl_threads_stats){0}),
                   SL_EINVAL);
  ck_assert_ptr_null(sl_threads_ref(NULL));
  sl_threads_free(NULL);
  ck_assert_int_eq(sl_threads_new(&t, 4, 1 << 20), 0);
  ck_assert_int_eq(
      sl_pipeline_new(&p,
                      &(sl_pipeline_opts){.threads = t, .stack_size = 2 << 20}),
      SL_EINVAL);
  ck_assert_int_eq(
      sl_pipeline_new(&p,
                      &(sl_pipeline_opts){.threads = t, .stack_size = 1 << 20}),
      0);
  ck_assert_int_eq(sl_pipeline_new(&q, &(sl_pipeline_opts){.threads = t}), 0);
  sl_threads_free(t); /* the pipelines keep it */
  ck_assert_int_eq(run_named(p, names, rec, NULL), 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(run_named(q, names, rec, NULL), 0);
  sl_pipeline_free(q); /* the last reference: the threads end */
}
END_TEST

/* Several threads each run pipelines one after another on one set, so
 * that stages start on threads that other pipelines' stages are just
 * giving back (for the race checkers). Rounds: a tenth of SL_TEST_CANCELS
 * (250 by default; the race loops and valgrind's checkers scale it down),
 * and at least two, so that a runner's second pipeline finds the threads
 * of its first, or of another's, waiting. */
struct set_runner {
  sl_threads *t;
  int rounds, failures;
};

static void *set_runner_main(void *arg) {
  struct set_runner *r = arg;
  static const size_t sizes[] = {512, 3, 4096};
  unsigned char data[20000];
  memset(data, 'x', sizeof data);
  for (int k = 0; k < r->rounds; k++) {
    sl_pipeline *p;
    pu_src src;
    pu_xf xf;
    pu_sink sink;
    pu_src_init(&src, data, sizeof data, sizes, 3);
    pu_xf_init(&xf, PU_UPPER);
    pu_sink_init(&sink);
    if (sl_pipeline_new(
            &p, &(sl_pipeline_opts){.threads = r->t, .hwm = 4096}) != 0) {
      r->failures++;
      continue;
    }
    sl_stage *a = pu_src_stage("src", &src), *b = pu_xf_stage("up", &xf, false),
             *c = pu_sink_stage("sink", &sink);
    if (!a || !b || !c || sl_pipeline_chain(p, a, b, c, NULL) != 0 ||
        sl_pipeline_start(p) != 0 || sl_pipeline_wait(p) != 0 ||
        sink.got.len != sizeof data)
      r->failures++;
    else
      for (size_t i = 0; i < sizeof data; i++)
        if (sink.got.p[i] != 'X') {
          r->failures++;
          break;
        }
    sl_pipeline_free(p);
    pu_sink_fini(&sink);
  }
  return NULL;
}

START_TEST(test_thread_set_shared_by_threads) {
  enum { RUNNERS = 4 };
  const long cancels = test_iterations("SL_TEST_CANCELS", 250);
  const int rounds = cancels / 10 > 2 ? (int)(cancels / 10) : 2;
  sl_threads *t;
  pthread_t th[RUNNERS];
  struct set_runner r[RUNNERS];
  sl_threads_stats st;

  ck_assert_int_eq(sl_threads_new(&t, 6, 0), 0);
  for (int i = 0; i < RUNNERS; i++) {
    r[i] = (struct set_runner){.t = t, .rounds = rounds};
    ck_assert_int_eq(pthread_create(&th[i], NULL, set_runner_main, &r[i]), 0);
  }
  for (int i = 0; i < RUNNERS; i++) {
    ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_int_eq(r[i].failures, 0);
  }
  ck_assert_int_eq(sl_threads_stats_get(t, &st), 0);
  ck_assert_uint_eq(st.created + st.reused, (uint64_t)RUNNERS * rounds * 3);
  ck_assert_uint_le(st.idle, 6);
  ck_assert_uint_eq(st.busy, 0);
  ck_assert_uint_gt(st.reused, 0);
  sl_threads_free(t);
}
END_TEST

static Suite *pipeline_suite(void) {
  Suite *s = suite_create("pipeline");
  TCase *tc;

  tc = tcase("bytes", 120);
  tcase_add_loop_test(tc, test_bytes_through_transforms, 1, 6);
  tcase_add_test(tc, test_empty_stream);
  tcase_add_test(tc, test_shared_pool);
  tcase_add_test(tc, test_positive_op_return_is_success);
  suite_add_tcase(s, tc);

  tc = tcase("objects", 60);
  tcase_add_test(tc, test_objects_destructors_run_once);
  tcase_add_test(tc, test_objects_released_on_failure);
  suite_add_tcase(s, tc);

  tc = tcase("failure", 60);
  tcase_add_loop_test(tc, test_failure_reported, 0, 15);
  tcase_add_test(tc, test_error_first_message_kept);
  tcase_add_test(tc, test_error_message_truncated);
  suite_add_tcase(s, tc);

  tc = tcase("finished", 60);
  tcase_add_loop_test(tc, test_finished_callback_once, 0, 3);
  tcase_add_test(tc, test_finished_cancel_from_callback_is_noop);
  tcase_add_test(tc, test_wait_from_several_threads);
  suite_add_tcase(s, tc);

  tc = tcase("cancel", 600);
  tcase_add_test(tc, test_cancel_stress);
  tcase_add_test(tc, test_cancel_while_paused);
  tcase_add_test(tc, test_cancel_before_start);
  tcase_add_test(tc, test_cancel_idle_source);
  suite_add_tcase(s, tc);

  tc = tcase("duplex", 60);
  tcase_add_test(tc, test_duplex_in_middle);
  tcase_add_test(tc, test_duplex_cancel);
  suite_add_tcase(s, tc);

  tc = tcase("chain", 60);
  tcase_add_test(tc, test_chain_rejects_null);
  tcase_add_test(tc, test_chain_null_stage_never_shortens);
  tcase_add_test(tc, test_chain_many_stages);
  tcase_add_test(tc, test_error_says_why_refused);
  tcase_add_test(tc, test_chain_rejects_sink_first);
  tcase_add_test(tc, test_chain_rejects_source_last);
  tcase_add_test(tc, test_chain_rejects_same_stage_twice);
  tcase_add_test(tc, test_chain_rejects_lone_source_or_sink);
  tcase_add_test(tc, test_chain_rejects_stage_of_other_pipeline);
  tcase_add_test(tc, test_chain_rejection_leaves_stages_usable);
  tcase_add_test(tc, test_start_rejects_incomplete_graph);
  tcase_add_test(tc, test_start_twice_busy);
  tcase_add_test(tc, test_wait_before_start_rejected);
  suite_add_tcase(s, tc);

  tc = tcase("threads", 60);
  tcase_add_test(tc, test_thread_names);
  tcase_add_test(tc, test_thread_names_duplex);
  tcase_add_test(tc, test_threads_named_when_start_returns);
  tcase_add_test(tc, test_stage_threads_block_signals);
  suite_add_tcase(s, tc);

  tc = tcase("thread sets", 120);
  tcase_add_test(tc, test_thread_set_reuses_threads);
  tcase_add_test(tc, test_thread_set_max_idle);
  tcase_add_test(tc, test_thread_set_trim);
  tcase_add_test(tc, test_thread_set_references);
  tcase_add_test(tc, test_thread_set_shared_by_threads);
  suite_add_tcase(s, tc);

  tc = tcase("stats", 60);
  tcase_add_test(tc, test_stage_stats_exact);
  tcase_add_test(tc, test_stats_print_names_stages);
  suite_add_tcase(s, tc);

  return s;
}

int main(void) {
  return run_suite(pipeline_suite());
}

/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint markers (sl_buf_new_checkpoint): a flush marker that reports
 * whether everything before it left every sink. A sink's successful sync
 * passes it; any other release drops it. Its callback runs once, when the
 * last reference goes. These tests need no server: the NATS source builds
 * its at-least-once acknowledgement on exactly this.
 */
#include "sluice-int.h"
#include "testutil.h"

#include <check.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  atomic_int calls;
  atomic_int passed;
  atomic_int sink_syncs_seen; /* sinks' syncs counted when cb ran */
  atomic_int *syncs;          /* the counter the sinks bump */
  atomic_size_t bytes_seen;   /* sink 0's bytes when cb ran */
  atomic_size_t *bytes;
} cp_state;

static void cp_cb(void *arg, int passed) {
  cp_state *st = arg;
  if (st->syncs)
    atomic_store(&st->sink_syncs_seen, atomic_load(st->syncs));
  if (st->bytes)
    atomic_store(&st->bytes_seen, atomic_load(st->bytes));
  atomic_store(&st->passed, passed);
  atomic_fetch_add(&st->calls, 1);
}

START_TEST(test_alone) {
  cp_state st = {0};
  sl_buf *b;
  ck_assert_int_eq(sl_buf_new_checkpoint(NULL, NULL, &st, &b), SL_EINVAL);
  ck_assert_int_eq(sl_buf_new_checkpoint(NULL, cp_cb, &st, &b), 0);
  ck_assert_int_eq(sl_buf_is_flush(b), 1);
  ck_assert_uint_eq(sl_buf_len(b), 0);
  sl__buf_pass(b);
  ck_assert_int_eq(atomic_load(&st.calls), 1);
  ck_assert_int_eq(atomic_load(&st.passed), 1);

  cp_state st2 = {0};
  ck_assert_int_eq(sl_buf_new_checkpoint(NULL, cp_cb, &st2, &b), 0);
  sl_buf_unref(b);
  ck_assert_int_eq(atomic_load(&st2.calls), 1);
  ck_assert_int_eq(atomic_load(&st2.passed), 0);

  /* Two references: one passed, one dropped: dropped, reported once, at
   * the last release. */
  sl_pool *pool;
  ck_assert_int_eq(sl_pool_new(&pool, 4096, 0), 0);
  cp_state st3 = {0};
  ck_assert_int_eq(sl_buf_new_checkpoint(pool, cp_cb, &st3, &b), 0);
  sl_buf_ref(b);
  sl_buf_unref(b);
  ck_assert_int_eq(atomic_load(&st3.calls), 0);
  sl__buf_pass(b);
  ck_assert_int_eq(atomic_load(&st3.calls), 1);
  ck_assert_int_eq(atomic_load(&st3.passed), 0);
  /* The recycled header is a plain flush marker again. */
  cp_state st4 = {0};
  ck_assert_int_eq(sl_buf_new_flush(pool, &b), 0);
  sl_buf_unref(b);
  ck_assert_int_eq(atomic_load(&st4.calls), 0);
  ck_assert_int_eq(sl_buf_new_checkpoint(pool, cp_cb, &st4, &b), 0);
  sl__buf_pass(b);
  ck_assert_int_eq(atomic_load(&st4.passed), 1);
  sl_pool_free(pool);
}
END_TEST

/* A source that pushes "abc", a checkpoint, "defg", then ends (or waits
 * for the cancel when hold is set). */
typedef struct {
  cp_state *st;
  int hold;
  int done;
} src_ctx;

static int push_str(sl_stage *s, const char *str) {
  sl_buf *b;
  int rc = sl_buf_new_copy(sl_stage_pool(s), str, strlen(str), &b);
  return rc ? rc : sl_stage_push(s, b);
}

static int src_read(sl_stage *s, void *ctx) {
  src_ctx *c = ctx;
  if (c->done) {
    if (!c->hold)
      return SL_EOF;
    struct pollfd pfd = {.fd = sl_stage_cancel_fd(s), .events = POLLIN};
    while (poll(&pfd, 1, -1) < 0)
      ;
    return SL_ECANCELED;
  }
  c->done = 1;
  int rc = push_str(s, "abc");
  if (rc)
    return rc;
  sl_buf *m;
  rc = sl_buf_new_checkpoint(sl_stage_pool(s), cp_cb, c->st, &m);
  if (rc)
    return rc;
  rc = sl_stage_push(s, m);
  return rc ? rc : push_str(s, "defg");
}

/* A sink that counts bytes and syncs; fail_sync fails its sync; block
 * makes its first write wait for the cancel. */
typedef struct {
  atomic_size_t bytes;
  atomic_int *syncs;
  int fail_sync;
  int block;
} sink_ctx;

static int sink_write(sl_stage *s, void *ctx, sl_buf *in) {
  sink_ctx *k = ctx;
  atomic_fetch_add(&k->bytes, sl_buf_len(in));
  sl_buf_unref(in);
  if (k->block) {
    struct pollfd pfd = {.fd = sl_stage_cancel_fd(s), .events = POLLIN};
    while (poll(&pfd, 1, -1) < 0)
      ;
    return SL_ECANCELED;
  }
  return 0;
}

static int sink_sync(sl_stage *s, void *ctx) {
  sink_ctx *k = ctx;
  if (k->fail_sync) {
    sl_stage_set_error(s, "sync refused");
    return SL_EIO;
  }
  atomic_fetch_add(k->syncs, 1);
  return 0;
}

static sl_stage *sink_stage(const char *name, sink_ctx *k, int with_sync) {
  sl_stage_ops ops = {.write = sink_write};
  if (with_sync)
    ops.sync = sink_sync;
  sl_stage *s;
  ck_assert_int_eq(sl_stage_new(&s, name, &ops, k), 0);
  return s;
}

static sl_stage *src_stage(src_ctx *c) {
  sl_stage_ops ops = {.read = src_read};
  sl_stage *s;
  ck_assert_int_eq(sl_stage_new(&s, "src", &ops, c), 0);
  return s;
}

static int xf_transform(sl_stage *s, void *ctx, sl_buf *in) {
  (void)ctx;
  return sl_stage_push(s, in);
}

START_TEST(test_chain) {
  atomic_int syncs = 0;
  cp_state st = {.syncs = &syncs};
  src_ctx sc = {.st = &st};
  sink_ctx k = {.syncs = &syncs};
  st.bytes = &k.bytes;
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  sl_stage *xf;
  sl_stage_ops xops = {.transform = xf_transform};
  ck_assert_int_eq(sl_stage_new(&xf, "pass", &xops, NULL), 0);
  ck_assert_int_eq(
      sl_pipeline_chain(p, src_stage(&sc), xf, sink_stage("sink", &k, 1), NULL),
      0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(atomic_load(&st.calls), 1);
  ck_assert_int_eq(atomic_load(&st.passed), 1);
  /* Reported after the sink synced it, with "abc" written and not yet
   * "defg". */
  ck_assert_int_eq(atomic_load(&st.sink_syncs_seen), 1);
  ck_assert_uint_eq(atomic_load(&st.bytes_seen), 3);
  ck_assert_uint_eq(atomic_load(&k.bytes), 7);
  sl_pipeline_free(p);
  ck_assert_int_eq(atomic_load(&st.calls), 1);
}
END_TEST

/* A sink with no sync op passes it too. */
START_TEST(test_sink_without_sync) {
  cp_state st = {0};
  src_ctx sc = {.st = &st};
  sink_ctx k = {0};
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(
      sl_pipeline_chain(p, src_stage(&sc), sink_stage("sink", &k, 0), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);
  ck_assert_int_eq(atomic_load(&st.calls), 1);
  ck_assert_int_eq(atomic_load(&st.passed), 1);
}
END_TEST

static void run_tee(int fail_second, int *calls, int *passed, int *syncs_seen,
                    int *status) {
  atomic_int syncs = 0;
  cp_state st = {.syncs = &syncs};
  src_ctx sc = {.st = &st};
  sink_ctx a = {.syncs = &syncs},
           b = {.syncs = &syncs, .fail_sync = fail_second};
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  sl_stage *src = src_stage(&sc), *tee;
  ck_assert_int_eq(sl_tee_new(&tee, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(p, src, tee), 0);
  ck_assert_int_eq(sl_pipeline_link(p, tee, sink_stage("a", &a, 1)), 0);
  ck_assert_int_eq(sl_pipeline_link(p, tee, sink_stage("b", &b, 1)), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  *status = sl_pipeline_wait(p);
  sl_pipeline_free(p);
  *calls = atomic_load(&st.calls);
  *passed = atomic_load(&st.passed);
  *syncs_seen = atomic_load(&st.sink_syncs_seen);
}

START_TEST(test_tee_both_pass) {
  int calls, passed, seen, status;
  run_tee(0, &calls, &passed, &seen, &status);
  ck_assert_int_eq(status, 0);
  ck_assert_int_eq(calls, 1);
  ck_assert_int_eq(passed, 1);
  ck_assert_int_eq(seen, 2); /* both sinks had synced it */
}
END_TEST

START_TEST(test_tee_one_fails) {
  int calls, passed, seen, status;
  run_tee(1, &calls, &passed, &seen, &status);
  ck_assert_int_eq(status, SL_EIO);
  ck_assert_int_eq(calls, 1);
  ck_assert_int_eq(passed, 0);
}
END_TEST

/* Cancelled while the marker waits in a ring behind a blocked sink. */
START_TEST(test_cancel_drops) {
  cp_state st = {0};
  src_ctx sc = {.st = &st, .hold = 1};
  atomic_int syncs = 0;
  sink_ctx k = {.syncs = &syncs, .block = 1};
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(
      sl_pipeline_chain(p, src_stage(&sc), sink_stage("sink", &k, 1), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  /* The sink got "abc" and blocks; the marker is queued behind it. */
  while (atomic_load(&k.bytes) == 0)
    sched_yield();
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  sl_pipeline_free(p);
  ck_assert_int_eq(atomic_load(&st.calls), 1);
  ck_assert_int_eq(atomic_load(&st.passed), 0);
  ck_assert_int_eq(atomic_load(&syncs), 0);
}
END_TEST

static Suite *checkpoint_suite(void) {
  Suite *s = suite_create("checkpoint");
  TCase *tc = tcase_create("marker");
  tcase_add_test(tc, test_alone);
  tcase_add_test(tc, test_chain);
  tcase_add_test(tc, test_sink_without_sync);
  tcase_add_test(tc, test_tee_both_pass);
  tcase_add_test(tc, test_tee_one_fails);
  tcase_add_test(tc, test_cancel_drops);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(checkpoint_suite());
}

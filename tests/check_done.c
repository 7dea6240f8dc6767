/* SPDX-License-Identifier: MIT */
/*
 * Check suite for finishing early and for the misuse the library refuses.
 *
 * Finishing early: an op returns SL_DONE ("no more input wanted"); the
 * stages before it are stopped as on cancel, their rings released, and the
 * pipeline ends with 0 unless something else failed. Sinks and transforms
 * that stop on an endless source, a source blocked on an idle pipe, a tee
 * with one branch done, a merge, a failure elsewhere that still wins.
 *
 * Misuse: a wait or a free from one of the pipeline's own threads (a
 * stage's, one reused from a thread set, the finished callback) is
 * refused with SL_EDEADLK instead of hanging; a push from a thread that
 * is not the stage's own is refused with SL_EINVAL.
 *
 * Every test runs with the counting allocator installed and checks in its
 * teardown that every block was freed and no thread outlived it.
 */
#include "pipeutil.h"

#include <fcntl.h>
#include <stdio.h>
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

static TCase *tcase(const char *name, int timeout) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

#define NSIZES(a) (sizeof(a) / sizeof((a)[0]))
static const size_t sizes_mixed[] = {1, 4096, 3, 65536, 100, 65537, 0, 777};

/* ------------------------------------------------------------------------
 * A sink and a transform that have had enough after `at` chunks
 * ---------------------------------------------------------------------- */

typedef struct done_sink {
  pu_sink k; /* first: pu_destroy and the pu_sink ops take it */
  long at;   /* return SL_DONE from the write of this chunk (0 based) */
  atomic_long writes;
  /* Before it says SL_DONE, wait until the thread of this name sits in
   * poll(2) (NULL: do not); the result, as pu_wait_in_poll's. */
  const char *poll_name;
  int in_poll;
} done_sink;

static int done_sink_write(sl_stage *st, void *ctx, sl_buf *in) {
  done_sink *d = ctx;
  long i = atomic_fetch_add(&d->writes, 1);
  int rc = pu_sink_write(st, &d->k, in);
  if (rc != 0 || i != d->at)
    return rc;
  if (d->poll_name)
    d->in_poll = pu_wait_in_poll(d->poll_name);
  return SL_DONE;
}

static sl_stage *done_sink_stage(const char *name, done_sink *d, long at) {
  static const sl_stage_ops ops = {
      .write = done_sink_write, .final = pu_sink_final, .destroy = pu_destroy};
  sl_stage *st = NULL;
  memset(d, 0, sizeof *d);
  pu_sink_init(&d->k);
  d->at = at;
  atomic_init(&d->writes, 0);
  return sl_stage_new(&st, name, &ops, d) == 0 ? st : NULL;
}

typedef struct done_xf {
  pu_xf x;
  long at;
  long seen;
  int flushes;
} done_xf;

static int done_xf_transform(sl_stage *st, void *ctx, sl_buf *in) {
  done_xf *d = ctx;
  int rc = pu_xf_transform(st, &d->x, in);
  return rc == 0 && d->seen++ == d->at ? SL_DONE : rc;
}

static int done_xf_flush(sl_stage *st, void *ctx) {
  done_xf *d = ctx;
  d->flushes++;
  return pu_xf_flush(st, &d->x);
}

static sl_stage *done_xf_stage(const char *name, done_xf *d, long at) {
  static const sl_stage_ops ops = {.transform = done_xf_transform,
                                   .flush = done_xf_flush,
                                   .destroy = pu_destroy};
  sl_stage *st = NULL;
  memset(d, 0, sizeof *d);
  pu_xf_init(&d->x, PU_IDENTITY);
  d->at = at;
  return sl_stage_new(&st, name, &ops, d) == 0 ? st : NULL;
}

/* Every buffer of p's pool is back: the rings were released. */
static void expect_pool_empty(sl_pipeline *p) {
  sl_pool_stats ps = pu_pool_stats(p);
  ck_assert_uint_eq(ps.outstanding, 0);
}

/* ------------------------------------------------------------------------
 * A sink that says SL_DONE on an endless source
 * ---------------------------------------------------------------------- */

/* Loop: 0 source -> sink; 1 with a transform between; 2 with small rings
 * (the source paused when the sink stops); 3 with the stage threads from
 * a thread set; 4 the sink stops at its very first chunk. */
START_TEST(test_sink_done_on_endless_source) {
  const size_t len = 50000;
  unsigned char *data = pu_pattern(len, 7);
  sl_pipeline_opts o = {0};
  sl_threads *set = NULL;
  sl_pipeline *p = NULL;
  pu_src src;
  pu_xf xf;
  done_sink sink;
  long at = _i == 4 ? 0 : 40;
  sl_stage *st[3];
  size_t n = 0;

  if (_i == 2)
    o.hwm = 4096;
  if (_i == 3) {
    ck_assert_int_eq(sl_threads_new(&set, 4, 0), 0);
    o.threads = set;
  }
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  pu_src_init(&src, data, len, sizes_mixed, NSIZES(sizes_mixed));
  src.forever = true;
  st[n++] = pu_src_stage("src", &src);
  if (_i == 1) {
    pu_xf_init(&xf, PU_UPPER);
    st[n++] = pu_xf_stage("xf", &xf, false);
  }
  st[n++] = done_sink_stage("head", &sink, at);
  for (size_t i = 0; i < n; i++)
    ck_assert_ptr_nonnull(st[i]);
  ck_assert_int_eq(sl_pipeline_chainv(p, st, n), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));
  /* The sink saw what it asked for, then its final, exactly once. */
  ck_assert_int_eq(atomic_load(&sink.writes), at + 1);
  ck_assert_int_eq(sink.k.final_calls, 1);
  ck_assert_int_eq(sink.k.chunks_at_final, at + 1);
  ck_assert_int_eq(sl_stage_status(st[n - 1]), 0);
  /* Everything before it was stopped, quietly. */
  for (size_t i = 0; i + 1 < n; i++)
    ck_assert_int_eq(sl_stage_status(st[i]), SL_DONE);
  expect_pool_empty(p);
  ck_assert_int_eq(sl_pipeline_free(p), 0);
  ck_assert_int_eq(pu_destroyed(&src), 1);
  ck_assert_int_eq(pu_destroyed(&sink), 1);
  sl_threads_free(set);
  pu_sink_fini(&sink.k);
  free(data);
}
END_TEST

/* A transform that says SL_DONE: its flush still runs and its output ends
 * normally, so the sink after it gets everything and an end of stream. */
START_TEST(test_transform_done_flushes_and_ends) {
  const size_t len = 20000;
  static const size_t sizes[] = {1000};
  unsigned char *data = pu_pattern(len, 9);
  sl_pipeline *p = NULL;
  pu_src src;
  done_xf xf;
  pu_sink sink;
  sl_stage *s0, *s1, *s2;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&src, data, len, sizes, 1);
  src.forever = true;
  s0 = pu_src_stage("src", &src);
  s1 = done_xf_stage("take", &xf, 4);
  xf.x.trailer = "[END]";
  pu_sink_init(&sink);
  s2 = pu_sink_stage("sink", &sink);
  ck_assert(s0 && s1 && s2);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, s2, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));
  ck_assert_int_eq(xf.flushes, 1);
  ck_assert_int_eq(sink.final_calls, 1);
  ck_assert_uint_eq(sink.got.len, 5 * 1000 + 5);
  ck_assert(memcmp(sink.got.p, data, 5000) == 0);
  ck_assert(memcmp(sink.got.p + 5000, "[END]", 5) == 0);
  ck_assert_int_eq(sl_stage_status(s0), SL_DONE);
  ck_assert_int_eq(sl_stage_status(s1), 0);
  ck_assert_int_eq(sl_stage_status(s2), 0);
  expect_pool_empty(p);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  free(data);
}
END_TEST

/* A source blocked in poll on an idle pipe (its write end held open by
 * the test) is woken when the sink after it has had enough. */
START_TEST(test_done_wakes_source_blocked_on_pipe) {
  int fds[2];
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *sink;
  done_sink d;
  static const char line[] = "one chunk\n";

  ck_assert_int_eq(pipe(fds), 0);
  ck_assert_int_eq(write(fds[1], line, sizeof line - 1),
                   (ssize_t)(sizeof line - 1));
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_fd_source_new(&src, fds[0], NULL), 0);
  /* The second chunk (the test writes it once the first went through)
   * says SL_DONE, once the source sits in poll on the empty pipe again. */
  sink = done_sink_stage("head", &d, 1);
  ck_assert_ptr_nonnull(sink);
  d.poll_name = "sl:fd-source";
  ck_assert_int_eq(sl_pipeline_chain(p, src, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(pu_sink_wait_chunks(&d.k, 1), 1);
  ck_assert_int_eq(write(fds[1], line, sizeof line - 1),
                   (ssize_t)(sizeof line - 1));
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));
  ck_assert_int_eq(atomic_load(&d.writes), 2);
  ck_assert_int_ge(d.in_poll, 0); /* 1, or 0 where /proc cannot tell */
  ck_assert_int_eq(sl_stage_status(src), SL_DONE);
  expect_pool_empty(p);
  sl_pipeline_free(p);
  close(fds[1]);
  pu_sink_fini(&d.k);
}
END_TEST

/* ------------------------------------------------------------------------
 * Tees and merges
 * ---------------------------------------------------------------------- */

/* One branch of a tee has had enough: the other gets the whole stream,
 * and the pipeline ends with 0. Loop 1: small rings, so the tee waits on
 * the branch that stops. */
START_TEST(test_tee_one_branch_done_feeds_other) {
  static const size_t sizes[] = {1000};
  const size_t len = 300000;
  unsigned char *data = pu_pattern(len, 3);
  sl_pipeline_opts o = {.hwm = _i == 1 ? 2048 : 0};
  sl_pipeline *p = NULL;
  pu_src src;
  done_sink a;
  pu_sink b;
  sl_stage *s0, *tee = NULL, *sa, *sb;

  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  pu_src_init(&src, data, len, sizes, 1);
  s0 = pu_src_stage("src", &src);
  ck_assert_int_eq(sl_tee_new(&tee, NULL), 0);
  sa = done_sink_stage("a", &a, 2);
  pu_sink_init(&b);
  sb = pu_sink_stage("b", &b);
  ck_assert(s0 && sa && sb);
  if (_i == 1)
    pu_sink_hold(&a.k); /* a holds its first chunk: the tee fills a's ring */
  ck_assert_int_eq(sl_pipeline_chain(p, s0, tee, sa, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(p, tee, sb), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  if (_i == 1) {
    pu_sink_wait_at_gate(&a.k);
    /* The tee waits on a's full ring (its first output). */
    ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(tee), SL__WRITER),
                     0);
    pu_sink_release(&a.k);
  }
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));
  ck_assert_int_eq(atomic_load(&a.writes), 3);
  ck_assert_int_eq(a.k.final_calls, 1);
  ck_assert_uint_eq(b.got.len, len);
  ck_assert(memcmp(b.got.p, data, len) == 0);
  ck_assert_int_eq(sl_stage_status(s0), 0);
  ck_assert_int_eq(sl_stage_status(tee), 0);
  expect_pool_empty(p);
  sl_pipeline_free(p);
  pu_sink_fini(&a.k);
  pu_sink_fini(&b);
  free(data);
}
END_TEST

/* Both branches have had enough: the endless source is stopped then, and
 * only then. */
START_TEST(test_tee_all_branches_done_stops_source) {
  static const size_t sizes[] = {512};
  unsigned char *data = pu_pattern(4096, 4);
  sl_pipeline *p = NULL;
  pu_src src;
  done_sink a, b;
  sl_stage *s0, *tee = NULL, *sa, *sb;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&src, data, 4096, sizes, 1);
  src.forever = true;
  s0 = pu_src_stage("src", &src);
  ck_assert_int_eq(sl_tee_new(&tee, NULL), 0);
  sa = done_sink_stage("a", &a, 0);
  sb = done_sink_stage("b", &b, 30);
  ck_assert(s0 && sa && sb);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, tee, sa, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(p, tee, sb), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(atomic_load(&a.writes), 1);
  ck_assert_int_eq(atomic_load(&b.writes), 31);
  ck_assert_int_eq(sl_stage_status(s0), SL_DONE);
  ck_assert_int_eq(sl_stage_status(tee), SL_DONE);
  expect_pool_empty(p);
  sl_pipeline_free(p);
  pu_sink_fini(&a.k);
  pu_sink_fini(&b.k);
  free(data);
}
END_TEST

/* A merge in arrival order whose op says SL_DONE: both endless inputs are
 * stopped, the op sees nothing after, final runs once. Loop 1: round
 * robin. */
START_TEST(test_merge_done_stops_every_input) {
  static const size_t sizes[] = {100, 5000};
  unsigned char *data = pu_pattern(8192, 5);
  sl_pipeline *p = NULL;
  pu_src s1, s2;
  done_sink d;
  sl_stage *a, *b, *sink;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&s1, data, 8192, sizes, 2);
  pu_src_init(&s2, data, 8192, sizes, 2);
  s1.forever = s2.forever = true;
  a = pu_src_stage("a", &s1);
  b = pu_src_stage("b", &s2);
  sink = done_sink_stage("sink", &d, 50);
  ck_assert(a && b && sink);
  ck_assert_int_eq(sl_stage_set_merge(sink, _i), 0);
  ck_assert_int_eq(sl_pipeline_link(p, a, sink), 0);
  ck_assert_int_eq(sl_pipeline_link(p, b, sink), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(atomic_load(&d.writes), 51);
  ck_assert_int_eq(d.k.final_calls, 1);
  ck_assert_int_eq(d.k.chunks_at_final, 51);
  ck_assert_int_eq(sl_stage_status(a), SL_DONE);
  ck_assert_int_eq(sl_stage_status(b), SL_DONE);
  expect_pool_empty(p);
  sl_pipeline_free(p);
  pu_sink_fini(&d.k);
  free(data);
}
END_TEST

/* A failure elsewhere still wins: one branch of a tee has had enough, the
 * other fails. Loop 1: the failing branch fails first (the done branch
 * waits for it); loop 2: a cancel before the done. */
START_TEST(test_error_elsewhere_wins) {
  static const size_t sizes[] = {512};
  unsigned char *data = pu_pattern(4096, 6);
  sl_pipeline *p = NULL;
  pu_src src;
  done_sink a;
  pu_sink b;
  sl_stage *s0, *tee = NULL, *sa, *sb;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&src, data, 4096, sizes, 1);
  src.forever = true;
  s0 = pu_src_stage("src", &src);
  ck_assert_int_eq(sl_tee_new(&tee, NULL), 0);
  sa = done_sink_stage("a", &a, 3);
  pu_sink_init(&b);
  b.fault.at = _i == 2 ? PU_NEVER : 10;
  b.fault.code = SL_EIO;
  sb = pu_sink_stage("b", &b);
  ck_assert(s0 && sa && sb);
  if (_i >= 1) {
    pu_sink_hold(&a.k);
    pu_sink_hold(&b);
  }
  ck_assert_int_eq(sl_pipeline_chain(p, s0, tee, sa, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(p, tee, sb), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  if (_i >= 1) {
    /* a holds its first chunk; only then may b go on (and fail), or the
     * cancel come: a failure first would release a's chunk unread. */
    pu_sink_wait_at_gate(&a.k);
    if (_i == 2)
      sl_pipeline_cancel(p);
    pu_sink_release(&b);
    /* The pipeline fails (b at its chunk 10) while a still holds its
     * chunk; sl_stage_cancelled says when. The library has no wait for
     * "failing", and this comes at once. */
    while (!sl_stage_cancelled(sa))
      sched_yield();
    pu_sink_release(&a.k);
  }
  int want = _i == 2 ? SL_ECANCELED : SL_EIO;
  ck_assert_int_eq(sl_pipeline_wait(p), want);
  ck_assert_ptr_nonnull(sl_pipeline_error(p));
  if (_i < 2)
    ck_assert_str_eq(sl_pipeline_error(p), "b: boom at 10");
  expect_pool_empty(p);
  sl_pipeline_free(p);
  pu_sink_fini(&a.k);
  pu_sink_fini(&b);
  free(data);
}
END_TEST

/* Many rounds of an early finish racing the source, the tee and the
 * pool: for the race checkers (tests/race-loop.sh). */
START_TEST(test_done_rounds) {
  long rounds = test_iterations("SL_TEST_ROUNDS", 200);
  static const size_t sizes[] = {1, 700, 4096};
  unsigned char *data = pu_pattern(8192, 8);

  for (long r = 0; r < rounds; r++) {
    sl_pipeline_opts o = {.hwm = r % 2 ? 1024 : 0};
    sl_pipeline *p = NULL;
    pu_src src;
    done_sink a, b;
    sl_stage *s0, *tee = NULL, *sa, *sb;

    test_check(sl_pipeline_new(&p, &o) == 0);
    pu_src_init(&src, data, 8192, sizes, 3);
    src.forever = true;
    s0 = pu_src_stage("src", &src);
    test_check(sl_tee_new(&tee, NULL) == 0);
    sa = done_sink_stage("a", &a, r % 5);
    sb = done_sink_stage("b", &b, r % 7);
    test_check(s0 && sa && sb);
    test_check(sl_pipeline_chain(p, s0, tee, sa, NULL) == 0);
    test_check(sl_pipeline_link(p, tee, sb) == 0);
    test_check(sl_pipeline_start(p) == 0);
    test_check(sl_pipeline_wait(p) == 0);
    test_check(atomic_load(&a.writes) == r % 5 + 1);
    test_check(atomic_load(&b.writes) == r % 7 + 1);
    test_check(pu_pool_stats(p).outstanding == 0);
    test_check(sl_pipeline_free(p) == 0);
    pu_sink_fini(&a.k);
    pu_sink_fini(&b.k);
  }
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Misuse: waiting for or freeing a pipeline from its own threads, pushing
 * from a foreign thread
 * ---------------------------------------------------------------------- */

typedef struct self_sink {
  pu_sink k;
  sl_pipeline *p, *other;
  int wait_rc, free_rc, other_rc;
} self_sink;

static int self_sink_write(sl_stage *st, void *ctx, sl_buf *in) {
  self_sink *s = ctx;
  if (s->wait_rc == 1) {
    s->wait_rc = sl_pipeline_wait(s->p);
    s->free_rc = sl_pipeline_free(s->p);
    if (s->other)
      s->other_rc = sl_pipeline_wait(s->other); /* not its own: waits */
  }
  return pu_sink_write(st, &s->k, in);
}

/* From a stage's op: SL_EDEADLK, nothing changed, the pipeline runs to
 * its end. Loop 1: the stage's thread comes from a thread set; and it
 * waits for another pipeline, which is allowed. */
START_TEST(test_wait_and_free_from_stage_refused) {
  static const sl_stage_ops ops = {
      .write = self_sink_write, .final = pu_sink_final, .destroy = pu_destroy};
  unsigned char *data = pu_pattern(10000, 2);
  static const size_t sizes[] = {1000};
  sl_threads *set = NULL;
  sl_pipeline_opts o = {0};
  sl_pipeline *p = NULL, *q = NULL;
  pu_src src, src2;
  pu_sink sink2;
  self_sink s;
  sl_stage *s0, *s1 = NULL;

  if (_i == 1) {
    ck_assert_int_eq(sl_threads_new(&set, 4, 0), 0);
    o.threads = set;
    /* q runs first on the set, so p reuses its threads. */
    ck_assert_int_eq(sl_pipeline_new(&q, &o), 0);
    pu_src_init(&src2, data, 10000, sizes, 1);
    pu_sink_init(&sink2);
    ck_assert_int_eq(sl_pipeline_chain(q, pu_src_stage("src2", &src2),
                                       pu_sink_stage("sink2", &sink2), NULL),
                     0);
    ck_assert_int_eq(sl_pipeline_start(q), 0);
    ck_assert_int_eq(sl_pipeline_wait(q), 0);
  }
  memset(&s, 0, sizeof s);
  pu_sink_init(&s.k);
  s.wait_rc = 1;
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  s.p = p;
  s.other = q;
  pu_src_init(&src, data, 10000, sizes, 1);
  s0 = pu_src_stage("src", &src);
  ck_assert_int_eq(sl_stage_new(&s1, "self", &ops, &s), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(s.wait_rc, SL_EDEADLK);
  ck_assert_int_eq(s.free_rc, SL_EDEADLK);
  ck_assert_uint_eq(s.k.got.len, 10000);
  ck_assert_str_eq(sl_pipeline_error(p),
                   "wait: called from one of the pipeline's own threads");
  if (_i == 1) {
    ck_assert_int_eq(s.other_rc, 0);
    sl_threads_stats ts;
    ck_assert_int_eq(sl_threads_stats_get(set, &ts), 0);
    ck_assert_uint_gt(ts.reused, 0);
  }
  ck_assert_int_eq(sl_pipeline_free(p), 0);
  ck_assert_int_eq(pu_destroyed(&s), 1);
  ck_assert_int_eq(sl_pipeline_free(q), 0);
  sl_threads_free(set);
  pu_sink_fini(&s.k);
  if (_i == 1)
    pu_sink_fini(&sink2);
  free(data);
}
END_TEST

typedef struct cb_probe {
  int wait_rc, free_rc;
  pu_finished f;
} cb_probe;

static void probe_finished(sl_pipeline *p, int status, void *arg) {
  cb_probe *c = arg;
  c->wait_rc = sl_pipeline_wait(p);
  c->free_rc = sl_pipeline_free(p);
  pu_finished_cb(p, status, &c->f);
}

/* From the finished callback: SL_EDEADLK. Loop 0: the callback runs on a
 * stage thread; loop 1: on the thread that ends a writer bridge, this
 * one (writer -> reader: no stage thread at all). */
START_TEST(test_wait_and_free_from_finished_refused) {
  sl_pipeline *p = NULL;
  cb_probe c = {0};
  pu_sink sink;
  sl_stage *s0 = NULL, *s1 = NULL;
  sl_writer *w = NULL;
  sl_reader *r = NULL;
  unsigned char data[100];
  static const size_t sizes[] = {10};
  pu_src src;

  memset(data, 'a', sizeof data);
  pu_finished_init(&c.f);
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  if (_i == 0) {
    pu_src_init(&src, data, sizeof data, sizes, 1);
    s0 = pu_src_stage("src", &src);
    s1 = pu_sink_stage("sink", &sink);
  } else {
    ck_assert_int_eq(sl_writer_new(&s0, &w, NULL), 0);
    ck_assert_int_eq(sl_reader_new(&s1, &r, NULL), 0);
  }
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_on_finished(p, probe_finished, &c), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  if (_i == 1) {
    ck_assert_int_eq(sl_writer_write(w, data, sizeof data), 1);
    ck_assert_int_eq(sl_writer_end(w), 0);
  }
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(c.wait_rc, SL_EDEADLK);
  ck_assert_int_eq(c.free_rc, SL_EDEADLK);
  ck_assert_int_eq(atomic_load(&c.f.calls), 1);
  if (_i == 0)
    ck_assert_uint_eq(sink.got.len, sizeof data);
  ck_assert_int_eq(sl_pipeline_free(p), 0);
  pu_sink_fini(&sink);
}
END_TEST

/* A push from a thread that is not the stage's own, while the stage runs:
 * SL_EINVAL, the buffer released, the ring untouched. */
START_TEST(test_push_from_foreign_thread_refused) {
  sl_pipeline *p = NULL;
  pu_src src;
  pu_sink sink;
  sl_stage *s0, *s1;
  unsigned char data[4096];
  static const size_t sizes[] = {1024};
  test_counter dtors;
  sl_buf *b;

  memset(data, 'z', sizeof data);
  test_counter_init(&dtors);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&src, data, sizeof data, sizes, 1);
  s0 = pu_src_stage("src", &src);
  pu_sink_init(&sink);
  pu_sink_hold(&sink);
  s1 = pu_sink_stage("sink", &sink);
  ck_assert_int_eq(sl_pipeline_chain(p, s0, s1, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pu_sink_wait_at_gate(&sink); /* the source runs, or has run */
  ck_assert_int_eq(sl_buf_new_copy(sl_pipeline_pool(p), "x", 1, &b), 0);
  ck_assert_int_eq(sl_stage_push(s0, b), SL_EINVAL);
  ck_assert_int_eq(sl_buf_new_object(NULL, &dtors, test_counter_dtor, &b), 0);
  ck_assert_int_eq(sl_stage_push(s0, b), SL_EINVAL);
  ck_assert_int_eq(test_counter_get(&dtors), 1); /* released */
  ck_assert_int_eq(sl_stage_push_flush(s0), SL_EINVAL);
  pu_sink_release(&sink);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(sink.got.len, sizeof data); /* nothing extra */
  expect_pool_empty(p);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
}
END_TEST

static Suite *done_suite(void) {
  Suite *s = suite_create("done");
  TCase *tc;

  tc = tcase("early", 60);
  tcase_add_loop_test(tc, test_sink_done_on_endless_source, 0, 5);
  tcase_add_test(tc, test_transform_done_flushes_and_ends);
  tcase_add_test(tc, test_done_wakes_source_blocked_on_pipe);
  tcase_add_loop_test(tc, test_tee_one_branch_done_feeds_other, 0, 2);
  tcase_add_test(tc, test_tee_all_branches_done_stops_source);
  tcase_add_loop_test(tc, test_merge_done_stops_every_input, 0, 2);
  tcase_add_loop_test(tc, test_error_elsewhere_wins, 0, 3);
  suite_add_tcase(s, tc);

  tc = tcase("rounds", 240);
  tcase_add_test(tc, test_done_rounds);
  suite_add_tcase(s, tc);

  tc = tcase("misuse", 60);
  tcase_add_loop_test(tc, test_wait_and_free_from_stage_refused, 0, 2);
  tcase_add_loop_test(tc, test_wait_and_free_from_finished_refused, 0, 2);
  tcase_add_test(tc, test_push_from_foreign_thread_refused);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(done_suite());
}

/* SPDX-License-Identifier: MIT */
/*
 * Check suite for bad input and allocation failure: NULL and out of range
 * arguments get SL_EINVAL (never a crash), every status code has a name and
 * a message, and failing any one allocation while building or running a
 * pipeline ends in SL_ENOMEM with everything freed.
 *
 * The fixture installs the counting allocator and checks in its teardown
 * that the library holds no block: a leak fails the test even without a
 * leak checker.
 */
#include "pipeutil.h"

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

static int op_read(sl_stage *s, void *c) {
  (void)s;
  (void)c;
  return SL_EOF;
}

static int op_transform(sl_stage *s, void *c, sl_buf *in) {
  (void)c;
  return sl_stage_push(s, in);
}

static int op_flush(sl_stage *s, void *c) {
  (void)s;
  (void)c;
  return 0;
}

static int op_write(sl_stage *s, void *c, sl_buf *in) {
  (void)s;
  (void)c;
  sl_buf_unref(in);
  return 0;
}

static int op_final(sl_stage *s, void *c) {
  (void)s;
  (void)c;
  return 0;
}

/* ------------------------------------------------------------------------
 * Bad arguments
 * ---------------------------------------------------------------------- */

START_TEST(test_pipeline_new_null_out) {
  sl_pipeline_opts o = {0};

  ck_assert_int_eq(sl_pipeline_new(NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_new(NULL, &o), SL_EINVAL);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

START_TEST(test_pipeline_new_lwm_not_below_hwm) {
  sl_pipeline *p = (sl_pipeline *)&p;
  sl_pipeline_opts same = {.hwm = 4096, .lwm = 4096};
  sl_pipeline_opts above = {.hwm = 4096, .lwm = 5000};
  /* hwm 0 picks 256 KiB: a low mark of 256 KiB is not below it */
  sl_pipeline_opts dflt = {.lwm = (size_t)256 << 10};
  sl_pipeline_opts good = {.hwm = 4096, .lwm = 4095};

  ck_assert_int_eq(sl_pipeline_new(&p, &same), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_new(&p, &above), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_new(&p, &dflt), SL_EINVAL);
  ck_assert_int_eq(test_alloc_live(), 0);
  ck_assert_int_eq(sl_pipeline_new(&p, &good), 0);
  ck_assert_ptr_nonnull(p);
  sl_pipeline_free(p);
}
END_TEST

/* A refused stage_new calls no destroy and keeps nothing. */
typedef struct destroy_probe {
  pu_common c;
} destroy_probe;

START_TEST(test_stage_new_null_args) {
  static const sl_stage_ops ops = {.read = op_read, .destroy = pu_destroy};
  destroy_probe d;
  sl_stage *st = NULL;

  pu_common_init(&d.c);
  ck_assert_int_eq(sl_stage_new(NULL, "src", &ops, &d), SL_EINVAL);
  ck_assert_int_eq(sl_stage_new(&st, NULL, &ops, &d), SL_EINVAL);
  ck_assert_int_eq(sl_stage_new(&st, "src", NULL, &d), SL_EINVAL);
  ck_assert_int_eq(pu_destroyed(&d), 0);
  ck_assert_int_eq(test_alloc_live(), 0);
  /* The same with good arguments works. */
  ck_assert_int_eq(sl_stage_new(&st, "src", &ops, &d), 0);
  ck_assert_ptr_eq(sl_stage_ctx(st), &d);
  ck_assert_str_eq(sl_stage_name(st), "src");
  sl_stage_free(st);
  ck_assert_int_eq(pu_destroyed(&d), 1);
}
END_TEST

START_TEST(test_stage_new_empty_name) {
  static const sl_stage_ops ops = {.read = op_read, .destroy = pu_destroy};
  destroy_probe d;
  sl_stage *st = NULL;

  pu_common_init(&d.c);
  ck_assert_int_eq(sl_stage_new(&st, "", &ops, &d), SL_EINVAL);
  ck_assert_int_eq(pu_destroyed(&d), 0);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* Ops tables that fit no kind. */
static const sl_stage_ops bad_ops[] = {
    {.destroy = pu_destroy},                        /* nothing at all */
    {0},                                            /* not even destroy */
    {.transform = op_transform, .write = op_write}, /* transform + write */
    {.flush = op_flush},                            /* flush, no transform */
    {.final = op_final},                            /* final, no write */
    {.read = op_read, .transform = op_transform},   /* read + transform */
    {.read = op_read, .flush = op_flush},           /* source with flush */
    {.read = op_read, .final = op_final},           /* source with final */
    {.transform = op_transform, .final = op_final}, /* transform + final */
    {.write = op_write, .flush = op_flush},         /* sink with flush */
    {.read = op_read, .write = op_write, .flush = op_flush},
    {.read = op_read, .write = op_write, .transform = op_transform},
};

START_TEST(test_stage_new_ops_fit_no_kind) {
  destroy_probe d;
  sl_stage *st = (sl_stage *)&st;

  pu_common_init(&d.c);
  ck_assert_int_eq(sl_stage_new(&st, "bad", &bad_ops[_i], &d), SL_EINVAL);
  ck_assert_int_eq(pu_destroyed(&d), 0);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* Every kind the header names is accepted (so the refusals above are about
 * the ops, not the test). */
START_TEST(test_stage_new_every_kind) {
  static const sl_stage_ops good[] = {
      {.read = op_read},
      {.transform = op_transform},
      {.transform = op_transform, .flush = op_flush},
      {.write = op_write},
      {.write = op_write, .final = op_final},
      {.read = op_read, .write = op_write},
      {.read = op_read, .write = op_write, .final = op_final},
  };

  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    sl_stage *st = NULL;
    ck_assert_int_eq(sl_stage_new(&st, "ok", &good[i], NULL), 0);
    ck_assert_ptr_nonnull(st);
    sl_stage_free(st);
  }
}
END_TEST

START_TEST(test_set_output_bad) {
  static const sl_stage_ops ops = {.read = op_read};
  sl_stage *st = NULL;

  ck_assert_int_eq(sl_stage_new(&st, "src", &ops, NULL), 0);
  ck_assert_int_eq(
      sl_stage_set_output(NULL, 4096, SL_LWM_DEFAULT, SL_RING_BYTES),
      SL_EINVAL);
  ck_assert_int_eq(sl_stage_set_output(st, 0, SL_LWM_DEFAULT, SL_RING_BYTES),
                   SL_EINVAL);
  ck_assert_int_eq(sl_stage_set_output(st, 4096, 4096, SL_RING_BYTES),
                   SL_EINVAL);
  ck_assert_int_eq(sl_stage_set_output(st, 4096, 5000, SL_RING_BYTES),
                   SL_EINVAL);
  ck_assert_int_eq(sl_stage_set_output(st, 4096, SL_LWM_DEFAULT, 2), SL_EINVAL);
  ck_assert_int_eq(sl_stage_set_output(st, 4096, SL_LWM_DEFAULT, -1),
                   SL_EINVAL);
  /* and the good ones */
  ck_assert_int_eq(sl_stage_set_output(st, 4096, 4095, SL_RING_BYTES), 0);
  ck_assert_int_eq(sl_stage_set_output(st, 1, 0, SL_RING_BYTES), 0);
  ck_assert_int_eq(sl_stage_set_output(st, 8, SL_LWM_DEFAULT, SL_RING_OBJECTS),
                   0);
  sl_stage_free(st);
}
END_TEST

/* A pipeline with a source and a sink that do nothing. */
static sl_pipeline *tiny_pipeline(sl_stage **src, sl_stage **sink) {
  static const sl_stage_ops rd = {.read = op_read};
  static const sl_stage_ops wr = {.write = op_write};
  sl_pipeline *p = NULL;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(src, "src", &rd, NULL), 0);
  ck_assert_int_eq(sl_stage_new(sink, "sink", &wr, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, *src, *sink, NULL), 0);
  return p;
}

START_TEST(test_null_pipeline_handles) {
  sl_stage_stats st;
  sl_stage *v[1] = {NULL};

  ck_assert_int_eq(sl_pipeline_start(NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_wait(NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chain(NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_chainv(NULL, v, 1), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_on_finished(NULL, pu_finished_cb, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_stage_stats(NULL, 0, &st), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_stats_print(NULL, stderr), SL_EINVAL);
  ck_assert_ptr_null(sl_pipeline_error(NULL));
  ck_assert_ptr_null(sl_pipeline_pool(NULL));
  ck_assert_uint_eq(sl_pipeline_stage_count(NULL), 0);
  ck_assert_ptr_null(sl_pipeline_stage(NULL, 0));
  sl_pipeline_cancel(NULL); /* no-ops */
  sl_pipeline_free(NULL);
  sl_stage_free(NULL);
}
END_TEST

START_TEST(test_null_stage_handles) {
  sl_buf *b = NULL;
  sl_stage *src, *sink;
  sl_pipeline *p = tiny_pipeline(&src, &sink);

  ck_assert_int_eq(sl_stage_status(NULL), SL_EINVAL);
  ck_assert_ptr_null(sl_stage_output(NULL));
  ck_assert_ptr_null(sl_stage_pool(NULL));
  ck_assert_int_eq(sl_stage_cancelled(NULL), 0);
  ck_assert_int_eq(sl_stage_buf(NULL, 10, &b), SL_EINVAL);
  ck_assert_int_eq(sl_stage_buf(src, 10, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_stage_push(src, NULL), SL_EINVAL);
  /* push always takes the buffer, even when it refuses it */
  ck_assert_int_eq(sl_buf_new(NULL, 16, &b), 0);
  ck_assert_int_eq(test_alloc_live() > 0, 1);
  ck_assert_int_eq(sl_stage_push(NULL, b), SL_EINVAL);
  /* a stage with no output (a sink) */
  ck_assert_int_eq(sl_buf_new(NULL, 16, &b), 0);
  ck_assert_int_eq(sl_stage_push(sink, b), SL_EINVAL);
  sl_stage_set_error(NULL, "nothing %d", 1); /* no-op */
  sl_pipeline_free(p);
}
END_TEST

START_TEST(test_stats_out_of_range) {
  sl_stage_stats st;
  sl_stage *src, *sink;
  sl_pipeline *p = tiny_pipeline(&src, &sink);

  ck_assert_int_eq(sl_pipeline_stage_stats(p, 0, &st), 0);
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 2, &st), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_stage_stats(p, (size_t)-1, &st), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 0, NULL), SL_EINVAL);
  ck_assert_ptr_null(sl_pipeline_stage(p, 2));
  ck_assert_int_eq(sl_pipeline_stats_print(p, NULL), SL_EINVAL);
  sl_pipeline_free(p);
}
END_TEST

START_TEST(test_on_finished_after_start_busy) {
  sl_stage *src, *sink;
  sl_pipeline *p = tiny_pipeline(&src, &sink);
  pu_finished fin;

  pu_finished_init(&fin);
  ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &fin), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_on_finished(p, NULL, NULL), SL_EBUSY);
  ck_assert_int_eq(sl_stage_set_output(src, 100, SL_LWM_DEFAULT, SL_RING_BYTES),
                   SL_EBUSY);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(atomic_load(&fin.calls), 1); /* the first one stands */
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Names and messages
 * ---------------------------------------------------------------------- */

static const struct {
  int code;
  const char *name, *msg;
} code_table[] = {
#define XX(name, value, msg) {SL_##name, "SL_" #name, msg},
    SL_ERRNO_MAP(XX)
#undef XX
};
#define NCODES (sizeof code_table / sizeof code_table[0])

START_TEST(test_every_error_code_named) {
  for (size_t i = 0; i < NCODES; i++) {
    ck_assert_int_lt(code_table[i].code, 0);
    ck_assert_str_eq(sl_err_name(code_table[i].code), code_table[i].name);
    ck_assert_str_eq(sl_strerror(code_table[i].code), code_table[i].msg);
    for (size_t j = 0; j < i; j++)
      ck_assert_int_ne(code_table[i].code, code_table[j].code);
  }
  /* errno equivalents are the negated errno */
  ck_assert_int_eq(SL_EINVAL, -EINVAL);
  ck_assert_int_eq(SL_ENOMEM, -ENOMEM);
  ck_assert_int_eq(SL_EPIPE, -EPIPE);
  ck_assert_int_lt(SL_ECLOSED, -4000);
}
END_TEST

/* A stage that got errno from a system call returns sl_err_from_errno. */
START_TEST(test_err_from_errno) {
  static const int unnamed[] = {EDOM, ERANGE, ENOTDIR, EAGAIN, ETIMEDOUT};

  for (size_t i = 0; i < NCODES; i++)
    if (code_table[i].code > -4000) /* the errno equivalents */
      ck_assert_int_eq(sl_err_from_errno(-code_table[i].code),
                       code_table[i].code);
  ck_assert_int_eq(sl_err_from_errno(EINVAL), SL_EINVAL);
  ck_assert_int_eq(sl_err_from_errno(EPIPE), SL_EPIPE);
  for (size_t i = 0; i < sizeof unnamed / sizeof unnamed[0]; i++)
    ck_assert_int_eq(sl_err_from_errno(unnamed[i]), SL_EIO);
}
END_TEST

START_TEST(test_status_codes_named) {
  ck_assert_str_eq(sl_err_name(SL_OK), "SL_OK");
  ck_assert_str_eq(sl_err_name(SL_AGAIN), "SL_AGAIN");
  ck_assert_str_eq(sl_err_name(SL_EOF), "SL_EOF");
  ck_assert_str_eq(sl_err_name(SL_DONE), "SL_DONE");
  ck_assert_str_eq(sl_strerror(SL_DONE), "no more input wanted");
  ck_assert_int_gt(SL_DONE, SL_EOF);
  ck_assert_int_eq(SL_EDEADLK, -EDEADLK);
  ck_assert_int_eq(SL_OK, 0);
  ck_assert_int_gt(SL_AGAIN, 0);
  ck_assert_int_gt(SL_EOF, 0);
  ck_assert_int_ne(SL_AGAIN, SL_EOF);
  ck_assert_str_eq(sl_strerror(SL_EOF), "end of stream");
  for (int c = SL_OK; c <= SL_DONE; c++) {
    ck_assert_ptr_nonnull(sl_strerror(c));
    ck_assert_str_ne(sl_strerror(c), "unknown error");
    ck_assert_str_ne(sl_strerror(c), "");
  }
  ck_assert_str_ne(sl_strerror(SL_OK), sl_strerror(SL_AGAIN));
}
END_TEST

START_TEST(test_unknown_code_named) {
  static const int unknown[] = {-9999, -4999, -1000000, INT32_MIN};

  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    ck_assert_str_eq(sl_strerror(unknown[i]), "unknown error");
    ck_assert_str_eq(sl_err_name(unknown[i]), "SL_UNKNOWN");
  }
  /* an unknown positive value: named unknown, and some message */
  ck_assert_str_eq(sl_err_name(77), "SL_UNKNOWN");
  ck_assert_ptr_nonnull(sl_strerror(77));
}
END_TEST

START_TEST(test_version) {
  char want[32];

  snprintf(want, sizeof want, "%d.%d.%d", SL_VERSION_MAJOR, SL_VERSION_MINOR,
           SL_VERSION_PATCH);
  ck_assert_ptr_nonnull(sl_version());
  ck_assert_str_eq(sl_version(), want);
  ck_assert_uint_eq(sl_version_number(), SL_VERSION_HEX);
  ck_assert_uint_eq(SL_VERSION_HEX, ((unsigned)SL_VERSION_MAJOR << 16) |
                                        ((unsigned)SL_VERSION_MINOR << 8) |
                                        (unsigned)SL_VERSION_PATCH);
}
END_TEST

/* ------------------------------------------------------------------------
 * Failing the nth allocation
 * ---------------------------------------------------------------------- */

static const size_t alloc_sizes[] = {100, 0, 3000, 1, 70000, 64, 5000, 2};
#define ALLOC_LEN ((size_t)200000)

/* The four stages of an allocation run, and what they saw. */
typedef struct alloc_run {
  unsigned char *data;
  pu_src src;
  pu_xf copy, split;
  pu_sink sink;
  pu_finished fin;
  sl_stage *st[4];
} alloc_run;

static void alloc_run_init(alloc_run *r, unsigned char *data) {
  r->data = data;
  pu_src_init(&r->src, data, ALLOC_LEN, alloc_sizes,
              sizeof alloc_sizes / sizeof alloc_sizes[0]);
  pu_xf_init(&r->copy, PU_COPY);
  pu_xf_init(&r->split, PU_SPLIT);
  r->split.split = 4000;
  r->split.trailer = "[END]";
  pu_sink_init(&r->sink);
  pu_finished_init(&r->fin);
  memset(r->st, 0, sizeof r->st);
}

static int alloc_run_stage(alloc_run *r, int i) {
  static const sl_stage_ops src_ops = {.read = pu_src_read,
                                       .destroy = pu_destroy};
  static const sl_stage_ops xf_ops = {.transform = pu_xf_transform,
                                      .destroy = pu_destroy};
  static const sl_stage_ops split_ops = {.transform = pu_xf_transform,
                                         .flush = pu_xf_flush,
                                         .destroy = pu_destroy};
  static const sl_stage_ops sink_ops = {
      .write = pu_sink_write, .final = pu_sink_final, .destroy = pu_destroy};
  switch (i) {
  case 0:
    return sl_stage_new(&r->st[0], "src", &src_ops, &r->src);
  case 1:
    return sl_stage_new(&r->st[1], "copy", &xf_ops, &r->copy);
  case 2:
    return sl_stage_new(&r->st[2], "split", &split_ops, &r->split);
  default:
    return sl_stage_new(&r->st[3], "sink", &sink_ops, &r->sink);
  }
}

/* After a successful run the sink has the input and the trailer. */
static void alloc_run_check_output(alloc_run *r) {
  test_check(r->sink.got.len == ALLOC_LEN + 5);
  test_check(memcmp(r->sink.got.p, r->data, ALLOC_LEN) == 0);
  test_check(memcmp(r->sink.got.p + ALLOC_LEN, "[END]", 5) == 0);
  test_check(r->sink.final_calls == 1);
}

/* Every stage created was destroyed once, and only those. */
static void alloc_run_check_destroyed(alloc_run *r) {
  const void *ctxs[4] = {&r->src, &r->copy, &r->split, &r->sink};

  for (int i = 0; i < 4; i++)
    test_check_msg(pu_destroyed(ctxs[i]) == (r->st[i] != NULL),
                   "stage %d: destroy ran %d times", i, pu_destroyed(ctxs[i]));
}

/* The error after an allocation failure: the bare message when start
 * failed (no stage caused it), else "<stage>: out of memory" (the stages
 * explain nothing). */
static bool alloc_error_ok(const char *err, bool from_start) {
  static const char *const names[] = {"src", "copy", "split", "sink"};
  char want[64];

  if (err == NULL)
    return false;
  if (from_start)
    return strcmp(err, sl_strerror(SL_ENOMEM)) == 0;
  for (size_t i = 0; i < 4; i++) {
    snprintf(want, sizeof want, "%s: %s", names[i], sl_strerror(SL_ENOMEM));
    if (strcmp(err, want) == 0)
      return true;
  }
  return false;
}

enum { PH_NEW, PH_STAGE, PH_CHAIN, PH_START, PH_RUN, PH_NONE, PH_COUNT };

START_TEST(test_alloc_fail_while_building) {
  unsigned char *data = pu_pattern(ALLOC_LEN, 41);
  sl_pipeline_opts o = {.buf_size = 8192, .hwm = 16384, .max_cached = 2};
  long failed_in[PH_COUNT] = {0};
  long n;

  ck_assert_ptr_nonnull(data);
  for (n = 1;; n++) {
    alloc_run r;
    sl_pipeline *p = NULL;
    int rc, phase = PH_NEW;
    bool chained = false, started = false;

    test_check_msg(n < 100000, "allocations never stop");
    alloc_run_init(&r, data);
    fail_alloc_arm(n);

    rc = sl_pipeline_new(&p, &o);
    for (int i = 0; rc == 0 && i < 4; i++) {
      phase = PH_STAGE;
      rc = alloc_run_stage(&r, i);
    }
    if (rc == 0) {
      phase = PH_CHAIN;
      rc = sl_pipeline_on_finished(p, pu_finished_cb, &r.fin);
      if (rc == 0)
        rc = sl_pipeline_chainv(p, r.st, 4);
      chained = rc == 0;
    }
    if (rc == 0) {
      phase = PH_START;
      started = true;
      rc = sl_pipeline_start(p);
      if (rc != 0) {
        /* A failed start still finishes: wait reports the same. */
        test_check_msg(sl_pipeline_wait(p) == rc, "n=%ld: start %s, wait %s", n,
                       sl_err_name(rc), sl_err_name(sl_pipeline_wait(p)));
      } else {
        phase = PH_RUN;
        rc = sl_pipeline_wait(p);
      }
    }
    long count = fail_alloc_count(), failed = fail_alloc_failed();
    fail_alloc_disarm();

    test_check_msg(rc == 0 || rc == SL_ENOMEM, "n=%ld: %s", n, sl_err_name(rc));
    /* The failure surfaced exactly when one was injected. */
    test_check_msg((rc != 0) == (failed == 1),
                   "n=%ld: %ld allocations failed, result %s", n, failed,
                   sl_err_name(rc));
    if (rc == 0) {
      phase = PH_NONE;
      alloc_run_check_output(&r);
    } else if (phase >= PH_START) {
      test_check(alloc_error_ok(sl_pipeline_error(p), phase == PH_START));
    }
    failed_in[phase]++;
    if (started) {
      test_check_msg(atomic_load(&r.fin.calls) == 1, "n=%ld: callback %d", n,
                     atomic_load(&r.fin.calls));
      test_check(atomic_load(&r.fin.status) == rc);
    }
    if (!chained)
      for (int i = 0; i < 4; i++)
        sl_stage_free(r.st[i]); /* still ours; NULL is a no-op */
    sl_pipeline_free(p);
    alloc_run_check_destroyed(&r);
    test_check_msg(test_alloc_live() == 0, "n=%ld: %ld blocks leaked", n,
                   test_alloc_live());
    pu_sink_fini(&r.sink);
    if (count < n) { /* this run did not reach allocation n */
      test_check(rc == 0);
      break;
    }
  }
  /* Every phase met a failure, and the loop went past them all. */
  ck_assert_int_gt(failed_in[PH_NEW], 0);
  ck_assert_int_gt(failed_in[PH_STAGE], 0);
  ck_assert_int_gt(failed_in[PH_CHAIN], 0);
  ck_assert_int_gt(failed_in[PH_START], 0);
  ck_assert_int_gt(failed_in[PH_RUN], 0);
  ck_assert_int_eq(failed_in[PH_NONE], 1);
  free(data);
}
END_TEST

/* Build without failing, then fail the nth allocation from start on: the
 * rings, then the chunks the stages take from the pool while running (a
 * small cache keeps the pool allocating). */
START_TEST(test_alloc_fail_while_running) {
  unsigned char *data = pu_pattern(ALLOC_LEN, 43);
  sl_pipeline_opts o = {.buf_size = 8192, .hwm = 16384, .max_cached = 1};
  long run_failures = 0, start_failures = 0;
  long n;

  ck_assert_ptr_nonnull(data);
  for (n = 1;; n++) {
    alloc_run r;
    sl_pipeline *p = NULL;
    int rc, threads_before;

    test_check_msg(n < 100000, "allocations never stop");
    alloc_run_init(&r, data);
    ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
    for (int i = 0; i < 4; i++)
      test_check(alloc_run_stage(&r, i) == 0);
    test_check(sl_pipeline_on_finished(p, pu_finished_cb, &r.fin) == 0);
    test_check(sl_pipeline_chainv(p, r.st, 4) == 0);
    threads_before = pu_thread_count();

    fail_alloc_arm(n);
    rc = sl_pipeline_start(p);
    if (rc != 0) {
      start_failures++;
      test_check(sl_pipeline_wait(p) == rc);
      test_check(alloc_error_ok(sl_pipeline_error(p), true));
    } else {
      rc = sl_pipeline_wait(p);
      run_failures += rc != 0;
      if (rc != 0)
        test_check(alloc_error_ok(sl_pipeline_error(p), false));
    }
    long count = fail_alloc_count(), failed = fail_alloc_failed();
    fail_alloc_disarm();

    test_check_msg(rc == 0 || rc == SL_ENOMEM, "n=%ld: %s", n, sl_err_name(rc));
    test_check_msg((rc != 0) == (failed == 1),
                   "n=%ld: %ld allocations failed, result %s", n, failed,
                   sl_err_name(rc));
    if (rc == 0)
      alloc_run_check_output(&r);
    else
      test_check(pu_is_prefix(r.sink.got.p, r.sink.got.len, data, ALLOC_LEN));
    test_check(atomic_load(&r.fin.calls) == 1);
    test_check(atomic_load(&r.fin.status) == rc);
    test_check(pu_pool_stats(p).outstanding == 0);
    test_check(pu_threads_left(threads_before) == 0);
    sl_pipeline_free(p);
    alloc_run_check_destroyed(&r);
    test_check_msg(test_alloc_live() == 0, "n=%ld: %ld blocks leaked", n,
                   test_alloc_live());
    pu_sink_fini(&r.sink);
    if (count < n) {
      test_check(rc == 0);
      break;
    }
  }
  ck_assert_int_gt(start_failures, 0);
  ck_assert_int_gt(run_failures, 0);
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

static Suite *errors_suite(void) {
  Suite *s = suite_create("errors");
  TCase *tc;

  tc = tcase("arguments", 30);
  tcase_add_test(tc, test_pipeline_new_null_out);
  tcase_add_test(tc, test_pipeline_new_lwm_not_below_hwm);
  tcase_add_test(tc, test_stage_new_null_args);
  tcase_add_test(tc, test_stage_new_empty_name);
  tcase_add_loop_test(tc, test_stage_new_ops_fit_no_kind, 0,
                      (int)(sizeof bad_ops / sizeof bad_ops[0]));
  tcase_add_test(tc, test_stage_new_every_kind);
  tcase_add_test(tc, test_set_output_bad);
  tcase_add_test(tc, test_null_pipeline_handles);
  tcase_add_test(tc, test_null_stage_handles);
  tcase_add_test(tc, test_stats_out_of_range);
  tcase_add_test(tc, test_on_finished_after_start_busy);
  suite_add_tcase(s, tc);

  tc = tcase("codes", 30);
  tcase_add_test(tc, test_every_error_code_named);
  tcase_add_test(tc, test_err_from_errno);
  tcase_add_test(tc, test_status_codes_named);
  tcase_add_test(tc, test_unknown_code_named);
  tcase_add_test(tc, test_version);
  suite_add_tcase(s, tc);

  tc = tcase("alloc", 600);
  tcase_add_test(tc, test_alloc_fail_while_building);
  tcase_add_test(tc, test_alloc_fail_while_running);
  suite_add_tcase(s, tc);

  return s;
}

int main(void) {
  return run_suite(errors_suite());
}

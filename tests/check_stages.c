/* SPDX-License-Identifier: MIT */
/*
 * Check suite for the stock stages of sluice/stages.h: the memory sources
 * and sinks, the callback sink, the line splitter, the crc32 and adler32
 * pass-through checksums and the throttle.
 *
 * Every test runs with the counting allocator installed (the teardown
 * checks that every block the library allocated was freed) and checks in
 * its teardown that no thread outlived the test. Nothing sleeps to
 * synchronise: a test waits for the pipeline, or for a writer to pause in
 * its ring (pu_ring_wait_paused). The throttle tests measure time only as
 * a lower bound, which a throttle must keep however the threads are
 * scheduled.
 */
#include "pipeutil.h"

#include <sluice/stages.h>

#include <time.h>
#include <zlib.h>

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

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define BUF_SIZE (64 * KIB) /* the pipeline's default buffer size */

/* The edge sizes: empty, 1, 2, 3 bytes, exactly one pooled buffer, one
 * plus one byte, and a large input. */
#define LARGE (50 * MIB)
static const size_t edge_sizes[] = {0, 1, 2, 3, BUF_SIZE, BUF_SIZE + 1, LARGE};

static uint64_t now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Chain the n stages in a new pipeline (opts may be NULL), start it and
 * wait: returns the wait's result and the pipeline in *pp, for the caller
 * to free. Asserts with test_check, so it can run in long loops. */
static int run_stages(sl_pipeline **pp, const sl_pipeline_opts *o,
                      sl_stage *const *st, size_t n) {
  sl_pipeline *p = NULL;

  for (size_t i = 0; i < n; i++)
    test_check_msg(st[i] != NULL, "stage %zu was not made", i);
  test_check(sl_pipeline_new(&p, o) == 0);
  test_check(sl_pipeline_chainv(p, st, n) == 0);
  test_check(sl_pipeline_start(p) == 0);
  *pp = p;
  return sl_pipeline_wait(p);
}

/* The error message of p, or "" when there is none. */
static const char *err_of(sl_pipeline *p) {
  const char *msg = sl_pipeline_error(p);

  return msg != NULL ? msg : "";
}

/* ------------------------------------------------------------------------
 * A recorder: the callback of a callback sink, and the expected lines
 * ---------------------------------------------------------------------- */

typedef struct rec {
  pu_bytes bytes; /* every byte, in order */
  size_t *lens;   /* each chunk's length */
  size_t n, cap;
  long fail_at;  /* fail the call of this index (-1: never) */
  int fail_code; /* with this code */
  int end_code;  /* what the end callback returns */
  int end_calls;
  size_t n_at_end; /* chunks seen when the end callback ran */
  bool oom;
} rec;

static void rec_init(rec *r) {
  memset(r, 0, sizeof *r);
  r->fail_at = -1;
}

static void rec_fini(rec *r) {
  pu_bytes_free(&r->bytes);
  free(r->lens);
  memset(r, 0, sizeof *r);
}

static int rec_data(const void *data, size_t len, void *arg) {
  rec *r = arg;

  if ((long)r->n == r->fail_at)
    return r->fail_code;
  if (r->n == r->cap) {
    size_t cap = r->cap ? 2 * r->cap : 64;
    size_t *grown = realloc(r->lens, cap * sizeof *grown);
    if (grown == NULL) {
      r->oom = true;
      return SL_ENOMEM;
    }
    r->lens = grown;
    r->cap = cap;
  }
  if (!pu_bytes_add(&r->bytes, data, len)) {
    r->oom = true;
    return SL_ENOMEM;
  }
  r->lens[r->n++] = len;
  return 0;
}

static int rec_end(void *arg) {
  rec *r = arg;

  r->end_calls++;
  r->n_at_end = r->n;
  return r->end_code;
}

/* True when a and b saw the same chunks: same lengths, same bytes. */
static bool rec_same(const rec *a, const rec *b) {
  if (a->oom || b->oom || a->n != b->n || a->bytes.len != b->bytes.len)
    return false;
  for (size_t i = 0; i < a->n; i++)
    if (a->lens[i] != b->lens[i])
      return false;
  return a->bytes.len == 0 || memcmp(a->bytes.p, b->bytes.p, a->bytes.len) == 0;
}

/* The lines of text[0..len) under flags, by the rules of sl_lines_new
 * written as plainly as possible, recorded in want. */
static void lines_ref(const char *text, size_t len, unsigned flags, rec *want) {
  size_t start = 0;

  for (size_t i = 0; i < len; i++) {
    if (text[i] != '\n')
      continue;
    size_t content = i - start, term = 1;
    if ((flags & SL_LINES_CRLF) && content > 0 && text[i - 1] == '\r') {
      content--;
      term = 2;
    }
    if (flags & SL_LINES_KEEP_NEWLINE)
      content += term;
    rec_data(text + start, content, want);
    start = i + 1;
  }
  if (start < len)
    rec_data(text + start, len - start, want);
}

/* chunks -> lines (opts) -> callback sink recording in got. Returns the
 * pipeline's result; the message goes to err (when not NULL). */
static int run_lines(const sl_mem_chunk *chunks, size_t n,
                     const sl_lines_opts *lo, rec *got, char *err,
                     size_t errlen) {
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  int rc;

  test_check(sl_mem_source_chunks_new(&st[0], chunks, n, NULL) == 0);
  test_check(sl_lines_new(&st[1], lo) == 0);
  test_check(sl_callback_sink_new(&st[2], rec_data, rec_end, got, NULL) == 0);
  rc = run_stages(&p, NULL, st, 3);
  if (err != NULL)
    snprintf(err, errlen, "%s", err_of(p));
  sl_pipeline_free(p);
  return rc;
}

/* A transform that records the buffers passing through it (the pointers,
 * to prove that a stage before it passed them on without copying). */
#define MAX_PTRS 1024

typedef struct ptrs {
  const sl_buf *v[MAX_PTRS];
  size_t n;
} ptrs;

static int ptrs_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  ptrs *r = ctx;

  if (r->n < MAX_PTRS)
    r->v[r->n] = in;
  r->n++;
  return sl_stage_push(stage, in);
}

static sl_stage *ptrs_stage(const char *name, ptrs *r) {
  sl_stage_ops ops = {.transform = ptrs_transform};
  sl_stage *st = NULL;

  return sl_stage_new(&st, name, &ops, r) == 0 ? st : NULL;
}

/* ------------------------------------------------------------------------
 * Memory source and sink
 * ---------------------------------------------------------------------- */

START_TEST(test_mem_roundtrip) {
  const size_t len = edge_sizes[_i];
  unsigned char *data = pu_pattern(len, (uint32_t)_i + 1);
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  sl_stage_stats ss;
  const void *got = NULL;
  size_t got_len = 1;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, NULL), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[1], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), 0);

  ck_assert_int_eq(sl_mem_sink_data(st[1], &got, &got_len), 0);
  ck_assert_uint_eq(got_len, len);
  if (len == 0)
    ck_assert_ptr_null(got);
  else
    ck_assert(memcmp(got, data, len) == 0);
  /* Full pooled buffers, the last one with what is left. */
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 0, &ss), 0);
  ck_assert_uint_eq(ss.chunks_out, (len + BUF_SIZE - 1) / BUF_SIZE);
  ck_assert_uint_eq(ss.bytes_out, len);
  sl_pipeline_free(p);
  free(data);
}
END_TEST

START_TEST(test_mem_source_chunk_size) {
  const size_t len = 10000, chunk = 999;
  unsigned char *data = pu_pattern(len, 5);
  sl_mem_opts mo = {.chunk_size = chunk};
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  rec got;

  rec_init(&got);
  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, &mo), 0);
  ck_assert_int_eq(sl_callback_sink_new(&st[1], rec_data, NULL, &got, NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), 0);
  sl_pipeline_free(p);

  ck_assert_uint_eq(got.n, len / chunk + 1);
  for (size_t i = 0; i + 1 < got.n; i++)
    ck_assert_uint_eq(got.lens[i], chunk);
  ck_assert_uint_eq(got.lens[got.n - 1], len % chunk);
  ck_assert_uint_eq(got.bytes.len, len);
  ck_assert(memcmp(got.bytes.p, data, len) == 0);
  rec_fini(&got);
  free(data);
}
END_TEST

/* With SL_MEM_COPY the caller's bytes may go before the pipeline starts. */
START_TEST(test_mem_source_copy) {
  const size_t len = 3 * BUF_SIZE + 17;
  unsigned char *data = pu_pattern(len, 6);
  unsigned char *want = pu_pattern(len, 6);
  sl_mem_opts mo = {.flags = SL_MEM_COPY};
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  const void *got;
  size_t got_len;

  ck_assert(data && want);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, &mo), 0);
  memset(data, 0, len);
  free(data);
  ck_assert_int_eq(sl_mem_sink_new(&st[1], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), 0);
  ck_assert_int_eq(sl_mem_sink_data(st[1], &got, &got_len), 0);
  ck_assert_uint_eq(got_len, len);
  ck_assert(memcmp(got, want, len) == 0);
  sl_pipeline_free(p);
  free(want);
}
END_TEST

/* Every entry is one chunk of exactly its length, zero-length entries and
 * one larger than a pooled buffer included. */
START_TEST(test_mem_chunks_boundaries) {
  const size_t big_len = BUF_SIZE + 4464;
  unsigned char *big = pu_pattern(big_len, 7);
  sl_mem_chunk chunks[] = {{"", 0},   {"a", 1},   {NULL, 0},
                           {"", 0},   {"bc", 2},  {big, big_len},
                           {NULL, 0}, {"def", 3}, {"", 0}};
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  rec got, want;

  ck_assert_ptr_nonnull(big);
  rec_init(&got);
  rec_init(&want);
  for (size_t i = 0; i < NELEMS(chunks); i++)
    rec_data(chunks[i].data, chunks[i].len, &want);

  ck_assert_int_eq(
      sl_mem_source_chunks_new(&st[0], chunks, NELEMS(chunks), NULL), 0);
  ck_assert_int_eq(sl_callback_sink_new(&st[1], rec_data, rec_end, &got, NULL),
                   0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), 0);
  sl_pipeline_free(p);

  ck_assert_uint_eq(got.n, NELEMS(chunks));
  ck_assert(rec_same(&got, &want));
  ck_assert_int_eq(got.end_calls, 1);
  ck_assert_uint_eq(got.n_at_end, NELEMS(chunks));
  rec_fini(&got);
  rec_fini(&want);
  free(big);
}
END_TEST

/* With SL_MEM_COPY the array and the bytes are copied. */
START_TEST(test_mem_chunks_copy) {
  char *a = strdup("first"), *b = strdup("second");
  sl_mem_chunk *chunks = malloc(3 * sizeof *chunks);
  sl_mem_opts mo = {.flags = SL_MEM_COPY};
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  rec got;

  ck_assert(a && b && chunks);
  chunks[0] = (sl_mem_chunk){a, 5};
  chunks[1] = (sl_mem_chunk){NULL, 0};
  chunks[2] = (sl_mem_chunk){b, 6};
  ck_assert_int_eq(sl_mem_source_chunks_new(&st[0], chunks, 3, &mo), 0);
  memset(a, 'x', 5);
  memset(b, 'y', 6);
  memset(chunks, 0, 3 * sizeof *chunks);
  free(a);
  free(b);
  free(chunks);

  rec_init(&got);
  ck_assert_int_eq(sl_callback_sink_new(&st[1], rec_data, NULL, &got, NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), 0);
  sl_pipeline_free(p);
  ck_assert_uint_eq(got.n, 3);
  ck_assert_uint_eq(got.lens[0], 5);
  ck_assert_uint_eq(got.lens[1], 0);
  ck_assert_uint_eq(got.lens[2], 6);
  ck_assert_uint_eq(got.bytes.len, 11);
  ck_assert(memcmp(got.bytes.p, "firstsecond", 11) == 0);
  rec_fini(&got);
}
END_TEST

START_TEST(test_mem_chunks_none) {
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  rec got;

  rec_init(&got);
  ck_assert_int_eq(sl_mem_source_chunks_new(&st[0], NULL, 0, NULL), 0);
  ck_assert_int_eq(sl_callback_sink_new(&st[1], rec_data, rec_end, &got, NULL),
                   0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), 0);
  sl_pipeline_free(p);
  ck_assert_uint_eq(got.n, 0);
  ck_assert_int_eq(got.end_calls, 1);
  rec_fini(&got);
}
END_TEST

START_TEST(test_callback_sink_every_byte) {
  const size_t len = MIB + 3, chunk = 777;
  unsigned char *data = pu_pattern(len, 8);
  sl_mem_opts mo = {.chunk_size = chunk};
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  size_t sum = 0;
  rec got;

  ck_assert_ptr_nonnull(data);
  rec_init(&got);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, &mo), 0);
  ck_assert_int_eq(sl_callback_sink_new(&st[1], rec_data, rec_end, &got, NULL),
                   0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), 0);
  sl_pipeline_free(p);

  ck_assert(!got.oom);
  ck_assert_uint_eq(got.n, (len + chunk - 1) / chunk);
  for (size_t i = 0; i < got.n; i++) {
    test_check(got.lens[i] > 0 && got.lens[i] <= chunk);
    sum += got.lens[i];
  }
  ck_assert_uint_eq(sum, len);
  ck_assert_uint_eq(got.bytes.len, len);
  ck_assert(memcmp(got.bytes.p, data, len) == 0);
  ck_assert_int_eq(got.end_calls, 1);
  ck_assert_uint_eq(got.n_at_end, got.n);
  rec_fini(&got);
  free(data);
}
END_TEST

/* The callback's code fails the pipeline, with its message. */
START_TEST(test_callback_sink_error) {
  const size_t len = 100000;
  unsigned char *data = pu_pattern(len, 9);
  sl_mem_opts mo = {.chunk_size = 1000};
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  rec got;

  ck_assert_ptr_nonnull(data);
  rec_init(&got);
  got.fail_at = 3;
  got.fail_code = SL_EIO;
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, &mo), 0);
  ck_assert_int_eq(sl_callback_sink_new(&st[1], rec_data, rec_end, &got, NULL),
                   0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), SL_EIO);
  ck_assert_str_eq(err_of(p), "callback-sink: callback failed: i/o error");
  ck_assert_int_eq(sl_stage_status(st[1]), SL_EIO);
  sl_pipeline_free(p);
  ck_assert_uint_eq(got.n, 3); /* the three before it */
  ck_assert(memcmp(got.bytes.p, data, got.bytes.len) == 0);
  ck_assert_int_eq(got.end_calls, 0);
  rec_fini(&got);
  free(data);
}
END_TEST

START_TEST(test_callback_sink_end_error) {
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  rec got;

  rec_init(&got);
  got.end_code = SL_EDATA;
  ck_assert_int_eq(sl_mem_source_new(&st[0], "abc", 3, NULL), 0);
  ck_assert_int_eq(sl_callback_sink_new(&st[1], rec_data, rec_end, &got, NULL),
                   0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), SL_EDATA);
  ck_assert_str_eq(err_of(p),
                   "callback-sink: callback failed: invalid or corrupt data");
  sl_pipeline_free(p);
  ck_assert_uint_eq(got.bytes.len, 3);
  ck_assert_int_eq(got.end_calls, 1);
  rec_fini(&got);
}
END_TEST

/* data (len bytes, chunks of 300) into a sink that takes at most max. */
static int run_limited(const unsigned char *data, size_t len, size_t max,
                       const void **got, size_t *got_len, char *err,
                       size_t errlen) {
  sl_mem_opts so = {.chunk_size = 300}, ko = {.max_size = max};
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  void *taken = NULL;
  int rc;

  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, &so), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[1], &ko), 0);
  rc = run_stages(&p, NULL, st, 2);
  snprintf(err, errlen, "%s", err_of(p));
  ck_assert_int_eq(sl_mem_sink_take(st[1], &taken, got_len), 0);
  sl_pipeline_free(p);
  /* Out of the library's allocator, into the test's. */
  *got = NULL;
  if (*got_len > 0) {
    void *copy = malloc(*got_len);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, taken, *got_len);
    *got = copy;
  }
  sl_mem_free(taken);
  return rc;
}

START_TEST(test_mem_sink_max_size_exact) {
  unsigned char *data = pu_pattern(1000, 10);
  const void *got;
  size_t got_len;
  char err[300];

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(
      run_limited(data, 1000, 1000, &got, &got_len, err, sizeof err), 0);
  ck_assert_str_eq(err, "");
  ck_assert_uint_eq(got_len, 1000);
  ck_assert(memcmp(got, data, 1000) == 0);
  free((void *)got);
  free(data);
}
END_TEST

START_TEST(test_mem_sink_max_size_exceeded) {
  unsigned char *data = pu_pattern(1001, 11);
  const void *got;
  size_t got_len;
  char err[300];

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(
      run_limited(data, 1001, 1000, &got, &got_len, err, sizeof err),
      SL_EMSGSIZE);
  ck_assert_str_eq(err, "mem-sink: more than 1000 bytes");
  /* Three chunks of 300 fit; the fourth (101 bytes) would not. */
  ck_assert_uint_eq(got_len, 900);
  ck_assert(memcmp(got, data, 900) == 0);
  free((void *)got);
  free(data);
}
END_TEST

/* The caller takes the bytes and frees them with sl_mem_free. */
START_TEST(test_mem_sink_take) {
  const size_t len = 5000;
  unsigned char *data = pu_pattern(len, 12);
  sl_stage *st[2] = {NULL, NULL};
  sl_pipeline *p = NULL;
  void *taken = NULL, *again = (void *)1;
  const void *seen = (void *)1;
  size_t taken_len = 0, again_len = 1, seen_len = 1;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, NULL), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[1], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 2), 0);
  ck_assert_int_eq(sl_mem_sink_take(st[1], &taken, &taken_len), 0);
  ck_assert_uint_eq(taken_len, len);
  ck_assert(memcmp(taken, data, len) == 0);
  ck_assert_int_eq(sl_mem_sink_data(st[1], &seen, &seen_len), 0);
  ck_assert_ptr_null(seen);
  ck_assert_uint_eq(seen_len, 0);
  ck_assert_int_eq(sl_mem_sink_take(st[1], &again, &again_len), 0);
  ck_assert_ptr_null(again);
  ck_assert_uint_eq(again_len, 0);

  sl_pipeline_free(p);
  ck_assert_int_eq(test_alloc_live(), 1); /* the bytes taken, only */
  sl_mem_free(taken);
  sl_mem_free(NULL);
  free(data);
}
END_TEST

/* The getters refuse while the pipeline runs, and report what got through
 * once a cancelled pipeline has been waited for. */
START_TEST(test_getters_busy_while_running) {
  const size_t len = MIB;
  unsigned char *data = pu_pattern(len, 13);
  sl_pipeline_opts o = {.hwm = BUF_SIZE};
  sl_stage *st[4] = {NULL, NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  const void *got = (void *)1;
  size_t got_len = 1;
  uint32_t crc = 7;
  uint64_t bytes = 7;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, NULL), 0);
  ck_assert_int_eq(sl_crc32_new(&st[1], NULL), 0);
  ck_assert_int_eq(sl_throttle_new(&st[2], 1, NULL), 0); /* 1 byte/s */
  ck_assert_int_eq(sl_mem_sink_new(&st[3], NULL), 0);
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  ck_assert_int_eq(sl_pipeline_chainv(p, st, 4), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);

  ck_assert_int_eq(sl_mem_sink_data(st[3], &got, &got_len), SL_EBUSY);
  ck_assert_int_eq(sl_crc32_value(st[1], &crc, &bytes), SL_EBUSY);
  ck_assert_ptr_eq(got, (void *)1); /* untouched */
  ck_assert_uint_eq(crc, 7);
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(st[1])), 0);

  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(sl_mem_sink_data(st[3], &got, &got_len), 0);
  ck_assert_uint_eq(got_len, 0); /* the throttle let nothing through */
  ck_assert_ptr_null(got);
  ck_assert_int_eq(sl_crc32_value(st[1], &crc, &bytes), SL_ECANCELED);
  ck_assert_uint_gt(bytes, 0);
  ck_assert_uint_lt(bytes, len);
  ck_assert_uint_eq(crc, crc32(crc32(0, Z_NULL, 0), data, (uInt)bytes));
  sl_pipeline_free(p);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Lines
 * ---------------------------------------------------------------------- */

static const unsigned lines_flags[] = {0, SL_LINES_KEEP_NEWLINE, SL_LINES_CRLF,
                                       SL_LINES_CRLF | SL_LINES_KEEP_NEWLINE};

/* Every way to cut the text into three chunks (empty ones included): the
 * lines come out the same, a line cut anywhere (between '\r' and '\n'
 * too) assembled whole. */
START_TEST(test_lines_every_cut) {
  static const char text[] =
      "one\ntwo\r\n\r\nthree\rfour\n\nfive\r\n\r\r\nlast\r";
  const size_t len = sizeof text - 1;
  const unsigned flags = lines_flags[_i];
  sl_lines_opts lo = {.flags = flags};
  rec want;
  long runs = 0;

  rec_init(&want);
  lines_ref(text, len, flags, &want);
  ck_assert_uint_ge(want.n, 8);
  for (size_t i = 0; i <= len; i++) {
    for (size_t j = i; j <= len; j++) {
      sl_mem_chunk chunks[3] = {
          {text, i}, {text + i, j - i}, {text + j, len - j}};
      rec got;
      char err[300];
      int rc;

      rec_init(&got);
      rc = run_lines(chunks, 3, &lo, &got, err, sizeof err);
      test_check_msg(rc == 0, "cut %zu/%zu: %s (%s)", i, j, sl_err_name(rc),
                     err);
      test_check_msg(rec_same(&got, &want),
                     "cut %zu/%zu: lines differ (%zu, want %zu)", i, j, got.n,
                     want.n);
      test_check(got.end_calls == 1);
      rec_fini(&got);
      runs++;
    }
  }
  ck_assert_int_eq(runs, (long)((len + 1) * (len + 2) / 2));
  rec_fini(&want);
}
END_TEST

/* Look at one line of a recorder. */
static bool line_is(const rec *r, size_t i, const char *want) {
  size_t off = 0;

  if (i >= r->n)
    return false;
  for (size_t k = 0; k < i; k++)
    off += r->lens[k];
  return r->lens[i] == strlen(want) &&
         (r->lens[i] == 0 || memcmp(r->bytes.p + off, want, r->lens[i]) == 0);
}

static int lines_of(const char *text, unsigned flags, size_t max, rec *got,
                    char *err, size_t errlen) {
  sl_mem_chunk c = {text, strlen(text)};
  sl_lines_opts lo = {.flags = flags, .max_line = max};

  rec_init(got);
  return run_lines(&c, 1, &lo, got, err, errlen);
}

START_TEST(test_lines_crlf) {
  static const char text[] = "a\r\nb\rc\r\n\r\nd\n";
  rec got;

  ck_assert_int_eq(lines_of(text, SL_LINES_CRLF, 0, &got, NULL, 0), 0);
  ck_assert_uint_eq(got.n, 4);
  ck_assert(line_is(&got, 0, "a"));
  ck_assert(line_is(&got, 1, "b\rc")); /* a lone '\r' is content */
  ck_assert(line_is(&got, 2, ""));
  ck_assert(line_is(&got, 3, "d"));
  rec_fini(&got);

  ck_assert_int_eq(
      lines_of(text, SL_LINES_CRLF | SL_LINES_KEEP_NEWLINE, 0, &got, NULL, 0),
      0);
  ck_assert_uint_eq(got.n, 4);
  ck_assert(line_is(&got, 0, "a\r\n"));
  ck_assert(line_is(&got, 1, "b\rc\r\n"));
  ck_assert(line_is(&got, 2, "\r\n"));
  ck_assert(line_is(&got, 3, "d\n"));
  rec_fini(&got);

  /* Without SL_LINES_CRLF the '\r' stays. */
  ck_assert_int_eq(lines_of(text, 0, 0, &got, NULL, 0), 0);
  ck_assert_uint_eq(got.n, 4);
  ck_assert(line_is(&got, 0, "a\r"));
  ck_assert(line_is(&got, 2, "\r"));
  rec_fini(&got);
}
END_TEST

START_TEST(test_lines_last_line_without_newline) {
  rec got;

  ck_assert_int_eq(lines_of("x\ny", 0, 0, &got, NULL, 0), 0);
  ck_assert_uint_eq(got.n, 2);
  ck_assert(line_is(&got, 0, "x"));
  ck_assert(line_is(&got, 1, "y"));
  rec_fini(&got);

  ck_assert_int_eq(lines_of("x\ny", SL_LINES_KEEP_NEWLINE, 0, &got, NULL, 0),
                   0);
  ck_assert(line_is(&got, 0, "x\n"));
  ck_assert(line_is(&got, 1, "y"));
  rec_fini(&got);

  /* "x\n" is one line, not two; "\n" one empty line; "" none. */
  ck_assert_int_eq(lines_of("x\n", 0, 0, &got, NULL, 0), 0);
  ck_assert_uint_eq(got.n, 1);
  rec_fini(&got);
  ck_assert_int_eq(lines_of("\n", 0, 0, &got, NULL, 0), 0);
  ck_assert_uint_eq(got.n, 1);
  ck_assert(line_is(&got, 0, ""));
  rec_fini(&got);
  ck_assert_int_eq(lines_of("", 0, 0, &got, NULL, 0), 0);
  ck_assert_uint_eq(got.n, 0);
  ck_assert_int_eq(got.end_calls, 1);
  rec_fini(&got);
}
END_TEST

/* A line that spans many chunks is assembled into one chunk. */
START_TEST(test_lines_spanning_many_chunks) {
  const size_t line_len = 100000, piece = 100;
  unsigned char *text = pu_pattern(line_len + 1, 14);
  size_t n = (line_len + 1 + piece - 1) / piece;
  sl_mem_chunk *chunks = calloc(n, sizeof *chunks);
  sl_lines_opts lo = {0};
  rec got;

  ck_assert(text && chunks);
  for (size_t i = 0; i < line_len; i++)
    if (text[i] == '\n')
      text[i] = ' ';
  text[line_len] = '\n';
  for (size_t i = 0; i < n; i++) {
    size_t off = i * piece;
    chunks[i].data = text + off;
    chunks[i].len = line_len + 1 - off < piece ? line_len + 1 - off : piece;
  }
  rec_init(&got);
  ck_assert_int_eq(run_lines(chunks, n, &lo, &got, NULL, 0), 0);
  ck_assert_uint_eq(got.n, 1);
  ck_assert_uint_eq(got.lens[0], line_len);
  ck_assert(memcmp(got.bytes.p, text, line_len) == 0);
  rec_fini(&got);
  free(chunks);
  free(text);
}
END_TEST

/* A line above max_line fails with SL_EMSGSIZE naming it. The line before
 * it was pushed on, but the failure aborts the rings, so the sink may or
 * may not have seen it. */
START_TEST(test_lines_max_line) {
  sl_mem_chunk chunks[] = {{"abcd\nab", 7}, {"cde\nzz\n", 7}};
  sl_lines_opts lo = {.max_line = 4};
  char err[300];
  rec got;

  rec_init(&got);
  ck_assert_int_eq(run_lines(chunks, 2, &lo, &got, err, sizeof err),
                   SL_EMSGSIZE);
  ck_assert_str_eq(err, "lines: line 2 longer than 4 bytes (starting at input "
                        "byte 5)");
  ck_assert_uint_le(got.n, 1);
  ck_assert(got.n == 0 || line_is(&got, 0, "abcd"));
  ck_assert_int_eq(got.end_calls, 0);
  rec_fini(&got);

  /* An endless line fails as soon as it passes the limit. */
  ck_assert_int_eq(lines_of("ok\nwaytoolong", 0, 4, &got, err, sizeof err),
                   SL_EMSGSIZE);
  ck_assert_str_eq(err, "lines: line 2 longer than 4 bytes (starting at input "
                        "byte 3)");
  rec_fini(&got);

  /* The terminator does not count. */
  ck_assert_int_eq(lines_of("abcd\n", SL_LINES_KEEP_NEWLINE, 4, &got, NULL, 0),
                   0);
  ck_assert(line_is(&got, 0, "abcd\n"));
  rec_fini(&got);
}
END_TEST

/* With SL_LINES_CRLF a '\r' before '\n' is terminator, not content, even
 * when the limit is reached and the '\n' is in the next chunk; a final
 * '\r' with no '\n' after it is content. */
START_TEST(test_lines_max_line_crlf) {
  sl_mem_chunk cut[] = {{"abc\r", 4}, {"\nxyz\r\n", 6}};
  sl_lines_opts lo = {.flags = SL_LINES_CRLF, .max_line = 3};
  char err[300];
  rec got;

  rec_init(&got);
  ck_assert_int_eq(run_lines(cut, 2, &lo, &got, err, sizeof err), 0);
  ck_assert_uint_eq(got.n, 2);
  ck_assert(line_is(&got, 0, "abc"));
  ck_assert(line_is(&got, 1, "xyz"));
  rec_fini(&got);

  ck_assert_int_eq(lines_of("abc\r", SL_LINES_CRLF, 3, &got, err, sizeof err),
                   SL_EMSGSIZE);
  ck_assert_str_eq(err, "lines: line 1 longer than 3 bytes (starting at input "
                        "byte 0)");
  rec_fini(&got);

  ck_assert_int_eq(
      lines_of("abc\rd\n", SL_LINES_CRLF, 3, &got, err, sizeof err),
      SL_EMSGSIZE);
  rec_fini(&got);
}
END_TEST

/* A source that pushes "ab", a flush marker, then "c\nd". */
static int marker_src_read(sl_stage *stage, void *ctx) {
  static const char *const parts[] = {"ab", NULL, "c\nd"};
  int rc = 0;

  (void)ctx;
  for (size_t i = 0; i < NELEMS(parts) && rc == 0; i++) {
    sl_buf *b = NULL;
    if (parts[i] == NULL) {
      rc = sl_stage_push_flush(stage);
      continue;
    }
    rc = sl_buf_new_copy(sl_stage_pool(stage), parts[i], strlen(parts[i]), &b);
    if (rc == 0)
      rc = sl_stage_push(stage, b);
  }
  return rc != 0 ? rc : SL_EOF;
}

/* A sink that logs "[line]" per chunk and "|" per sync. */
static int log_write(sl_stage *stage, void *ctx, sl_buf *in) {
  pu_bytes *log = ctx;
  bool ok = pu_bytes_add(log, "[", 1) &&
            pu_bytes_add(log, sl_buf_data(in), sl_buf_len(in)) &&
            pu_bytes_add(log, "]", 1);

  (void)stage;
  sl_buf_unref(in);
  return ok ? 0 : SL_ENOMEM;
}

static int log_sync(sl_stage *stage, void *ctx) {
  (void)stage;
  return pu_bytes_add(ctx, "|", 1) ? 0 : SL_ENOMEM;
}

START_TEST(test_lines_marker_does_not_split) {
  sl_stage_ops src_ops = {.read = marker_src_read};
  sl_stage_ops log_ops = {.write = log_write, .sync = log_sync};
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  pu_bytes log = {0};

  ck_assert_int_eq(sl_stage_new(&st[0], "src", &src_ops, NULL), 0);
  ck_assert_int_eq(sl_lines_new(&st[1], NULL), 0);
  ck_assert_int_eq(sl_stage_new(&st[2], "log", &log_ops, &log), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 3), 0);
  sl_pipeline_free(p);
  ck_assert(pu_bytes_add(&log, "", 1));
  ck_assert_str_eq((const char *)log.p, "|[abc][d]");
  pu_bytes_free(&log);
}
END_TEST

/* ------------------------------------------------------------------------
 * crc32 and adler32
 * ---------------------------------------------------------------------- */

enum { SUM_CRC, SUM_ADLER };

static uLong zlib_sum(int kind, const unsigned char *data, size_t len) {
  uLong v = kind == SUM_CRC ? crc32(0, Z_NULL, 0) : adler32(0, Z_NULL, 0);

  while (len > 0) {
    uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
    v = kind == SUM_CRC ? crc32(v, data, n) : adler32(v, data, n);
    data += n;
    len -= n;
  }
  return v;
}

static int sum_new(int kind, sl_stage **out, const sl_checksum_opts *o) {
  return kind == SUM_CRC ? sl_crc32_new(out, o) : sl_adler32_new(out, o);
}

static int sum_value(int kind, sl_stage *st, uint32_t *v, uint64_t *bytes) {
  return kind == SUM_CRC ? sl_crc32_value(st, v, bytes)
                         : sl_adler32_value(st, v, bytes);
}

/* source -> checksum -> mem sink at size edge_sizes[i]: the value is
 * zlib's, the bytes pass unchanged. */
static void check_sum_at(int kind, int i) {
  const size_t len = edge_sizes[i];
  unsigned char *data = pu_pattern(len, (uint32_t)i + 20);
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  const void *got;
  size_t got_len;
  uint32_t v = 0;
  uint64_t bytes = 1;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, NULL), 0);
  ck_assert_int_eq(sum_new(kind, &st[1], NULL), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[2], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 3), 0);
  ck_assert_int_eq(sum_value(kind, st[1], &v, &bytes), 0);
  ck_assert_uint_eq(v, zlib_sum(kind, data, len));
  ck_assert_uint_eq(bytes, len);
  ck_assert_int_eq(sl_mem_sink_data(st[2], &got, &got_len), 0);
  ck_assert_uint_eq(got_len, len);
  ck_assert(len == 0 || memcmp(got, data, len) == 0);
  sl_pipeline_free(p);
  free(data);
}

START_TEST(test_crc32_matches_zlib) {
  check_sum_at(SUM_CRC, _i);
}
END_TEST

START_TEST(test_adler32_matches_zlib) {
  check_sum_at(SUM_ADLER, _i);
}
END_TEST

/* The pass-through stages push the very buffers they get: crc32, adler32,
 * and a throttle whose burst covers the whole input. */
START_TEST(test_pass_through_zero_copy) {
  const size_t len = 100000, chunk = 1000;
  unsigned char *data = pu_pattern(len, 30);
  sl_mem_opts mo = {.chunk_size = chunk};
  sl_throttle_opts to = {.burst = 2 * len};
  ptrs *before = calloc(1, sizeof *before), *after = calloc(1, sizeof *after);
  sl_stage *st[5] = {NULL, NULL, NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  const void *got;
  size_t got_len;

  ck_assert(data && before && after);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, &mo), 0);
  st[1] = ptrs_stage("before", before);
  if (_i == 2)
    ck_assert_int_eq(sl_throttle_new(&st[2], 1, &to), 0);
  else
    ck_assert_int_eq(sum_new(_i, &st[2], NULL), 0);
  st[3] = ptrs_stage("after", after);
  ck_assert_int_eq(sl_mem_sink_new(&st[4], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 5), 0);

  ck_assert_uint_eq(before->n, len / chunk);
  ck_assert_uint_eq(after->n, before->n);
  for (size_t i = 0; i < before->n; i++)
    test_check_msg(before->v[i] == after->v[i], "chunk %zu was copied", i);
  ck_assert_int_eq(sl_mem_sink_data(st[4], &got, &got_len), 0);
  ck_assert_uint_eq(got_len, len);
  ck_assert(memcmp(got, data, len) == 0);
  sl_pipeline_free(p);
  free(before);
  free(after);
  free(data);
}
END_TEST

typedef struct sum_seen {
  int calls;
  uint32_t value;
  uint64_t bytes;
  int code;
} sum_seen;

static int sum_cb(uint32_t value, uint64_t bytes, void *arg) {
  sum_seen *s = arg;

  s->calls++;
  s->value = value;
  s->bytes = bytes;
  return s->code;
}

START_TEST(test_checksum_end_callback) {
  const size_t len = 3 * BUF_SIZE + 5;
  unsigned char *data = pu_pattern(len, 31);
  sum_seen seen = {0};
  sl_checksum_opts co = {.on_end = sum_cb, .arg = &seen};
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  uint32_t v = 0;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, NULL), 0);
  ck_assert_int_eq(sum_new(_i, &st[1], &co), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[2], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 3), 0);
  ck_assert_int_eq(seen.calls, 1);
  ck_assert_uint_eq(seen.value, zlib_sum(_i, data, len));
  ck_assert_uint_eq(seen.bytes, len);
  ck_assert_int_eq(sum_value(_i, st[1], &v, NULL), 0);
  ck_assert_uint_eq(v, seen.value);
  sl_pipeline_free(p);
  free(data);
}
END_TEST

/* The callback's error (a checksum that does not match) fails the
 * pipeline. */
START_TEST(test_checksum_end_callback_error) {
  sum_seen seen = {.code = SL_EDATA};
  sl_checksum_opts co = {.on_end = sum_cb, .arg = &seen};
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;

  ck_assert_int_eq(sl_mem_source_new(&st[0], "hello", 5, NULL), 0);
  ck_assert_int_eq(sl_crc32_new(&st[1], &co), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[2], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 3), SL_EDATA);
  ck_assert_str_eq(err_of(p),
                   "crc32: checksum callback failed: invalid or corrupt data");
  ck_assert_int_eq(seen.calls, 1);
  ck_assert_uint_eq(seen.value, zlib_sum(SUM_CRC, (const void *)"hello", 5));
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Throttle
 * ---------------------------------------------------------------------- */

/* A throttled stage backpressures the source, and is never faster than
 * its rate: B bytes take at least (B - burst) / rate seconds. */
START_TEST(test_throttle_backpressure) {
  const size_t len = 512 * KIB, burst = 32 * KIB;
  const uint64_t rate = MIB; /* bytes per second */
  unsigned char *data = pu_pattern(len, 40);
  sl_pipeline_opts o = {.hwm = 32 * KIB};
  sl_mem_opts mo = {.chunk_size = 16 * KIB};
  sl_throttle_opts to = {.burst = burst};
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  sl_stage_stats ss;
  const void *got;
  size_t got_len;
  uint64_t t0, elapsed, floor_ns;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, &mo), 0);
  ck_assert_int_eq(sl_throttle_new(&st[1], rate, &to), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[2], NULL), 0);
  t0 = now_ns();
  ck_assert_int_eq(run_stages(&p, &o, st, 3), 0);
  elapsed = now_ns() - t0;

  floor_ns = (uint64_t)(len - burst) * 1000000000u / rate;
  ck_assert_msg(elapsed >= floor_ns, "%llu bytes in %llu ns, faster than %llu",
                (unsigned long long)len, (unsigned long long)elapsed,
                (unsigned long long)floor_ns);
  ck_assert_int_eq(sl_pipeline_stage_stats(p, 0, &ss), 0);
  ck_assert_uint_gt(ss.blocked_full_ns, 0);
  ck_assert_uint_gt(pu_ring_stats(sl_stage_output(st[0])).pauses, 0);
  ck_assert_int_eq(sl_mem_sink_data(st[2], &got, &got_len), 0);
  ck_assert_uint_eq(got_len, len);
  ck_assert(memcmp(got, data, len) == 0);
  sl_pipeline_free(p);
  free(data);
}
END_TEST

/* In object mode the rate counts objects. */
START_TEST(test_throttle_objects) {
  enum { N = 30 };
  const uint64_t rate = 100;
  atomic_int counts[N], created[N];
  sl_throttle_opts to = {.burst = 5};
  pu_objsrc src;
  pu_objsink sink;
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  uint64_t t0, elapsed;

  for (int i = 0; i < N; i++) {
    atomic_init(&counts[i], 0);
    atomic_init(&created[i], 0);
  }
  pu_objsrc_init(&src, N, counts, created);
  pu_objsink_init(&sink, 0);
  st[0] = pu_objsrc_stage("objs", &src);
  ck_assert_int_eq(sl_throttle_new(&st[1], rate, &to), 0);
  st[2] = pu_objsink_stage("objsink", &sink);
  ck_assert(st[0] && st[2]);
  ck_assert_int_eq(
      sl_stage_set_output(st[0], 4, SL_LWM_DEFAULT, SL_RING_OBJECTS), 0);
  ck_assert_int_eq(
      sl_stage_set_output(st[1], 4, SL_LWM_DEFAULT, SL_RING_OBJECTS), 0);
  t0 = now_ns();
  ck_assert_int_eq(run_stages(&p, NULL, st, 3), 0);
  elapsed = now_ns() - t0;
  ck_assert_uint_ge(elapsed, (uint64_t)(N - 5) * 1000000000u / rate);
  ck_assert_int_eq(sink.chunks, N);
  ck_assert_int_eq(sink.bad, 0);
  sl_pipeline_free(p);
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(atomic_load(&counts[i]), 1);
}
END_TEST

/* A burst that covers the whole input passes it at once, whatever the
 * rate (1 byte per second here: any wait would outlast the test). */
START_TEST(test_throttle_burst) {
  const size_t len = 256 * KIB;
  unsigned char *data = pu_pattern(len, 41);
  sl_throttle_opts to = {.burst = len};
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  const void *got;
  size_t got_len;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, NULL), 0);
  ck_assert_int_eq(sl_throttle_new(&st[1], 1, &to), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[2], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, 3), 0);
  ck_assert_int_eq(sl_mem_sink_data(st[2], &got, &got_len), 0);
  ck_assert_uint_eq(got_len, len);
  ck_assert(memcmp(got, data, len) == 0);
  sl_pipeline_free(p);
  free(data);
}
END_TEST

/* At 1 byte per second the throttle sleeps for hours on its first chunk;
 * a cancel wakes it at once. */
START_TEST(test_throttle_cancel_while_sleeping) {
  const size_t len = MIB;
  unsigned char *data = pu_pattern(len, 42);
  sl_pipeline_opts o = {.hwm = BUF_SIZE};
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  uint64_t t0, elapsed;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_mem_source_new(&st[0], data, len, NULL), 0);
  ck_assert_int_eq(sl_throttle_new(&st[1], 1, NULL), 0);
  ck_assert_int_eq(sl_mem_sink_new(&st[2], NULL), 0);
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  ck_assert_int_eq(sl_pipeline_chainv(p, st, 3), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  /* The throttle holds its first chunk and reads no more: the source
   * fills the ring and pauses for good. */
  ck_assert_int_eq(pu_ring_wait_paused(sl_stage_output(st[0])), 0);
  ck_assert_uint_le(pu_ring_stats(sl_stage_output(st[0])).chunks_out, 1);

  t0 = now_ns();
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  elapsed = now_ns() - t0;
  ck_assert_msg(elapsed < 5000000000u, "cancel took %llu ns",
                (unsigned long long)elapsed);
  ck_assert_int_eq(sl_stage_status(st[1]), SL_ECANCELED);
  ck_assert_uint_eq(pu_ring_stats(sl_stage_output(st[1])).chunks_in, 0);
  sl_pipeline_free(p);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Arguments, names, modes, allocation failure
 * ---------------------------------------------------------------------- */

START_TEST(test_bad_args) {
  static const char bytes[] = "abc";
  sl_mem_chunk bad_null = {NULL, 5};
  sl_mem_chunk too_big = {bytes, ((size_t)1 << 30) + 1};
  sl_mem_opts bad_flags = {.flags = 4};
  sl_mem_opts bad_chunk = {.chunk_size = ((size_t)1 << 30) + 1};
  sl_mem_opts empty_name = {.name = ""};
  sl_lines_opts bad_lines = {.flags = 4};
  sl_throttle_opts bad_burst = {.burst = SL_THROTTLE_MAX_BURST + 1};
  sl_stage *st = (sl_stage *)1;
  sl_stage *sink = NULL, *crc = NULL, *adler = NULL, *lines = NULL;
  const void *cdata;
  void *data;
  size_t len;
  uint32_t v;

  ck_assert_int_eq(sl_mem_source_new(NULL, bytes, 3, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_mem_source_new(&st, NULL, 1, NULL), SL_EINVAL);
  ck_assert_ptr_null(st);
  ck_assert_int_eq(sl_mem_source_new(&st, bytes, 3, &bad_flags), SL_EINVAL);
  ck_assert_int_eq(sl_mem_source_new(&st, bytes, 3, &bad_chunk), SL_EINVAL);
  ck_assert_int_eq(sl_mem_source_new(&st, bytes, 3, &empty_name), SL_EINVAL);
  ck_assert_ptr_null(st);

  ck_assert_int_eq(sl_mem_source_chunks_new(NULL, NULL, 0, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_mem_source_chunks_new(&st, NULL, 1, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_mem_source_chunks_new(&st, &bad_null, 1, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_mem_source_chunks_new(&st, &too_big, 1, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_mem_source_chunks_new(&st, NULL, 0, &bad_flags),
                   SL_EINVAL);
  ck_assert_ptr_null(st);

  ck_assert_int_eq(sl_mem_sink_new(NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_callback_sink_new(NULL, rec_data, NULL, NULL, NULL),
                   SL_EINVAL);
  ck_assert_int_eq(sl_callback_sink_new(&st, NULL, rec_end, NULL, NULL),
                   SL_EINVAL);
  ck_assert_ptr_null(st);
  ck_assert_int_eq(sl_lines_new(NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_lines_new(&st, &bad_lines), SL_EINVAL);
  ck_assert_int_eq(sl_crc32_new(NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_adler32_new(NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_throttle_new(NULL, 1, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_throttle_new(&st, 0, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_throttle_new(&st, 1, &bad_burst), SL_EINVAL);
  ck_assert_ptr_null(st);

  /* Getters: NULL arguments and stages of another kind. */
  ck_assert_int_eq(sl_mem_sink_new(&sink, NULL), 0);
  ck_assert_int_eq(sl_crc32_new(&crc, NULL), 0);
  ck_assert_int_eq(sl_adler32_new(&adler, NULL), 0);
  ck_assert_int_eq(sl_lines_new(&lines, NULL), 0);
  ck_assert_int_eq(sl_mem_sink_data(NULL, &cdata, &len), SL_EINVAL);
  ck_assert_int_eq(sl_mem_sink_data(sink, NULL, &len), SL_EINVAL);
  ck_assert_int_eq(sl_mem_sink_data(sink, &cdata, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_mem_sink_data(lines, &cdata, &len), SL_EINVAL);
  ck_assert_int_eq(sl_mem_sink_take(crc, &data, &len), SL_EINVAL);
  ck_assert_int_eq(sl_mem_sink_take(sink, NULL, &len), SL_EINVAL);
  ck_assert_int_eq(sl_crc32_value(NULL, &v, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_crc32_value(crc, NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_crc32_value(adler, &v, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_crc32_value(sink, &v, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_adler32_value(crc, &v, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_adler32_value(lines, &v, NULL), SL_EINVAL);
  sl_stage_free(sink);
  sl_stage_free(crc);
  sl_stage_free(adler);
  sl_stage_free(lines);
}
END_TEST

/* Before a stage runs, the getters give an empty result. */
START_TEST(test_getters_before_start) {
  sl_stage *sink = NULL, *crc = NULL, *adler = NULL;
  const void *data = (void *)1;
  size_t len = 1;
  uint32_t v = 7;
  uint64_t bytes = 7;

  ck_assert_int_eq(sl_mem_sink_new(&sink, NULL), 0);
  ck_assert_int_eq(sl_crc32_new(&crc, NULL), 0);
  ck_assert_int_eq(sl_adler32_new(&adler, NULL), 0);
  ck_assert_int_eq(sl_mem_sink_data(sink, &data, &len), 0);
  ck_assert_ptr_null(data);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(sl_crc32_value(crc, &v, &bytes), SL_ECANCELED);
  ck_assert_uint_eq(v, 0);
  ck_assert_uint_eq(bytes, 0);
  ck_assert_int_eq(sl_adler32_value(adler, &v, &bytes), SL_ECANCELED);
  ck_assert_uint_eq(v, 1);
  ck_assert_uint_eq(bytes, 0);
  sl_stage_free(sink);
  sl_stage_free(crc);
  sl_stage_free(adler);
}
END_TEST

/* Make stock stage number which (a name when named), for the tables
 * below. */
#define NKINDS 10

static int make_stage(int which, sl_stage **out, const char *name) {
  static const char bytes[] = "hello\nworld\n";
  static const sl_mem_chunk chunks[] = {{bytes, 6}, {NULL, 0}, {bytes + 6, 6}};
  sl_mem_opts mo = {.name = name};
  sl_mem_opts copy = {.name = name, .flags = SL_MEM_COPY};
  sl_lines_opts lo = {.name = name};
  sl_checksum_opts co = {.name = name};
  sl_throttle_opts to = {.name = name};

  switch (which) {
  case 0:
    return sl_mem_source_new(out, bytes, 12, &mo);
  case 1:
    return sl_mem_source_new(out, bytes, 12, &copy);
  case 2:
    return sl_mem_source_chunks_new(out, chunks, 3, &mo);
  case 3:
    return sl_mem_source_chunks_new(out, chunks, 3, &copy);
  case 4:
    return sl_mem_sink_new(out, &mo);
  case 5:
    return sl_callback_sink_new(out, rec_data, NULL, NULL, &mo);
  case 6:
    return sl_lines_new(out, &lo);
  case 7:
    return sl_crc32_new(out, &co);
  case 8:
    return sl_adler32_new(out, &co);
  default:
    return sl_throttle_new(out, 1000, &to);
  }
}

static const char *const default_names[NKINDS] = {
    "mem-source",    "mem-source", "mem-source", "mem-source", "mem-sink",
    "callback-sink", "lines",      "crc32",      "adler32",    "throttle"};

START_TEST(test_names) {
  sl_stage *st = NULL;

  ck_assert_int_eq(make_stage(_i, &st, NULL), 0);
  ck_assert_str_eq(sl_stage_name(st), default_names[_i]);
  sl_stage_free(st);
  ck_assert_int_eq(make_stage(_i, &st, "mine"), 0);
  ck_assert_str_eq(sl_stage_name(st), "mine");
  sl_stage_free(st);
}
END_TEST

/* Every constructor: failing any one of its allocations gives SL_ENOMEM,
 * no stage and no leak; the loop ends with a run that failed nothing. */
START_TEST(test_alloc_fail_constructors) {
  long n;

  for (n = 1;; n++) {
    sl_stage *st = (sl_stage *)1;
    int rc;
    long count;

    ck_assert_int_lt(n, 100);
    fail_alloc_arm(n);
    rc = make_stage(_i, &st, NULL);
    count = fail_alloc_count();
    fail_alloc_disarm();
    if (count < n) { /* allocation n never came: nothing failed */
      ck_assert_int_eq(rc, 0);
      ck_assert_int_eq(fail_alloc_failed(), 0);
      sl_stage_free(st);
      break;
    }
    ck_assert_int_eq(fail_alloc_failed(), 1);
    ck_assert_int_eq(rc, SL_ENOMEM);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(test_alloc_live(), 0);
  }
  ck_assert_int_gt(n, 2); /* the context and the stage at least */
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* Fail the nth allocation from start on, through source -> lines ->
 * crc32 -> mem sink (the pool, the partial line, the growing sink): each
 * run succeeds or fails with SL_ENOMEM, and leaks nothing. */
START_TEST(test_alloc_fail_while_running) {
  const size_t len = 6000;
  char *text = malloc(len);
  sl_pipeline_opts o = {.buf_size = 1024, .hwm = 2048, .max_cached = 1};
  sl_mem_opts mo = {.chunk_size = 700};
  sl_lines_opts lo = {.flags = SL_LINES_KEEP_NEWLINE};
  long n, failures = 0;

  ck_assert_ptr_nonnull(text);
  for (size_t i = 0; i < len; i++)
    text[i] = i % 97 == 96 ? '\n' : (char)('a' + i % 26);
  for (n = 1;; n++) {
    sl_stage *st[4] = {NULL, NULL, NULL, NULL};
    sl_pipeline *p = NULL;
    const void *got;
    size_t got_len;
    long count;
    int rc;

    test_check_msg(n < 100000, "allocations never stop");
    test_check(sl_mem_source_new(&st[0], text, len, &mo) == 0);
    test_check(sl_lines_new(&st[1], &lo) == 0);
    test_check(sl_crc32_new(&st[2], NULL) == 0);
    test_check(sl_mem_sink_new(&st[3], NULL) == 0);
    test_check(sl_pipeline_new(&p, &o) == 0);
    test_check(sl_pipeline_chainv(p, st, 4) == 0);
    fail_alloc_arm(n);
    rc = sl_pipeline_start(p);
    if (rc == 0)
      rc = sl_pipeline_wait(p);
    else
      test_check(sl_pipeline_wait(p) == rc);
    count = fail_alloc_count();
    fail_alloc_disarm();

    test_check_msg(rc == 0 || rc == SL_ENOMEM, "n=%ld: %s", n, sl_err_name(rc));
    test_check_msg((rc != 0) == (fail_alloc_failed() == 1),
                   "n=%ld: failure injected, result %s", n, sl_err_name(rc));
    test_check(sl_mem_sink_data(st[3], &got, &got_len) == 0);
    test_check(got_len <= len);
    test_check(got_len == 0 || memcmp(got, text, got_len) == 0);
    if (rc == 0)
      test_check(got_len == len);
    failures += rc != 0;
    sl_pipeline_free(p);
    test_check_msg(test_alloc_live() == 0, "n=%ld: %ld blocks leaked", n,
                   test_alloc_live());
    if (count < n)
      break;
  }
  ck_assert_int_gt(failures, 0);
  free(text);
}
END_TEST

/* The byte stages refuse object buffers with SL_EINVAL. */
START_TEST(test_objects_refused) {
  enum { N = 3 };
  atomic_int counts[N], created[N];
  pu_objsrc src;
  sl_stage *st[3] = {NULL, NULL, NULL};
  sl_pipeline *p = NULL;
  size_t n = 3;
  rec got;

  for (int i = 0; i < N; i++) {
    atomic_init(&counts[i], 0);
    atomic_init(&created[i], 0);
  }
  rec_init(&got);
  pu_objsrc_init(&src, N, counts, created);
  st[0] = pu_objsrc_stage("objs", &src);
  ck_assert_ptr_nonnull(st[0]);
  ck_assert_int_eq(
      sl_stage_set_output(st[0], 4, SL_LWM_DEFAULT, SL_RING_OBJECTS), 0);
  switch (_i) {
  case 0:
    ck_assert_int_eq(sl_mem_sink_new(&st[1], NULL), 0);
    n = 2;
    break;
  case 1:
    ck_assert_int_eq(
        sl_callback_sink_new(&st[1], rec_data, rec_end, &got, NULL), 0);
    n = 2;
    break;
  case 2:
    ck_assert_int_eq(sl_lines_new(&st[1], NULL), 0);
    break;
  default:
    ck_assert_int_eq(sl_crc32_new(&st[1], NULL), 0);
    break;
  }
  if (n == 3)
    ck_assert_int_eq(sl_mem_sink_new(&st[2], NULL), 0);
  ck_assert_int_eq(run_stages(&p, NULL, st, n), SL_EINVAL);
  ck_assert_ptr_nonnull(strstr(err_of(p), "object buffer in a byte stream"));
  ck_assert_int_eq(sl_stage_status(st[1]), SL_EINVAL);
  sl_pipeline_free(p);
  ck_assert_uint_eq(got.n, 0);
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(atomic_load(&counts[i]), atomic_load(&created[i]));
  rec_fini(&got);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);

  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

static Suite *stages_suite(void) {
  Suite *s = suite_create("stages");
  TCase *tc;

  tc = tcase("mem", 120);
  tcase_add_loop_test(tc, test_mem_roundtrip, 0, (int)NELEMS(edge_sizes));
  tcase_add_test(tc, test_mem_source_chunk_size);
  tcase_add_test(tc, test_mem_source_copy);
  tcase_add_test(tc, test_mem_chunks_boundaries);
  tcase_add_test(tc, test_mem_chunks_copy);
  tcase_add_test(tc, test_mem_chunks_none);
  tcase_add_test(tc, test_callback_sink_every_byte);
  tcase_add_test(tc, test_callback_sink_error);
  tcase_add_test(tc, test_callback_sink_end_error);
  tcase_add_test(tc, test_mem_sink_max_size_exact);
  tcase_add_test(tc, test_mem_sink_max_size_exceeded);
  tcase_add_test(tc, test_mem_sink_take);
  tcase_add_test(tc, test_getters_busy_while_running);
  suite_add_tcase(s, tc);

  tc = tcase("lines", 300);
  tcase_add_loop_test(tc, test_lines_every_cut, 0, (int)NELEMS(lines_flags));
  tcase_add_test(tc, test_lines_crlf);
  tcase_add_test(tc, test_lines_last_line_without_newline);
  tcase_add_test(tc, test_lines_spanning_many_chunks);
  tcase_add_test(tc, test_lines_max_line);
  tcase_add_test(tc, test_lines_max_line_crlf);
  tcase_add_test(tc, test_lines_marker_does_not_split);
  suite_add_tcase(s, tc);

  tc = tcase("checksum", 120);
  tcase_add_loop_test(tc, test_crc32_matches_zlib, 0, (int)NELEMS(edge_sizes));
  tcase_add_loop_test(tc, test_adler32_matches_zlib, 0,
                      (int)NELEMS(edge_sizes));
  tcase_add_loop_test(tc, test_pass_through_zero_copy, 0, 3);
  tcase_add_loop_test(tc, test_checksum_end_callback, 0, 2);
  tcase_add_test(tc, test_checksum_end_callback_error);
  suite_add_tcase(s, tc);

  tc = tcase("throttle", 60);
  tcase_add_test(tc, test_throttle_backpressure);
  tcase_add_test(tc, test_throttle_objects);
  tcase_add_test(tc, test_throttle_burst);
  tcase_add_test(tc, test_throttle_cancel_while_sleeping);
  suite_add_tcase(s, tc);

  tc = tcase("arguments", 30);
  tcase_add_test(tc, test_bad_args);
  tcase_add_test(tc, test_getters_before_start);
  tcase_add_loop_test(tc, test_names, 0, NKINDS);
  tcase_add_loop_test(tc, test_objects_refused, 0, 4);
  suite_add_tcase(s, tc);

  tc = tcase("alloc", 600);
  tcase_add_loop_test(tc, test_alloc_fail_constructors, 0, NKINDS);
  tcase_add_test(tc, test_alloc_fail_while_running);
  suite_add_tcase(s, tc);

  return s;
}

int main(void) {
  return run_suite(stages_suite());
}

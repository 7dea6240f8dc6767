/* SPDX-License-Identifier: MIT */
/*
 * sl_pgunzip_chain_workers on block files: gzip members that carry their
 * length (the block format's 'S','L' subfield, BGZF's 'B','C'), inflated
 * on workers and pushed in order. The files are made here, member by
 * member (a raw deflate stream each, the header written by hand), so that
 * any member can be damaged on purpose: the output must be the members'
 * contents in order, and each error must name the member (and the offset)
 * that a reader going through the file in order meets first.
 */
#include "engineutil.h"
#include "pipeutil.h"
#include "stages/zlib-int.h"
#include <sluice/pgzip.h>
#include <sluice/zlib.h>

#include <stdint.h>
#include <stdio.h>
#include <zlib.h>

enum { K_SL, K_BC, K_NONE };

/* A file being made: its bytes, its content, where each member starts. */
typedef struct bfile {
  pu_bytes z, plain;
  size_t *off;  /* member offsets */
  size_t *poff; /* where each member's content starts in plain */
  size_t n, cap;
} bfile;

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

/* Append a member holding p[0..n), with a length subfield of kind. */
static void add_member(bfile *f, const unsigned char *p, size_t n, int kind) {
  z_stream s = {0};
  size_t bound = n + n / 1000 + 64;
  unsigned char *d = malloc(bound);
  unsigned char h[20] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  size_t hlen = 10;

  ck_assert(d != NULL);
  ck_assert_int_eq(deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY),
                   Z_OK);
  s.next_in = (unsigned char *)(uintptr_t)p;
  s.avail_in = (uInt)n;
  s.next_out = d;
  s.avail_out = (uInt)bound;
  ck_assert_int_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
  size_t dlen = s.total_out;
  deflateEnd(&s);
  if (kind == K_SL) {
    h[3] = 4;
    h[10] = 8;
    h[11] = 0;
    h[12] = 'S';
    h[13] = 'L';
    h[14] = 4;
    h[15] = 0;
    hlen = 20;
    put32(h + 16, (uint32_t)(hlen + dlen + 8));
  } else if (kind == K_BC) {
    h[3] = 4;
    h[10] = 6;
    h[11] = 0;
    h[12] = 'B';
    h[13] = 'C';
    h[14] = 2;
    h[15] = 0;
    hlen = 18;
    size_t bs = hlen + dlen + 8 - 1;
    ck_assert(bs < 65536);
    h[16] = (unsigned char)bs;
    h[17] = (unsigned char)(bs >> 8);
  }
  if (f->n == f->cap) {
    f->cap = f->cap ? 2 * f->cap : 64;
    f->off = realloc(f->off, f->cap * sizeof *f->off);
    f->poff = realloc(f->poff, f->cap * sizeof *f->poff);
    ck_assert(f->off != NULL && f->poff != NULL);
  }
  f->poff[f->n] = f->plain.len;
  f->off[f->n++] = f->z.len;
  unsigned char t[8];
  put32(t, (uint32_t)crc32(0, p, (uInt)n));
  put32(t + 4, (uint32_t)n);
  ck_assert(pu_bytes_add(&f->z, h, hlen));
  ck_assert(pu_bytes_add(&f->z, d, dlen));
  ck_assert(pu_bytes_add(&f->z, t, 8));
  ck_assert(pu_bytes_add(&f->plain, p, n));
  free(d);
}

static void bfile_free(bfile *f) {
  pu_bytes_free(&f->z);
  pu_bytes_free(&f->plain);
  free(f->off);
  free(f->poff);
  memset(f, 0, sizeof *f);
}

/* The length of member i, by the offsets. */
static size_t mlen(const bfile *f, size_t i) {
  return (i + 1 < f->n ? f->off[i + 1] : f->z.len) - f->off[i];
}

/* A file of n members of kind, of varied sizes (0 .. 300 bytes, each
 * size a function of i) cut from a pattern. */
static void make_many(bfile *f, size_t n, int kind, uint32_t seed) {
  unsigned char *data = pu_pattern(301, seed);

  ck_assert(data != NULL);
  for (size_t i = 0; i < n; i++)
    add_member(f, data + i % 7, (i * 7919 + seed) % 294, kind);
  free(data);
}

typedef struct brun {
  sl_pipeline *p;
  sl_stage *gun;
  pu_src src;
  pu_sink sink;
  int rc;
  char err[512];
} brun;

/* in[0..len), cut by sizes, through sl_pgunzip_chain_workers. */
static void brun_go(brun *r, const unsigned char *in, size_t len,
                    const size_t *sizes, size_t nsizes, unsigned workers,
                    const sl_zlib_opts *zo) {
  sl_stage *src, *sink;

  memset(r, 0, sizeof *r);
  ck_assert_int_eq(sl_pipeline_new(&r->p, NULL), 0);
  pu_src_init(&r->src, in, len, sizes, nsizes);
  pu_sink_init(&r->sink);
  src = pu_src_stage("src", &r->src);
  sink = pu_sink_stage("sink", &r->sink);
  ck_assert(src != NULL && sink != NULL);
  ck_assert_int_eq(sl_pgunzip_chain_workers(r->p, src, sink, zo, workers), 0);
  r->gun = sl_pipeline_stage(r->p, 1);
  ck_assert_int_eq(sl_pipeline_start(r->p), 0);
  r->rc = sl_pipeline_wait(r->p);
  const char *e = sl_pipeline_error(r->p);
  snprintf(r->err, sizeof r->err, "%s", e ? e : "");
}

static void brun_free(brun *r) {
  sl_pipeline_free(r->p);
  pu_sink_fini(&r->sink);
}

/* The whole content, with blocks of the members inflated on the
 * workers (the others streamed): the count is what tells the parallel
 * path from the streaming gunzip, whose output is the same. */
static void expect_ok(const bfile *f, const size_t *sizes, size_t nsizes,
                      unsigned workers, uint64_t blocks) {
  brun r;

  brun_go(&r, f->z.p, f->z.len, sizes, nsizes, workers, NULL);
  ck_assert_msg(r.rc == 0, "%s", r.err);
  ck_assert_uint_eq(r.sink.got.len, f->plain.len);
  ck_assert(f->plain.len == 0 ||
            memcmp(r.sink.got.p, f->plain.p, f->plain.len) == 0);
  ck_assert_uint_eq(sl__bgunzip_blocks(r.gun), blocks);
  brun_free(&r);
}

/* SL_EDATA with want in the message, on 1, 2 and 4 workers. With f, the
 * error is in member k, counted from 0: exactly the k members before it
 * were inflated on the workers, and what reached the sink (a failure
 * drops what is still in the rings) is a prefix of the content of the
 * first `upto` members (k, or k + 1 when member k was streamed: the input
 * ends inside it, and what it holds is decoded). */
static void expect_error_upto(const bfile *f, const unsigned char *z,
                              size_t len, size_t k, size_t upto,
                              const char *want) {
  static const size_t sizes[] = {4096, 1, 65536, 333};
  static const unsigned workers[] = {1, 2, 4};
  brun r;

  for (int i = 0; i < 3; i++) {
    brun_go(&r, z, len, sizes, 4, workers[i], NULL);
    ck_assert_int_eq(r.rc, SL_EDATA);
    ck_assert_msg(strstr(r.err, want) != NULL, "got '%s', want '%s'", r.err,
                  want);
    if (f != NULL) {
      ck_assert_uint_eq(sl__bgunzip_blocks(r.gun), k);
      ck_assert_uint_le(r.sink.got.len,
                        upto < f->n ? f->poff[upto] : f->plain.len);
      ck_assert(r.sink.got.len == 0 ||
                memcmp(r.sink.got.p, f->plain.p, r.sink.got.len) == 0);
    }
    brun_free(&r);
  }
}

static void expect_error_in(const bfile *f, const unsigned char *z, size_t len,
                            size_t k, const char *want) {
  expect_error_upto(f, z, len, k, k, want);
}

/* ------------------------------------------------------------------------ */

/* Many tiny members of varied sizes on four workers: any result pushed
 * out of order shows in the bytes. Chunks of every size, one byte up. */
START_TEST(test_order) {
  static const size_t sizes[] = {1, 7, 4096, 65536, 100, 3};
  bfile f = {0};

  make_many(&f, 4000, _i ? K_BC : K_SL, 11);
  expect_ok(&f, sizes, 6, 4, f.n);
  expect_ok(&f, sizes + 2, 1, 1, f.n);
  expect_ok(&f, sizes + 1, 1, 2, f.n);
  bfile_free(&f);
}
END_TEST

/* The edge sizes: a member of 0, 1, 2, 3 bytes alone, one full member
 * (the largest BGZF holds: bgzip's 65280-byte blocks), one member plus
 * one byte, empty members among full ones. _i: 'S','L' or BGZF. */
START_TEST(test_edges) {
  static const size_t whole[] = {1 << 20};
  static const size_t lens[] = {0, 1, 2, 3, 65280};
  int kind = _i ? K_BC : K_SL;
  unsigned char *big = pu_pattern(200000, 5);
  bfile f = {0};

  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    add_member(&f, big, lens[i], kind);
    expect_ok(&f, whole, 1, 4, 1);
    add_member(&f, big + lens[i], 1, kind);
    expect_ok(&f, (const size_t[]){1}, 1, 2, 2);
    bfile_free(&f);
  }

  if (kind == K_SL) {
    add_member(&f, big, 200000, K_SL);
    expect_ok(&f, whole, 1, 2, 1);
    bfile_free(&f);
  }

  for (int i = 0; i < 20; i++)
    add_member(&f, big, i % 3 == 0 ? 0 : (size_t)i * 1000, kind);
  expect_ok(&f, whole, 1, 3, 20);
  bfile_free(&f);
  free(big);
}
END_TEST

/* A member without a length between block members, and a plain gzip
 * file: gzip's output. */
START_TEST(test_no_length) {
  static const size_t sizes[] = {513};
  bfile f = {0};
  unsigned char *data = pu_pattern(5000, 3);

  for (int i = 0; i < 30; i++)
    add_member(&f, data + i, 100 + (size_t)i * 37, i == 12 ? K_NONE : K_SL);
  expect_ok(&f, sizes, 1, 4, 12);
  bfile_free(&f);

  for (int i = 0; i < 10; i++)
    add_member(&f, data + i, 1000, i < 5 ? K_NONE : K_BC);
  expect_ok(&f, sizes, 1, 4, 0);
  bfile_free(&f);
  free(data);
}
END_TEST

/* Two members with a bad CRC-32: the first in the file is named, however
 * the workers finish. _i: 0 the CRC, 1 ISIZE. */
START_TEST(test_bad_trailer) {
  bfile f = {0};
  char want[128];

  make_many(&f, 800, K_SL, 7);
  size_t a = 300, b = 310;
  while (mlen(&f, a) == 28) /* an empty member's CRC is checked too */
    a++;
  size_t ta = f.off[a] + mlen(&f, a) - 8 + (_i ? 4 : 0);
  f.z.p[ta] ^= 1;
  f.z.p[f.off[b] + mlen(&f, b) - 8 + (_i ? 4 : 0)] ^= 1;
  snprintf(want, sizeof want, "%s mismatch at input byte %zu",
           _i ? "isize" : "crc32", ta);
  for (int k = 0; k < 5; k++)
    expect_error_in(&f, f.z.p, f.z.len, a, want);
  bfile_free(&f);
}
END_TEST

/* A length subfield that is wrong: _i 0 one byte too long, 1 one byte
 * too short, 2 past the end of the file, 3 shorter than the header. The
 * last one (2) is a member the input ends inside, by its length: it is
 * streamed, and as its data and trailer are whole, the file reads as
 * gzip reads it. */
START_TEST(test_bad_length) {
  bfile f = {0};
  char want[160];

  make_many(&f, 50, K_SL, 9);
  size_t k = _i == 2 ? f.n - 1 : 20, at = f.off[k];
  size_t len = mlen(&f, k);
  uint32_t bad = _i == 0   ? (uint32_t)len + 1
                 : _i == 1 ? (uint32_t)len - 1
                 : _i == 2 ? (uint32_t)len + 1000
                           : 12;
  put32(f.z.p + at + 16, bad);
  if (_i == 2) {
    static const size_t sizes[] = {4096, 1, 65536, 333};
    for (unsigned w = 1; w <= 4; w *= 2)
      expect_ok(&f, sizes, 4, w, f.n - 1);
    bfile_free(&f);
    return;
  }
  switch (_i) {
  case 0:
    snprintf(want, sizeof want,
             "wrong block length at input byte %zu: the deflate data ends at "
             "byte %zu, the length says %zu",
             at, at + len - 8, at + (size_t)bad - 8);
    break;
  case 1:
    snprintf(want, sizeof want,
             "wrong block length at input byte %zu: the deflate data runs "
             "past the member's end at byte %zu",
             at, at + (size_t)bad - 8);
    break;
  default:
    snprintf(want, sizeof want,
             "block length 12 shorter than its header and trailer at input "
             "byte %zu",
             at);
  }
  expect_error_in(&f, f.z.p, f.z.len, k, want);
  bfile_free(&f);
}
END_TEST

/* The input ends inside a member: in its header, its data, its trailer. */
START_TEST(test_truncated) {
  bfile f = {0};
  char want[64];

  make_many(&f, 50, K_SL, 13);
  size_t k = 30;
  while (mlen(&f, k) < 60)
    k++;
  size_t cuts[] = {f.off[k] + 5, f.off[k] + 25, f.off[k] + mlen(&f, k) - 3};
  size_t cut = cuts[_i];
  snprintf(want, sizeof want, "truncated input at byte %zu", cut);
  expect_error_upto(&f, f.z.p, cut, k, k + 1, want);
  bfile_free(&f);
}
END_TEST

/* After the last member: zero padding and garbage, ignored and reported
 * with ignore_trailing, else an error at the first such byte. */
START_TEST(test_trailing) {
  static const size_t sizes[] = {100};
  bfile f = {0};
  char want[64];
  sl_zlib_opts zo;
  brun r;

  make_many(&f, 40, K_SL, 17);
  size_t end = f.z.len;
  unsigned char pad[600] = {0};
  if (_i)
    pad[300] = 'x';
  ck_assert(pu_bytes_add(&f.z, pad, sizeof pad));

  sl_zlib_opts_init(&zo);
  zo.ignore_trailing = 1;
  brun_go(&r, f.z.p, f.z.len, sizes, 1, 4, &zo);
  ck_assert_msg(r.rc == 0, "%s", r.err);
  ck_assert_uint_eq(r.sink.got.len, f.plain.len);
  ck_assert(memcmp(r.sink.got.p, f.plain.p, f.plain.len) == 0);
  uint64_t off;
  int garbage;
  ck_assert_int_eq(sl_pgunzip_trailing(r.gun, &off, &garbage), 1);
  ck_assert_uint_eq(off, end);
  ck_assert_int_eq(garbage, _i);
  brun_free(&r);

  snprintf(want, sizeof want, "trailing garbage at input byte %zu", end);
  expect_error_in(&f, f.z.p, f.z.len, f.n, want);
  bfile_free(&f);
}
END_TEST

/* Damaged deflate data in a member: the streaming gunzip's message, at
 * the same offset. */
START_TEST(test_corrupt_data) {
  static const size_t whole[] = {1 << 20};
  bfile f = {0};
  unsigned char *data = pu_pattern(20000, 21);
  sl_stage *src, *gun, *sink;
  sl_pipeline *p;
  pu_src s;
  pu_sink k;

  for (int i = 0; i < 8; i++)
    add_member(&f, data, 20000, K_SL);
  size_t at = f.off[5] + 20 + 3;
  memset(f.z.p + at, 0xff, 40);

  /* The streaming gunzip's verdict on the same member alone. */
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&s, f.z.p + f.off[5], mlen(&f, 5), whole, 1);
  pu_sink_init(&k);
  src = pu_src_stage("src", &s);
  sink = pu_sink_stage("sink", &k);
  ck_assert_int_eq(sl_gunzip_new(&gun, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, gun, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EDATA);
  const char *e = strstr(sl_pipeline_error(p), "at input byte ");
  ck_assert(e != NULL);
  unsigned long long rel = strtoull(e + 14, NULL, 10);
  char want[256];
  snprintf(want, sizeof want, "%.*s%llu",
           (int)(e + 14 - strstr(sl_pipeline_error(p), ": ") - 2),
           strstr(sl_pipeline_error(p), ": ") + 2,
           rel + (unsigned long long)f.off[5]);
  sl_pipeline_free(p);
  pu_sink_fini(&k);

  expect_error_in(&f, f.z.p, f.z.len, 5, want);
  bfile_free(&f);
  free(data);
}
END_TEST

/* The first member has no length: read as before, two stages, the CRC
 * checked by the second. */
START_TEST(test_plain_gzip) {
  bfile f = {0};
  unsigned char *data = pu_pattern(3000, 2);
  char want[128];

  for (int i = 0; i < 6; i++)
    add_member(&f, data, 3000, i == 0 ? K_NONE : K_SL);
  expect_ok(&f, (const size_t[]){4096}, 1, 4, 0);
  size_t t = f.off[0] + mlen(&f, 0) - 8;
  f.z.p[t] ^= 1;
  snprintf(want, sizeof want, "gunzip-check: crc32 mismatch at input byte %zu",
           t);
  expect_error_in(NULL, f.z.p, f.z.len, 0, want);
  bfile_free(&f);
  free(data);
}
END_TEST

START_TEST(test_api) {
  sl_pipeline *p;
  sl_stage *a, *b;
  static pu_src s;
  static pu_sink k;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&s, (const unsigned char *)"", 0, (const size_t[]){1}, 1);
  pu_sink_init(&k);
  a = pu_src_stage("src", &s);
  b = pu_sink_stage("sink", &k);
  ck_assert_int_eq(
      sl_pgunzip_chain_workers(p, a, b, NULL, SL_MAP_MAX_WORKERS + 1),
      SL_EINVAL);
  ck_assert_int_eq(sl_pgunzip_chain_workers(p, a, b, NULL, 2), 0);
  sl_pipeline_free(p);
  pu_sink_fini(&k);
}
END_TEST

/* What sl_pgzip_new writes in the block format, on every engine built
 * in, is read back on the workers: every member takes the parallel path
 * (the count of members inflated there is the count written), on 1, 2
 * and 4 workers, whatever the chunks the input arrives in. */
START_TEST(test_pgzip_blocks) {
  static const size_t cut[] = {1, 4096, 65536, 777}, whole[] = {1 << 20};
  const size_t block = 32768, len = 10 * block + 123;
  unsigned char *in = malloc(len);
  uint32_t x = 2024;

  ck_assert_ptr_nonnull(in);
  for (size_t i = 0; i < len; i++) { /* text, and some noise */
    x = x * 1103515245u + 12345u;
    in[i] = (i / 4096) % 3 ? (unsigned char)("abcdefgh \n"[(x >> 16) % 10])
                           : (unsigned char)(x >> 24);
  }
  for (int e = SL_ZLIB_ENGINE_ZLIB; e <= SL_ZLIB_ENGINE_LIBDEFLATE; e++) {
    if (!sl__engine_built(e))
      continue;
    sl_pgzip_opts po;
    sl_pgzip_opts_init(&po);
    po.level = 1;
    po.engine = e;
    po.format = SL_PGZIP_FORMAT_BLOCKS;
    po.block_size = block;
    po.workers = 2;
    sl_pipeline *p;
    sl_stage *gz;
    pu_src src;
    pu_sink sink;
    ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
    pu_src_init(&src, in, len, cut, 4);
    pu_sink_init(&sink);
    ck_assert_int_eq(sl_pgzip_new(&gz, &po), 0);
    ck_assert_int_eq(sl_pipeline_chain(p, pu_src_stage("src", &src), gz,
                                       pu_sink_stage("sink", &sink), NULL),
                     0);
    ck_assert_int_eq(sl_pipeline_start(p), 0);
    ck_assert_msg(sl_pipeline_wait(p) == 0, "%s", sl_pipeline_error(p));
    sl_pipeline_free(p);

    bfile f = {0};
    pu_bytes_add(&f.z, sink.got.p, sink.got.len);
    pu_bytes_add(&f.plain, in, len);
    for (unsigned w = 1; w <= 4; w *= 2)
      for (int c = 0; c < 2; c++) {
        brun r;
        brun_go(&r, f.z.p, f.z.len, c ? cut : whole, c ? 4 : 1, w, NULL);
        ck_assert_msg(r.rc == 0, "%s: %s", sl_zlib_engine_name(e), r.err);
        ck_assert_uint_eq(r.sink.got.len, len);
        ck_assert_int_eq(memcmp(r.sink.got.p, in, len), 0);
        ck_assert_uint_eq(sl__bgunzip_blocks(r.gun), 11); /* ten and a bit */
        brun_free(&r);
      }
    bfile_free(&f);
    pu_sink_fini(&sink);
  }
  free(in);
}
END_TEST

static Suite *bgunzip_suite(void) {
  Suite *s = suite_create("bgunzip");
  TCase *tc = tcase_create("blocks");

  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_order, 0, 2);
  tcase_add_loop_test(tc, test_edges, 0, 2);
  tcase_add_test(tc, test_no_length);
  tcase_add_loop_test(tc, test_bad_trailer, 0, 2);
  tcase_add_loop_test(tc, test_bad_length, 0, 4);
  tcase_add_loop_test(tc, test_truncated, 0, 3);
  tcase_add_loop_test(tc, test_trailing, 0, 2);
  tcase_add_test(tc, test_corrupt_data);
  tcase_add_test(tc, test_plain_gzip);
  tcase_add_test(tc, test_api);
  tcase_add_test(tc, test_pgzip_blocks);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  engine_from_env();
  return run_suite(bgunzip_suite());
}

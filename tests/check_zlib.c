/* SPDX-License-Identifier: MIT */
/*
 * Check suite for the zlib stages: round trips through every compressor
 * and decompressor pair at the edge sizes and at 50 MiB, every level,
 * strategy and window; multi-member gzip; every gzip header field, read
 * from headers built here byte by byte and written by sl_gzip_new; every
 * kind of bad input (reserved flags, header CRC, truncation, CRC32, ISIZE,
 * Adler-32, corrupt deflate data, trailing bytes), each named with its
 * input offset; unzip's detection; flush markers; a 1 GiB decompression
 * bomb in bounded memory; option checks and allocation failures.
 *
 * Compressed inputs are made here with zlib itself, so each direction is
 * also checked against an implementation that is not ours. Every test runs
 * with the counting allocator installed (the fixture checks that every
 * block the library allocated was freed, zlib's state included) and checks
 * that no thread outlived it.
 */
#include "engineutil.h"
#include "pipeutil.h"

#include <sluice/zlib.h>

#include <stdio.h>
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

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define POOL_BUF (64 * KIB) /* the pipeline's default buffer size */

/* Chunk sizes for sources: tiny, odd, a page, one pooled buffer, one
 * more, more than one buffer. */
static const size_t sizes_mixed[] = {65536, 1,     7,  4096, 100000,
                                     3,     65537, 31, 2,    1000};
static const size_t sizes_one[] = {1};
static const size_t sizes_three[] = {3};
static const size_t sizes_big[] = {65536, 65537, 1000};

/* ------------------------------------------------------------------------
 * Stage kinds
 * ---------------------------------------------------------------------- */

enum kind { K_GZIP, K_GUNZIP, K_DEFLATE, K_INFLATE, K_DRAW, K_IRAW, K_UNZIP };

static const char *const kind_name[] = {"gzip",    "gunzip",      "deflate",
                                        "inflate", "deflate-raw", "inflate-raw",
                                        "unzip"};

static int make_stage(int kind, const sl_zlib_opts *o, sl_stage **out) {
  switch (kind) {
  case K_GZIP:
    return sl_gzip_new(out, o);
  case K_GUNZIP:
    return sl_gunzip_new(out, o);
  case K_DEFLATE:
    return sl_deflate_new(out, o);
  case K_INFLATE:
    return sl_inflate_new(out, o);
  case K_DRAW:
    return sl_deflate_raw_new(out, o);
  case K_IRAW:
    return sl_inflate_raw_new(out, o);
  default:
    return sl_unzip_new(out, o);
  }
}

/* zlib's windowBits for each format. */
enum { WB_GZIP = 31, WB_ZLIB = 15, WB_RAW = -15 };

/* Compressor / decompressor pairs. */
static const struct {
  int comp, decomp;
} pairs[] = {{K_GZIP, K_GUNZIP}, {K_DEFLATE, K_INFLATE}, {K_DRAW, K_IRAW},
             {K_GZIP, K_UNZIP},  {K_DEFLATE, K_UNZIP},   {K_DRAW, K_UNZIP}};
#define NPAIRS ((int)NELEM(pairs))

/* ------------------------------------------------------------------------
 * Data
 * ---------------------------------------------------------------------- */

/* Compress with zlib itself (windowBits wb: WB_GZIP, WB_ZLIB, WB_RAW). */
static void zlib_compress(pu_bytes *out, const void *data, size_t len, int wb,
                          int level) {
  z_stream s;
  unsigned char buf[16384];
  int zr;

  memset(&s, 0, sizeof s);
  ck_assert_int_eq(
      deflateInit2(&s, level, Z_DEFLATED, wb, 8, Z_DEFAULT_STRATEGY), Z_OK);
  s.next_in = (Bytef *)(uintptr_t)data;
  s.avail_in = (uInt)len;
  do {
    s.next_out = buf;
    s.avail_out = sizeof buf;
    zr = deflate(&s, Z_FINISH);
    ck_assert(zr == Z_OK || zr == Z_STREAM_END || zr == Z_BUF_ERROR);
    ck_assert(pu_bytes_add(out, buf, sizeof buf - s.avail_out));
  } while (zr != Z_STREAM_END);
  deflateEnd(&s);
}

/* Decompress one stream with zlib itself; returns zlib's last code. */
static int zlib_decompress(pu_bytes *out, const void *data, size_t len,
                           int wb) {
  z_stream s;
  unsigned char buf[16384];
  int zr;

  memset(&s, 0, sizeof s);
  ck_assert_int_eq(inflateInit2(&s, wb), Z_OK);
  s.next_in = (Bytef *)(uintptr_t)data;
  s.avail_in = (uInt)len;
  do {
    s.next_out = buf;
    s.avail_out = sizeof buf;
    zr = inflate(&s, Z_NO_FLUSH);
    if (zr != Z_OK && zr != Z_STREAM_END)
      break;
    ck_assert(pu_bytes_add(out, buf, sizeof buf - s.avail_out));
  } while (zr != Z_STREAM_END);
  inflateEnd(&s);
  return zr;
}

static void put_le32(pu_bytes *b, uint32_t v) {
  unsigned char p[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                        (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
  ck_assert(pu_bytes_add(b, p, 4));
}

static uint32_t crc_of(const void *p, size_t n) {
  return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* ------------------------------------------------------------------------
 * A sink that compares with the expected bytes as they come
 * ---------------------------------------------------------------------- */

typedef struct cmp_state {
  const unsigned char *want;
  size_t len, pos;
  bool bad;
} cmp_state;

static bool cmp_check(pu_sink *k, const sl_buf *b) {
  cmp_state *c = k->check_arg;
  size_t n = sl_buf_len(b);
  bool ok = c->pos + n <= c->len &&
            (n == 0 || memcmp(sl_buf_data(b), c->want + c->pos, n) == 0);

  c->pos += n;
  if (!ok)
    c->bad = true;
  return ok;
}

/* ------------------------------------------------------------------------
 * Running stages
 * ---------------------------------------------------------------------- */

/* A pipeline src -> stages... -> sink and what it gave. The contexts live
 * here, the pipeline owns the stages; zrun_free frees both. */
typedef struct zrun {
  sl_pipeline *p;
  pu_src src;
  pu_sink sink;
  cmp_state cmp;
  int rc;
  const char *err; /* lives as long as p */
} zrun;

/* Run in[0..len) cut by sizes through n stages (owned by the pipeline from
 * here). With want, the sink compares instead of collecting. */
static void zrun_go(zrun *r, sl_stage *const *stages, size_t n,
                    const unsigned char *in, size_t len, const size_t *sizes,
                    size_t nsizes, const unsigned char *want, size_t want_len) {
  sl_stage *all[8];

  memset(r, 0, sizeof *r);
  ck_assert_uint_le(n, 6);
  ck_assert_int_eq(sl_pipeline_new(&r->p, NULL), 0);
  pu_src_init(&r->src, in, len, sizes, nsizes);
  pu_sink_init(&r->sink);
  if (want != NULL) {
    r->cmp = (cmp_state){.want = want, .len = want_len};
    r->sink.collect = false;
    r->sink.check = cmp_check;
    r->sink.check_arg = &r->cmp;
  }
  all[0] = pu_src_stage("src", &r->src);
  all[n + 1] = pu_sink_stage("sink", &r->sink);
  ck_assert_ptr_nonnull(all[0]);
  ck_assert_ptr_nonnull(all[n + 1]);
  for (size_t i = 0; i < n; i++)
    all[i + 1] = stages[i];
  ck_assert_int_eq(sl_pipeline_chainv(r->p, all, n + 2), 0);
  ck_assert_int_eq(sl_pipeline_start(r->p), 0);
  r->rc = sl_pipeline_wait(r->p);
  r->err = sl_pipeline_error(r->p);
}

static void zrun_free(zrun *r) {
  sl_pipeline_free(r->p);
  pu_sink_fini(&r->sink);
  r->p = NULL;
}

/* One decompressor of kind over in; the result in r (r->sink.got). */
static sl_stage *zrun_decomp(zrun *r, int kind, const sl_zlib_opts *o,
                             const unsigned char *in, size_t len,
                             const size_t *sizes, size_t nsizes) {
  sl_stage *st = NULL;

  ck_assert_int_eq(make_stage(kind, o, &st), 0);
  zrun_go(r, &st, 1, in, len, sizes, nsizes, NULL, 0);
  return st;
}

/* The pipeline's error is exactly want. */
static void assert_error(const zrun *r, int code, const char *want) {
  ck_assert_int_eq(r->rc, code);
  ck_assert_ptr_nonnull(r->err);
  ck_assert_str_eq(r->err, want);
}

/* data through comp -> decomp, compared on the way out; the compressor's
 * output size in *clen (may be NULL). */
static void roundtrip(int comp, int decomp, const sl_zlib_opts *co,
                      const sl_zlib_opts *dopt, const unsigned char *data,
                      size_t len, const size_t *sizes, size_t nsizes,
                      uint64_t *clen) {
  sl_stage *st[2] = {NULL, NULL};
  sl_stage_stats ss;
  zrun r;

  ck_assert_int_eq(make_stage(comp, co, &st[0]), 0);
  ck_assert_int_eq(make_stage(decomp, dopt, &st[1]), 0);
  zrun_go(&r, st, 2, data, len, sizes, nsizes, data, len);
  ck_assert_msg(r.rc == 0, "%s -> %s: %s", kind_name[comp], kind_name[decomp],
                r.err ? r.err : "?");
  ck_assert(!r.cmp.bad);
  ck_assert_uint_eq(r.cmp.pos, len);
  ck_assert_int_eq(r.sink.bad, 0);
  ck_assert_int_eq(sl_pipeline_stage_stats(r.p, 1, &ss), 0);
  ck_assert_uint_eq(ss.bytes_in, len);
  if (clen != NULL)
    *clen = ss.bytes_out;
  zrun_free(&r);
}

/* ------------------------------------------------------------------------
 * Round trips
 * ---------------------------------------------------------------------- */

static const size_t edge_sizes[] = {0, 1, 2, 3, POOL_BUF, POOL_BUF + 1};
#define NEDGE ((int)NELEM(edge_sizes))

/* Each pair at 0, 1, 2, 3 bytes, one pooled buffer and one more. */
START_TEST(test_roundtrip_edge_sizes) {
  int pair = _i / NEDGE;
  size_t len = edge_sizes[_i % NEDGE];
  unsigned char *data = pu_mixed_data(len, (uint64_t)_i);

  ck_assert_ptr_nonnull(data);
  roundtrip(pairs[pair].comp, pairs[pair].decomp, NULL, NULL, data, len,
            sizes_mixed, NELEM(sizes_mixed), NULL);
  free(data);
}
END_TEST

/* Each pair at 50 MiB of mixed content. */
START_TEST(test_roundtrip_50mib) {
  size_t len = 50 * MIB;
  unsigned char *data = pu_mixed_data(len, 50);

  ck_assert_ptr_nonnull(data);
  roundtrip(pairs[_i].comp, pairs[_i].decomp, NULL, NULL, data, len, sizes_big,
            NELEM(sizes_big), NULL);
  free(data);
}
END_TEST

/* Every level, 0 to 9: right content; level 0 stores (output larger than
 * the input), the others compress. */
START_TEST(test_roundtrip_levels) {
  size_t len = MIB + 17;
  unsigned char *data = pu_mixed_data(len, 7);
  sl_zlib_opts o;
  uint64_t clen = 0;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_zlib_opts_init(&o), 0);
  o.level = _i;
  roundtrip(K_GZIP, K_GUNZIP, &o, NULL, data, len, sizes_mixed,
            NELEM(sizes_mixed), &clen);
  if (_i == 0)
    ck_assert_uint_gt(clen, len);
  else
    ck_assert_uint_lt(clen, len * 3 / 4);
  free(data);
}
END_TEST

/* Every strategy gives data that decompresses to the input. */
START_TEST(test_roundtrip_strategies) {
  size_t len = 300 * KIB;
  unsigned char *data = pu_mixed_data(len, 11);
  sl_zlib_opts o;

  ck_assert_ptr_nonnull(data);
  sl_zlib_opts_init(&o);
  o.strategy = _i;
  roundtrip(K_DEFLATE, K_INFLATE, &o, NULL, data, len, sizes_mixed,
            NELEM(sizes_mixed), NULL);
  free(data);
}
END_TEST

/* Windows 8..15 and memory levels 1..9, the same window on both sides. */
START_TEST(test_roundtrip_windows) {
  int wbits = 8 + _i % 8, mem = 1 + _i % 9;
  size_t len = 200 * KIB;
  unsigned char *data = pu_mixed_data(len, (uint64_t)_i);
  sl_zlib_opts o;

  ck_assert_ptr_nonnull(data);
  sl_zlib_opts_init(&o);
  o.window_bits = wbits;
  o.mem_level = mem;
  for (int pair = 0; pair < 3; pair++)
    roundtrip(pairs[pair].comp, pairs[pair].decomp, &o, &o, data, len,
              sizes_mixed, NELEM(sizes_mixed), NULL);
  free(data);
}
END_TEST

/* What our compressors write, zlib itself reads; what zlib writes, our
 * decompressors read. */
START_TEST(test_interop_with_zlib) {
  static const int wb[] = {WB_GZIP, WB_ZLIB, WB_RAW};
  static const int comp[] = {K_GZIP, K_DEFLATE, K_DRAW};
  static const int decomp[] = {K_GUNZIP, K_INFLATE, K_IRAW};
  size_t len = 700 * KIB + 5;
  unsigned char *data = pu_mixed_data(len, 3);

  ck_assert_ptr_nonnull(data);
  for (int f = 0; f < 3; f++) {
    pu_bytes z = {0}, plain = {0};
    sl_stage *st = NULL;
    zrun r;

    ck_assert_int_eq(make_stage(comp[f], NULL, &st), 0);
    zrun_go(&r, &st, 1, data, len, sizes_mixed, NELEM(sizes_mixed), NULL, 0);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(
        zlib_decompress(&plain, r.sink.got.p, r.sink.got.len, wb[f]),
        Z_STREAM_END);
    ck_assert_uint_eq(plain.len, len);
    ck_assert(memcmp(plain.p, data, len) == 0);
    zrun_free(&r);

    zlib_compress(&z, data, len, wb[f], 6);
    zrun_decomp(&r, decomp[f], NULL, z.p, z.len, sizes_mixed,
                NELEM(sizes_mixed));
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(r.sink.got.len, len);
    ck_assert(memcmp(r.sink.got.p, data, len) == 0);
    zrun_free(&r);
    pu_bytes_free(&z);
    pu_bytes_free(&plain);
  }
  free(data);
}
END_TEST

/* An empty input gives a valid stream of empty content, of the smallest
 * size for its format: gzip 20 bytes, zlib 8, raw 2. */
START_TEST(test_empty_input_valid_stream) {
  static const int comp[] = {K_GZIP, K_DEFLATE, K_DRAW};
  static const int wb[] = {WB_GZIP, WB_ZLIB, WB_RAW};
  static const size_t size[] = {20, 8, 2};
  pu_bytes plain = {0};
  sl_stage *st = NULL;
  zrun r;

  ck_assert_int_eq(make_stage(comp[_i], NULL, &st), 0);
  zrun_go(&r, &st, 1, (const unsigned char *)"", 0, sizes_one, 1, NULL, 0);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_uint_eq(r.sink.got.len, size[_i]);
  ck_assert_int_eq(
      zlib_decompress(&plain, r.sink.got.p, r.sink.got.len, wb[_i]),
      Z_STREAM_END);
  ck_assert_uint_eq(plain.len, 0);
  zrun_free(&r);
}
END_TEST

/* ------------------------------------------------------------------------
 * gzip: members and headers
 * ---------------------------------------------------------------------- */

/* Two gzip streams back to back decompress to the concatenation, read in
 * chunks of any size; the member count says 2. */
START_TEST(test_gunzip_multi_member) {
  static const size_t *const sched[] = {sizes_one, sizes_three, sizes_mixed};
  static const size_t nsched[] = {1, 1, NELEM(sizes_mixed)};
  size_t la = 40 * KIB + 1, lb = 3000;
  unsigned char *a = pu_mixed_data(la, 1), *b = pu_mixed_data(lb, 2);
  pu_bytes in = {0}, want = {0};
  sl_gzip_header h;
  sl_stage *st;
  zrun r;

  ck_assert(a && b);
  zlib_compress(&in, a, la, WB_GZIP, 6);
  zlib_compress(&in, b, lb, WB_GZIP, 1);
  ck_assert(pu_bytes_add(&want, a, la) && pu_bytes_add(&want, b, lb));
  for (int kind = K_GUNZIP; kind <= K_UNZIP; kind += K_UNZIP - K_GUNZIP) {
    for (size_t s = 0; s < NELEM(sched); s++) {
      st = zrun_decomp(&r, kind, NULL, in.p, in.len, sched[s], nsched[s]);
      ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
      ck_assert_uint_eq(r.sink.got.len, want.len);
      ck_assert(memcmp(r.sink.got.p, want.p, want.len) == 0);
      ck_assert_int_eq(sl_gzip_header_get(st, &h), 0);
      ck_assert_uint_eq(h.members, 2);
      zrun_free(&r);
    }
  }
  pu_bytes_free(&in);
  pu_bytes_free(&want);
  free(a);
  free(b);
}
END_TEST

/* A gzip member with every optional field, built byte by byte. */
typedef struct crafted {
  pu_bytes bytes;
  size_t hcrc_off; /* offset of FHCRC */
  size_t body_off; /* first byte of the deflate data */
  size_t trailer_off;
} crafted;

static const char craft_name[] = "hello-world.txt";
static const char craft_comment[] = "made by hand, for the test";
static const unsigned char craft_extra[] = {'S', 'L', 4, 0, 1, 2, 3, 4};
static const char craft_content[] = "The header fields are all here.\n";
#define CRAFT_MTIME 0x5e0be100u
#define CRAFT_FLAGS                                                 \
  (SL_GZIP_FTEXT | SL_GZIP_FHCRC | SL_GZIP_FEXTRA | SL_GZIP_FNAME | \
   SL_GZIP_FCOMMENT)

/* flags: the FLG byte; hcrc_xor changes the stored header CRC. */
static void craft(crafted *c, unsigned flags, unsigned hcrc_xor) {
  unsigned char fixed[10] = {0x1f, 0x8b, 8, (unsigned char)flags, 0, 0, 0,
                             0,    2,    3};
  size_t clen = sizeof craft_content - 1;
  pu_bytes body = {0};

  memset(c, 0, sizeof *c);
  fixed[4] = (unsigned char)CRAFT_MTIME;
  fixed[5] = (unsigned char)(CRAFT_MTIME >> 8);
  fixed[6] = (unsigned char)(CRAFT_MTIME >> 16);
  fixed[7] = (unsigned char)(CRAFT_MTIME >> 24);
  ck_assert(pu_bytes_add(&c->bytes, fixed, sizeof fixed));
  if (flags & SL_GZIP_FEXTRA) {
    unsigned char xlen[2] = {sizeof craft_extra, 0};
    ck_assert(pu_bytes_add(&c->bytes, xlen, 2));
    ck_assert(pu_bytes_add(&c->bytes, craft_extra, sizeof craft_extra));
  }
  if (flags & SL_GZIP_FNAME)
    ck_assert(pu_bytes_add(&c->bytes, craft_name, sizeof craft_name));
  if (flags & SL_GZIP_FCOMMENT)
    ck_assert(pu_bytes_add(&c->bytes, craft_comment, sizeof craft_comment));
  if (flags & SL_GZIP_FHCRC) {
    unsigned v = (crc_of(c->bytes.p, c->bytes.len) & 0xffffu) ^ hcrc_xor;
    unsigned char h2[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    c->hcrc_off = c->bytes.len;
    ck_assert(pu_bytes_add(&c->bytes, h2, 2));
  }
  c->body_off = c->bytes.len;
  zlib_compress(&body, craft_content, clen, WB_RAW, 9);
  ck_assert(pu_bytes_add(&c->bytes, body.p, body.len));
  c->trailer_off = c->bytes.len;
  put_le32(&c->bytes, crc_of(craft_content, clen));
  put_le32(&c->bytes, (uint32_t)clen);
  pu_bytes_free(&body);
}

/* Every field of a crafted header is read and reported, whatever the
 * chunk sizes; the pointers live until the pipeline is freed. */
START_TEST(test_gunzip_header_fields) {
  static const size_t *const sched[] = {sizes_one, sizes_three, sizes_mixed};
  static const size_t nsched[] = {1, 1, NELEM(sizes_mixed)};
  crafted c;
  sl_gzip_header h;
  int fmt = 0;
  zrun r;

  craft(&c, CRAFT_FLAGS, 0);
  sl_stage *st = zrun_decomp(&r, _i == 3 ? K_UNZIP : K_GUNZIP, NULL, c.bytes.p,
                             c.bytes.len, sched[_i % 3], nsched[_i % 3]);
  ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
  ck_assert_uint_eq(r.sink.got.len, sizeof craft_content - 1);
  ck_assert(memcmp(r.sink.got.p, craft_content, r.sink.got.len) == 0);

  memset(&h, 0xa5, sizeof h);
  ck_assert_int_eq(sl_gzip_header_get(st, &h), 0);
  ck_assert_uint_eq(h.flags, CRAFT_FLAGS);
  ck_assert_int_eq(h.text, 1);
  ck_assert_uint_eq(h.mtime, CRAFT_MTIME);
  ck_assert_uint_eq(h.xfl, 2);
  ck_assert_uint_eq(h.os, 3);
  ck_assert_ptr_nonnull(h.extra);
  ck_assert_uint_eq(h.extra_len, sizeof craft_extra);
  ck_assert(memcmp(h.extra, craft_extra, sizeof craft_extra) == 0);
  ck_assert_ptr_nonnull(h.name);
  ck_assert_str_eq(h.name, craft_name);
  ck_assert_ptr_nonnull(h.comment);
  ck_assert_str_eq(h.comment, craft_comment);
  ck_assert_int_eq(h.hcrc, 1);
  ck_assert_uint_eq(h.truncated, 0);
  ck_assert_uint_eq(h.members, 1);
  ck_assert_int_eq(sl_zlib_format_get(st, &fmt), 0);
  ck_assert_int_eq(fmt, SL_ZLIB_FORMAT_GZIP);
  zrun_free(&r);
  pu_bytes_free(&c.bytes);
}
END_TEST

/* A bare header: no optional field is reported. */
START_TEST(test_gunzip_header_bare) {
  crafted c;
  sl_gzip_header h;
  zrun r;

  craft(&c, 0, 0);
  sl_stage *st = zrun_decomp(&r, K_GUNZIP, NULL, c.bytes.p, c.bytes.len,
                             sizes_mixed, NELEM(sizes_mixed));
  ck_assert_int_eq(r.rc, 0);
  ck_assert_int_eq(sl_gzip_header_get(st, &h), 0);
  ck_assert_uint_eq(h.flags, 0);
  ck_assert_int_eq(h.text, 0);
  ck_assert_ptr_null(h.extra);
  ck_assert_uint_eq(h.extra_len, 0);
  ck_assert_ptr_null(h.name);
  ck_assert_ptr_null(h.comment);
  ck_assert_int_eq(h.hcrc, 0);
  zrun_free(&r);
  pu_bytes_free(&c.bytes);
}
END_TEST

/* A name longer than SL_GZIP_FIELD_MAX - 1 is read, its start kept. */
START_TEST(test_gunzip_long_name_truncated) {
  size_t nlen = SL_GZIP_FIELD_MAX + 100;
  char *name = malloc(nlen + 1);
  pu_bytes in = {0}, body = {0};
  unsigned char fixed[10] = {0x1f, 0x8b, 8, SL_GZIP_FNAME, 0, 0, 0, 0, 0, 3};
  sl_gzip_header h;
  zrun r;

  ck_assert_ptr_nonnull(name);
  memset(name, 'n', nlen);
  name[nlen] = '\0';
  ck_assert(pu_bytes_add(&in, fixed, sizeof fixed));
  ck_assert(pu_bytes_add(&in, name, nlen + 1));
  zlib_compress(&body, "x", 1, WB_RAW, 6);
  ck_assert(pu_bytes_add(&in, body.p, body.len));
  put_le32(&in, crc_of("x", 1));
  put_le32(&in, 1);
  sl_stage *st = zrun_decomp(&r, K_GUNZIP, NULL, in.p, in.len, sizes_mixed,
                             NELEM(sizes_mixed));
  ck_assert_int_eq(r.rc, 0);
  ck_assert_int_eq(sl_gzip_header_get(st, &h), 0);
  ck_assert_uint_eq(strlen(h.name), SL_GZIP_FIELD_MAX - 1);
  ck_assert_uint_eq(h.truncated, SL_GZIP_FNAME);
  zrun_free(&r);
  pu_bytes_free(&in);
  pu_bytes_free(&body);
  free(name);
}
END_TEST

/* A wrong header CRC16 fails, naming the offset of FHCRC. */
START_TEST(test_gunzip_bad_hcrc) {
  crafted c;
  char want[160];
  unsigned good;
  zrun r;

  craft(&c, CRAFT_FLAGS, 0x0101);
  good = crc_of(c.bytes.p, c.hcrc_off) & 0xffffu;
  zrun_decomp(&r, K_GUNZIP, NULL, c.bytes.p, c.bytes.len, sizes_three, 1);
  snprintf(want, sizeof want,
           "gunzip: header crc16 mismatch at input byte %zu "
           "(stored 0x%04x, computed 0x%04x)",
           c.hcrc_off, good ^ 0x0101u, good);
  assert_error(&r, SL_EDATA, want);
  ck_assert_uint_eq(r.sink.got.len, 0); /* nothing before the check */
  zrun_free(&r);
  pu_bytes_free(&c.bytes);
}
END_TEST

/* Each reserved flag bit fails at offset 3, the FLG byte. */
START_TEST(test_gunzip_reserved_flags) {
  unsigned bit = 0x20u << _i;
  crafted c;
  char want[100];
  zrun r;

  craft(&c, SL_GZIP_FNAME | bit, 0);
  zrun_decomp(&r, K_GUNZIP, NULL, c.bytes.p, c.bytes.len, sizes_mixed,
              NELEM(sizes_mixed));
  snprintf(want, sizeof want,
           "gunzip: reserved flag bits set (0x%02x) at input byte 3", bit);
  assert_error(&r, SL_EDATA, want);
  zrun_free(&r);
  pu_bytes_free(&c.bytes);
}
END_TEST

/* Not gzip at all, and an unknown method, name their bytes. */
START_TEST(test_gunzip_bad_magic_and_method) {
  static const unsigned char not_gz[] = {0x1f, 0x8c, 8, 0, 0, 0, 0, 0, 0, 3};
  static const unsigned char method[] = {0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 3};
  zrun r;

  zrun_decomp(&r, K_GUNZIP, NULL, (const unsigned char *)"PK\3\4", 4,
              sizes_mixed, NELEM(sizes_mixed));
  assert_error(&r, SL_EDATA, "gunzip: not in gzip format at input byte 0");
  zrun_free(&r);
  zrun_decomp(&r, K_GUNZIP, NULL, not_gz, sizeof not_gz, sizes_one, 1);
  assert_error(&r, SL_EDATA, "gunzip: not in gzip format at input byte 1");
  zrun_free(&r);
  zrun_decomp(&r, K_GUNZIP, NULL, method, sizeof method, sizes_one, 1);
  assert_error(&r, SL_EDATA,
               "gunzip: unknown compression method 7 at input byte 2");
  zrun_free(&r);
}
END_TEST

/* Cut anywhere, a gzip stream is truncated at the cut. */
START_TEST(test_gunzip_truncated) {
  crafted c;
  size_t cuts[12];
  size_t n = 0;

  craft(&c, CRAFT_FLAGS, 0);
  cuts[n++] = 0;
  cuts[n++] = 1;
  cuts[n++] = 2;
  cuts[n++] = 3;
  cuts[n++] = 9;
  cuts[n++] = 11;                /* inside XLEN */
  cuts[n++] = c.hcrc_off + 1;    /* inside FHCRC */
  cuts[n++] = c.body_off;        /* header complete, no data */
  cuts[n++] = c.body_off + 5;    /* inside the data */
  cuts[n++] = c.trailer_off;     /* data complete, no trailer */
  cuts[n++] = c.trailer_off + 5; /* inside ISIZE */
  cuts[n++] = c.bytes.len - 1;
  for (size_t i = 0; i < n; i++) {
    char want[80];
    zrun r;
    zrun_decomp(&r, K_GUNZIP, NULL, c.bytes.p, cuts[i], sizes_three, 1);
    snprintf(want, sizeof want, "gunzip: truncated input at byte %zu", cuts[i]);
    assert_error(&r, SL_EDATA, want);
    zrun_free(&r);
  }
  pu_bytes_free(&c.bytes);
}
END_TEST

/* zlib and raw streams and unzip, cut: truncated at the cut. */
START_TEST(test_truncated_zlib_raw_unzip) {
  static const int wb[] = {WB_ZLIB, WB_RAW, WB_GZIP, WB_ZLIB, WB_RAW};
  static const int kind[] = {K_INFLATE, K_IRAW, K_UNZIP, K_UNZIP, K_UNZIP};
  size_t len = 100 * KIB;
  unsigned char *data = pu_mixed_data(len, 5);
  pu_bytes z = {0};

  ck_assert_ptr_nonnull(data);
  zlib_compress(&z, data, len, wb[_i], 6);
  size_t cuts[] = {0, 1, 2, z.len / 2, z.len - 4, z.len - 1};
  for (size_t i = 0; i < NELEM(cuts); i++) {
    char want[80];
    zrun r;
    zrun_decomp(&r, kind[_i], NULL, z.p, cuts[i], sizes_mixed,
                NELEM(sizes_mixed));
    snprintf(want, sizeof want, "%s: truncated input at byte %zu",
             kind_name[kind[_i]], cuts[i]);
    assert_error(&r, SL_EDATA, want);
    zrun_free(&r);
  }
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* Each byte of the CRC32 flipped in turn: a mismatch at the trailer. */
START_TEST(test_gunzip_crc_mismatch) {
  size_t len = 10000;
  unsigned char *data = pu_mixed_data(len, 9);
  pu_bytes z = {0};
  char want[160];
  zrun r;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&z, data, len, WB_GZIP, 6);
  size_t at = z.len - 8;
  uint32_t crc = crc_of(data, len);
  z.p[at + (size_t)_i] ^= 0x40;
  zrun_decomp(&r, K_GUNZIP, NULL, z.p, z.len, sizes_mixed, NELEM(sizes_mixed));
  snprintf(want, sizeof want,
           "gunzip: crc32 mismatch at input byte %zu "
           "(stored 0x%08x, computed 0x%08x)",
           at, (unsigned)(crc ^ (0x40u << (8 * _i))), (unsigned)crc);
  assert_error(&r, SL_EDATA, want);
  zrun_free(&r);
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* A wrong ISIZE: a mismatch at the ISIZE field, the last four bytes. */
START_TEST(test_gunzip_isize_mismatch) {
  size_t len = 10000;
  unsigned char *data = pu_mixed_data(len, 9);
  pu_bytes z = {0};
  char want[160];
  zrun r;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&z, data, len, WB_GZIP, 6);
  z.p[z.len - 4] ^= 1;
  zrun_decomp(&r, K_GUNZIP, NULL, z.p, z.len, sizes_one, 1);
  snprintf(want, sizeof want,
           "gunzip: isize mismatch at input byte %zu (stored %u, computed %u)",
           z.len - 4, (unsigned)(len ^ 1), (unsigned)len);
  assert_error(&r, SL_EDATA, want);
  zrun_free(&r);
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* A wrong Adler-32: a mismatch at the zlib trailer. */
START_TEST(test_inflate_adler_mismatch) {
  size_t len = 10000;
  unsigned char *data = pu_mixed_data(len, 9);
  pu_bytes z = {0};
  char want[160];
  zrun r;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&z, data, len, WB_ZLIB, 6);
  uint32_t sum = (uint32_t)adler32(adler32(0L, Z_NULL, 0), data, (uInt)len);
  z.p[z.len - 1] ^= 0x80;
  zrun_decomp(&r, K_INFLATE, NULL, z.p, z.len, sizes_mixed, NELEM(sizes_mixed));
  snprintf(want, sizeof want,
           "inflate: adler32 mismatch at input byte %zu "
           "(stored 0x%08x, computed 0x%08x)",
           z.len - 4, (unsigned)(sum ^ 0x80), (unsigned)sum);
  assert_error(&r, SL_EDATA, want);
  zrun_free(&r);
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* A deflate block of the reserved type 3 right after the header: found
 * at byte 10, the first byte of the data. */
START_TEST(test_gunzip_corrupt_block_type) {
  static const unsigned char in[] = {0x1f, 0x8b, 8, 0, 0, 0,   0,
                                     0,    0,    3, 7, 0, 0xff};
  zrun r;

  zrun_decomp(&r, K_GUNZIP, NULL, in, sizeof in, sizes_one, 1);
  assert_error(&r, SL_EDATA, "gunzip: invalid block type at input byte 10");
  zrun_free(&r);
}
END_TEST

/* Data that reaches back further than the decompressor's window: "invalid
 * distance too far back", at a byte inside the stream. inflate resolves a
 * distance within the buffer it is writing whatever its window, so the
 * data repeats 20 KiB random blocks and a repeat straddles the end of the
 * first 64 KiB output buffer. */
START_TEST(test_inflate_raw_distance_too_far) {
  size_t block = 20 * KIB, len = 10 * block;
  unsigned char *data = malloc(len);
  pu_bytes z = {0};
  sl_zlib_opts o;
  unsigned long long at = 0;
  uint64_t rs = 5;
  zrun r;

  ck_assert_ptr_nonnull(data);
  for (size_t b = 0; b < len; b += 2 * block) {
    for (size_t i = 0; i < block; i++)
      data[b + i] = (unsigned char)test_rand(&rs);
    memcpy(data + b + block, data + b, block);
  }
  zlib_compress(&z, data, len, WB_RAW, 9);
  sl_zlib_opts_init(&o);
  o.window_bits = 9;
  zrun_decomp(&r, K_IRAW, &o, z.p, z.len, sizes_mixed, NELEM(sizes_mixed));
  ck_assert_int_eq(r.rc, SL_EDATA);
  ck_assert_ptr_nonnull(r.err);
  ck_assert_int_eq(sscanf(r.err,
                          "inflate-raw: invalid distance too far back at "
                          "input byte %llu",
                          &at),
                   1);
  ck_assert_uint_gt(at, 0);
  ck_assert_uint_lt(at, z.len);
  zrun_free(&r);

  o.window_bits = 15; /* the same data with the window it needs */
  zrun_decomp(&r, K_IRAW, &o, z.p, z.len, sizes_mixed, NELEM(sizes_mixed));
  ck_assert_int_eq(r.rc, 0);
  ck_assert_uint_eq(r.sink.got.len, len);
  ck_assert(memcmp(r.sink.got.p, data, len) == 0);
  zrun_free(&r);
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* Damage anywhere in the data of a member fails with SL_EDATA and an
 * offset inside the input, never a crash, a hang or a leak. */
START_TEST(test_gunzip_corrupt_data) {
  size_t len = 300 * KIB;
  unsigned char *data = pu_mixed_data(len, 13);
  pu_bytes z = {0};
  uint64_t rs = 99;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&z, data, len, WB_GZIP, 6);
  for (int k = 0; k < 12; k++) {
    unsigned char *bad = malloc(z.len);
    unsigned long long at = 0;
    size_t pos = 10 + (size_t)(test_rand(&rs) % (z.len - 18));
    zrun r;

    ck_assert_ptr_nonnull(bad);
    memcpy(bad, z.p, z.len);
    bad[pos] ^= (unsigned char)(1 + test_rand(&rs) % 255);
    zrun_decomp(&r, K_GUNZIP, NULL, bad, z.len, sizes_mixed,
                NELEM(sizes_mixed));
    ck_assert_int_eq(r.rc, SL_EDATA);
    ck_assert_ptr_nonnull(r.err);
    const char *b = strstr(r.err, " byte ");
    ck_assert_msg(b != NULL, "no offset in '%s'", r.err);
    ck_assert_int_eq(sscanf(b, " byte %llu", &at), 1);
    ck_assert_uint_le(at, z.len);
    zrun_free(&r);
    free(bad);
  }
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Trailing bytes
 * ---------------------------------------------------------------------- */

static const struct {
  const char *bytes;
  size_t len;
} garbage[] = {
    {"x", 1}, {"\x1f", 1}, {"garbage!", 8}, {"\0\0\0\0", 4}, {"\x1f\x1f", 2}};

/* After the stream: an error by default, naming where the bytes begin;
 * ignored with ignore_trailing. For each decompressor and each kind of
 * garbage. */
START_TEST(test_trailing_garbage) {
  static const int kind[] = {K_GUNZIP, K_INFLATE, K_IRAW, K_UNZIP};
  static const int wb[] = {WB_GZIP, WB_ZLIB, WB_RAW, WB_GZIP};
  int k = _i / (int)NELEM(garbage), g = _i % (int)NELEM(garbage);
  size_t len = 70000;
  unsigned char *data = pu_mixed_data(len, 21);
  pu_bytes in = {0};
  sl_zlib_opts o;
  char want[100];
  zrun r;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&in, data, len, wb[k], 6);
  size_t end = in.len;
  ck_assert(pu_bytes_add(&in, garbage[g].bytes, garbage[g].len));

  zrun_decomp(&r, kind[k], NULL, in.p, in.len, sizes_mixed, NELEM(sizes_mixed));
  snprintf(want, sizeof want, "%s: trailing garbage at input byte %zu",
           kind_name[kind[k]], end);
  assert_error(&r, SL_EDATA, want);
  zrun_free(&r);

  sl_zlib_opts_init(&o);
  o.ignore_trailing = 1;
  zrun_decomp(&r, kind[k], &o, in.p, in.len, sizes_one, 1);
  ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
  ck_assert_uint_eq(r.sink.got.len, len);
  ck_assert(memcmp(r.sink.got.p, data, len) == 0);
  zrun_free(&r);
  pu_bytes_free(&in);
  free(data);
}
END_TEST

/* With ignore_trailing, bytes that begin with the gzip magic are another
 * member and must be a valid one. */
START_TEST(test_gunzip_ignore_trailing_magic_is_member) {
  size_t len = 1000;
  unsigned char *data = pu_mixed_data(len, 4);
  pu_bytes in = {0};
  sl_zlib_opts o;
  char want[100];
  zrun r;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&in, data, len, WB_GZIP, 6);
  ck_assert(pu_bytes_add(&in, "\x1f\x8b\x08\xff", 4));
  sl_zlib_opts_init(&o);
  o.ignore_trailing = 1;
  zrun_decomp(&r, K_GUNZIP, &o, in.p, in.len, sizes_mixed, NELEM(sizes_mixed));
  snprintf(want, sizeof want,
           "gunzip: reserved flag bits set (0xe0) at input byte %zu",
           in.len - 1);
  assert_error(&r, SL_EDATA, want);
  zrun_free(&r);
  pu_bytes_free(&in);
  free(data);
}
END_TEST

/* An empty input is a truncated stream for every decompressor. */
START_TEST(test_empty_input_truncated) {
  static const int kind[] = {K_GUNZIP, K_INFLATE, K_IRAW, K_UNZIP};
  char want[80];
  zrun r;

  zrun_decomp(&r, kind[_i], NULL, (const unsigned char *)"", 0, sizes_one, 1);
  snprintf(want, sizeof want, "%s: truncated input at byte 0",
           kind_name[kind[_i]]);
  assert_error(&r, SL_EDATA, want);
  zrun_free(&r);
}
END_TEST

/* ------------------------------------------------------------------------
 * zlib headers and unzip
 * ---------------------------------------------------------------------- */

/* Bad zlib headers: header check, method, window, preset dictionary. */
START_TEST(test_inflate_bad_headers) {
  static const struct {
    unsigned char b[2];
    int window_bits;
    const char *msg;
  } cases[] = {
      {{0x78, 0x9d}, 15, "inflate: incorrect header check at input byte 1"},
      {{0x79, 0x18},
       15,
       "inflate: unknown compression method 9 at input byte 0"},
      {{0x88, 0x1c}, 15, "inflate: invalid window size at input byte 0"},
      {{0x78, 0x9c},
       10,
       "inflate: window of 2^15 bytes larger than the 2^10 allowed at input "
       "byte 0"},
      {{0x78, 0x20},
       15,
       "inflate: preset dictionary required, which is not supported, at "
       "input byte 1"},
  };
  sl_zlib_opts o;
  zrun r;

  for (size_t i = 0; i < NELEM(cases); i++) {
    unsigned char in[8] = {cases[i].b[0], cases[i].b[1], 3, 0, 0, 0, 0, 1};
    ck_assert_int_eq((in[0] * 256 + in[1]) % 31 == 0, i != 0);
    sl_zlib_opts_init(&o);
    o.window_bits = cases[i].window_bits;
    zrun_decomp(&r, K_INFLATE, &o, in, sizeof in, sizes_one, 1);
    assert_error(&r, SL_EDATA, cases[i].msg);
    zrun_free(&r);
  }
}
END_TEST

/* unzip reads gzip, zlib and raw, in chunks of any size, and says which
 * it found; the gzip header only for gzip. */
START_TEST(test_unzip_detects) {
  static const int wb[] = {WB_GZIP, WB_ZLIB, WB_RAW};
  static const int fmt_want[] = {SL_ZLIB_FORMAT_GZIP, SL_ZLIB_FORMAT_ZLIB,
                                 SL_ZLIB_FORMAT_RAW};
  static const size_t *const sched[] = {sizes_one, sizes_mixed};
  static const size_t nsched[] = {1, NELEM(sizes_mixed)};
  size_t len = 150 * KIB;
  unsigned char *data = pu_mixed_data(len, 8);
  pu_bytes z = {0};
  sl_gzip_header h;
  int fmt = 0;
  zrun r;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&z, data, len, wb[_i], 6);
  for (size_t s = 0; s < NELEM(sched); s++) {
    sl_stage *st =
        zrun_decomp(&r, K_UNZIP, NULL, z.p, z.len, sched[s], nsched[s]);
    ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
    ck_assert_uint_eq(r.sink.got.len, len);
    ck_assert(memcmp(r.sink.got.p, data, len) == 0);
    ck_assert_int_eq(sl_zlib_format_get(st, &fmt), 0);
    ck_assert_int_eq(fmt, fmt_want[_i]);
    ck_assert_int_eq(sl_gzip_header_get(st, &h), _i == 0 ? 0 : SL_ENOENT);
    zrun_free(&r);
  }
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* The smallest raw stream (an empty fixed block) is raw to unzip. */
START_TEST(test_unzip_empty_raw) {
  static const unsigned char in[] = {0x03, 0x00};
  int fmt = 0;
  zrun r;

  sl_stage *st = zrun_decomp(&r, K_UNZIP, NULL, in, sizeof in, sizes_one, 1);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_uint_eq(r.sink.got.len, 0);
  ck_assert_int_eq(sl_zlib_format_get(st, &fmt), 0);
  ck_assert_int_eq(fmt, SL_ZLIB_FORMAT_RAW);
  zrun_free(&r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Writing the gzip header
 * ---------------------------------------------------------------------- */

/* Name, comment, extra, mtime, text and hcrc given to sl_gzip_new are
 * written: zlib reads them back, and so does our gunzip. */
START_TEST(test_gzip_writes_header) {
  static const unsigned char extra[] = {'A', 'B', 2, 0, 'h', 'i'};
  char name[] = "report.csv", comment[] = "quarterly";
  sl_gzip_header wh, h;
  sl_zlib_opts o;
  sl_stage *st = NULL;
  zrun r;

  memset(&wh, 0, sizeof wh);
  wh.name = name;
  wh.comment = comment;
  wh.extra = extra;
  wh.extra_len = sizeof extra;
  wh.mtime = 1700000000u;
  wh.text = 1;
  wh.hcrc = 1;
  sl_zlib_opts_init(&o);
  o.header = &wh;
  o.level = 9;
  ck_assert_int_eq(sl_gzip_new(&st, &o), 0);
  memset(name, 'X', sizeof name - 1); /* copied: the stage does not care */
  zrun_go(&r, &st, 1, (const unsigned char *)"abc", 3, sizes_one, 1, NULL, 0);
  ck_assert_int_eq(r.rc, 0);

  const unsigned char *g = r.sink.got.p;
  ck_assert_uint_ge(r.sink.got.len, 10);
  ck_assert_uint_eq(g[3], CRAFT_FLAGS);
  ck_assert_uint_eq(g[4] | g[5] << 8 | g[6] << 16 | (uint32_t)g[7] << 24,
                    1700000000u);
  ck_assert_uint_eq(g[8], 2); /* level 9 */
  ck_assert_uint_eq(g[9], 3);

  pu_bytes gz = {0};
  ck_assert(pu_bytes_add(&gz, r.sink.got.p, r.sink.got.len));
  zrun_free(&r);
  sl_stage *dst = zrun_decomp(&r, K_GUNZIP, NULL, gz.p, gz.len, sizes_one, 1);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_uint_eq(r.sink.got.len, 3);
  ck_assert_int_eq(sl_gzip_header_get(dst, &h), 0);
  ck_assert_str_eq(h.name, "report.csv");
  ck_assert_str_eq(h.comment, "quarterly");
  ck_assert_uint_eq(h.extra_len, sizeof extra);
  ck_assert(memcmp(h.extra, extra, sizeof extra) == 0);
  ck_assert_uint_eq(h.mtime, 1700000000u);
  ck_assert_int_eq(h.text, 1);
  ck_assert_int_eq(h.hcrc, 1);
  zrun_free(&r);
  pu_bytes_free(&gz);
}
END_TEST

/* ------------------------------------------------------------------------
 * Getters
 * ---------------------------------------------------------------------- */

/* Before a stage runs there is nothing to read; a stage of another kind
 * is refused. */
START_TEST(test_getters_refuse) {
  sl_stage *gz = NULL, *gun = NULL, *unz = NULL, *other = NULL;
  sl_gzip_header h;
  pu_xf xf;
  int fmt = 0;

  ck_assert_int_eq(sl_gzip_new(&gz, NULL), 0);
  ck_assert_int_eq(sl_gunzip_new(&gun, NULL), 0);
  ck_assert_int_eq(sl_unzip_new(&unz, NULL), 0);
  pu_xf_init(&xf, PU_IDENTITY);
  other = pu_xf_stage("other", &xf, false);
  ck_assert_ptr_nonnull(other);

  ck_assert_int_eq(sl_gzip_header_get(gun, &h), SL_AGAIN);
  ck_assert_int_eq(sl_gzip_header_get(unz, &h), SL_AGAIN);
  ck_assert_int_eq(sl_gzip_header_get(gz, &h), SL_EINVAL);
  ck_assert_int_eq(sl_gzip_header_get(other, &h), SL_EINVAL);
  ck_assert_int_eq(sl_gzip_header_get(NULL, &h), SL_EINVAL);
  ck_assert_int_eq(sl_gzip_header_get(gun, NULL), SL_EINVAL);

  ck_assert_int_eq(sl_zlib_format_get(gz, &fmt), 0);
  ck_assert_int_eq(fmt, SL_ZLIB_FORMAT_GZIP);
  ck_assert_int_eq(sl_zlib_format_get(gun, &fmt), 0);
  ck_assert_int_eq(fmt, SL_ZLIB_FORMAT_GZIP);
  ck_assert_int_eq(sl_zlib_format_get(unz, &fmt), SL_AGAIN);
  ck_assert_int_eq(sl_zlib_format_get(other, &fmt), SL_EINVAL);
  ck_assert_int_eq(sl_zlib_format_get(gz, NULL), SL_EINVAL);

  sl_stage_free(gz);
  sl_stage_free(gun);
  sl_stage_free(unz);
  sl_stage_free(other);
  ck_assert_int_eq(pu_destroyed(&xf), 1);
}
END_TEST

/* Each stage reports its format, and its kind as its default name. */
START_TEST(test_format_and_names) {
  static const int fmt_want[] = {SL_ZLIB_FORMAT_GZIP, SL_ZLIB_FORMAT_GZIP,
                                 SL_ZLIB_FORMAT_ZLIB, SL_ZLIB_FORMAT_ZLIB,
                                 SL_ZLIB_FORMAT_RAW,  SL_ZLIB_FORMAT_RAW};
  sl_zlib_opts o;

  for (int k = K_GZIP; k <= K_UNZIP; k++) {
    sl_stage *st = NULL;
    int fmt = 0;
    ck_assert_int_eq(make_stage(k, NULL, &st), 0);
    ck_assert_str_eq(sl_stage_name(st), kind_name[k]);
    if (k != K_UNZIP) {
      ck_assert_int_eq(sl_zlib_format_get(st, &fmt), 0);
      ck_assert_int_eq(fmt, fmt_want[k]);
    }
    sl_stage_free(st);
  }
  sl_zlib_opts_init(&o);
  o.name = "body";
  sl_stage *st = NULL;
  ck_assert_int_eq(sl_gunzip_new(&st, &o), 0);
  ck_assert_str_eq(sl_stage_name(st), "body");
  sl_stage_free(st);
}
END_TEST

/* The header can be read while the pipeline runs, once it was parsed:
 * here while the sink holds the first output at its gate. */
START_TEST(test_header_get_while_running) {
  size_t len = 4 * MIB;
  unsigned char *data = pu_mixed_data(len, 31);
  pu_bytes z = {0};
  sl_pipeline *p = NULL;
  sl_stage *st = NULL;
  sl_gzip_header h;
  pu_src src;
  pu_sink sink;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&z, data, len, WB_GZIP, 1);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&src, z.p, z.len, sizes_big, NELEM(sizes_big));
  pu_sink_init(&sink);
  sink.collect = false;
  pu_sink_hold(&sink);
  ck_assert_int_eq(sl_gunzip_new(&st, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, pu_src_stage("src", &src), st,
                                     pu_sink_stage("sink", &sink), NULL),
                   0);
  ck_assert_int_eq(sl_gzip_header_get(st, &h), SL_AGAIN);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  pu_sink_wait_at_gate(&sink);
  ck_assert_int_eq(sl_gzip_header_get(st, &h), 0);
  ck_assert_uint_eq(h.os, 3);
  ck_assert_uint_eq(h.members, 0); /* the trailer is far ahead */
  pu_sink_release(&sink);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(sl_gzip_header_get(st, &h), 0);
  ck_assert_uint_eq(h.members, 1);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Flush markers
 * ---------------------------------------------------------------------- */

/* What the sink has made of its input so far, for the source to wait on. */
typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t have; /* content bytes the sink has */
  bool failed; /* the sink failed: stop waiting */
} gate;

/* Pushes data in three chunks, then a flush marker, then waits until the
 * sink has all of the content (at most 30 s), then ends the stream. */
typedef struct flush_src {
  const unsigned char *data;
  size_t len;
  gate *g;
  int step;
  bool released; /* the sink had everything before the end of stream */
} flush_src;

static int flush_src_read(sl_stage *stage, void *ctx) {
  flush_src *s = ctx;
  test_hang_clock hc;
  bool over = false;
  int rc = 0;

  if (s->step == 0) {
    size_t cut[4] = {0, s->len / 3, s->len / 2, s->len};
    for (int i = 0; i < 3 && rc == 0; i++) {
      sl_buf *b = NULL;
      size_t n = cut[i + 1] - cut[i];
      rc = sl_stage_buf(stage, n, &b);
      if (rc == 0) {
        memcpy(sl_buf_data(b), s->data + cut[i], n);
        sl_buf_set_len(b, n);
        rc = sl_stage_push(stage, b);
      }
    }
    if (rc == 0)
      rc = sl_stage_push_flush(stage);
    s->step = 1;
    return rc;
  }
  /* A bound on a failure, not a synchronisation: a working flush
   * releases this wait at once. */
  test_hang_clock_start(&hc, CLOCK_REALTIME); /* the gate's clock */
  pthread_mutex_lock(&s->g->mu);
  while (s->g->have < s->len && !s->g->failed && !over) {
    struct timespec next = test_hang_clock_next(&hc);
    pthread_cond_timedwait(&s->g->cv, &s->g->mu, &next);
    over = test_hang_clock_over(&hc, 30);
  }
  s->released = s->g->have == s->len;
  pthread_mutex_unlock(&s->g->mu);
  if (!s->released) {
    sl_stage_set_error(stage, "the flush marker did not deliver the data");
    return SL_EIO;
  }
  return SL_EOF;
}

/* Collects content: decompresses with zlib itself when wb != 0, else
 * takes the bytes as they are. */
typedef struct flush_sink {
  int wb;
  z_stream zs;
  pu_bytes got;
  gate *g;
} flush_sink;

static int flush_sink_write(sl_stage *stage, void *ctx, sl_buf *in) {
  flush_sink *k = ctx;
  bool ok = true;

  (void)stage;
  if (k->wb == 0) {
    ok = pu_bytes_add(&k->got, sl_buf_data(in), sl_buf_len(in));
  } else {
    unsigned char buf[4096];
    k->zs.next_in = sl_buf_data(in);
    k->zs.avail_in = (uInt)sl_buf_len(in);
    while (ok && k->zs.avail_in > 0) {
      k->zs.next_out = buf;
      k->zs.avail_out = sizeof buf;
      int zr = inflate(&k->zs, Z_SYNC_FLUSH);
      ok = (zr == Z_OK || zr == Z_STREAM_END || zr == Z_BUF_ERROR) &&
           pu_bytes_add(&k->got, buf, sizeof buf - k->zs.avail_out);
      if (zr == Z_STREAM_END)
        break;
    }
  }
  sl_buf_unref(in);
  pthread_mutex_lock(&k->g->mu);
  k->g->have = k->got.len;
  k->g->failed |= !ok;
  pthread_cond_broadcast(&k->g->cv);
  pthread_mutex_unlock(&k->g->mu);
  return ok ? 0 : SL_EIO;
}

/* A marker after some data makes a compressor emit all of it, so the sink
 * can decompress it before the stream ends: cases 0-2 decompress in the
 * sink with zlib (gzip, zlib, raw); cases 3-5 through our decompressor,
 * which passes what it gets on at once. */
START_TEST(test_flush_marker_delivers) {
  static const int wb[] = {WB_GZIP, WB_ZLIB, WB_RAW};
  int pair = _i % 3;
  bool through = _i >= 3;
  size_t len = 1000; /* far less than deflate holds back on its own */
  unsigned char *data = pu_mixed_data(len, 17);
  sl_stage_ops src_ops = {.read = flush_src_read};
  sl_stage_ops sink_ops = {.write = flush_sink_write};
  sl_pipeline *p = NULL;
  sl_stage *st[4] = {NULL, NULL, NULL, NULL};
  gate g;
  flush_src src = {0};
  flush_sink sink;
  size_t n = 0;

  ck_assert_ptr_nonnull(data);
  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  g.have = 0;
  g.failed = false;
  src = (flush_src){.data = data, .len = len, .g = &g};
  memset(&sink, 0, sizeof sink);
  sink.g = &g;
  sink.wb = through ? 0 : wb[pair];
  if (sink.wb != 0)
    ck_assert_int_eq(inflateInit2(&sink.zs, sink.wb), Z_OK);

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&st[n++], "src", &src_ops, &src), 0);
  ck_assert_int_eq(make_stage(pairs[pair].comp, NULL, &st[n++]), 0);
  if (through)
    ck_assert_int_eq(make_stage(pairs[pair].decomp, NULL, &st[n++]), 0);
  ck_assert_int_eq(sl_stage_new(&st[n++], "sink", &sink_ops, &sink), 0);
  ck_assert_int_eq(sl_pipeline_chainv(p, st, n), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  int rc = sl_pipeline_wait(p);
  ck_assert_msg(rc == 0, "%s", sl_pipeline_error(p));
  ck_assert(src.released);
  ck_assert_uint_ge(sink.got.len, len);
  ck_assert(memcmp(sink.got.p, data, len) == 0);
  sl_pipeline_free(p);
  if (sink.wb != 0)
    inflateEnd(&sink.zs);
  pu_bytes_free(&sink.got);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * The bomb
 * ---------------------------------------------------------------------- */

typedef struct count_state {
  uint64_t bytes;
  bool nonzero;
} count_state;

static bool count_zeros(pu_sink *k, const sl_buf *b) {
  static const unsigned char zeros[4096];
  count_state *c = k->check_arg;
  const unsigned char *p = sl_buf_data(b);
  size_t n = sl_buf_len(b);

  c->bytes += n;
  for (size_t off = 0; off < n; off += sizeof zeros) {
    size_t m = n - off < sizeof zeros ? n - off : sizeof zeros;
    if (memcmp(p + off, zeros, m) != 0)
      c->nonzero = true;
  }
  return true;
}

/* 1 GiB of zeros, made into a gzip of about a megabyte here, inflates
 * through sl_gunzip while the pool never holds more than a few MiB: the
 * output is paused by backpressure, never accumulated. */
START_TEST(test_bomb_bounded_memory) {
  const uint64_t total = (uint64_t)1 << 30;
  const size_t piece = MIB, bound = 4 * MIB;
  static const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3};
  static const unsigned char last_block[2] = {0x03, 0x00};
  unsigned char *zeros = calloc(1, piece);
  pu_bytes bomb = {0}, block = {0};
  sl_pipeline *p = NULL;
  sl_stage *gun = NULL;
  sl_gzip_header h;
  count_state cs = {0, false};
  pu_src src;
  pu_sink sink;
  z_stream s;
  unsigned char out[16384];
  uLong crc_piece, crc = crc32(0L, Z_NULL, 0);

  /* 1 GiB never exists anywhere: one MiB of zeros is deflated once into
   * blocks that end on a byte boundary (a sync flush, not the last
   * block); those blocks, repeated, inflate to the zeros again and
   * again. Then an empty last block and the trailer. */
  ck_assert_ptr_nonnull(zeros);
  memset(&s, 0, sizeof s);
  ck_assert_int_eq(deflateInit2(&s, 9, Z_DEFLATED, WB_RAW, 9, Z_RLE), Z_OK);
  s.next_in = zeros;
  s.avail_in = (uInt)piece;
  do {
    s.next_out = out;
    s.avail_out = sizeof out;
    ck_assert_int_eq(deflate(&s, Z_SYNC_FLUSH), Z_OK);
    ck_assert(pu_bytes_add(&block, out, sizeof out - s.avail_out));
  } while (s.avail_out == 0);
  deflateEnd(&s);
  crc_piece = crc32(crc, zeros, (uInt)piece);
  ck_assert(pu_bytes_add(&bomb, header, sizeof header));
  for (uint64_t done = 0; done < total; done += piece) {
    ck_assert(pu_bytes_add(&bomb, block.p, block.len));
    crc = crc32_combine(crc, crc_piece, (z_off_t)piece);
  }
  ck_assert(pu_bytes_add(&bomb, last_block, sizeof last_block));
  put_le32(&bomb, (uint32_t)crc);
  put_le32(&bomb, (uint32_t)total);
  ck_assert_uint_lt(bomb.len, 2 * MIB); /* a real bomb: over 500:1 */

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&src, bomb.p, bomb.len, sizes_big, NELEM(sizes_big));
  pu_sink_init(&sink);
  sink.collect = false;
  sink.check = count_zeros;
  sink.check_arg = &cs;
  ck_assert_int_eq(sl_gunzip_new(&gun, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, pu_src_stage("src", &src), gun,
                                     pu_sink_stage("sink", &sink), NULL),
                   0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(cs.bytes, total);
  ck_assert(!cs.nonzero);
  sl_pool_stats ps = pu_pool_stats(p);
  ck_assert_msg(ps.peak_bytes < bound, "pool peaked at %zu bytes",
                ps.peak_bytes);
  ck_assert_int_eq(sl_gzip_header_get(gun, &h), 0);
  ck_assert_uint_eq(h.members, 1);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  pu_bytes_free(&bomb);
  pu_bytes_free(&block);
  free(zeros);
}
END_TEST

/* ------------------------------------------------------------------------
 * Options and allocation failures
 * ---------------------------------------------------------------------- */

START_TEST(test_opts_init) {
  sl_zlib_opts o;

  memset(&o, 0x5a, sizeof o);
  ck_assert_int_eq(sl_zlib_opts_init(&o), 0);
  ck_assert_ptr_null(o.name);
  ck_assert_int_eq(o.level, SL_ZLIB_LEVEL_DEFAULT);
  ck_assert_int_eq(o.strategy, SL_ZLIB_STRATEGY_DEFAULT);
  ck_assert_int_eq(o.window_bits, 15);
  ck_assert_int_eq(o.mem_level, 8);
  ck_assert_int_eq(o.ignore_trailing, 0);
  ck_assert_ptr_null(o.header);
  ck_assert_int_eq(sl_zlib_opts_init(NULL), SL_EINVAL);
}
END_TEST

/* Every out-of-range option, for every kind: SL_EINVAL, nothing made. */
START_TEST(test_bad_options) {
  static const unsigned char x[1] = {0};
  sl_gzip_header long_extra, no_extra;
  sl_zlib_opts o;
  sl_stage *st;

  memset(&long_extra, 0, sizeof long_extra);
  long_extra.extra = x;
  long_extra.extra_len = 65536;
  memset(&no_extra, 0, sizeof no_extra);
  no_extra.extra_len = 3;
  for (int k = K_GZIP; k <= K_UNZIP; k++) {
    for (int c = 0; c < 11; c++) {
      sl_zlib_opts_init(&o);
      switch (c) {
      case 0:
        o.level = 10;
        break;
      case 1:
        o.level = -2;
        break;
      case 2:
        o.strategy = 5;
        break;
      case 3:
        o.strategy = -1;
        break;
      case 4:
        o.window_bits = 7;
        break;
      case 5:
        o.window_bits = 16;
        break;
      case 6:
        o.mem_level = 10;
        break;
      case 7:
        o.mem_level = -1;
        break;
      case 8:
        o.name = "";
        break;
      case 9:
        o.header = &long_extra;
        break;
      default:
        o.header = &no_extra;
        break;
      }
      st = (sl_stage *)&o; /* must come back NULL */
      ck_assert_int_eq(make_stage(k, &o, &st), SL_EINVAL);
      ck_assert_ptr_null(st);
    }
    ck_assert_int_eq(make_stage(k, NULL, NULL), SL_EINVAL);
  }
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* Failing each allocation of a constructor in turn gives SL_ENOMEM and
 * leaves nothing behind, until there are enough to succeed. */
START_TEST(test_alloc_failure_new) {
  static const unsigned char extra[] = {1, 2, 3};
  sl_gzip_header wh;
  sl_zlib_opts o;
  int kind = _i;
  long n;

  memset(&wh, 0, sizeof wh);
  wh.name = "name";
  wh.comment = "comment";
  wh.extra = extra;
  wh.extra_len = sizeof extra;
  sl_zlib_opts_init(&o);
  o.header = &wh;
  for (n = 1; n < 100; n++) {
    sl_stage *st = NULL;
    fail_alloc_arm(n);
    int rc = make_stage(kind, &o, &st);
    fail_alloc_disarm();
    if (fail_alloc_failed() == 0) {
      ck_assert_int_eq(rc, 0);
      sl_stage_free(st);
      break;
    }
    ck_assert_int_eq(rc, SL_ENOMEM);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(test_alloc_live(), 0);
  }
  ck_assert_int_lt(n, 100);
  ck_assert_int_gt(n, 2); /* the context, zlib's state and the stage */
}
END_TEST

/* Failing each allocation of a whole gzip -> gunzip run in turn: the run
 * fails with SL_ENOMEM or succeeds, never hangs or leaks; one of them is
 * inflate's window, which zlib allocates while it runs. */
START_TEST(test_alloc_failure_run) {
  size_t len = 200 * KIB;
  unsigned char *data = pu_mixed_data(len, 23);
  long n;

  ck_assert_ptr_nonnull(data);
  for (n = 1; n < 500; n++) {
    sl_pipeline *p = NULL;
    sl_stage *gz = NULL, *gun = NULL, *src = NULL, *snk = NULL;
    pu_src s;
    pu_sink k;
    int rc;

    pu_src_init(&s, data, len, sizes_mixed, NELEM(sizes_mixed));
    pu_sink_init(&k);
    k.collect = false;
    fail_alloc_arm(n);
    rc = sl_pipeline_new(&p, NULL);
    if (rc == 0)
      rc = sl_gzip_new(&gz, NULL);
    if (rc == 0)
      rc = sl_gunzip_new(&gun, NULL);
    if (rc == 0) {
      src = pu_src_stage("src", &s);
      snk = pu_sink_stage("sink", &k);
      rc = src && snk ? sl_pipeline_chain(p, src, gz, gun, snk, NULL)
                      : SL_ENOMEM;
    }
    if (rc == 0) {
      rc = sl_pipeline_start(p);
      int wrc = sl_pipeline_wait(p);
      if (rc == 0)
        rc = wrc;
    } else {
      sl_stage_free(src);
      sl_stage_free(gz);
      sl_stage_free(gun);
      sl_stage_free(snk);
    }
    sl_pipeline_free(p);
    fail_alloc_disarm();
    pu_sink_fini(&k);
    ck_assert_int_eq(test_alloc_live(), 0);
    if (fail_alloc_failed() == 0) {
      ck_assert_int_eq(rc, 0);
      break;
    }
    ck_assert_msg(rc == SL_ENOMEM || rc == 0, "allocation %ld: %s", n,
                  sl_strerror(rc));
  }
  ck_assert_int_lt(n, 500);
  free(data);
}
END_TEST

/* Pushes one buffer, made before it arms the failing allocator, so that
 * from then on only the decompressor allocates, in a fixed order. */
typedef struct arm_src {
  const unsigned char *data;
  size_t len;
  long n;
  bool pushed;
} arm_src;

static int arm_src_read(sl_stage *stage, void *ctx) {
  arm_src *s = ctx;
  sl_buf *b = NULL;
  int rc;

  if (s->pushed)
    return SL_EOF;
  if ((rc = sl_stage_buf(stage, s->len, &b)) != 0)
    return rc;
  memcpy(sl_buf_data(b), s->data, s->len);
  sl_buf_set_len(b, s->len);
  s->pushed = true;
  fail_alloc_arm(s->n);
  return sl_stage_push(stage, b);
}

/* Failing each allocation gunzip makes while it runs: its output buffers
 * and inflate's window, which zlib allocates on the first output, each
 * fail the pipeline with SL_ENOMEM and a message, and leak nothing. On
 * the zlib engine: ISA-L allocates all it needs when the stage is made. */
START_TEST(test_alloc_failure_inflate_window) {
  size_t len = 100 * KIB;
  unsigned char *data = pu_mixed_data(len, 29);
  sl_stage_ops src_ops = {.read = arm_src_read};
  bool saw_window = false;
  pu_bytes z = {0};
  sl_zlib_opts o;
  long n;

  sl_zlib_opts_init(&o);
  o.engine = SL_ZLIB_ENGINE_ZLIB;

  ck_assert_ptr_nonnull(data);
  zlib_compress(&z, data, len, WB_GZIP, 6);
  for (n = 1; n < 50; n++) {
    arm_src as = {.data = z.p, .len = z.len, .n = n};
    sl_pipeline *p = NULL;
    sl_stage *src = NULL, *gun = NULL;
    pu_sink k;

    pu_sink_init(&k);
    ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
    ck_assert_int_eq(sl_stage_new(&src, "src", &src_ops, &as), 0);
    ck_assert_int_eq(sl_gunzip_new(&gun, &o), 0);
    ck_assert_int_eq(
        sl_pipeline_chain(p, src, gun, pu_sink_stage("sink", &k), NULL), 0);
    ck_assert_int_eq(sl_pipeline_start(p), 0);
    int rc = sl_pipeline_wait(p);
    fail_alloc_disarm();
    if (fail_alloc_failed() == 0) {
      ck_assert_int_eq(rc, 0);
      ck_assert_uint_eq(k.got.len, len);
      ck_assert(memcmp(k.got.p, data, len) == 0);
    } else {
      ck_assert_int_eq(rc, SL_ENOMEM);
      ck_assert_ptr_nonnull(sl_pipeline_error(p));
      if (strcmp(sl_pipeline_error(p), "gunzip: inflate: out of memory") == 0)
        saw_window = true;
      else
        ck_assert_str_eq(sl_pipeline_error(p), "gunzip: out of memory");
    }
    sl_pipeline_free(p);
    pu_sink_fini(&k);
    ck_assert_int_eq(test_alloc_live(), 0);
    if (fail_alloc_failed() == 0)
      break;
  }
  ck_assert_int_lt(n, 50);
  ck_assert(saw_window);
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* sl_gzip_header_parse: every field of a full header, SL_AGAIN on every
 * prefix of it, and SL_EDATA on each kind of bad header. */
START_TEST(test_header_parse) {
  unsigned char b[64];
  size_t n = 0, hl = 0;
  sl_gzip_header h;

  b[n++] = 0x1f;
  b[n++] = 0x8b;
  b[n++] = 8;
  b[n++] = SL_GZIP_FTEXT | SL_GZIP_FHCRC | SL_GZIP_FEXTRA | SL_GZIP_FNAME |
           SL_GZIP_FCOMMENT;
  b[n++] = 4, b[n++] = 3, b[n++] = 2, b[n++] = 1; /* mtime 0x01020304 */
  b[n++] = 2;                                     /* XFL */
  b[n++] = 3;                                     /* OS */
  b[n++] = 3, b[n++] = 0, b[n++] = 'x', b[n++] = 'y', b[n++] = 'z';
  memcpy(b + n, "name", 5), n += 5;
  memcpy(b + n, "note", 5), n += 5;
  uLong crc = crc32(0L, b, (uInt)n);
  b[n++] = (unsigned char)(crc & 0xff);
  b[n++] = (unsigned char)((crc >> 8) & 0xff);
  size_t full = n;
  b[n++] = 0x03, b[n++] = 0x00; /* deflate data follows */

  for (size_t k = 0; k < full; k++)
    ck_assert_int_eq(sl_gzip_header_parse(b, k, &h, &hl), SL_AGAIN);
  ck_assert_int_eq(sl_gzip_header_parse(b, n, &h, &hl), 0);
  ck_assert_uint_eq(hl, full);
  ck_assert_uint_eq(h.flags, b[3]);
  ck_assert_int_eq(h.text, 1);
  ck_assert_uint_eq(h.mtime, 0x01020304u);
  ck_assert_uint_eq(h.xfl, 2);
  ck_assert_uint_eq(h.os, 3);
  ck_assert_int_eq(h.hcrc, 1);
  ck_assert_uint_eq(h.extra_len, 3);
  ck_assert(h.extra == b + 12);
  ck_assert_str_eq(h.name, "name");
  ck_assert_str_eq(h.comment, "note");
  ck_assert_uint_eq(h.members, 0);
  ck_assert_int_eq(sl_gzip_header_parse(b, full, &h, NULL), 0);

  unsigned char bad[64];
  static const size_t at[] = {0, 1, 2, 3, 3, 25};
  static const unsigned char xor [] = {1, 1, 1, 0x20, 0x80, 1};
  for (size_t i = 0; i < NELEM(at); i++) {
    memcpy(bad, b, n);
    bad[at[i]] ^= xor[i];
    ck_assert_msg(sl_gzip_header_parse(bad, n, &h, &hl) == SL_EDATA,
                  "byte %zu ^ 0x%02x", at[i], xor[i]);
  }
  ck_assert_int_eq(sl_gzip_header_parse(b, n, NULL, &hl), SL_EINVAL);
  ck_assert_int_eq(sl_gzip_header_parse(NULL, 1, &h, &hl), SL_EINVAL);
  ck_assert_int_eq(sl_gzip_header_parse(NULL, 0, &h, &hl), SL_AGAIN);

  /* A bare header, as sl_gzip_new writes it. */
  static const unsigned char bare[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  ck_assert_int_eq(sl_gzip_header_parse(bare, sizeof bare, &h, &hl), 0);
  ck_assert_uint_eq(hl, 10);
  ck_assert_ptr_null(h.name);
  ck_assert_ptr_null(h.comment);
  ck_assert_ptr_null(h.extra);
}
END_TEST

/* The engine option: zlib always built in; an engine out of range, not
 * built in, or unable to do a stage's job is refused. */
START_TEST(test_engine_opts) {
  unsigned built = sl_zlib_engines();
  sl_zlib_opts o;
  sl_stage *s = NULL;

  ck_assert(built & (1u << SL_ZLIB_ENGINE_ZLIB));
  ck_assert_str_eq(sl_zlib_engine_name(SL_ZLIB_ENGINE_AUTO), "auto");
  ck_assert_str_eq(sl_zlib_engine_name(SL_ZLIB_ENGINE_ZLIB), "zlib");
  ck_assert_str_eq(sl_zlib_engine_name(SL_ZLIB_ENGINE_ISAL), "isal");
  ck_assert_str_eq(sl_zlib_engine_name(SL_ZLIB_ENGINE_LIBDEFLATE),
                   "libdeflate");
  ck_assert_ptr_null(sl_zlib_engine_name(4));
  ck_assert_ptr_null(sl_zlib_engine_name(-1));
  sl_zlib_opts_init(&o);
  ck_assert_int_eq(o.engine, SL_ZLIB_ENGINE_AUTO);
  for (int e = -1; e <= 4; e++) {
    o.engine = e;
    int want_d = e == SL_ZLIB_ENGINE_AUTO || e == SL_ZLIB_ENGINE_ZLIB ||
                         (e == SL_ZLIB_ENGINE_ISAL && (built & (1u << e)))
                     ? 0
                     : SL_EINVAL;
    int want_c =
        e == SL_ZLIB_ENGINE_AUTO || e == SL_ZLIB_ENGINE_ZLIB ? 0 : SL_EINVAL;
    ck_assert_msg(sl_gunzip_new(&s, &o) == want_d, "gunzip engine %d", e);
    sl_stage_free(s);
    ck_assert_msg(sl_unzip_new(&s, &o) == want_d, "unzip engine %d", e);
    sl_stage_free(s);
    ck_assert_msg(sl_gzip_new(&s, &o) == want_c, "gzip engine %d", e);
    sl_stage_free(s);
  }
  /* ISA-L keeps a 32 KiB window: a smaller one is zlib's to enforce. */
  o.engine = SL_ZLIB_ENGINE_ISAL;
  o.window_bits = 9;
  ck_assert_int_eq(sl_inflate_raw_new(&s, &o), SL_EINVAL);
  ck_assert_ptr_null(s);
  o.engine = SL_ZLIB_ENGINE_AUTO;
  ck_assert_int_eq(sl_inflate_raw_new(&s, &o), 0);
  sl_stage_free(s);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);

  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

static Suite *zlib_suite(void) {
  Suite *s = suite_create("zlib");
  TCase *tc;

  tc = tcase("roundtrip", 120);
  tcase_add_loop_test(tc, test_roundtrip_edge_sizes, 0, NPAIRS * NEDGE);
  tcase_add_loop_test(tc, test_roundtrip_levels, 0, 10);
  tcase_add_loop_test(tc, test_roundtrip_strategies, 0, 5);
  tcase_add_loop_test(tc, test_roundtrip_windows, 0, 9);
  tcase_add_test(tc, test_interop_with_zlib);
  tcase_add_loop_test(tc, test_empty_input_valid_stream, 0, 3);
  suite_add_tcase(s, tc);

  tc = tcase("large", 600);
  tcase_add_loop_test(tc, test_roundtrip_50mib, 0, NPAIRS);
  tcase_add_test(tc, test_bomb_bounded_memory);
  suite_add_tcase(s, tc);

  tc = tcase("gzip", 60);
  tcase_add_test(tc, test_gunzip_multi_member);
  tcase_add_loop_test(tc, test_gunzip_header_fields, 0, 4);
  tcase_add_test(tc, test_gunzip_header_bare);
  tcase_add_test(tc, test_header_parse);
  tcase_add_test(tc, test_engine_opts);
  tcase_add_test(tc, test_gunzip_long_name_truncated);
  tcase_add_test(tc, test_gzip_writes_header);
  suite_add_tcase(s, tc);

  tc = tcase("errors", 60);
  tcase_add_test(tc, test_gunzip_bad_hcrc);
  tcase_add_loop_test(tc, test_gunzip_reserved_flags, 0, 3);
  tcase_add_test(tc, test_gunzip_bad_magic_and_method);
  tcase_add_test(tc, test_gunzip_truncated);
  tcase_add_loop_test(tc, test_truncated_zlib_raw_unzip, 0, 5);
  tcase_add_loop_test(tc, test_gunzip_crc_mismatch, 0, 4);
  tcase_add_test(tc, test_gunzip_isize_mismatch);
  tcase_add_test(tc, test_inflate_adler_mismatch);
  tcase_add_test(tc, test_gunzip_corrupt_block_type);
  tcase_add_test(tc, test_inflate_raw_distance_too_far);
  tcase_add_test(tc, test_gunzip_corrupt_data);
  tcase_add_loop_test(tc, test_trailing_garbage, 0, 4 * (int)NELEM(garbage));
  tcase_add_test(tc, test_gunzip_ignore_trailing_magic_is_member);
  tcase_add_loop_test(tc, test_empty_input_truncated, 0, 4);
  tcase_add_test(tc, test_inflate_bad_headers);
  suite_add_tcase(s, tc);

  tc = tcase("unzip", 60);
  tcase_add_loop_test(tc, test_unzip_detects, 0, 3);
  tcase_add_test(tc, test_unzip_empty_raw);
  suite_add_tcase(s, tc);

  tc = tcase("api", 60);
  tcase_add_test(tc, test_getters_refuse);
  tcase_add_test(tc, test_format_and_names);
  tcase_add_test(tc, test_header_get_while_running);
  tcase_add_test(tc, test_opts_init);
  tcase_add_test(tc, test_bad_options);
  suite_add_tcase(s, tc);

  tc = tcase("flush", 60);
  tcase_add_loop_test(tc, test_flush_marker_delivers, 0, 6);
  suite_add_tcase(s, tc);

  tc = tcase("alloc", 120);
  tcase_add_loop_test(tc, test_alloc_failure_new, K_GZIP, K_UNZIP + 1);
  tcase_add_test(tc, test_alloc_failure_run);
  tcase_add_test(tc, test_alloc_failure_inflate_window);
  suite_add_tcase(s, tc);

  return s;
}

int main(void) {
  engine_from_env();
  return run_suite(zlib_suite());
}

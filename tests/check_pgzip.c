/* SPDX-License-Identifier: MIT */
/*
 * Check suite for the parallel gzip stage and the two-stage gunzip:
 * round trips at the edge sizes (0, 1, 2, 3 bytes, a block less one, a
 * block, a block and one, ten blocks and seven, the smallest block size)
 * and at 20 MiB, every level; the same output bytes for 1, 2 and 8 workers
 * and any cutting of the input; gzip(1) and pigz read what it writes, and
 * the header it writes is sl_gzip_new's, read back by sl_gunzip_new; flush
 * markers; a failing allocation on a worker fails the pipeline once and
 * leaks nothing; memory bounded by the options, not by the input.
 *
 * The two-stage gunzip is run side by side with sl_gunzip_new on the same
 * inputs, good and damaged (CRC-32, ISIZE, truncation at every byte,
 * trailing bytes, bad header fields), and must give the same output, the
 * same code and the same message, offset included.
 *
 * Every test runs with the counting allocator installed (the fixture
 * checks that every block the library allocated was freed, zlib's state
 * included) and checks that no thread outlived it.
 */
#include "engineutil.h"
#include "pipeutil.h"

#include <sluice/map.h>
#include <sluice/pgzip.h>
#include <sluice/zlib.h>

#include <stdio.h>
#include <unistd.h>
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
#define BLOCK SL_PGZIP_BLOCK_DEFAULT
#define BMIN SL_PGZIP_BLOCK_MIN

/* Chunk sizes for sources: tiny, odd, a page, one pooled buffer, one
 * more, more than one buffer. */
static const size_t sizes_mixed[] = {65536, 1,     7,  4096, 100000,
                                     3,     65537, 31, 2,    1000};
static const size_t sizes_one[] = {1};
static const size_t sizes_three[] = {3};
static const size_t sizes_big[] = {65536, 65537, 1000};
/* With 64 KiB blocks: whole blocks, on and off a block's boundary. */
static const size_t sizes_blocks[] = {65536, 65536, 1, 65536, 65535, 65536};

/* ------------------------------------------------------------------------
 * Data and zlib itself
 * ---------------------------------------------------------------------- */

/* len bytes of text: words drawn at random from a small vocabulary, so
 * that matches reach back across any block boundary. */
static unsigned char *text_data(size_t len, uint64_t seed) {
  static const char *const words[] = {
      "sluice ", "stream ",  "backpressure ", "gzip ",  "ring ",  "the ",
      "of ",     "member\n", "worker ",       "block ", "pool ",  "mark ",
      "thread ", "deflate ", "dictionary ",   "crc ",   "flush ", "drain "};
  unsigned char *d = malloc(len ? len : 1);
  uint64_t r = seed * 2 + 1;
  size_t i = 0;

  if (d == NULL)
    return NULL;
  while (i < len) {
    const char *w = words[test_rand(&r) % NELEM(words)];
    for (; *w && i < len; w++)
      d[i++] = (unsigned char)*w;
  }
  return d;
}

/* One gzip member made by zlib itself. */
static void zlib_gzip(pu_bytes *out, const void *data, size_t len, int level) {
  z_stream s;
  unsigned char buf[16384];
  int zr;

  memset(&s, 0, sizeof s);
  ck_assert_int_eq(
      deflateInit2(&s, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
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

/* Decompress exactly one gzip member, the whole of data, with zlib
 * itself. Returns zlib's last code; Z_STREAM_END only when the member
 * ended at the end of data. */
static int zlib_gunzip(pu_bytes *out, const void *data, size_t len) {
  z_stream s;
  unsigned char buf[16384];
  int zr;

  memset(&s, 0, sizeof s);
  ck_assert_int_eq(inflateInit2(&s, 31), Z_OK);
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
  if (zr == Z_STREAM_END && s.avail_in != 0)
    zr = Z_DATA_ERROR; /* bytes after the member */
  inflateEnd(&s);
  return zr;
}

static uint32_t crc_of(const void *p, size_t n) {
  return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

static void pgz_opts(sl_pgzip_opts *o, int level, size_t block,
                     unsigned workers) {
  ck_assert_int_eq(sl_pgzip_opts_init(o), 0);
  /* pigz's format: what these tests are about (one member, chained
   * blocks); the block format has its own tests, and AUTO's choice its
   * own. */
  o->format = SL_PGZIP_FORMAT_PIGZ;
  o->level = level;
  o->block_size = block;
  o->workers = workers;
}

/* ------------------------------------------------------------------------
 * Compressing: source -> pgzip -> memory sink
 * ---------------------------------------------------------------------- */

typedef struct prun {
  sl_pipeline *p;
  pu_src src;
  sl_stage *pg, *sink; /* owned by p */
  int rc;
  const char *err; /* lives as long as p */
  const unsigned char *out;
  size_t out_len; /* the sink's bytes, valid until prun_free */
} prun;

static void prun_go(prun *r, const unsigned char *in, size_t len,
                    const size_t *sizes, size_t nsizes,
                    const sl_pgzip_opts *o) {
  sl_stage *src;
  const void *d = NULL;
  size_t n = 0;

  memset(r, 0, sizeof *r);
  ck_assert_int_eq(sl_pipeline_new(&r->p, NULL), 0);
  pu_src_init(&r->src, in, len, sizes, nsizes);
  src = pu_src_stage("src", &r->src);
  ck_assert_ptr_nonnull(src);
  ck_assert_int_eq(sl_pgzip_new(&r->pg, o), 0);
  ck_assert_int_eq(sl_mem_sink_new(&r->sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(r->p, src, r->pg, r->sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(r->p), 0);
  r->rc = sl_pipeline_wait(r->p);
  r->err = sl_pipeline_error(r->p);
  ck_assert_int_eq(sl_mem_sink_data(r->sink, &d, &n), 0);
  r->out = d;
  r->out_len = n;
}

static void prun_free(prun *r) {
  sl_pipeline_free(r->p);
  r->p = NULL;
}

/* in through pgzip(o): the gzip bytes appended to *gz; the stage's
 * result checked against the input and the output. */
static void pgzip_bytes(pu_bytes *gz, const unsigned char *in, size_t len,
                        const size_t *sizes, size_t nsizes,
                        const sl_pgzip_opts *o) {
  uint32_t crc = 0;
  uint64_t bin = 0, bout = 0;
  prun r;

  prun_go(&r, in, len, sizes, nsizes, o);
  ck_assert_msg(r.rc == 0, "pgzip: %s", r.err ? r.err : "?");
  ck_assert_int_eq(sl_pgzip_result(r.pg, &crc, &bin, &bout), 0);
  ck_assert_uint_eq(crc, crc_of(in, len));
  ck_assert_uint_eq(bin, len);
  ck_assert_uint_eq(bout, r.out_len);
  ck_assert(pu_bytes_add(gz, r.out, r.out_len));
  prun_free(&r);
}

/* ------------------------------------------------------------------------
 * Decompressing: source -> [stages] -> sink that compares as it goes
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

enum dkind { D_GUNZIP, D_SPLIT };

typedef struct drun {
  sl_pipeline *p;
  pu_src src;
  pu_sink sink;
  cmp_state cmp;
  int rc;
  const char *err;
} drun;

/* in, cut by sizes, through [pgzip(po) when po] then sl_gunzip_new
 * (D_GUNZIP) or the two-stage gunzip (D_SPLIT) with zo, into a sink that
 * collects (want NULL) or compares with want. */
static void drun_go(drun *r, const sl_pgzip_opts *po, int kind,
                    const sl_zlib_opts *zo, const unsigned char *in, size_t len,
                    const size_t *sizes, size_t nsizes,
                    const unsigned char *want, size_t want_len) {
  sl_stage *src, *sink, *pg = NULL, *gun = NULL, *last;

  memset(r, 0, sizeof *r);
  ck_assert_int_eq(sl_pipeline_new(&r->p, NULL), 0);
  pu_src_init(&r->src, in, len, sizes, nsizes);
  pu_sink_init(&r->sink);
  if (want != NULL) {
    r->cmp = (cmp_state){.want = want, .len = want_len};
    r->sink.collect = false;
    r->sink.check = cmp_check;
    r->sink.check_arg = &r->cmp;
  }
  src = pu_src_stage("src", &r->src);
  sink = pu_sink_stage("sink", &r->sink);
  ck_assert(src != NULL && sink != NULL);
  last = src;
  if (po != NULL) {
    ck_assert_int_eq(sl_pgzip_new(&pg, po), 0);
    ck_assert_int_eq(sl_pipeline_chain(r->p, src, pg, NULL), 0);
    last = pg;
  }
  if (kind == D_GUNZIP) {
    ck_assert_int_eq(sl_gunzip_new(&gun, zo), 0);
    ck_assert_int_eq(sl_pipeline_chain(r->p, last, gun, sink, NULL), 0);
  } else {
    ck_assert_int_eq(sl_pgunzip_chain(r->p, last, sink, zo), 0);
  }
  ck_assert_int_eq(sl_pipeline_start(r->p), 0);
  r->rc = sl_pipeline_wait(r->p);
  r->err = sl_pipeline_error(r->p);
}

static void drun_free(drun *r) {
  sl_pipeline_free(r->p);
  pu_sink_fini(&r->sink);
  r->p = NULL;
}

/* data through pgzip(po) -> gunzip of kind, compared on the way out. */
static void roundtrip(const unsigned char *data, size_t len,
                      const sl_pgzip_opts *po, int kind, const size_t *sizes,
                      size_t nsizes) {
  drun r;

  drun_go(&r, po, kind, NULL, data, len, sizes, nsizes, data, len);
  ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
  ck_assert(!r.cmp.bad);
  ck_assert_uint_eq(r.cmp.pos, len);
  drun_free(&r);
}

/* ------------------------------------------------------------------------
 * Round trips
 * ---------------------------------------------------------------------- */

static const size_t edge_sizes[] = {
    0, 1, 2, 3, BLOCK - 1, BLOCK, BLOCK + 1, 10 * BLOCK + 7};
#define NEDGE ((int)NELEM(edge_sizes))

/* pgzip -> sl_gunzip_new at every edge size; zlib reads the same bytes as
 * one member, and the stage's result is the input's CRC and length. */
START_TEST(test_roundtrip_edge_sizes) {
  size_t len = edge_sizes[_i];
  unsigned char *data = pu_mixed_data(len, (uint64_t)_i + 1);
  pu_bytes gz = {0}, plain = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, SL_ZLIB_LEVEL_DEFAULT, 0, 3);
  roundtrip(data, len, &o, D_GUNZIP, sizes_mixed, NELEM(sizes_mixed));
  pgzip_bytes(&gz, data, len, sizes_mixed, NELEM(sizes_mixed), &o);
  ck_assert_int_eq(zlib_gunzip(&plain, gz.p, gz.len), Z_STREAM_END);
  ck_assert_uint_eq(plain.len, len);
  ck_assert(len == 0 || memcmp(plain.p, data, len) == 0);
  pu_bytes_free(&gz);
  pu_bytes_free(&plain);
  free(data);
}
END_TEST

/* An empty input gives a valid gzip member of empty content: a header, an
 * empty last block and a trailer of zeros. */
START_TEST(test_empty_input_valid_member) {
  pu_bytes gz = {0}, plain = {0};
  sl_pgzip_opts o;

  pgz_opts(&o, _i, 0, 2);
  pgzip_bytes(&gz, (const unsigned char *)"", 0, sizes_one, 1, &o);
  ck_assert_uint_le(gz.len, 10 + 5 + 8);
  ck_assert_uint_eq(gz.p[0], 0x1f);
  ck_assert_uint_eq(gz.p[1], 0x8b);
  ck_assert_int_eq(zlib_gunzip(&plain, gz.p, gz.len), Z_STREAM_END);
  ck_assert_uint_eq(plain.len, 0);
  for (size_t i = gz.len - 8; i < gz.len; i++)
    ck_assert_uint_eq(gz.p[i], 0);
  pu_bytes_free(&gz);
  pu_bytes_free(&plain);
}
END_TEST

/* 20 MiB of mixed content, the default options but four workers. */
START_TEST(test_roundtrip_20mib) {
  size_t len = 20 * MIB;
  unsigned char *data = pu_mixed_data(len, 20);
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, SL_ZLIB_LEVEL_DEFAULT, 0, 4);
  roundtrip(data, len, &o, D_GUNZIP, sizes_big, NELEM(sizes_big));
  free(data);
}
END_TEST

/* Every level, 0 to 9: right content; level 0 stores (output larger than
 * the input), the others compress. */
START_TEST(test_roundtrip_levels) {
  size_t len = MIB + 17;
  unsigned char *data = pu_mixed_data(len, 7);
  pu_bytes gz = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, _i, 0, 2);
  roundtrip(data, len, &o, D_GUNZIP, sizes_mixed, NELEM(sizes_mixed));
  pgzip_bytes(&gz, data, len, sizes_mixed, NELEM(sizes_mixed), &o);
  if (_i == 0)
    ck_assert_uint_gt(gz.len, len);
  else
    ck_assert_uint_lt(gz.len, len * 3 / 4);
  pu_bytes_free(&gz);
  free(data);
}
END_TEST

/* SL_ZLIB_LEVEL_DEFAULT is level 6, byte for byte. */
START_TEST(test_default_level_is_6) {
  size_t len = 300 * KIB + 1;
  unsigned char *data = pu_mixed_data(len, 8);
  pu_bytes a = {0}, b = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, SL_ZLIB_LEVEL_DEFAULT, 0, 2);
  pgzip_bytes(&a, data, len, sizes_big, NELEM(sizes_big), &o);
  o.level = 6;
  pgzip_bytes(&b, data, len, sizes_big, NELEM(sizes_big), &o);
  ck_assert_uint_eq(a.len, b.len);
  ck_assert(memcmp(a.p, b.p, a.len) == 0);
  pu_bytes_free(&a);
  pu_bytes_free(&b);
  free(data);
}
END_TEST

/* The same bytes for 1, 2 and 8 workers, one job in flight or many, and
 * any cutting of the input, at levels 0, 1, 6 and 9. */
START_TEST(test_output_independent_of_workers) {
  static const int levels[] = {0, 1, 6, 9};
  static const struct {
    unsigned workers, in_flight;
    const size_t *sizes;
    size_t nsizes;
  } runs[] = {{1, 0, sizes_mixed, NELEM(sizes_mixed)},
              {2, 0, sizes_big, NELEM(sizes_big)},
              {8, 0, sizes_mixed, NELEM(sizes_mixed)},
              {8, 1, sizes_big, NELEM(sizes_big)},
              {3, 64, sizes_mixed, NELEM(sizes_mixed)},
              {4, 0, sizes_blocks, NELEM(sizes_blocks)}};
  size_t len = MIB + 333;
  unsigned char *data = pu_mixed_data(len, 9);
  pu_bytes first = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  for (size_t i = 0; i < NELEM(runs); i++) {
    pu_bytes gz = {0};
    pgz_opts(&o, levels[_i], 64 * KIB, runs[i].workers);
    o.in_flight = runs[i].in_flight;
    pgzip_bytes(&gz, data, len, runs[i].sizes, runs[i].nsizes, &o);
    if (i == 0) {
      first = gz;
      continue;
    }
    ck_assert_msg(gz.len == first.len && memcmp(gz.p, first.p, gz.len) == 0,
                  "level %d, %u workers: %zu bytes, not the %zu of 1 worker",
                  levels[_i], runs[i].workers, gz.len, first.len);
    pu_bytes_free(&gz);
  }
  pu_bytes_free(&first);
  free(data);
}
END_TEST

/* Gzip LEN bytes of DATA, given to the stage a block at a time, through a
 * pipeline whose pool's buffers are a block long (as sgzip has them);
 * check that the output inflates back to DATA and return the pool's
 * statistics, and the output's length in *GZ_LEN. */
static sl_pool_stats pgzip_whole_blocks(const unsigned char *data, size_t len,
                                        int level, size_t *gz_len) {
  static const size_t sizes[] = {BLOCK};
  sl_pipeline_opts po = {.buf_size = BLOCK};
  sl_pipeline *p = NULL;
  sl_stage *src, *pg = NULL, *sink = NULL;
  sl_pgzip_opts o;
  pu_src s;
  pu_sink k_sink;
  pu_bytes back = {0};
  sl_pool_stats st;

  pgz_opts(&o, level, BLOCK, 2);
  pu_src_init(&s, data, len, sizes, NELEM(sizes));
  pu_sink_init(&k_sink);
  ck_assert_int_eq(sl_pipeline_new(&p, &po), 0);
  src = pu_src_stage("src", &s);
  sink = pu_sink_stage("sink", &k_sink);
  ck_assert(src && sink);
  ck_assert_int_eq(sl_pgzip_new(&pg, &o), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, pg, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  st = pu_pool_stats(p);
  ck_assert_int_eq(zlib_gunzip(&back, k_sink.got.p, k_sink.got.len),
                   Z_STREAM_END);
  ck_assert_uint_eq(back.len, len);
  ck_assert(memcmp(back.p, data, len) == 0);
  *gz_len = k_sink.got.len;
  sl_pipeline_free(p);
  pu_sink_fini(&k_sink);
  pu_bytes_free(&back);
  return st;
}

/* A chunk of exactly one block that starts a block goes to a worker as it
 * is: for K such chunks the pool hands out K source buffers, K + 1
 * results (the last block is empty and finishes the stream), the empty
 * last block, the header and the trailer, 2K + 4 in all, where copying
 * each chunk into a block of its own would take K more. */
START_TEST(test_whole_blocks_not_copied) {
  const size_t k = 16, len = k * BLOCK;
  unsigned char *data = pu_mixed_data(len, 12);
  sl_pool_stats st;
  size_t gz_len;

  ck_assert_ptr_nonnull(data);
  st = pgzip_whole_blocks(data, len, 1, &gz_len);
  ck_assert_msg(st.allocations + st.reuses <= 2 * k + 4,
                "%llu buffers for %zu whole blocks",
                (unsigned long long)(st.allocations + st.reuses), k);
  free(data);
}
END_TEST

/* Blocks that do not compress come out a little larger than a block:
 * with the pool's buffers a block long, such a result must still come
 * from the pool, not from an allocation per block. The pool's
 * allocations follow its peak working set, which the marks and the jobs
 * in flight bound (about 20 buffers here), whatever the input's length;
 * one allocation per block would be 128 or more. */
START_TEST(test_incompressible_results_pooled) {
  const size_t k = 128, len = k * BLOCK;
  unsigned char *data = malloc(len);
  uint64_t r = 77;
  sl_pool_stats st;
  size_t gz_len;

  ck_assert_ptr_nonnull(data);
  for (size_t i = 0; i < len; i++)
    data[i] = (unsigned char)(test_rand(&r) >> 24);
  st = pgzip_whole_blocks(data, len, 6, &gz_len);
  ck_assert_uint_gt(gz_len, len); /* it did not compress */
  ck_assert_msg(st.allocations < 64, "%llu allocations for %zu blocks",
                (unsigned long long)st.allocations, k);
  free(data);
}
END_TEST

/* The smallest block size, at its own edge sizes, and the same bytes for
 * one worker and four. */
START_TEST(test_smallest_block) {
  static const size_t lens[] = {1, BMIN - 1, BMIN, BMIN + 1, 5 * BMIN + 3};
  size_t len = lens[_i];
  unsigned char *data = pu_mixed_data(len, 31);
  pu_bytes a = {0}, b = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, SL_ZLIB_LEVEL_DEFAULT, BMIN, 4);
  roundtrip(data, len, &o, D_GUNZIP, sizes_mixed, NELEM(sizes_mixed));
  pgzip_bytes(&a, data, len, sizes_mixed, NELEM(sizes_mixed), &o);
  o.workers = 1;
  pgzip_bytes(&b, data, len, sizes_three, 1, &o);
  ck_assert_uint_eq(a.len, b.len);
  ck_assert(memcmp(a.p, b.p, a.len) == 0);
  pu_bytes_free(&a);
  pu_bytes_free(&b);
  free(data);
}
END_TEST

/* The dictionaries are used: on text, pgzip's output at the smallest
 * block size is within 2% of zlib's at the same level, and clearly
 * smaller than the blocks compressed alone. */
START_TEST(test_dictionary_used) {
  size_t len = 4 * MIB;
  unsigned char *data = text_data(len, 5);
  pu_bytes pg = {0}, z = {0};
  sl_pgzip_opts o;
  size_t alone = 0;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, 6, BMIN, 2);
  pgzip_bytes(&pg, data, len, sizes_big, NELEM(sizes_big), &o);
  zlib_gzip(&z, data, len, 6);
  for (size_t off = 0; off < len; off += BMIN) {
    pu_bytes one = {0};
    zlib_gzip(&one, data + off, len - off < BMIN ? len - off : BMIN, 6);
    alone += one.len - 18;
    pu_bytes_free(&one);
  }
  ck_assert_msg(pg.len < z.len + z.len / 50, "pgzip %zu, zlib %zu", pg.len,
                z.len);
  ck_assert_msg(pg.len < alone - alone / 50, "pgzip %zu, blocks alone %zu",
                pg.len, alone);
  pu_bytes_free(&pg);
  pu_bytes_free(&z);
  free(data);
}
END_TEST

/* pigz's scheme, written out with zlib: each BLOCK-byte block as raw
 * deflate at LEVEL and memLevel MEM, primed with the last 32 KiB of the
 * block before it, ended with a sync flush, the last one finished; but
 * block k at level 0 where STORED is not NULL and STORED[k] is true. */
static void scheme_body(pu_bytes *out, const unsigned char *in, size_t len,
                        size_t block, int level, int mem, const bool *stored) {
  size_t cap = 2 * block + 1024;
  unsigned char *buf = malloc(cap);

  ck_assert_ptr_nonnull(buf);
  for (size_t off = 0, k = 0; off < len; off += block, k++) {
    size_t n = len - off < block ? len - off : block;
    bool last = off + n == len;
    int lv = stored != NULL && stored[k] ? 0 : level;
    z_stream s;

    memset(&s, 0, sizeof s);
    ck_assert_int_eq(
        deflateInit2(&s, lv, Z_DEFLATED, -15, mem, Z_DEFAULT_STRATEGY), Z_OK);
    if (off > 0)
      ck_assert_int_eq(deflateSetDictionary(&s, in + off - 32 * KIB, 32 * KIB),
                       Z_OK);
    s.next_in = (Bytef *)(uintptr_t)(in + off);
    s.avail_in = (uInt)n;
    s.next_out = buf;
    s.avail_out = (uInt)cap;
    ck_assert_int_eq(deflate(&s, last ? Z_FINISH : Z_SYNC_FLUSH),
                     last ? Z_STREAM_END : Z_OK);
    ck_assert_uint_eq(s.avail_in, 0);
    ck_assert(pu_bytes_add(out, buf, cap - s.avail_out));
    deflateEnd(&s);
  }
  free(buf);
}

/* len bytes of words drawn from a vocabulary of 4096 random ones: enough
 * distinct strings that zlib's hash table size shows in its matches, and
 * enough symbols per block that its symbol buffer size shows in where it
 * ends a deflate block. */
static unsigned char *vocab_text(size_t len, uint64_t seed) {
  enum { NWORDS = 4096, WMAX = 10 };
  char(*vocab)[WMAX + 1] = malloc(NWORDS * sizeof *vocab);
  unsigned char *d = malloc(len ? len : 1);
  uint64_t r = seed * 2 + 1;
  size_t i = 0;

  if (vocab == NULL || d == NULL) {
    free(vocab);
    free(d);
    return NULL;
  }
  for (int w = 0; w < NWORDS; w++) {
    int n = 2 + (int)(test_rand(&r) % (WMAX - 1));
    for (int c = 0; c < n; c++)
      vocab[w][c] = (char)('a' + test_rand(&r) % 26);
    vocab[w][n] = '\0';
  }
  while (i < len) {
    const char *w = vocab[test_rand(&r) % NWORDS];
    for (; *w && i < len; w++)
      d[i++] = (unsigned char)*w;
    if (i < len)
      d[i++] = test_rand(&r) % 8 ? ' ' : '\n';
  }
  free(vocab);
  return d;
}

/* The stage writes exactly that scheme, at the memory level asked for (9
 * when it is 0, and by default), between a bare 10-byte header and the
 * trailer; and the memory level makes a difference to the bytes. */
START_TEST(test_scheme_and_mem_level) {
  static const int levels[] = {1, 6, 9};
  static const int mems[] = {0, 9, 8, 1};
  size_t len = 3 * BLOCK + 1000; /* three whole blocks and a short one */
  unsigned char *data = vocab_text(len, 11);
  int level = levels[_i];
  pu_bytes ref9 = {0};

  ck_assert_ptr_nonnull(data);
  scheme_body(&ref9, data, len, BLOCK, level, 9, NULL);
  for (size_t k = 0; k < NELEM(mems); k++) {
    int mem = mems[k] ? mems[k] : 9;
    pu_bytes gz = {0}, ref = {0};
    sl_pgzip_opts o;
    const unsigned char *t;

    pgz_opts(&o, level, BLOCK, 2);
    o.engine = SL_ZLIB_ENGINE_ZLIB; /* the scheme on zlib */
    if (k > 0)                      /* k == 0: what sl_pgzip_opts_init left */
      o.mem_level = mems[k];
    pgzip_bytes(&gz, data, len, sizes_big, NELEM(sizes_big), &o);
    scheme_body(&ref, data, len, BLOCK, level, mem, NULL);
    ck_assert_uint_gt(gz.len, 18);
    ck_assert_int_eq(gz.p[3], 0); /* no name, comment or extra field */
    ck_assert_msg(gz.len == ref.len + 18 &&
                      memcmp(gz.p + 10, ref.p, ref.len) == 0,
                  "level %d, mem_level %d: %zu bytes of deflate, the scheme "
                  "gives %zu",
                  level, mems[k], gz.len - 18, ref.len);
    t = gz.p + gz.len - 8;
    ck_assert_uint_eq((uint32_t)t[0] | (uint32_t)t[1] << 8 |
                          (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24,
                      crc_of(data, len));
    ck_assert_uint_eq((uint32_t)t[4] | (uint32_t)t[5] << 8 |
                          (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24,
                      (uint32_t)len);
    if (mem != 9)
      ck_assert_msg(ref.len != ref9.len || memcmp(ref.p, ref9.p, ref.len) != 0,
                    "level %d: mem_level %d writes what 9 writes", level, mem);
    pu_bytes_free(&gz);
    pu_bytes_free(&ref);
  }
  pu_bytes_free(&ref9);
  free(data);
}
END_TEST

/* Random bytes: what compressed or encrypted data looks like. */
static unsigned char *random_data(size_t len, uint64_t seed) {
  unsigned char *d = malloc(len ? len : 1);
  uint64_t r = seed * 2 + 1;

  if (d != NULL)
    for (size_t i = 0; i < len; i++)
      d[i] = (unsigned char)(test_rand(&r) >> 24);
  return d;
}

/* The body of the stage's output (between the bare header and the
 * trailer), checked to hold the right CRC and length. */
static void pgzip_body(pu_bytes *body, const unsigned char *data, size_t len,
                       const sl_pgzip_opts *o) {
  pu_bytes gz = {0};
  const unsigned char *t;

  pgzip_bytes(&gz, data, len, sizes_big, NELEM(sizes_big), o);
  ck_assert_uint_gt(gz.len, 18);
  ck_assert_int_eq(gz.p[3], 0); /* no name, comment or extra field */
  t = gz.p + gz.len - 8;
  ck_assert_uint_eq((uint32_t)t[0] | (uint32_t)t[1] << 8 |
                        (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24,
                    crc_of(data, len));
  ck_assert(pu_bytes_add(body, gz.p + 10, gz.len - 18));
  pu_bytes_free(&gz);
}

/* Random blocks are written as zlib writes them at level 0, stored, at any
 * level; the short last block (under 16 KiB) is deflated all the same.
 * With deflate_incompressible every block is deflated, as the plain
 * scheme has it. */
START_TEST(test_incompressible_blocks_stored) {
  static const int levels[] = {1, 6, 9};
  static const bool stored[] = {true, true, true, true, false};
  size_t len = 4 * BLOCK + 1000;
  unsigned char *data = random_data(len, 21);
  pu_bytes body = {0}, ref = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, levels[_i], BLOCK, 3);
  o.engine = SL_ZLIB_ENGINE_ZLIB; /* the scheme on zlib */
  pgzip_body(&body, data, len, &o);
  scheme_body(&ref, data, len, BLOCK, levels[_i], 9, stored);
  ck_assert_msg(body.len == ref.len && memcmp(body.p, ref.p, ref.len) == 0,
                "level %d: %zu bytes, stored blocks would be %zu", levels[_i],
                body.len, ref.len);
  /* Five bytes per stored block (of at most 64 KiB) and per flush; the
   * last block, deflated, a few more. */
  ck_assert_uint_le(body.len, len + 4 * (3 * 5 + 5) + 20);
  pu_bytes_free(&body);
  pu_bytes_free(&ref);

  o.deflate_incompressible = 1;
  pgzip_body(&body, data, len, &o);
  scheme_body(&ref, data, len, BLOCK, levels[_i], 9, NULL);
  ck_assert(body.len == ref.len && memcmp(body.p, ref.p, ref.len) == 0);
  pu_bytes_free(&body);
  pu_bytes_free(&ref);
  free(data);
}
END_TEST

/* Data that looks random in places but compresses is deflated, exactly as
 * with deflate_incompressible: a random 8 KiB piece repeated, a random
 * piece of 30000 bytes repeated (each copy within a deflate window of the
 * one before), blocks half random and half text, and random bytes drawn
 * from 128 values (a Huffman code saves an eighth). */
START_TEST(test_compressible_not_stored) {
  size_t len = 4 * BLOCK, max_out = 0;
  unsigned char *data = random_data(len, 33);
  unsigned char *text = text_data(len, 34);
  pu_bytes a = {0}, b = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  ck_assert_ptr_nonnull(text);
  switch (_i) {
  case 0:
    for (size_t i = 8192; i < len; i++)
      data[i] = data[i - 8192];
    max_out = len / 8;
    break;
  case 1:
    for (size_t i = 30000; i < len; i++)
      data[i] = data[i - 30000];
    max_out = len * 6 / 10;
    break;
  case 2:
    for (size_t off = 0; off < len; off += BLOCK)
      memcpy(data + off + BLOCK / 2, text + off, BLOCK / 2);
    max_out = len * 8 / 10;
    break;
  default:
    for (size_t i = 0; i < len; i++)
      data[i] &= 0x7f;
    max_out = len * 9 / 10;
    break;
  }
  pgz_opts(&o, 1, BLOCK, 2);
  o.engine = SL_ZLIB_ENGINE_ZLIB; /* zlib's level 1 finds these repeats */
  pgzip_body(&a, data, len, &o);
  ck_assert_msg(a.len < max_out, "case %d: %zu bytes of %zu", _i, a.len, len);
  o.deflate_incompressible = 1;
  pgzip_body(&b, data, len, &o);
  ck_assert(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
  pu_bytes_free(&a);
  pu_bytes_free(&b);
  free(text);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Other implementations read it
 * ---------------------------------------------------------------------- */

/* ISA-L at levels 1 to 3 (the default engine there when built in), at
 * every edge size: gunzip and zlib read it back; the bytes do not depend
 * on the workers or the input's chunks; they are not zlib's. */
START_TEST(test_isal_levels) {
  int level = 1 + _i / NEDGE;
  size_t len = edge_sizes[_i % NEDGE];
  unsigned char *data = pu_mixed_data(len, (uint64_t)_i + 5);
  pu_bytes a = {0}, b = {0}, z = {0}, plain = {0};
  sl_pgzip_opts o;
  sl_stage *st = NULL;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, level, 0, 3);
  o.engine = SL_ZLIB_ENGINE_ISAL;
  if (!(sl_zlib_engines() & (1u << SL_ZLIB_ENGINE_ISAL))) {
    ck_assert_int_eq(sl_pgzip_new(&st, &o), SL_EINVAL);
    free(data);
    return;
  }
  roundtrip(data, len, &o, D_GUNZIP, sizes_mixed, NELEM(sizes_mixed));
  roundtrip(data, len, &o, D_SPLIT, sizes_mixed, NELEM(sizes_mixed));
  pgzip_bytes(&a, data, len, sizes_mixed, NELEM(sizes_mixed), &o);
  ck_assert_int_eq(zlib_gunzip(&plain, a.p, a.len), Z_STREAM_END);
  ck_assert_uint_eq(plain.len, len);
  ck_assert(len == 0 || memcmp(plain.p, data, len) == 0);
  o.workers = 1;
  pgzip_bytes(&b, data, len, sizes_big, NELEM(sizes_big), &o);
  ck_assert(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
  pu_bytes_free(&b);
  o.engine = SL_ZLIB_ENGINE_AUTO; /* AUTO takes ISA-L at these levels */
  pgzip_bytes(&b, data, len, sizes_one, 1, &o);
  ck_assert(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
  o.engine = SL_ZLIB_ENGINE_ZLIB;
  pgzip_bytes(&z, data, len, sizes_big, NELEM(sizes_big), &o);
  if (len >= BLOCK)
    ck_assert(a.len != z.len || memcmp(a.p, z.p, a.len) != 0);
  pu_bytes_free(&a);
  pu_bytes_free(&b);
  pu_bytes_free(&z);
  pu_bytes_free(&plain);
  free(data);
}
END_TEST

/* ISA-L's blocks start with the 32 KiB before them as a dictionary: a
 * random 20000-byte piece repeated over eight blocks costs its literals
 * once, not once per block. At level 3: ISA-L's levels 1 and 2 hash too
 * little to find such repeats in random bytes, within a block or not. */
START_TEST(test_isal_dictionary) {
  size_t piece = 20000, len = 8 * BLOCK;
  unsigned char *data = random_data(len, 41);
  pu_bytes a = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  if (!(sl_zlib_engines() & (1u << SL_ZLIB_ENGINE_ISAL))) {
    free(data);
    return;
  }
  for (size_t i = piece; i < len; i++)
    data[i] = data[i - piece];
  for (int level = 3; level <= 3; level++) {
    pgz_opts(&o, level, BLOCK, 2);
    o.engine = SL_ZLIB_ENGINE_ISAL;
    o.deflate_incompressible = 1; /* no 16 KiB sample sees the repeats */
    pgzip_bytes(&a, data, len, sizes_big, NELEM(sizes_big), &o);
    ck_assert_msg(a.len < piece + piece / 2, "level %d: %zu bytes", level,
                  a.len);
    roundtrip(data, len, &o, D_GUNZIP, sizes_big, NELEM(sizes_big));
    pu_bytes_free(&a);
  }
  free(data);
}
END_TEST

/* Engines and levels: ISA-L does 0 to 3, zlib every level, libdeflate
 * none in this stage; unknown engines are refused. */
START_TEST(test_engine_choice) {
  bool isal = (sl_zlib_engines() & (1u << SL_ZLIB_ENGINE_ISAL)) != 0;
  sl_pgzip_opts o;
  sl_stage *st = NULL;

  for (int level = -1; level <= 9; level++) {
    pgz_opts(&o, level, 0, 1);
    for (int e = -1; e <= 4; e++) {
      o.engine = e;
      bool ok = e == SL_ZLIB_ENGINE_AUTO || e == SL_ZLIB_ENGINE_ZLIB ||
                (e == SL_ZLIB_ENGINE_ISAL && isal && level >= 0 && level <= 3);
      ck_assert_msg(sl_pgzip_new(&st, &o) == (ok ? 0 : SL_EINVAL),
                    "level %d engine %d", level, e);
      sl_stage_free(st);
      st = NULL;
    }
  }
}
END_TEST

static bool have_tool(const char *name) {
  char cmd[128];

  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
  return system(cmd) == 0;
}

/* Write b to a new temporary file; its name into path. */
static void write_temp(char *path, size_t size, const pu_bytes *b) {
  const char *dir = getenv("TMPDIR");
  int fd;

  snprintf(path, size, "%s/check_pgzip.XXXXXX", dir && *dir ? dir : "/tmp");
  fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, b->p, b->len), (ssize_t)b->len);
  ck_assert_int_eq(close(fd), 0);
}

/* The standard output of cmd, appended to *out; returns its exit status
 * (as system's). */
static int run_capture(const char *cmd, pu_bytes *out) {
  unsigned char buf[65536];
  FILE *f = popen(cmd, "r");
  size_t n;

  ck_assert_ptr_nonnull(f);
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    ck_assert(pu_bytes_add(out, buf, n));
  return pclose(f);
}

/* tool -dc reads what pgzip writes at every edge size and at 3 MiB; gzip
 * -t accepts it. */
static void tool_reads(const char *tool) {
  static const size_t lens[] = {0, 1, 3, BLOCK, BLOCK + 1, 3 * MIB + 11};
  sl_pgzip_opts o;

  if (!have_tool(tool)) {
    fprintf(stderr, "check_pgzip: %s not found; skipped\n", tool);
    return;
  }
  for (size_t i = 0; i < NELEM(lens); i++) {
    unsigned char *data = pu_mixed_data(lens[i], 40 + i);
    pu_bytes gz = {0}, plain = {0};
    char path[256], cmd[512];

    ck_assert_ptr_nonnull(data);
    pgz_opts(&o, (int)i % 10, 0, 4);
    pgzip_bytes(&gz, data, lens[i], sizes_mixed, NELEM(sizes_mixed), &o);
    write_temp(path, sizeof path, &gz);
    if (strcmp(tool, "gzip") == 0) {
      snprintf(cmd, sizeof cmd, "gzip -t '%s'", path);
      ck_assert_msg(system(cmd) == 0, "gzip -t refused %zu bytes", lens[i]);
    }
    snprintf(cmd, sizeof cmd, "%s -dc < '%s'", tool, path);
    ck_assert_int_eq(run_capture(cmd, &plain), 0);
    ck_assert_uint_eq(plain.len, lens[i]);
    ck_assert(lens[i] == 0 || memcmp(plain.p, data, lens[i]) == 0);
    unlink(path);
    pu_bytes_free(&gz);
    pu_bytes_free(&plain);
    free(data);
  }
}

START_TEST(test_gzip_tool_reads) {
  tool_reads("gzip");
}
END_TEST

START_TEST(test_pigz_reads) {
  tool_reads("pigz");
}
END_TEST

/* ------------------------------------------------------------------------
 * The header
 * ---------------------------------------------------------------------- */

/* A name, a comment, mtime and text written by pgzip are read back by
 * sl_gunzip_new, and the header bytes are those sl_gzip_new writes for the
 * same header and level (XFL included). */
START_TEST(test_header_fields) {
  static const int levels[] = {1, 6, 9};
  static const char name[] = "report-2024.csv";
  static const char comment[] = "written in parallel";
  int level = levels[_i];
  size_t len = 200 * KIB;
  unsigned char *data = pu_mixed_data(len, 12);
  sl_gzip_header h, got;
  sl_zlib_opts zo;
  sl_pgzip_opts o;
  sl_stage *src, *pg, *gun, *gz, *sink;
  sl_pipeline *p;
  pu_src s;
  pu_sink k;
  pu_bytes ref = {0};
  size_t hlen = 10 + sizeof name + sizeof comment + (_i == 2 ? 2 : 0);

  ck_assert_ptr_nonnull(data);
  memset(&h, 0, sizeof h);
  h.name = name;
  h.comment = comment;
  h.mtime = 1700000000u;
  h.text = 1;
  h.hcrc = _i == 2;
  pgz_opts(&o, level, 0, 2);
  o.header = &h;

  /* pgzip -> gunzip, header read back. */
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&s, data, len, sizes_mixed, NELEM(sizes_mixed));
  pu_sink_init(&k);
  src = pu_src_stage("src", &s);
  sink = pu_sink_stage("sink", &k);
  ck_assert_int_eq(sl_pgzip_new(&pg, &o), 0);
  ck_assert_int_eq(sl_gunzip_new(&gun, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, pg, gun, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(k.got.len, len);
  ck_assert(memcmp(k.got.p, data, len) == 0);
  ck_assert_int_eq(sl_gzip_header_get(gun, &got), 0);
  ck_assert_str_eq(got.name, name);
  ck_assert_str_eq(got.comment, comment);
  ck_assert_uint_eq(got.mtime, h.mtime);
  ck_assert_int_eq(got.text, 1);
  ck_assert_int_eq(got.hcrc, h.hcrc);
  ck_assert_uint_eq(got.os, 3);
  ck_assert_uint_eq(got.xfl, level == 9 ? 2 : level == 1 ? 4 : 0);
  ck_assert_uint_eq(got.members, 1);
  sl_pipeline_free(p);
  pu_sink_fini(&k);

  /* The same header bytes as sl_gzip_new's. */
  ck_assert_int_eq(sl_zlib_opts_init(&zo), 0);
  zo.level = level;
  zo.header = &h;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&s, data, len, sizes_mixed, NELEM(sizes_mixed));
  pu_sink_init(&k);
  src = pu_src_stage("src", &s);
  sink = pu_sink_stage("sink", &k);
  ck_assert_int_eq(sl_gzip_new(&gz, &zo), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, gz, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert(pu_bytes_add(&ref, k.got.p, k.got.len));
  sl_pipeline_free(p);
  pu_sink_fini(&k);
  {
    pu_bytes mine = {0};
    pgzip_bytes(&mine, data, len, sizes_big, NELEM(sizes_big), &o);
    ck_assert_uint_gt(mine.len, hlen);
    ck_assert(memcmp(mine.p, ref.p, hlen) == 0);
    pu_bytes_free(&mine);
  }
  pu_bytes_free(&ref);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Flush markers
 * ---------------------------------------------------------------------- */

/* The source pushes part a, a flush marker, then waits until the sink has
 * inflated all of a; only then does it push part b and end. So the test
 * ends only if the marker made everything before it leave pgzip. */
typedef struct fgate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t inflated; /* bytes the sink has inflated */
  bool ended;      /* the sink saw the member end */
  bool failed;     /* the sink could not inflate */
} fgate;

typedef struct fsrc {
  const unsigned char *data;
  size_t a, len; /* a bytes before the marker, len in all */
  int step;
  fgate *g;
  bool ended_early; /* the member had ended before the marker's data */
} fsrc;

static int fsrc_push(sl_stage *st, const unsigned char *p, size_t n) {
  sl_buf *b = NULL;
  int rc;

  if (n == 0)
    return 0;
  if ((rc = sl_stage_buf(st, n, &b)) != 0)
    return rc;
  memcpy(sl_buf_data(b), p, n);
  sl_buf_set_len(b, n);
  return sl_stage_push(st, b);
}

static int fsrc_read(sl_stage *st, void *ctx) {
  fsrc *s = ctx;
  int rc;

  if (s->step == 0) {
    s->step = 1;
    if ((rc = fsrc_push(st, s->data, s->a)) != 0)
      return rc;
    return sl_stage_push_flush(st);
  }
  pthread_mutex_lock(&s->g->mu);
  while (s->g->inflated < s->a && !s->g->failed)
    pthread_cond_wait(&s->g->cv, &s->g->mu);
  s->ended_early = s->g->ended;
  pthread_mutex_unlock(&s->g->mu);
  if ((rc = fsrc_push(st, s->data + s->a, s->len - s->a)) != 0)
    return rc;
  return SL_EOF;
}

typedef struct fsink {
  z_stream zs;
  pu_bytes got;
  fgate *g;
} fsink;

static int fsink_write(sl_stage *st, void *ctx, sl_buf *in) {
  fsink *k = ctx;
  unsigned char buf[16384];
  bool ended = false, failed = false;

  (void)st;
  k->zs.next_in = sl_buf_data(in);
  k->zs.avail_in = (uInt)sl_buf_len(in);
  while (k->zs.avail_in > 0 && !ended && !failed) {
    do {
      k->zs.next_out = buf;
      k->zs.avail_out = sizeof buf;
      int zr = inflate(&k->zs, Z_NO_FLUSH);
      if (zr == Z_STREAM_END)
        ended = true;
      else if (zr != Z_OK && zr != Z_BUF_ERROR)
        failed = true;
      if (!pu_bytes_add(&k->got, buf, sizeof buf - k->zs.avail_out))
        failed = true;
    } while (k->zs.avail_out == 0 && !ended && !failed);
  }
  sl_buf_unref(in);
  pthread_mutex_lock(&k->g->mu);
  k->g->inflated = k->got.len;
  k->g->ended = k->g->ended || ended;
  k->g->failed = k->g->failed || failed;
  pthread_cond_broadcast(&k->g->cv);
  pthread_mutex_unlock(&k->g->mu);
  return failed ? SL_EDATA : 0;
}

/* a: 0 (the marker comes first), 1000 bytes (less than a block), 300 KiB
 * + 3 (two blocks and a short one), with 1 and 4 workers. */
START_TEST(test_flush_marker_delivers) {
  static const size_t as[] = {0, 1000, 300 * KIB + 3};
  size_t a = as[_i % 3], len = a + 200 * KIB + 9;
  unsigned char *data = pu_mixed_data(len, 17);
  sl_stage_ops src_ops = {.read = fsrc_read};
  sl_stage_ops sink_ops = {.write = fsink_write};
  sl_stage *st[3];
  sl_pipeline *p = NULL;
  sl_pgzip_opts o;
  fgate g;
  fsrc src;
  fsink sink;

  ck_assert_ptr_nonnull(data);
  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  g.inflated = 0;
  g.ended = g.failed = false;
  src = (fsrc){.data = data, .a = a, .len = len, .g = &g};
  memset(&sink, 0, sizeof sink);
  sink.g = &g;
  ck_assert_int_eq(inflateInit2(&sink.zs, 31), Z_OK);
  pgz_opts(&o, SL_ZLIB_LEVEL_DEFAULT, 0, _i < 3 ? 1 : 4);

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&st[0], "src", &src_ops, &src), 0);
  ck_assert_int_eq(sl_pgzip_new(&st[1], &o), 0);
  ck_assert_int_eq(sl_stage_new(&st[2], "sink", &sink_ops, &sink), 0);
  ck_assert_int_eq(sl_pipeline_chainv(p, st, 3), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  int rc = sl_pipeline_wait(p);
  ck_assert_msg(rc == 0, "%s", sl_pipeline_error(p));
  ck_assert(!src.ended_early); /* the marker did not end the member */
  ck_assert(g.ended);
  ck_assert_uint_eq(sink.got.len, len);
  ck_assert(memcmp(sink.got.p, data, len) == 0);
  sl_pipeline_free(p);
  inflateEnd(&sink.zs);
  pu_bytes_free(&sink.got);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * The block format
 * ---------------------------------------------------------------------- */

/* One member of the block format, as blocks_parse found it. */
typedef struct bmember {
  size_t at, len; /* its offset in the stream, its bytes */
  size_t plain;   /* the bytes it inflates to */
  size_t hlen;    /* its header's bytes */
  unsigned char flg;
} bmember;

#define BMEMBERS_MAX 64

/* Walk gz as the block format: every member's header has FEXTRA, its
 * extra field starts with 'S' 'L', LEN 4 and the member's length, which
 * must end inside gz; the member, cut out alone at that length, is one
 * whole gzip member to zlib (inflateInit2 with 31, no byte left over:
 * zlib_gunzip checks the CRC-32, ISIZE and the header's CRC). Every
 * member after the first has the bare header (20 bytes: mtime 0, FEXTRA
 * alone, XLEN 8, OS 3). The contents joined go to *plain. Returns the
 * number of members (at most max, into m). */
static size_t blocks_parse(const pu_bytes *gz, pu_bytes *plain, bmember *m,
                           size_t max) {
  size_t at = 0, n = 0;

  ck_assert_uint_gt(gz->len, 0);
  while (at < gz->len) {
    const unsigned char *h = gz->p + at;
    size_t rest = gz->len - at, before = plain->len;
    ck_assert_uint_ge(rest, 20 + 8);
    ck_assert(h[0] == 0x1f && h[1] == 0x8b && h[2] == 8);
    ck_assert_msg(h[3] & 4, "member %zu: no FEXTRA", n);
    size_t xlen = h[10] | (size_t)h[11] << 8;
    ck_assert_uint_ge(xlen, 8);
    ck_assert(h[12] == 'S' && h[13] == 'L' && h[14] == 4 && h[15] == 0);
    size_t len = (size_t)h[16] | (size_t)h[17] << 8 | (size_t)h[18] << 16 |
                 (size_t)h[19] << 24;
    ck_assert_msg(len >= 20 + 8 && len <= rest,
                  "member %zu at %zu: length %zu, %zu bytes left", n, at, len,
                  rest);
    ck_assert_int_eq(zlib_gunzip(plain, h, len), Z_STREAM_END);
    if (n > 0) {
      ck_assert_uint_eq(h[3], 4);
      ck_assert(h[4] == 0 && h[5] == 0 && h[6] == 0 && h[7] == 0);
      ck_assert_uint_eq(xlen, 8);
      ck_assert_uint_eq(h[9], 3);
    }
    ck_assert_uint_lt(n, max);
    m[n] = (bmember){.at = at,
                     .len = len,
                     .plain = plain->len - before,
                     .hlen = 12 + xlen,
                     .flg = h[3]};
    n++;
    at += len;
  }
  return n;
}

/* Engines and levels for the block format's round trips. */
static const struct {
  int engine, level;
} bcases[] = {{SL_ZLIB_ENGINE_ZLIB, 0},       {SL_ZLIB_ENGINE_ZLIB, 1},
              {SL_ZLIB_ENGINE_ZLIB, 6},       {SL_ZLIB_ENGINE_ZLIB, 9},
              {SL_ZLIB_ENGINE_ISAL, 0},       {SL_ZLIB_ENGINE_ISAL, 1},
              {SL_ZLIB_ENGINE_ISAL, 3},       {SL_ZLIB_ENGINE_LIBDEFLATE, 0},
              {SL_ZLIB_ENGINE_LIBDEFLATE, 1}, {SL_ZLIB_ENGINE_LIBDEFLATE, 6},
              {SL_ZLIB_ENGINE_LIBDEFLATE, 9}, {SL_ZLIB_ENGINE_LIBDEFLATE, 10},
              {SL_ZLIB_ENGINE_LIBDEFLATE, 12}};
#define NBCASES ((int)NELEM(bcases))

static bool engine_built(int e) {
  return (sl_zlib_engines() & (1u << e)) != 0;
}

/* Every engine built in, at a few levels, at every edge size of a
 * minimal block (32 KiB): each member carries its true length and
 * inflates alone, the contents joined are the input, a block is a member
 * (one member of empty content for no input), and the bytes are the same
 * on 4 workers with odd chunks as on 1 with large ones; sl_gunzip_new
 * reads it too. An engine not built in is SL_EINVAL. */
START_TEST(test_blocks_edge_sizes) {
  static const size_t sizes[] = {0,        1,    2,        3,
                                 BMIN - 1, BMIN, BMIN + 1, 10 * BMIN + 7};
  int e = bcases[_i / (int)NELEM(sizes)].engine;
  int level = bcases[_i / (int)NELEM(sizes)].level;
  size_t len = sizes[_i % NELEM(sizes)];
  unsigned char *data = pu_mixed_data(len, (uint64_t)_i + 31);
  pu_bytes a = {0}, b = {0}, plain = {0};
  bmember m[BMEMBERS_MAX];
  sl_pgzip_opts o;
  sl_stage *st = NULL;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, level, BMIN, 4);
  o.format = SL_PGZIP_FORMAT_BLOCKS;
  o.engine = e;
  if (!engine_built(e)) {
    ck_assert_int_eq(sl_pgzip_new(&st, &o), SL_EINVAL);
    ck_assert_ptr_null(st);
    free(data);
    return;
  }
  pgzip_bytes(&a, data, len, sizes_mixed, NELEM(sizes_mixed), &o);
  size_t n = blocks_parse(&a, &plain, m, BMEMBERS_MAX);
  ck_assert_uint_eq(plain.len, len);
  ck_assert(len == 0 || memcmp(plain.p, data, len) == 0);
  ck_assert_uint_eq(n, len == 0 ? 1 : (len + BMIN - 1) / BMIN);
  for (size_t i = 0; i < n; i++)
    ck_assert_uint_eq(m[i].plain, i + 1 < n ? BMIN : len - i * BMIN);
  o.workers = 1;
  pgzip_bytes(&b, data, len, sizes_big, NELEM(sizes_big), &o);
  ck_assert(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
  roundtrip(data, len, &o, D_GUNZIP, sizes_mixed, NELEM(sizes_mixed));
  pu_bytes_free(&a);
  pu_bytes_free(&b);
  pu_bytes_free(&plain);
  free(data);
}
END_TEST

/* The default block of the block format, and blocks larger than the
 * pool's buffers: a few members of SL_PGZIP_BLOCKS_DEFAULT on the default
 * engine, with incompressible blocks among text (stored, a result longer
 * than its block), same bytes on 1 and 3 workers. */
START_TEST(test_blocks_default_block) {
  size_t len = 3 * SL_PGZIP_BLOCKS_DEFAULT + 5;
  unsigned char *data = pu_mixed_data(len, 77);
  pu_bytes a = {0}, b = {0}, plain = {0};
  bmember m[BMEMBERS_MAX];
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, 6, 0, 3);
  o.format = SL_PGZIP_FORMAT_BLOCKS;
  o.engine = SL_ZLIB_ENGINE_AUTO;
  pgzip_bytes(&a, data, len, sizes_big, NELEM(sizes_big), &o);
  ck_assert_uint_eq(blocks_parse(&a, &plain, m, BMEMBERS_MAX), 4);
  ck_assert_uint_eq(m[0].plain, SL_PGZIP_BLOCKS_DEFAULT);
  ck_assert_uint_eq(m[3].plain, 5);
  ck_assert(plain.len == len && memcmp(plain.p, data, len) == 0);
  o.workers = 1;
  pgzip_bytes(&b, data, len, sizes_mixed, NELEM(sizes_mixed), &o);
  ck_assert(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
  pu_bytes_free(&a);
  pu_bytes_free(&b);
  pu_bytes_free(&plain);
  free(data);
}
END_TEST

/* The first member carries the caller's header: name, comment, mtime,
 * the caller's extra subfields after 'S' 'L', and a header CRC that
 * covers the length written into it (zlib checks it); every later member
 * has the bare header (blocks_parse). */
START_TEST(test_blocks_header) {
  static const char name[] = "blocks.txt", comment[] = "a comment";
  static const unsigned char extra[] = {'A', 'B', 2, 0, 7, 9};
  size_t len = 2 * BMIN + 100;
  unsigned char *data = pu_mixed_data(len, 5);
  pu_bytes gz = {0}, plain = {0};
  bmember m[BMEMBERS_MAX];
  sl_gzip_header h;
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  memset(&h, 0, sizeof h);
  h.name = name;
  h.comment = comment;
  h.mtime = 1700000000u;
  h.extra = extra;
  h.extra_len = sizeof extra;
  h.hcrc = _i == 1;
  pgz_opts(&o, 6, BMIN, 2);
  o.format = SL_PGZIP_FORMAT_BLOCKS;
  o.engine = SL_ZLIB_ENGINE_ZLIB;
  o.header = &h;
  pgzip_bytes(&gz, data, len, sizes_mixed, NELEM(sizes_mixed), &o);
  ck_assert_uint_eq(blocks_parse(&gz, &plain, m, BMEMBERS_MAX), 3);
  ck_assert(plain.len == len && memcmp(plain.p, data, len) == 0);
  ck_assert_uint_eq(m[0].hlen, 12 + 8 + sizeof extra);
  ck_assert_uint_eq(gz.p[10], 8 + sizeof extra);
  ck_assert(memcmp(gz.p + 20, extra, sizeof extra) == 0);
  ck_assert_uint_eq(gz.p[4] | gz.p[5] << 8 | gz.p[6] << 16 |
                        (uint32_t)gz.p[7] << 24,
                    h.mtime);
  ck_assert_uint_eq(m[0].flg & (8 | 16 | 2), 8 | 16 | (_i == 1 ? 2 : 0));
  ck_assert(memcmp(gz.p + m[0].hlen, name, sizeof name) == 0);
  ck_assert_uint_eq(m[1].hlen, 20);
  /* A header CRC must cover the length: break the length's copy and
   * zlib refuses the member. */
  if (_i == 1) {
    pu_bytes bad = {0}, out = {0};
    ck_assert(pu_bytes_add(&bad, gz.p, m[0].len));
    bad.p[16] ^= 1;
    ck_assert_int_ne(zlib_gunzip(&out, bad.p, bad.len), Z_STREAM_END);
    pu_bytes_free(&bad);
    pu_bytes_free(&out);
  }
  /* sl_gunzip_new reads the header of the first member. */
  roundtrip(data, len, &o, D_GUNZIP, sizes_mixed, NELEM(sizes_mixed));
  pu_bytes_free(&gz);
  pu_bytes_free(&plain);
  free(data);
}
END_TEST

/* A source that pushes a bytes, a flush marker, then the rest. */
typedef struct msrc {
  const unsigned char *data;
  size_t a, len;
  int step;
} msrc;

static int msrc_read(sl_stage *st, void *ctx) {
  msrc *s = ctx;
  int rc;

  if (s->step++ == 0) {
    if ((rc = fsrc_push(st, s->data, s->a)) != 0)
      return rc;
    return sl_stage_push_flush(st);
  }
  if ((rc = fsrc_push(st, s->data + s->a, s->len - s->a)) != 0)
    return rc;
  return SL_EOF;
}

/* A flush marker ends the block being filled: with a bytes before it,
 * the members hold a mod BMIN bytes then a fresh block; a marker before
 * any byte, or on a block's boundary, makes no empty member. Workers do
 * not change the bytes. */
START_TEST(test_blocks_flush_cuts) {
  static const size_t as[] = {0, 1000, BMIN, 2 * BMIN + 3};
  size_t a = as[_i % 4], len = a + BMIN + 9;
  unsigned char *data = pu_mixed_data(len, 3);
  sl_stage_ops src_ops = {.read = msrc_read};
  pu_bytes out[2] = {{0}, {0}}, plain = {0};
  bmember m[BMEMBERS_MAX];
  size_t n = 0;

  ck_assert_ptr_nonnull(data);
  for (int k = 0; k < 2; k++) {
    msrc s = {.data = data, .a = a, .len = len};
    sl_stage *src, *pg, *sink;
    sl_pipeline *p;
    sl_pgzip_opts o;
    const void *d = NULL;
    size_t dn = 0;

    pgz_opts(&o, 6, BMIN, k == 0 ? 1 : 4);
    o.format = SL_PGZIP_FORMAT_BLOCKS;
    o.engine = _i < 4 ? SL_ZLIB_ENGINE_ZLIB : SL_ZLIB_ENGINE_AUTO;
    ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
    ck_assert_int_eq(sl_stage_new(&src, "src", &src_ops, &s), 0);
    ck_assert_int_eq(sl_pgzip_new(&pg, &o), 0);
    ck_assert_int_eq(sl_mem_sink_new(&sink, NULL), 0);
    ck_assert_int_eq(sl_pipeline_chain(p, src, pg, sink, NULL), 0);
    ck_assert_int_eq(sl_pipeline_start(p), 0);
    int rc = sl_pipeline_wait(p);
    ck_assert_msg(rc == 0, "%s", sl_pipeline_error(p));
    ck_assert_int_eq(sl_mem_sink_data(sink, &d, &dn), 0);
    ck_assert(pu_bytes_add(&out[k], d, dn));
    sl_pipeline_free(p);
  }
  ck_assert(out[0].len == out[1].len &&
            memcmp(out[0].p, out[1].p, out[0].len) == 0);
  n = blocks_parse(&out[0], &plain, m, BMEMBERS_MAX);
  ck_assert(plain.len == len && memcmp(plain.p, data, len) == 0);
  size_t before = a / BMIN + (a % BMIN != 0); /* members before the mark */
  ck_assert_uint_eq(n, before + 2);
  if (a % BMIN != 0)
    ck_assert_uint_eq(m[before - 1].plain, a % BMIN);
  ck_assert_uint_eq(m[before].plain, BMIN);
  ck_assert_uint_eq(m[before + 1].plain, 9);
  pu_bytes_free(&out[0]);
  pu_bytes_free(&out[1]);
  pu_bytes_free(&plain);
  free(data);
}
END_TEST

/* What no engine can do is SL_EINVAL, from sl_pgzip_new and from
 * sl_pgzip_opts_resolve (which then leaves opts as they were). */
START_TEST(test_blocks_invalid) {
  static const struct {
    int engine, format, level;
  } bad[] = {
      {SL_ZLIB_ENGINE_LIBDEFLATE, SL_PGZIP_FORMAT_PIGZ, 6},
      {SL_ZLIB_ENGINE_LIBDEFLATE, SL_PGZIP_FORMAT_BLOCKS, 13},
      {SL_ZLIB_ENGINE_ISAL, SL_PGZIP_FORMAT_BLOCKS, 4},
      {SL_ZLIB_ENGINE_ISAL, SL_PGZIP_FORMAT_PIGZ, 4},
      {SL_ZLIB_ENGINE_ZLIB, SL_PGZIP_FORMAT_BLOCKS, 10},
      {SL_ZLIB_ENGINE_ZLIB, SL_PGZIP_FORMAT_PIGZ, 10},
      {SL_ZLIB_ENGINE_ZLIB, SL_PGZIP_FORMAT_AUTO, 10},
      {SL_ZLIB_ENGINE_AUTO, SL_PGZIP_FORMAT_PIGZ, 10},
      {SL_ZLIB_ENGINE_AUTO, SL_PGZIP_FORMAT_AUTO, 13},
      {SL_ZLIB_ENGINE_ZLIB, 3, 6},
      {SL_ZLIB_ENGINE_ZLIB, -1, 6},
  };
  sl_gzip_header h;
  sl_pgzip_opts o, keep;
  sl_stage *st;

  for (size_t i = 0; i < NELEM(bad); i++) {
    pgz_opts(&o, bad[i].level, 0, 2);
    o.engine = bad[i].engine;
    o.format = bad[i].format;
    keep = o;
    st = (sl_stage *)&o;
    ck_assert_msg(sl_pgzip_new(&st, &o) == SL_EINVAL, "case %zu", i);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(sl_pgzip_opts_resolve(&o), SL_EINVAL);
    ck_assert(memcmp(&o, &keep, sizeof o) == 0);
  }
  /* The extra field must leave room for the subfield. */
  memset(&h, 0, sizeof h);
  h.extra = calloc(1, 65535);
  ck_assert_ptr_nonnull(h.extra);
  pgz_opts(&o, 6, 0, 2);
  o.engine = SL_ZLIB_ENGINE_ZLIB;
  o.header = &h;
  h.extra_len = 65535 - 8;
  o.format = SL_PGZIP_FORMAT_BLOCKS;
  ck_assert_int_eq(sl_pgzip_new(&st, &o), 0);
  sl_stage_free(st);
  h.extra_len = 65535 - 7;
  ck_assert_int_eq(sl_pgzip_new(&st, &o), SL_EINVAL);
  o.format = SL_PGZIP_FORMAT_PIGZ;
  ck_assert_int_eq(sl_pgzip_new(&st, &o), 0);
  sl_stage_free(st);
  free((void *)h.extra);
  ck_assert_int_eq(sl_pgzip_opts_resolve(NULL), SL_EINVAL);
}
END_TEST

/* sl_pgzip_opts_resolve says what sl_pgzip_new will do: the level's
 * number, the engine and format AUTO picks (the table in sgzip(1)), the
 * format's default block; a choice made by the caller stays. */
START_TEST(test_resolve) {
  bool isal = engine_built(SL_ZLIB_ENGINE_ISAL);
  bool ld = engine_built(SL_ZLIB_ENGINE_LIBDEFLATE);
  sl_pgzip_opts o;

  for (int level = -1; level <= 12; level++) {
    int l = level < 0 ? 6 : level, e, f;
    ck_assert_int_eq(sl_pgzip_opts_init(&o), 0);
    o.level = level;
    if (l > 9 && !ld) {
      ck_assert_int_eq(sl_pgzip_opts_resolve(&o), SL_EINVAL);
      continue;
    }
    ck_assert_int_eq(sl_pgzip_opts_resolve(&o), 0);
    /* The table (pgz_auto). */
    if (l >= 1 && ld)
      e = SL_ZLIB_ENGINE_LIBDEFLATE, f = SL_PGZIP_FORMAT_BLOCKS;
    else
      e = SL_ZLIB_ENGINE_ZLIB, f = SL_PGZIP_FORMAT_PIGZ;
    ck_assert_msg(o.level == l && o.engine == e && o.format == f,
                  "level %d: %d %d %d", level, o.level, o.engine, o.format);
    ck_assert_uint_eq(o.block_size, f == SL_PGZIP_FORMAT_BLOCKS
                                        ? SL_PGZIP_BLOCKS_DEFAULT
                                        : SL_PGZIP_BLOCK_DEFAULT);
  }
  /* pigz's format named: ISA-L at 1 to 3 when built in, else zlib. */
  pgz_opts(&o, 2, 0, 1);
  o.engine = SL_ZLIB_ENGINE_AUTO;
  ck_assert_int_eq(sl_pgzip_opts_resolve(&o), 0);
  ck_assert_int_eq(o.engine, isal ? SL_ZLIB_ENGINE_ISAL : SL_ZLIB_ENGINE_ZLIB);
  ck_assert_int_eq(o.format, SL_PGZIP_FORMAT_PIGZ);
  ck_assert_uint_eq(o.block_size, SL_PGZIP_BLOCK_DEFAULT);
  /* An engine named with format AUTO: libdeflate writes blocks, the
   * others pigz's format; a block size given stays. */
  pgz_opts(&o, 6, BMIN, 1);
  o.format = SL_PGZIP_FORMAT_AUTO;
  o.engine = SL_ZLIB_ENGINE_ZLIB;
  ck_assert_int_eq(sl_pgzip_opts_resolve(&o), 0);
  ck_assert_int_eq(o.format, SL_PGZIP_FORMAT_PIGZ);
  ck_assert_uint_eq(o.block_size, BMIN);
  if (ld) {
    o.format = SL_PGZIP_FORMAT_AUTO;
    o.engine = SL_ZLIB_ENGINE_LIBDEFLATE;
    ck_assert_int_eq(sl_pgzip_opts_resolve(&o), 0);
    ck_assert_int_eq(o.format, SL_PGZIP_FORMAT_BLOCKS);
  }
}
END_TEST

/* The default options write what sl_pgzip_opts_resolve says: the same
 * bytes as the resolved options given explicitly. */
START_TEST(test_auto_is_resolved) {
  size_t len = 3 * BLOCK + 11;
  unsigned char *data = pu_mixed_data(len, 8);
  static const int levels[] = {1, 6, 9};
  pu_bytes a = {0}, b = {0};
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_pgzip_opts_init(&o), 0);
  o.level = levels[_i];
  o.workers = 2;
  pgzip_bytes(&a, data, len, sizes_mixed, NELEM(sizes_mixed), &o);
  ck_assert_int_eq(sl_pgzip_opts_resolve(&o), 0);
  ck_assert_int_ne(o.engine, SL_ZLIB_ENGINE_AUTO);
  ck_assert_int_ne(o.format, SL_PGZIP_FORMAT_AUTO);
  pgzip_bytes(&b, data, len, sizes_big, NELEM(sizes_big), &o);
  ck_assert(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
  pu_bytes_free(&a);
  pu_bytes_free(&b);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Failures and memory
 * ---------------------------------------------------------------------- */

/* Arms the failing allocator on its first call, then pushes the input: so
 * the nth allocation of the running pipeline fails, on whichever thread
 * makes it (the workers' deflate states and output buffers among them). */
typedef struct arm_src {
  const unsigned char *data;
  size_t len, pos, chunk;
  long n;
} arm_src;

static int arm_src_read(sl_stage *st, void *ctx) {
  arm_src *s = ctx;
  size_t n = s->len - s->pos < s->chunk ? s->len - s->pos : s->chunk;
  sl_buf *b = NULL;
  int rc;

  if (s->pos == 0 && s->n > 0) {
    fail_alloc_arm(s->n);
    s->n = 0;
  }
  if (n == 0)
    return SL_EOF;
  if ((rc = sl_stage_buf(st, n, &b)) != 0)
    return rc;
  memcpy(sl_buf_data(b), s->data + s->pos, n);
  sl_buf_set_len(b, n);
  s->pos += n;
  return sl_stage_push(st, b);
}

/* Failing each allocation in turn while the pipeline runs: it fails once,
 * with SL_ENOMEM, its finished callback fires once, and every block is
 * freed; some of the failures hit a worker. */
START_TEST(test_worker_alloc_failure) {
  size_t len = 12 * BMIN + 5;
  unsigned char *data = pu_mixed_data(len, 23);
  sl_stage_ops src_ops = {.read = arm_src_read};
  bool hit_worker = false;
  long n;

  ck_assert_ptr_nonnull(data);
  for (n = 1; n < 400; n++) {
    sl_pipeline *p = NULL;
    sl_stage *src = NULL, *pg = NULL, *sink = NULL;
    arm_src s = {.data = data, .len = len, .chunk = 50000, .n = n};
    sl_pgzip_opts o;
    pu_finished fin;
    int rc;

    pgz_opts(&o, 1, BMIN, 4);
    pu_finished_init(&fin);
    ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
    ck_assert_int_eq(sl_stage_new(&src, "src", &src_ops, &s), 0);
    ck_assert_int_eq(sl_pgzip_new(&pg, &o), 0);
    ck_assert_int_eq(sl_mem_sink_new(&sink, NULL), 0);
    ck_assert_int_eq(sl_pipeline_chain(p, src, pg, sink, NULL), 0);
    ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &fin), 0);
    ck_assert_int_eq(sl_pipeline_start(p), 0);
    rc = sl_pipeline_wait(p);
    fail_alloc_disarm();
    ck_assert_int_eq(atomic_load(&fin.calls), 1);
    ck_assert_int_eq(atomic_load(&fin.status), rc);
    if (fail_alloc_failed() == 0) {
      ck_assert_msg(rc == 0, "%s", sl_pipeline_error(p));
      sl_pipeline_free(p);
      ck_assert_int_eq(test_alloc_live(), 0);
      break;
    }
    ck_assert_msg(rc == SL_ENOMEM || rc == 0, "allocation %ld: %s", n,
                  sl_pipeline_error(p) ? sl_pipeline_error(p) : "?");
    if (rc != 0) {
      const char *err = sl_pipeline_error(p);
      ck_assert_ptr_nonnull(err);
      if (strstr(err, "pgzip: deflate: out of memory") != NULL ||
          strstr(err, "pgzip: out of memory for a compressed") != NULL)
        hit_worker = true;
    }
    sl_pipeline_free(p);
    ck_assert_int_eq(test_alloc_live(), 0);
  }
  ck_assert_int_lt(n, 400);
  ck_assert(hit_worker);
  free(data);
}
END_TEST

/* Failing each allocation sl_pgzip_new makes: SL_ENOMEM, nothing left. */
START_TEST(test_alloc_failure_new) {
  sl_gzip_header h;
  sl_pgzip_opts o;
  long n;

  memset(&h, 0, sizeof h);
  h.name = "name";
  pgz_opts(&o, 6, 0, 2);
  o.header = &h;
  for (n = 1; n < 100; n++) {
    sl_stage *st = NULL;
    fail_alloc_arm(n);
    int rc = sl_pgzip_new(&st, &o);
    fail_alloc_disarm();
    if (rc == 0) {
      ck_assert_int_eq(fail_alloc_failed(), 0);
      sl_stage_free(st);
      break;
    }
    ck_assert_int_eq(rc, SL_ENOMEM);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(test_alloc_live(), 0);
  }
  ck_assert_int_gt(n, 1);
  ck_assert_int_lt(n, 100);
}
END_TEST

/* A sink that counts and drops. */
static int count_cb(const void *data, size_t len, void *arg) {
  (void)data;
  *(uint64_t *)arg += len;
  return 0;
}

/* Peak of the pool while data[0..len) goes through pgzip into a counting
 * sink. */
static size_t peak_for(const unsigned char *data, size_t len,
                       const sl_pgzip_opts *o) {
  sl_pipeline *p = NULL;
  sl_stage *src, *pg = NULL, *sink = NULL;
  uint64_t counted = 0, bout = 0;
  pu_src s;
  size_t peak;

  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  pu_src_init(&s, data, len, sizes_big, NELEM(sizes_big));
  src = pu_src_stage("src", &s);
  ck_assert_ptr_nonnull(src);
  ck_assert_int_eq(sl_pgzip_new(&pg, o), 0);
  ck_assert_int_eq(sl_callback_sink_new(&sink, count_cb, NULL, &counted, NULL),
                   0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, pg, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(sl_pgzip_result(pg, NULL, NULL, &bout), 0);
  ck_assert_uint_eq(bout, counted);
  ck_assert_uint_lt(counted, len);
  peak = pu_pool_stats(p).peak_bytes;
  sl_pipeline_free(p);
  return peak;
}

/* The pool peaks under the same bound, computed from the options and the
 * marks, for a 4 MiB and a 64 MiB input: memory follows the options, not
 * the input. */
START_TEST(test_bounded_memory) {
  const size_t block = BLOCK, buf = 64 * KIB, hwm = 256 * KIB;
  const unsigned workers = 2, in_flight = 6;
  size_t len64 = 64 * MIB, len4 = 4 * MIB;
  unsigned char *data = pu_mixed_data(len64, 64);
  sl_pgzip_opts o;
  size_t bound, peak4, peak64;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, 1, block, workers);
  o.in_flight = in_flight;
  /* Blocks: in_flight in the engine, the one before the oldest (its
   * dictionary), the one being filled. Results: in_flight, each at most
   * a block and a little. Rings: each holds at most hwm and one chunk,
   * and a stage takes at most that out of it at once. Plus the source's
   * chunk and small change. */
  bound = (in_flight + 2) * block + in_flight * (block + block / 64 + 64) +
          2 * (hwm + buf) + 2 * (hwm + block + block / 64 + 64) + buf +
          256 * KIB;
  peak4 = peak_for(data, len4, &o);
  peak64 = peak_for(data, len64, &o);
  ck_assert_msg(peak4 <= bound, "4 MiB: peak %zu > bound %zu", peak4, bound);
  ck_assert_msg(peak64 <= bound, "64 MiB: peak %zu > bound %zu", peak64, bound);
  ck_assert_uint_lt(bound, 8 * MIB);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * API
 * ---------------------------------------------------------------------- */

START_TEST(test_opts_init) {
  sl_pgzip_opts o;

  memset(&o, 0x5a, sizeof o);
  ck_assert_int_eq(sl_pgzip_opts_init(&o), 0);
  ck_assert_ptr_null(o.name);
  ck_assert_int_eq(o.level, SL_ZLIB_LEVEL_DEFAULT);
  ck_assert_int_eq(o.mem_level, 9);
  ck_assert_int_eq(o.deflate_incompressible, 0);
  ck_assert_uint_eq(o.block_size, 0); /* the format's default */
  ck_assert_uint_eq(o.workers, 0);
  ck_assert_uint_eq(o.in_flight, 0);
  ck_assert_ptr_null(o.header);
  ck_assert_int_eq(o.engine, SL_ZLIB_ENGINE_AUTO);
  ck_assert_int_eq(o.format, SL_PGZIP_FORMAT_AUTO);
  ck_assert_int_eq(sl_pgzip_opts_init(NULL), SL_EINVAL);
}
END_TEST

/* Every out-of-range option is SL_EINVAL, with *out NULL and nothing
 * allocated; the limits themselves are accepted. */
START_TEST(test_bad_options) {
  sl_gzip_header h;
  sl_pgzip_opts o;
  sl_stage *st = (sl_stage *)&o;

  ck_assert_int_eq(sl_pgzip_new(NULL, NULL), SL_EINVAL);
#define BAD(field, value)                               \
  do {                                                  \
    pgz_opts(&o, 6, 0, 2);                              \
    o.field = value;                                    \
    st = (sl_stage *)&o;                                \
    ck_assert_int_eq(sl_pgzip_new(&st, &o), SL_EINVAL); \
    ck_assert_ptr_null(st);                             \
    ck_assert_int_eq(test_alloc_live(), 0);             \
  } while (0)
  BAD(level, -2);
  BAD(level, 10);
  BAD(format, 3);
  BAD(format, -1);
  BAD(mem_level, -1);
  BAD(mem_level, 10);
  BAD(block_size, BMIN - 1);
  BAD(block_size, SL_PGZIP_BLOCK_MAX + 1);
  BAD(workers, SL_MAP_MAX_WORKERS + 1);
  BAD(in_flight, 65537);
  BAD(name, "");
  memset(&h, 0, sizeof h);
  h.extra_len = 3; /* without extra */
  BAD(header, &h);
#undef BAD
  pgz_opts(&o, 9, BMIN, SL_MAP_MAX_WORKERS);
  o.in_flight = 1;
  o.mem_level = 1;
  ck_assert_int_eq(sl_pgzip_new(&st, &o), 0);
  ck_assert_str_eq(sl_stage_name(st), "pgzip");
  sl_stage_free(st);
  ck_assert_int_eq(sl_pgzip_new(&st, NULL), 0);
  sl_stage_free(st);
  pgz_opts(&o, 0, SL_PGZIP_BLOCK_MAX, 1);
  o.name = "mine";
  ck_assert_int_eq(sl_pgzip_new(&st, &o), 0);
  ck_assert_str_eq(sl_stage_name(st), "mine");
  sl_stage_free(st);
}
END_TEST

/* sl_pgzip_result: SL_EINVAL for other stages, SL_EBUSY before the end,
 * SL_ECANCELED when the stream failed first, 0 after. */
START_TEST(test_result_states) {
  size_t len = 100 * KIB;
  unsigned char *data = pu_mixed_data(len, 3);
  sl_stage *pg = NULL, *other = NULL;
  uint32_t crc = 7;
  uint64_t bin = 7, bout = 7;
  prun r;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(sl_pgzip_result(NULL, &crc, &bin, &bout), SL_EINVAL);
  ck_assert_int_eq(sl_gzip_new(&other, NULL), 0);
  ck_assert_int_eq(sl_pgzip_result(other, &crc, &bin, &bout), SL_EINVAL);
  sl_stage_free(other);
  ck_assert_int_eq(sl_pgzip_new(&pg, NULL), 0);
  ck_assert_int_eq(sl_pgzip_result(pg, &crc, &bin, &bout), SL_EBUSY);
  ck_assert_uint_eq(crc, 7);
  sl_stage_free(pg);

  /* The source fails at its third chunk. */
  memset(&r, 0, sizeof r);
  ck_assert_int_eq(sl_pipeline_new(&r.p, NULL), 0);
  pu_src_init(&r.src, data, len, sizes_mixed, NELEM(sizes_mixed));
  r.src.fault.at = 2;
  r.src.fault.code = SL_EIO;
  ck_assert_int_eq(sl_pgzip_new(&r.pg, NULL), 0);
  ck_assert_int_eq(sl_mem_sink_new(&r.sink, NULL), 0);
  ck_assert_int_eq(
      sl_pipeline_chain(r.p, pu_src_stage("src", &r.src), r.pg, r.sink, NULL),
      0);
  ck_assert_int_eq(sl_pipeline_start(r.p), 0);
  ck_assert_int_eq(sl_pipeline_wait(r.p), SL_EIO);
  ck_assert_int_eq(sl_pgzip_result(r.pg, &crc, &bin, &bout), SL_ECANCELED);
  ck_assert_uint_eq(bout, 7);
  prun_free(&r);

  /* Success: every pointer may be NULL. */
  prun_go(&r, data, len, sizes_mixed, NELEM(sizes_mixed), NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_int_eq(sl_pgzip_result(r.pg, NULL, NULL, NULL), 0);
  ck_assert_int_eq(sl_pgzip_result(r.pg, &crc, &bin, &bout), 0);
  ck_assert_uint_eq(crc, crc_of(data, len));
  ck_assert_uint_eq(bin, len);
  ck_assert_uint_eq(bout, r.out_len);
  prun_free(&r);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * The two-stage gunzip
 * ---------------------------------------------------------------------- */

/* pgzip -> two-stage gunzip at the edge sizes, read a byte at a time for
 * the small ones. */
START_TEST(test_split_roundtrip) {
  size_t len = edge_sizes[_i];
  unsigned char *data = pu_mixed_data(len, (uint64_t)_i + 50);
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, SL_ZLIB_LEVEL_DEFAULT, 0, 2);
  if (len <= 3)
    roundtrip(data, len, &o, D_SPLIT, sizes_one, 1);
  roundtrip(data, len, &o, D_SPLIT, sizes_mixed, NELEM(sizes_mixed));
  free(data);
}
END_TEST

START_TEST(test_split_roundtrip_20mib) {
  size_t len = 20 * MIB;
  unsigned char *data = pu_mixed_data(len, 21);
  sl_pgzip_opts o;

  ck_assert_ptr_nonnull(data);
  pgz_opts(&o, 1, 0, 4);
  roundtrip(data, len, &o, D_SPLIT, sizes_big, NELEM(sizes_big));
  free(data);
}
END_TEST

/* The input for the comparisons: members made by zlib at different
 * levels, empty ones and one-byte ones among them, and one from pgzip. */
static void members(pu_bytes *in, pu_bytes *plain) {
  static const size_t lens[] = {40 * KIB + 1, 0, 1, 3000, 0, 1, 70 * KIB};
  for (size_t i = 0; i < NELEM(lens); i++) {
    unsigned char *d = pu_mixed_data(lens[i], 60 + i);
    ck_assert_ptr_nonnull(d);
    zlib_gzip(in, d, lens[i], (int)(i % 10));
    ck_assert(pu_bytes_add(plain, d, lens[i]));
    free(d);
  }
  {
    size_t len = 2 * BMIN + 7;
    unsigned char *d = pu_mixed_data(len, 77);
    sl_pgzip_opts o;
    ck_assert_ptr_nonnull(d);
    pgz_opts(&o, 6, BMIN, 2);
    pgzip_bytes(in, d, len, sizes_big, NELEM(sizes_big), &o);
    ck_assert(pu_bytes_add(plain, d, len));
    free(d);
  }
}

/* Both gunzips over in (read as sizes cut it): the same code, the same
 * message after the stage's name (want_stage for the two-stage one), and
 * the same output. */
static void same_as_gunzip(const unsigned char *in, size_t len,
                           const size_t *sizes, size_t nsizes,
                           const sl_zlib_opts *zo, const char *want_stage) {
  drun a, b;

  drun_go(&a, NULL, D_GUNZIP, zo, in, len, sizes, nsizes, NULL, 0);
  drun_go(&b, NULL, D_SPLIT, zo, in, len, sizes, nsizes, NULL, 0);
  ck_assert_msg(a.rc == b.rc, "gunzip %d (%s), split %d (%s)", a.rc,
                a.err ? a.err : "-", b.rc, b.err ? b.err : "-");
  if (a.rc == 0) {
    ck_assert_uint_eq(a.sink.got.len, b.sink.got.len);
    ck_assert(a.sink.got.len == 0 ||
              memcmp(a.sink.got.p, b.sink.got.p, a.sink.got.len) == 0);
  } else {
    const char *ma = strchr(a.err, ':'), *mb = strchr(b.err, ':');
    ck_assert(ma != NULL && mb != NULL);
    ck_assert_msg(strcmp(ma, mb) == 0, "gunzip \"%s\", split \"%s\"", a.err,
                  b.err);
    if (want_stage != NULL)
      ck_assert_msg(strncmp(b.err, want_stage, strlen(want_stage)) == 0 &&
                        b.err[strlen(want_stage)] == ':',
                    "\"%s\" is not from %s", b.err, want_stage);
  }
  drun_free(&a);
  drun_free(&b);
}

/* Several members, empty and tiny ones among them, read in chunks of 1, 3
 * and mixed sizes: the same as sl_gunzip_new. */
START_TEST(test_split_members) {
  static const size_t *const sched[] = {sizes_one, sizes_three, sizes_mixed};
  static const size_t nsched[] = {1, 1, NELEM(sizes_mixed)};
  pu_bytes in = {0}, plain = {0};
  drun r;

  members(&in, &plain);
  same_as_gunzip(in.p, in.len, sched[_i], nsched[_i], NULL, NULL);
  drun_go(&r, NULL, D_SPLIT, NULL, in.p, in.len, sched[_i], nsched[_i], plain.p,
          plain.len);
  ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
  ck_assert_uint_eq(r.cmp.pos, plain.len);
  ck_assert(!r.cmp.bad);
  drun_free(&r);
  pu_bytes_free(&in);
  pu_bytes_free(&plain);
}
END_TEST

/* Offsets of the member starts and trailers in the members() input. */
static void member_offsets(const pu_bytes *in, size_t *starts, size_t *n) {
  size_t off = 0;

  *n = 0;
  while (off < in->len) {
    z_stream s;
    unsigned char buf[16384];
    int zr;
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(inflateInit2(&s, 31), Z_OK);
    s.next_in = in->p + off;
    s.avail_in = (uInt)(in->len - off);
    do {
      s.next_out = buf;
      s.avail_out = sizeof buf;
      zr = inflate(&s, Z_NO_FLUSH);
    } while (zr == Z_OK);
    ck_assert_int_eq(zr, Z_STREAM_END);
    starts[(*n)++] = off;
    off += s.total_in;
    inflateEnd(&s);
  }
  starts[*n] = off;
}

/* A flipped bit in each member's stored CRC-32: the check stage names the
 * trailer's offset, as sl_gunzip_new does (empty members: the first
 * stage). */
START_TEST(test_split_crc_mismatch) {
  pu_bytes in = {0}, plain = {0};
  size_t starts[16], n;

  members(&in, &plain);
  member_offsets(&in, starts, &n);
  ck_assert_uint_eq(n, 8);
  for (size_t m = 0; m < n; m++) {
    size_t trailer = starts[m + 1] - 8;
    bool empty = m == 1 || m == 4;
    in.p[trailer + (m % 4)] ^= 0x10;
    same_as_gunzip(in.p, in.len, sizes_mixed, NELEM(sizes_mixed), NULL,
                   empty ? "gunzip" : "gunzip-check");
    same_as_gunzip(in.p, in.len, sizes_three, 1, NULL, NULL);
    in.p[trailer + (m % 4)] ^= 0x10;
  }
  pu_bytes_free(&in);
  pu_bytes_free(&plain);
}
END_TEST

/* A wrong ISIZE in each member: named by the first stage. */
START_TEST(test_split_isize_mismatch) {
  pu_bytes in = {0}, plain = {0};
  size_t starts[16], n;

  members(&in, &plain);
  member_offsets(&in, starts, &n);
  for (size_t m = 0; m < n; m++) {
    size_t isize = starts[m + 1] - 4;
    in.p[isize + 1] ^= 0x01;
    same_as_gunzip(in.p, in.len, sizes_mixed, NELEM(sizes_mixed), NULL,
                   "gunzip");
    in.p[isize + 1] ^= 0x01;
  }
  pu_bytes_free(&in);
  pu_bytes_free(&plain);
}
END_TEST

/* The input cut short at every byte of a two-member stream: the same
 * truncation message and offset, or the same success when the cut falls
 * between members. */
START_TEST(test_split_truncated) {
  unsigned char *d = pu_mixed_data(300, 5);
  pu_bytes in = {0};

  ck_assert_ptr_nonnull(d);
  zlib_gzip(&in, d, 300, 6);
  zlib_gzip(&in, d, 10, 1);
  for (size_t cut = 0; cut < in.len; cut++)
    same_as_gunzip(in.p, cut, _i ? sizes_one : sizes_mixed,
                   _i ? 1 : NELEM(sizes_mixed), NULL, "gunzip");
  pu_bytes_free(&in);
  free(d);
}
END_TEST

/* Bytes after the last member: trailing garbage at their offset (a lone
 * 1f too), or ignored with ignore_trailing; a second magic starts a
 * member that must be whole. */
START_TEST(test_split_trailing) {
  static const struct {
    const char *bytes;
    size_t len;
  } tails[] = {{"x", 1},           {"\x1f", 1},
               {"\x1f\x00", 2},    {"\x00\x00\x00", 3},
               {"\x1f\x8b", 2},    {"\x1f\x8b\x08", 3},
               {"hello world", 11}};
  unsigned char *d = pu_mixed_data(5000, 6);
  sl_zlib_opts zo;

  ck_assert_ptr_nonnull(d);
  ck_assert_int_eq(sl_zlib_opts_init(&zo), 0);
  zo.ignore_trailing = _i % 2;
  for (size_t t = 0; t < NELEM(tails); t++) {
    pu_bytes in = {0};
    zlib_gzip(&in, d, 5000, 6);
    ck_assert(pu_bytes_add(&in, tails[t].bytes, tails[t].len));
    same_as_gunzip(in.p, in.len, _i / 2 ? sizes_one : sizes_mixed,
                   _i / 2 ? 1 : NELEM(sizes_mixed), &zo, "gunzip");
    pu_bytes_free(&in);
  }
  free(d);
}
END_TEST

/* What sl_pgunzip_trailing tells of the bytes after the last member, read
 * in chunks of one byte (loop 1) or mixed: where they began, and whether
 * they were all zeros (padding) or not (garbage, a lone 1f among it). */
START_TEST(test_split_trailing_report) {
  static const struct {
    const char *bytes;
    size_t len;
    int garbage;
  } tails[] = {{"", 0, -1},
               {"\x00", 1, 0},
               {"\x00\x00\x00\x00\x00\x00\x00\x00\x00", 9, 0},
               {"x", 1, 1},
               {"\x1f", 1, 1},
               {"\x1f\x00", 2, 1},
               {"\x00\x00\x00junk", 7, 1}};
  unsigned char *d = pu_mixed_data(5000, 6);
  sl_zlib_opts zo;

  ck_assert_ptr_nonnull(d);
  ck_assert_int_eq(sl_zlib_opts_init(&zo), 0);
  zo.ignore_trailing = 1;
  for (size_t t = 0; t < NELEM(tails); t++) {
    pu_bytes in = {0};
    uint64_t off = 99;
    int garbage = 99;
    drun r;
    zlib_gzip(&in, d, 5000, 6);
    zlib_gzip(&in, d, 100, 1); /* two members */
    size_t end = in.len;
    ck_assert(pu_bytes_add(&in, tails[t].bytes, tails[t].len));
    drun_go(&r, NULL, D_SPLIT, &zo, in.p, in.len, _i ? sizes_one : sizes_mixed,
            _i ? 1 : NELEM(sizes_mixed), NULL, 0);
    ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
    ck_assert_uint_eq(r.sink.got.len, 5100);
    sl_stage *gun = sl_pipeline_stage(r.p, 1);
    ck_assert_str_eq(sl_stage_name(gun), "gunzip");
    int rc = sl_pgunzip_trailing(gun, &off, &garbage);
    if (tails[t].garbage < 0) {
      ck_assert_int_eq(rc, 0);
      ck_assert_uint_eq(off, 0);
      ck_assert_int_eq(garbage, 0);
    } else {
      ck_assert_int_eq(rc, 1);
      ck_assert_uint_eq(off, end);
      ck_assert_int_eq(garbage, tails[t].garbage);
    }
    ck_assert_int_eq(sl_pgunzip_trailing(gun, NULL, NULL), rc);
    ck_assert_int_eq(
        sl_pgunzip_trailing(sl_pipeline_stage(r.p, 0), &off, &garbage),
        SL_EINVAL);
    ck_assert_int_eq(sl_pgunzip_trailing(NULL, &off, &garbage), SL_EINVAL);
    drun_free(&r);
    pu_bytes_free(&in);
  }
  free(d);
}
END_TEST

/* Bad header fields, named at their own byte: the magic (first member),
 * the method, the reserved flags; and an empty input. */
START_TEST(test_split_bad_header) {
  unsigned char *d = pu_mixed_data(2000, 4);
  pu_bytes in = {0};
  static const struct {
    size_t at;
    unsigned char value;
  } edits[] = {{0, 0x1e}, {1, 0x8c}, {2, 7}, {3, 0x20}, {3, 0x80}};

  ck_assert_ptr_nonnull(d);
  zlib_gzip(&in, d, 2000, 6);
  for (size_t e = 0; e < NELEM(edits); e++) {
    unsigned char keep = in.p[edits[e].at];
    in.p[edits[e].at] = edits[e].value;
    same_as_gunzip(in.p, in.len, sizes_mixed, NELEM(sizes_mixed), NULL,
                   "gunzip");
    same_as_gunzip(in.p, in.len, sizes_one, 1, NULL, "gunzip");
    in.p[edits[e].at] = keep;
  }
  same_as_gunzip(in.p, 0, sizes_one, 1, NULL, "gunzip");
  pu_bytes_free(&in);
  free(d);
}
END_TEST

/* Damaged deflate data fails with SL_EDATA and an offset inside the
 * member, from the first stage. */
START_TEST(test_split_corrupt_data) {
  size_t len = 100 * KIB;
  unsigned char *d = pu_mixed_data(len, 8);
  pu_bytes in = {0};
  drun r;
  unsigned long long off = 0;

  ck_assert_ptr_nonnull(d);
  zlib_gzip(&in, d, len, 6);
  memset(in.p + 100, 0xff, 64);
  drun_go(&r, NULL, D_SPLIT, NULL, in.p, in.len, sizes_mixed,
          NELEM(sizes_mixed), NULL, 0);
  ck_assert_int_eq(r.rc, SL_EDATA);
  ck_assert_ptr_nonnull(r.err);
  ck_assert_msg(strncmp(r.err, "gunzip: ", 8) == 0, "%s", r.err);
  const char *at = strstr(r.err, " at input byte ");
  ck_assert_ptr_nonnull(at);
  ck_assert_int_eq(sscanf(at, " at input byte %llu", &off), 1);
  ck_assert_uint_ge(off, 100);
  ck_assert_uint_lt(off, in.len);
  drun_free(&r);
  pu_bytes_free(&in);
  free(d);
}
END_TEST

/* A header CRC16 written by pgzip is checked; a wrong one fails. */
START_TEST(test_split_header_crc) {
  size_t len = 3000;
  unsigned char *d = pu_mixed_data(len, 2);
  sl_gzip_header h;
  sl_pgzip_opts o;
  pu_bytes in = {0};
  drun r;

  ck_assert_ptr_nonnull(d);
  memset(&h, 0, sizeof h);
  h.name = "f";
  h.hcrc = 1;
  pgz_opts(&o, 6, 0, 1);
  o.header = &h;
  pgzip_bytes(&in, d, len, sizes_mixed, NELEM(sizes_mixed), &o);
  drun_go(&r, NULL, D_SPLIT, NULL, in.p, in.len, sizes_one, 1, d, len);
  ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
  ck_assert_uint_eq(r.cmp.pos, len);
  drun_free(&r);
  in.p[12] ^= 1; /* FHCRC: bytes 12 and 13, after "f\0" */
  drun_go(&r, NULL, D_SPLIT, NULL, in.p, in.len, sizes_mixed,
          NELEM(sizes_mixed), NULL, 0);
  ck_assert_int_eq(r.rc, SL_EDATA);
  ck_assert_msg(strncmp(r.err,
                        "gunzip: header crc16 mismatch at input byte 12 ",
                        47) == 0,
                "%s", r.err);
  drun_free(&r);
  pu_bytes_free(&in);
  free(d);
}
END_TEST

/* The two-stage gunzip reads what gzip(1) and pigz write. */
START_TEST(test_split_reads_tools) {
  static const char *const tools[] = {"gzip -6 -c", "pigz -p 4 -c"};
  size_t len = 3 * MIB + 5;
  unsigned char *d = pu_mixed_data(len, 90);
  pu_bytes raw = {0};
  char path[256];

  ck_assert_ptr_nonnull(d);
  ck_assert(pu_bytes_add(&raw, d, len));
  write_temp(path, sizeof path, &raw);
  for (size_t t = 0; t < NELEM(tools); t++) {
    char tool[16], cmd[512];
    pu_bytes gz = {0};
    drun r;
    sscanf(tools[t], "%15s", tool);
    if (!have_tool(tool)) {
      fprintf(stderr, "check_pgzip: %s not found; skipped\n", tool);
      continue;
    }
    snprintf(cmd, sizeof cmd, "%s < '%s'", tools[t], path);
    ck_assert_int_eq(run_capture(cmd, &gz), 0);
    drun_go(&r, NULL, D_SPLIT, NULL, gz.p, gz.len, sizes_big, NELEM(sizes_big),
            d, len);
    ck_assert_msg(r.rc == 0, "%s: %s", tool, r.err ? r.err : "?");
    ck_assert_uint_eq(r.cmp.pos, len);
    drun_free(&r);
    pu_bytes_free(&gz);
  }
  unlink(path);
  pu_bytes_free(&raw);
  free(d);
}
END_TEST

/* 20000 one-byte members: the queue between the stages stays small and
 * the content is right. */
START_TEST(test_split_many_members) {
  const size_t n = 20000;
  pu_bytes in = {0}, plain = {0};
  drun r;

  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)('a' + i % 26);
    if (i % 3 == 2) {
      zlib_gzip(&in, "", 0, 1);
      continue;
    }
    zlib_gzip(&in, &c, 1, 1);
    ck_assert(pu_bytes_add(&plain, &c, 1));
  }
  drun_go(&r, NULL, D_SPLIT, NULL, in.p, in.len, sizes_big, NELEM(sizes_big),
          plain.p, plain.len);
  ck_assert_msg(r.rc == 0, "%s", r.err ? r.err : "?");
  ck_assert_uint_eq(r.cmp.pos, plain.len);
  drun_free(&r);
  pu_bytes_free(&in);
  pu_bytes_free(&plain);
}
END_TEST

/* Names: opts->name and the same with "-check"; bad options and bad
 * arguments add nothing and leave the stages to the caller. */
START_TEST(test_split_api) {
  sl_pipeline *p = NULL;
  sl_stage *a = NULL, *b = NULL;
  sl_zlib_opts zo;
  pu_src s;
  pu_sink k;

  pu_src_init(&s, (const unsigned char *)"", 0, sizes_one, 1);
  pu_sink_init(&k);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  a = pu_src_stage("src", &s);
  b = pu_sink_stage("sink", &k);
  ck_assert(a != NULL && b != NULL);
  ck_assert_int_eq(sl_pgunzip_chain(NULL, a, b, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pgunzip_chain(p, NULL, b, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pgunzip_chain(p, a, NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_zlib_opts_init(&zo), 0);
  zo.window_bits = 16;
  ck_assert_int_eq(sl_pgunzip_chain(p, a, b, &zo), SL_EINVAL);
  zo.window_bits = 0;
  zo.name = "";
  ck_assert_int_eq(sl_pgunzip_chain(p, a, b, &zo), SL_EINVAL);
  ck_assert_int_eq(sl_pgunzip_chain(p, b, a, NULL), SL_EINVAL); /* kinds */
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 0);
  zo.name = "unpack";
  ck_assert_int_eq(sl_pgunzip_chain(p, a, b, &zo), 0);
  ck_assert_uint_eq(sl_pipeline_stage_count(p), 4);
  ck_assert_str_eq(sl_stage_name(sl_pipeline_stage(p, 1)), "unpack");
  ck_assert_str_eq(sl_stage_name(sl_pipeline_stage(p, 2)), "unpack-check");
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EDATA);
  ck_assert_str_eq(sl_pipeline_error(p), "unpack: truncated input at byte 0");
  sl_pipeline_free(p);
  pu_sink_fini(&k);
}
END_TEST

/* Failing each allocation of sl_pgunzip_chain: SL_ENOMEM, nothing added,
 * nothing left, the caller's stages still the caller's. */
START_TEST(test_split_alloc_failure) {
  long n;

  for (n = 1; n < 100; n++) {
    sl_pipeline *p = NULL;
    sl_stage *a, *b;
    pu_src s;
    pu_sink k;
    int rc;

    pu_src_init(&s, (const unsigned char *)"", 0, sizes_one, 1);
    pu_sink_init(&k);
    ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
    a = pu_src_stage("src", &s);
    b = pu_sink_stage("sink", &k);
    ck_assert(a != NULL && b != NULL);
    fail_alloc_arm(n);
    rc = sl_pgunzip_chain(p, a, b, NULL);
    fail_alloc_disarm();
    if (rc == 0) {
      ck_assert_int_eq(fail_alloc_failed(), 0);
      sl_pipeline_free(p);
      pu_sink_fini(&k);
      break;
    }
    ck_assert_int_eq(rc, SL_ENOMEM);
    ck_assert_uint_eq(sl_pipeline_stage_count(p), 0);
    sl_stage_free(a);
    sl_stage_free(b);
    sl_pipeline_free(p);
    pu_sink_fini(&k);
    ck_assert_int_eq(test_alloc_live(), 0);
  }
  ck_assert_int_gt(n, 1);
  ck_assert_int_lt(n, 100);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);

  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

static Suite *pgzip_suite(void) {
  Suite *s = suite_create("pgzip");
  TCase *tc;

  tc = tcase("roundtrip", 120);
  tcase_add_loop_test(tc, test_roundtrip_edge_sizes, 0, NEDGE);
  tcase_add_loop_test(tc, test_isal_levels, 0, 3 * NEDGE);
  tcase_add_test(tc, test_isal_dictionary);
  tcase_add_test(tc, test_engine_choice);
  tcase_add_loop_test(tc, test_empty_input_valid_member, 0, 10);
  tcase_add_loop_test(tc, test_roundtrip_levels, 0, 10);
  tcase_add_test(tc, test_default_level_is_6);
  tcase_add_loop_test(tc, test_output_independent_of_workers, 0, 4);
  tcase_add_loop_test(tc, test_smallest_block, 0, 5);
  tcase_add_test(tc, test_dictionary_used);
  tcase_add_loop_test(tc, test_scheme_and_mem_level, 0, 3);
  tcase_add_loop_test(tc, test_incompressible_blocks_stored, 0, 3);
  tcase_add_loop_test(tc, test_compressible_not_stored, 0, 4);
  suite_add_tcase(s, tc);

  tc = tcase("large", 600);
  tcase_add_test(tc, test_roundtrip_20mib);
  tcase_add_test(tc, test_bounded_memory);
  tcase_add_test(tc, test_whole_blocks_not_copied);
  tcase_add_test(tc, test_incompressible_results_pooled);
  suite_add_tcase(s, tc);

  tc = tcase("interop", 120);
  tcase_add_test(tc, test_gzip_tool_reads);
  tcase_add_test(tc, test_pigz_reads);
  tcase_add_loop_test(tc, test_header_fields, 0, 3);
  suite_add_tcase(s, tc);

  tc = tcase("flush", 60);
  tcase_add_loop_test(tc, test_flush_marker_delivers, 0, 6);
  suite_add_tcase(s, tc);

  tc = tcase("blocks", 300);
  tcase_add_loop_test(tc, test_blocks_edge_sizes, 0, NBCASES * 8);
  tcase_add_test(tc, test_blocks_default_block);
  tcase_add_loop_test(tc, test_blocks_header, 0, 2);
  tcase_add_loop_test(tc, test_blocks_flush_cuts, 0, 8);
  tcase_add_test(tc, test_blocks_invalid);
  tcase_add_test(tc, test_resolve);
  tcase_add_loop_test(tc, test_auto_is_resolved, 0, 3);
  suite_add_tcase(s, tc);

  tc = tcase("failure", 300);
  tcase_add_test(tc, test_worker_alloc_failure);
  tcase_add_test(tc, test_alloc_failure_new);
  suite_add_tcase(s, tc);

  tc = tcase("api", 60);
  tcase_add_test(tc, test_opts_init);
  tcase_add_test(tc, test_bad_options);
  tcase_add_test(tc, test_result_states);
  suite_add_tcase(s, tc);

  tc = tcase("split", 300);
  tcase_add_loop_test(tc, test_split_roundtrip, 0, NEDGE);
  tcase_add_test(tc, test_split_roundtrip_20mib);
  tcase_add_loop_test(tc, test_split_members, 0, 3);
  tcase_add_test(tc, test_split_crc_mismatch);
  tcase_add_test(tc, test_split_isize_mismatch);
  tcase_add_loop_test(tc, test_split_truncated, 0, 2);
  tcase_add_loop_test(tc, test_split_trailing, 0, 4);
  tcase_add_loop_test(tc, test_split_trailing_report, 0, 2);
  tcase_add_test(tc, test_split_bad_header);
  tcase_add_test(tc, test_split_corrupt_data);
  tcase_add_test(tc, test_split_header_crc);
  tcase_add_test(tc, test_split_reads_tools);
  tcase_add_test(tc, test_split_many_members);
  tcase_add_test(tc, test_split_api);
  tcase_add_test(tc, test_split_alloc_failure);
  suite_add_tcase(s, tc);

  return s;
}

int main(void) {
  engine_from_env();
  return run_suite(pgzip_suite());
}

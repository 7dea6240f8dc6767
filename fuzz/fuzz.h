/* SPDX-License-Identifier: MIT */
/*
 * The shared driver of the libFuzzer targets (the .c files beside it).
 *
 * Every target runs its input through a real pipeline, threads and rings
 * included: a memory source, the decompression stage(s) under test, a
 * memory sink. A hash of the input picks how the source cuts it into chunks
 * (one byte each, random short runs with empty chunks among them, a few
 * hundred bytes, or one chunk), the pipeline's buffer size and marks (small,
 * so that every output buffer fills and every ring pauses its writer) and,
 * for some inputs, ignore_trailing, and the decoder's engine (AUTO, which
 * is ISA-L where the library has it, or zlib: against the zlib oracle
 * below, ISA-L's decoder is fuzzed differentially). Deriving them from
 * the input rather than
 * from a prefix of it keeps the seed corpus made of plain compressed files,
 * and keeps a crashing input reproducible on its own.
 *
 * Checks, on every input:
 *   - no crash, no undefined behaviour, no leak (AddressSanitizer,
 *     UndefinedBehaviorSanitizer, LeakSanitizer), no hang (libFuzzer's
 *     -timeout);
 *   - a failure is SL_EDATA (or SL_EMSGSIZE from the sink's output limit),
 *     has a name in the error table and a message "<stage>: ..." naming one
 *     of the pipeline's stages;
 *   - a differential oracle: zlib's own inflate() of the same bytes under
 *     the same rules (gzip members one after the other, zlib, raw deflate,
 *     trailing bytes) must succeed exactly when the pipeline does, with the
 *     same output; when both fail, the bytes the pipeline delivered before
 *     failing must agree with what zlib decoded.
 *
 * Output is capped (FZ_OUT_MAX) on both sides so that a decompression bomb
 * costs milliseconds: the sink fails with SL_EMSGSIZE past the cap, and the
 * oracle stops decoding one byte past it.
 */
#ifndef SLUICE_FUZZ_H
#define SLUICE_FUZZ_H

#include <sluice.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define FZ_OUT_MAX ((size_t)1 << 18)

/* Formats the oracle decodes (the targets' stream rules). */
enum fz_format { FZ_GZIP, FZ_ZLIB, FZ_RAW, FZ_AUTO, FZ_GZIP_BLOCKS };

/* How one input is run, from its hash. */
struct fz_params {
  int cut;         /* 0: 1-byte chunks; 1: 0..16; 2: 1..600; 3: one chunk */
  size_t buf_size; /* pipeline buffer size */
  size_t hwm;      /* ring high mark */
  int ignore_trailing;
  int engine;    /* the decoder's engine: AUTO (ISA-L when built) or zlib */
  uint64_t seed; /* chunk lengths */
};

/* The oracle's verdict. */
struct fz_oracle {
  int ok;           /* the whole input decodes under the rules */
  int capped;       /* decoding stopped at FZ_OUT_MAX + 1 bytes */
  int format;       /* FZ_GZIP, FZ_ZLIB or FZ_RAW (FZ_AUTO resolved,
                       FZ_GZIP_BLOCKS read as FZ_GZIP) */
  unsigned members; /* gzip members read whole */
  unsigned char *out;
  size_t len;
};

#define FZ_CHECK(cond, ...)                               \
  do {                                                    \
    if (!(cond)) {                                        \
      fprintf(stderr, "fuzz: check failed: %s: ", #cond); \
      fprintf(stderr, __VA_ARGS__);                       \
      fputc('\n', stderr);                                \
      abort();                                            \
    }                                                     \
  } while (0)

static uint64_t fz_hash(const uint8_t *d, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= d[i];
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

static uint64_t fz_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static struct fz_params fz_params_of(const uint8_t *d, size_t n) {
  static const size_t bufs[] = {64, 128, 1024, 4096};
  uint64_t h = fz_hash(d, n);
  struct fz_params pr;

  pr.cut = (int)(h & 3);
  pr.buf_size = bufs[(h >> 2) & 3];
  pr.hwm = pr.buf_size * (((h >> 4) & 1) ? 1 : 4);
  pr.ignore_trailing = ((h >> 5) & 7) == 0; /* one input in eight */
  pr.engine = (h >> 8) & 1 ? SL_ZLIB_ENGINE_ZLIB : SL_ZLIB_ENGINE_AUTO;
  pr.seed = h;
  return pr;
}

/* ------------------------------------------------------------------------
 * The oracle: zlib's inflate() on the whole input, in one piece
 * ---------------------------------------------------------------------- */

static void fz_append(struct fz_oracle *o, const unsigned char *p, size_t n) {
  if (n == 0)
    return;
  o->out = realloc(o->out, o->len + n);
  FZ_CHECK(o->out != NULL, "out of memory");
  memcpy(o->out + o->len, p, n);
  o->len += n;
}

/* Inflate one stream from in[0..n) with window_bits wb. Returns 1 at its
 * end (*used: the bytes it took), 0 on a failure or a truncated stream. */
static int fz_inflate_one(struct fz_oracle *o, const unsigned char *in,
                          size_t n, int wb, size_t *used) {
  unsigned char buf[4096];
  z_stream zs;
  int zr = Z_OK, ended = 0;

  memset(&zs, 0, sizeof zs);
  FZ_CHECK(inflateInit2(&zs, wb) == Z_OK, "inflateInit2");
  zs.next_in = (unsigned char *)(uintptr_t)in;
  zs.avail_in = (uInt)n;
  for (;;) {
    zs.next_out = buf;
    zs.avail_out = sizeof buf;
    zr = inflate(&zs, Z_NO_FLUSH);
    fz_append(o, buf, sizeof buf - zs.avail_out);
    if (o->len > FZ_OUT_MAX) {
      o->capped = 1;
      break;
    }
    if (zr == Z_STREAM_END) {
      ended = 1;
      break;
    }
    if (zr != Z_OK)
      break; /* Z_DATA_ERROR, Z_NEED_DICT, Z_BUF_ERROR: input ran out */
  }
  size_t took = n - zs.avail_in;
  if (ended && wb < 0) {
    /* Whole bytes a raw inflate read past its last block are not its. */
    size_t ahead = (size_t)(zs.data_type & 63) >> 3;
    if (ahead <= took)
      took -= ahead;
  }
  *used = took;
  inflateEnd(&zs);
  return ended;
}

/* The auto-detection rule of sl_unzip_new (include/sluice/zlib.h). */
static int fz_detect(const uint8_t *d, size_t n) {
  if (n < 2)
    return FZ_RAW;
  unsigned b0 = d[0], b1 = d[1];
  if (b0 == 0x1f && b1 == 0x8b)
    return FZ_GZIP;
  if ((b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0)
    return FZ_ZLIB;
  return FZ_RAW;
}

/* The block rule of sl_pgunzip_chain (src/stages/bgunzip.c), for
 * FZ_GZIP_BLOCKS. While every member so far carried its length, a member
 * whose header carries one ('S','L' LEN 4: the length; 'B','C' LEN 2: the
 * length - 1; the first such subfield of a well-formed extra field) is
 * read by that length, which must then be the member's own: a wrong one
 * fails the stream where gzip would read on. The members that the stage
 * streams instead (from the first one without a length, one too large
 * to hold: over 4 MiB, or an ISIZE over 64 MiB that its data could make,
 * or one the input ends inside) end the rule for the rest of the input.
 * Returns the length (0: none), and in *stream whether the rule ends at
 * this member. */
#define FZ_MEMBER_MAX ((uint64_t)4 << 20)
#define FZ_OUT_BIG ((uint64_t)64 << 20)

static uint64_t fz_block_length(const uint8_t *d, size_t n, int *stream) {
  *stream = 1;
  if (n < 12 || d[0] != 0x1f || d[1] != 0x8b || d[2] != 8 || (d[3] & 0xe0) ||
      !(d[3] & 4))
    return 0;
  size_t xlen = (size_t)d[10] | (size_t)d[11] << 8, hlen = 12 + xlen;
  if (hlen > n)
    return 0;
  const uint8_t *x = d + 12;
  uint64_t len = 0;
  while (xlen >= 4) {
    size_t sl = (size_t)x[2] | (size_t)x[3] << 8;
    if (sl > xlen - 4)
      break;
    if (x[0] == 'S' && x[1] == 'L' && sl == 4) {
      len = (uint64_t)x[4] | (uint64_t)x[5] << 8 | (uint64_t)x[6] << 16 |
            (uint64_t)x[7] << 24;
      break;
    }
    if (x[0] == 'B' && x[1] == 'C' && sl == 2) {
      len = ((uint64_t)x[4] | (uint64_t)x[5] << 8) + 1;
      break;
    }
    x += 4 + sl;
    xlen -= 4 + sl;
  }
  if (len == 0 || len > FZ_MEMBER_MAX)
    return 0;
  /* The rest of the header, as far as the input holds it. */
  for (unsigned f = 8; f <= 16; f <<= 1) {
    if (!(d[3] & f))
      continue;
    while (hlen < n && d[hlen] != 0)
      hlen++;
    hlen++;
  }
  if (d[3] & 2)
    hlen += 2;
  /* A length shorter than the header and trailer, or past the input's
   * end: the stage fails either way; so does zlib, or the length is not
   * the member's. */
  if (len >= hlen + 8 && len <= n) {
    uint64_t isize = (uint64_t)d[len - 4] | (uint64_t)d[len - 3] << 8 |
                     (uint64_t)d[len - 2] << 16 | (uint64_t)d[len - 1] << 24;
    if (isize > FZ_OUT_BIG && isize <= (len - 8 - hlen) * 1032 + 64)
      return 0;
  }
  /* The input ends inside the member: the stage streams it, so that what
   * it can decode comes out before the error, as gzip's does. */
  if (len > n)
    return 0;
  *stream = 0;
  return len;
}

static void fz_oracle_run(struct fz_oracle *o, int format, const uint8_t *d,
                          size_t n, int ignore_trailing) {
  size_t pos = 0, used;
  int blocks = format == FZ_GZIP_BLOCKS;

  if (blocks)
    format = FZ_GZIP;

  memset(o, 0, sizeof *o);
  if (format == FZ_AUTO) {
    if (n < 2)
      return; /* unzip needs two bytes to decide: truncated */
    format = fz_detect(d, n);
  }
  o->format = format;
  if (format != FZ_GZIP) {
    if (!fz_inflate_one(o, d, n, format == FZ_ZLIB ? 15 : -15, &used))
      return;
    o->ok = used == n || ignore_trailing;
    return;
  }
  /* gzip: members until the end; after the first, bytes that do not start
   * with the magic are trailing garbage (an error unless ignored), and a
   * single byte left over is too. */
  for (;;) {
    if (o->members > 0 &&
        (n - pos < 2 || d[pos] != 0x1f || d[pos + 1] != 0x8b)) {
      o->ok = ignore_trailing;
      return;
    }
    uint64_t blen = 0;
    if (blocks) {
      int stream;
      blen = fz_block_length(d + pos, n - pos, &stream);
      blocks = !stream;
    }
    if (!fz_inflate_one(o, d + pos, n - pos, 15 + 16, &used))
      return;
    if (blocks && blen != used)
      return; /* a wrong block length */
    o->members++;
    pos += used;
    if (pos == n) {
      o->ok = 1;
      return;
    }
  }
}

/* ------------------------------------------------------------------------
 * The pipeline under test
 * ---------------------------------------------------------------------- */

/* Puts the stages under test between src and sink into p, with zo as
 * their options; *middle gets the first of them. Returns 0 or an error. */
typedef int (*fz_build_fn)(sl_pipeline *p, sl_stage *src, sl_stage *sink,
                           const sl_zlib_opts *zo, sl_stage **middle);

/* A memory source cutting d[0..n) as pr says. */
static sl_stage *fz_source(const uint8_t *d, size_t n,
                           const struct fz_params *pr, sl_mem_chunk **chunks) {
  sl_stage *src = NULL;
  sl_mem_opts mo = {0};
  int rc;

  *chunks = NULL;
  if (pr->cut == 1 || pr->cut == 2) {
    uint64_t s = pr->seed;
    size_t nc = 0, pos = 0;
    sl_mem_chunk *c = malloc((n + 1) * 2 * sizeof *c);
    FZ_CHECK(c != NULL, "out of memory");
    while (pos < n) {
      uint64_t r = fz_next(&s);
      size_t len = pr->cut == 1 ? (size_t)(r % 17) : 1 + (size_t)(r % 600);
      if (len > n - pos)
        len = n - pos;
      c[nc].data = d + pos;
      c[nc].len = len;
      nc++;
      pos += len;
    }
    rc = sl_mem_source_chunks_new(&src, c, nc, &mo);
    *chunks = c;
  } else {
    mo.chunk_size = pr->cut == 0 ? 1 : n + 1;
    rc = sl_mem_source_new(&src, d, n, &mo);
  }
  FZ_CHECK(rc == 0, "source: %s", sl_strerror(rc));
  return src;
}

/* Does msg start with "<name of a stage of p>: "? */
static int fz_msg_names_stage(sl_pipeline *p, const char *msg) {
  for (size_t i = 0; i < sl_pipeline_stage_count(p); i++) {
    const char *name = sl_stage_name(sl_pipeline_stage(p, i));
    size_t len = strlen(name);
    if (strncmp(msg, name, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ')
      return 1;
  }
  return 0;
}

/* Checks a target adds (getters of the stage under test), called before
 * the pipeline is freed with the pipeline's outcome rc. */
typedef void (*fz_extra_fn)(sl_stage *middle, const struct fz_oracle *o, int rc,
                            const uint8_t *d, size_t n);

/* Run one input through build's stages; format gives the oracle's rules. */
static void fz_run(const uint8_t *d, size_t n, int format, fz_build_fn build,
                   fz_extra_fn extra) {
  struct fz_params pr = fz_params_of(d, n);
  sl_pipeline_opts po = {0};
  sl_pipeline *p = NULL;
  sl_stage *src, *sink = NULL, *middle = NULL;
  sl_mem_chunk *chunks;
  sl_zlib_opts zo;
  struct fz_oracle o;
  const void *out = NULL;
  size_t out_len = 0;
  int rc;

  po.buf_size = pr.buf_size;
  po.hwm = pr.hwm;
  FZ_CHECK(sl_pipeline_new(&p, &po) == 0, "pipeline");
  src = fz_source(d, n, &pr, &chunks);
  sl_mem_opts so = {.max_size = FZ_OUT_MAX};
  FZ_CHECK(sl_mem_sink_new(&sink, &so) == 0, "sink");
  sl_zlib_opts_init(&zo);
  zo.ignore_trailing = pr.ignore_trailing;
  zo.engine = pr.engine;
  rc = build(p, src, sink, &zo, &middle);
  FZ_CHECK(rc == 0, "build: %s", sl_strerror(rc));

  rc = sl_pipeline_start(p);
  FZ_CHECK(rc == 0, "start: %s", sl_strerror(rc));
  rc = sl_pipeline_wait(p);
  FZ_CHECK(sl_mem_sink_data(sink, &out, &out_len) == 0, "sink data");

  fz_oracle_run(&o, format, d, n, pr.ignore_trailing);

  if (rc == 0) {
    FZ_CHECK(sl_pipeline_error(p) == NULL, "error set on success: %s",
             sl_pipeline_error(p));
    FZ_CHECK(o.ok && !o.capped,
             "pipeline succeeded where zlib fails (%zu bytes out)", out_len);
    FZ_CHECK(out_len == o.len, "output %zu bytes, zlib %zu", out_len, o.len);
    FZ_CHECK(out_len == 0 || memcmp(out, o.out, out_len) == 0,
             "output differs from zlib's");
  } else {
    const char *msg = sl_pipeline_error(p);
    FZ_CHECK(rc < 0, "positive failure %d", rc);
    FZ_CHECK(strcmp(sl_err_name(rc), "SL_UNKNOWN") != 0, "unknown code %d", rc);
    FZ_CHECK(rc == SL_EDATA || rc == SL_EMSGSIZE, "unexpected %s: %s",
             sl_err_name(rc), msg ? msg : "(no message)");
    FZ_CHECK(msg != NULL && *msg != '\0', "no message for %s", sl_err_name(rc));
    FZ_CHECK(fz_msg_names_stage(p, msg), "message names no stage: %s", msg);
    if (rc == SL_EMSGSIZE)
      FZ_CHECK(o.capped, "output limit hit, zlib gives %zu bytes: %s", o.len,
               msg);
    else
      FZ_CHECK(!o.ok || o.capped, "pipeline fails where zlib succeeds: %s",
               msg);
    size_t common = out_len < o.len ? out_len : o.len;
    FZ_CHECK(common == 0 || memcmp(out, o.out, common) == 0,
             "bytes before the failure differ from zlib's: %s", msg);
  }
  if (extra != NULL)
    extra(middle, &o, rc, d, n);

  sl_pipeline_free(p);
  free(chunks);
  free(o.out);
}

#endif

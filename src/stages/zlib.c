/* SPDX-License-Identifier: MIT */
/*
 * zlib stages: gzip, zlib and raw deflate, in both directions, and unzip,
 * which tells the three apart.
 *
 * Compressors hand the whole job to deflate(), gzip header included
 * (deflateSetHeader). They fill one pooled buffer at a time and push it
 * when it is full; a flush marker (the sync op) ends the current deflate
 * block with Z_SYNC_FLUSH and pushes what they hold, the end of the stream
 * (the flush op) runs Z_FINISH.
 *
 * Decompressors run inflate() in raw mode only and read the wrappers
 * themselves: a small state machine fed byte by byte takes the gzip header
 * (every field, FHCRC checked), the zlib header, and the trailers, and
 * computes CRC-32 / Adler-32 and ISIZE over the output. That is what lets
 * every error name the offset of the compressed input where it was found
 * (in_off counts every byte consumed), check the reserved flag bits that
 * zlib's own gzip mode ignores, and handle member after member and the
 * bytes after the last one in one place. Any wrapper field may be split
 * across input chunks, down to one byte per chunk. In raw mode inflate
 * stops at the last byte of the deflate stream: what follows it in the
 * chunk is the trailer, the next member or trailing bytes.
 *
 * A decompressor pushes every full output buffer as soon as it is full,
 * from inside the inflate loop: sl_stage_push blocks while the output ring
 * is at its high mark, so however much one input chunk inflates to (a
 * bomb), the stage holds one output buffer at a time. What is left when an
 * input chunk is used up is pushed before the next chunk is taken; a small
 * remainder is copied into a buffer of its size first, so the buffers that
 * wait in a ring hold about as many bytes as they are counted for.
 *
 * Threads. Every op runs on the stage's thread and only it touches the
 * zlib state and the parser. The getters run on any thread: what they read
 * (the first member's header, the member count, the format unzip found) is
 * published under the context's mutex; the header fields never change
 * once published, so the pointers a getter hands out stay valid until the
 * stage is destroyed.
 */
#include "engine-int.h"
#include "gzip-int.h"
#include "stage-int.h"
#include "zlib-int.h"

#include <sluice/zlib.h>

#include <limits.h>
#include <stdarg.h>
#include <string.h>

#define ZLIB_CONST
#include <zlib.h>

enum zkind {
  ZK_GZIP,
  ZK_DEFLATE,
  ZK_DEFLATE_RAW,
  ZK_GUNZIP,
  ZK_INFLATE,
  ZK_INFLATE_RAW,
  ZK_UNZIP
};

static const char *const kind_names[] = {"gzip",   "deflate", "deflate-raw",
                                         "gunzip", "inflate", "inflate-raw",
                                         "unzip"};

/* Where a decompressor is in its input. */
enum dstate {
  DS_DETECT,       /* unzip: the first two bytes decide the format */
  DS_GZ_HEADER,    /* a gzip member's header */
  DS_ZLIB_HEADER,  /* the two bytes of a zlib header */
  DS_BODY,         /* deflate data, through inflate */
  DS_GZ_TRAILER,   /* CRC32 and ISIZE */
  DS_ZLIB_TRAILER, /* Adler-32 */
  DS_NEXT,         /* gzip: after a member; another one, or the end */
  DS_END,          /* the stream ended: only the end of input may follow */
  DS_IGNORE        /* the stream ended; the rest of the input is ignored */
};

typedef struct zctx {
  enum zkind kind;
  z_stream strm;
  bool strm_ready;
  sl_buf *out; /* output being filled; ours until pushed */

  /* Compressors: the header deflate writes, and the copies it points to. */
  gz_header gzh;
  char *w_name, *w_comment;
  unsigned char *w_extra;

  /* Decompressors. */
  int window_bits;
  bool ignore_trailing;
  enum dstate state;
  uint64_t in_off;  /* input bytes consumed so far */
  uint64_t nmember; /* index of the gzip member being read */
  uint32_t check;   /* CRC-32 or Adler-32 of the member's output so far */
  uint32_t isize;   /* its length, modulo 2^32 */
  uint64_t mlen;    /* its length */

  /* sl__gunzip_split_new: no CRC-32 here; member ends go to end(). */
  sl__member_end_fn end;
  void *end_arg;
  void (*end_free)(void *);
  unsigned char det[2];
  unsigned ndet;

  /* The inflate engine (decompressors). */
  sl__inflater *inf;

  /* The gzip header reader; it keeps the first member's header, published
   * when complete. */
  sl__gzhdr gh;
  /* Ignored bytes after the stream (ignore_trailing): where they began,
   * and whether any was not zero (zero padding is accepted silently).
   * Read by sl__gunzip_trailing once the stage's thread has ended. */
  bool trailing, trail_garbage;
  uint64_t trail_off;
  uint64_t member_off;   /* offset of the member's first byte */
  unsigned char tail[8]; /* a trailer or a zlib header */
  unsigned ntail;
  uint64_t tail_off; /* offset of tail[0] */

  /* Published under mu for the getters. */
  pthread_mutex_t mu;
  int format; /* SL_ZLIB_FORMAT_*; 0 while unzip has not decided */
  bool have_header;
  uint64_t members; /* members verified */
} zctx;

/* ------------------------------------------------------------------------
 * Small things
 * ---------------------------------------------------------------------- */

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  (void)opaque;
  if (size != 0 && items > SIZE_MAX / size)
    return Z_NULL;
  return sl__malloc((size_t)items * size);
}

static void z_free(voidpf opaque, voidpf ptr) {
  (void)opaque;
  sl__free(ptr);
}

static bool is_compressor(enum zkind k) {
  return k == ZK_GZIP || k == ZK_DEFLATE || k == ZK_DEFLATE_RAW;
}

static uInt clamp_uint(size_t n) {
  return n > UINT_MAX ? UINT_MAX : (uInt)n;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

/* Explain a data error and return SL_EDATA. */
static int data_error(sl_stage *st, const char *fmt, ...) SL_PRINTF(2, 3);

static int data_error(sl_stage *st, const char *fmt, ...) {
  char msg[SL_ERRMSG_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  sl_stage_set_error(st, "%s", msg);
  return SL_EDATA;
}

/* zlib's code for an error outside the data: memory, or a broken state. */
static int zlib_error(sl_stage *st, const char *what, int zr) {
  if (zr == Z_MEM_ERROR) {
    sl_stage_set_error(st, "%s: out of memory", what);
    return SL_ENOMEM;
  }
  sl_stage_set_error(st, "%s: zlib error %d", what, zr);
  return SL_EIO;
}

/* ------------------------------------------------------------------------
 * Output buffers
 * ---------------------------------------------------------------------- */

/* Make sure z->out has at least min_room bytes free, pushing it first when
 * it has less. Returns 0 or what push or the pool returned. */
static int out_room(sl_stage *st, zctx *z, size_t min_room) {
  int rc;

  if (z->out != NULL && sl_buf_cap(z->out) - sl_buf_len(z->out) >= min_room)
    return 0;
  if (z->out != NULL) {
    sl_buf *full = z->out;
    z->out = NULL;
    if (sl_buf_len(full) == 0) {
      sl_buf_unref(full);
    } else if ((rc = sl_stage_push(st, full)) != 0) {
      return rc;
    }
  }
  return sl_stage_buf(st, 0, &z->out);
}

/* Push what z->out holds. A buffer less than half full is copied into one
 * of its size and kept for more: buffers waiting in a ring then cost about
 * what the ring counts them for. */
static int out_emit(sl_stage *st, zctx *z) {
  sl_buf *b = z->out, *small = NULL;
  size_t len = b != NULL ? sl_buf_len(b) : 0;
  int rc;

  if (len == 0)
    return 0;
  if (len >= sl_buf_cap(b) / 2) {
    z->out = NULL;
    return sl_stage_push(st, b);
  }
  if ((rc = sl_stage_buf(st, len, &small)) != 0)
    return rc;
  memcpy(sl_buf_data(small), sl_buf_data(b), len);
  sl_buf_set_len(small, len);
  sl_buf_set_len(b, 0);
  return sl_stage_push(st, small);
}

/* ------------------------------------------------------------------------
 * Compressors
 * ---------------------------------------------------------------------- */

/* Feed p[0..n) to deflate, then run flush (Z_NO_FLUSH, Z_SYNC_FLUSH or
 * Z_FINISH) to its end, pushing every buffer that fills. */
static int cz_run(sl_stage *st, zctx *z, const unsigned char *p, size_t n,
                  int flush) {
  size_t left = n;
  int rc;

  z->strm.next_in = p;
  for (;;) {
    /* A sync flush wants more than six bytes of room, or it may emit its
     * marker twice. */
    rc = out_room(st, z, flush == Z_NO_FLUSH ? 1 : 8);
    if (rc != 0)
      return rc;
    uInt in_now = clamp_uint(left);
    size_t len = sl_buf_len(z->out);
    uInt room = clamp_uint(sl_buf_cap(z->out) - len);
    z->strm.avail_in = in_now;
    z->strm.next_out = sl_buf_data(z->out) + len;
    z->strm.avail_out = room;
    int zr = deflate(&z->strm, left > in_now ? Z_NO_FLUSH : flush);
    left -= in_now - z->strm.avail_in;
    sl_buf_set_len(z->out, len + (room - z->strm.avail_out));
    if (zr == Z_STREAM_END)
      return 0;
    if (zr != Z_OK && zr != Z_BUF_ERROR)
      return zlib_error(st, "deflate", zr);
    if (flush == Z_FINISH && zr == Z_BUF_ERROR && z->strm.avail_out == room)
      return zlib_error(st, "deflate", zr); /* cannot happen: no progress */
    if (z->strm.avail_out == 0)
      continue; /* more may be waiting inside deflate */
    if (left == 0 && flush != Z_FINISH)
      return 0;
  }
}

static int cz_transform(sl_stage *st, void *ctx, sl_buf *in) {
  zctx *z = ctx;
  int rc = cz_run(st, z, sl_buf_data(in), sl_buf_len(in), Z_NO_FLUSH);

  sl_buf_unref(in);
  return rc;
}

/* A flush marker: end the block on a byte boundary and push it all. */
static int cz_sync(sl_stage *st, void *ctx) {
  zctx *z = ctx;
  int rc = cz_run(st, z, NULL, 0, Z_SYNC_FLUSH);

  return rc != 0 ? rc : out_emit(st, z);
}

/* End of stream: the last block and the trailer. */
static int cz_flush(sl_stage *st, void *ctx) {
  zctx *z = ctx;
  int rc = cz_run(st, z, NULL, 0, Z_FINISH);

  return rc != 0 ? rc : out_emit(st, z);
}

/* ------------------------------------------------------------------------
 * Decompressors: the wrappers
 * ---------------------------------------------------------------------- */

static int dz_feed(sl_stage *st, zctx *z, const unsigned char *p, size_t n);

static void body_begin(zctx *z) {
  z->state = DS_BODY;
  z->isize = 0;
  z->mlen = 0;
  z->check = z->kind == ZK_INFLATE ||
                     (z->kind == ZK_UNZIP && z->format == SL_ZLIB_FORMAT_ZLIB)
                 ? (uint32_t)adler32(0L, Z_NULL, 0)
                 : sl__crc32(0, NULL, 0);
}

static void member_begin(zctx *z) {
  z->state = DS_GZ_HEADER;
  z->ntail = 0;
  z->member_off = z->in_off;
  sl__gzhdr_begin(&z->gh, z->nmember == 0, z->in_off);
}

/* Bytes after the end of the stream, the first at off: an error, or from
 * now on ignored (and recorded for sl__gunzip_trailing). */
static int trailing(sl_stage *st, zctx *z, uint64_t off,
                    const unsigned char *seen, size_t nseen) {
  if (z->ignore_trailing) {
    z->state = DS_IGNORE;
    z->trailing = true;
    z->trail_off = off;
    /* seen: the bytes from off that the header reader took already. */
    for (size_t i = 0; i < nseen; i++)
      z->trail_garbage |= seen[i] != 0;
    return 0;
  }
  return data_error(st, "trailing garbage at input byte %llu",
                    (unsigned long long)off);
}

/* Read a gzip header from p[0..n); *used gets the bytes taken. At its
 * end the body starts, and the first member's header is published. */
static int gz_header_feed(sl_stage *st, zctx *z, const unsigned char *p,
                          size_t n, size_t *used) {
  char msg[SL_ERRMSG_MAX];
  int rc = sl__gzhdr_feed(&z->gh, p, n, used, msg, sizeof msg);

  z->in_off += *used;
  switch (rc) {
  case SL__GZH_MORE:
    return 0;
  case SL__GZH_DONE:
    if (z->nmember == 0) {
      pthread_mutex_lock(&z->mu);
      z->have_header = true;
      pthread_mutex_unlock(&z->mu);
    }
    body_begin(z);
    return 0;
  case SL__GZH_NOMAGIC:
    if (z->nmember > 0)
      return trailing(st, z, z->member_off, z->gh.fixed, z->gh.nfixed);
    return data_error(st, "not in gzip format at input byte %llu",
                      (unsigned long long)(z->in_off - 1));
  case SL_ENOMEM:
    sl_stage_set_error(st, "%s", msg);
    return SL_ENOMEM;
  default:
    sl_stage_set_error(st, "%s", msg);
    return SL_EDATA;
  }
}

/* Read a zlib header (two bytes). */
static int zlib_header_feed(sl_stage *st, zctx *z, const unsigned char *p,
                            size_t n, size_t *used) {
  size_t i = 0;

  while (i < n && z->ntail < 2) {
    if (z->ntail == 0)
      z->tail_off = z->in_off;
    z->tail[z->ntail++] = p[i++];
    z->in_off++;
  }
  *used = i;
  if (z->ntail < 2)
    return 0;
  unsigned cmf = z->tail[0], flg = z->tail[1];
  unsigned long long at = (unsigned long long)z->tail_off;
  if (((cmf << 8) | flg) % 31 != 0)
    return data_error(st, "incorrect header check at input byte %llu", at + 1);
  if ((cmf & 0x0f) != 8)
    return data_error(st, "unknown compression method %u at input byte %llu",
                      cmf & 0x0fu, at);
  int wbits = (int)(cmf >> 4) + 8;
  if (wbits > 15)
    return data_error(st, "invalid window size at input byte %llu", at);
  if (wbits > z->window_bits)
    return data_error(st,
                      "window of 2^%d bytes larger than the 2^%d allowed "
                      "at input byte %llu",
                      wbits, z->window_bits, at);
  if (flg & 0x20)
    return data_error(st,
                      "preset dictionary required, which is not supported, "
                      "at input byte %llu",
                      at + 1);
  body_begin(z);
  return 0;
}

/* Read a trailer: CRC32 and ISIZE (gzip), or Adler-32 (zlib). */
static int trailer_feed(sl_stage *st, zctx *z, const unsigned char *p, size_t n,
                        size_t *used) {
  bool gz = z->state == DS_GZ_TRAILER;
  unsigned need = gz ? 8 : 4;
  size_t i = 0;

  while (i < n && z->ntail < need) {
    if (z->ntail == 0)
      z->tail_off = z->in_off;
    z->tail[z->ntail++] = p[i++];
    z->in_off++;
  }
  *used = i;
  if (z->ntail < need)
    return 0;
  if (!gz) {
    uint32_t stored = be32(z->tail);
    if (stored != z->check)
      return data_error(st,
                        "adler32 mismatch at input byte %llu "
                        "(stored 0x%08x, computed 0x%08x)",
                        (unsigned long long)z->tail_off, (unsigned)stored,
                        (unsigned)z->check);
    z->state = DS_END;
    return 0;
  }
  char msg[SL_ERRMSG_MAX];
  if (z->end != NULL) {
    /* The CRC-32 is checked downstream: ISIZE here, and an empty
     * member's CRC, which has nothing to travel with. */
    uint32_t crc = sl__le32(z->tail);
    if (sl__gz_trailer_check(z->tail, crc, z->isize, z->tail_off, msg,
                             sizeof msg) != 0 ||
        (z->mlen == 0 &&
         sl__gz_trailer_check(z->tail, 0, 0, z->tail_off, msg, sizeof msg)))
      return data_error(st, "%s", msg);
    if (z->mlen > 0) {
      int rc = z->end(z->end_arg, crc, z->mlen, z->tail_off);
      if (rc != 0) {
        sl_stage_set_error(st, "out of memory for a member's trailer");
        return rc;
      }
      if ((rc = out_emit(st, z)) != 0)
        return rc;
    }
  } else if (sl__gz_trailer_check(z->tail, z->check, z->isize, z->tail_off, msg,
                                  sizeof msg) != 0) {
    return data_error(st, "%s", msg);
  }
  pthread_mutex_lock(&z->mu);
  z->members++;
  pthread_mutex_unlock(&z->mu);
  z->nmember++;
  z->state = DS_NEXT;
  return 0;
}

/* unzip: the first two bytes decide; then they are read as the stream's. */
static int detect_feed(sl_stage *st, zctx *z, const unsigned char *p, size_t n,
                       size_t *used) {
  size_t i = 0;
  int format;

  while (i < n && z->ndet < 2)
    z->det[z->ndet++] = p[i++];
  *used = i;
  if (z->ndet < 2)
    return 0; /* not counted in in_off until they are read below */
  unsigned b0 = z->det[0], b1 = z->det[1];
  if (b0 == 0x1f && b1 == 0x8b) {
    format = SL_ZLIB_FORMAT_GZIP;
    member_begin(z);
  } else if ((b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0) {
    format = SL_ZLIB_FORMAT_ZLIB;
    z->state = DS_ZLIB_HEADER;
    z->ntail = 0;
  } else {
    format = SL_ZLIB_FORMAT_RAW;
  }
  pthread_mutex_lock(&z->mu);
  z->format = format;
  pthread_mutex_unlock(&z->mu);
  if (format == SL_ZLIB_FORMAT_RAW)
    body_begin(z);
  return dz_feed(st, z, z->det, 2);
}

/* ------------------------------------------------------------------------
 * Decompressors: the deflate data
 * ---------------------------------------------------------------------- */

/* The end of the deflate data: on to the trailer, the next member or the
 * end. */
static void body_end(zctx *z) {
  if (z->kind == ZK_INFLATE_RAW ||
      (z->kind == ZK_UNZIP && z->format == SL_ZLIB_FORMAT_RAW)) {
    z->state = DS_END;
  } else if (z->kind == ZK_INFLATE ||
             (z->kind == ZK_UNZIP && z->format == SL_ZLIB_FORMAT_ZLIB)) {
    z->state = DS_ZLIB_TRAILER;
  } else {
    z->state = DS_GZ_TRAILER;
    sl__inflater_reset(z->inf); /* for the next member */
  }
  z->ntail = 0;
}

/* Inflate from p[0..n) until it is used up or the deflate data ends,
 * pushing every output buffer that fills. */
static int body_feed(sl_stage *st, zctx *z, const unsigned char *p, size_t n,
                     size_t *used) {
  bool sum = z->kind != ZK_INFLATE_RAW && z->end == NULL &&
             !(z->kind == ZK_UNZIP && z->format == SL_ZLIB_FORMAT_RAW);
  bool adler = z->kind == ZK_INFLATE ||
               (z->kind == ZK_UNZIP && z->format == SL_ZLIB_FORMAT_ZLIB);
  size_t done = 0;
  int rc;

  *used = 0;
  for (;;) {
    if ((rc = out_room(st, z, 1)) != 0)
      return rc;
    size_t len = sl_buf_len(z->out);
    unsigned char *o = sl_buf_data(z->out) + len;
    size_t took = n - done, made = sl_buf_cap(z->out) - len;
    const char *msg = NULL;
    int r = sl__inflate(z->inf, p + done, &took, o, &made, &msg);
    if (r < 0)
      return zlib_error(st, "inflate", r == SL_ENOMEM ? Z_MEM_ERROR : r);
    done += took;
    z->in_off += took;
    *used = done;
    if (made > 0) {
      if (sum)
        z->check = adler ? (uint32_t)adler32_z(z->check, o, made)
                         : sl__crc32(z->check, o, made);
      z->isize += (uint32_t)made;
      z->mlen += made;
      sl_buf_set_len(z->out, len + made);
    }
    if (r == SL__INF_END) {
      /* Bytes the engine read past the end are read again, as what
       * follows the stream (a trailer, the next member). */
      unsigned char left[8];
      size_t nleft = sl__inflater_leftover(z->inf, left);
      z->in_off -= nleft;
      body_end(z);
      return nleft > 0 ? dz_feed(st, z, left, nleft) : 0;
    }
    if (r == SL__INF_DATA) {
      uint64_t back = sl__inflater_behind(z->inf) + 1;
      return data_error(
          st, "%s at input byte %llu", msg,
          (unsigned long long)(z->in_off >= back ? z->in_off - back : 0));
    }
    if (made == 0 && (done == n || took == 0))
      return 0; /* input used up, nothing pending */
  }
}

/* Read p[0..n) in whatever state the stream is. */
static int dz_feed(sl_stage *st, zctx *z, const unsigned char *p, size_t n) {
  int rc = 0;

  while (n > 0 && rc == 0) {
    size_t used = 0;
    switch (z->state) {
    case DS_DETECT:
      rc = detect_feed(st, z, p, n, &used);
      break;
    case DS_GZ_HEADER:
      rc = gz_header_feed(st, z, p, n, &used);
      break;
    case DS_ZLIB_HEADER:
      rc = zlib_header_feed(st, z, p, n, &used);
      break;
    case DS_BODY:
      rc = body_feed(st, z, p, n, &used);
      break;
    case DS_GZ_TRAILER:
    case DS_ZLIB_TRAILER:
      rc = trailer_feed(st, z, p, n, &used);
      break;
    case DS_NEXT:
      member_begin(z);
      break;
    case DS_END:
      rc = trailing(st, z, z->in_off, NULL, 0);
      break;
    case DS_IGNORE:
      for (size_t i = 0; i < n && !z->trail_garbage; i++)
        z->trail_garbage = p[i] != 0;
      used = n;
      z->in_off += n;
      break;
    }
    p += used;
    n -= used;
  }
  return rc;
}

static int dz_transform(sl_stage *st, void *ctx, sl_buf *in) {
  zctx *z = ctx;
  int rc = dz_feed(st, z, sl_buf_data(in), sl_buf_len(in));

  sl_buf_unref(in);
  return rc != 0 ? rc : out_emit(st, z);
}

static int dz_sync(sl_stage *st, void *ctx) {
  return out_emit(st, ctx);
}

/* End of input: it must end between gzip members or after the stream. */
static int dz_flush(sl_stage *st, void *ctx) {
  zctx *z = ctx;

  switch (z->state) {
  case DS_NEXT:
  case DS_END:
  case DS_IGNORE:
    break;
  case DS_GZ_HEADER:
    if (z->nmember > 0 && z->gh.pos < 2) { /* a lone byte after a member */
      int rc = trailing(st, z, z->member_off, z->gh.fixed, z->gh.nfixed);
      if (rc != 0)
        return rc;
      break;
    }
    /* fall through */
  default:
    return data_error(
        st, "truncated input at byte %llu",
        (unsigned long long)(z->in_off +
                             (z->state == DS_DETECT ? z->ndet : 0)));
  }
  return out_emit(st, z);
}

/* ------------------------------------------------------------------------
 * Construction, destruction, getters
 * ---------------------------------------------------------------------- */

static void z_destroy(void *ctx) {
  zctx *z = ctx;

  if (z == NULL)
    return;
  if (z->strm_ready)
    deflateEnd(&z->strm);
  sl__inflater_free(z->inf);
  sl_buf_unref(z->out);
  sl__free(z->w_name);
  sl__free(z->w_comment);
  sl__free(z->w_extra);
  sl__gzhdr_free(&z->gh);
  if (z->end_free != NULL)
    z->end_free(z->end_arg);
  pthread_mutex_destroy(&z->mu);
  sl__free(z);
}

int sl_zlib_opts_init(sl_zlib_opts *opts) {
  if (opts == NULL)
    return SL_EINVAL;
  memset(opts, 0, sizeof *opts);
  opts->level = SL_ZLIB_LEVEL_DEFAULT;
  opts->strategy = SL_ZLIB_STRATEGY_DEFAULT;
  opts->window_bits = 15;
  opts->mem_level = 8;
  return 0;
}

static bool opts_valid(const sl_zlib_opts *o) {
  const sl_gzip_header *h = o->header;

  if (o->name != NULL && o->name[0] == '\0')
    return false;
  if (o->level < SL_ZLIB_LEVEL_DEFAULT || o->level > SL_ZLIB_LEVEL_BEST)
    return false;
  if (o->strategy < SL_ZLIB_STRATEGY_DEFAULT ||
      o->strategy > SL_ZLIB_STRATEGY_FIXED)
    return false;
  if (o->window_bits != 0 && (o->window_bits < 8 || o->window_bits > 15))
    return false;
  if (o->mem_level < 0 || o->mem_level > 9)
    return false;
  if (h != NULL && (h->extra_len > 65535 || (h->extra == NULL && h->extra_len)))
    return false;
  if (sl_zlib_engine_name(o->engine) == NULL)
    return false;
  return true;
}

static char *dup_or_null(const char *s, bool *failed) {
  char *d = NULL;

  if (s != NULL && (d = sl__strdup(s)) == NULL)
    *failed = true;
  return d;
}

/* The gzip header fields deflate writes for h (NULL: a bare header),
 * pointing at h's strings: one place decides them for every stage that
 * writes a gzip header. OS is 3, Unix. */
static void gzh_fill(gz_header *g, const sl_gzip_header *h) {
  memset(g, 0, sizeof *g);
  g->os = 3; /* Unix */
  if (h == NULL)
    return;
  g->text = h->text != 0;
  g->time = h->mtime;
  g->hcrc = h->hcrc != 0;
  g->extra = (Bytef *)(uintptr_t)h->extra;
  g->extra_len = (uInt)h->extra_len;
  g->name = (Bytef *)(uintptr_t)h->name;
  g->comment = (Bytef *)(uintptr_t)h->comment;
}

/* The gzip header deflate writes: copies of what the options give. */
static int gzip_header_set(zctx *z, const sl_gzip_header *h) {
  bool failed = false;

  gzh_fill(&z->gzh, h);
  if (h != NULL) {
    z->w_name = dup_or_null(h->name, &failed);
    z->w_comment = dup_or_null(h->comment, &failed);
    if (h->extra != NULL) {
      z->w_extra = sl__malloc(h->extra_len ? h->extra_len : 1);
      if (z->w_extra == NULL)
        failed = true;
      else if (h->extra_len)
        memcpy(z->w_extra, h->extra, h->extra_len);
    }
    if (failed)
      return SL_ENOMEM;
    z->gzh.name = (Bytef *)z->w_name;
    z->gzh.comment = (Bytef *)z->w_comment;
    z->gzh.extra = z->w_extra;
    z->gzh.extra_len = (uInt)h->extra_len;
  }
  int zr = deflateSetHeader(&z->strm, &z->gzh);
  return zr == Z_OK ? 0 : SL_EINVAL;
}

/* For sl_pgzip_new (zlib-int.h): the header sl_gzip_new writes, written
 * by zlib the same way, into a stream that is then thrown away. What
 * deflate writes for an empty input is that header, an empty last block
 * and the trailer; the header's length is known from its fields. */
int sl__gzip_header_make(const sl_gzip_header *h, int level, int strategy,
                         unsigned char **out, size_t *len) {
  size_t hlen = 10;
  unsigned char *buf;
  gz_header g;
  z_stream s;
  int zr;

  if (out == NULL || len == NULL)
    return SL_EINVAL;
  *out = NULL;
  *len = 0;
  if (level < SL_ZLIB_LEVEL_DEFAULT || level > SL_ZLIB_LEVEL_BEST ||
      strategy < SL_ZLIB_STRATEGY_DEFAULT || strategy > SL_ZLIB_STRATEGY_FIXED)
    return SL_EINVAL;
  if (h != NULL) {
    if (h->extra_len > 65535 || (h->extra == NULL && h->extra_len))
      return SL_EINVAL;
    hlen += h->extra != NULL ? 2 + h->extra_len : 0;
    hlen += h->name != NULL ? strlen(h->name) + 1 : 0;
    hlen += h->comment != NULL ? strlen(h->comment) + 1 : 0;
    hlen += h->hcrc ? 2 : 0;
  }
  if (hlen > UINT_MAX - 64)
    return SL_EINVAL;
  gzh_fill(&g, h);
  memset(&s, 0, sizeof s);
  s.zalloc = z_alloc;
  s.zfree = z_free;
  zr = deflateInit2(&s, level, Z_DEFLATED, 15 + 16, 8, strategy);
  if (zr != Z_OK)
    return zr == Z_MEM_ERROR ? SL_ENOMEM : SL_EINVAL;
  buf = sl__malloc(hlen + 64); /* + an empty last block and the trailer */
  if (buf == NULL) {
    deflateEnd(&s);
    return SL_ENOMEM;
  }
  zr = deflateSetHeader(&s, &g);
  s.next_out = buf;
  s.avail_out = (uInt)(hlen + 64);
  while (zr == Z_OK && s.avail_out > 0)
    zr = deflate(&s, Z_FINISH);
  deflateEnd(&s);
  if (zr != Z_STREAM_END || s.total_out < hlen) {
    sl__free(buf);
    return zr == Z_MEM_ERROR ? SL_ENOMEM : SL_EIO;
  }
  *out = buf;
  *len = hlen;
  return 0;
}

/* The block format's headers (zlib-int.h): the subfield goes first in
 * the extra field, so that a reader finds it at a fixed offset of every
 * member (SL__GZIP_BLOCK_LEN_AT), and the header is otherwise written by
 * sl__gzip_header_make, the one writer. */
int sl__gzip_block_header_make(const sl_gzip_header *h, int level,
                               unsigned char **out, size_t *len) {
  sl_gzip_header bh;
  unsigned char *extra;
  size_t xlen = 8;
  int rc;

  if (h != NULL) {
    if (h->extra_len > 65535 - 8 || (h->extra == NULL && h->extra_len))
      return SL_EINVAL;
    bh = *h;
    xlen += h->extra_len;
  } else {
    memset(&bh, 0, sizeof bh);
  }
  extra = sl__malloc(xlen);
  if (extra == NULL)
    return SL_ENOMEM;
  memcpy(extra, "SL\4\0\0\0\0\0", 8);
  if (h != NULL && h->extra_len)
    memcpy(extra + 8, h->extra, h->extra_len);
  bh.extra = extra;
  bh.extra_len = xlen;
  rc = sl__gzip_header_make(&bh, level > 9 ? 9 : level,
                            SL_ZLIB_STRATEGY_DEFAULT, out, len);
  sl__free(extra);
  return rc;
}

void sl__gzip_block_header_set(unsigned char *hdr, size_t hlen,
                               uint32_t member_len) {
  unsigned char *p = hdr + SL__GZIP_BLOCK_LEN_AT;

  p[0] = (unsigned char)member_len;
  p[1] = (unsigned char)(member_len >> 8);
  p[2] = (unsigned char)(member_len >> 16);
  p[3] = (unsigned char)(member_len >> 24);
  if (hdr[3] & SL_GZIP_FHCRC) {
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, hdr, (uInt)(hlen - 2));
    hdr[hlen - 2] = (unsigned char)c;
    hdr[hlen - 1] = (unsigned char)(c >> 8);
  }
}

static int zstage_new(sl_stage **out, const sl_zlib_opts *opts,
                      enum zkind kind) {
  static const sl_stage_ops comp_ops = {.transform = cz_transform,
                                        .flush = cz_flush,
                                        .sync = cz_sync,
                                        .destroy = z_destroy};
  static const sl_stage_ops decomp_ops = {.transform = dz_transform,
                                          .flush = dz_flush,
                                          .sync = dz_sync,
                                          .destroy = z_destroy};
  sl_zlib_opts o;
  zctx *z;
  int rc, zr;

  if (out == NULL)
    return SL_EINVAL;
  *out = NULL;
  if (opts != NULL)
    o = *opts;
  else
    sl_zlib_opts_init(&o);
  if (!opts_valid(&o))
    return SL_EINVAL;

  z = sl__calloc(1, sizeof *z);
  if (z == NULL)
    return SL_ENOMEM;
  if (pthread_mutex_init(&z->mu, NULL) != 0) {
    sl__free(z);
    return SL_ENOMEM;
  }
  z->kind = kind;
  z->strm.zalloc = z_alloc;
  z->strm.zfree = z_free;
  z->strm.opaque = Z_NULL;
  /* deflate cannot use a 256-byte window and writes 9 into the zlib
   * header instead; a decompressor asked for 8 takes 9 too, so that a pair
   * set up alike works. */
  z->window_bits = o.window_bits == 0   ? 15
                   : o.window_bits == 8 ? 9
                                        : o.window_bits;
  z->ignore_trailing = o.ignore_trailing != 0;

  if (is_compressor(kind)) {
    if (o.engine != SL_ZLIB_ENGINE_AUTO && o.engine != SL_ZLIB_ENGINE_ZLIB) {
      rc = SL_EINVAL; /* only zlib compresses a stream */
      goto fail;
    }
    int wbits = z->window_bits;
    if (kind == ZK_GZIP)
      wbits += 16;
    else if (kind == ZK_DEFLATE_RAW)
      wbits = -wbits;
    zr = deflateInit2(&z->strm, o.level, Z_DEFLATED, wbits,
                      o.mem_level ? o.mem_level : 8, o.strategy);
    if (zr != Z_OK) {
      rc = zr == Z_MEM_ERROR      ? SL_ENOMEM
           : zr == Z_STREAM_ERROR ? SL_EINVAL
                                  : SL_EIO;
      goto fail;
    }
    z->strm_ready = true;
  } else {
    int engine = sl__inflate_engine(o.engine, z->window_bits);
    if (engine < 0) {
      rc = engine;
      goto fail;
    }
    if ((rc = sl__inflater_new(&z->inf, engine, z->window_bits)) != 0)
      goto fail;
  }

  switch (kind) {
  case ZK_GZIP:
    if ((rc = gzip_header_set(z, o.header)) != 0)
      goto fail;
    /* fall through */
  case ZK_GUNZIP:
    z->format = SL_ZLIB_FORMAT_GZIP;
    break;
  case ZK_DEFLATE:
  case ZK_INFLATE:
    z->format = SL_ZLIB_FORMAT_ZLIB;
    break;
  case ZK_DEFLATE_RAW:
  case ZK_INFLATE_RAW:
    z->format = SL_ZLIB_FORMAT_RAW;
    break;
  case ZK_UNZIP:
    z->format = 0;
    break;
  }
  switch (kind) {
  case ZK_GUNZIP:
    member_begin(z);
    break;
  case ZK_INFLATE:
    z->state = DS_ZLIB_HEADER;
    break;
  case ZK_INFLATE_RAW:
    body_begin(z);
    break;
  default:
    z->state = DS_DETECT;
    break;
  }

  rc = sl_stage_new(out, o.name ? o.name : kind_names[kind],
                    is_compressor(kind) ? &comp_ops : &decomp_ops, z);
  if (rc != 0)
    goto fail;
  return 0;
fail:
  z_destroy(z);
  *out = NULL;
  return rc;
}

int sl__gunzip_split_new(sl_stage **out, const sl_zlib_opts *opts,
                         sl__member_end_fn end, void *arg,
                         void (*arg_free)(void *)) {
  int rc = zstage_new(out, opts, ZK_GUNZIP);

  if (rc != 0) {
    arg_free(arg);
    return rc;
  }
  zctx *z = (*out)->ctx;
  z->end = end;
  z->end_arg = arg;
  z->end_free = arg_free;
  return 0;
}

void sl__gunzip_resume(sl_stage *stage, uint64_t in_off, uint64_t nmember) {
  zctx *z = stage->ctx;

  z->in_off = in_off;
  z->nmember = nmember;
  z->state = DS_NEXT;
}

int sl_gzip_new(sl_stage **out, const sl_zlib_opts *opts) {
  return zstage_new(out, opts, ZK_GZIP);
}

int sl_gunzip_new(sl_stage **out, const sl_zlib_opts *opts) {
  return zstage_new(out, opts, ZK_GUNZIP);
}

int sl_deflate_new(sl_stage **out, const sl_zlib_opts *opts) {
  return zstage_new(out, opts, ZK_DEFLATE);
}

int sl_inflate_new(sl_stage **out, const sl_zlib_opts *opts) {
  return zstage_new(out, opts, ZK_INFLATE);
}

int sl_deflate_raw_new(sl_stage **out, const sl_zlib_opts *opts) {
  return zstage_new(out, opts, ZK_DEFLATE_RAW);
}

int sl_inflate_raw_new(sl_stage **out, const sl_zlib_opts *opts) {
  return zstage_new(out, opts, ZK_INFLATE_RAW);
}

int sl_unzip_new(sl_stage **out, const sl_zlib_opts *opts) {
  return zstage_new(out, opts, ZK_UNZIP);
}

/* The context of a zlib stage, NULL for any other stage. The ops table is
 * the stage's identity: no other stage has these functions. */
static zctx *zctx_of(sl_stage *s) {
  if (s == NULL)
    return NULL;
  if (s->ops.transform != cz_transform && s->ops.transform != dz_transform)
    return NULL;
  return s->ctx;
}

int sl_gzip_header_get(sl_stage *stage, sl_gzip_header *h) {
  zctx *z = zctx_of(stage);
  int rc = 0;

  if (z == NULL || h == NULL || (z->kind != ZK_GUNZIP && z->kind != ZK_UNZIP))
    return SL_EINVAL;
  pthread_mutex_lock(&z->mu);
  if (z->format != 0 && z->format != SL_ZLIB_FORMAT_GZIP)
    rc = SL_ENOENT;
  else if (!z->have_header)
    rc = SL_AGAIN;
  else {
    *h = z->gh.h;
    h->members = z->members;
  }
  pthread_mutex_unlock(&z->mu);
  return rc;
}

int sl_zlib_format_get(sl_stage *stage, int *format) {
  zctx *z = zctx_of(stage);
  int rc = 0;

  if (z == NULL || format == NULL)
    return SL_EINVAL;
  pthread_mutex_lock(&z->mu);
  if (z->format == 0)
    rc = SL_AGAIN;
  else
    *format = z->format;
  pthread_mutex_unlock(&z->mu);
  return rc;
}

int sl__gunzip_trailing(const sl_stage *stage, uint64_t *offset, int *garbage) {
  if (stage == NULL || stage->ops.transform != dz_transform)
    return SL_EINVAL;
  const zctx *z = stage->ctx;
  if (z->kind != ZK_GUNZIP && z->kind != ZK_UNZIP)
    return SL_EINVAL;
  if (offset != NULL)
    *offset = z->trailing ? z->trail_off : 0;
  if (garbage != NULL)
    *garbage = z->trailing && z->trail_garbage;
  return z->trailing ? 1 : 0;
}

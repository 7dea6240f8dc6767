/* SPDX-License-Identifier: MIT */
/*
 * Compression engines behind one interface (engine-int.h): zlib always,
 * ISA-L's igzip and libdeflate when configure found them.
 *
 * Inflate streams raw deflate only; the stages read the gzip and zlib
 * wrappers themselves (gzip.c), so every engine reports the same errors at
 * offsets counted the same way, and an engine's own wrapper handling
 * (which differs: ISA-L reads one gzip member, zlib checks fields
 * differently) never decides what a stream means.
 *
 * ISA-L's inflate reads its input 8 bytes at a time into a 64-bit bit
 * buffer, so when the last block ends it has taken bytes past the end of
 * the stream: the whole bytes left in the bit buffer (read_in_length / 8)
 * are handed back, and the stage reads the trailer from them. It decodes
 * a damaged stream to the same point as zlib, but the input it has taken
 * runs ahead of that point by the bit buffer's bytes, which the error's
 * offset subtracts (sl__inflater_behind).
 */
#include "engine-int.h"

#include <limits.h>
#include <string.h>

#define ZLIB_CONST
#include <zlib.h>

#ifdef HAVE_ISAL
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#endif

int sl__engine_prefer;

bool sl__engine_built(int engine) {
  switch (engine) {
  case SL_ZLIB_ENGINE_ZLIB:
    return true;
  case SL_ZLIB_ENGINE_ISAL:
#ifdef HAVE_ISAL
    return true;
#else
    return false;
#endif
  case SL_ZLIB_ENGINE_LIBDEFLATE:
#ifdef HAVE_LIBDEFLATE
    return true;
#else
    return false;
#endif
  default:
    return false;
  }
}

unsigned sl_zlib_engines(void) {
  unsigned m = 0;

  for (int e = SL_ZLIB_ENGINE_ZLIB; e <= SL_ZLIB_ENGINE_LIBDEFLATE; e++)
    if (sl__engine_built(e))
      m |= 1u << e;
  return m;
}

const char *sl_zlib_engine_name(int engine) {
  switch (engine) {
  case SL_ZLIB_ENGINE_AUTO:
    return "auto";
  case SL_ZLIB_ENGINE_ZLIB:
    return "zlib";
  case SL_ZLIB_ENGINE_ISAL:
    return "isal";
  case SL_ZLIB_ENGINE_LIBDEFLATE:
    return "libdeflate";
  default:
    return NULL;
  }
}

uint32_t sl__crc32(uint32_t crc, const void *p, size_t n) {
#ifdef HAVE_ISAL
  return crc32_gzip_refl(crc, (const unsigned char *)p, (uint64_t)n);
#else
  const unsigned char *b = p;
  while (n > 0) {
    uInt k = n > UINT_MAX ? UINT_MAX : (uInt)n;
    crc = (uint32_t)crc32(crc, b, k);
    b += k;
    n -= k;
  }
  return crc;
#endif
}

int sl__inflate_engine(int engine, int window_bits) {
  switch (engine) {
  case SL_ZLIB_ENGINE_AUTO:
    if (sl__engine_prefer != 0 &&
        sl__inflate_engine(sl__engine_prefer, window_bits) > 0)
      return sl__engine_prefer;
    return sl__engine_built(SL_ZLIB_ENGINE_ISAL) && window_bits == 15
               ? SL_ZLIB_ENGINE_ISAL
               : SL_ZLIB_ENGINE_ZLIB;
  case SL_ZLIB_ENGINE_ZLIB:
    return engine;
  case SL_ZLIB_ENGINE_ISAL:
    /* ISA-L resolves any distance up to 32 KiB: it cannot refuse one
     * beyond a smaller window as the format asks. */
    return sl__engine_built(engine) && window_bits == 15 ? engine : SL_EINVAL;
  default:
    return SL_EINVAL; /* libdeflate has no streaming inflate */
  }
}

struct sl__inflater {
  int engine;
  z_stream z;
#ifdef HAVE_ISAL
  struct inflate_state *isal;
#endif
  size_t behind;
  unsigned char left[8]; /* read past the end of the stream (ISA-L) */
  unsigned nleft;
};

static voidpf e_zalloc(voidpf opaque, uInt items, uInt size) {
  (void)opaque;
  if (size != 0 && items > SIZE_MAX / size)
    return Z_NULL;
  return sl__malloc((size_t)items * size);
}

static void e_zfree(voidpf opaque, voidpf ptr) {
  (void)opaque;
  sl__free(ptr);
}

int sl__inflater_new(sl__inflater **out, int engine, int window_bits) {
  sl__inflater *inf = sl__calloc(1, sizeof *inf);

  *out = NULL;
  if (inf == NULL)
    return SL_ENOMEM;
  inf->engine = engine;
  switch (engine) {
  case SL_ZLIB_ENGINE_ZLIB: {
    inf->z.zalloc = e_zalloc;
    inf->z.zfree = e_zfree;
    int zr = inflateInit2(&inf->z, -window_bits);
    if (zr != Z_OK) {
      sl__free(inf);
      return zr == Z_MEM_ERROR ? SL_ENOMEM : SL_EINVAL;
    }
    break;
  }
#ifdef HAVE_ISAL
  case SL_ZLIB_ENGINE_ISAL:
    inf->isal = sl__malloc(sizeof *inf->isal);
    if (inf->isal == NULL) {
      sl__free(inf);
      return SL_ENOMEM;
    }
    isal_inflate_init(inf->isal);
    inf->isal->crc_flag = ISAL_DEFLATE;
    break;
#endif
  default:
    sl__free(inf);
    return SL_EINVAL;
  }
  *out = inf;
  return 0;
}

void sl__inflater_free(sl__inflater *inf) {
  if (inf == NULL)
    return;
  if (inf->engine == SL_ZLIB_ENGINE_ZLIB)
    inflateEnd(&inf->z);
#ifdef HAVE_ISAL
  sl__free(inf->isal);
#endif
  sl__free(inf);
}

void sl__inflater_reset(sl__inflater *inf) {
  inf->behind = 0;
  inf->nleft = 0;
  if (inf->engine == SL_ZLIB_ENGINE_ZLIB) {
    inflateReset(&inf->z);
    return;
  }
#ifdef HAVE_ISAL
  isal_inflate_reset(inf->isal);
  inf->isal->crc_flag = ISAL_DEFLATE;
#endif
}

size_t sl__inflater_behind(const sl__inflater *inf) {
  return inf->behind;
}

size_t sl__inflater_leftover(sl__inflater *inf, unsigned char out[8]) {
  size_t n = inf->nleft;

  memcpy(out, inf->left, n);
  inf->nleft = 0;
  return n;
}

#ifdef HAVE_ISAL
static const char *isal_message(int r) {
  switch (r) {
  case ISAL_INVALID_BLOCK:
    return "invalid block type";
  case ISAL_INVALID_SYMBOL:
    return "invalid code";
  case ISAL_INVALID_LOOKBACK:
    return "invalid distance too far back";
  default:
    return "invalid deflate data";
  }
}

static int isal_run(sl__inflater *inf, const unsigned char *in, size_t *in_len,
                    unsigned char *out, size_t *out_len, const char **msg) {
  struct inflate_state *s = inf->isal;
  uint32_t in_now = *in_len > UINT32_MAX ? UINT32_MAX : (uint32_t)*in_len;
  uint32_t room = *out_len > UINT32_MAX ? UINT32_MAX : (uint32_t)*out_len;

  s->next_in = (uint8_t *)(uintptr_t)in;
  s->avail_in = in_now;
  s->next_out = out;
  s->avail_out = room;
  int r = isal_inflate(s);
  size_t took = in_now - s->avail_in;
  *out_len = room - s->avail_out;
  inf->behind = (size_t)(s->read_in_length > 0 ? s->read_in_length / 8 : 0) +
                (size_t)(s->tmp_in_size > 0 ? s->tmp_in_size : 0);
  if (r < 0) {
    *in_len = took;
    *msg = isal_message(r);
    return SL__INF_DATA;
  }
  if (s->block_state == ISAL_BLOCK_FINISH) {
    /* Whole bytes in the bit buffer lie past the stream's end; they may
     * have come with an earlier call's input, so they are handed back as
     * bytes (the low bits of read_in come first in the stream). */
    int bits = s->read_in_length > 0 ? s->read_in_length : 0;
    uint64_t v = s->read_in >> (bits % 8);
    inf->nleft = 0;
    for (int i = 0; i < bits / 8 && i < 8; i++)
      inf->left[inf->nleft++] = (unsigned char)(v >> (8 * i));
    *in_len = took;
    inf->behind = 0;
    return SL__INF_END;
  }
  *in_len = took;
  return SL__INF_OK;
}
#endif

int sl__inflate(sl__inflater *inf, const unsigned char *in, size_t *in_len,
                unsigned char *out, size_t *out_len, const char **msg) {
#ifdef HAVE_ISAL
  if (inf->engine == SL_ZLIB_ENGINE_ISAL)
    return isal_run(inf, in, in_len, out, out_len, msg);
#endif
  z_stream *z = &inf->z;
  uInt in_now = *in_len > UINT_MAX ? UINT_MAX : (uInt)*in_len;
  uInt room = *out_len > UINT_MAX ? UINT_MAX : (uInt)*out_len;

  z->next_in = in;
  z->avail_in = in_now;
  z->next_out = out;
  z->avail_out = room;
  int zr = inflate(z, Z_NO_FLUSH);
  size_t took = in_now - z->avail_in;
  *out_len = room - z->avail_out;
  switch (zr) {
  case Z_STREAM_END: {
    /* Whole bytes inflate read ahead are not part of the stream. */
    size_t ahead = (size_t)(z->data_type & 63) >> 3;
    *in_len = ahead <= took ? took - ahead : took;
    return SL__INF_END;
  }
  case Z_OK:
  case Z_BUF_ERROR: /* no progress: input used up, nothing pending */
    *in_len = took;
    return SL__INF_OK;
  case Z_DATA_ERROR:
    *in_len = took;
    *msg = z->msg ? z->msg : "invalid deflate data";
    return SL__INF_DATA;
  case Z_NEED_DICT: /* not in raw mode */
    *in_len = took;
    *msg = "preset dictionary required";
    return SL__INF_DATA;
  case Z_MEM_ERROR:
    return SL_ENOMEM;
  default:
    return SL_EIO;
  }
}

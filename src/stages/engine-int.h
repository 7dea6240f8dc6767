/* SPDX-License-Identifier: MIT */
/*
 * Compression engines: one interface to the libraries that do deflate's
 * work, for every stage that compresses or decompresses (zlib.c, pgzip.c).
 * zlib is always there; ISA-L (HAVE_ISAL) and libdeflate (HAVE_LIBDEFLATE)
 * when configure found them. The stages own the formats (gzip-int.h); an
 * engine only turns raw deflate data into bytes and back. Not installed.
 */
#ifndef SLUICE_ENGINE_INT_H
#define SLUICE_ENGINE_INT_H

#include "sluice-int.h"

#include <sluice/zlib.h>

/* Is engine (SL_ZLIB_ENGINE_*, not AUTO) built into this library? */
bool sl__engine_built(int engine);

/* The CRC-32 of gzip (zlib's crc32) of p[0..n) continued from crc, on the
 * fastest engine built in (ISA-L's folding CRC when there). Any thread. */
uint32_t sl__crc32(uint32_t crc, const void *p, size_t n);

/* Tests only: when nonzero, an AUTO choice resolves to this engine
 * wherever that engine can do the job. Set before any stage is made. */
extern int sl__engine_prefer;

/* The engine a streaming raw inflate with window_bits (9..15) runs on for
 * the choice engine (SL_ZLIB_ENGINE_*). AUTO: ISA-L when built in and the
 * window is 15 (ISA-L keeps the whole 32 KiB window; a smaller one is
 * zlib's to enforce), else zlib. Returns the engine, or SL_EINVAL when
 * engine is out of range, not built in or cannot stream (libdeflate). */
int sl__inflate_engine(int engine, int window_bits);

/* A streaming raw deflate decoder. */
typedef struct sl__inflater sl__inflater;

/* What sl__inflate returns. */
enum {
  SL__INF_OK = 0,  /* progress; give it more input or more room */
  SL__INF_END = 1, /* the last deflate block has ended */
  SL__INF_DATA = 2 /* damaged data: *msg says what */
};

/* Make a decoder on engine (as sl__inflate_engine resolved it) for
 * window_bits. Returns 0, SL_ENOMEM, SL_EINVAL. Any thread. */
int sl__inflater_new(sl__inflater **out, int engine, int window_bits);

/* Free it (NULL: nothing). */
void sl__inflater_free(sl__inflater *inf);

/* Ready for a new deflate stream (the next gzip member). */
void sl__inflater_reset(sl__inflater *inf);

/* Inflate from in[0..*in_len) into out[0..*out_len). On return *in_len
 * holds the bytes of input taken and *out_len the bytes written. At END
 * an engine that read past the stream's last byte hands those bytes
 * (at most 8) back through sl__inflater_leftover, to be read again as
 * what follows the stream; zlib's *in_len stops at the last byte. On DATA
 * *msg says what, and the damage was found at the byte
 * sl__inflater_behind() bytes before the last one taken. Returns
 * SL__INF_*, or SL_EIO (an engine's internal error). The stage's thread. */
int sl__inflate(sl__inflater *inf, const unsigned char *in, size_t *in_len,
                unsigned char *out, size_t *out_len, const char **msg);

/* Bytes taken but not yet decoded (an engine's read-ahead): 0 for zlib,
 * whose bit buffer holds less than a byte between calls. */
size_t sl__inflater_behind(const sl__inflater *inf);

/* After SL__INF_END: copy into out the bytes taken past the end of the
 * stream (to be read again, before the rest of the input); returns how
 * many, 0 to 8. Call before sl__inflater_reset. */
size_t sl__inflater_leftover(sl__inflater *inf, unsigned char out[8]);

#endif

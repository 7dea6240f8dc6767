/* SPDX-License-Identifier: MIT */
/*
 * sluice/zlib.h — compression stages: gzip, zlib and raw deflate.
 *
 * Seven transform stages on zlib, the counterparts of Node's zlib streams:
 *
 *   sl_gzip_new         createGzip         deflate in a gzip wrapper
 *   sl_gunzip_new       createGunzip       gzip, every member of the input
 *   sl_deflate_new      createDeflate      deflate in a zlib wrapper
 *   sl_inflate_new      createInflate      zlib
 *   sl_deflate_raw_new  createDeflateRaw   deflate, no wrapper
 *   sl_inflate_raw_new  createInflateRaw   raw deflate
 *   sl_unzip_new        createUnzip        gzip, zlib or raw, told apart by
 *                                          the first two bytes
 *
 * Each is an ordinary stage: chain it with sl_pipeline_chain, and the
 * pipeline owns it from then on. Its output leaves in pooled buffers
 * through sl_stage_push, which waits while the output ring is full, so a
 * decompression bomb (a few kilobytes that inflate to gigabytes) is paused
 * by backpressure like any other fast producer: memory stays bounded by the
 * marks, never by the size of the output.
 *
 * Compressors keep their output until a pooled buffer is full, a flush
 * marker arrives (sl_stage_push_flush upstream) or the stream ends. At a
 * marker they end the current deflate block with a sync flush and push
 * everything they hold, so what came before the marker can be decompressed
 * downstream at once; the marker then goes on. At the end of the stream
 * they finish the stream and push the rest; an empty input gives a valid
 * stream of empty content.
 *
 * Decompressors push what every input chunk yields before they take the
 * next one. They read the gzip and zlib wrappers themselves and check
 * every field and check value, so each error names the offset in the
 * compressed input where it was found: the stage fails with SL_EDATA and
 * the pipeline reports, for example,
 *
 *   gunzip: invalid distance too far back at input byte 1048573
 *   gunzip: crc32 mismatch at input byte 123 (stored 0x..., computed 0x...)
 *   gunzip: truncated input at byte 4711
 *
 * Offsets count from 0 at the first byte of the stage's input, across
 * every gzip member. "Truncated input at byte N" means the input ended
 * after N bytes, inside a stream. For damaged deflate data the offset is
 * that of the last byte inflate had read when it found the damage.
 *
 * The stages allocate through the library's allocator hook
 * (sl_set_allocator), zlib's state included.
 */
/* The umbrella first, outside the guard: whichever header a program
 * includes first, every sub-header is read after the core and in the
 * umbrella's order, so each finds the types it uses. */
#include <sluice.h>

#ifndef SLUICE_ZLIB_H
#define SLUICE_ZLIB_H

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------- */

/* Compression levels: 0 stores without compressing, 1 is the fastest, 9
 * the smallest. The default is zlib's, level 6. */
#define SL_ZLIB_LEVEL_DEFAULT (-1)
#define SL_ZLIB_LEVEL_STORE 0
#define SL_ZLIB_LEVEL_FASTEST 1
#define SL_ZLIB_LEVEL_BEST 9

/* Strategies, zlib's, with zlib's values. They change the size of the
 * output, never its correctness. */
#define SL_ZLIB_STRATEGY_DEFAULT 0  /* normal data */
#define SL_ZLIB_STRATEGY_FILTERED 1 /* small values, e.g. from a predictor */
#define SL_ZLIB_STRATEGY_HUFFMAN_ONLY 2 /* no string matching */
#define SL_ZLIB_STRATEGY_RLE 3          /* matches at distance one only */
#define SL_ZLIB_STRATEGY_FIXED 4        /* no dynamic Huffman codes */

/* The format of a stage's stream (sl_zlib_format_get). */
enum sl_zlib_format {
  SL_ZLIB_FORMAT_GZIP = 1, /* RFC 1952 */
  SL_ZLIB_FORMAT_ZLIB = 2, /* RFC 1950 */
  SL_ZLIB_FORMAT_RAW = 3   /* RFC 1951, no wrapper */
};

typedef struct sl_gzip_header sl_gzip_header;

/* Engines: the libraries that do deflate's work under a stage
 * (sl_zlib_opts.engine, sl_pgzip_opts.engine). zlib is always built in;
 * ISA-L (Intel's igzip) and libdeflate when the library was configured
 * with them (sl_zlib_engines). Every engine reads and writes the same
 * formats: the choice changes speed and the compressed bytes, never what
 * they decompress to, nor the messages and offsets of errors in the gzip
 * and zlib wrappers, which the stages read themselves. */
enum sl_zlib_engine {
  /* The fastest engine built in that keeps the stage's promises: for
   * streaming decompression ISA-L, with the default window (a smaller
   * window needs zlib, which enforces it), else zlib; for sl_pgzip_new,
   * ISA-L at levels 1 to 3, else zlib. */
  SL_ZLIB_ENGINE_AUTO = 0,
  SL_ZLIB_ENGINE_ZLIB = 1,
  /* ISA-L: streaming raw inflate (window 15 only); in sl_pgzip_new,
   * levels 0 to 3. */
  SL_ZLIB_ENGINE_ISAL = 2,
  /* libdeflate: whole-buffer compression (no stage uses it yet). */
  SL_ZLIB_ENGINE_LIBDEFLATE = 3
};

/* The engines built into this library: bit (1u << e) set for each
 * SL_ZLIB_ENGINE_* e that is (SL_ZLIB_ENGINE_ZLIB always). Any thread. */
SL_EXTERN unsigned sl_zlib_engines(void);

/* The name of engine e ("auto", "zlib", "isal", "libdeflate"), static;
 * NULL for a value out of range. Any thread. */
SL_EXTERN const char *sl_zlib_engine_name(int engine);

/* Options of every zlib stage; a field that does not apply to a stage is
 * ignored by it, but must still be in range. Start from sl_zlib_opts_init,
 * which sets every default, or pass NULL for all of them. Beware: a struct
 * zeroed by hand asks for level 0, which stores without compressing; every
 * other field's zero is its default. */
typedef struct sl_zlib_opts {
  /* The stage's name, copied: shown in errors and statistics. NULL gives
   * the kind: "gzip", "gunzip", "deflate", "inflate", "deflate-raw",
   * "inflate-raw" or "unzip". */
  const char *name;

  /* Compressors: 0..9 or SL_ZLIB_LEVEL_DEFAULT. */
  int level;

  /* Compressors: an SL_ZLIB_STRATEGY_* value. */
  int strategy;

  /* Base-two logarithm of the window, 8..15; 0 means 15. 8 is taken as 9
   * on both sides: zlib's compressor has no 256-byte window. A
   * decompressor fails (SL_EDATA) on a zlib header that asks for a larger
   * window than this, and on gzip or raw data where a match reaches
   * further back than it keeps: keep 15, the default, to read anything. */
  int window_bits;

  /* Compressors: memory for the internal state, 1 (least, slow) to 9
   * (most, fast); 0 means 8, zlib's default. */
  int mem_level;

  /* Decompressors: nonzero ignores whatever follows the end of the stream
   * (for gzip, the last member) instead of failing with SL_EDATA. For
   * gzip, bytes that begin with the gzip magic (1f 8b) are another member
   * and must be a valid one; anything else ends the stream. */
  int ignore_trailing;

  /* sl_gzip_new: the name, comment, extra field, mtime, text and hcrc to
   * write into the gzip header (see sl_gzip_header), copied; NULL writes
   * a bare header (mtime 0, no name). Ignored by other stages. */
  const sl_gzip_header *header;

  /* An SL_ZLIB_ENGINE_* value; 0, SL_ZLIB_ENGINE_AUTO, by default. A
   * constructor fails with SL_EINVAL on an engine that is not built in
   * or cannot do the stage's job: today the compressors run on zlib only
   * (AUTO or ZLIB), the decompressors on zlib or ISA-L (window_bits 15). */
  int engine;
} sl_zlib_opts;

/* Fill *opts with the defaults: name NULL, level SL_ZLIB_LEVEL_DEFAULT,
 * strategy SL_ZLIB_STRATEGY_DEFAULT, window_bits 15, mem_level 8,
 * ignore_trailing 0, header NULL, engine SL_ZLIB_ENGINE_AUTO. Returns 0, or
 * SL_EINVAL when opts is NULL. Any thread. */
SL_EXTERN int sl_zlib_opts_init(sl_zlib_opts *opts);

/* ------------------------------------------------------------------------
 * The gzip header
 * ---------------------------------------------------------------------- */

/* Bits of the FLG byte of a gzip header (RFC 1952). Bits 5 to 7 are
 * reserved: a decompressor fails on them. */
#define SL_GZIP_FTEXT 0x01u
#define SL_GZIP_FHCRC 0x02u
#define SL_GZIP_FEXTRA 0x04u
#define SL_GZIP_FNAME 0x08u
#define SL_GZIP_FCOMMENT 0x10u

/* A decompressor keeps at most this many bytes of a name or a comment,
 * the terminating zero included; the rest is read and checked but not
 * kept, and the field's bit is set in sl_gzip_header.truncated. */
#define SL_GZIP_FIELD_MAX 65536

/* The header of a gzip member. Read with sl_gzip_header_get, written
 * through sl_zlib_opts.header. */
struct sl_gzip_header {
  /* Read: the FLG byte, SL_GZIP_F* bits. Ignored when writing: the fields
   * below decide it. */
  unsigned flags;
  /* FTEXT: nonzero when the compressor believed the content to be text. */
  int text;
  /* MTIME: seconds since 1970-01-01 UTC; 0 means none. */
  uint32_t mtime;
  /* Read: XFL (2: the slowest, best compression; 4: the fastest). Ignored
   * when writing: zlib sets it from the level. */
  unsigned xfl;
  /* Read: OS (0: FAT, 3: Unix, 7: Macintosh, 11: NTFS, 255: unknown...).
   * Ignored when writing: sluice writes 3 (Unix). */
  unsigned os;
  /* FEXTRA: extra_len bytes (at most 65535), or NULL when absent. */
  const unsigned char *extra;
  size_t extra_len;
  /* FNAME: the original file name, zero-terminated, or NULL. */
  const char *name;
  /* FCOMMENT: a comment, zero-terminated, or NULL. */
  const char *comment;
  /* FHCRC: nonzero when the header carries a CRC16 (read: it was there and
   * it matched). */
  int hcrc;
  /* Read: SL_GZIP_FNAME and/or SL_GZIP_FCOMMENT when that field was longer
   * than SL_GZIP_FIELD_MAX - 1 bytes and only its start was kept. */
  unsigned truncated;
  /* Read: members read to the end and verified so far (header, data, CRC32
   * and ISIZE); the total once the stage has ended cleanly. Ignored when
   * writing. */
  uint64_t members;
};

/* Parse the gzip member header at the start of buf[0..len), as every
 * gunzip stage reads it (magic, method 8, reserved flag bits clear, the
 * header CRC16 when present), for a program that needs a file's stored
 * name or time without running a pipeline. On 0, *h holds the header:
 * name, comment and extra point into buf (the name and comment with their
 * terminating zero), valid as long as buf is; truncated and members are
 * 0. *hdr_len (may be NULL) gets the header's length in bytes: the
 * deflate data starts there. Any thread.
 * Returns 0; SL_AGAIN when buf ends inside the header (read more and call
 * again with the whole of it); SL_EDATA when buf does not start with a
 * valid gzip header; SL_EINVAL when h is NULL, or buf NULL with len > 0. */
SL_EXTERN int sl_gzip_header_parse(const void *buf, size_t len,
                                   sl_gzip_header *h, size_t *hdr_len);

/* ------------------------------------------------------------------------
 * Stages
 *
 * Every constructor: on success *out owns a new transform stage (free it
 * with sl_stage_free, or chain it and the pipeline frees it); opts may be
 * NULL for the defaults and is not kept (strings are copied). Returns 0;
 * SL_EINVAL when out is NULL, a field of opts is out of range (level,
 * strategy, window_bits, mem_level, an empty name, a header extra field
 * longer than 65535 bytes or extra_len without extra); SL_ENOMEM, leaving
 * nothing allocated. *out is NULL on failure. Any thread.
 *
 * While running, a stage fails with SL_EDATA on bad input (the message
 * names the input offset, see the top of this file), SL_ENOMEM when zlib
 * cannot get memory, or what sl_stage_push returned.
 * ---------------------------------------------------------------------- */

/* Compress into a gzip stream: one member, whose header holds what
 * opts->header gives. */
SL_EXTERN int sl_gzip_new(sl_stage **out, const sl_zlib_opts *opts);

/* Decompress a gzip stream of one or more members (the concatenation of
 * their contents, as gzip -d does). Every header field is read and checked:
 * the magic, the method (8), the reserved flag bits (must be clear), the
 * header CRC16 when present; then the data, the CRC32 and the ISIZE of
 * every member. The first member's header can be read with
 * sl_gzip_header_get; later members' headers are checked and counted but
 * not kept. After the last member only the end of the input may follow,
 * unless opts->ignore_trailing. An empty input is a truncated stream. */
SL_EXTERN int sl_gunzip_new(sl_stage **out, const sl_zlib_opts *opts);

/* Compress into a zlib stream (a two-byte header, deflate data, Adler-32):
 * what Node calls deflate and HTTP "Content-Encoding: deflate". */
SL_EXTERN int sl_deflate_new(sl_stage **out, const sl_zlib_opts *opts);

/* Decompress one zlib stream: header check, data, Adler-32. A stream that
 * needs a preset dictionary fails with SL_EDATA. */
SL_EXTERN int sl_inflate_new(sl_stage **out, const sl_zlib_opts *opts);

/* Compress into raw deflate data, without header or check value. */
SL_EXTERN int sl_deflate_raw_new(sl_stage **out, const sl_zlib_opts *opts);

/* Decompress raw deflate data, up to its last block. There is no check
 * value: damage shows only where it breaks the deflate format. */
SL_EXTERN int sl_inflate_raw_new(sl_stage **out, const sl_zlib_opts *opts);

/* Decompress gzip (every member, as sl_gunzip_new), zlib (as
 * sl_inflate_new) or raw deflate (as sl_inflate_raw_new), told apart by
 * the first two bytes: 1f 8b is gzip; a valid zlib header (method 8,
 * window at most 2^15, header check) is zlib; anything else is raw
 * deflate, which zlib's compressor never starts with either of those.
 * sl_zlib_format_get tells what was found. */
SL_EXTERN int sl_unzip_new(sl_stage **out, const sl_zlib_opts *opts);

/* ------------------------------------------------------------------------
 * Reading what a stage found
 * ---------------------------------------------------------------------- */

/* Copy into *h the header of the first gzip member that stage (made by
 * sl_gunzip_new, or sl_unzip_new once it found gzip) has read, and the
 * count of members verified so far. The pointers in *h (name, comment,
 * extra) point into the stage and stay valid, unchanged, until the stage
 * is freed (sl_stage_free, sl_pipeline_free); members is a snapshot. Any
 * thread, while the pipeline runs or after it has ended.
 * Returns 0; SL_AGAIN when the stage has not read a whole header (yet, or
 * ever: the input ended or failed before); SL_ENOENT when an unzip stage
 * found zlib or raw data; SL_EINVAL when stage or h is NULL, or stage is
 * not a gunzip or unzip stage. */
SL_EXTERN int sl_gzip_header_get(sl_stage *stage, sl_gzip_header *h);

/* Set *format to the stage's stream format (enum sl_zlib_format): fixed
 * for every zlib stage but unzip, which knows it once it has read the
 * first two bytes of its input. Any thread. Returns 0; SL_AGAIN when an
 * unzip stage has not decided yet; SL_EINVAL when stage or format is NULL
 * or stage is not a zlib stage. */
SL_EXTERN int sl_zlib_format_get(sl_stage *stage, int *format);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_ZLIB_H */

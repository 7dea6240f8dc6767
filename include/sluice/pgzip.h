/* SPDX-License-Identifier: MIT */
/*
 * sluice/pgzip.h — parallel gzip: pigz's scheme on a pool of workers, and
 * a gunzip whose check runs on a thread of its own.
 *
 * Compression (sl_pgzip_new). The input is cut into blocks of block_size
 * bytes (128 KiB by default). Each block is compressed by a worker thread
 * as raw deflate, with the last 32 KiB of the block before it as a preset
 * dictionary, and ended with a sync flush (the last block with a finish),
 * so that every block's output ends on a byte boundary and the outputs,
 * joined in order, form one deflate stream. A block that looks
 * incompressible (compressed or encrypted data) is written as stored
 * blocks without a search for matches, which deflate would make only to
 * store it too (see deflate_incompressible). Each worker also computes the
 * CRC-32 of its block; the stage's own thread merges them in order with
 * crc32_combine. Out comes one standard gzip member: header, the blocks,
 * trailer, readable by gzip(1), pigz, zlib and sl_gunzip_new. That is
 * pigz's format; the block format writes a member per block instead (enum
 * sl_pgzip_format), and is what the defaults pick where libdeflate is
 * built in.
 *
 * The output is a function of the input, the options (level, memory level,
 * block size, deflate_incompressible) and the positions of flush markers
 * in the stream, never of the number of workers or of how the input was cut
 * into chunks: one worker or eight give the same bytes. It is not the stream
 * sl_gzip_new writes (that one has no block boundaries), but its size is within
 * about 1% of it: each block starts its matching with only the 32 KiB of
 * history a deflate window holds anyway, and ends with a sync flush of 4 or 5
 * bytes.
 *
 * Threads and memory. The stage's thread cuts blocks, hands them to the
 * workers and pushes the results in order; at most in_flight blocks are
 * being compressed or wait for a worker, at most in_flight + extra for
 * their turn to be pushed (extra: 2 * (workers - 4), none below 5
 * workers), and a full stage stops taking input, so backpressure runs
 * through it like through any stage. The stage holds about (in_flight +
 * 2) blocks of input and in_flight + extra compressed blocks, plus per
 * worker a deflate state (384 KiB at the default mem_level), an output
 * area of one block and 16 KiB to look for repeats in blocks that seem
 * incompressible: bounded by the options, never by the size of the
 * input. Blocks come from the pipeline's
 * pool; a pool recycles buffers up to its buffer size
 * (sl_pipeline_opts.buf_size, 64 KiB by default), so set that to at least
 * block_size when allocations matter.
 *
 * Decompression (sl_pgunzip_chain). gzip's format cannot be inflated in
 * parallel (a block's matches reach into the blocks before it), but the
 * work around the inflate can leave its thread: the helper puts two
 * stages into a pipeline, one that reads the gzip wrappers and inflates,
 * one that computes the CRC-32 of what comes out and compares it with the
 * trailers, so that reading, inflating, checking and writing each run on
 * a thread of their own.
 *
 * Block files decompress in parallel. A gzip member whose header carries
 * its own length in an FEXTRA subfield (the block format: SI1 'S', SI2
 * 'L', LEN 4, the member's length from its first byte to the end of its
 * trailer as a little-endian uint32; or BGZF's SI1 'B', SI2 'C', LEN 2,
 * the length - 1, which bgzip and htslib write) can be read whole without
 * inflating it; when every member is one of those (each with a deflate
 * stream of its own, as both formats require), the members are inflated on
 * a pool of workers and their outputs pushed in order.
 *
 * Included by <sluice.h>.
 */
/* The umbrella first, outside the guard: whichever header a program
 * includes first, every sub-header is read after the core and in the
 * umbrella's order, so each finds the types it uses. */
#include <sluice.h>

#ifndef SLUICE_PGZIP_H
#define SLUICE_PGZIP_H
#include <sluice/map.h>
#include <sluice/zlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Block sizes: the default of the pigz format (pigz's), the default of
 * the block format, the smallest (one dictionary's worth) and the
 * largest. */
#define SL_PGZIP_BLOCK_DEFAULT ((size_t)128 << 10)
#define SL_PGZIP_BLOCKS_DEFAULT ((size_t)1 << 20)
#define SL_PGZIP_BLOCK_MIN ((size_t)32 << 10)
#define SL_PGZIP_BLOCK_MAX ((size_t)256 << 20)

/* What sl_pgzip_new writes (sl_pgzip_opts.format).
 *
 * PIGZ: pigz's format, one gzip member whose blocks are chained by their
 * 32 KiB dictionaries (described at the top of this header); the bytes
 * sluice has always written, on zlib or ISA-L.
 *
 * BLOCKS: the block format. Every block is a gzip member of its own: a
 * fresh raw deflate stream (no history from the block before, so any
 * member can be inflated alone, on any thread) between a header and a
 * trailer with the block's CRC-32 and length. Every member's header has
 * FEXTRA set, and its extra field starts with the subfield SI1 'S' (0x53),
 * SI2 'L' (0x4c), LEN 4, whose data is the member's total length in bytes
 * (from its first byte to the last of its trailer), little-endian: XLEN
 * is 8, plus the caller's own extra subfields in the first member, which
 * follow ours. The first member carries the header the options give
 * (mtime, name, comment, extra); every later one a bare header (mtime 0,
 * no name, XFL from the level, OS 3). Blocks are cut at fixed offsets of
 * the input and at flush markers, and an empty input gives one member of
 * empty content, so the bytes depend on the input, level, engine and
 * block size alone. Every gzip reader that reads several members reads
 * it as one stream (the members' contents joined), as RFC 1952 asks; one
 * that stops after the first (curl's and some browsers' decoders of an
 * HTTP body) needs PIGZ. A reader that knows the subfield (as BGZF's
 * 'B' 'C' subfield, whose 16-bit length caps BGZF's blocks at 64 KiB)
 * can hand whole members to several threads, from a pipe as well as from
 * a file. It costs a header and trailer (28 bytes) and a cold start of
 * the match history per block: with the default 1 MiB blocks a few
 * tenths of a percent against chaining them, which libdeflate's better
 * parsing more than makes up for.
 *
 * AUTO (0, the default): what measurement picked for the level and the
 * engine (see sl_pgzip_opts.engine): BLOCKS when the engine is libdeflate
 * (named, or chosen by AUTO), PIGZ otherwise. sl_pgzip_opts_resolve says
 * which. */
enum sl_pgzip_format {
  SL_PGZIP_FORMAT_AUTO = 0,
  SL_PGZIP_FORMAT_PIGZ = 1,
  SL_PGZIP_FORMAT_BLOCKS = 2
};

/* Options of sl_pgzip_new. Start from sl_pgzip_opts_init, which sets
 * every default, or pass NULL for all of them. Beware: as with
 * sl_zlib_opts, a struct zeroed by hand asks for level 0 (stored blocks,
 * no compression); every other field's zero is its default. */
typedef struct sl_pgzip_opts {
  /* The stage's name, copied: shown in errors, statistics and the thread
   * names. NULL: "pgzip". */
  const char *name;

  /* 0 (store) .. 9 (smallest), or SL_ZLIB_LEVEL_DEFAULT (-1), which is
   * 6. On libdeflate (the block format only) 0 .. 12, libdeflate's own
   * levels: 10 to 12 are slower still and a little smaller than 9; any
   * other engine refuses them. */
  int level;

  /* zlib's memLevel for every worker's deflate state, 1 .. 9; 0 means 9.
   * 9 (not zlib's default of 8) doubles the hash table and the symbol
   * buffer: 128 KiB more per worker, for fewer chain collisions and
   * longer deflate blocks. Measured on mixed text and binary: about 7%
   * less CPU at level 1, 0 to 2% at 6 and 9 depending on the processor,
   * and output a little smaller. pigz uses 8. It is part of what the
   * output is a function of. */
  int mem_level;

  /* Bytes per block, SL_PGZIP_BLOCK_MIN .. SL_PGZIP_BLOCK_MAX; 0: the
   * format's default, SL_PGZIP_BLOCK_DEFAULT (128 KiB) for PIGZ and
   * SL_PGZIP_BLOCKS_DEFAULT (1 MiB) for BLOCKS. Larger blocks compress a
   * little better and cost more memory and a later first output; smaller
   * ones spread a small input over more workers. In the block format a
   * block is also what a parallel reader holds whole, per worker. */
  size_t block_size;

  /* Worker threads, 1 .. SL_MAP_MAX_WORKERS; 0: sl_cpu_count(). */
  unsigned workers;

  /* Blocks being compressed or waiting for a worker at once: the memory
   * bound. At least 1; 0: 2 * workers + 2, which keeps every worker busy.
   * With more than 4 workers, finished results may wait for a slower
   * block ahead of them in 2 * (workers - 4) more places, while the
   * workers go on with the blocks behind it. */
  unsigned in_flight;

  /* Nonzero: deflate every block. By default a block of at least 16 KiB
   * that looks incompressible (compressed or encrypted data: bytes close
   * to uniform, no repeats worth a match) is written as stored deflate
   * blocks, the bytes zlib writes at level 0, without the search for
   * matches that deflate would make only to store it: several times
   * faster on such data, at most a few tenths of a percent larger on
   * the blocks so judged (in practice the same size: zlib stores them
   * too). Level 0 stores every block anyway. */
  int deflate_incompressible;

  /* The name, comment, extra field, mtime, text and hcrc to write into the
   * gzip header, as sl_zlib_opts.header (copied); NULL writes a bare
   * header (mtime 0, no name). For the same header and level the stage
   * writes exactly the header sl_gzip_new writes: XFL from the level, OS
   * 3 (Unix). */
  const sl_gzip_header *header;

  /* The engine that compresses the blocks (enum sl_zlib_engine). ZLIB:
   * every level 0 to 9, either format. ISAL (when built in): levels 0 to
   * 3, ISA-L's own levels; in pigz's format each block a fresh ISA-L
   * stream primed with the 32 KiB before it (isal_deflate_set_dict) and
   * ended with a sync flush, as with zlib; at level 0 ISA-L compresses
   * (its fastest level) where zlib stores. LIBDEFLATE (when built in):
   * levels 0 to 12, the block format only (libdeflate compresses a whole
   * buffer, with no dictionary to chain blocks with; pigz's format with
   * it is SL_EINVAL); each worker makes one compressor and compresses
   * each block whole. In the block format every engine compresses each
   * block as a fresh raw deflate stream, ended, with no dictionary.
   *
   * AUTO (0, the default), with format AUTO: by measurement (sgzip(1)
   * has the table and the figures), the fastest engine that writes no
   * more than pigz at the level: libdeflate in the block format at levels
   * 1 to 12 when built in (smaller than pigz at every level, and faster),
   * else zlib in pigz's format; level 0 is zlib in pigz's format always.
   * ISA-L, the fastest, writes more than pigz at each of its levels, so
   * AUTO picks it only where the caller asks for pigz's format: AUTO with
   * format PIGZ is ISA-L at 1 to 3 when built in, else zlib, as before
   * the block format existed (and with format BLOCKS, where libdeflate is
   * not built in, the same). An engine not built in, or a level or format
   * it cannot do, fails with SL_EINVAL. Part of what the output is a
   * function of (ISA-L's bytes may also differ between processors, as it
   * picks its code by the instruction sets there; on one machine they are
   * fixed; libdeflate's between its versions). */
  int engine;

  /* What to write: an enum sl_pgzip_format, AUTO (0) by default. PIGZ
   * with the engine ZLIB writes, for the same options, exactly the bytes
   * sluice wrote before the block format existed. */
  int format;
} sl_pgzip_opts;

/* Fill *opts with the defaults: name NULL, level SL_ZLIB_LEVEL_DEFAULT,
 * mem_level 9, deflate_incompressible 0, block_size 0 (the format's
 * default), workers 0 (every processor), in_flight 0 (2 * workers + 2),
 * header NULL, engine SL_ZLIB_ENGINE_AUTO, format SL_PGZIP_FORMAT_AUTO.
 * Returns 0, or SL_EINVAL when opts is NULL. Any thread. */
SL_EXTERN int sl_pgzip_opts_init(sl_pgzip_opts *opts);

/* Resolve in *opts what sl_pgzip_new would choose: level (the default
 * becomes 6), engine and format (AUTO becomes the one picked for the
 * level) and block_size (0 becomes the format's default); the other
 * fields are left as they are. For a program that sizes its buffers to
 * the block, or says what it will write. Returns 0; SL_EINVAL when opts
 * is NULL or sl_pgzip_new would refuse it (opts is then unchanged). Any
 * thread. */
SL_EXTERN int sl_pgzip_opts_resolve(sl_pgzip_opts *opts);

/* A transform stage that compresses its input into one gzip member, on
 * opts->workers threads (NULL: every default). opts is not kept; the
 * name and the header's strings are copied. On success *out owns the
 * stage (free it with sl_stage_free, or chain it and the pipeline frees
 * it). The worker threads start with the stream, at its first full block
 * (or its end), and are joined before the stage's own thread ends, on
 * every path. Any thread.
 *
 * Returns 0; SL_EINVAL when out is NULL or a field of opts is out of range
 * (level, mem_level, block_size, workers, in_flight above 65536, an empty name,
 * a header extra field longer than 65535 bytes or extra_len without extra);
 * SL_ENOMEM, leaving nothing allocated. *out is NULL on failure.
 *
 * In the stream:
 *   - Flush markers (sl_stage_push_flush upstream): the block being filled
 *     is cut short and compressed at once, every block before it is
 *     pushed, then the marker goes on; so what came before the marker can
 *     be decompressed downstream at once, and the stream goes on. A
 *     marker before any data pushes the header alone. The block after a
 *     short one takes what the short one has (up to 32 KiB) as its
 *     dictionary.
 *   - End of stream: the last block (possibly short, possibly empty) is
 *     finished, every block is pushed, then the 8-byte trailer. An empty
 *     input gives a valid gzip member of empty content.
 *   - Errors: the stage fails with SL_ENOMEM when a worker cannot get
 *     memory for its deflate state or output ("pgzip: deflate: out of
 *     memory"), with SL_EINVAL for an object-mode chunk, or with what
 *     sl_stage_push returned. A failure on one worker fails the pipeline
 *     once; the others stop, and every block is released. */
SL_EXTERN int sl_pgzip_new(sl_stage **out, const sl_pgzip_opts *opts);

/* What a pgzip stage wrote, once it has ended its stream: *crc the CRC-32
 * of everything it compressed, *bytes_in its length, *bytes_out the
 * length of the gzip member it pushed, header and trailer included. Each
 * of crc, bytes_in and bytes_out may be NULL. Any thread; the values
 * never change once available.
 *
 * Returns 0 once the stage has pushed its trailer (also when a stage
 * downstream failed afterwards); SL_EBUSY before that: not started, or
 * still running; SL_ECANCELED when the pipeline failed or was cancelled
 * before the stage finished (the values never come); SL_EINVAL when stage
 * is NULL or not a pgzip stage. On any return but 0 the outputs are left
 * untouched. */
SL_EXTERN int sl_pgzip_result(const sl_stage *stage, uint32_t *crc,
                              uint64_t *bytes_in, uint64_t *bytes_out);

/* ------------------------------------------------------------------------
 * Decompression: inflate and check on two threads
 * ---------------------------------------------------------------------- */

/* Add to p, between src and next, a gunzip split over two stages:
 *
 *   src -> "gunzip" -> "gunzip-check" -> next
 *
 * The first reads the gzip wrappers and inflates, every member of the
 * input in turn, as sl_gunzip_new does; the second passes the inflated
 * bytes on unchanged, computes their CRC-32 and compares it, at the end of
 * each member, with the member's trailer. The two share a small queue,
 * under a mutex, of the trailers the first has read and the second has not
 * yet checked: the first adds a member's stored CRC-32, its length and the
 * trailer's input offset when it reads the trailer, the second takes it
 * once it has counted that many bytes. Its length is bounded by the chunks
 * in the ring between them (a member's output ends a chunk), so memory
 * stays bounded by the marks.
 *
 * opts are sl_gunzip_new's (NULL: every default): name names the first
 * stage ("gunzip" by default), and the second gets the same name with
 * "-check" added; window_bits, ignore_trailing and engine work as for
 * sl_gunzip_new (the first stage is one, reading the same headers with
 * the same checks); the other fields are checked as there, then ignored.
 *
 * src must produce (a source, transform or duplex with no consumer yet)
 * and next consume (a transform, sink or duplex with no producer yet), as
 * for sl_pipeline_chain; either may already be in p, and more stages may
 * be chained after next later (name next again in sl_pipeline_chain).
 * On 0, p owns the two new stages and src and next; on failure nothing
 * was added and src and next are still the caller's (or p's, if they were
 * in it). Before sl_pipeline_start; the thread that builds the pipeline.
 *
 * Returns 0; SL_EINVAL (p, src or next NULL, a field of opts out of
 * range, or stages that sl_pipeline_chain refuses); SL_EBUSY once p has
 * started; SL_ENOMEM.
 *
 * While running it fails as sl_gunzip_new does, with SL_EDATA and a
 * message that names the offset in the compressed input:
 *
 *   gunzip: not in gzip format at input byte 0
 *   gunzip: invalid distance too far back at input byte 1048573
 *   gunzip: isize mismatch at input byte 1031 (stored 10, computed 12)
 *   gunzip: truncated input at byte 4711
 *   gunzip: trailing garbage at input byte 2048
 *   gunzip-check: crc32 mismatch at input byte 1023 (stored 0x...,
 *                 computed 0x...)
 *
 * The CRC-32 check names the offset of the trailer, as sl_gunzip_new
 * does; the other messages come from the first stage. Damaged deflate
 * data is named at the last byte inflate had read when it found the
 * damage; a bad header field at the byte that completed it. The two
 * stages find errors independently: when a stream has two faults, one in
 * a member's CRC-32 and one later, the later one may be the one
 * reported. The gzip header is checked (magic, method, reserved flags,
 * header CRC16 when present) but not kept: read it with sl_gunzip_new and
 * sl_gzip_header_get when it matters.
 *
 * Members that carry their length (BGZF, the block format: see the top of
 * this file) are inflated on sl_cpu_count() worker threads, with the
 * errors listed at sl_pgunzip_chain_workers, which this is with workers
 * 0; other streams are read exactly as described above. */
SL_EXTERN int sl_pgunzip_chain(sl_pipeline *p, sl_stage *src, sl_stage *next,
                               const sl_zlib_opts *opts);

/* sl_pgunzip_chain, with members whose length is known inflated on
 * workers threads (1 .. SL_MAP_MAX_WORKERS; 0: sl_cpu_count(), which is
 * what sl_pgunzip_chain uses). The stages, their names, arguments, returns
 * and ownership are sl_pgunzip_chain's; SL_EINVAL also for workers out of
 * range.
 *
 * The first stage reads each member's header. While every member carries
 * a length (the 'S','L' or 'B','C' subfield described at the top of this
 * file), it gathers each whole member into one buffer and hands it to a
 * worker, which inflates it at once (with libdeflate when the library was
 * built with it, into a buffer of the size the trailer's ISIZE gives;
 * else on the engine opts choose), checks that the deflate data ends
 * exactly where the length puts the trailer, and checks the CRC-32 and
 * ISIZE. The outputs are pushed in input order, each a chunk of its own.
 * Up to 256 members are inside the stage at once, fewer once they weigh
 * 4 MiB (at least 2 * workers + 2), so memory is bounded by the largest
 * member and its output, and a full output ring stops the stage from
 * taking input, as for any stage.
 *
 * Everything else is read by the streaming gunzip of sl_pgunzip_chain, on
 * the first stage's thread, from its first byte to the end of the input:
 *   - a stream whose first member has no length subfield: all of it,
 *     exactly as before this call existed (same output, same errors, same
 *     offsets);
 *   - a member without a length after block members (another gzip file
 *     appended to a block file), the bytes after the last member (zero
 *     padding, garbage: ignore_trailing decides, as for sl_gunzip_new),
 *     and a header that is damaged or longer than 256 KiB: every member
 *     before is pushed first, then the streaming gunzip reads on from that
 *     member's first byte. Such a member's end can only be found by
 *     inflating it, so the members after it are read on one thread too.
 *     The output is the same as gzip's;
 *   - a member longer than 4 MiB compressed, or whose ISIZE says more than
 *     64 MiB: likewise from that member on (memory stays bounded, whatever
 *     the lengths claim);
 *   - a member that the input ends inside, or that a flush marker cuts:
 *     likewise, so that what can be decoded of it is delivered (before
 *     the error, a truncation or the damage met first, as gzip delivers
 *     it; before the marker goes on).
 *
 * Errors of block members are reported in input order (the first damaged
 * member is the one named, whichever worker found what first), by the
 * first stage, with the offsets of sl_pgunzip_chain's messages (the
 * CRC-32's too, which for a block member comes from the first stage, not
 * from "-check"), and these:
 *
 *   gunzip: wrong block length at input byte 4096: the deflate data ends
 *           at byte 5000, the length says 5010
 *   gunzip: wrong block length at input byte 4096: the deflate data runs
 *           past the member's end at byte 4990
 *   gunzip: block length 12 shorter than its header and trailer at input
 *           byte 4096
 *
 * where the first offset is the member's first byte. Damaged deflate data
 * is named where the engine's inflate found it, as sl_gunzip_new names it
 * (with libdeflate built in, a member that libdeflate refuses is inflated
 * again on the streaming engine to find the byte). */
SL_EXTERN int sl_pgunzip_chain_workers(sl_pipeline *p, sl_stage *src,
                                       sl_stage *next, const sl_zlib_opts *opts,
                                       unsigned workers);

/* What followed the last member, for a chain made with ignore_trailing:
 * stage is its first stage (the one named opts->name, "gunzip" by
 * default; find it with sl_pipeline_stage). When bytes after the stream
 * were ignored, *offset gets the input offset of the first of them and
 * *garbage 0 when every one was a zero byte (the padding that tape and
 * block devices add), 1 otherwise; either pointer may be NULL. Call it
 * after sl_pipeline_wait; it tells what the stage saw before it ended,
 * whether or not the pipeline failed. Returns 1 when bytes were ignored,
 * 0 when none (*offset and *garbage 0), SL_EINVAL when stage is not the
 * first stage of such a chain. */
SL_EXTERN int sl_pgunzip_trailing(const sl_stage *stage, uint64_t *offset,
                                  int *garbage);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_PGZIP_H */

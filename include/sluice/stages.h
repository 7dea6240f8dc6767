/* SPDX-License-Identifier: MIT */
/*
 * sluice/stages.h — stock stages: memory sources and sinks, a callback
 * sink, a line splitter, crc32 and adler32 pass-through checksums, and a
 * throttle.
 *
 * Each constructor makes an ordinary sl_stage, used like one built with
 * sl_stage_new: on success *out owns it until sl_pipeline_chain hands it to
 * a pipeline; sl_stage_free frees one that never joined a pipeline. Every
 * constructor takes an options struct whose name field names the stage
 * (NULL picks the default given with it: "mem-source", "lines", ...; an
 * empty name is SL_EINVAL); NULL options mean every default. The name is
 * copied. A failed constructor leaves *out NULL (out itself may not be
 * NULL) and nothing allocated, and keeps nothing it was given.
 *
 * Threads. Constructors may be called from any thread. A stage's ops run on
 * its own thread, as every stage's do, and so do the callbacks a stage
 * calls, one call at a time (a stage merging several inputs in arrival
 * order has a thread per input, but its ops never run at once). The
 * getters that read a stage's results (sl_mem_sink_data, sl_crc32_value,
 * ...) are valid once sl_pipeline_wait has returned, from any thread, and
 * give SL_EBUSY between sl_pipeline_start and the end of sl_pipeline_wait;
 * they must not be called concurrently with sl_pipeline_start or
 * sl_pipeline_free. Each getter checks that the stage is of its kind and
 * gives SL_EINVAL for any other stage.
 *
 * Modes. These stages carry bytes. A byte stage that receives an object
 * buffer fails the pipeline with SL_EINVAL; the throttle alone also takes
 * objects (each counts as one unit against its rate).
 *
 * Flush markers (sl_stage_push_flush) pass through every stage here
 * unchanged and in order: none of them holds data back that a marker could
 * push out, except the line splitter, which does not split a line at a
 * marker (see sl_lines_new). The sinks here have nothing to flush; the
 * marker ends at them.
 *
 * This header is included by sluice.h; it may also be included on its own.
 */
/* The umbrella first, outside the guard: whichever header a program
 * includes first, every sub-header is read after the core and in the
 * umbrella's order, so each finds the types it uses. */
#include <sluice.h>

#ifndef SLUICE_STAGES_H
#define SLUICE_STAGES_H

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Memory sources and sinks
 *
 * A sl_buf has no kind that points into someone else's memory: a chunk
 * downstream may be written in place by the stage that holds its only
 * reference. So the memory sources copy the caller's bytes into pooled
 * buffers as they go, one chunk per read call, which keeps the pipeline's
 * memory bounded by its marks whatever the size of the input; only the
 * bytes themselves are borrowed (or copied once, with SL_MEM_COPY).
 * ---------------------------------------------------------------------- */

/* sl_mem_opts.flags */
#define SL_MEM_COPY 1u /* sources: copy the input at construction */

typedef struct sl_mem_opts {
  const char *name;  /* NULL: "mem-source", "mem-sink" or "callback-sink" */
  unsigned flags;    /* sources: 0 or SL_MEM_COPY; ignored by sinks */
  size_t chunk_size; /* sl_mem_source_new: bytes per chunk, at most 1 GiB;
                      * 0: the pipeline's buffer size. Ignored elsewhere. */
  size_t max_size;   /* sl_mem_sink_new: the most bytes it accepts; 0: no
                      * limit. Ignored elsewhere. */
} sl_mem_opts;

/* One piece of input for sl_mem_source_chunks_new. */
typedef struct sl_mem_chunk {
  const void *data; /* may be NULL when len is 0 */
  size_t len;
} sl_mem_chunk;

/* A source that emits the len bytes at data, then ends the stream. Each
 * chunk holds opts->chunk_size bytes (the pipeline's buffer size by
 * default), the last one what is left; len 0 ends the stream at once,
 * with no chunk.
 *
 * Ownership: without SL_MEM_COPY the bytes are borrowed: they must stay
 * valid and unchanged until sl_pipeline_wait has returned (or until
 * sl_stage_free, for a stage that never ran). With SL_MEM_COPY they are
 * copied here and the caller may free them as soon as this returns.
 *
 * Returns 0; SL_EINVAL when out is NULL, data is NULL with len above 0,
 * flags has an unknown bit or chunk_size is above 1 GiB; SL_ENOMEM. */
SL_EXTERN int sl_mem_source_new(sl_stage **out, const void *data, size_t len,
                                const sl_mem_opts *opts);

/* A source that emits each of the n chunks as one chunk of exactly its
 * length, in order, zero-length chunks included (a zero-length chunk is
 * not a flush marker), then ends the stream. A chunk above the pipeline's
 * buffer size is still one chunk, in a buffer of its own size (at most
 * 1 GiB). chunks may be NULL when n is 0.
 *
 * Ownership: without SL_MEM_COPY the array and the bytes each entry points
 * to are borrowed, under the rule of sl_mem_source_new. With SL_MEM_COPY
 * both are copied here. chunk_size is ignored.
 *
 * Returns 0; SL_EINVAL when out is NULL, chunks is NULL with n above 0, an
 * entry has NULL data with a length above 0 or a length above 1 GiB, or
 * flags has an unknown bit; SL_ENOMEM. */
SL_EXTERN int sl_mem_source_chunks_new(sl_stage **out,
                                       const sl_mem_chunk *chunks, size_t n,
                                       const sl_mem_opts *opts);

/* A sink that appends every byte it receives to a growable buffer that the
 * stage owns; read it with sl_mem_sink_data or take it with
 * sl_mem_sink_take once the pipeline has ended. Zero-length chunks add
 * nothing.
 *
 * With opts->max_size above 0 the sink accepts at most that many bytes: a
 * chunk that would take it past the limit fails the pipeline with
 * SL_EMSGSIZE ("mem-sink: more than N bytes"); the bytes before that chunk
 * are kept. The buffer never grows beyond the limit. Without a limit, a
 * failure to grow the buffer fails the pipeline with SL_ENOMEM.
 *
 * Returns 0; SL_EINVAL when out is NULL; SL_ENOMEM. */
SL_EXTERN int sl_mem_sink_new(sl_stage **out, const sl_mem_opts *opts);

/* Point *data and *len at the bytes a memory sink gathered: the whole
 * stream when the pipeline succeeded, what arrived before the failure
 * otherwise. *data is NULL when nothing arrived (or it was taken). The
 * bytes stay the stage's: valid until sl_mem_sink_take, sl_pipeline_free
 * or sl_stage_free.
 *
 * Returns 0; SL_EBUSY while the pipeline runs (after sl_pipeline_start,
 * before sl_pipeline_wait has returned), *data and *len untouched;
 * SL_EINVAL when an argument is NULL or stage is not a memory sink. */
SL_EXTERN int sl_mem_sink_data(const sl_stage *stage, const void **data,
                               size_t *len);

/* As sl_mem_sink_data, but the caller takes the bytes: from then on they
 * are the caller's, to be released with sl_mem_free, and the sink holds
 * nothing (a second take gives NULL and 0). Returns as sl_mem_sink_data. */
SL_EXTERN int sl_mem_sink_take(sl_stage *stage, void **data, size_t *len);

/* Release bytes taken with sl_mem_sink_take (they come from the allocator
 * given to sl_set_allocator). NULL is a no-op. Any thread. */
SL_EXTERN void sl_mem_free(void *data);

/* Called by a callback sink for each chunk: data and len describe it (data
 * may be NULL when len is 0) and are valid only during the call. Return 0
 * to go on, or a negative SL_E* code to fail the pipeline with it (a
 * positive return counts as 0). */
typedef int (*sl_data_cb)(const void *data, size_t len, void *arg);

/* Called once at the end of the stream. Returns as sl_data_cb. */
typedef int (*sl_end_cb)(void *arg);

/* A sink that hands every chunk to data_cb(data, len, arg), in order,
 * zero-length chunks included, and at the end of the stream calls
 * end_cb(arg) when end_cb is not NULL. Both run on the stage's thread, one
 * call at a time; end_cb is not called when the pipeline fails or is
 * cancelled first. A callback's error fails the pipeline with its code and
 * the message "callback-sink: callback failed: <message>". arg is the
 * caller's and is never freed. Only opts->name is used.
 *
 * Returns 0; SL_EINVAL when out or data_cb is NULL; SL_ENOMEM. */
SL_EXTERN int sl_callback_sink_new(sl_stage **out, sl_data_cb data_cb,
                                   sl_end_cb end_cb, void *arg,
                                   const sl_mem_opts *opts);

/* ------------------------------------------------------------------------
 * Line splitter (Node's readline, split2)
 * ---------------------------------------------------------------------- */

/* sl_lines_opts.flags */
#define SL_LINES_KEEP_NEWLINE 1u /* keep each line's terminator, as found */
#define SL_LINES_CRLF 2u         /* "\r\n" ends a line too, as one terminator */

#define SL_LINES_MAX_DEFAULT ((size_t)1 << 20) /* max_line 0: 1 MiB */
#define SL_LINES_NO_LIMIT ((size_t)-1)

typedef struct sl_lines_opts {
  const char *name; /* NULL: "lines" */
  unsigned flags;   /* SL_LINES_* */
  size_t max_line;  /* the longest line accepted, in bytes without its
                     * terminator; 0: SL_LINES_MAX_DEFAULT;
                     * SL_LINES_NO_LIMIT: none */
} sl_lines_opts;

/* A transform that emits one output chunk per line. A line ends at '\n';
 * with SL_LINES_CRLF a "\r\n" is its terminator as a whole, otherwise a
 * '\r' is an ordinary byte. The terminator is removed unless
 * SL_LINES_KEEP_NEWLINE keeps it as it was found. A line split across
 * input chunks is assembled into one; an empty line is a zero-length chunk
 * (or its bare terminator); input "a\n" is one line, not two. At the end of
 * the stream, a last line without a terminator is emitted as it is.
 *
 * Output chunks are fresh buffers from the pipeline's pool, each holding a
 * copy of its line. Between input chunks the stage holds at most one
 * partial line, of at most max_line + 1 bytes (nothing bounds it with
 * SL_LINES_NO_LIMIT).
 *
 * A line longer than max_line fails the pipeline with SL_EMSGSIZE and a
 * message naming it: "lines: line 3 longer than 80 bytes (starting at
 * input byte 120)"; the line number counts from 1, the offset from 0.
 *
 * Flush markers pass on at once, ahead of a partial line that the stage
 * holds: a marker never splits a line.
 *
 * Returns 0; SL_EINVAL when out is NULL or flags has an unknown bit;
 * SL_ENOMEM. */
SL_EXTERN int sl_lines_new(sl_stage **out, const sl_lines_opts *opts);

/* ------------------------------------------------------------------------
 * crc32 and adler32 (zlib's crc32() and adler32())
 * ---------------------------------------------------------------------- */

/* Called once at the end of the stream with the checksum of the whole
 * stream and its length in bytes, on the stage's thread. Returns 0, or a
 * negative SL_E* code that fails the pipeline with the message "<stage>:
 * checksum callback failed: <message>" (say SL_EDATA, after comparing
 * with an expected value). A positive return counts as 0. */
typedef int (*sl_checksum_cb)(uint32_t value, uint64_t bytes, void *arg);

typedef struct sl_checksum_opts {
  const char *name;      /* NULL: "crc32" or "adler32" */
  sl_checksum_cb on_end; /* optional, on the stage's thread */
  void *arg;             /* passed to on_end; the caller's */
} sl_checksum_opts;

/* A pass-through transform that pushes every chunk on unchanged, the same
 * buffer, zero copy, and keeps the CRC-32 (zlib's crc32(), as in gzip) and
 * the byte count of everything that passed. The result is read with
 * sl_crc32_value after sl_pipeline_wait, and given to opts->on_end at the
 * end of the stream.
 *
 * Returns 0; SL_EINVAL when out is NULL; SL_ENOMEM. */
SL_EXTERN int sl_crc32_new(sl_stage **out, const sl_checksum_opts *opts);

/* The same with Adler-32 (zlib's adler32(), as in the zlib format), read
 * with sl_adler32_value. Returns as sl_crc32_new. */
SL_EXTERN int sl_adler32_new(sl_stage **out, const sl_checksum_opts *opts);

/* The CRC-32 of a crc32 stage into *crc and, when bytes is not NULL, the
 * number of bytes it covers into *bytes.
 *
 * Returns 0 when the stage saw the end of its stream: the values cover the
 * whole stream. SL_ECANCELED when it did not (the pipeline failed or was
 * cancelled first, or never ran): the values cover the bytes that passed
 * before it stopped. SL_EBUSY while the pipeline runs (nothing written).
 * SL_EINVAL when stage or crc is NULL or stage is not a crc32 stage. */
SL_EXTERN int sl_crc32_value(const sl_stage *stage, uint32_t *crc,
                             uint64_t *bytes);

/* The same for an adler32 stage, its Adler-32 into *adler (an empty
 * stream's is 1). Returns as sl_crc32_value, SL_EINVAL also when the stage
 * is not an adler32 stage. */
SL_EXTERN int sl_adler32_value(const sl_stage *stage, uint32_t *adler,
                               uint64_t *bytes);

/* ------------------------------------------------------------------------
 * Throttle
 * ---------------------------------------------------------------------- */

#define SL_THROTTLE_MAX_BURST ((uint64_t)1 << 34) /* 16 GiB */

typedef struct sl_throttle_opts {
  const char *name; /* NULL: "throttle" */
  size_t burst;     /* bucket size in bytes (objects, in object mode); 0:
                     * a tenth of a second at rate (rate / 10, so none
                     * below 10 per second); at most SL_THROTTLE_MAX_BURST */
} sl_throttle_opts;

/* A pass-through transform that limits throughput to rate bytes per
 * second (objects per second for object buffers), for demos and for tests
 * of backpressure: the stage sleeps before it pushes a chunk, its input
 * ring fills meanwhile, and the stages upstream pause on their full rings
 * as they would behind a slow disk or network.
 *
 * A token bucket on CLOCK_MONOTONIC: the bucket holds up to burst bytes
 * and starts full when the first chunk arrives; it refills at rate; a
 * chunk waits until the bucket holds its whole length, then passes on
 * unchanged (the same buffer) and takes its length out. A chunk longer
 * than burst waits until its whole length has accrued: the throttle never
 * splits a chunk, so make burst at least the chunk size for smooth output.
 * As the bucket never goes below empty, the throttle is never faster than
 * its rate: from the first chunk on, passing B bytes takes at least
 * (B - burst) / rate seconds. Zero-length chunks and flush markers pass at
 * once.
 *
 * The sleep is cancellable: it waits in poll() on sl_stage_cancel_fd, so
 * sl_pipeline_cancel, or another stage's failure, wakes it at once and the
 * stage returns SL_ECANCELED (should the descriptor be unavailable it
 * sleeps in slices of at most 50 ms and checks sl_stage_cancelled).
 *
 * Returns 0; SL_EINVAL when out is NULL, rate is 0 or burst is above
 * SL_THROTTLE_MAX_BURST; SL_ENOMEM. */
SL_EXTERN int sl_throttle_new(sl_stage **out, uint64_t rate,
                              const sl_throttle_opts *opts);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_STAGES_H */

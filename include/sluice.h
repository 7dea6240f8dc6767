/* SPDX-License-Identifier: MIT */
/*
 * sluice — multithreaded streaming with backpressure.
 *
 * The Node.js stream model carried over to POSIX threads. Every stage of a
 * pipeline runs on its own thread; stages are joined by bounded rings
 * (sl_ring). A ring's level is counted in bytes (or items in object mode),
 * and its two marks carry Node's backpressure signals between threads:
 *
 *   write() returns false  ->  the ring is at its high mark: the writer pauses
 *   'drain' / resume()     ->  the reader pulled the level down to the low
 *                              mark: the paused writer is woken, once
 *   end() / 'end'          ->  sl_ring_close(): the reader gets every buffered
 *                              chunk, then SL_EOF
 *   destroy(err)           ->  sl_ring_abort(): both sides wake with err
 *
 * Layers, bottom up: sl_buf (a refcounted chunk from a pool), sl_ring (the
 * bounded queue, usable on its own), sl_stage (a node with an ops table, run
 * on its own thread), sl_pipeline (owns stages and rings, starts, waits,
 * cancels, reports the first error once).
 *
 * Conventions. Every function that can fail returns int: 0 on success, a
 * positive status for normal events (SL_AGAIN, SL_EOF), a negative SL_E*
 * code on error. Every handle is opaque and freed by its *_free function.
 * The library never prints, exits, aborts or installs signal handlers.
 * Thread-safety is stated for each function; "any thread" means the
 * function may be called concurrently with any other function on the same
 * object except its *_free.
 *
 * Misuse the library detects and refuses rather than hang or corrupt
 * (each function says which): waiting for or freeing a pipeline from one
 * of its own stage threads or its finished callback (SL_EDEADLK), pushing
 * onto a stage from a thread other than the stage's own (SL_EINVAL), a
 * NULL stage given to sl_pipeline_chain (SL_EINVAL). What stays undefined,
 * as with free(3): using a handle after its *_free, freeing it twice,
 * releasing a buffer reference one does not hold (a second sl_buf_unref),
 * and calling a function that names one thread (the writer's, the
 * reader's, the building thread) from another.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SL_BUILDING) && defined(__GNUC__)
#define SL_EXTERN __attribute__((visibility("default")))
#else
#define SL_EXTERN /* nothing */
#endif

#if defined(__GNUC__)
#define SL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SL_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------------
 * Version
 * ---------------------------------------------------------------------- */

#define SL_VERSION_MAJOR 0
#define SL_VERSION_MINOR 1
#define SL_VERSION_PATCH 0
#define SL_VERSION_HEX \
  ((SL_VERSION_MAJOR << 16) | (SL_VERSION_MINOR << 8) | SL_VERSION_PATCH)

/* The version of the library linked at run time, "MAJOR.MINOR.PATCH".
 * Any thread. */
SL_EXTERN const char *sl_version(void);

/* The version of the library linked at run time as a number, in the form
 * of SL_VERSION_HEX ((major << 16) | (minor << 8) | patch), to compare
 * with the SL_VERSION_HEX a program was compiled against. Returns it.
 * Any thread. */
SL_EXTERN unsigned sl_version_number(void);

/* ------------------------------------------------------------------------
 * Status and error codes
 *
 * One table generates the enum, sl_strerror() and sl_err_name(). Errors
 * that have an errno equivalent use its negated value, so a stage that gets
 * errno from a system call can return -errno; the rest lie below -4000.
 * ---------------------------------------------------------------------- */

#define SL_ERRNO_MAP(XX)                                \
  XX(EINVAL, -EINVAL, "invalid argument")               \
  XX(ENOMEM, -ENOMEM, "out of memory")                  \
  XX(ECANCELED, -ECANCELED, "operation cancelled")      \
  XX(EPIPE, -EPIPE, "broken pipe")                      \
  XX(EIO, -EIO, "i/o error")                            \
  XX(ENOSPC, -ENOSPC, "no space left on device")        \
  XX(EBUSY, -EBUSY, "resource busy or already started") \
  XX(ENOENT, -ENOENT, "no such file or directory")      \
  XX(EEXIST, -EEXIST, "file already exists")            \
  XX(EACCES, -EACCES, "permission denied")              \
  XX(EBADF, -EBADF, "bad file descriptor")              \
  XX(EMSGSIZE, -EMSGSIZE, "message too long")           \
  XX(EISDIR, -EISDIR, "is a directory")                 \
  XX(EROFS, -EROFS, "read-only file system")            \
  XX(EFBIG, -EFBIG, "file too large")                   \
  XX(ENAMETOOLONG, -ENAMETOOLONG, "file name too long") \
  XX(EDQUOT, -EDQUOT, "disk quota exceeded")            \
  XX(ECLOSED, -4001, "write after end of stream")       \
  XX(EDATA, -4002, "invalid or corrupt data")           \
  XX(ESTAGE, -4003, "stage failed")                     \
  XX(ETHREAD, -4004, "cannot create thread")            \
  XX(EDEADLK, -EDEADLK, "deadlock avoided: a thread would wait for itself")

typedef enum sl_status {
  SL_OK = 0,
  SL_AGAIN = 1, /* would block: the ring is full (write) or empty (read) */
  SL_EOF = 2,   /* end of stream: the writer closed and all chunks were read */
  SL_DONE = 3,  /* no more input wanted: an op finished early (sl_stage_ops) */
#define SL_XX_(name, value, msg) SL_##name = (value),
  SL_ERRNO_MAP(SL_XX_)
#undef SL_XX_
} sl_status;

/* A static message for code: "invalid argument", "end of stream", ...; for
 * an unknown negative value "unknown error". Never NULL. Any thread. */
SL_EXTERN const char *sl_strerror(int code);

/* The name of code: "SL_EINVAL", "SL_EOF", ...; "SL_UNKNOWN" for an
 * unknown value. Never NULL. Any thread. */
SL_EXTERN const char *sl_err_name(int code);

/* The SL_E* code for a positive errno value: -errnum when the table has
 * it, SL_EIO otherwise (say so in the stage's message). Any thread. */
SL_EXTERN int sl_err_from_errno(int errnum);

/* ------------------------------------------------------------------------
 * Allocator hook
 * ---------------------------------------------------------------------- */

typedef void *(*sl_malloc_fn)(size_t size);
typedef void *(*sl_realloc_fn)(void *ptr, size_t size);
typedef void *(*sl_calloc_fn)(size_t count, size_t size);
typedef void (*sl_free_fn)(void *ptr);

/* Route every allocation the library makes through these functions (tests
 * use it to fail the Nth allocation). All four must be given, or all four
 * NULL to restore the C library's. Call it before any other sl_ function,
 * while no sluice object exists: memory allocated by one allocator must not
 * be freed by another. Not thread-safe with respect to anything.
 * Returns 0, or SL_EINVAL when only some functions are given. */
SL_EXTERN int sl_set_allocator(sl_malloc_fn malloc_fn, sl_realloc_fn realloc_fn,
                               sl_calloc_fn calloc_fn, sl_free_fn free_fn);

/* ------------------------------------------------------------------------
 * sl_pool and sl_buf — chunks
 *
 * A sl_buf is one chunk: bytes (data, len, cap) or, in object mode, one
 * pointer with a destructor, which counts as one item. A buffer is
 * reference-counted; rings move pointers, never bytes, and a tee hands the
 * same buffer to every branch, so a buffer whose count is above one must be
 * treated as read-only.
 *
 * A sl_pool recycles byte buffers in power-of-two size classes and the bare
 * headers of object buffers, so a pipeline in its steady state allocates
 * nothing. A pool is thread-safe: any thread
 * may take from it and any thread may release into it.
 * ---------------------------------------------------------------------- */

typedef struct sl_buf sl_buf;
typedef struct sl_pool sl_pool;

typedef struct sl_pool_stats {
  size_t buf_size;          /* capacity of a pooled byte buffer */
  size_t outstanding;       /* buffers (and headers) handed out, not returned */
  size_t peak_outstanding;  /* the most ever outstanding at once */
  size_t bytes_outstanding; /* capacity bytes handed out, not returned */
  size_t peak_bytes;        /* the most capacity bytes outstanding at once */
  size_t cached;            /* buffers kept for reuse */
  uint64_t allocations;     /* allocations made from the allocator */
  uint64_t reuses;          /* requests served from the cache */
} sl_pool_stats;

/* Create a pool for byte buffers of up to buf_size bytes, kept in
 * power-of-two size classes from 64 bytes (the last class is buf_size), so
 * a small chunk takes a small buffer. max_cached bounds how many free
 * buffers each class keeps; 0 keeps every buffer returned, so the pool
 * settles at the pipeline's peak working set, which the marks bound. On success
 * *out owns the pool. Returns 0, SL_EINVAL (out NULL, buf_size 0 or above 1
 * GiB), SL_ENOMEM. Any thread. */
SL_EXTERN int sl_pool_new(sl_pool **out, size_t buf_size, size_t max_cached);

/* Take another owner reference to pool, for one more holder (a second
 * pipeline sharing it, see sl_pipeline_opts.pool), and return pool; NULL
 * returns NULL. Each reference is released by one sl_pool_free. Any
 * thread. */
SL_EXTERN sl_pool *sl_pool_ref(sl_pool *pool);

/* Release one owner reference to pool (taken by sl_pool_new or
 * sl_pool_ref). When the last is released the cached buffers are freed;
 * buffers still outstanding keep the pool alive, and it is freed when the
 * last one returns. NULL is a no-op. Any thread, once per reference. */
SL_EXTERN void sl_pool_free(sl_pool *pool);

/* The capacity of the pool's full-size buffers (its buf_size); 0 for
 * NULL. Any thread. */
SL_EXTERN size_t sl_pool_buf_size(const sl_pool *pool);

/* Fill *st with the pool's counters, read under its lock. Any thread.
 * Returns 0 or SL_EINVAL. */
SL_EXTERN int sl_pool_stats_get(sl_pool *pool, sl_pool_stats *st);

/* Give back memory the pool caches. A pool keeps every buffer returned to
 * it (up to max_cached a class), so a pool shared by many pipelines, a
 * server's, settles at the most they ever held at once and keeps it while
 * they are gone. The pool has no thread and no clock: it never trims by
 * itself. Its owner calls sl_pool_trim when things have been quiet for a
 * while (a server's event loop after some seconds without an event); it
 * frees cached buffers, the largest size classes first, until the free
 * buffers left hold at most keep_bytes bytes of capacity; with keep_bytes
 * 0 it frees every cached buffer and object header.
 *
 * What remains: the floor, keep_bytes of cached buffers (less when less
 * was cached), every outstanding buffer (in rings or in a stage's hands,
 * untouched: each returns to the cache as usual), and the pool's own few
 * hundred bytes. Whether the freed memory leaves the process is the
 * allocator's business (glibc's malloc_trim gives back freed pages).
 * *freed_bytes, when not NULL, gets the capacity bytes freed. Any thread,
 * while pipelines use the pool too; a take after a trim allocates again.
 * Returns 0, or SL_EINVAL (pool NULL). */
SL_EXTERN int sl_pool_trim(sl_pool *pool, size_t keep_bytes,
                           size_t *freed_bytes);

/* A byte buffer with room for at least cap bytes and len 0, reference count
 * one, owned by the caller. pool may be NULL (plain allocation of exactly
 * cap); from a pool, cap is rounded up to its size class, and a request
 * larger than the pool's buffer size is allocated and counted by the pool
 * but not cached. cap 0 is valid. Returns 0, SL_EINVAL, SL_ENOMEM.
 * Any thread. */
SL_EXTERN int sl_buf_new(sl_pool *pool, size_t cap, sl_buf **out);

/* A byte buffer holding a copy of the len bytes at data (which stay the
 * caller's; data may be NULL when len is 0), with len set, reference
 * count one, owned by the caller: from pool, its capacity len rounded up
 * to the size class, or with pool NULL allocated for exactly len bytes.
 * Returns 0; SL_EINVAL (out NULL, or data NULL with len above 0);
 * SL_ENOMEM, *out then NULL. Any thread. */
SL_EXTERN int sl_buf_new_copy(sl_pool *pool, const void *data, size_t len,
                              sl_buf **out);

/* An object-mode buffer carrying obj; dtor (may be NULL) is called with obj
 * when the last reference is released. On success the buffer owns obj; on
 * failure obj is untouched and still the caller's. Returns 0, SL_EINVAL,
 * SL_ENOMEM. Any thread. */
SL_EXTERN int sl_buf_new_object(sl_pool *pool, void *obj, void (*dtor)(void *),
                                sl_buf **out);

/* A byte buffer over len bytes at data, which stay where they are: no
 * copy. The buffer has len bytes in use and capacity len, reference count
 * one, owned by the caller; when its last reference is released, dtor(arg)
 * runs (dtor may be NULL) on the releasing thread, and from then on the
 * bytes are the caller's again. Until then they must stay valid, and
 * writable: a stage that holds the only reference may change them in place
 * or shorten them (sl_buf_set_len), as with any byte buffer. From pool
 * only a small header is taken (the bytes are not counted as the pool's);
 * pool may be NULL. For a source whose input arrives in memory someone
 * else allocated (a message a client library received): the chunk points
 * at it, and the destructor frees it. On failure nothing is called and
 * the bytes are still the caller's. Returns 0; SL_EINVAL (out NULL, or
 * data NULL with len above 0); SL_ENOMEM. Any thread. */
SL_EXTERN int sl_buf_new_wrap(sl_pool *pool, void *data, size_t len,
                              void (*dtor)(void *), void *arg, sl_buf **out);

/* Take one more reference; returns buf. Any thread. */
SL_EXTERN sl_buf *sl_buf_ref(sl_buf *buf);

/* Drop one reference; the last one returns the buffer to its pool (or frees
 * it) and runs an object's destructor. NULL is a no-op. Any thread. */
SL_EXTERN void sl_buf_unref(sl_buf *buf);

/* Accessors. Any thread that holds a reference to buf; NULL buf is not
 * allowed (except where a function says so).
 *
 * The bytes of a byte buffer (NULL for an object buffer). */
SL_EXTERN unsigned char *sl_buf_data(const sl_buf *buf);
/* Bytes in use (0 for an object buffer). */
SL_EXTERN size_t sl_buf_len(const sl_buf *buf);
/* Bytes of room (0 for an object buffer). */
SL_EXTERN size_t sl_buf_cap(const sl_buf *buf);
/* Set the bytes in use. Returns 0, or SL_EINVAL when buf is NULL, len >
 * cap or buf is an object. The caller must hold the only reference. */
SL_EXTERN int sl_buf_set_len(sl_buf *buf, size_t len);
/* The object of an object buffer, NULL for a byte buffer. */
SL_EXTERN void *sl_buf_object(const sl_buf *buf);
/* 1 for an object buffer, 0 for a byte buffer. */
SL_EXTERN int sl_buf_is_object(const sl_buf *buf);

/* A flush marker: a byte buffer of length zero that asks each stage it
 * passes to push out what it holds (sl_stage_ops.sync). A ring admits it in
 * either mode and counts it as zero bytes (one item in object mode).
 * Returns 0, SL_EINVAL, SL_ENOMEM. Any thread. */
SL_EXTERN int sl_buf_new_flush(sl_pool *pool, sl_buf **out);

/* Whether buf is a flush marker (made by sl_buf_new_flush). Returns 1 for
 * a marker, 0 for any other buffer (byte or object) and for NULL. Any
 * thread that holds a reference to buf. */
SL_EXTERN int sl_buf_is_flush(const sl_buf *buf);

/* Called once when the last reference to a checkpoint marker is
 * released: passed is 1 when every reference was released by a sink that
 * synced it (every branch of every tee reached a sink and that sink's sync
 * succeeded, or it had none), 0 when any reference was released otherwise
 * (a ring aborted or freed while holding it, a failed sync, a cancel, a
 * stage that released it). Runs on the thread that released the last
 * reference: a stage thread, or the one in sl_pipeline_free. Must not
 * block for long and must not call sl_pipeline_wait or _free. */
typedef void (*sl_checkpoint_cb)(void *arg, int passed);

/* A checkpoint marker: a flush marker (sl_buf_is_flush answers 1, every
 * stage's sync runs as it passes) that reports, through cb(arg, passed),
 * whether everything pushed before it has left every sink of the
 * pipeline. A source pushes one after a batch and settles the batch
 * (acknowledges its input) in cb when passed; a dropped one settles
 * nothing. Each reference (sl_buf_ref) must be released once, and every
 * release but a sink's successful sync counts as dropped. cb is run
 * exactly once on success; on failure never. Returns 0, SL_EINVAL (cb or
 * out NULL), SL_ENOMEM. Any thread. */
SL_EXTERN int sl_buf_new_checkpoint(sl_pool *pool, sl_checkpoint_cb cb,
                                    void *arg, sl_buf **out);

/* Returns buf's current reference count (0 for NULL). While the caller
 * holds a reference, 1 means it holds the only one: every other holder's
 * release happened before this call returned (acquire), so the caller may
 * then write the data in place. Any other value is a snapshot. Any thread
 * that holds a reference to buf. */
SL_EXTERN unsigned sl_buf_refcount(const sl_buf *buf);

/* ------------------------------------------------------------------------
 * sl_ring — a bounded single-producer single-consumer queue of sl_buf *
 *
 * Lock-free while neither side waits; one mutex and two condition
 * variables to sleep and wake. The level is, in byte mode, the bytes the
 * queued chunks hold in memory: the sum of their capacities, which for
 * buffers filled to the brim (or made to measure) is the sum of their
 * lengths, as Node counts; so 100 bytes read from a socket into a 64 KiB
 * buffer weigh 64 KiB, and the marks bound memory, not just data. In
 * object mode the level is the number of chunks. A chunk is
 * admitted while level < hwm, so level <= hwm + one chunk, always; a ring
 * also holds at most max_chunks chunks whatever their size, so zero-length
 * chunks cannot grow it without bound. A writer that finds the ring full
 * pauses; it is woken once, when a reader pulls the level down to lwm (and
 * the count to half of max_chunks): one drain per pause. A reader that
 * finds the ring empty waits and is woken by the next write. Nothing is
 * signalled unless a side waits.
 *
 * Exactly one thread writes and one thread reads at a time; close, abort,
 * level and stats may be called from any thread.
 * ---------------------------------------------------------------------- */

typedef struct sl_ring sl_ring;

enum sl_ring_mode {
  SL_RING_BYTES = 0,  /* level counts bytes held (Node's default) */
  SL_RING_OBJECTS = 1 /* level counts chunks (Node's objectMode) */
};

#define SL_LWM_DEFAULT ((size_t)-1) /* half the high mark */

typedef struct sl_ring_opts {
  size_t hwm;        /* high mark, > 0 */
  size_t lwm;        /* low mark, < hwm, or SL_LWM_DEFAULT */
  int mode;          /* enum sl_ring_mode */
  size_t max_chunks; /* slots; 0 picks: byte mode 1024, object mode hwm + 1 */
} sl_ring_opts;

typedef struct sl_ring_stats {
  size_t level;      /* now */
  size_t chunks;     /* queued now */
  size_t peak_level; /* the highest level ever reached */
  size_t hwm, lwm;
  uint64_t chunks_in;  /* chunks admitted */
  uint64_t chunks_out; /* chunks read */
  uint64_t bytes_in;   /* bytes admitted (0 in object mode) */
  uint64_t bytes_out;
  uint64_t pauses;  /* times the writer found the ring full and waited */
  uint64_t drains;  /* times a paused writer was woken by the low mark */
  uint64_t starves; /* times the reader found the ring empty and waited */
  uint64_t signals; /* condition-variable signals and broadcasts sent */
  uint64_t writer_wait_ns; /* time the writer spent waiting */
  uint64_t reader_wait_ns; /* time the reader spent waiting */
  int writer_waiting;      /* 1 while the writer is blocked */
  int reader_waiting;      /* 1 while the reader is blocked */
  int closed;              /* 1 once closed */
  int error;               /* the abort code, or 0 */
} sl_ring_stats;

/* Create a ring. opts NULL is invalid: hwm has no sensible default outside a
 * pipeline. On success *out owns the ring. Returns 0; SL_EINVAL when out or
 * opts is NULL, hwm is 0, lwm >= hwm, mode is unknown, max_chunks is above
 * 2^24, or object mode asks for fewer than hwm + 1 slots; SL_ENOMEM.
 * Any thread. */
SL_EXTERN int sl_ring_new(sl_ring **out, const sl_ring_opts *opts);

/* Free the ring and release every chunk still queued. No thread may be
 * using it. NULL is a no-op. */
SL_EXTERN void sl_ring_free(sl_ring *ring);

/* Queue buf, waiting while the ring is full. On 0 the ring owns buf; on any
 * other return the caller still does. Returns 0; SL_ECLOSED after close;
 * the abort code after abort (also when it arrives while waiting);
 * SL_EINVAL for NULL arguments or an object buffer in a byte ring (or a
 * byte buffer in an object ring). Writer thread. */
SL_EXTERN int sl_ring_write(sl_ring *ring, sl_buf *buf);

/* Queue buf without waiting: Node's write() returning false. Returns 0
 * (the ring owns buf) while level < hwm and a slot is free; SL_AGAIN when
 * the level is at or above hwm or no slot is free (the caller keeps buf and
 * may wait with sl_ring_wait_writable); otherwise as sl_ring_write.
 * Writer thread. */
SL_EXTERN int sl_ring_try_write(sl_ring *ring, sl_buf *buf);

/* Wait until a write would be admitted, the ring is closed or aborted.
 * Counts as a pause when it has to wait. Returns 0, SL_ECLOSED, the abort
 * code, or SL_EINVAL when ring is NULL. Writer thread. */
SL_EXTERN int sl_ring_wait_writable(sl_ring *ring);

/* Take the oldest chunk, waiting while the ring is empty. On 0 the caller
 * owns *out. Returns 0; SL_EOF once closed and empty; the abort code after
 * abort; SL_EINVAL. Reader thread. */
SL_EXTERN int sl_ring_read(sl_ring *ring, sl_buf **out);

/* Take the oldest chunk without waiting. On 0 the caller owns *out; on any
 * other return *out is NULL. Like a read, it wakes a paused writer when it
 * pulls the level down to the low mark, but it never waits and never
 * counts as a starve. Returns 0; SL_AGAIN when the ring is empty and still
 * open; SL_EOF once closed and empty; the abort code after abort;
 * SL_EINVAL when ring or out is NULL. Reader thread. */
SL_EXTERN int sl_ring_try_read(sl_ring *ring, sl_buf **out);

/* Take up to max chunks under one lock, waiting while the ring is empty.
 * On 0, *n (>= 1) chunks are in out[0..*n-1] and the caller owns them.
 * Returns as sl_ring_read; *n is 0 on any non-zero return. Reader thread. */
SL_EXTERN int sl_ring_read_batch(sl_ring *ring, sl_buf **out, size_t max,
                                 size_t *n);

/* End of stream: writes fail with SL_ECLOSED, the reader gets the queued
 * chunks, then SL_EOF. Idempotent; a no-op after abort. Any thread. */
SL_EXTERN void sl_ring_close(sl_ring *ring);

/* Fail the stream with err (negative): every queued chunk is released and
 * both sides wake at once and get err from then on. The first abort wins.
 * Returns 0, or SL_EINVAL when ring is NULL or err >= 0. Any thread. */
SL_EXTERN int sl_ring_abort(sl_ring *ring, int err);

/* The current level (bytes held, or items in object mode); 0 once
 * aborted or when ring is NULL. A snapshot. Any thread. */
SL_EXTERN size_t sl_ring_level(sl_ring *ring);

/* Fill *st, read under the ring's lock. Returns 0 or SL_EINVAL. Any thread. */
SL_EXTERN int sl_ring_stats_get(sl_ring *ring, sl_ring_stats *st);

/* ------------------------------------------------------------------------
 * sl_stage — a node of a pipeline
 *
 * A stage is an ops table and a context. Which ops are set decides its kind:
 *
 *   source     read                 (Node's Readable: _read + push)
 *   transform  transform [+ flush]  (Node's Transform)
 *   sink       write [+ final]      (Node's Writable)
 *   duplex     read + write [+ final]: two independent directions, e.g. a
 *              socket; the write side consumes the stage's input, the read
 *              side produces its output, each on its own thread.
 *
 * The framework owns the loop: it reads the input ring, calls the op, and
 * writes what the op pushes to the output ring(s); at end of stream it calls
 * flush or final exactly once and closes the output. An op returns 0 or a
 * negative SL_E* code (a source's read returns SL_EOF at its end; any other
 * positive return but SL_DONE counts as 0) and may explain a failure with
 * sl_stage_set_error(). An op that gets an errno from a system call returns
 * sl_err_from_errno(errno).
 *
 * Finishing early with success (Node's `for await ... break`, take(n)):
 * an op that wants no more input returns SL_DONE. The stage then ends as
 * if its input had ended there: the chunks it was not given are released,
 * flush or final still runs exactly once, and its output, if any, is
 * closed normally, so the stages after it see an ordinary end of stream.
 * The stages before it are stopped, as a cancel would stop them but
 * without failing the pipeline: the rings into the stage are aborted
 * (their chunks released), and a producer whose every consumer is gone is
 * stopped in turn: its sl_stage_push returns SL_ECANCELED, its
 * sl_stage_cancelled returns 1 and its sl_stage_cancel_fd turns readable,
 * so a source blocked on an idle pipe wakes; whatever it then returns
 * ends it quietly (sl_stage_status SL_DONE), and the stop goes on up to
 * its own producers. A producer with several consumers (a tee) goes on
 * feeding those that still read, and is stopped only when all are gone.
 * A duplex stopped on its read side keeps its write side running. The
 * pipeline ends with 0 unless something else failed: a stage's error,
 * before or after, and a cancel still win. SL_DONE from a source's read
 * is SL_EOF; from sync it ends the stage as from transform or write (the
 * marker is dropped; flush or final then runs); from flush, final or
 * anywhere else it counts as 0.
 *
 * Ops run on the stage's own thread, named "sl:<name>" (cut to 15 bytes;
 * the name is set before the first op runs and before sl_pipeline_start
 * returns), with every async signal blocked.
 * ---------------------------------------------------------------------- */

typedef struct sl_stage sl_stage;
typedef struct sl_pipeline sl_pipeline;

typedef struct sl_stage_ops {
  /* Source / duplex read side: produce chunks with sl_stage_push (zero or
   * more per call). Return 0 to be called again, SL_EOF at the end of the
   * stream (chunks pushed in the same call are kept), or an error. */
  int (*read)(sl_stage *stage, void *ctx);

  /* Transform: in is owned by the op, which pushes it on, pushes other
   * chunks and releases it, or releases it. */
  int (*transform)(sl_stage *stage, void *ctx, sl_buf *in);

  /* Transform: at end of stream, push what is left. Optional. */
  int (*flush)(sl_stage *stage, void *ctx);

  /* Sink / duplex write side: consume in, which the op owns. */
  int (*write)(sl_stage *stage, void *ctx, sl_buf *in);

  /* Sink / duplex write side: at end of stream. Optional. */
  int (*final)(sl_stage *stage, void *ctx);

  /* Release ctx. Called exactly once, by sl_stage_free or sl_pipeline_free,
   * after the stage's threads have ended. Optional. */
  void (*destroy)(void *ctx);

  /* Transform / sink: a flush marker arrived, in order with the data (see
   * sl_stage_push_flush): push out everything held back (a compressor
   * ends its block with Z_SYNC_FLUSH; a sink flushes its descriptor). The
   * framework then passes the marker on. Optional: without it the marker
   * just passes through. transform and write never see markers. */
  int (*sync)(sl_stage *stage, void *ctx);
} sl_stage_ops;

/* Create a stage named name (copied; shown in errors, stats and the thread
 * name) running ops on ctx. ops is copied. On success *out owns the stage
 * until it is added to a pipeline. Returns 0; SL_EINVAL when out, name or
 * ops is NULL, name is empty or the ops fit no kind; SL_ENOMEM. On failure
 * destroy is not called and ctx stays the caller's. Any thread. */
SL_EXTERN int sl_stage_new(sl_stage **out, const char *name,
                           const sl_stage_ops *ops, void *ctx);

/* Free a stage that was never added to a pipeline: calls destroy(ctx).
 * NULL, or a stage that belongs to a pipeline (which frees it), is a
 * no-op. The thread that owns the stage. */
SL_EXTERN void sl_stage_free(sl_stage *stage);

/* The options of the ring(s) that carry this stage's output: high and low
 * marks (SL_LWM_DEFAULT: half) and mode (enum sl_ring_mode). Unset, the
 * pipeline's defaults apply. Before sl_pipeline_start, from the building
 * thread. Returns 0; SL_EINVAL (stage NULL, a sink, or marks and mode as
 * sl_ring_new refuses); SL_EBUSY once started. */
SL_EXTERN int sl_stage_set_output(sl_stage *stage, size_t hwm, size_t lwm,
                                  int mode);

/* How a stage with several inputs (fan-in) takes its chunks. */
enum sl_merge_mode {
  SL_MERGE_ARRIVAL = 0,    /* as they arrive: one thread per input, the ops
                            * never run at once; each input's order kept */
  SL_MERGE_ROUND_ROBIN = 1 /* one chunk from each open input in turn, on
                            * one thread. Beware a tee whose branches meet
                            * again here: the tee may wait on one branch
                            * while this stage waits on the other */
};

/* Set how the stage merges several inputs (default SL_MERGE_ARRIVAL).
 * Before sl_pipeline_start, from the building thread. Returns 0; SL_EINVAL
 * for NULL, a source or an unknown mode; SL_EBUSY once started. */
SL_EXTERN int sl_stage_set_merge(sl_stage *stage, int mode);

/* The stage's name, owned by the stage (NULL for NULL). Any thread. */
SL_EXTERN const char *sl_stage_name(const sl_stage *stage);

/* The stage's context, still owned as sl_stage_new says (NULL for NULL).
 * Any thread. */
SL_EXTERN void *sl_stage_ctx(const sl_stage *stage);

/* Push a chunk downstream, waiting while the output ring is full (this is
 * where backpressure pauses the stage). Always takes ownership of buf.
 * With several consumers (a tee) each gets a reference, in turn; one that
 * finished early (SL_DONE, see sl_stage_ops) is skipped.
 *
 * Only the stage's own thread may push, the one running its ops (for a
 * stage of several input threads, the one whose op is running; for a
 * duplex, its read side): a ring has one writer. A push from any other
 * thread is refused with SL_EINVAL and buf released, before the ring is
 * touched.
 *
 * Returns 0; SL_ECANCELED when the pipeline is failing or cancelled, or
 * when every consumer of the stage finished early and the stage is
 * stopped: the op should then return that code at once; SL_EINVAL when
 * stage has no output, buf is NULL, or the calling thread is not the
 * stage's own. */
SL_EXTERN int sl_stage_push(sl_stage *stage, sl_buf *buf);

/* A byte buffer of at least cap bytes from the pipeline's pool, owned by
 * the caller; cap 0 asks for the pipeline's buffer size (what a source
 * reading a file wants). Returns 0, SL_EINVAL, SL_ENOMEM. From the stage's
 * ops. */
SL_EXTERN int sl_stage_buf(sl_stage *stage, size_t cap, sl_buf **out);

/* The pool of the stage's pipeline, owned by the pipeline (NULL before the
 * stage joins one). Any thread. */
SL_EXTERN sl_pool *sl_stage_pool(const sl_stage *stage);

/* Explain the error the op is about to return: the pipeline reports it as
 * "<stage>: <message>". The first message per failure is kept (at most 255
 * bytes). From the stage's own ops. */
SL_EXTERN void sl_stage_set_error(sl_stage *stage, const char *fmt, ...)
    SL_PRINTF(2, 3);

/* 1 once the pipeline is failing or cancelled, or once the stage is
 * stopped because every consumer of its output finished early (SL_DONE;
 * on a duplex this concerns its read side only, so its write side's
 * thread still sees 0 then): a long-running op (a source waiting on
 * something the framework does not see) should poll it and return
 * SL_ECANCELED. Any thread. */
SL_EXTERN int sl_stage_cancelled(const sl_stage *stage);

/* A descriptor that becomes readable (POLLIN) once the pipeline is failing
 * or cancelled, or once sl_stage_cancelled turns 1 for the calling op's
 * thread (the stage stopped because its consumers finished early), and
 * stays readable: an op that blocks in poll() on its own descriptor adds
 * this one and returns SL_ECANCELED when it fires, so a source reading an
 * idle pipe or socket is woken by sl_pipeline_cancel and by a consumer
 * that had enough. One per stage (two for a duplex, one per side), made
 * on first use, owned by the pipeline; never read or close it. Returns
 * the descriptor, or SL_EINVAL (no pipeline), SL_ENOMEM / SL_EIO (none
 * could be made). From the stage's ops. */
SL_EXTERN int sl_stage_cancel_fd(sl_stage *stage);

/* Push a flush marker downstream, in order with the data: every stage's
 * sync op runs as it passes (compressors emit what they hold, sinks flush),
 * then it goes on to the end of the pipeline, where it is dropped. What a
 * streaming response needs for low latency. Blocks like sl_stage_push.
 * Returns as sl_stage_push, or SL_ENOMEM. From the stage's own ops. */
SL_EXTERN int sl_stage_push_flush(sl_stage *stage);

/* How the stage ended: 0 when it finished its stream (also when that was
 * before another stage failed, and when it finished early with SL_DONE),
 * its own error when it failed first, SL_ECANCELED when it was stopped by
 * another stage's failure or a cancel, or SL_DONE when it was stopped
 * because every consumer of its output finished early; SL_EINVAL for
 * NULL. Final after sl_pipeline_wait; before, 0 or the outcome so far.
 * Any thread. */
SL_EXTERN int sl_stage_status(const sl_stage *stage);

/* ------------------------------------------------------------------------
 * sl_threads — stage threads kept for reuse
 *
 * Each stage runs on a thread of its own, started by sl_pipeline_start and
 * joined by sl_pipeline_wait. A server that makes a pipeline per
 * connection pays for a thread's start and end on every connection; given
 * a set (sl_pipeline_opts.threads), pipelines take their stage threads
 * from it, and a thread whose stage has ended waits there, named
 * "sl:idle", for the next stage of any pipeline sharing the set. While a
 * stage runs the thread is its own, as without a set. A stage finds in its
 * thread's thread-local variables what the thread's last stage left there.
 * ---------------------------------------------------------------------- */

typedef struct sl_threads sl_threads;

typedef struct sl_threads_stats {
  uint64_t created; /* threads started */
  uint64_t reused;  /* stages given to a thread that was waiting */
  size_t idle;      /* threads waiting now */
  size_t busy;      /* threads running a stage now */
} sl_threads_stats;

/* Create a set of threads that keeps up to max_idle finished stage
 * threads waiting for the next stage (a thread that ends its stage with
 * max_idle already waiting ends too), each with a stack of stack_size
 * bytes (0 keeps the system's). No thread starts until a pipeline starts.
 * On success *out owns the set. Returns 0, SL_EINVAL (out NULL), SL_ENOMEM.
 * Any thread. */
SL_EXTERN int sl_threads_new(sl_threads **out, size_t max_idle,
                             size_t stack_size);

/* Take another owner reference to t and return it; NULL returns NULL. Each
 * pipeline given the set takes one and releases it in sl_pipeline_free.
 * Any thread. */
SL_EXTERN sl_threads *sl_threads_ref(sl_threads *t);

/* Release one reference. The last release ends the waiting threads and
 * joins them, so it must not come from one of them (a finished callback,
 * say, runs on a stage thread). NULL is a no-op. Any thread, once per
 * reference. */
SL_EXTERN void sl_threads_free(sl_threads *t);

/* Fill *st with the set's counters, read under its lock. Returns 0 or
 * SL_EINVAL. Any thread. */
SL_EXTERN int sl_threads_stats_get(sl_threads *t, sl_threads_stats *st);

/* End the waiting threads beyond the `keep` that ran last, and join them
 * before returning: their stacks go back to the system. For an owner
 * that gives memory back after a quiet period (see sl_pool_trim); threads
 * running a stage are not touched, and later stages start new threads
 * where none waits. Not from a thread of the set (a stage's op or a
 * finished callback). Returns 0, or SL_EINVAL (t NULL). */
SL_EXTERN int sl_threads_trim(sl_threads *t, size_t keep);

/* ------------------------------------------------------------------------
 * sl_pipeline — stages, rings and threads
 * ---------------------------------------------------------------------- */

typedef void (*sl_finished_cb)(sl_pipeline *p, int status, void *arg);

typedef struct sl_pipeline_opts {
  size_t buf_size;     /* pooled buffer size; 0 picks 64 KiB, or the size of
                        * pool when one is given (any other is SL_EINVAL) */
  size_t hwm;          /* default high mark of every ring; 0 picks 256 KiB */
  size_t lwm;          /* default low mark; 0 or SL_LWM_DEFAULT: half of hwm
                        * (unlike sl_ring_opts, where 0 is a real mark) */
  size_t max_cached;   /* pool's per-class free-list bound; 0: no bound
                        * (unused with pool: that pool's bound holds) */
  size_t stack_size;   /* stage thread stack; 0 keeps the system's */
  size_t trace_events; /* events each thread's trace buffer holds, rounded
                        * up to a power of two; 0 picks 4096 (about 100
                        * KiB a thread); see sl_pipeline_trace */
  sl_pool *pool;       /* NULL: the pipeline makes a pool of its own. Else the
                        * pool its buffers come from, shared with whoever else
                        * uses it (a server's many short pipelines reuse each
                        * other's buffers instead of asking the allocator for
                        * fresh memory); the pipeline takes a reference
                        * (sl_pool_ref) and releases it in sl_pipeline_free.
                        * sl_pipeline_pool and its stats are then the shared
                        * pool's. */
  sl_threads *threads; /* NULL: the pipeline starts a thread per stage and
                        * ends it. Else stage threads come from this set
                        * (see sl_threads); the pipeline takes a reference
                        * and releases it in sl_pipeline_free. stack_size
                        * must then be 0 or the set's. */
} sl_pipeline_opts;

typedef struct sl_stage_stats {
  const char *name;
  uint64_t chunks_in, bytes_in;   /* read from the input ring */
  uint64_t chunks_out, bytes_out; /* pushed to the output ring(s) */
  uint64_t busy_ns;          /* running ops: wall time less the two below */
  uint64_t blocked_full_ns;  /* waiting on a full output (backpressured) */
  uint64_t blocked_empty_ns; /* waiting on an empty input (starved) */
  int running;               /* 1 while its thread(s) run */
  int status;                /* as sl_stage_status, 0 while running */
} sl_stage_stats;

/* Create an empty pipeline. opts may be NULL for the defaults. Returns 0,
 * SL_EINVAL (out NULL, lwm >= hwm, a buf_size other than that of the pool
 * given, a stack_size other than that of the thread set given), SL_ENOMEM.
 * Any thread. */
SL_EXTERN int sl_pipeline_new(sl_pipeline **out, const sl_pipeline_opts *opts);

/* Add stages in order and link each to the next with a ring:
 * sl_pipeline_chain(p, src, upper, sink, NULL). At least two stages; each
 * but the last must produce (source, transform, duplex) and have no
 * consumer yet, each but the first must consume (transform, sink, duplex)
 * and have no producer yet. A stage already added to p may be named again
 * to link onto it; a stage belongs to one pipeline. On 0 the pipeline owns
 * the stages; on failure nothing changed and the caller still owns them.
 *
 * The list ends with NULL, and that is the only NULL it may hold: a NULL
 * stage (a constructor that failed, its error not checked) is SL_EINVAL
 * and builds nothing, never a shorter pipeline. sl_pipeline_chain is a
 * macro that hands its whole argument list, as an array, to
 * sl_pipeline_chain_list, so it can see past a NULL: any number of stages,
 * each argument evaluated once. A list whose last argument is not NULL is
 * SL_EINVAL too (it could not be told from a list ending in a failed
 * stage).
 *
 * Returns 0, SL_EINVAL (p NULL, fewer than two stages, a NULL stage, no
 * NULL at the end, a stage twice, a stage in another pipeline, kinds or
 * links that do not fit), SL_EBUSY once started, SL_ENOMEM. The thread
 * that builds the pipeline. */
#ifndef __cplusplus
#define sl_pipeline_chain(p, ...)                                   \
  sl_pipeline_chain_list((p), (sl_stage *const[]){__VA_ARGS__},     \
                         sizeof((sl_stage *const[]){__VA_ARGS__}) / \
                             sizeof(sl_stage *))
#endif

/* What the sl_pipeline_chain macro calls: v holds n entries, the stages
 * and, last, a NULL (v[n - 1]); as sl_pipeline_chain otherwise. Returns
 * as sl_pipeline_chain. The thread that builds the pipeline. */
SL_EXTERN int sl_pipeline_chain_list(sl_pipeline *p, sl_stage *const *v,
                                     size_t n);

/* The function sl_pipeline_chain was before it became a macro, kept for
 * programs built against that header and for C++ (which has no compound
 * literals): it takes the stages up to the first NULL, at most 64, so a
 * NULL stage ends the list there. Prefer sl_pipeline_chainv, or the
 * macro. Write the name in parentheses to call it from C. */
SL_EXTERN int(sl_pipeline_chain)(sl_pipeline *p, sl_stage *first, ...);

/* Add the n stages of the array stages, in order, and link each to the
 * next, as sl_pipeline_chain does with its arguments, with the same rules
 * (and no NULL at the end). The array is only read and stays the
 * caller's. On 0 the pipeline owns the stages; on
 * failure nothing changed and the caller still owns them. Returns 0,
 * SL_EINVAL (p or stages NULL, n below 2, a NULL stage, or as
 * sl_pipeline_chain), SL_EBUSY once started, SL_ENOMEM. The thread that
 * builds the pipeline. */
SL_EXTERN int sl_pipeline_chainv(sl_pipeline *p, sl_stage *const *stages,
                                 size_t n);

/* Link from to to: the graph form of chain. A producer linked to several
 * consumers is a tee (fan-out): every branch gets the same buffers, by
 * reference, and the slowest branch governs; a consumer linked from
 * several producers merges them (fan-in, see sl_stage_set_merge) and ends
 * when all have ended. The graph must stay acyclic (checked by start).
 * Either stage may already be in p; on 0 the pipeline owns both, on
 * failure nothing changed. Returns 0; SL_EINVAL (NULL, from and to the
 * same stage, a stage in another pipeline, from does not produce or to
 * does not consume, or the pair is linked already); SL_EBUSY once
 * started; SL_ENOMEM. The thread that builds the pipeline. */
SL_EXTERN int sl_pipeline_link(sl_pipeline *p, sl_stage *from, sl_stage *to);

/* A stage that passes every chunk on unchanged: link it to several
 * consumers for a tee, from several producers for a merge (mode as
 * sl_stage_set_merge). name NULL picks "tee" or "merge". Returns as
 * sl_stage_new; sl_merge_new also SL_EINVAL for an unknown mode. Any
 * thread. */
SL_EXTERN int sl_tee_new(sl_stage **out, const char *name);
SL_EXTERN int sl_merge_new(sl_stage **out, const char *name, int mode);

/* Call cb(p, status, arg) exactly once, when every stage thread has ended,
 * from the last stage thread to end (or from sl_pipeline_start's thread
 * when start failed before any thread ran). No lock is held; cb must not
 * call sl_pipeline_wait or _free. cb NULL removes it. Before start, from
 * the building thread. Returns 0, SL_EINVAL (p NULL), SL_EBUSY once
 * started. */
SL_EXTERN int sl_pipeline_on_finished(sl_pipeline *p, sl_finished_cb cb,
                                      void *arg);

/* Start every stage's thread(s). The graph must be complete: each stage
 * with an input linked to a producer, each with an output linked to a
 * consumer, and at least one stage. Returns 0; SL_EINVAL (NULL or an
 * incomplete graph: nothing happened, the pipeline may be completed and
 * started again); SL_EBUSY (started before); SL_ENOMEM or SL_ETHREAD: the
 * pipeline failed with that code, the threads already started wind down,
 * the finished callback fires, and sl_pipeline_wait returns the code.
 * The building thread. */
SL_EXTERN int sl_pipeline_start(sl_pipeline *p);

/* Wait until every stage thread has ended, join them, and return the first
 * error (0 when all went well, also when a stage finished early with
 * SL_DONE; SL_ECANCELED after sl_pipeline_cancel). May be called again,
 * from several threads at once: it returns the same. Any thread once
 * sl_pipeline_start has returned, except one of p's own: called from a
 * thread running one of p's stages (its ops, a thread it reuses from an
 * sl_threads set) or from p's finished callback, it would wait for itself,
 * and returns SL_EDEADLK at once, changing nothing. SL_EINVAL when start
 * was never called or returned SL_EINVAL. (A thread the library cannot
 * tell is p's, a map's worker or the watchdog's, still must not call it.)
 * After any non-zero return sl_pipeline_error is not NULL. */
SL_EXTERN int sl_pipeline_wait(sl_pipeline *p);

/* Fail the pipeline with SL_ECANCELED unless it already failed or every
 * stage thread has ended: every ring is aborted and every stage winds down.
 * Before start, the pipeline starts already cancelled. Returns at once;
 * use sl_pipeline_wait to join. Any thread, stage threads and the finished
 * callback included, but not a signal handler (it takes locks: from a
 * handler, write to a pipe and cancel from the loop that reads it). A
 * no-op when NULL. */
SL_EXTERN void sl_pipeline_cancel(sl_pipeline *p);

/* Cancel if running, wait, call every stage's destroy once, release every
 * buffer and free the pipeline. Returns 0 (also for NULL, a no-op), or
 * SL_EDEADLK, having done nothing at all, when called from one of p's own
 * stage threads or its finished callback (see sl_pipeline_wait): it would
 * wait for itself, then free the thread's own stage under it. Another
 * thread must free p then. Freeing p twice is undefined. Any thread but
 * p's own, once; no other call on p may run or follow. */
SL_EXTERN int sl_pipeline_free(sl_pipeline *p);

/* The first error as "<stage>: <message>" (the message given with
 * sl_stage_set_error, else sl_strerror of the code), or the bare message
 * when no stage caused it (cancel, a failed start). Once set it does not
 * change. While there is none: why the latest refused sl_pipeline_start
 * or sl_pipeline_wait was refused ("start: a stage that produces has no
 * consumer", "wait: called from one of the pipeline's own threads", ...),
 * else NULL. So after sl_pipeline_start or sl_pipeline_wait returned
 * non-zero it is never NULL, and a program may print it without a check
 * (a refused sl_pipeline_chain sets nothing: print sl_strerror of its
 * code). The string lives as long as p. Any thread; NULL for p NULL. */
SL_EXTERN const char *sl_pipeline_error(sl_pipeline *p);

/* The pipeline's buffer pool (for sources that fill pooled buffers and for
 * memory statistics), owned by the pipeline; NULL for NULL. Any thread. */
SL_EXTERN sl_pool *sl_pipeline_pool(sl_pipeline *p);

/* Number of stages (0 for NULL). Any thread, once building is done. */
SL_EXTERN size_t sl_pipeline_stage_count(const sl_pipeline *p);

/* The i-th stage, in the order they were added (NULL when out of range),
 * owned by the pipeline. Any thread, once building is done. */
SL_EXTERN sl_stage *sl_pipeline_stage(const sl_pipeline *p, size_t i);

/* The ring carrying stage's output to its first consumer, owned by the
 * pipeline (NULL for a sink, or before start). For its stats, level and
 * the like; only the stage's own thread may write to it. Any thread after
 * sl_pipeline_start returned. */
SL_EXTERN sl_ring *sl_stage_output(const sl_stage *stage);

/* Counters of stage i (in the order stages were added), readable at any
 * moment without stopping anything. Every figure only grows from one call
 * to the next, whichever thread reads, and a wait going on counts up to
 * now. The name lives as long as p.
 *
 * Any thread, at any moment from sl_pipeline_new until sl_pipeline_free
 * begins, also while the building thread is still adding stages or is
 * inside sl_pipeline_start: until start has made the rings, each stage
 * added so far shows its name, zeros, running 0 and its status. Returns
 * 0, or SL_EINVAL (p or st NULL, or i not below the number of stages
 * added so far). */
SL_EXTERN int sl_pipeline_stage_stats(sl_pipeline *p, size_t i,
                                      sl_stage_stats *st);

/* Print a table of every stage's and ring's counters to f, and name the
 * bottleneck (see sl_pipeline_bottleneck). Any thread, at any moment from
 * sl_pipeline_new until sl_pipeline_free begins, as
 * sl_pipeline_stage_stats: until start has made the rings, the table
 * lists the stages added so far with zeros, and no ring and no
 * bottleneck. f is written with no lock of the pipeline held. Returns 0,
 * SL_EINVAL (p or f NULL), or SL_EIO when writing fails. */
SL_EXTERN int sl_pipeline_stats_print(sl_pipeline *p, FILE *f);

/* The index of the stage that holds the pipeline back: the one busy while
 * its neighbours wait on it, its producers blocked on a full ring into it
 * and its consumers starved on an empty ring out of it. Each stage scores
 * its busy share of its own time times the sum of the share of their own
 * time its producers were blocked on it and the share of theirs its
 * consumers were starved by it (each share between 0 and 1, as
 * sl_pipeline_stats_print shows them), and when no neighbour waited at
 * all the busiest stage is named. Returns 0
 * with *index set; SL_EINVAL when p or index is NULL, p has no stage, or
 * no stage thread has run yet, which is always the case until start has
 * made the rings (*index is then untouched). Any thread, at any moment as
 * sl_pipeline_stage_stats. */
SL_EXTERN int sl_pipeline_bottleneck(sl_pipeline *p, size_t *index);

/* Describe to f where the pipeline stands now: each stage thread's state
 * (running an op, blocked on a full output ring, waiting on an empty
 * input ring, ended) and for how long, each ring's state (full, empty,
 * flowing, closed, aborted) with its level, and the stage suspected of
 * holding it up (one running an op while the ring into it is full), if
 * any. Nothing is stopped or changed; the states are read at slightly
 * different moments, so a flowing pipeline may show a transient state.
 * Meant for a watchdog callback, a signal-handling thread or a debugger.
 * Any thread (not a signal handler), at any moment as
 * sl_pipeline_stage_stats: until start has made the rings it gives the
 * number of stages added so far and "not started"; after the end, every
 * thread ended. Returns 0, SL_EINVAL (p or f NULL), SL_EIO when writing
 * fails. */
SL_EXTERN int sl_pipeline_stall_report(sl_pipeline *p, FILE *f);

typedef void (*sl_watchdog_cb)(sl_pipeline *p, void *arg);

/* Watch the pipeline for stalls: a thread of the pipeline's own sleeps on
 * a condition variable (no polling loop of its own) and looks every ms/4
 * or so at the sum of chunks moved by every stage; when nothing moved for
 * ms milliseconds it calls cb(p, arg) on that thread, once per stall (it
 * is armed again when chunks move). The callback typically calls
 * sl_pipeline_stall_report or sl_pipeline_cancel; it must not call
 * sl_pipeline_wait or sl_pipeline_free. The thread ends when the last
 * stage thread ends (it is woken, not polled) and is joined by
 * sl_pipeline_wait, so no callback runs once that returned (one that
 * began just before the end may still be running while the last stage
 * thread ends). A
 * source that waits for input (a quiet socket) counts as a stall too.
 * ms 0 or cb NULL turns the watchdog off. Before start, from the
 * building thread. Returns 0, SL_EINVAL (p NULL), SL_EBUSY once started,
 * SL_ENOMEM. */
SL_EXTERN int sl_pipeline_set_watchdog(sl_pipeline *p, unsigned ms,
                                       sl_watchdog_cb cb, void *arg);

/* Record a timeline of the run and write it to the file at path as a
 * Chrome trace-event JSON object ({"traceEvents": [...],
 * "displayTimeUnit": "ms"}), which Perfetto (ui.perfetto.dev) and
 * chrome://tracing open. Each stage thread is a named track ("sl:<stage>",
 * with /r, /w or /<input> for stages of several threads) of spans "busy"
 * (running its ops), "blocked full" (waiting on a full output ring: the
 * backpressure) and "blocked empty" (waiting on an empty input ring);
 * each ring is a counter track of its level, sampled every 2 ms while
 * anything moves.
 *
 * Memory is bounded: each stage thread appends its spans, with no lock,
 * to a buffer of its own (opts.trace_events entries), which a thread of
 * the pipeline streams to the file. That thread looks every 2 ms while
 * it finds new spans or ring levels that changed, and backs off, doubling
 * its sleep up to 128 ms, while it finds nothing, so an idle pipeline is
 * not polled; a stage thread whose buffer is half full wakes it at once
 * (one signal, and only when it sleeps). Spans shorter than 5 us are
 * merged into their neighbours; when a thread fills its buffer before the
 * writer gets to run its newest spans are dropped and counted
 * (otherData.dropped_events). The file is complete once sl_pipeline_wait
 * returns. With no trace asked for, a stage pays nothing for it.
 *
 * The file is created (truncated) now, and closed by the time
 * sl_pipeline_wait returns. A second call replaces the first (whose file
 * stays empty). Before start, from the building thread. Returns 0;
 * SL_EINVAL (p or path NULL); SL_EBUSY once started; SL_ENOMEM; or the
 * error of opening path (SL_ENOENT, SL_EACCES, ...). An error writing or
 * closing the file after start does not fail the pipeline (the trace only
 * watches it): the writing stops and sl_pipeline_trace_error says why. */
SL_EXTERN int sl_pipeline_trace(sl_pipeline *p, const char *path);

/* The same, to f, which stays the caller's: the trace is written and f
 * flushed by the time sl_pipeline_wait returns, and f is not closed; a
 * write or the flush failing shows in sl_pipeline_trace_error (and in
 * ferror(f)), and the caller's fclose may fail too. f NULL turns the
 * trace off. Before start, from the building thread. Returns 0, SL_EINVAL
 * (p NULL), SL_EBUSY once started, SL_ENOMEM. */
SL_EXTERN int sl_pipeline_trace_file(sl_pipeline *p, FILE *f);

/* The first error writing the trace: 0 while there is none (or no trace
 * was asked for), else its code from the errno of the failed write,
 * flush or close (SL_ENOSPC, SL_EIO, SL_EDQUOT, ...). It is final once
 * sl_pipeline_wait has returned; sl_pipeline_wait's own result never
 * includes it. The building thread before start; any thread once
 * sl_pipeline_start has returned. Returns the code, or SL_EINVAL for p
 * NULL. */
SL_EXTERN int sl_pipeline_trace_error(sl_pipeline *p);

#ifdef __cplusplus
}
#endif

/* The stock stages, each in its own header. */
#include <sluice/bridge.h>
#include <sluice/fd.h>
#include <sluice/map.h>
#include <sluice/pgzip.h>
#include <sluice/stages.h>
#include <sluice/zlib.h>

#endif /* SLUICE_H */

/* SPDX-License-Identifier: MIT */
/*
 * Internal declarations shared by the library's files and its tests. Not
 * installed. Internal non-static names start with sl__.
 */
#ifndef SLUICE_INT_H
#define SLUICE_INT_H

#include "sluice.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define SL_CACHELINE 64

/* buf.c: the chunk, visible inside the library so the ring reads a length
 * without a call. */
enum {
  BUF_OBJECT = 1u,
  BUF_CACHEABLE = 2u,
  BUF_FLUSH = 4u,
  BUF_CHECKPOINT = 8u, /* a flush marker with a callback: obj, dtor */
  BUF_WRAP = 16u,      /* bytes of the caller's (data): dtor(obj) frees */
  BUF_CLASS_SHIFT = 8
};

struct sl_buf {
  atomic_uint refs;
  unsigned flags;
  sl_pool *pool; /* NULL for a plain allocation */
  size_t len, cap;
  unsigned char *data;
  void *obj;
  union {
    void (*dtor)(void *);    /* object, wrap: releases obj */
    sl_checkpoint_cb passed; /* checkpoint: told whether it passed */
  };
  sl_buf *next;        /* free-list link while cached */
  atomic_uint dropped; /* checkpoint: a reference was released unpassed */
};

/* alloc.c: every allocation goes through these (sl_set_allocator). */
/* buf.c: a sink's successful sync of a checkpoint marker releases its
 * reference as passed (sl_buf_unref releases it as dropped). Any other
 * buffer is simply released. */
void sl__buf_pass(sl_buf *buf);

void *sl__malloc(size_t size);
void *sl__calloc(size_t count, size_t size);
void *sl__realloc(void *ptr, size_t size);
void sl__free(void *ptr);
char *sl__strdup(const char *s);
/* Zeroed, aligned to SL_CACHELINE (for structs with padded counters). */
void *sl__aligned_calloc(size_t size);
void sl__aligned_free(void *ptr);

/* clock.c: CLOCK_MONOTONIC in nanoseconds. */
uint64_t sl__now_ns(void);

/* ring.c: for tests and the stall report. Block until the writer
 * (SL__WRITER) or reader (SL__READER) of ring is waiting inside the ring.
 * Returns 0; the ring's abort code once it is aborted; SL_ECLOSED once it
 * is closed and the side can no longer block. */
enum { SL__WRITER = 0, SL__READER = 1 };
int sl__ring_wait_blocked(sl_ring *ring, int side);
/* ring.c, for tests: the reader's spin budget in pauses (see reader_spin
 * in ring.c), and its bounds. Read it on the reader's thread or after the
 * reader's last read, ordered by a join. */
unsigned sl__ring_spin_budget(const sl_ring *ring);
enum { SL__RING_SPIN_FLOOR = 16, SL__RING_SPIN_CEILING = 1024 };

/* ring.c, for bridges: a side that must not sleep arms a note instead of
 * waiting. The note's function is set once, before the ring is used
 * (sl__ring_set_note), and is called on the other side's thread (or the
 * thread that closes or aborts the ring) with no lock held, once per arm.
 * sl__ring_arm(ring, SL__WRITER): 0 when there is room now (nothing
 * armed), SL_AGAIN when armed (the note fires once the level falls to the
 * low mark, or at a stop), or the stop code (SL_ECLOSED, an abort code).
 * sl__ring_arm(ring, SL__READER): 0 when a chunk is ready, SL_EOF, an
 * abort code, or SL_AGAIN when armed (the note fires when a chunk, the end
 * of stream or an abort arrives). Only the side's own thread arms. */
typedef void (*sl__ring_note_fn)(void *arg);
void sl__ring_set_note(sl_ring *ring, int side, sl__ring_note_fn fn, void *arg);
int sl__ring_arm(sl_ring *ring, int side);

/* ring.c, for tracing: after each wait of side ends, fn(arg, start_ns,
 * end_ns) on the waiting thread, no lock held. Set before the ring is
 * used. */
typedef void (*sl__ring_wait_fn)(void *arg, uint64_t start_ns, uint64_t end_ns);
void sl__ring_set_wait_hook(sl_ring *ring, int side, sl__ring_wait_fn fn,
                            void *arg);

/* trace.c, for tests. sl__trace_tune: the trace writer's first and
 * longest sleep (UINT64_MAX: no timeout, only a wake) and its shortest
 * span (0 keeps every wait), in place of 2 ms, 128 ms and 5 us. Before
 * start, after sl_pipeline_trace(_file). Returns 0, SL_EINVAL (no trace,
 * period 0, max below period), SL_EBUSY once started.
 * sl__trace_wait_caught_up: block until the trace writer sleeps owing
 * nothing (no thread's queue half full), or has ended. From the thread
 * that started the pipeline, before sl_pipeline_wait. Returns 0, or
 * SL_EINVAL when no trace writer runs. */
int sl__trace_tune(sl_pipeline *p, uint64_t period_ns, uint64_t max_ns,
                   uint64_t merge_ns);
int sl__trace_wait_caught_up(sl_pipeline *p);

/* pthread_create's error as the library's code. */
static inline int sl__thread_err(int err) {
  return err == ENOMEM || err == EAGAIN ? SL_ENOMEM : SL_ETHREAD;
}

/* A thread's name: the kernel keeps 15 bytes and the terminating NUL. */
#define SL__THREAD_NAME_MAX 16

/* threads.c, for pipeline.c: run fn(arg) on a thread of the set, one
 * waiting or a new one, named name (when not NULL) before fn runs; *tid
 * is that thread. job records the end: join waits for it. Returns 0,
 * SL_ENOMEM, SL_ETHREAD. */
struct sl__thread_job {
  bool done; /* under the set's lock */
};
int sl__threads_run(sl_threads *t, void *(*fn)(void *), void *arg,
                    struct sl__thread_job *job, const char *name,
                    pthread_t *tid);
void sl__threads_join(sl_threads *t, struct sl__thread_job *job);
size_t sl__threads_stack_size(const sl_threads *t);

#endif

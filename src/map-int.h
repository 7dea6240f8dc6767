/* SPDX-License-Identifier: MIT */
/*
 * The engine behind the map stage and the parallel gzip stage: a pool of
 * worker threads fed by the stage's own thread, a bounded number of jobs
 * in flight, and results handed back to the stage's thread in order.
 *
 * Only the stage's thread calls submit, drain and stop; run, emit and
 * emit_try are the owner's callbacks: run on a worker, emit on the stage's
 * thread, emit_try on whichever thread finishes the next result.
 */
#ifndef SLUICE_MAP_INT_H
#define SLUICE_MAP_INT_H

#include "stage-int.h"

typedef struct sl__map sl__map;

typedef struct sl__map_ops {
  /* On a worker: compute job (in and the owner's arg, both handed over)
   * into *out (NULL for nothing). Returns 0 or an SL_E* code. */
  int (*run)(void *owner, void *wctx, sl_buf *in, void *arg, sl_buf **out);
  /* On the stage's thread, in submit order (or completion order when
   * unordered): the job's result (owned by emit, may be NULL) and arg.
   * Returns 0 or an SL_E* code, which stops the engine. */
  int (*emit)(void *owner, sl_buf *out, void *arg);
  /* Optional: emit from whichever thread finishes the next result, a
   * worker included, without waiting. One thread emits at a time and the
   * engine's mutex orders one emitting thread's work before the next
   * one's, so emit and emit_try together keep a single writer of the
   * stage's output. Returns 0 (out handed over), SL_AGAIN (the output is
   * full: nothing was done, out and arg stay the engine's, and the stage's
   * thread emits them with emit, where it may wait) or an SL_E* code (out
   * released), which stops the engine. */
  int (*emit_try)(void *owner, sl_buf *out, void *arg);
  /* Called with the arg of a job that will never be emitted (a failure
   * or a stop cut it short), to free it. Optional. */
  void (*drop)(void *owner, void *arg);
  /* Per-worker state, as sl_map_ops. Optional. */
  int (*worker_init)(void *owner, unsigned i, void **wctx);
  void (*worker_fini)(void *owner, void *wctx);
} sl__map_ops;

/* Make the engine; the workers start at the first submit. At most
 * in_flight jobs are between submit and emit, and at most max_pending of
 * them (0: in_flight) are queued or running. Returns 0, SL_ENOMEM. */
int sl__map_new(sl__map **out, sl_stage *stage, const sl__map_ops *ops,
                void *owner, unsigned workers, unsigned in_flight,
                unsigned max_pending, bool unordered);

/* Optional, before the first submit: once min_jobs jobs are in flight,
 * take a new one only while the jobs in flight weigh less than max_bytes
 * (0: no byte bound), in_flight staying the most jobs. A job weighs the
 * larger of its input's length and the last result's until its own
 * result is filed, then that result's length; a stage thread that finds
 * the window full waits until it has drained to half. */
void sl__map_set_window(sl__map *m, size_t max_bytes, unsigned min_jobs);

/* Hand in and arg to a worker, first emitting finished results while all
 * in_flight slots or all max_pending places are taken, and waiting for a
 * result or for a job to finish when none is ready (that wait is
 * backpressure). Owns in and arg on every return. Returns 0 or the first error
 * (a run's, an emit's, or SL_ECANCELED when the pipeline is failing). */
int sl__map_submit(sl__map *m, sl_buf *in, void *arg);

/* Emit every result still in flight, in order. Returns as submit. */
int sl__map_drain(sl__map *m);

/* Stop and join the workers, dropping what was not emitted. Idempotent.
 * The owner's stage must call it before its thread ends, on every path:
 * set stage->on_exit to a function that does (see src/stage-int.h). */
void sl__map_stop(sl__map *m);

/* Stop, then free. NULL is a no-op. */
void sl__map_free(sl__map *m);

#endif

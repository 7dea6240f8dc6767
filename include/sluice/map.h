/* SPDX-License-Identifier: MIT */
/*
 * sluice/map.h — the ordered parallel map stage.
 *
 * Node's readable.map(fn, {concurrency}) and oneTBB's parallel filter, on
 * threads: one stage whose chunks are handed to N worker threads, at most
 * a fixed number in flight, and whose results leave in input order (or in
 * completion order, unordered). The stage's own thread dispatches; the
 * worker that finishes the next result pushes it and every ready one
 * behind it (one thread at a time, so the output keeps one writer), and
 * hands over to the stage's thread when the output is full: a worker
 * never waits on the consumer. A map is a drop-in replacement for a
 * transform whose work is per chunk and independent.
 *
 * Memory: by default at least 2N + 2 chunks (pigz's bound) and beyond
 * that as many as weigh less than 1 MiB, at most 256, are inside the
 * stage at once (a chunk weighs its input's length or, once mapped, its
 * result's); with in_flight set, at most in_flight chunks. A full stage
 * stops taking input, so backpressure runs through it like through any
 * stage.
 *
 * Included by <sluice.h>.
 */
/* The umbrella first, outside the guard: whichever header a program
 * includes first, every sub-header is read after the core and in the
 * umbrella's order, so each finds the types it uses. */
#include <sluice.h>

#ifndef SLUICE_MAP_H
#define SLUICE_MAP_H

#ifdef __cplusplus
extern "C" {
#endif

/* The work of a map. Every function but map is optional. */
typedef struct sl_map_ops {
  /* On a worker thread: turn in (owned by the call: release it or pass
   * it on) into *out (a chunk the call owns and hands over, or NULL to
   * emit nothing). wctx is the worker's own state from worker_init. May
   * call sl_stage_buf and sl_stage_set_error; must not push. Returns 0 or
   * a negative SL_E* code, which fails the pipeline (once). */
  int (*map)(sl_stage *stage, void *ctx, void *wctx, sl_buf *in, sl_buf **out);

  /* On worker thread i (0 .. workers-1) before its first chunk: make its
   * state (a compressor, a scratch buffer) in *wctx. Returns 0 or an
   * SL_E* code. */
  int (*worker_init)(void *ctx, unsigned i, void **wctx);

  /* On the same worker thread after its last chunk: free *wctx. */
  void (*worker_fini)(void *ctx, void *wctx);

  /* Release ctx, once, after every thread has ended. */
  void (*destroy)(void *ctx);
} sl_map_ops;

typedef struct sl_map_opts {
  unsigned workers;   /* worker threads; 0: the online processors, at most
                       * SL_MAP_MAX_WORKERS */
  unsigned in_flight; /* chunks inside the stage at once; 0: the window
                       * above (2 * workers + 2 chunks, more while they
                       * weigh less than 1 MiB, at most 256) */
  int unordered;      /* 1: emit results as they complete */
} sl_map_opts;

#define SL_MAP_MAX_WORKERS 256

/* A map stage named name running ops on ctx. opts NULL picks the
 * defaults. On success *out owns the stage until it is added to a
 * pipeline. Returns 0; SL_EINVAL (out, name or ops->map NULL, workers or
 * in_flight out of range); SL_ENOMEM. On failure destroy is not called.
 * The worker threads start with the pipeline and are joined before the
 * stage's thread ends, on every path. Any thread. */
SL_EXTERN int sl_map_new(sl_stage **out, const char *name,
                         const sl_map_ops *ops, void *ctx,
                         const sl_map_opts *opts);

/* Returns the number of online processors (at least 1): the default of
 * workers. Any thread. */
SL_EXTERN unsigned sl_cpu_count(void);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_MAP_H */

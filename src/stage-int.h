/*
 * The stage and pipeline structures, shared by stage.c (the loops a stage
 * thread runs), pipeline.c (building, starting, failing, joining) and
 * stats.c (counters and the table).
 */
#ifndef SLUICE_STAGE_INT_H
#define SLUICE_STAGE_INT_H

#include "sluice-int.h"

#include <signal.h>

enum stage_kind { KIND_SOURCE, KIND_TRANSFORM, KIND_SINK, KIND_DUPLEX };

#define SL_ERRMSG_MAX 256

/* Counters written by one thread and read by any: relaxed atomics, each
 * group on its own cache line so a duplex stage's two threads, and the
 * readers of the stats, do not share a line with a writer. */
struct sl_stage_counters {
  _Alignas(SL_CACHELINE) _Atomic uint64_t chunks, bytes;
};

/* One input thread's argument: the stage and which input it reads. */
struct sl_input {
  sl_stage *s;
  size_t idx;
};

struct sl_stage {
  char *name;
  sl_stage_ops ops;
  void *ctx;
  enum stage_kind kind;
  sl_pipeline *p; /* NULL until linked */

  /* Edges, in the order they were linked; the rings are made by
   * sl_pipeline_start, outs[i] feeding cons[i], ins[i] fed by prods[i]. */
  sl_stage **cons, **prods;
  size_t ncons, nprods, cap_cons, cap_prods;
  sl_ring **outs, **ins;

  bool has_out_opts;
  sl_ring_opts out_opts;
  int merge; /* enum sl_merge_mode, for several inputs */

  /* With several inputs in arrival order, one thread per input; op_mu
   * keeps the ops of one stage from running at once, and the last input
   * to end calls flush/final (open_inputs counts the rest). */
  pthread_mutex_t op_mu;
  bool op_mu_ready;
  size_t open_inputs;
  struct sl_input *inputs;

  pthread_t *threads;
  int nthreads;

  /* Library stages that run threads of their own (the map) stop and join
   * them here: called by the last of the stage's input threads to end, on
   * every path, before the pipeline can count the stage as finished. */
  void (*on_exit)(sl_stage *s);
  _Atomic size_t inputs_running; /* input threads not yet ended */

  size_t topo_left; /* scratch of the acyclicity check */
  sl_stage *topo_next;

  _Atomic int status; /* first outcome of the stage's threads; 0 = ok */
  char errmsg[SL_ERRMSG_MAX];
  _Atomic int errmsg_set;

  struct sl_stage_counters in_ctr, out_ctr;
  _Atomic uint64_t start_ns, end_ns;
  _Atomic int running;
};

enum join_state { JOIN_NONE, JOIN_RUNNING, JOIN_DONE };

struct sl_pipeline {
  sl_pipeline_opts opts;
  sl_pool *pool;
  sl_stage **stages;
  size_t nstages, cap_stages;
  sl_ring **rings;
  size_t nrings;

  sl_finished_cb finished_cb;
  void *finished_arg;

  pthread_mutex_t mu;
  pthread_cond_t done_cv;
  bool started, rings_ready, ended, finished;
  enum join_state join;
  int live_threads;
  int first_err;
  char errbuf[SL_ERRMSG_MAX + 64];
  int cancel_rfd, cancel_wfd; /* -1 until sl_stage_cancel_fd */
  _Atomic int failing; /* fast check for sl_stage_cancelled */
};

/* pipeline.c */
void sl__pipeline_fail(sl_pipeline *p, sl_stage *s, int err);
void sl__pipeline_thread_done(sl_pipeline *p);
int sl__pipeline_cancel_fd(sl_pipeline *p);

/* stage.c: thread entry points; input_main takes a struct sl_input. */
void *sl__stage_source_main(void *arg);
void *sl__stage_input_main(void *arg);
/* Input threads the stage runs: one per input in arrival order, else one. */
size_t sl__stage_input_threads(const sl_stage *s);
void sl__stage_destroy(sl_stage *s);
int sl__block_signals(sigset_t *old);

/* Single-writer counter bump: no read-modify-write instruction needed. */
static inline void ctr_add(_Atomic uint64_t *c, uint64_t v) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                        memory_order_relaxed);
}

#endif

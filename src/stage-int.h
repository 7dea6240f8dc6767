/* SPDX-License-Identifier: MIT */
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

/* trace.c: what one stage thread is doing, read by the stats, the stall
 * report, the watchdog and the trace writer (see the essay in trace.c).
 * Written by its own thread only; the wait fields change under seq (odd
 * while they change), and only when the thread is about to wait. */
enum sl_tobs_state {
  TOBS_IDLE,    /* not started */
  TOBS_RUNNING, /* running an op (or the framework between ops) */
  TOBS_FULL,    /* waiting on a full output ring */
  TOBS_EMPTY,   /* waiting on an empty input ring */
  TOBS_DONE
};

struct sl_tev; /* a trace event */

struct sl_tobs {
  _Alignas(SL_CACHELINE) _Atomic uint32_t seq;
  _Atomic int state;         /* enum sl_tobs_state */
  sl_ring *_Atomic ring;     /* the ring waited on, in FULL and EMPTY */
  _Atomic uint64_t since_ns; /* when state began */
  _Atomic uint64_t start_ns, end_ns, full_ns, empty_ns; /* waits ended */
  /* The most ever reported by the stats, which keeps them monotonic
   * though each reader reads the clock on its own. */
  _Atomic uint64_t rep_busy, rep_full, rep_empty;
  /* The trace (ev NULL when off): this thread's events, read by the
   * trace writer from tail to head. */
  struct sl_tev *ev;
  uint64_t mask, half, tail_seen, last_ns, pend_ts, pend_dur, merge_ns;
  struct sl_observer *ob; /* to wake the writer when half full */
  int pend_kind;          /* 0: nothing pending */
  bool emitted;
  _Atomic uint64_t head, tail, dropped;
  sl_stage *s;
  int tid; /* the trace's thread id; 0 for no thread */
  char name[32];
};

/* A consistent view of a thread record, an ongoing wait counted up to
 * now_ns (read with it). */
struct sl__tobs_view {
  int state;
  sl_ring *ring;
  uint64_t since_ns, start_ns, end_ns, full_ns, empty_ns, now_ns;
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
  struct sl__thread_job *jobs; /* with sl_pipeline_opts.threads: their ends */
  int nthreads;

  /* Library stages that run threads of their own (the map) stop and join
   * them here: called by the last of the stage's input threads to end, on
   * every path, before the pipeline can count the stage as finished. */
  void (*on_exit)(sl_stage *s);
  _Atomic size_t inputs_running; /* input threads not yet ended */

  /* A stage with no thread of its own, the caller's thread running it
   * (the bridges, bridge.c). It has no input threads; one that produces
   * is one participant of live_threads, started with the threads and
   * ended by sl__pipeline_participant_end. on_start runs when its rings
   * exist and nothing runs yet, and may refuse the graph; on_fail after
   * every ring was aborted, on the thread that failed the pipeline. */
  bool threadless;
  int (*on_start)(sl_stage *s);
  void (*on_fail)(sl_stage *s);
  _Atomic int participating;
  /* A threadless producer stopped because every consumer finished early
   * (see "Finishing early" in pipeline.c); on the thread that stopped it,
   * after the rings were aborted, no lock held. Called again on every
   * later stop of the pipeline: it must be idempotent. */
  void (*on_stop)(sl_stage *s);

  /* Finishing early (pipeline.c). out_gone[i]: the consumer of outs[i]
   * wants no more, and the ring is (being) aborted; set under p->mu, read
   * by the pushing thread without it. stopped: every output is gone, so
   * the stage's producing side (the whole stage, or a duplex's read side)
   * is stopped; set under p->mu. in_done: an op of the stage returned
   * SL_DONE, set by the thread that ran it under op_mu when there is one;
   * inputs_gone: the walk up from this stage was made (under p->mu). */
  _Atomic int *out_gone;
  _Atomic int stopped, in_done;
  bool inputs_gone;
  /* The cancel descriptors (sl_stage_cancel_fd), -1 until first asked
   * for, under p->mu: [0] for the stage's thread(s) or a duplex's read
   * side, [1] for a duplex's write side. */
  struct {
    int rfd, wfd;
  } wake[2];

  size_t topo_left; /* scratch of the acyclicity check */
  sl_stage *topo_next;

  _Atomic int status; /* first outcome of the stage's threads; 0 = ok */
  char errmsg[SL_ERRMSG_MAX];
  _Atomic int errmsg_set;

  struct sl_stage_counters in_ctr, out_ctr;
  _Atomic uint64_t start_ns, end_ns;
  _Atomic int running;

  /* trace.c: one record per thread slot (0: the source or read side,
   * 1 + k: input thread k), made by start; push_obs is the record of the
   * thread that runs the ops that push (under op_mu with several). */
  struct sl_tobs *_Atomic obs;
  size_t nobs;
  struct sl_tobs *push_obs;
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
  _Atomic int failing; /* fast check for sl_stage_cancelled */
  /* Why the latest refused start or wait was refused (a static string),
   * for sl_pipeline_error while there is no failure; NULL if none. */
  const char *_Atomic refusal;
  /* Set (release) by sl__obs_start once the rings and every thread record
   * exist, before any thread of the pipeline runs. From then on the stage
   * list, every stage's edges, rings and records are fixed until
   * sl_pipeline_free, so the stats and the stall report, which may run on
   * any thread, read them without a lock once they have seen it set
   * (acquire). Before, the building thread may be growing the stage list:
   * chain does that under mu, and readers take mu to look at it. */
  _Atomic int prepared;
  struct sl_observer *observer; /* trace.c: watchdog and trace, or NULL */
};

/* pipeline.c */
void sl__pipeline_fail(sl_pipeline *p, sl_stage *s, int err);
void sl__pipeline_thread_done(sl_pipeline *p);
void sl__pipeline_participant_end(sl_stage *s);
/* The cancel descriptor of s for side idx (see sl_stage.wake). */
int sl__stage_wake_fd(sl_stage *s, int idx);
/* The stage's op returned SL_DONE (or a threadless consumer finished
 * early): abandon every input of s and stop every producer left with no
 * consumer, up the graph. Idempotent; a no-op once the pipeline fails or
 * has ended. Any thread, no lock of the pipeline held. */
void sl__stage_consume_end(sl_stage *s);
/* Whether the calling thread is one of p's own: it runs one of p's
 * stages, or p's finished callback. */
bool sl__pipeline_own_thread(const sl_pipeline *p);
/* Stage i of p, NULL past the end, for readers on any thread: without a
 * lock once ready (p->prepared seen set), else under p->mu, since chain
 * may be growing the list. The stage itself stays where it is until
 * sl_pipeline_free, and its name never changes. */
sl_stage *sl__pipeline_stage_at(sl_pipeline *p, size_t i, bool ready);

/* Whether p is prepared (see sl_pipeline.prepared). Any thread. */
static inline bool sl__pipeline_ready(sl_pipeline *p) {
  return atomic_load_explicit(&p->prepared, memory_order_acquire) != 0;
}

/* stage.c: the stage the calling thread runs, NULL on any other thread;
 * *side (when not NULL) is 0 on a source's thread or a duplex's read side,
 * 1 on an input thread. */
sl_stage *sl__stage_current(int *side);

/* stage.c: thread entry points; input_main takes a struct sl_input. */
void *sl__stage_source_main(void *arg);
void *sl__stage_input_main(void *arg);
/* Name thread t "sl:<stage><suffix>" (cut to the kernel's 15 bytes).
 * Both ends of a pthread_create name the new thread: the thread itself
 * before it runs anything, so that an op that asks sees its name, and its
 * creator once pthread_create returns, so that every thread a pipeline or
 * a map runs carries its name by the time the call that started it
 * returns (ps, top -H and /proc would otherwise show the creator's name
 * until the thread first ran). */
void sl__thread_name(pthread_t t, const char *stage, const char *suffix);
/* Name a stage's thread: in is the input it serves (NULL for a source or
 * a duplex's read side); "/<k>" for the k-th of arrival-order inputs,
 * "/r" and "/w" for a duplex's sides. */
void sl__stage_thread_name(const sl_stage *s, pthread_t t,
                           const struct sl_input *in);
/* The name sl__stage_thread_name gives, written to name. */
void sl__stage_thread_name_fmt(const sl_stage *s, const struct sl_input *in,
                               char name[SL__THREAD_NAME_MAX]);
/* Input threads the stage runs: one per input in arrival order, else one. */
size_t sl__stage_input_threads(const sl_stage *s);
void sl__stage_destroy(sl_stage *s);
int sl__block_signals(sigset_t *old);
/* For ops that wait on a descriptor (the fd and socket stages): poll(2)
 * until fd is ready for events, in error or hung up (the op's next call
 * says which), or until the pipeline is cancelled or failing. *cancel_fd
 * keeps the stage's cancel descriptor (-1 before the first wait). Returns
 * 0 when fd is ready, SL_ECANCELED, the code of a failed
 * sl_stage_cancel_fd, or SL_EIO with *sys_err set to what poll failed
 * with (EBADF for a descriptor it finds invalid) for the op to report;
 * *sys_err is 0 on every other return. EINTR is retried. Sets no
 * message. The op's thread. */
int sl__stage_poll(sl_stage *s, int fd, short events, int *cancel_fd,
                   int *sys_err);

/* trace.c. obs_start (by sl_pipeline_start, with signals blocked, after
 * the rings exist) makes each stage's thread records and starts the
 * observer thread when a watchdog or a trace asks for one; obs_stop (when
 * the last stage thread ended) wakes it to finish; obs_join (by the wait
 * that joins) joins it; obs_free (by sl_pipeline_free) frees it all. */
int sl__obs_start(sl_pipeline *p);
void sl__obs_stop(sl_pipeline *p);
void sl__obs_join(sl_pipeline *p);
void sl__obs_free(sl_pipeline *p);
/* A stage thread begins with record slot idx (returned, NULL when there is
 * none) and ends with it. */
struct sl_tobs *sl__tobs_begin(sl_stage *s, size_t idx);
void sl__tobs_end(struct sl_tobs *o);
/* The thread is about to wait (TOBS_FULL or TOBS_EMPTY) on ring, and its
 * wait ended. Called only on the way to a wait, never per chunk. */
void sl__tobs_wait_begin(struct sl_tobs *o, int state, sl_ring *ring);
void sl__tobs_wait_end(struct sl_tobs *o);
/* Record slot idx of s, NULL before start or when no thread has it. Any
 * thread. */
struct sl_tobs *sl__obs_at(sl_stage *s, size_t idx);
void sl__tobs_snapshot(struct sl_tobs *o, struct sl__tobs_view *v);

/* Single-writer counter bump: no read-modify-write instruction needed. */
static inline void ctr_add(_Atomic uint64_t *c, uint64_t v) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                        memory_order_relaxed);
}

#endif

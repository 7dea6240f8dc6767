/* SPDX-License-Identifier: MIT */
/*
 * The ordered parallel map: the engine (sl__map) and the public stage.
 *
 * Threads. The stage's own thread submits jobs; N worker threads run
 * them. Results are emitted by whichever thread finds the next one ready
 * and nobody emitting: the worker that finished it (as oneTBB runs a
 * serial_in_order filter on the thread that finished the token), or the
 * stage's thread while it waits. So in steady state a result goes from
 * the worker that made it straight into the output ring, and nobody
 * sleeps or is woken for it.
 *
 * One writer. A stage's output ring has one writer. The emitting flag,
 * raised and lowered under the mutex, lets one thread emit at a time, and
 * the mutex, taken after every emit, orders all an emitting thread wrote
 * (the ring's writer fields, the stage's output counters) before whatever
 * the next one does. A worker emits only through emit_try, which never
 * waits: when the output is full it leaves the result in its slot and
 * sets handoff, and the stage's thread emits from then on with emit, the
 * blocking push, until it has emptied what was ready. So a slow consumer
 * holds the stage's thread and, through the window, the input, never a
 * worker; and what the stage's thread alone may touch (its observer in
 * the stats and trace, which records its waits) stays its own. Owners
 * without emit_try (pgzip) are emitted by the stage's thread only.
 *
 * Slots. in_flight slots hold the jobs between submit and emit, and at
 * most max_pending of them are queued or running: with max_pending below
 * in_flight, finished results may wait for a slow job ahead of them
 * while the workers go on with the jobs behind it (a job's input is
 * usually freed when it has run, so the finished ones weigh only their
 * results). In order mode job seq lives in slot seq % in_flight: results
 * leave in seq order, so the slot of the next job to submit is always the
 * one emitted longest ago. Unordered, a free list hands out slots and a
 * done queue returns them in completion order. Queued jobs wait in a FIFO
 * of slot indices, so workers start them in submit order in both modes.
 *
 * Window. Optionally (the map stage's default) the jobs in flight are also
 * bounded by bytes, as a ring is by its high mark: enough jobs of small
 * chunks to keep the workers from running dry, few of big ones. A stage
 * thread that finds such a window full sleeps until it has drained to
 * half, so it is woken once per batch of jobs, not once per job.
 *
 * Waking. One mutex guards the slots and queues; two condition variables
 * carry "a job is queued" (workers) and "the stage's thread may go on"
 * (room, a result it must emit, an error). Each is signalled only when
 * someone sleeps on it and what it waits for is true: a job finishing out
 * of order wakes nobody. A thread that would sleep looks again for a few
 * microseconds first. run, emit, emit_try and drop are called without the
 * lock.
 *
 * Errors. The first failure (a run's, an emit's, a worker's start) is
 * kept; from then on nobody emits, and submit and drain return it.
 *
 * Stop. The stage's thread stops the engine before it ends, on every path
 * (the stage's on_exit hook): workers finish the job (or the emit) in
 * hand and leave, every job not emitted is released, every thread is
 * joined, so nothing outlives the stage's thread.
 */
#include "map-int.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* A thread that would sleep looks again this many times, SPIN_GAP pauses
 * apart (about 10 us in all on current x86): a worker about to run out of
 * jobs, or a stage thread about to wait for room, is usually a few
 * microseconds from its answer, and a sleep and a wake cost far more. */
#define SPIN_LOOKS 8
#define SPIN_GAP 32

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_RUNNING, SLOT_DONE };

struct slot {
  enum slot_state state;
  uint64_t seq;
  sl_buf *in, *out;
  void *arg;
  size_t bytes; /* what the job weighs in the window: until its result is
                 * filed the larger of its input's length and the last
                 * result's (a job on a small input, an object say,
                 * usually makes a result like the one before), then its
                 * result's length */
  int rc;
};

struct worker {
  sl__map *m;
  unsigned index;
};

/* What the stage's thread waits for (see stage_may_go_locked). */
enum stage_want { WANT_ROOM, WANT_DRAIN };

struct sl__map {
  sl_stage *stage;
  sl__map_ops ops;
  void *owner;
  unsigned nworkers, nslots;
  bool unordered;
  size_t max_bytes;  /* window in input bytes; 0: none */
  unsigned min_jobs; /* with max_bytes: this many jobs fit whatever
                      * their bytes */

  pthread_t *threads;
  struct worker *workers;
  unsigned started;

  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;
  struct slot *slots;
  unsigned *runq, *doneq, *freeq; /* FIFOs of slot indices, nslots each */
  unsigned runq_head, runq_len, doneq_head, doneq_len, freeq_len;
  uint64_t next_seq, next_emit;
  unsigned busy;        /* slots not free */
  unsigned pending;     /* jobs queued or running */
  unsigned max_pending; /* at most */
  size_t bytes;         /* bytes of the busy slots (see slot.bytes) */
  size_t last_out;      /* the length of the last result filed */
  unsigned idle;        /* workers asleep on work_cv */
  unsigned work_wakes;  /* of them, signalled and not yet running */
  bool stage_waits;     /* the stage's thread sleeps on done_cv */
  bool stage_woken;     /* and was signalled */
  enum stage_want want;
  bool emitting; /* a thread is emitting: the only one that may */
  bool handoff;  /* the output was full: the stage's thread emits */
  bool stopping;
  int err; /* the first failure of a run, an emit or a worker's start */

  /* Read without the lock by threads about to sleep: runq_len, and a
   * count of results filed and emitted. */
  _Atomic unsigned queued;
  _Atomic uint64_t progress;
};

static void fifo_push(unsigned *q, unsigned head, unsigned *len, unsigned n,
                      unsigned v) {
  q[(head + *len) % n] = v;
  ++*len;
}

static unsigned fifo_pop(unsigned *q, unsigned *head, unsigned *len,
                         unsigned n) {
  unsigned v = q[*head];
  *head = (*head + 1) % n;
  --*len;
  return v;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

int sl__map_new(sl__map **out, sl_stage *stage, const sl__map_ops *ops,
                void *owner, unsigned workers, unsigned in_flight,
                unsigned max_pending, bool unordered) {
  *out = NULL;
  sl__map *m = sl__calloc(1, sizeof *m);
  if (!m)
    return SL_ENOMEM;
  m->stage = stage;
  m->ops = *ops;
  m->owner = owner;
  m->nworkers = workers;
  m->nslots = in_flight;
  m->max_pending =
      max_pending == 0 || max_pending > in_flight ? in_flight : max_pending;
  m->unordered = unordered;
  m->slots = sl__calloc(in_flight, sizeof *m->slots);
  m->runq = sl__calloc(in_flight, sizeof *m->runq);
  m->doneq = sl__calloc(in_flight, sizeof *m->doneq);
  m->freeq = sl__calloc(in_flight, sizeof *m->freeq);
  m->threads = sl__calloc(workers, sizeof *m->threads);
  m->workers = sl__calloc(workers, sizeof *m->workers);
  if (!m->slots || !m->runq || !m->doneq || !m->freeq || !m->threads ||
      !m->workers)
    goto fail;
  if (pthread_mutex_init(&m->mu, NULL) != 0)
    goto fail;
  if (pthread_cond_init(&m->work_cv, NULL) != 0)
    goto fail_mu;
  if (pthread_cond_init(&m->done_cv, NULL) != 0)
    goto fail_work;
  for (unsigned i = 0; i < in_flight; i++)
    m->freeq[m->freeq_len++] = in_flight - 1 - i;
  *out = m;
  return 0;

fail_work:
  pthread_cond_destroy(&m->work_cv);
fail_mu:
  pthread_mutex_destroy(&m->mu);
fail:
  sl__free(m->slots);
  sl__free(m->runq);
  sl__free(m->doneq);
  sl__free(m->freeq);
  sl__free(m->threads);
  sl__free(m->workers);
  sl__free(m);
  return SL_ENOMEM;
}

void sl__map_set_window(sl__map *m, size_t max_bytes, unsigned min_jobs) {
  m->max_bytes = max_bytes;
  m->min_jobs = min_jobs ? min_jobs : 1;
}

/* ---- state, under mu ---- */

/* The next result to emit, if there is one ready: its slot, else -1. */
static int ready_locked(sl__map *m) {
  if (m->unordered)
    return m->doneq_len ? (int)m->doneq[m->doneq_head] : -1;
  if (m->busy == 0)
    return -1;
  unsigned i = (unsigned)(m->next_emit % m->nslots);
  return m->slots[i].state == SLOT_DONE ? (int)i : -1;
}

/* Whether a job can be submitted: a free slot, a pending place and, with
 * a byte window, room in it (min_jobs always fit). With low set, whether
 * there is room for a good many: a stage thread that found the window
 * full waits until it has drained to half (slots and bytes), as a ring's
 * writer waits for the low mark, so that it sleeps and wakes once per
 * batch of jobs, not once per job. */
static bool room_locked(const sl__map *m, bool low) {
  low = low && m->max_bytes > 0; /* a window of slots alone: no mark */
  unsigned slots = low ? m->nslots / 2 : m->nslots;
  size_t bytes = low ? m->max_bytes / 2 : m->max_bytes;
  if (m->pending >= m->max_pending || m->busy >= m->nslots)
    return false;
  if (low && m->busy > slots)
    return false;
  unsigned jobs = low ? (m->min_jobs + 1) / 2 : m->min_jobs;
  return m->max_bytes == 0 || m->busy < jobs || m->bytes < bytes;
}

/* Whether workers may emit: the owner can emit from any thread and the
 * output has not been found full since the stage's thread last emitted. */
static bool workers_emit_locked(const sl__map *m) {
  return m->ops.emit_try && !m->handoff;
}

/* Whether the stage's thread, waiting, has something to do: stop, emit
 * (the next result is ready and nobody else emits it), or go on: room for a job
 * (WANT_ROOM) or nothing left (WANT_DRAIN). A waiting stage thread is signalled
 * when this turns true, and only then: not for a job that finishes out of
 * order, nor for results a worker emits while there is no room yet. */
static bool stage_may_go_locked(sl__map *m) {
  if (m->err || m->stopping)
    return true;
  if (!m->emitting && !workers_emit_locked(m) && ready_locked(m) >= 0)
    return true;
  if (m->want == WANT_DRAIN)
    return m->busy == 0 && !m->emitting;
  return room_locked(m, true);
}

static void wake_stage_locked(sl__map *m) {
  if (m->stage_waits && !m->stage_woken && stage_may_go_locked(m)) {
    m->stage_woken = true;
    pthread_cond_signal(&m->done_cv);
  }
}

static void fail_locked(sl__map *m, int rc) {
  if (!m->err)
    m->err = rc;
  wake_stage_locked(m);
}

static void drop_job(sl__map *m, sl_buf *in, void *arg) {
  sl_buf_unref(in);
  if (m->ops.drop)
    m->ops.drop(m->owner, arg);
}

/* ---- running and emitting: any thread of the engine ---- */

/* Take the next queued job: its slot. */
static unsigned take_locked(sl__map *m, sl_buf **in) {
  unsigned i = fifo_pop(m->runq, &m->runq_head, &m->runq_len, m->nslots);
  atomic_store_explicit(&m->queued, m->runq_len, memory_order_relaxed);
  struct slot *s = &m->slots[i];
  s->state = SLOT_RUNNING;
  *in = s->in;
  s->in = NULL;
  return i;
}

/* File a job's result in its slot. */
static void file_locked(sl__map *m, unsigned i, sl_buf *out, int rc) {
  struct slot *s = &m->slots[i];
  size_t bytes = out ? sl_buf_len(out) : 0;
  m->bytes = m->bytes - s->bytes + bytes;
  s->bytes = bytes;
  m->last_out = bytes;
  s->out = out;
  s->rc = rc;
  s->state = SLOT_DONE;
  m->pending--;
  if (m->unordered)
    fifo_push(m->doneq, m->doneq_head, &m->doneq_len, m->nslots, i);
  atomic_fetch_add_explicit(&m->progress, 1, memory_order_relaxed);
  if (rc < 0)
    fail_locked(m, rc);
}

/* Emit every ready result, in order, unless another thread is emitting:
 * the emitting flag makes this thread the only one that emits (and so
 * the only writer of the stage's output) until it is lowered; the mutex,
 * taken around each emit, hands the output's writer side from one
 * emitting thread to the next with everything it wrote. On a worker
 * (stage false) results leave through emit_try, and the first one that
 * finds the output full stays in its slot for the stage's thread
 * (handoff), which may wait for room; a worker never waits on the
 * output. Called and returns with mu held, which it drops around emits. */
static void emit_locked(sl__map *m, bool stage) {
  if (m->emitting || (!stage && !workers_emit_locked(m)))
    return;
  int i;
  m->emitting = true;
  while (!m->err && !m->stopping && (i = ready_locked(m)) >= 0) {
    struct slot *s = &m->slots[i];
    sl_buf *out = s->out;
    void *arg = s->arg;
    pthread_mutex_unlock(&m->mu);
    int rc = stage ? m->ops.emit(m->owner, out, arg)
                   : m->ops.emit_try(m->owner, out, arg);
    pthread_mutex_lock(&m->mu);
    if (rc == SL_AGAIN && !stage) {
      m->handoff = true; /* out and arg stay in the slot */
      break;
    }
    m->bytes -= s->bytes;
    *s = (struct slot){.state = SLOT_FREE};
    if (m->unordered) {
      fifo_pop(m->doneq, &m->doneq_head, &m->doneq_len, m->nslots);
      m->freeq[m->freeq_len++] = (unsigned)i;
    }
    m->next_emit++;
    m->busy--;
    atomic_fetch_add_explicit(&m->progress, 1, memory_order_relaxed);
    if (rc < 0)
      fail_locked(m, rc);
  }
  m->emitting = false;
  if (stage)
    m->handoff = false; /* the output took what was ready: workers again */
  wake_stage_locked(m);
}

/* ---- workers ---- */

static void worker_name(sl__map *m, pthread_t t, unsigned index) {
  char suffix[16];
  snprintf(suffix, sizeof suffix, "/%u", index);
  sl__thread_name(t, sl_stage_name(m->stage), suffix);
}

/* Out of jobs: look again for a while before sleeping. Returns with mu
 * held, a job queued or the engine stopping. */
static void worker_wait_locked(sl__map *m) {
  if (m->runq_len == 0 && !m->stopping) {
    pthread_mutex_unlock(&m->mu);
    for (unsigned look = 0; look < SPIN_LOOKS; look++) {
      for (unsigned k = 0; k < SPIN_GAP; k++)
        cpu_relax();
      if (atomic_load_explicit(&m->queued, memory_order_relaxed) > 0)
        break;
    }
    pthread_mutex_lock(&m->mu);
  }
  while (m->runq_len == 0 && !m->stopping) {
    m->idle++;
    pthread_cond_wait(&m->work_cv, &m->mu);
    m->idle--;
    if (m->work_wakes)
      m->work_wakes--;
  }
}

static void *worker_main(void *p) {
  struct worker *w = p;
  sl__map *m = w->m;
  worker_name(m, pthread_self(), w->index);
  void *wctx = NULL;
  int rc =
      m->ops.worker_init ? m->ops.worker_init(m->owner, w->index, &wctx) : 0;
  pthread_mutex_lock(&m->mu);
  if (rc < 0)
    fail_locked(m, rc);
  while (rc >= 0) {
    worker_wait_locked(m);
    if (m->stopping)
      break;
    sl_buf *in;
    unsigned i = take_locked(m, &in);
    void *arg = m->slots[i].arg;
    pthread_mutex_unlock(&m->mu);

    sl_buf *out = NULL;
    int jrc = m->ops.run(m->owner, wctx, in, arg, &out);

    pthread_mutex_lock(&m->mu);
    file_locked(m, i, out, jrc);
    emit_locked(m, false);
    wake_stage_locked(m);
  }
  pthread_mutex_unlock(&m->mu);
  if (m->ops.worker_fini && rc >= 0)
    m->ops.worker_fini(m->owner, wctx);
  return NULL;
}

static int start_workers(sl__map *m) {
  for (; m->started < m->nworkers; m->started++) {
    struct worker *w = &m->workers[m->started];
    w->m = m;
    w->index = m->started;
    int err = pthread_create(&m->threads[m->started], NULL, worker_main, w);
    if (err)
      return sl__thread_err(err);
    worker_name(m, m->threads[m->started], w->index);
  }
  return 0;
}

/* ---- the stage's thread ---- */

/* Until there is room for a job (want WANT_ROOM) or nothing is left in
 * flight (WANT_DRAIN): emit what is ready when nobody else does, else
 * wait, looking again for a while before
 * sleeping. Returns the first error. */
static int stage_wait(sl__map *m, enum stage_want want) {
  pthread_mutex_lock(&m->mu);
  m->want = want;
  for (;;) {
    if (m->err)
      break;
    if (!m->emitting && ready_locked(m) >= 0 &&
        (!workers_emit_locked(m) || want == WANT_DRAIN ||
         !room_locked(m, false))) {
      emit_locked(m, true);
      continue;
    }
    if (want == WANT_ROOM ? room_locked(m, false)
                          : m->busy == 0 && !m->emitting)
      break;
    uint64_t seen = atomic_load_explicit(&m->progress, memory_order_relaxed);
    pthread_mutex_unlock(&m->mu);
    for (unsigned look = 0; look < SPIN_LOOKS; look++) {
      for (unsigned k = 0; k < SPIN_GAP; k++)
        cpu_relax();
      if (atomic_load_explicit(&m->progress, memory_order_relaxed) != seen)
        break;
    }
    pthread_mutex_lock(&m->mu);
    /* Woken is per sleep: what woke it may have changed (a result filed
     * since fills the byte window again) before it runs. */
    while (!stage_may_go_locked(m)) {
      m->stage_waits = true;
      m->stage_woken = false;
      pthread_cond_wait(&m->done_cv, &m->mu);
      m->stage_waits = false;
    }
  }
  int rc = m->err;
  pthread_mutex_unlock(&m->mu);
  return rc;
}

int sl__map_submit(sl__map *m, sl_buf *in, void *arg) {
  int rc = start_workers(m);
  if (rc == 0)
    rc = stage_wait(m, WANT_ROOM);
  if (rc == 0 && sl_stage_cancelled(m->stage))
    rc = SL_ECANCELED;
  if (rc != 0) {
    drop_job(m, in, arg);
    return rc;
  }
  size_t bytes = in ? sl_buf_len(in) : 0;
  pthread_mutex_lock(&m->mu);
  if (bytes < m->last_out)
    bytes = m->last_out;
  unsigned i = m->unordered ? m->freeq[--m->freeq_len]
                            : (unsigned)(m->next_seq % m->nslots);
  m->slots[i] = (struct slot){.state = SLOT_QUEUED,
                              .seq = m->next_seq++,
                              .in = in,
                              .arg = arg,
                              .bytes = bytes};
  m->busy++;
  m->pending++;
  m->bytes += bytes;
  fifo_push(m->runq, m->runq_head, &m->runq_len, m->nslots, i);
  atomic_store_explicit(&m->queued, m->runq_len, memory_order_relaxed);
  /* One signal per sleeping worker, not one per job. */
  if (m->idle > m->work_wakes) {
    m->work_wakes++;
    pthread_cond_signal(&m->work_cv);
  }
  pthread_mutex_unlock(&m->mu);
  return 0;
}

int sl__map_drain(sl__map *m) {
  return stage_wait(m, WANT_DRAIN);
}

void sl__map_stop(sl__map *m) {
  if (!m)
    return;
  pthread_mutex_lock(&m->mu);
  m->stopping = true;
  pthread_cond_broadcast(&m->work_cv);
  pthread_mutex_unlock(&m->mu);
  for (unsigned i = 0; i < m->started; i++)
    pthread_join(m->threads[i], NULL);
  m->started = 0;
  /* No thread is left: release every job that was not emitted. */
  for (unsigned i = 0; i < m->nslots; i++) {
    struct slot *s = &m->slots[i];
    if (s->state == SLOT_FREE)
      continue;
    sl_buf_unref(s->out);
    drop_job(m, s->in, s->arg);
    *s = (struct slot){.state = SLOT_FREE};
  }
  m->busy = m->pending = 0;
  m->bytes = 0;
  m->runq_len = m->doneq_len = 0;
  atomic_store_explicit(&m->queued, 0, memory_order_relaxed);
}

void sl__map_free(sl__map *m) {
  if (!m)
    return;
  sl__map_stop(m);
  pthread_cond_destroy(&m->done_cv);
  pthread_cond_destroy(&m->work_cv);
  pthread_mutex_destroy(&m->mu);
  sl__free(m->slots);
  sl__free(m->runq);
  sl__free(m->doneq);
  sl__free(m->freeq);
  sl__free(m->threads);
  sl__free(m->workers);
  sl__free(m);
}

/* ---- the public map stage ---- */

unsigned sl_cpu_count(void) {
#ifdef CPU_COUNT
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return (unsigned)CPU_COUNT(&set);
#endif
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (unsigned)n : 1;
}

/* The default window: min(in_flight) 2N + 2 jobs (pigz's bound, enough
 * to keep N workers busy while one result waits), and beyond them as
 * many as fit in MAP_WINDOW_BYTES of input, at most MAP_WINDOW_JOBS. */
#define MAP_WINDOW_BYTES ((size_t)1 << 20)
#define MAP_WINDOW_JOBS 256u

static unsigned window_jobs_max(unsigned workers) {
  return 2 * workers + 2 > MAP_WINDOW_JOBS ? 2 * workers + 2 : MAP_WINDOW_JOBS;
}

struct map_stage {
  sl_map_ops ops;
  void *ctx;
  sl_stage *stage;
  sl__map *engine;
};

static int map_run(void *owner, void *wctx, sl_buf *in, void *arg,
                   sl_buf **out) {
  struct map_stage *ms = owner;
  (void)arg;
  return ms->ops.map(ms->stage, ms->ctx, wctx, in, out);
}

static int map_emit(void *owner, sl_buf *out, void *arg) {
  struct map_stage *ms = owner;
  (void)arg;
  return out ? sl_stage_push(ms->stage, out) : 0;
}

/* On a worker, when the output has room: the push, without a wait. With
 * several outputs a write could find one full after another took the
 * chunk, so those are left to the stage's thread. The stage's thread
 * observer (push_obs) is its own: a worker never touches it. */
static int map_emit_try(void *owner, sl_buf *out, void *arg) {
  struct map_stage *ms = owner;
  sl_stage *s = ms->stage;
  (void)arg;
  if (!out)
    return 0;
  if (s->ncons != 1)
    return SL_AGAIN;
  size_t len = out->len;
  int rc = sl_ring_try_write(s->outs[0], out);
  if (rc == SL_AGAIN)
    return rc;
  if (rc != 0) {
    sl_buf_unref(out);
    return rc;
  }
  ctr_add(&s->out_ctr.chunks, 1);
  ctr_add(&s->out_ctr.bytes, len);
  return 0;
}

static int map_worker_init(void *owner, unsigned i, void **wctx) {
  struct map_stage *ms = owner;
  return ms->ops.worker_init ? ms->ops.worker_init(ms->ctx, i, wctx) : 0;
}

static void map_worker_fini(void *owner, void *wctx) {
  struct map_stage *ms = owner;
  if (ms->ops.worker_fini)
    ms->ops.worker_fini(ms->ctx, wctx);
}

static int map_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  (void)stage;
  struct map_stage *ms = ctx;
  return sl__map_submit(ms->engine, in, NULL);
}

/* End of stream, and a flush marker: everything before it leaves first. */
static int map_flush(sl_stage *stage, void *ctx) {
  (void)stage;
  struct map_stage *ms = ctx;
  return sl__map_drain(ms->engine);
}

static void map_exit(sl_stage *stage) {
  struct map_stage *ms = sl_stage_ctx(stage);
  sl__map_stop(ms->engine);
}

static void map_destroy(void *ctx) {
  struct map_stage *ms = ctx;
  sl__map_free(ms->engine);
  if (ms->ops.destroy)
    ms->ops.destroy(ms->ctx);
  sl__free(ms);
}

int sl_map_new(sl_stage **out, const char *name, const sl_map_ops *ops,
               void *ctx, const sl_map_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  sl_map_opts o = opts ? *opts : (sl_map_opts){0};
  if (!name || !ops || !ops->map || o.workers > SL_MAP_MAX_WORKERS)
    return SL_EINVAL;
  if (o.workers == 0) {
    o.workers = sl_cpu_count();
    if (o.workers > SL_MAP_MAX_WORKERS)
      o.workers = SL_MAP_MAX_WORKERS;
  }
  bool window = o.in_flight == 0;
  if (o.in_flight == 0)
    o.in_flight = window_jobs_max(o.workers);

  struct map_stage *ms = sl__calloc(1, sizeof *ms);
  if (!ms)
    return SL_ENOMEM;
  ms->ops = *ops;
  ms->ctx = ctx;
  static const sl_stage_ops stage_ops = {.transform = map_transform,
                                         .flush = map_flush,
                                         .sync = map_flush,
                                         .destroy = map_destroy};
  static const sl__map_ops engine_ops = {.run = map_run,
                                         .emit = map_emit,
                                         .emit_try = map_emit_try,
                                         .worker_init = map_worker_init,
                                         .worker_fini = map_worker_fini};
  sl_stage *s;
  int rc = sl_stage_new(&s, name, &stage_ops, ms);
  if (rc != 0) {
    sl__free(ms);
    return rc;
  }
  ms->stage = s;
  rc = sl__map_new(&ms->engine, s, &engine_ops, ms, o.workers, o.in_flight, 0,
                   o.unordered != 0);
  if (rc != 0) {
    ms->ops.destroy = NULL; /* on failure ctx stays the caller's */
    sl_stage_free(s);
    return rc;
  }
  if (window)
    sl__map_set_window(ms->engine, MAP_WINDOW_BYTES, 2 * o.workers + 2);
  s->on_exit = map_exit;
  *out = s;
  return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * The ordered parallel map: the engine (sl__map) and the public stage.
 *
 * Threads. The stage's own thread submits jobs and emits results; N worker
 * threads run them. Workers never touch a ring: a worker computes, files
 * its result in the job's slot and goes back for more, so a slow consumer
 * holds the stage's thread (which pushes) and, through the bounded slots,
 * the input, never a worker mid-job.
 *
 * Slots. in_flight slots hold the jobs between submit and emit, and at
 * most max_pending of them are queued or running: with max_pending below
 * in_flight, finished results may wait for a slow job ahead of them
 * while the workers go on with the jobs behind it (a job's input is
 * usually freed when it has run, so the finished ones weigh only their
 * results). In order
 * mode job seq lives in slot seq % in_flight: results leave in seq order,
 * so the slot of the next job to submit is always the one emitted longest
 * ago. Unordered, a free list hands out slots and a done queue returns
 * them in completion order. Queued jobs wait in a FIFO of slot indices,
 * so workers start them in submit order in both modes.
 *
 * One mutex guards the slots and queues; two condition variables carry
 * "a job is queued" (workers) and "a result is ready" (the stage thread),
 * each signalled only when someone waits on it. run is called without the
 * lock, emit and drop too.
 *
 * Stop. The stage's thread stops the engine before it ends, on every path
 * (the stage's on_exit hook): workers finish the job in hand and leave,
 * every job not emitted is released, every thread is joined, so nothing
 * outlives the stage's thread.
 */
#include "map-int.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_RUNNING, SLOT_DONE };

struct slot {
  enum slot_state state;
  uint64_t seq;
  sl_buf *in, *out;
  void *arg;
  int rc;
};

struct worker {
  sl__map *m;
  unsigned index;
};

struct sl__map {
  sl_stage *stage;
  sl__map_ops ops;
  void *owner;
  unsigned nworkers, nslots;
  bool unordered;

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
  unsigned idle;        /* workers waiting for a job */
  bool emitter_waits;   /* the stage's thread waits for a result */
  bool stopping;
  int err; /* the first failure of a run or a worker's start */
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

/* ---- workers ---- */

static void fail_locked(sl__map *m, int rc) {
  if (!m->err)
    m->err = rc;
  if (m->emitter_waits)
    pthread_cond_signal(&m->done_cv);
}

static void worker_name(sl__map *m, pthread_t t, unsigned index) {
  char suffix[16];
  snprintf(suffix, sizeof suffix, "/%u", index);
  sl__thread_name(t, sl_stage_name(m->stage), suffix);
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
    while (!m->stopping && m->runq_len == 0) {
      m->idle++;
      pthread_cond_wait(&m->work_cv, &m->mu);
      m->idle--;
    }
    if (m->stopping)
      break;
    unsigned i = fifo_pop(m->runq, &m->runq_head, &m->runq_len, m->nslots);
    struct slot *s = &m->slots[i];
    s->state = SLOT_RUNNING;
    sl_buf *in = s->in;
    s->in = NULL;
    pthread_mutex_unlock(&m->mu);

    sl_buf *out = NULL;
    int jrc = m->ops.run(m->owner, wctx, in, s->arg, &out);

    pthread_mutex_lock(&m->mu);
    s->out = out;
    s->rc = jrc;
    s->state = SLOT_DONE;
    m->pending--;
    if (m->unordered)
      fifo_push(m->doneq, m->doneq_head, &m->doneq_len, m->nslots, i);
    if (jrc < 0)
      fail_locked(m, jrc);
    else if (m->emitter_waits)
      pthread_cond_signal(&m->done_cv);
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

/* The next result to emit, if there is one ready: its slot, else -1. */
static int ready_locked(sl__map *m) {
  if (m->unordered)
    return m->doneq_len ? (int)m->doneq[m->doneq_head] : -1;
  if (m->busy == 0)
    return -1;
  unsigned i = (unsigned)(m->next_emit % m->nslots);
  return m->slots[i].state == SLOT_DONE ? (int)i : -1;
}

/* Emit one result, waiting for it when wait is set. Returns 0 when one
 * was emitted, SL_AGAIN when none was ready (and wait was not set), or the
 * first error. */
static int emit_one(sl__map *m, bool wait) {
  pthread_mutex_lock(&m->mu);
  int i;
  while ((i = ready_locked(m)) < 0 && !m->err && wait && m->busy > 0) {
    m->emitter_waits = true;
    pthread_cond_wait(&m->done_cv, &m->mu);
    m->emitter_waits = false;
  }
  if (m->err || i < 0) {
    int rc = m->err ? m->err : SL_AGAIN;
    pthread_mutex_unlock(&m->mu);
    return rc;
  }
  struct slot *s = &m->slots[i];
  sl_buf *out = s->out;
  void *arg = s->arg;
  *s = (struct slot){.state = SLOT_FREE};
  if (m->unordered) {
    fifo_pop(m->doneq, &m->doneq_head, &m->doneq_len, m->nslots);
    m->freeq[m->freeq_len++] = (unsigned)i;
  }
  m->next_emit++;
  m->busy--;
  pthread_mutex_unlock(&m->mu);

  int rc = m->ops.emit(m->owner, out, arg);
  if (rc < 0) {
    pthread_mutex_lock(&m->mu);
    if (!m->err)
      m->err = rc;
    pthread_mutex_unlock(&m->mu);
  }
  return rc < 0 ? rc : 0;
}

/* Emit whatever is ready without waiting. */
static int emit_ready(sl__map *m) {
  int rc;
  while ((rc = emit_one(m, false)) == 0)
    ;
  return rc == SL_AGAIN ? 0 : rc;
}

static void drop_job(sl__map *m, sl_buf *in, void *arg) {
  sl_buf_unref(in);
  if (m->ops.drop)
    m->ops.drop(m->owner, arg);
}

/* Whether a job can be submitted: a free slot and a pending place. */
static bool room_locked(const sl__map *m) {
  return m->busy < m->nslots && m->pending < m->max_pending;
}

/* Emit what is ready until there is room for a job, waiting for a result
 * or for any job to finish (a pending place) when there is none. */
static int wait_room(sl__map *m) {
  for (;;) {
    int rc = emit_ready(m);
    if (rc != 0)
      return rc;
    pthread_mutex_lock(&m->mu);
    while (!m->err && !room_locked(m) && ready_locked(m) < 0) {
      m->emitter_waits = true;
      pthread_cond_wait(&m->done_cv, &m->mu);
      m->emitter_waits = false;
    }
    rc = m->err;
    bool room = room_locked(m);
    pthread_mutex_unlock(&m->mu);
    if (rc != 0 || room)
      return rc;
  }
}

int sl__map_submit(sl__map *m, sl_buf *in, void *arg) {
  int rc = start_workers(m);
  if (rc == 0)
    rc = wait_room(m);
  if (rc == 0 && sl_stage_cancelled(m->stage))
    rc = SL_ECANCELED;
  if (rc != 0) {
    drop_job(m, in, arg);
    return rc;
  }
  pthread_mutex_lock(&m->mu);
  unsigned i = m->unordered ? m->freeq[--m->freeq_len]
                            : (unsigned)(m->next_seq % m->nslots);
  m->slots[i] = (struct slot){
      .state = SLOT_QUEUED, .seq = m->next_seq++, .in = in, .arg = arg};
  m->busy++;
  m->pending++;
  fifo_push(m->runq, m->runq_head, &m->runq_len, m->nslots, i);
  if (m->idle)
    pthread_cond_signal(&m->work_cv);
  pthread_mutex_unlock(&m->mu);
  return 0;
}

int sl__map_drain(sl__map *m) {
  int rc = 0;
  while (rc == 0 && m->busy > 0)
    rc = emit_one(m, true);
  return rc;
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
  m->runq_len = m->doneq_len = 0;
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
  if (o.in_flight == 0)
    o.in_flight = 2 * o.workers + 2;

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
  s->on_exit = map_exit;
  *out = s;
  return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * sl_pipeline — owns stages, rings and threads.
 *
 * Building (chain) only links stages; start creates one ring per link, with
 * the producer's output options or the pipeline's defaults, then one thread
 * per stage (two for a duplex): its own, or one of the sl_threads set it
 * was given (threads.c), whose end wait watches instead of a join. The rings
 * array is immutable once rings_ready is set, so cancel and fail may walk it
 * without the lock.
 *
 * Failure. The first negative code, from a stage or from cancel, is kept
 * with its message ("<stage>: <message>"), and every ring is aborted with
 * SL_ECANCELED: blocked writers and readers wake at once, every loop winds
 * down, every queued buffer is released by the abort. Later errors only
 * mark their stage cancelled.
 *
 * Finishing. live_threads counts stage threads still running; the last one
 * to end sets ended (from then on nothing can change the outcome: a late
 * cancel is a no-op), calls the finished callback with no lock held, then
 * sets finished and broadcasts done_cv. sl_pipeline_wait waits for that
 * and joins the threads exactly once, whoever calls it first. A wait or a
 * free from one of the pipeline's own threads (a stage's, known by the
 * thread-local stage.c keeps, or the finished callback's, marked here)
 * would wait for itself: it is refused with SL_EDEADLK.
 *
 * Finishing early. An op that returns SL_DONE wants no more input: its
 * stage walks up the graph under mu (sl__stage_consume_end), marking each
 * ring into it gone (out_gone of the producer's side of the edge); a
 * producer left with every output gone is stopped (stopped set, its
 * cancel descriptor poked) and, unless it is a duplex, whose two sides
 * are independent, abandons its own inputs in turn. Then, with mu
 * released, every gone ring is aborted with SL_ECANCELED, which releases
 * its chunks and wakes both its sides. Nothing fails: first_err stays 0,
 * a stopped stage's thread ends quietly whatever its op returns, a push
 * skips a gone branch of a tee, and a failure that comes first, or
 * after, still decides the outcome.
 *
 * Lock order: p->mu is never held while taking a ring's or the pool's
 * lock, nor while calling user code.
 */
#include "stage-int.h"

#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#define DEFAULT_BUF_SIZE ((size_t)64 << 10)
#define DEFAULT_HWM ((size_t)256 << 10)

int sl_pipeline_new(sl_pipeline **out, const sl_pipeline_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  sl_pipeline_opts o = opts ? *opts : (sl_pipeline_opts){0};
  if (o.pool && o.buf_size && o.buf_size != sl_pool_buf_size(o.pool))
    return SL_EINVAL;
  if (o.pool)
    o.buf_size = sl_pool_buf_size(o.pool);
  if (!o.buf_size)
    o.buf_size = DEFAULT_BUF_SIZE;
  if (!o.hwm)
    o.hwm = DEFAULT_HWM;
  if (!o.lwm)
    o.lwm = SL_LWM_DEFAULT;
  if (o.lwm != SL_LWM_DEFAULT && o.lwm >= o.hwm)
    return SL_EINVAL;
  if (o.threads && o.stack_size &&
      o.stack_size != sl__threads_stack_size(o.threads))
    return SL_EINVAL;

  sl_pipeline *p = sl__calloc(1, sizeof *p);
  if (!p)
    return SL_ENOMEM;
  p->opts = o;
  int rc = 0;
  if (o.pool)
    p->pool = sl_pool_ref(o.pool);
  else
    rc = sl_pool_new(&p->pool, o.buf_size, o.max_cached);
  if (rc != 0)
    goto fail_p;
  rc = SL_ENOMEM;
  if (pthread_mutex_init(&p->mu, NULL) != 0)
    goto fail_pool;
  if (pthread_cond_init(&p->done_cv, NULL) != 0)
    goto fail_mu;
  sl_threads_ref(o.threads);
  *out = p;
  return 0;

fail_mu:
  pthread_mutex_destroy(&p->mu);
fail_pool:
  sl_pool_free(p->pool);
fail_p:
  sl__free(p);
  return rc;
}

static bool produces(const sl_stage *s) {
  return s->kind != KIND_SINK;
}

static bool consumes(const sl_stage *s) {
  return s->kind != KIND_SOURCE;
}

/* Room for more pointers in *v (n of *cap used); nothing changes on
 * failure. With mu, the array is one that other threads read under mu (the
 * stage list, for the stats): it is copied into a new one, which replaces
 * the old under mu, so that no reader ever sees freed memory, and the
 * allocator runs with no lock held. */
static int reserve(sl_stage ***v, size_t n, size_t *cap, size_t more,
                   pthread_mutex_t *mu) {
  if (n + more <= *cap)
    return 0;
  size_t c = *cap ? *cap : 4;
  while (c < n + more)
    c *= 2;
  if (!mu) {
    sl_stage **grown = sl__realloc(*v, c * sizeof *grown);
    if (!grown)
      return SL_ENOMEM;
    *v = grown;
    *cap = c;
    return 0;
  }
  sl_stage **grown = sl__malloc(c * sizeof *grown), **old = *v;
  if (!grown)
    return SL_ENOMEM;
  if (n)
    memcpy(grown, old, n * sizeof *grown);
  pthread_mutex_lock(mu);
  *v = grown;
  *cap = c;
  pthread_mutex_unlock(mu);
  sl__free(old);
  return 0;
}

static bool linked(const sl_stage *from, const sl_stage *to) {
  for (size_t i = 0; i < from->ncons; i++)
    if (from->cons[i] == to)
      return true;
  return false;
}

int sl_pipeline_chainv(sl_pipeline *p, sl_stage *const *v, size_t n) {
  if (!p || !v || n < 2)
    return SL_EINVAL;
  if (p->started)
    return SL_EBUSY;
  size_t fresh = 0;
  for (size_t i = 0; i < n; i++) {
    sl_stage *s = v[i];
    if (!s || (s->p && s->p != p))
      return SL_EINVAL;
    for (size_t j = 0; j < i; j++)
      if (v[j] == s)
        return SL_EINVAL;
    if (!s->p)
      fresh++;
    if (i + 1 < n) {
      sl_stage *t = v[i + 1];
      if (!t || !produces(s) || !consumes(t) || linked(s, t))
        return SL_EINVAL;
    }
  }
  /* Reserve everything first, so that nothing can fail while linking. A
   * stage appears once, so it gains at most one consumer and one
   * producer. */
  if (reserve(&p->stages, p->nstages, &p->cap_stages, fresh, &p->mu) != 0)
    return SL_ENOMEM;
  for (size_t i = 0; i + 1 < n; i++)
    if (reserve(&v[i]->cons, v[i]->ncons, &v[i]->cap_cons, 1, NULL) != 0 ||
        reserve(&v[i + 1]->prods, v[i + 1]->nprods, &v[i + 1]->cap_prods, 1,
                NULL) != 0)
      return SL_ENOMEM;
  /* The stats may be reading the stage list on another thread (see
   * sl__pipeline_stage_at); the edges they read only once prepared. */
  pthread_mutex_lock(&p->mu);
  for (size_t i = 0; i < n; i++) {
    sl_stage *s = v[i];
    if (!s->p) {
      s->p = p;
      p->stages[p->nstages++] = s;
    }
    if (i + 1 < n) {
      s->cons[s->ncons++] = v[i + 1];
      v[i + 1]->prods[v[i + 1]->nprods++] = s;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return 0;
}

int sl_pipeline_link(sl_pipeline *p, sl_stage *from, sl_stage *to) {
  sl_stage *v[2] = {from, to};
  return sl_pipeline_chainv(p, v, 2);
}

int sl_pipeline_chain_list(sl_pipeline *p, sl_stage *const *v, size_t n) {
  /* The last entry must be the NULL that ends the list: without it a
   * list whose last stage failed to be made would look complete. */
  if (!p || !v || n == 0 || v[n - 1])
    return SL_EINVAL;
  return sl_pipeline_chainv(p, v, n - 1);
}

int(sl_pipeline_chain)(sl_pipeline *p, sl_stage *first, ...) {
  sl_stage *v[64];
  size_t n = 0;
  va_list ap;
  va_start(ap, first);
  for (sl_stage *s = first; s; s = va_arg(ap, sl_stage *)) {
    if (n == sizeof v / sizeof v[0]) {
      va_end(ap);
      return SL_EINVAL; /* longer chains: sl_pipeline_chainv */
    }
    v[n++] = s;
  }
  va_end(ap);
  return sl_pipeline_chainv(p, v, n);
}

int sl_pipeline_on_finished(sl_pipeline *p, sl_finished_cb cb, void *arg) {
  if (!p)
    return SL_EINVAL;
  if (p->started)
    return SL_EBUSY;
  p->finished_cb = cb;
  p->finished_arg = arg;
  return 0;
}

/* Abort every ring; rings_ready must have been seen set under the lock. */
static void abort_rings(sl_pipeline *p) {
  for (size_t i = 0; i < p->nrings; i++)
    sl_ring_abort(p->rings[i], SL_ECANCELED);
  for (size_t i = 0; i < p->nstages; i++) /* the threadless stages */
    if (p->stages[i]->on_fail)
      p->stages[i]->on_fail(p->stages[i]);
}

/* Make a cancel descriptor readable. A failed write can only mean it is
 * already full of wake-ups, which is as readable as it gets. */
static void poke_wake(int wfd) {
  if (wfd < 0)
    return;
#ifdef __linux__
  uint64_t one = 1;
  ssize_t n = write(wfd, &one, sizeof one);
#else
  ssize_t n = write(wfd, "x", 1);
#endif
  (void)n;
}

/* The pipeline fails: every stage's cancel descriptors. */
static void poke_cancel_fds_locked(sl_pipeline *p) {
  for (size_t i = 0; i < p->nstages; i++)
    for (int k = 0; k < 2; k++)
      poke_wake(p->stages[i]->wake[k].wfd);
}

int sl__stage_wake_fd(sl_stage *s, int idx) {
  sl_pipeline *p = s->p;
  int rc;
  pthread_mutex_lock(&p->mu);
  if (s->wake[idx].rfd < 0) {
#ifdef __linux__
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd >= 0)
      s->wake[idx].rfd = s->wake[idx].wfd = fd;
#else
    int fds[2];
    if (pipe(fds) == 0) {
      for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
      }
      s->wake[idx].rfd = fds[0];
      s->wake[idx].wfd = fds[1];
    }
#endif
    if (s->wake[idx].rfd >= 0 &&
        (p->first_err || (idx == 0 && atomic_load(&s->stopped))))
      poke_wake(s->wake[idx].wfd);
  }
  rc = s->wake[idx].rfd >= 0 ? s->wake[idx].rfd
       : errno == ENOMEM     ? SL_ENOMEM
                             : SL_EIO;
  pthread_mutex_unlock(&p->mu);
  return rc;
}

/* Keep err as the pipeline's first error if it is; true if it was. */
static bool record_first_locked(sl_pipeline *p, sl_stage *s, int err) {
  if (p->first_err || p->ended)
    return false;
  p->first_err = err;
  atomic_store_explicit(&p->failing, 1, memory_order_release);
  poke_cancel_fds_locked(p);
  if (!s) {
    snprintf(p->errbuf, sizeof p->errbuf, "%s", sl_strerror(err));
  } else {
    bool has_msg =
        atomic_load_explicit(&s->errmsg_set, memory_order_acquire) == 2;
    snprintf(p->errbuf, sizeof p->errbuf, "%s: %s", s->name,
             has_msg ? s->errmsg : sl_strerror(err));
  }
  return true;
}

void sl__pipeline_fail(sl_pipeline *p, sl_stage *s, int err) {
  pthread_mutex_lock(&p->mu);
  bool first = record_first_locked(p, s, err);
  bool ready = p->rings_ready;
  pthread_mutex_unlock(&p->mu);
  /* A stage stopped early that fails after all still shows its own
   * outcome. */
  int was = 0;
  if (!atomic_compare_exchange_strong(&s->status, &was,
                                      first ? err : SL_ECANCELED) &&
      was == SL_DONE)
    atomic_compare_exchange_strong(&s->status, &was,
                                   first ? err : SL_ECANCELED);
  if (first && ready)
    abort_rings(p);
}

/* ---- finishing early ---- */

static void consume_end_locked(sl_pipeline *p, sl_stage *s);

/* Every output of s is gone: stop its producing side. */
static void produce_stop_locked(sl_pipeline *p, sl_stage *s) {
  if (atomic_load(&s->stopped))
    return;
  atomic_store(&s->stopped, 1);
  poke_wake(s->wake[0].wfd);
  /* A duplex's write side goes on: its input is not its output's. */
  if (s->kind != KIND_DUPLEX)
    consume_end_locked(p, s);
}

/* s reads no more: every ring into it is gone, and a producer left with
 * no consumer is stopped. */
static void consume_end_locked(sl_pipeline *p, sl_stage *s) {
  if (s->inputs_gone)
    return;
  s->inputs_gone = true;
  for (size_t k = 0; k < s->nprods; k++) {
    sl_stage *q = s->prods[k];
    bool all = true;
    for (size_t c = 0; c < q->ncons; c++)
      all =
          all && (q->cons[c] == s ||
                  atomic_load_explicit(&q->out_gone[c], memory_order_relaxed));
    /* Stopped before its last output shows gone: q's thread may see that
     * (and its push return SL_ECANCELED) at once, and must then find
     * itself stopped, not failed. */
    if (all)
      produce_stop_locked(p, q);
    for (size_t c = 0; c < q->ncons; c++)
      if (q->cons[c] == s)
        atomic_store_explicit(&q->out_gone[c], 1, memory_order_release);
  }
}

void sl__stage_consume_end(sl_stage *s) {
  sl_pipeline *p = s->p;
  pthread_mutex_lock(&p->mu);
  bool go = p->rings_ready && !p->first_err && !p->ended && !s->inputs_gone;
  if (go)
    consume_end_locked(p, s);
  pthread_mutex_unlock(&p->mu);
  if (!go)
    return;
  /* The stages and their edges are fixed once the rings exist. An abort
   * is idempotent, so aborting a ring some earlier walk marked costs
   * nothing. */
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *q = p->stages[i];
    for (size_t c = 0; c < q->ncons; c++)
      if (atomic_load_explicit(&q->out_gone[c], memory_order_acquire))
        sl_ring_abort(q->outs[c], SL_ECANCELED);
  }
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *q = p->stages[i];
    if (q->on_stop && atomic_load(&q->stopped))
      q->on_stop(q);
  }
}

void sl_pipeline_cancel(sl_pipeline *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->mu);
  bool first = record_first_locked(p, NULL, SL_ECANCELED);
  bool ready = p->rings_ready;
  pthread_mutex_unlock(&p->mu);
  if (first && ready)
    abort_rings(p);
}

/* Every thread has ended (ended set under the lock, status read with it):
 * tell the callback, then let waiters in. */
static _Thread_local const sl_pipeline *finishing; /* in p's callback */

bool sl__pipeline_own_thread(const sl_pipeline *p) {
  sl_stage *s = sl__stage_current(NULL);
  return (s && s->p == p) || finishing == p;
}

static void finish(sl_pipeline *p, int status) {
  sl__obs_stop(p);
  if (p->finished_cb) {
    const sl_pipeline *outer = finishing;
    finishing = p;
    p->finished_cb(p, status, p->finished_arg);
    finishing = outer;
  }
  pthread_mutex_lock(&p->mu);
  p->finished = true;
  pthread_cond_broadcast(&p->done_cv);
  pthread_mutex_unlock(&p->mu);
}

/* With the lock held: count n threads as ended; true if none is left, in
 * which case the caller must finish with *status. */
static bool threads_ended_locked(sl_pipeline *p, int n, int *status) {
  p->live_threads -= n;
  if (p->live_threads > 0)
    return false;
  p->ended = true;
  *status = p->first_err;
  return true;
}

void sl__pipeline_thread_done(sl_pipeline *p) {
  int status = 0;
  pthread_mutex_lock(&p->mu);
  bool last = threads_ended_locked(p, 1, &status);
  pthread_mutex_unlock(&p->mu);
  if (last)
    finish(p, status);
}

/* A threadless producer (a writer bridge) is a participant without a
 * thread: spawn counts it as started here. A failure that came first has
 * already called its on_fail, which found nothing to end, so end it now;
 * p->mu orders this against the failure. */
static int start_participant(sl_stage *s) {
  pthread_mutex_lock(&s->p->mu);
  atomic_store(&s->participating, 1);
  bool failed = s->p->first_err != 0;
  pthread_mutex_unlock(&s->p->mu);
  atomic_store(&s->running, 1);
  if (failed)
    sl__pipeline_participant_end(s);
  return 0;
}

/* The participant's end, once whoever calls it (end, abort, on_fail). */
void sl__pipeline_participant_end(sl_stage *s) {
  if (atomic_exchange(&s->participating, 0))
    sl__pipeline_thread_done(s->p);
}

/* Complete (every input and output linked) and acyclic: a cycle would
 * never see its end of stream. Kahn's algorithm over the producer counts,
 * with the ready list threaded through the stages: no allocation.
 *
 * A duplex's two sides are independent (its read side never waits for its
 * write side), so it counts as a source for its outputs and as a sink for
 * its inputs: ready from the start, and an edge into it is never waited
 * for. That accepts sock -> gzip -> sock. A sink has no outputs, so it
 * cannot close a cycle, and a cycle that avoids every duplex still leaves
 * its stages unseen. */
static int validate(const sl_pipeline *p, const char **why) {
  *why = "start: the pipeline has no stage";
  if (p->nstages == 0)
    return SL_EINVAL;
  sl_stage *ready = NULL;
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    *why = "start: a stage that consumes has no producer";
    if (consumes(s) && s->nprods == 0)
      return SL_EINVAL;
    *why = "start: a stage that produces has no consumer";
    if (produces(s) && s->ncons == 0)
      return SL_EINVAL;
    s->topo_left = s->kind == KIND_DUPLEX ? 0 : s->nprods;
    if (s->topo_left == 0) {
      s->topo_next = ready;
      ready = s;
    }
  }
  size_t seen = 0;
  while (ready) {
    sl_stage *s = ready;
    ready = s->topo_next;
    seen++;
    for (size_t c = 0; c < s->ncons; c++) {
      sl_stage *t = s->cons[c];
      if (t->kind != KIND_DUPLEX && --t->topo_left == 0) {
        t->topo_next = ready;
        ready = t;
      }
    }
  }
  *why = "start: the stages form a cycle";
  return seen == p->nstages ? 0 : SL_EINVAL;
}

/* A refused call says why, for sl_pipeline_error. */
static int refuse(sl_pipeline *p, int rc, const char *why) {
  atomic_store_explicit(&p->refusal, why, memory_order_release);
  return rc;
}

/* The ring of every edge, and each stage's thread bookkeeping. Whatever
 * was made is freed with the pipeline if this fails. */
static int prepare(sl_pipeline *p) {
  size_t links = 0;
  for (size_t i = 0; i < p->nstages; i++)
    links += p->stages[i]->ncons;
  p->rings = sl__calloc(links ? links : 1, sizeof *p->rings);
  if (!p->rings)
    return SL_ENOMEM;
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    size_t nin = sl__stage_input_threads(s);
    s->threads = sl__calloc(nin + 1, sizeof *s->threads);
    if (p->opts.threads && !(s->jobs = sl__calloc(nin + 1, sizeof *s->jobs)))
      return SL_ENOMEM;
    s->inputs = sl__calloc(nin ? nin : 1, sizeof *s->inputs);
    if (s->ncons) {
      s->outs = sl__calloc(s->ncons, sizeof *s->outs);
      s->out_gone = sl__calloc(s->ncons, sizeof *s->out_gone);
    }
    if (s->nprods)
      s->ins = sl__calloc(s->nprods, sizeof *s->ins);
    if (!s->threads || !s->inputs || (s->ncons && (!s->outs || !s->out_gone)) ||
        (s->nprods && !s->ins))
      return SL_ENOMEM;
    if (nin > 1) {
      if (pthread_mutex_init(&s->op_mu, NULL) != 0)
        return SL_ENOMEM;
      s->op_mu_ready = true;
    }
    s->open_inputs = nin;
    atomic_store(&s->inputs_running, nin);
    for (size_t k = 0; k < nin; k++)
      s->inputs[k] = (struct sl_input){.s = s, .idx = k};
  }
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    sl_ring_opts o = s->has_out_opts ? s->out_opts
                                     : (sl_ring_opts){.hwm = p->opts.hwm,
                                                      .lwm = p->opts.lwm,
                                                      .mode = SL_RING_BYTES};
    for (size_t c = 0; c < s->ncons; c++) {
      sl_stage *t = s->cons[c];
      int rc = sl_ring_new(&p->rings[p->nrings], &o);
      if (rc != 0)
        return rc;
      s->outs[c] = p->rings[p->nrings++];
      for (size_t k = 0; k < t->nprods; k++)
        if (t->prods[k] == s)
          t->ins[k] = s->outs[c];
    }
  }
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    int rc = s->on_start ? s->on_start(s) : 0;
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Start a thread of s running fn(arg), for input in (NULL: the source
 * or read side), and name it. */
static int spawn(sl_stage *s, void *(*fn)(void *), void *arg,
                 struct sl_input *in, const pthread_attr_t *attr) {
  if (s->threadless)
    return start_participant(s);
  if (s->jobs) { /* the set names the thread before it starts the job */
    char name[SL__THREAD_NAME_MAX];
    sl__stage_thread_name_fmt(s, in, name);
    int rc = sl__threads_run(s->p->opts.threads, fn, arg, &s->jobs[s->nthreads],
                             name, &s->threads[s->nthreads]);
    if (rc)
      return rc;
  } else {
    int err = pthread_create(&s->threads[s->nthreads], attr, fn, arg);
    if (err)
      return sl__thread_err(err);
    sl__stage_thread_name(s, s->threads[s->nthreads], in);
  }
  s->nthreads++;
  atomic_store(&s->running, 1);
  return 0;
}

int sl_pipeline_start(sl_pipeline *p) {
  if (!p)
    return SL_EINVAL;
  if (p->started)
    return refuse(p, SL_EBUSY, "start: started before");
  const char *why;
  int rc = validate(p, &why);
  if (rc != 0)
    return refuse(p, rc, why);
  p->started = true;
  atomic_store_explicit(&p->refusal, NULL, memory_order_release);

  rc = prepare(p);
  int planned = 0;
  for (size_t i = 0; i < p->nstages; i++)
    planned += (int)sl__stage_input_threads(p->stages[i]) +
               (p->stages[i]->kind == KIND_SOURCE ||
                p->stages[i]->kind == KIND_DUPLEX);

  pthread_mutex_lock(&p->mu);
  p->rings_ready = rc == 0;
  p->live_threads = planned;
  bool cancelled = p->first_err != 0;
  pthread_mutex_unlock(&p->mu);
  if (rc != 0) {
    /* No thread runs: fail and finish here. */
    int status = rc;
    pthread_mutex_lock(&p->mu);
    record_first_locked(p, NULL, rc);
    threads_ended_locked(p, planned, &status);
    pthread_mutex_unlock(&p->mu);
    finish(p, status);
    return rc;
  }
  if (cancelled)
    abort_rings(p);

  pthread_attr_t attr;
  pthread_attr_t *pattr = NULL;
  if (p->opts.stack_size && pthread_attr_init(&attr) == 0) {
    if (pthread_attr_setstacksize(&attr, p->opts.stack_size) == 0)
      pattr = &attr;
  }
  sigset_t old;
  sl__block_signals(&old);
  rc = sl__obs_start(p); /* on failure no stage thread starts */
  int started = 0;
  for (size_t i = 0; i < p->nstages && rc == 0; i++) {
    sl_stage *s = p->stages[i];
    if (s->kind == KIND_SOURCE || s->kind == KIND_DUPLEX) {
      rc = spawn(s, sl__stage_source_main, s, NULL, pattr);
      started += rc == 0;
    }
    size_t nin = sl__stage_input_threads(s);
    for (size_t k = 0; k < nin && rc == 0; k++) {
      rc = spawn(s, sl__stage_input_main, &s->inputs[k], &s->inputs[k], pattr);
      started += rc == 0;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pattr)
    pthread_attr_destroy(pattr);
  if (rc != 0) {
    /* Fail what runs, and count the threads that never started as
     * ended; if none started, finish here. */
    int status = rc;
    pthread_mutex_lock(&p->mu);
    bool first = record_first_locked(p, NULL, rc);
    bool last = threads_ended_locked(p, planned - started, &status);
    pthread_mutex_unlock(&p->mu);
    if (first)
      abort_rings(p);
    if (last)
      finish(p, status);
    return rc;
  }
  return 0;
}

int sl_pipeline_wait(sl_pipeline *p) {
  if (!p)
    return SL_EINVAL;
  if (!p->started)
    return refuse(p, SL_EINVAL, "wait: the pipeline was not started");
  if (sl__pipeline_own_thread(p))
    return refuse(p, SL_EDEADLK,
                  "wait: called from one of the pipeline's own threads");
  pthread_mutex_lock(&p->mu);
  while (!p->finished)
    pthread_cond_wait(&p->done_cv, &p->mu);
  if (p->join == JOIN_NONE) {
    p->join = JOIN_RUNNING;
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->nstages; i++) {
      sl_stage *s = p->stages[i];
      for (int t = 0; t < s->nthreads; t++) {
        if (s->jobs)
          sl__threads_join(p->opts.threads, &s->jobs[t]);
        else
          pthread_join(s->threads[t], NULL);
      }
      atomic_store(&s->running, 0);
    }
    sl__obs_join(p);
    pthread_mutex_lock(&p->mu);
    p->join = JOIN_DONE;
    pthread_cond_broadcast(&p->done_cv);
  }
  while (p->join != JOIN_DONE)
    pthread_cond_wait(&p->done_cv, &p->mu);
  int status = p->first_err;
  pthread_mutex_unlock(&p->mu);
  return status;
}

int sl_pipeline_free(sl_pipeline *p) {
  if (!p)
    return 0;
  /* It would wait for itself, then free the stage it runs. */
  if (sl__pipeline_own_thread(p))
    return SL_EDEADLK;
  if (p->started) {
    sl_pipeline_cancel(p);
    sl_pipeline_wait(p);
  }
  sl__obs_free(p);
  for (size_t i = 0; i < p->nstages; i++)
    sl__stage_destroy(p->stages[i]);
  for (size_t i = 0; i < p->nrings; i++)
    sl_ring_free(p->rings[i]);
  sl__free(p->rings);
  sl__free(p->stages);
  sl_pool_free(p->pool);
  sl_threads_free(p->opts.threads);
  pthread_cond_destroy(&p->done_cv);
  pthread_mutex_destroy(&p->mu);
  sl__free(p);
  return 0;
}

const char *sl_pipeline_error(sl_pipeline *p) {
  if (!p)
    return NULL;
  pthread_mutex_lock(&p->mu);
  const char *msg =
      p->first_err ? p->errbuf
                   : atomic_load_explicit(&p->refusal, memory_order_acquire);
  pthread_mutex_unlock(&p->mu);
  return msg;
}

sl_pool *sl_pipeline_pool(sl_pipeline *p) {
  return p ? p->pool : NULL;
}

size_t sl_pipeline_stage_count(const sl_pipeline *p) {
  return p ? p->nstages : 0;
}

sl_stage *sl_pipeline_stage(const sl_pipeline *p, size_t i) {
  return p && i < p->nstages ? p->stages[i] : NULL;
}

sl_stage *sl__pipeline_stage_at(sl_pipeline *p, size_t i, bool ready) {
  if (ready)
    return i < p->nstages ? p->stages[i] : NULL;
  pthread_mutex_lock(&p->mu);
  sl_stage *s = i < p->nstages ? p->stages[i] : NULL;
  pthread_mutex_unlock(&p->mu);
  return s;
}

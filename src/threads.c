/* SPDX-License-Identifier: MIT */
/*
 * sl_threads — stage threads kept for reuse by the pipelines that share
 * them.
 *
 * A pipeline starts a thread per stage and joins it at the end. For a
 * pipeline that runs for minutes that is nothing; for a server that makes
 * a pipeline per connection it is most of what a connection costs beyond
 * its bytes: the clone, a stack mapped, guarded and given back, its first
 * pages faulted in, and the join. A set keeps up to max_idle finished
 * threads waiting, and start hands a stage to one of them.
 *
 * A worker runs one job at a time: fn(arg), then, under the set's lock,
 * marks the job done (the joiner waits for that instead of pthread_join)
 * and either waits on the idle list for the next job or, when max_idle
 * are already waiting, ends and goes on the zombie list, to be joined by
 * the next run or by the set's last release. A waiting worker is named
 * "sl:idle". The idle list is a stack: the thread that ran last, whose
 * stack and cache lines are warmest, runs next.
 *
 * A run first reserves a worker, taking it off the idle list or starting
 * one that waits for its first job; a reserved worker has no job, so it
 * cannot end, and the caller names it for its stage before handing the
 * job over, as a pipeline's own threads carry their names by the time
 * sl_pipeline_start returns.
 *
 * Every stage thread runs with asynchronous signals blocked (see
 * sl__block_signals); a worker is created by a pipeline's start, with them
 * blocked, and keeps that mask between jobs. What a stage leaves in its
 * thread's thread-local variables is still there for the next stage the
 * thread runs: the library keeps none.
 *
 * Lifetime: the creator's reference and one per pipeline given the set
 * (sl_pipeline_opts.threads); the last release ends the idle workers and
 * joins every worker. A pipeline keeps its reference until it is freed,
 * after its jobs are done, so at the last release no worker has a job.
 */
#include "sluice-int.h"

#include <errno.h>

struct worker {
  pthread_t tid;
  sl_threads *t;
  pthread_cond_t cv;   /* the job arrives, or quit */
  void *(*fn)(void *); /* the job; NULL while idle */
  void *arg;
  struct sl__thread_job *job;
  bool quit;
  struct worker *next; /* on the idle or the zombie list */
};

struct sl_threads {
  pthread_mutex_t mu;
  pthread_cond_t done_cv; /* a job is done */
  size_t max_idle, stack_size;
  struct worker *idle, *zombies;
  size_t nidle, busy, refs;
  uint64_t created, reused;
};

int sl_threads_new(sl_threads **out, size_t max_idle, size_t stack_size) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  sl_threads *t = sl__calloc(1, sizeof *t);
  if (!t)
    return SL_ENOMEM;
  if (pthread_mutex_init(&t->mu, NULL) != 0) {
    sl__free(t);
    return SL_ENOMEM;
  }
  if (pthread_cond_init(&t->done_cv, NULL) != 0) {
    pthread_mutex_destroy(&t->mu);
    sl__free(t);
    return SL_ENOMEM;
  }
  t->max_idle = max_idle;
  t->stack_size = stack_size;
  t->refs = 1;
  *out = t;
  return 0;
}

sl_threads *sl_threads_ref(sl_threads *t) {
  if (!t)
    return NULL;
  pthread_mutex_lock(&t->mu);
  t->refs++;
  pthread_mutex_unlock(&t->mu);
  return t;
}

size_t sl__threads_stack_size(const sl_threads *t) {
  return t->stack_size; /* set at creation, read-only */
}

/* Join and free the workers of a zombie list taken off the set. */
static void bury(struct worker *list) {
  while (list) {
    struct worker *w = list;
    list = w->next;
    pthread_join(w->tid, NULL);
    pthread_cond_destroy(&w->cv);
    sl__free(w);
  }
}

void sl_threads_free(sl_threads *t) {
  if (!t)
    return;
  pthread_mutex_lock(&t->mu);
  if (--t->refs > 0) {
    pthread_mutex_unlock(&t->mu);
    return;
  }
  /* No pipeline is left, so none of its jobs runs; wait all the same for
   * a worker still between its job's end and the idle list. */
  while (t->busy > 0)
    pthread_cond_wait(&t->done_cv, &t->mu);
  while (t->idle) {
    struct worker *w = t->idle;
    t->idle = w->next;
    w->quit = true;
    pthread_cond_signal(&w->cv);
    w->next = t->zombies;
    t->zombies = w;
  }
  t->nidle = 0;
  struct worker *zombies = t->zombies;
  t->zombies = NULL;
  pthread_mutex_unlock(&t->mu);
  bury(zombies);
  pthread_cond_destroy(&t->done_cv);
  pthread_mutex_destroy(&t->mu);
  sl__free(t);
}

int sl_threads_trim(sl_threads *t, size_t keep) {
  if (!t)
    return SL_EINVAL;
  /* The idle list is a stack: keep its first `keep`, the warmest; end the
   * rest, which no run can take once they are off the list. */
  pthread_mutex_lock(&t->mu);
  struct worker **link = &t->idle, *quit;
  for (size_t i = 0; i < keep && *link; i++)
    link = &(*link)->next;
  quit = *link;
  *link = NULL;
  for (struct worker *w = quit; w; w = w->next) {
    w->quit = true;
    pthread_cond_signal(&w->cv);
    t->nidle--;
  }
  pthread_mutex_unlock(&t->mu);
  bury(quit);
  return 0;
}

int sl_threads_stats_get(sl_threads *t, sl_threads_stats *st) {
  if (!t || !st)
    return SL_EINVAL;
  pthread_mutex_lock(&t->mu);
  *st = (sl_threads_stats){.created = t->created,
                           .reused = t->reused,
                           .idle = t->nidle,
                           .busy = t->busy};
  pthread_mutex_unlock(&t->mu);
  return 0;
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  sl_threads *t = w->t;
  pthread_mutex_lock(&t->mu);
  w->tid = pthread_self(); /* for whoever joins it, under the lock */
  for (;;) {
    while (!w->fn && !w->quit)
      pthread_cond_wait(&w->cv, &t->mu);
    if (!w->fn)
      break; /* quit: the set is going; it is on the zombie list */
    void *(*fn)(void *) = w->fn;
    void *fn_arg = w->arg;
    pthread_mutex_unlock(&t->mu);
    fn(fn_arg);
    pthread_setname_np(pthread_self(), "sl:idle");
    pthread_mutex_lock(&t->mu);
    w->fn = NULL;
    w->job->done = true;
    w->job = NULL;
    t->busy--;
    pthread_cond_broadcast(&t->done_cv);
    if (t->nidle >= t->max_idle) { /* enough wait already: end */
      w->next = t->zombies;
      t->zombies = w;
      break;
    }
    w->next = t->idle;
    t->idle = w;
    t->nidle++;
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

/* A new worker, reserved for the caller: it waits for its first job and
 * cannot end before. Returns 0, SL_ENOMEM, SL_ETHREAD. */
static int worker_start(sl_threads *t, struct worker **out, pthread_t *tid) {
  struct worker *w = sl__calloc(1, sizeof *w);
  if (!w)
    return SL_ENOMEM;
  if (pthread_cond_init(&w->cv, NULL) != 0) {
    sl__free(w);
    return SL_ENOMEM;
  }
  w->t = t;
  pthread_attr_t attr, *pattr = NULL;
  if (t->stack_size && pthread_attr_init(&attr) == 0) {
    if (pthread_attr_setstacksize(&attr, t->stack_size) == 0)
      pattr = &attr;
    else
      pthread_attr_destroy(&attr);
  }
  int err = pthread_create(tid, pattr, worker_main, w);
  if (pattr)
    pthread_attr_destroy(pattr);
  if (err) {
    pthread_cond_destroy(&w->cv);
    sl__free(w);
    return sl__thread_err(err);
  }
  *out = w;
  return 0;
}

int sl__threads_run(sl_threads *t, void *(*fn)(void *), void *arg,
                    struct sl__thread_job *job, const char *name,
                    pthread_t *tid) {
  job->done = false;
  /* Reserve a worker: one that waits (off the idle list it is the
   * caller's: without a job it cannot end, and no release can come while
   * the caller's pipeline holds its reference), or a new one. */
  pthread_mutex_lock(&t->mu);
  struct worker *zombies = t->zombies;
  t->zombies = NULL;
  struct worker *w = t->idle;
  pthread_t id;
  if (w) {
    t->idle = w->next;
    t->nidle--;
    t->reused++;
    id = w->tid;
  }
  t->busy++;
  pthread_mutex_unlock(&t->mu);
  bury(zombies);
  bool fresh = !w;
  int rc = fresh ? worker_start(t, &w, &id) : 0;
  if (rc != 0) {
    pthread_mutex_lock(&t->mu);
    t->busy--;
    pthread_cond_broadcast(&t->done_cv);
    pthread_mutex_unlock(&t->mu);
    return rc;
  }
  /* Named before the job starts, as a pipeline's own threads are named
   * before sl_pipeline_start returns. */
  if (name)
    pthread_setname_np(id, name);
  pthread_mutex_lock(&t->mu);
  t->created += fresh;
  w->fn = fn;
  w->arg = arg;
  w->job = job;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&t->mu);
  *tid = id;
  return 0;
}

void sl__threads_join(sl_threads *t, struct sl__thread_job *job) {
  pthread_mutex_lock(&t->mu);
  while (!job->done)
    pthread_cond_wait(&t->done_cv, &t->mu);
  pthread_mutex_unlock(&t->mu);
}

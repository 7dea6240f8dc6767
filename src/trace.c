/* SPDX-License-Identifier: MIT */
/*
 * Watching a running pipeline: thread states, the stall report, the
 * watchdog and the trace timeline.
 *
 * Thread records. Every stage thread owns one struct sl_tobs (made by
 * sl_pipeline_start, one slot per possible thread of the stage). It says
 * what the thread is doing: running (an op, or the framework between
 * ops), blocked on a full output ring, waiting on an empty input ring, or
 * ended; since when; and the time its ended waits took. The thread writes
 * the record only when it is about to wait and when the wait ends: a push
 * first tries the ring and marks a wait only when the try says full, a
 * read marks one only when the input ring is empty now. A thread that is
 * about to wait has time to spare, so the two clock reads and the stores
 * cost the pipeline nothing; a thread that never waits never writes its
 * record. The fields change under a sequence counter (odd while they
 * change), so a reader on any thread gets a consistent view without a
 * lock: the stats (busy = wall time less the waits, an ongoing wait
 * included), the stall report and the watchdog read them this way.
 *
 * Observer. A watchdog or a trace needs a thread of the pipeline's own:
 * it sleeps on a condition variable with a timeout, and is woken to
 * finish when the last stage thread ends (sl__obs_stop, from the
 * pipeline's finish), then joined by sl_pipeline_wait. It never holds a
 * lock while it calls the user or writes. The watchdog's timeout is a
 * quarter of its period: it has to look at the chunk counts to see a
 * stall. The trace's starts at TRACE_PERIOD_NS and doubles after every
 * look that found nothing new (no event in any thread's queue, no ring
 * whose level changed), up to TRACE_PERIOD_MAX_NS, and is back at the
 * start as soon as a look finds something: a pipeline in flow is sampled
 * every 2 ms, an idle one (a source blocked in read() on a quiet socket)
 * costs a few wake-ups a second instead of hundreds.
 *
 * Trace. With a trace, each thread record gets a fixed array of events,
 * a single-producer single-consumer queue: the stage thread appends its
 * spans (busy, blocked full, blocked empty: the gaps between its waits
 * are busy) with a release store of head, no lock; the observer streams
 * them to the file and gives the slots back with a release store of
 * tail. A span shorter than TRACE_MERGE_NS is not emitted: a short wait
 * counts into the busy span around it, a short busy gap between two
 * waits of one kind joins them into one. The newest span is held back
 * until the next one shows it cannot be merged. The observer also samples
 * each ring's level into counter events, one whenever it or the ring's
 * peak changed. A sample is the level at that moment: the highest sample
 * can fall below the most the ring held between two looks, so each event
 * also carries the ring's peak so far, the high-water mark the ring keeps
 * at every write (sl_ring_stats.peak_level), and the trace's last peak of
 * a ring is the peak of the stats table for the same run. Nothing
 * is allocated after start; with no trace, the record's ev is NULL and
 * the stage thread tests only that.
 *
 * Waking the writer. A writer that sleeps long must not let a busy
 * thread's queue overflow, so a thread whose queue is half full or more
 * after an append wakes it, but only when it sleeps, and once per sleep.
 * After its store of head the thread does a sequentially consistent
 * read-modify-write of head (adding nothing) and reads ob->sleeping the
 * same way; the writer sets sleeping with a sequentially consistent
 * exchange, then reads every head the same way, and does not wait while
 * a queue is half full. In the single order of those operations one side
 * comes second and sees the other's store, so no wake is lost (a
 * store-buffering pair: the release store of head alone would let both
 * miss). The thread that wakes the writer clears sleeping under ob->mu,
 * so later appends send nothing. Below half full an append costs what it always
 * did, and the thread reads the writer's tail only when its last view of it
 * says half full. Only when a queue fills all the same (the writer is not
 * scheduled for that long) is the new span dropped and counted.
 *
 * Lock order: ob->mu is innermost. A stage thread takes it, to wake the
 * writer, with whatever its op holds (op_mu, a lock of the user's); the
 * writer holds it only around its sleep. User callbacks and file writes
 * run with no lock held.
 */
#include "stage-int.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define TRACE_PERIOD_NS ((uint64_t)2000000)
#define TRACE_PERIOD_MAX_NS ((uint64_t)128000000)
#define TRACE_MERGE_NS ((uint64_t)5000)
#define FOREVER UINT64_MAX /* a sleep with no timeout */
#define TRACE_EVENTS_DEFAULT 4096
#define TRACE_EVENTS_MAX ((size_t)1 << 24)

enum ev_kind { EV_NONE, EV_BUSY, EV_FULL, EV_EMPTY };

struct sl_tev {
  uint64_t ts, dur;
  int kind;
};

struct sl_observer {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop, running;
  /* Set under mu while the observer sleeps; cleared under mu by whoever
   * wakes it, read without the lock by the stage threads. */
  _Atomic int sleeping;
  /* sl__trace_wait_caught_up: waiters, woken (idle_cv) whenever the
   * observer goes to sleep, and when it ends (done). Under mu. */
  pthread_cond_t idle_cv;
  int idle_waiters;
  bool done;
  /* The trace's shortest and longest sleep and shortest span. */
  uint64_t period_ns, period_max_ns, merge_ns;
  /* The first error writing the trace (written by the observer, read by
   * sl_pipeline_trace_error); once set, nothing more is written. */
  _Atomic int werr;
  pthread_t thread;
  unsigned wd_ms;
  sl_watchdog_cb wd_cb;
  void *wd_arg;
  FILE *f;
  bool own_f;
  /* The observer thread's own. */
  uint64_t t0;
  size_t *ring_last; /* each ring's last sampled level + 1 (0: none), then
                      * each ring's last peak */
  bool first;
};

/* ---- the sequence counter: one writer (the thread), any reader ---- */

static void seq_open(struct sl_tobs *o) {
  uint32_t q = atomic_load_explicit(&o->seq, memory_order_relaxed);
  atomic_store_explicit(&o->seq, q + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
}

static void seq_close(struct sl_tobs *o) {
  uint32_t q = atomic_load_explicit(&o->seq, memory_order_relaxed);
  atomic_store_explicit(&o->seq, q + 1, memory_order_release);
}

#define LD(v) atomic_load_explicit(v, memory_order_relaxed)
#define ST(v, x) atomic_store_explicit(v, x, memory_order_relaxed)

void sl__tobs_snapshot(struct sl_tobs *o, struct sl__tobs_view *v) {
  for (;;) {
    uint32_t q = atomic_load_explicit(&o->seq, memory_order_acquire);
    v->state = LD(&o->state);
    v->ring = LD(&o->ring);
    v->since_ns = LD(&o->since_ns);
    v->start_ns = LD(&o->start_ns);
    v->end_ns = LD(&o->end_ns);
    v->full_ns = LD(&o->full_ns);
    v->empty_ns = LD(&o->empty_ns);
    v->now_ns = sl__now_ns();
    atomic_thread_fence(memory_order_acquire);
    if (!(q & 1) && atomic_load_explicit(&o->seq, memory_order_relaxed) == q)
      break;
  }
  /* An ongoing wait counts as far as now. */
  uint64_t ongoing = v->now_ns > v->since_ns ? v->now_ns - v->since_ns : 0;
  if (v->state == TOBS_FULL)
    v->full_ns += ongoing;
  else if (v->state == TOBS_EMPTY)
    v->empty_ns += ongoing;
}

struct sl_tobs *sl__obs_at(sl_stage *s, size_t idx) {
  struct sl_tobs *v = atomic_load_explicit(&s->obs, memory_order_acquire);
  return v && idx < s->nobs && v[idx].tid ? &v[idx] : NULL;
}

/* ---- the stage thread's side ---- */

/* Wake the observer if it sleeps (see "Waking the writer" above). */
static void wake_writer(struct sl_tobs *o) {
  struct sl_observer *ob = o->ob;
  atomic_fetch_add_explicit(&o->head, 0, memory_order_seq_cst);
  if (!atomic_load_explicit(&ob->sleeping, memory_order_seq_cst))
    return;
  pthread_mutex_lock(&ob->mu);
  if (LD(&ob->sleeping)) {
    ST(&ob->sleeping, 0);
    pthread_cond_signal(&ob->cv);
  }
  pthread_mutex_unlock(&ob->mu);
}

static void publish(struct sl_tobs *o, int kind, uint64_t ts, uint64_t dur) {
  uint64_t h = LD(&o->head);
  uint64_t used = h - o->tail_seen; /* at least what the queue holds */
  if (used + 1 >= o->half) {
    o->tail_seen = atomic_load_explicit(&o->tail, memory_order_acquire);
    used = h - o->tail_seen;
  }
  if (used > o->mask) {
    ST(&o->dropped, LD(&o->dropped) + 1);
    wake_writer(o);
    return;
  }
  o->ev[h & o->mask] = (struct sl_tev){.ts = ts, .dur = dur, .kind = kind};
  atomic_store_explicit(&o->head, h + 1, memory_order_release);
  if (used + 1 >= o->half)
    wake_writer(o);
}

/* Add a span, joined to the held one when it is of the same kind and the
 * gap between them is short. */
static void span(struct sl_tobs *o, int kind, uint64_t t0, uint64_t t1) {
  if (o->pend_kind == kind && t0 - (o->pend_ts + o->pend_dur) < o->merge_ns) {
    o->pend_dur = t1 - o->pend_ts;
    return;
  }
  if (o->pend_kind != EV_NONE)
    publish(o, o->pend_kind, o->pend_ts, o->pend_dur);
  o->pend_kind = kind;
  o->pend_ts = t0;
  o->pend_dur = t1 - t0;
  o->emitted = true;
}

static void trace_wait(struct sl_tobs *o, int state, uint64_t t0, uint64_t t1) {
  if (t1 - t0 < o->merge_ns)
    return; /* the busy span goes on over it */
  if (t0 > o->last_ns && t0 - o->last_ns >= o->merge_ns)
    span(o, EV_BUSY, o->last_ns, t0);
  span(o, state == TOBS_FULL ? EV_FULL : EV_EMPTY, t0, t1);
  o->last_ns = t1;
}

struct sl_tobs *sl__tobs_begin(sl_stage *s, size_t idx) {
  struct sl_tobs *o = sl__obs_at(s, idx);
  if (!o)
    return NULL;
  seq_open(o);
  uint64_t now = sl__now_ns();
  ST(&o->start_ns, now);
  ST(&o->since_ns, now);
  ST(&o->state, TOBS_RUNNING);
  seq_close(o);
  o->last_ns = now;
  return o;
}

void sl__tobs_end(struct sl_tobs *o) {
  if (!o)
    return;
  seq_open(o);
  uint64_t now = sl__now_ns();
  ST(&o->end_ns, now);
  ST(&o->since_ns, now);
  ST(&o->state, TOBS_DONE);
  ST(&o->ring, NULL);
  seq_close(o);
  if (o->ev) {
    if (now > o->last_ns || !o->emitted)
      span(o, EV_BUSY, o->last_ns, now > o->last_ns ? now : o->last_ns + 1);
    publish(o, o->pend_kind, o->pend_ts, o->pend_dur);
    o->pend_kind = EV_NONE;
  }
}

void sl__tobs_wait_begin(struct sl_tobs *o, int state, sl_ring *ring) {
  seq_open(o);
  ST(&o->since_ns, sl__now_ns());
  ST(&o->ring, ring);
  ST(&o->state, state);
  seq_close(o);
}

void sl__tobs_wait_end(struct sl_tobs *o) {
  int state = LD(&o->state);
  uint64_t t0 = LD(&o->since_ns);
  seq_open(o);
  uint64_t now = sl__now_ns();
  uint64_t d = now > t0 ? now - t0 : 0;
  if (state == TOBS_FULL)
    ST(&o->full_ns, LD(&o->full_ns) + d);
  else
    ST(&o->empty_ns, LD(&o->empty_ns) + d);
  ST(&o->since_ns, now);
  ST(&o->ring, NULL);
  ST(&o->state, TOBS_RUNNING);
  seq_close(o);
  if (o->ev)
    trace_wait(o, state, t0, now);
}

/* ---- setting up ---- */

static struct sl_observer *observer_get(sl_pipeline *p) {
  if (p->observer)
    return p->observer;
  struct sl_observer *ob = sl__calloc(1, sizeof *ob);
  if (!ob)
    return NULL;
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca) != 0)
    goto fail_ob;
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int err = pthread_cond_init(&ob->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (err)
    goto fail_ob;
  if (pthread_cond_init(&ob->idle_cv, NULL) != 0)
    goto fail_cv;
  if (pthread_mutex_init(&ob->mu, NULL) != 0)
    goto fail_idle;
  ob->period_ns = TRACE_PERIOD_NS;
  ob->period_max_ns = TRACE_PERIOD_MAX_NS;
  ob->merge_ns = TRACE_MERGE_NS;
  p->observer = ob;
  return ob;

fail_idle:
  pthread_cond_destroy(&ob->idle_cv);
fail_cv:
  pthread_cond_destroy(&ob->cv);
fail_ob:
  sl__free(ob);
  return NULL;
}

int sl_pipeline_set_watchdog(sl_pipeline *p, unsigned ms, sl_watchdog_cb cb,
                             void *arg) {
  if (!p)
    return SL_EINVAL;
  if (p->started)
    return SL_EBUSY;
  struct sl_observer *ob = observer_get(p);
  if (!ob)
    return SL_ENOMEM;
  bool on = ms && cb;
  ob->wd_ms = on ? ms : 0;
  ob->wd_cb = on ? cb : NULL;
  ob->wd_arg = on ? arg : NULL;
  return 0;
}

static int trace_set(sl_pipeline *p, FILE *f, bool own) {
  struct sl_observer *ob = observer_get(p);
  if (!ob) {
    if (own)
      fclose(f);
    return SL_ENOMEM;
  }
  if (ob->f && ob->own_f)
    fclose(ob->f);
  ob->f = f;
  ob->own_f = own;
  return 0;
}

int sl_pipeline_trace_file(sl_pipeline *p, FILE *f) {
  if (!p)
    return SL_EINVAL;
  if (p->started)
    return SL_EBUSY;
  if (!f && !p->observer)
    return 0;
  return trace_set(p, f, false);
}

int sl_pipeline_trace(sl_pipeline *p, const char *path) {
  if (!p || !path)
    return SL_EINVAL;
  if (p->started)
    return SL_EBUSY;
  FILE *f = fopen(path, "w");
  if (!f)
    return errno == ENOMEM ? SL_ENOMEM : sl_err_from_errno(errno);
  return trace_set(p, f, true);
}

int sl__trace_tune(sl_pipeline *p, uint64_t period_ns, uint64_t max_ns,
                   uint64_t merge_ns) {
  struct sl_observer *ob = p ? p->observer : NULL;
  if (!ob || !ob->f || period_ns == 0 || max_ns < period_ns)
    return SL_EINVAL;
  if (p->started)
    return SL_EBUSY;
  ob->period_ns = period_ns;
  ob->period_max_ns = max_ns;
  ob->merge_ns = merge_ns;
  return 0;
}

int sl_pipeline_trace_error(sl_pipeline *p) {
  if (!p)
    return SL_EINVAL;
  return p->observer ? atomic_load(&p->observer->werr) : 0;
}

static size_t round_pow2(size_t n) {
  size_t v = 1;
  while (v < n)
    v <<= 1;
  return v;
}

static void *observer_main(void *arg);

int sl__obs_start(sl_pipeline *p) {
  struct sl_observer *ob = p->observer;
  bool tracing = ob && ob->f;
  size_t cap =
      p->opts.trace_events ? p->opts.trace_events : TRACE_EVENTS_DEFAULT;
  cap = round_pow2(cap > TRACE_EVENTS_MAX ? TRACE_EVENTS_MAX : cap);
  int tid = 0;
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    size_t nin = sl__stage_input_threads(s), n = nin + 1;
    struct sl_tobs *v = sl__aligned_calloc(n * sizeof *v);
    if (!v)
      return SL_ENOMEM;
    s->nobs = n;
    for (size_t k = 0; k < n; k++) {
      struct sl_tobs *o = &v[k];
      o->s = s;
      bool exists = k == 0 ? !s->threadless && (s->kind == KIND_SOURCE ||
                                                s->kind == KIND_DUPLEX)
                           : k - 1 < nin;
      if (!exists)
        continue;
      const char *suffix = "";
      char num[24];
      if (k == 0 && s->kind == KIND_DUPLEX)
        suffix = "/r";
      else if (k > 0 && nin > 1)
        snprintf(num, sizeof num, "/%zu", k - 1), suffix = num;
      else if (k > 0 && s->kind == KIND_DUPLEX)
        suffix = "/w";
      snprintf(o->name, sizeof o->name, "sl:%s%s", s->name, suffix);
      if (tracing) {
        o->ev = sl__calloc(cap, sizeof *o->ev);
        if (!o->ev) {
          atomic_store(&s->obs, v); /* for sl__obs_free */
          return SL_ENOMEM;
        }
        o->mask = cap - 1;
        o->half = cap / 2 ? cap / 2 : 1;
        o->merge_ns = ob->merge_ns;
        o->ob = ob;
      }
      o->tid = ++tid;
    }
    /* Published complete: readers on other threads may look at once. */
    atomic_store_explicit(&s->obs, v, memory_order_release);
  }
  /* Every ring and record exists, and nothing of the pipeline runs yet:
   * from here the stats and the stall report read the graph without a
   * lock (before the observer thread starts, so that its watchdog sees
   * it too). */
  atomic_store_explicit(&p->prepared, 1, memory_order_release);
  if (!ob || (!tracing && !ob->wd_cb))
    return 0;
  if (tracing) {
    ob->ring_last = sl__calloc(p->nrings ? 2 * p->nrings : 1, sizeof(size_t));
    if (!ob->ring_last)
      return SL_ENOMEM;
  }
  ob->t0 = sl__now_ns();
  ob->first = true;
  int err = pthread_create(&ob->thread, NULL, observer_main, p);
  if (err)
    return err == EAGAIN || err == ENOMEM ? SL_ENOMEM : SL_ETHREAD;
  sl__thread_name(ob->thread, "observer", "");
  ob->running = true;
  return 0;
}

void sl__obs_stop(sl_pipeline *p) {
  struct sl_observer *ob = p->observer;
  if (!ob)
    return;
  pthread_mutex_lock(&ob->mu);
  ob->stop = true;
  pthread_cond_signal(&ob->cv);
  pthread_mutex_unlock(&ob->mu);
}

void sl__obs_join(sl_pipeline *p) {
  struct sl_observer *ob = p->observer;
  if (ob && ob->running) {
    pthread_join(ob->thread, NULL);
    ob->running = false;
  }
}

void sl__obs_free(sl_pipeline *p) {
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    struct sl_tobs *v = atomic_load(&s->obs);
    if (!v)
      continue;
    for (size_t k = 0; k < s->nobs; k++)
      sl__free(v[k].ev);
    sl__aligned_free(v);
    atomic_store(&s->obs, NULL);
  }
  struct sl_observer *ob = p->observer;
  if (!ob)
    return;
  if (ob->f && ob->own_f)
    fclose(ob->f); /* a trace never started: an empty file */
  sl__free(ob->ring_last);
  pthread_cond_destroy(&ob->idle_cv);
  pthread_cond_destroy(&ob->cv);
  pthread_mutex_destroy(&ob->mu);
  sl__free(ob);
  p->observer = NULL;
}

/* ---- the trace writer (the observer thread) ---- */

/* Microseconds since the trace began, as Chrome's "ts" wants them. */
static double us(const struct sl_observer *ob, uint64_t t) {
  return ((double)t - (double)ob->t0) / 1000.0;
}

/* Keep the first write error the stream shows; errno was cleared when
 * the observer began this pass of writing (which ends with a call here),
 * so a nonzero value is the failed write's. True while there is none. */
static bool write_ok(struct sl_observer *ob) {
  if (LD(&ob->werr))
    return false;
  if (!ferror(ob->f))
    return true;
  ST(&ob->werr, errno ? sl_err_from_errno(errno) : SL_EIO);
  return false;
}

static void sep(struct sl_observer *ob) {
  fputs(ob->first ? "\n" : ",\n", ob->f);
  ob->first = false;
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static void ring_label(FILE *f, const sl_stage *s, size_t c) {
  char buf[160];
  snprintf(buf, sizeof buf, "%s -> %s", s->name, s->cons[c]->name);
  json_str(f, buf);
}

static void trace_header(sl_pipeline *p) {
  struct sl_observer *ob = p->observer;
  fputs("{\"traceEvents\":[", ob->f);
  sep(ob);
  fputs("{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":1,\"tid\":0,"
        "\"args\":{\"name\":\"sluice pipeline\"}}",
        ob->f);
  for (size_t i = 0; i < p->nstages; i++)
    for (size_t k = 0; k < p->stages[i]->nobs; k++) {
      struct sl_tobs *o = sl__obs_at(p->stages[i], k);
      if (!o)
        continue;
      sep(ob);
      fprintf(ob->f,
              "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":%d,"
              "\"args\":{\"name\":",
              o->tid);
      json_str(ob->f, o->name);
      fputs("}}", ob->f);
      sep(ob);
      fprintf(ob->f,
              "{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":1,"
              "\"tid\":%d,\"args\":{\"sort_index\":%d}}",
              o->tid, o->tid);
    }
}

static const char *const ev_names[] = {"", "busy", "blocked full",
                                       "blocked empty"};

/* Write every event the threads have published, and give the slots
 * back; true if there was any. */
static bool trace_drain(sl_pipeline *p) {
  struct sl_observer *ob = p->observer;
  bool any = false;
  for (size_t i = 0; i < p->nstages; i++)
    for (size_t k = 0; k < p->stages[i]->nobs; k++) {
      struct sl_tobs *o = sl__obs_at(p->stages[i], k);
      if (!o || !o->ev)
        continue;
      uint64_t h = atomic_load_explicit(&o->head, memory_order_acquire);
      uint64_t t = LD(&o->tail);
      any |= t != h;
      if (!write_ok(ob))
        t = h; /* the file failed: give the slots back unwritten */
      for (; t != h; t++) {
        const struct sl_tev *e = &o->ev[t & o->mask];
        sep(ob);
        fprintf(ob->f,
                "{\"ph\":\"X\",\"name\":\"%s\",\"cat\":\"stage\",\"pid\":1,"
                "\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f}",
                ev_names[e->kind], o->tid, us(ob, e->ts),
                (double)e->dur / 1000.0);
      }
      atomic_store_explicit(&o->tail, t, memory_order_release);
    }
  return any;
}

/* One counter event per ring whose level changed since the last look (or
 * every ring); true if there was any. */
static bool trace_levels(sl_pipeline *p, uint64_t now, bool all) {
  struct sl_observer *ob = p->observer;
  size_t j = 0;
  bool any = false;
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    for (size_t c = 0; s->outs && c < s->ncons; c++, j++) {
      sl_ring_stats rs;
      if (sl_ring_stats_get(s->outs[c], &rs) != 0)
        continue;
      size_t level = rs.level, *last_peak = &ob->ring_last[p->nrings + j];
      if (!all && ob->ring_last[j] == level + 1 && *last_peak == rs.peak_level)
        continue;
      ob->ring_last[j] = level + 1;
      *last_peak = rs.peak_level;
      any = true;
      if (!write_ok(ob))
        continue;
      sep(ob);
      fputs("{\"ph\":\"C\",\"name\":", ob->f);
      ring_label(ob->f, s, c);
      fprintf(ob->f,
              ",\"pid\":1,\"ts\":%.3f,\"args\":{\"level\":%zu,"
              "\"peak\":%zu}}",
              us(ob, now), level, rs.peak_level);
    }
  }
  return any;
}

static void trace_footer(sl_pipeline *p) {
  struct sl_observer *ob = p->observer;
  uint64_t dropped = 0;
  for (size_t i = 0; i < p->nstages; i++)
    for (size_t k = 0; k < p->stages[i]->nobs; k++) {
      struct sl_tobs *o = sl__obs_at(p->stages[i], k);
      if (o)
        dropped += LD(&o->dropped);
    }
  if (!write_ok(ob))
    return;
  fprintf(ob->f,
          "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"library\":"
          "\"sluice %s\",\"dropped_events\":%llu}}\n",
          sl_version(), (unsigned long long)dropped);
}

/* ---- the observer thread ---- */

/* Chunks moved by every stage; p must be prepared. */
static uint64_t chunks_moved(sl_pipeline *p) {
  uint64_t n = 0;
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    n += LD(&s->in_ctr.chunks) + LD(&s->out_ctr.chunks);
  }
  return n;
}

/* A thread's queue holds half its slots or more: the writer owes it a
 * look. */
static bool owed(sl_pipeline *p) {
  for (size_t i = 0; i < p->nstages; i++)
    for (size_t k = 0; k < p->stages[i]->nobs; k++) {
      struct sl_tobs *o = sl__obs_at(p->stages[i], k);
      if (o && o->ev &&
          atomic_load_explicit(&o->head, memory_order_seq_cst) - LD(&o->tail) >=
              o->half)
        return true;
    }
  return false;
}

/* Sleep for ns (FOREVER: until woken), unless a queue is owed a look;
 * ob->mu held. */
static void sleep_locked(sl_pipeline *p, uint64_t ns, bool tracing) {
  struct sl_observer *ob = p->observer;
  atomic_exchange_explicit(&ob->sleeping, 1, memory_order_seq_cst);
  if (ob->stop || (tracing && owed(p))) {
    ST(&ob->sleeping, 0);
    return;
  }
  if (ob->idle_waiters)
    pthread_cond_broadcast(&ob->idle_cv);
  if (ns == FOREVER) {
    while (LD(&ob->sleeping) && !ob->stop)
      pthread_cond_wait(&ob->cv, &ob->mu);
  } else {
    uint64_t due = sl__now_ns() + ns;
    struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u),
                          .tv_nsec = (long)(due % 1000000000u)};
    while (LD(&ob->sleeping) && !ob->stop &&
           pthread_cond_timedwait(&ob->cv, &ob->mu, &ts) != ETIMEDOUT)
      ;
  }
  ST(&ob->sleeping, 0);
}

static void *observer_main(void *arg) {
  sl_pipeline *p = arg;
  struct sl_observer *ob = p->observer;
  sl__thread_name(pthread_self(), "observer", "");
  bool tracing = ob->f != NULL;
  uint64_t wd_ns = (uint64_t)ob->wd_ms * 1000000u;
  uint64_t wd_period = wd_ns ? (wd_ns / 4 ? wd_ns / 4 : 1) : FOREVER;
  uint64_t trace_period = tracing ? ob->period_ns : FOREVER;
  if (tracing) {
    errno = 0; /* see write_ok */
    trace_header(p);
    trace_levels(p, ob->t0, true);
    write_ok(ob); /* before errno changes again */
  }
  uint64_t moved = chunks_moved(p), last_move = sl__now_ns();
  bool fired = false;

  pthread_mutex_lock(&ob->mu);
  for (;;) {
    sleep_locked(p, trace_period < wd_period ? trace_period : wd_period,
                 tracing);
    if (ob->stop)
      break;
    pthread_mutex_unlock(&ob->mu);
    uint64_t now = sl__now_ns();
    if (tracing) {
      errno = 0;
      bool news = trace_levels(p, now, false);
      news |= trace_drain(p);
      write_ok(ob);
      /* Back off while nothing happens; look often again once it does. */
      if (news)
        trace_period = ob->period_ns;
      else if (trace_period < ob->period_max_ns)
        trace_period = trace_period > ob->period_max_ns / 2 ? ob->period_max_ns
                                                            : trace_period * 2;
    }
    if (wd_ns) {
      uint64_t m = chunks_moved(p);
      if (m != moved) {
        moved = m;
        last_move = now;
        fired = false;
      } else if (!fired && now - last_move >= wd_ns) {
        fired = true;
        ob->wd_cb(p, ob->wd_arg);
      }
    }
    pthread_mutex_lock(&ob->mu);
  }
  pthread_mutex_unlock(&ob->mu);

  if (tracing) {
    /* Every stage thread has ended: all its spans are published. */
    errno = 0;
    trace_levels(p, sl__now_ns(), true);
    trace_drain(p);
    trace_footer(p);
    bool ok = write_ok(ob);
    errno = 0;
    int rc = ob->own_f ? fclose(ob->f) : fflush(ob->f);
    if (ob->own_f)
      ob->f = NULL;
    if (ok && rc != 0)
      ST(&ob->werr, errno ? sl_err_from_errno(errno) : SL_EIO);
  }
  pthread_mutex_lock(&ob->mu);
  ob->done = true;
  if (ob->idle_waiters)
    pthread_cond_broadcast(&ob->idle_cv);
  pthread_mutex_unlock(&ob->mu);
  return NULL;
}

int sl__trace_wait_caught_up(sl_pipeline *p) {
  struct sl_observer *ob = p ? p->observer : NULL;
  if (!ob || !ob->running)
    return SL_EINVAL;
  pthread_mutex_lock(&ob->mu);
  ob->idle_waiters++;
  while (!ob->done && !(LD(&ob->sleeping) && !owed(p)))
    pthread_cond_wait(&ob->idle_cv, &ob->mu);
  ob->idle_waiters--;
  pthread_mutex_unlock(&ob->mu);
  return 0;
}

/* ---- the stall report ---- */

static const char *state_text(int state) {
  switch (state) {
  case TOBS_RUNNING:
    return "running an op";
  case TOBS_FULL:
    return "blocked on a full output";
  case TOBS_EMPTY:
    return "waiting on an empty input";
  case TOBS_DONE:
    return "ended";
  default:
    return "not started";
  }
}

/* The link a ring carries, "a -> b", into buf. */
static const char *ring_name(sl_pipeline *p, sl_ring *r, char *buf, size_t n) {
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    for (size_t c = 0; s->outs && c < s->ncons; c++)
      if (s->outs[c] == r) {
        snprintf(buf, n, "%s -> %s", s->name, s->cons[c]->name);
        return buf;
      }
  }
  snprintf(buf, n, "?");
  return buf;
}

/* The first thread of s in state on ring r (any ring when r is NULL). */
static bool find_thread(sl_stage *s, int state, sl_ring *r,
                        struct sl__tobs_view *out) {
  for (size_t k = 0; k < s->nobs; k++) {
    struct sl_tobs *o = sl__obs_at(s, k);
    if (!o)
      continue;
    sl__tobs_snapshot(o, out);
    if (out->state == state && (!r || out->ring == r))
      return true;
  }
  return false;
}

static double secs(uint64_t ns) {
  return (double)ns / 1e9;
}

int sl_pipeline_stall_report(sl_pipeline *p, FILE *f) {
  if (!p || !f)
    return SL_EINVAL;
  int err = 0;
  char rn[160];
  /* Before the pipeline is prepared the building thread may still be
   * adding stages: count them as the stats do, under the lock. */
  bool ready = sl__pipeline_ready(p);
  size_t n = 0;
  while (sl__pipeline_stage_at(p, n, ready))
    n++;
  err |= fprintf(f, "stall report: %zu stage(s), %llu chunk(s) moved%s\n", n,
                 (unsigned long long)(ready ? chunks_moved(p) : 0),
                 ready ? "" : ", not started") < 0;
  if (!ready)
    return err ? SL_EIO : 0;

  err |= fputs("threads:\n", f) < 0;
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    for (size_t k = 0; k < s->nobs; k++) {
      struct sl_tobs *o = sl__obs_at(s, k);
      if (!o)
        continue;
      struct sl__tobs_view v;
      sl__tobs_snapshot(o, &v);
      err |= fprintf(f, "  %-20s %s", o->name, state_text(v.state)) < 0;
      if (v.ring)
        err |= fprintf(f, " (%s)", ring_name(p, v.ring, rn, sizeof rn)) < 0;
      if (v.state != TOBS_IDLE && v.state != TOBS_DONE)
        err |= fprintf(f, " for %.3f s", secs(v.now_ns - v.since_ns)) < 0;
      err |= fputc('\n', f) == EOF;
    }
  }

  err |= fputs("rings:\n", f) < 0;
  const char *suspect = NULL;
  uint64_t suspect_for = 0;
  char suspect_ring[160] = "";
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage *s = p->stages[i];
    for (size_t c = 0; s->outs && c < s->ncons; c++) {
      sl_ring *r = s->outs[c];
      sl_ring_stats rs;
      if (sl_ring_stats_get(r, &rs) != 0)
        continue;
      struct sl__tobs_view v;
      const char *what = rs.error                  ? "aborted"
                         : rs.writer_waiting       ? "full"
                         : rs.reader_waiting       ? "empty"
                         : rs.closed && !rs.chunks ? "closed"
                                                   : "flowing";
      ring_name(p, r, rn, sizeof rn);
      err |= fprintf(f, "  %-33s %-8s level %zu of %zu, %zu chunk(s)", rn, what,
                     rs.level, rs.hwm, rs.chunks) < 0;
      if (rs.writer_waiting && find_thread(s, TOBS_FULL, r, &v)) {
        err |= fprintf(f, ", writer blocked for %.3f s",
                       secs(v.now_ns - v.since_ns)) < 0;
        /* The consumer holds it up if it is running, not waiting. */
        struct sl__tobs_view w;
        if (find_thread(s->cons[c], TOBS_RUNNING, NULL, &w) &&
            (!suspect || w.now_ns - w.since_ns > suspect_for)) {
          suspect = s->cons[c]->name;
          suspect_for = w.now_ns - w.since_ns;
          snprintf(suspect_ring, sizeof suspect_ring, "%s", rn);
        }
      }
      if (rs.reader_waiting && find_thread(s->cons[c], TOBS_EMPTY, r, &v))
        err |= fprintf(f, ", reader starved for %.3f s",
                       secs(v.now_ns - v.since_ns)) < 0;
      err |= fputc('\n', f) == EOF;
    }
  }
  if (suspect)
    err |= fprintf(f,
                   "suspect: %s (running an op for %.3f s while its input "
                   "%s is full)\n",
                   suspect, secs(suspect_for), suspect_ring) < 0;
  return err ? SL_EIO : 0;
}

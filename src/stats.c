/* SPDX-License-Identifier: MIT */
/*
 * Counters of a running pipeline, the bottleneck, and the table that
 * shows them.
 *
 * Nothing here stops the pipeline. Chunk and byte counters are relaxed
 * atomics written by one thread each. Time blocked on a full output is
 * the output rings' ended writer waits, time blocked on an empty input
 * the input rings' ended reader waits (read under each ring's lock), and
 * to each the wait going on now, from the stage threads' records
 * (trace.c, read without a lock); busy time is the rest of the stage's
 * wall time. The pieces are read at slightly different moments, so a
 * wait that just ended could be counted twice for an instant; the stage
 * keeps the most ever reported, so that every figure only grows.
 *
 * Any thread may ask, at any moment, also while the building thread adds
 * stages or starts the pipeline. Until the pipeline is prepared (the flag
 * sl__obs_start publishes once every ring and thread record exists) the
 * stage list is read under the pipeline's lock, which chain takes to grow
 * it, and nothing else is read: a stage that has not run has only its
 * name and zeros to show. From then on the graph is fixed and is read
 * without a lock.
 *
 * The bottleneck is the stage that is busy while its neighbours wait on
 * it: its producers blocked on a full ring into it, its consumers starved
 * on an empty ring out of it. Each stage scores its busy share (of its
 * own time) times the sum of two more: the share of their own time its
 * producers spent blocked on it, and the share of theirs its consumers
 * spent starved by it; the highest score wins. Each share is a part over
 * the whole it is a part of, so none can pass 1: a wait is measured on
 * the thread that waits, and dividing it by this stage's time instead
 * would give a tee's two starved branches 200%, or 105% to a consumer
 * that began to wait before this stage's thread first ran. The busiest
 * stage alone would be wrong twice over:
 * a stage blocked downstream of the real bottleneck can look busy when
 * it is waiting for something the framework does not see (a worker pool,
 * a disk), and in a balanced pipeline every stage is busy; the neighbours'
 * waits say which one the others are actually waiting for. When no
 * neighbour waited at all, the busiest stage is named.
 */
#include "stage-int.h"

static uint64_t ld(_Atomic uint64_t *v) {
  return atomic_load_explicit(v, memory_order_relaxed);
}

/* Report at least the most reported before, and remember it. */
static uint64_t grow(_Atomic uint64_t *rep, uint64_t v) {
  uint64_t seen = atomic_load_explicit(rep, memory_order_relaxed);
  while (v > seen &&
         !atomic_compare_exchange_weak_explicit(
             rep, &seen, v, memory_order_relaxed, memory_order_relaxed))
    ;
  return v > seen ? v : seen;
}

/* The counters of s; before the pipeline is ready (!ready), zeros. */
static void stage_stats(sl_stage *s, sl_stage_stats *st, bool ready) {
  sl_ring_stats rs;
  if (!ready) {
    *st = (sl_stage_stats){.name = s->name, .status = atomic_load(&s->status)};
    return;
  }
  st->name = s->name;
  st->chunks_in = ld(&s->in_ctr.chunks);
  st->bytes_in = ld(&s->in_ctr.bytes);
  st->chunks_out = ld(&s->out_ctr.chunks);
  st->bytes_out = ld(&s->out_ctr.bytes);
  st->blocked_full_ns = 0;
  st->blocked_empty_ns = 0;
  /* Ended waits, from the rings. Pushes wait on each branch in turn, so
   * the full waits add up; with several inputs the stage starves only
   * while all are empty, which the shortest of their waits bounds. */
  for (size_t i = 0; s->outs && i < s->ncons; i++)
    if (sl_ring_stats_get(s->outs[i], &rs) == 0)
      st->blocked_full_ns += rs.writer_wait_ns;
  for (size_t i = 0; s->ins && i < s->nprods; i++)
    if (sl_ring_stats_get(s->ins[i], &rs) == 0 &&
        (i == 0 || rs.reader_wait_ns < st->blocked_empty_ns))
      st->blocked_empty_ns = rs.reader_wait_ns;
  /* The wait going on now, from the thread records: the longest full
   * wait, and an empty wait only when every input thread waits. */
  uint64_t full_now = 0, empty_now = UINT64_MAX;
  size_t inputs = 0;
  for (size_t k = 0; k < s->nobs; k++) {
    struct sl_tobs *o = sl__obs_at(s, k);
    if (!o)
      continue;
    struct sl__tobs_view v;
    sl__tobs_snapshot(o, &v);
    uint64_t d = v.now_ns > v.since_ns ? v.now_ns - v.since_ns : 0;
    if (v.state == TOBS_FULL && d > full_now)
      full_now = d;
    if (k > 0) {
      inputs++;
      if (v.state != TOBS_EMPTY)
        d = 0;
      if (d < empty_now)
        empty_now = d;
    }
  }
  st->blocked_full_ns += full_now;
  st->blocked_empty_ns += inputs ? empty_now : 0;
  uint64_t t0 = ld(&s->start_ns), t1 = ld(&s->end_ns);
  uint64_t wall = t0 ? (t1 ? t1 : sl__now_ns()) - t0 : 0;
  uint64_t blocked = st->blocked_full_ns + st->blocked_empty_ns;
  st->busy_ns = wall > blocked ? wall - blocked : 0;
  /* Every figure only grows, whoever reads it. */
  struct sl_tobs *rec = atomic_load_explicit(&s->obs, memory_order_acquire);
  if (rec) {
    st->busy_ns = grow(&rec->rep_busy, st->busy_ns);
    st->blocked_full_ns = grow(&rec->rep_full, st->blocked_full_ns);
    st->blocked_empty_ns = grow(&rec->rep_empty, st->blocked_empty_ns);
  }
  st->running = atomic_load(&s->running) && !t1;
  st->status = atomic_load(&s->status);
}

int sl_pipeline_stage_stats(sl_pipeline *p, size_t i, sl_stage_stats *st) {
  if (!p || !st)
    return SL_EINVAL;
  bool ready = sl__pipeline_ready(p);
  sl_stage *s = sl__pipeline_stage_at(p, i, ready);
  if (!s)
    return SL_EINVAL;
  stage_stats(s, st, ready);
  return 0;
}

static double pct(uint64_t part, uint64_t whole) {
  return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* The wall time of stage t, as its stats show it now. */
static uint64_t wall_of(sl_stage *t) {
  sl_stage_stats st;
  stage_stats(t, &st, true);
  return st.busy_ns + st.blocked_full_ns + st.blocked_empty_ns;
}

/* Add a neighbour's wait on s (the ring's ended waits plus an ongoing
 * one) and its wall time to *w and *base. The wait is part of that wall
 * time, but the two are read a moment apart, and the wait going on now
 * against a clock read of its own, so it can come out a hair longer; it
 * is cut to the wall time so that this read error alone cannot push a
 * share past the whole. */
static void add_wait(uint64_t wait, uint64_t wall, uint64_t *w,
                     uint64_t *base) {
  *w += wait < wall ? wait : wall;
  *base += wall;
}

/* The shares of their own time that s's producers spent blocked on a
 * full ring into s (*up) and its consumers starved on an empty ring out
 * of it (*down), each in [0, 1]. A neighbour that has other outputs (a
 * tee) or inputs may have waited on those too; only its waits on s
 * count, over the whole of its time. */
static void waited_on(sl_stage *s, double *up, double *down) {
  uint64_t w = 0, base = 0;
  sl_ring_stats rs;
  struct sl__tobs_view v;
  for (size_t k = 0; s->ins && k < s->nprods; k++) {
    sl_stage *from = s->prods[k];
    uint64_t wall = wall_of(from), wait = 0;
    if (sl_ring_stats_get(s->ins[k], &rs) == 0)
      wait += rs.writer_wait_ns;
    for (size_t j = 0; j < from->nobs; j++) {
      struct sl_tobs *o = sl__obs_at(from, j);
      if (o && (sl__tobs_snapshot(o, &v), v.state == TOBS_FULL) &&
          v.ring == s->ins[k])
        wait += v.now_ns - v.since_ns;
    }
    add_wait(wait, wall, &w, &base);
  }
  *up = base ? (double)w / (double)base : 0.0;
  w = base = 0;
  for (size_t c = 0; s->outs && c < s->ncons; c++) {
    sl_stage *to = s->cons[c];
    uint64_t wall = wall_of(to), wait = 0;
    if (sl_ring_stats_get(s->outs[c], &rs) == 0)
      wait += rs.reader_wait_ns;
    for (size_t j = 0; j < to->nobs; j++) {
      struct sl_tobs *o = sl__obs_at(to, j);
      if (o && (sl__tobs_snapshot(o, &v), v.state == TOBS_EMPTY) &&
          v.ring == s->outs[c])
        wait += v.now_ns - v.since_ns;
    }
    add_wait(wait, wall, &w, &base);
  }
  *down = base ? (double)w / (double)base : 0.0;
}

/* The bottleneck's index, its busy share and the shares of their time
 * its producers were blocked on it and its consumers starved by it (each
 * in [0, 1]); SIZE_MAX when no stage has run. p must be ready. */
static size_t bottleneck(sl_pipeline *p, double *busy_out, double *up_out,
                         double *down_out) {
  size_t best = SIZE_MAX, busiest = SIZE_MAX;
  double best_score = 0, most_busy = -1;
  double busy_best = 0, up_best = 0, down_best = 0, busy_busiest = 0;
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage_stats st;
    stage_stats(p->stages[i], &st, true);
    uint64_t wall = st.busy_ns + st.blocked_full_ns + st.blocked_empty_ns;
    if (wall == 0)
      continue;
    double up, down;
    waited_on(p->stages[i], &up, &down);
    double busy = (double)st.busy_ns / (double)wall;
    if (busy * (up + down) > best_score) {
      best_score = busy * (up + down);
      best = i;
      busy_best = busy;
      up_best = up;
      down_best = down;
    }
    if (busy > most_busy) {
      most_busy = busy;
      busiest = i;
      busy_busiest = busy;
    }
  }
  if (best == SIZE_MAX) {
    best = busiest;
    busy_best = busy_busiest;
    up_best = down_best = 0;
  }
  *busy_out = busy_best;
  *up_out = up_best;
  *down_out = down_best;
  return best;
}

int sl_pipeline_bottleneck(sl_pipeline *p, size_t *index) {
  if (!p || !index)
    return SL_EINVAL;
  if (!sl__pipeline_ready(p))
    return SL_EINVAL; /* no stage has run */
  double b, u, d;
  size_t i = bottleneck(p, &b, &u, &d);
  if (i == SIZE_MAX)
    return SL_EINVAL;
  *index = i;
  return 0;
}

int sl_pipeline_stats_print(sl_pipeline *p, FILE *f) {
  if (!p || !f)
    return SL_EINVAL;
  int err = 0;
  bool ready = sl__pipeline_ready(p);
  sl_stage *s;

  err |= fprintf(f, "%-16s %10s %12s %10s %12s %7s %7s %7s\n", "stage",
                 "chunks in", "MiB in", "chunks out", "MiB out", "busy%",
                 "full%", "empty%") < 0;
  for (size_t i = 0; (s = sl__pipeline_stage_at(p, i, ready)) != NULL; i++) {
    sl_stage_stats st;
    stage_stats(s, &st, ready);
    uint64_t wall = st.busy_ns + st.blocked_full_ns + st.blocked_empty_ns;
    err |=
        fprintf(
            f, "%-16.16s %10llu %12.2f %10llu %12.2f %7.1f %7.1f %7.1f\n",
            st.name, (unsigned long long)st.chunks_in,
            (double)st.bytes_in / 1048576.0, (unsigned long long)st.chunks_out,
            (double)st.bytes_out / 1048576.0, pct(st.busy_ns, wall),
            pct(st.blocked_full_ns, wall), pct(st.blocked_empty_ns, wall)) < 0;
  }
  err |= fprintf(f, "\n%-33s %10s %10s %8s %8s %8s\n", "ring", "hwm", "peak",
                 "pauses", "drains", "signals") < 0;
  if (!ready) /* no ring exists yet */
    return err ? SL_EIO : 0;
  bool over = false; /* a peak above its hwm: say why that is right */
  for (size_t i = 0; i < p->nstages; i++) {
    s = p->stages[i];
    for (size_t c = 0; s->outs && c < s->ncons; c++) {
      sl_ring_stats rs;
      if (sl_ring_stats_get(s->outs[c], &rs) != 0)
        continue;
      char link[40];
      snprintf(link, sizeof link, "%.15s -> %.15s", s->name, s->cons[c]->name);
      err |= fprintf(f, "%-33s %10zu %10zu %8llu %8llu %8llu\n", link, rs.hwm,
                     rs.peak_level, (unsigned long long)rs.pauses,
                     (unsigned long long)rs.drains,
                     (unsigned long long)rs.signals) < 0;
      over |= rs.peak_level > rs.hwm;
    }
  }
  if (over)
    err |= fputs("(peak: the most a ring held, exact; a ring admits a chunk "
                 "while its level is below hwm, so its peak may pass hwm by "
                 "up to one chunk)\n",
                 f) < 0;
  double busy, up, down;
  size_t b = bottleneck(p, &busy, &up, &down);
  if (b != SIZE_MAX)
    err |=
        fprintf(f,
                "\nbottleneck: %s (busy %.1f%% of its time; upstream "
                "blocked on it %.1f%% of their time, downstream starved by "
                "it %.1f%% of theirs)\n",
                p->stages[b]->name, 100.0 * busy, 100.0 * up, 100.0 * down) < 0;
  return err ? SL_EIO : 0;
}

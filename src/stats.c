/*
 * Counters of a running pipeline and the table that shows them.
 *
 * Nothing here stops the pipeline: stage counters are relaxed atomics
 * written by one thread each, ring counters are read under the ring's
 * lock. Time blocked on a full output is the output ring's writer wait,
 * time blocked on an empty input the input ring's reader wait; busy time
 * is the rest of the stage's wall time.
 */
#include "stage-int.h"

static uint64_t ld(_Atomic uint64_t *v) {
  return atomic_load_explicit(v, memory_order_relaxed);
}

static void stage_stats(sl_stage *s, sl_stage_stats *st) {
  sl_ring_stats rs;
  st->name = s->name;
  st->chunks_in = ld(&s->in_ctr.chunks);
  st->bytes_in = ld(&s->in_ctr.bytes);
  st->chunks_out = ld(&s->out_ctr.chunks);
  st->bytes_out = ld(&s->out_ctr.bytes);
  st->blocked_full_ns = 0;
  st->blocked_empty_ns = 0;
  /* Pushes wait on each branch in turn, so the full waits add up; with
   * several inputs the stage starves only while all are empty, which the
   * shortest of their waits bounds. */
  for (size_t i = 0; s->outs && i < s->ncons; i++)
    if (sl_ring_stats_get(s->outs[i], &rs) == 0)
      st->blocked_full_ns += rs.writer_wait_ns;
  for (size_t i = 0; s->ins && i < s->nprods; i++)
    if (sl_ring_stats_get(s->ins[i], &rs) == 0 &&
        (i == 0 || rs.reader_wait_ns < st->blocked_empty_ns))
      st->blocked_empty_ns = rs.reader_wait_ns;
  uint64_t t0 = ld(&s->start_ns), t1 = ld(&s->end_ns);
  uint64_t wall = t0 ? (t1 ? t1 : sl__now_ns()) - t0 : 0;
  uint64_t blocked = st->blocked_full_ns + st->blocked_empty_ns;
  st->busy_ns = wall > blocked ? wall - blocked : 0;
  st->running = atomic_load(&s->running) && !t1;
  st->status = atomic_load(&s->status);
}

int sl_pipeline_stage_stats(sl_pipeline *p, size_t i, sl_stage_stats *st) {
  if (!p || !st || i >= p->nstages)
    return SL_EINVAL;
  stage_stats(p->stages[i], st);
  return 0;
}

static double pct(uint64_t part, uint64_t whole) {
  return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

int sl_pipeline_stats_print(sl_pipeline *p, FILE *f) {
  if (!p || !f)
    return SL_EINVAL;
  size_t bottleneck = SIZE_MAX;
  double best = -1;
  int err = 0;

  err |= fprintf(f, "%-16s %10s %12s %10s %12s %7s %7s %7s\n", "stage",
                 "chunks in", "MiB in", "chunks out", "MiB out", "busy%",
                 "full%", "empty%") < 0;
  for (size_t i = 0; i < p->nstages; i++) {
    sl_stage_stats st;
    stage_stats(p->stages[i], &st);
    uint64_t wall = st.busy_ns + st.blocked_full_ns + st.blocked_empty_ns;
    double busy = pct(st.busy_ns, wall);
    if (busy > best) {
      best = busy;
      bottleneck = i;
    }
    err |= fprintf(f, "%-16.16s %10llu %12.2f %10llu %12.2f %7.1f %7.1f %7.1f\n",
                   st.name, (unsigned long long)st.chunks_in,
                   (double)st.bytes_in / 1048576.0,
                   (unsigned long long)st.chunks_out,
                   (double)st.bytes_out / 1048576.0, busy,
                   pct(st.blocked_full_ns, wall),
                   pct(st.blocked_empty_ns, wall)) < 0;
  }
  err |= fprintf(f, "\n%-33s %10s %10s %8s %8s %8s\n", "ring", "hwm",
                 "peak", "pauses", "drains", "signals") < 0;
  for (size_t i = 0; i < p->nstages; i++)
    for (size_t c = 0; p->stages[i]->outs && c < p->stages[i]->ncons; c++) {
    sl_stage *s = p->stages[i];
    sl_ring_stats rs;
    if (sl_ring_stats_get(s->outs[c], &rs) != 0)
      continue;
    char link[40];
    snprintf(link, sizeof link, "%.15s -> %.15s", s->name, s->cons[c]->name);
    err |= fprintf(f, "%-33s %10zu %10zu %8llu %8llu %8llu\n", link, rs.hwm,
                   rs.peak_level, (unsigned long long)rs.pauses,
                   (unsigned long long)rs.drains,
                   (unsigned long long)rs.signals) < 0;
  }
  if (bottleneck != SIZE_MAX)
    err |= fprintf(f, "\nbottleneck: %s (busy %.1f%% of its time)\n",
                   p->stages[bottleneck]->name, best) < 0;
  return err ? SL_EIO : 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * sl_ring — the bounded queue between two stage threads.
 *
 * Layout. Slots are a power-of-two array indexed by free-running counters
 * masked on use: tail (next write, advanced only by the writer) and head
 * (next read). The level is units_in - units_out, units being the bytes
 * the chunks hold in memory (byte mode, see cost()) or chunks (object
 * mode), so count and level need no wrap test and no shared
 * read-modify-write. The writer's counters, the reader's
 * counters, the stop flags and the slow-path state live on separate cache
 * lines: each side writes only its own line.
 *
 * Fast path, no lock. While a write finds room and a read finds data,
 * neither side takes the mutex: the writer fills a slot and publishes it
 * with a release store of tail; the reader acquires tail, takes a batch and
 * gives the slots back with a compare-and-swap of head (acq_rel). head is
 * a CAS, not a store, because abort may claim the same chunks to release
 * them: whoever wins the CAS owns what it read, so nothing is released
 * twice.
 *
 * Slow path, one mutex and two condition variables. A writer that finds
 * the ring full (level >= hwm or every slot taken) pauses on not_full; a
 * reader that finds it empty starves on not_empty. A waiter announces
 * itself (writer_waiting / reader_waiting) under the mutex with a
 * sequentially consistent store, then looks again with sequentially
 * consistent loads; the other side publishes with a sequentially
 * consistent store and then reads the flag. In the single total order of
 * those operations one of the two comes first, so either the waiter sees
 * the new state and does not sleep, or the other side sees the flag and
 * takes the mutex to wake it: no lost wake-up, and no lock and no signal
 * at all while nobody waits. (On x86 a seq_cst store is one xchg and a
 * seq_cst load a plain load; no standalone fence is needed, which also
 * keeps ThreadSanitizer's model exact.)
 *
 * Hysteresis. A paused writer is woken only when the reader has pulled the
 * level down to lwm (and the count to lwm_chunks): one drain per pause,
 * not one signal per chunk. The woken flags make each wait end with at
 * most one signal however many chunks move before the waiter runs.
 *
 * Why stop. err (abort, the first code wins) and closed are re-checked
 * after every wake. Close is the writer's end of stream: the reader drains
 * what was queued, then gets SL_EOF. Abort releases what is queued: it
 * claims slots with the same CAS as the reader, and a writer that
 * published concurrently with an abort sees err after its publishing
 * store and releases its own chunk the same way. Buffers are released with no
 * lock held, since a destructor is user code.
 *
 * Notes, for sides that must not sleep. An event loop writing into a ring
 * (or reading from one) cannot wait on a condition variable. It arms a
 * note instead (sl__ring_arm): the same handshake as a wait, with the flag
 * left up, and the other side, where it would have signalled, calls the
 * note's function once, with the lock released. The drain note fires at
 * the low mark like a woken writer, the ready note when data, end of
 * stream or an abort arrives.
 *
 * Threads: one writer, one reader; close, abort, level and stats from any
 * thread. Observers (sl__ring_wait_blocked) wait on a third condition
 * variable, signalled only while someone observes.
 */
#include "sluice-int.h"

#include <string.h>

#define RING_MAX_CHUNKS ((size_t)1 << 24)
#define RING_DEFAULT_CHUNKS 1024
#define ABORT_BATCH 64
/* A starving reader looks again for up to SL__RING_SPIN pauses (about
 * 20 us on current x86) before it sleeps, once every SL__RING_SPIN_GAP
 * pauses (about 1 us). How long it looks adapts (see reader_spin), down
 * to SL__RING_SPIN_MIN pauses. */
#ifndef SL__RING_SPIN
#define SL__RING_SPIN SL__RING_SPIN_CEILING
#endif
#ifndef SL__RING_SPIN_MIN
#define SL__RING_SPIN_MIN SL__RING_SPIN_FLOOR
#endif
#ifndef SL__RING_SPIN_GAP
#define SL__RING_SPIN_GAP 64
#endif

struct sl_ring {
  /* Read-only after creation. */
  _Atomic(sl_buf *) *slots; /* atomic: abort may read a slot the writer
                             * is about to reuse; relaxed costs nothing */
  uint64_t mask;
  size_t hwm, lwm, max_chunks, lwm_chunks;
  bool objects;

  /* The writer's line. */
  _Alignas(SL_CACHELINE) _Atomic uint64_t tail;
  _Atomic uint64_t units_in, bytes_in;
  _Atomic size_t peak_level;
  /* The writer's last look at the reader's counters, so that a write that
   * finds room does not touch the reader's cache line. Stale values only
   * overstate the level; they are refreshed when they say "full". */
  uint64_t seen_head, seen_units_out;

  /* The reader's line. */
  _Alignas(SL_CACHELINE) _Atomic uint64_t head;
  _Atomic uint64_t units_out, chunks_out, bytes_out;
  unsigned spin; /* the reader's spin budget in pauses (reader_spin) */

  /* Stop flags and waiter flags: written rarely, read on every call. */
  _Alignas(SL_CACHELINE) _Atomic int err;
  _Atomic int closed;
  _Atomic int writer_waiting, reader_waiting;

  /* The slow path, under mu. */
  _Alignas(SL_CACHELINE) pthread_mutex_t mu;
  pthread_cond_t not_full, not_empty, observed;
  bool writer_woken, reader_woken;
  int observers;
  uint64_t pauses, drains, starves, signals;
  uint64_t writer_wait_ns, reader_wait_ns;
  struct ring_note {
    sl__ring_note_fn fn;
    void *arg;
    bool armed;
  } note[2]; /* by side: SL__WRITER (drain), SL__READER (ready) */
  struct ring_hook {
    sl__ring_wait_fn fn;
    void *arg;
  } hook[2]; /* each side's finished waits, for tracing */
};

/* Notes to call once the lock is released: a bit per side. */
enum { NOTE_WRITER = 1 << SL__WRITER, NOTE_READER = 1 << SL__READER };

#define LOAD(p, mo) atomic_load_explicit(p, memory_order_##mo)
#define STORE(p, v, mo) atomic_store_explicit(p, v, memory_order_##mo)
/* The operations of the waiter handshake (see the essay). */
#define LOAD_SC(p) atomic_load_explicit(p, memory_order_seq_cst)
#define STORE_SC(p, v) atomic_store_explicit(p, v, memory_order_seq_cst)

static size_t round_pow2(size_t n) {
  size_t p = 1;
  while (p < n)
    p <<= 1;
  return p;
}

int sl_ring_new(sl_ring **out, const sl_ring_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (!opts || opts->hwm == 0)
    return SL_EINVAL;
  if (opts->mode != SL_RING_BYTES && opts->mode != SL_RING_OBJECTS)
    return SL_EINVAL;
  bool objects = opts->mode == SL_RING_OBJECTS;
  size_t lwm = opts->lwm == SL_LWM_DEFAULT ? opts->hwm / 2 : opts->lwm;
  if (lwm >= opts->hwm)
    return SL_EINVAL;
  size_t max_chunks = opts->max_chunks;
  if (max_chunks == 0) {
    if (objects && opts->hwm >= RING_MAX_CHUNKS)
      return SL_EINVAL;
    max_chunks = objects ? opts->hwm + 1 : RING_DEFAULT_CHUNKS;
  }
  if (max_chunks > RING_MAX_CHUNKS || (objects && max_chunks < opts->hwm + 1))
    return SL_EINVAL;

  sl_ring *r = sl__aligned_calloc(sizeof *r);
  if (!r)
    return SL_ENOMEM;
  size_t nslots = round_pow2(max_chunks);
  r->slots = sl__calloc(nslots, sizeof *r->slots);
  if (!r->slots)
    goto fail_ring;
  if (pthread_mutex_init(&r->mu, NULL) != 0)
    goto fail_slots;
  if (pthread_cond_init(&r->not_full, NULL) != 0)
    goto fail_mu;
  if (pthread_cond_init(&r->not_empty, NULL) != 0)
    goto fail_not_full;
  if (pthread_cond_init(&r->observed, NULL) != 0)
    goto fail_not_empty;
  r->mask = nslots - 1;
  r->hwm = opts->hwm;
  r->lwm = lwm;
  r->objects = objects;
  r->max_chunks = max_chunks;
  /* In object mode the level is the count, so the low mark alone decides;
   * in byte mode a ring whose slots are all taken resumes at half. */
  r->lwm_chunks = objects ? max_chunks : max_chunks / 2;
  r->spin = SL__RING_SPIN;
  *out = r;
  return 0;

fail_not_empty:
  pthread_cond_destroy(&r->not_empty);
fail_not_full:
  pthread_cond_destroy(&r->not_full);
fail_mu:
  pthread_mutex_destroy(&r->mu);
fail_slots:
  sl__free(r->slots);
fail_ring:
  sl__aligned_free(r);
  return SL_ENOMEM;
}

void sl_ring_free(sl_ring *r) {
  if (!r)
    return;
  uint64_t tail = LOAD(&r->tail, acquire);
  for (uint64_t i = LOAD(&r->head, acquire); i != tail; i++)
    sl_buf_unref(LOAD(&r->slots[i & r->mask], relaxed));
  pthread_cond_destroy(&r->observed);
  pthread_cond_destroy(&r->not_empty);
  pthread_cond_destroy(&r->not_full);
  pthread_mutex_destroy(&r->mu);
  sl__free(r->slots);
  sl__aligned_free(r);
}

/* What a chunk weighs against the marks: one item in object mode; in byte
 * mode the memory it holds, its capacity, which for a buffer filled to
 * the brim is its length. A source that gets 100 bytes from a socket into
 * a 64 KiB buffer has queued 64 KiB of memory, and the marks bound memory.
 * Neither changes while the chunk is queued. */
static inline uint64_t cost(const sl_ring *r, const sl_buf *b) {
  return r->objects ? 1 : b->cap;
}

/* ---- predicates, from fresh loads of the other side's counters ---- */

static inline size_t level_of(sl_ring *r, uint64_t units_in) {
  return (size_t)(units_in - LOAD_SC(&r->units_out));
}

static inline bool full_as_seen(const sl_ring *r, uint64_t tail,
                                uint64_t units_in) {
  return tail - r->seen_head >= r->max_chunks ||
         units_in - r->seen_units_out >= r->hwm;
}

/* Full as the writer sees it (writer thread only). First from the view it
 * kept, which can only overstate the level; only when that says full are
 * the reader's counters read again, with the sequentially consistent loads
 * the waiter handshake needs. */
static inline bool full(sl_ring *r) {
  uint64_t tail = LOAD(&r->tail, relaxed);
  uint64_t units_in = LOAD(&r->units_in, relaxed);
  if (!full_as_seen(r, tail, units_in))
    return false;
  r->seen_head = LOAD_SC(&r->head);
  r->seen_units_out = LOAD_SC(&r->units_out);
  return full_as_seen(r, tail, units_in);
}

static inline bool resumable(sl_ring *r) {
  uint64_t tail = LOAD_SC(&r->tail);
  uint64_t units_in = LOAD_SC(&r->units_in);
  return tail - LOAD_SC(&r->head) <= r->lwm_chunks &&
         level_of(r, units_in) <= r->lwm;
}

static inline int writer_stop(sl_ring *r) {
  int err = LOAD_SC(&r->err);
  return err ? err : LOAD_SC(&r->closed) ? SL_ECLOSED : 0;
}

static inline void signal_locked(sl_ring *r, pthread_cond_t *cv) {
  pthread_cond_signal(cv);
  r->signals++;
}

/* Observers are diagnostics: their wake-ups are not counted as signals. */
static inline void notify_observers_locked(sl_ring *r) {
  if (r->observers)
    pthread_cond_broadcast(&r->observed);
}

/* ---- abort's release: claim chunks with the reader's CAS ---- */

static void release_queued(sl_ring *r) {
  sl_buf *v[ABORT_BATCH];
  for (;;) {
    uint64_t head = LOAD_SC(&r->head);
    uint64_t tail = LOAD_SC(&r->tail);
    if (head == tail)
      return;
    size_t n = tail - head < ABORT_BATCH ? (size_t)(tail - head) : ABORT_BATCH;
    for (size_t i = 0; i < n; i++)
      v[i] = LOAD(&r->slots[(head + i) & r->mask], relaxed);
    if (!atomic_compare_exchange_strong(&r->head, &head, head + n))
      continue; /* the reader took them first */
    for (size_t i = 0; i < n; i++)
      sl_buf_unref(v[i]);
  }
}

/* ---- writer ---- */

/* Pause until the reader drains the ring to the low mark or the stream
 * stops. Returns 0 when there is room, SL_AGAIN never, else the stop. */
static int writer_wait(sl_ring *r) {
  int rc;
  uint64_t t0 = 0, t1 = 0;
  pthread_mutex_lock(&r->mu);
  STORE_SC(&r->writer_waiting, 1);
  r->writer_woken = false;
  if ((rc = writer_stop(r)) == 0 && full(r)) {
    r->pauses++;
    notify_observers_locked(r);
    t0 = sl__now_ns();
    while (!r->writer_woken && (rc = writer_stop(r)) == 0)
      pthread_cond_wait(&r->not_full, &r->mu);
    t1 = sl__now_ns();
    r->writer_wait_ns += t1 - t0;
  }
  STORE(&r->writer_waiting, 0, relaxed);
  pthread_mutex_unlock(&r->mu);
  if (t1 && r->hook[SL__WRITER].fn)
    r->hook[SL__WRITER].fn(r->hook[SL__WRITER].arg, t0, t1);
  return rc;
}

/* Call the notes that a wake-up (or stop) under the lock claimed. */
static void call_notes(sl_ring *r, unsigned notes) {
  if (notes & NOTE_WRITER)
    r->note[SL__WRITER].fn(r->note[SL__WRITER].arg);
  if (notes & NOTE_READER)
    r->note[SL__READER].fn(r->note[SL__READER].arg);
}

/* Wake side `side` (its flag is up and it was not woken yet): a sleeping
 * thread gets a signal, an armed note is disarmed and its flag lowered,
 * to be called by the caller once the lock is released. */
static unsigned wake_side_locked(sl_ring *r, int side) {
  struct ring_note *n = &r->note[side];
  if (n->armed) {
    n->armed = false;
    STORE(side == SL__WRITER ? &r->writer_waiting : &r->reader_waiting, 0,
          relaxed);
    return 1u << side;
  }
  if (side == SL__WRITER) {
    r->writer_woken = true;
    signal_locked(r, &r->not_full);
  } else {
    r->reader_woken = true;
    signal_locked(r, &r->not_empty);
  }
  return 0;
}

/* After publishing: wake a starving reader, once per wait. */
static void wake_reader(sl_ring *r) {
  unsigned notes = 0;
  pthread_mutex_lock(&r->mu);
  if (LOAD(&r->reader_waiting, relaxed) && !r->reader_woken)
    notes = wake_side_locked(r, SL__READER);
  pthread_mutex_unlock(&r->mu);
  call_notes(r, notes);
}

static int ring_write(sl_ring *r, sl_buf *b, bool block) {
  if (!r || !b)
    return SL_EINVAL;
  if (r->objects != !!(b->flags & BUF_OBJECT) && !(b->flags & BUF_FLUSH))
    return SL_EINVAL; /* a marker fits either mode */
  int rc;
  while ((rc = writer_stop(r)) == 0 && full(r)) {
    if (!block)
      return SL_AGAIN;
    if ((rc = writer_wait(r)) != 0)
      break;
  }
  if (rc)
    return rc;

  uint64_t tail = LOAD(&r->tail, relaxed);
  uint64_t units = LOAD(&r->units_in, relaxed) + cost(r, b);
  STORE(&r->slots[tail & r->mask], b, relaxed);
  STORE(&r->units_in, units, relaxed);
  if (!r->objects)
    STORE(&r->bytes_in, LOAD(&r->bytes_in, relaxed) + b->len, relaxed);
  STORE_SC(&r->tail, tail + 1); /* publishes the slot and units_in */

  if (LOAD_SC(&r->reader_waiting))
    wake_reader(r);
  if (LOAD_SC(&r->err))
    release_queued(r); /* an abort may have missed this chunk */

  /* From the writer's view: at most what the marks allow, never less than
   * the true level. */
  size_t level = (size_t)(units - r->seen_units_out);
  if (level > LOAD(&r->peak_level, relaxed))
    STORE(&r->peak_level, level, relaxed);
  return 0;
}

int sl_ring_write(sl_ring *r, sl_buf *b) {
  return ring_write(r, b, true);
}

int sl_ring_try_write(sl_ring *r, sl_buf *b) {
  return ring_write(r, b, false);
}

int sl_ring_wait_writable(sl_ring *r) {
  if (!r)
    return SL_EINVAL;
  int rc;
  while ((rc = writer_stop(r)) == 0 && full(r))
    if ((rc = writer_wait(r)) != 0)
      break;
  return rc;
}

/* ---- reader ---- */

/* 0 when a chunk is queued, SL_EOF, SL_AGAIN or the abort code. Looks at
 * err first: an aborted ring reads as aborted even with chunks queued. */
static inline int reader_state(sl_ring *r) {
  int err = LOAD_SC(&r->err);
  if (err)
    return err;
  if (LOAD_SC(&r->tail) != LOAD(&r->head, relaxed))
    return 0;
  if (!LOAD_SC(&r->closed))
    return SL_AGAIN;
  /* Closed: the writer's last publish happened before the close. */
  return LOAD_SC(&r->tail) != LOAD(&r->head, relaxed) ? 0 : SL_EOF;
}

/* Starve until a chunk arrives or the stream stops. */
static int reader_wait(sl_ring *r) {
  int rc;
  uint64_t t0 = 0, t1 = 0;
  pthread_mutex_lock(&r->mu);
  STORE_SC(&r->reader_waiting, 1);
  r->reader_woken = false;
  if ((rc = reader_state(r)) == SL_AGAIN) {
    r->starves++;
    notify_observers_locked(r);
    t0 = sl__now_ns();
    do
      pthread_cond_wait(&r->not_empty, &r->mu);
    while (!r->reader_woken && (rc = reader_state(r)) == SL_AGAIN);
    t1 = sl__now_ns();
    r->reader_wait_ns += t1 - t0;
    if (rc == SL_AGAIN)
      rc = reader_state(r);
  }
  STORE(&r->reader_waiting, 0, relaxed);
  pthread_mutex_unlock(&r->mu);
  if (t1 && r->hook[SL__READER].fn)
    r->hook[SL__READER].fn(r->hook[SL__READER].arg, t0, t1);
  return rc;
}

/* After taking chunks: wake a paused writer once the low mark is
 * reached, once per pause. */
static void wake_writer(sl_ring *r) {
  unsigned notes = 0;
  pthread_mutex_lock(&r->mu);
  if (LOAD(&r->writer_waiting, relaxed) && !r->writer_woken && resumable(r)) {
    r->drains++;
    notes = wake_side_locked(r, SL__WRITER);
  }
  pthread_mutex_unlock(&r->mu);
  call_notes(r, notes);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Before sleeping, look a few more times: a writer that is running will
 * publish within far less than the cost of a sleep and a wake-up.
 *
 * The looks are a gap apart, and the gap is not short. Each look pulls
 * the writer's line (tail) into the reader's cache, and the writer's next
 * publish, a sequentially consistent store, then stalls until it has the
 * line back: a cache-line round trip between cores. A reader that looks
 * as soon as it can is always ahead of a writer in full flow; it finds a
 * chunk or two per look, and every chunk pays that round trip. A gap of
 * SL__RING_SPIN_GAP pauses, about a microsecond, lets the writer publish
 * a batch between two looks and the round trip is paid once per batch.
 * With 8-byte chunks that is about twice as many chunks per second as
 * looks that start one pause apart and double, 3 to 5 times the naive
 * queue's (bench/ring_bench). The
 * cost is latency: a chunk that arrives while the reader spins waits up
 * to one gap, far less than a wake-up would take.
 *
 * Looking only pays while the writer is in full flow. One that takes
 * longer per chunk than a spin lasts (a decompressor feeding a checksum,
 * say) would have the reader burn a spin before every sleep, and with
 * more threads than cores that is time taken from the writer itself. So
 * the budget adapts: doubled (up to SL__RING_SPIN) after a spin that found
 * data, halved (down to SL__RING_SPIN_MIN, small enough to cost nothing
 * and enough to notice the writer speeding up) after one that did not. A
 * budget below the gap is spent in one look. */
static int reader_spin(sl_ring *r) {
  int rc = SL_AGAIN;
  unsigned budget = r->spin;
  unsigned gap = budget < SL__RING_SPIN_GAP ? budget : SL__RING_SPIN_GAP;
  for (unsigned spent = 0; spent < budget && rc == SL_AGAIN; spent += gap) {
    for (unsigned i = 0; i < gap; i++)
      cpu_relax();
    rc = reader_state(r);
  }
  if (rc == SL_AGAIN)
    r->spin = budget / 2 > SL__RING_SPIN_MIN ? budget / 2 : SL__RING_SPIN_MIN;
  else
    r->spin = budget * 2 < SL__RING_SPIN ? budget * 2 : SL__RING_SPIN;
  return rc;
}

unsigned sl__ring_spin_budget(const sl_ring *r) {
  return r->spin;
}

static int ring_read(sl_ring *r, sl_buf **out, size_t max, size_t *n,
                     bool block) {
  int rc;
  *n = 0;
  for (;;) {
    /* head is read before the state: an abort sets err, then claims
     * chunks from head. Had the read of head come after the look at err,
     * it could find head already past the chunks an abort released, and
     * the CAS below would take the ones after them: a stream with a hole
     * in it. Read first (acquire, pairing with the abort's CAS), head
     * either shows no claim, and the CAS fails if one comes, or shows
     * one, and then the state shows the abort. */
    uint64_t head = LOAD(&r->head, acquire);
    rc = reader_state(r);
    if (rc == SL_AGAIN && block)
      rc = reader_spin(r);
    while (rc == SL_AGAIN && block)
      if ((rc = reader_wait(r)) == SL_AGAIN)
        rc = reader_state(r);
    if (rc)
      return rc;

    uint64_t avail = LOAD(&r->tail, acquire) - head;
    size_t got = avail < max ? (size_t)avail : max;
    for (size_t i = 0; i < got; i++)
      out[i] = LOAD(&r->slots[(head + i) & r->mask], relaxed);
    /* Lost only to an abort, which then owns (and releases) them: no
     * chunk is looked into before the CAS is won. */
    if (!atomic_compare_exchange_strong(&r->head, &head, head + got))
      continue;
    uint64_t bytes = 0, units = 0;
    for (size_t i = 0; i < got; i++) {
      bytes += out[i]->len;
      units += cost(r, out[i]);
    }
    STORE(&r->chunks_out, LOAD(&r->chunks_out, relaxed) + got, relaxed);
    STORE(&r->bytes_out,
          LOAD(&r->bytes_out, relaxed) + (r->objects ? 0 : bytes), relaxed);
    STORE_SC(&r->units_out, LOAD(&r->units_out, relaxed) + units);
    if (LOAD_SC(&r->writer_waiting))
      wake_writer(r);
    *n = got;
    return 0;
  }
}

int sl_ring_read(sl_ring *r, sl_buf **out) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (!r)
    return SL_EINVAL;
  size_t n;
  return ring_read(r, out, 1, &n, true);
}

int sl_ring_try_read(sl_ring *r, sl_buf **out) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (!r)
    return SL_EINVAL;
  size_t n;
  return ring_read(r, out, 1, &n, false);
}

int sl_ring_read_batch(sl_ring *r, sl_buf **out, size_t max, size_t *n) {
  if (n)
    *n = 0;
  if (!r || !out || !n || max == 0)
    return SL_EINVAL;
  return ring_read(r, out, max, n, true);
}

/* ---- either thread ---- */

/* A stop (close, abort) wakes whichever side sleeps; a side already
 * signalled will re-check the stop when it runs, so it gets no second
 * signal. */
static unsigned wake_both_locked(sl_ring *r) {
  unsigned notes = 0;
  if (LOAD(&r->reader_waiting, relaxed) && !r->reader_woken)
    notes |= wake_side_locked(r, SL__READER);
  if (LOAD(&r->writer_waiting, relaxed) && !r->writer_woken)
    notes |= wake_side_locked(r, SL__WRITER);
  notify_observers_locked(r);
  return notes;
}

void sl_ring_close(sl_ring *r) {
  if (!r)
    return;
  unsigned notes = 0;
  pthread_mutex_lock(&r->mu);
  if (!LOAD(&r->err, relaxed) && !LOAD(&r->closed, relaxed)) {
    STORE_SC(&r->closed, 1);
    notes = wake_both_locked(r);
  }
  pthread_mutex_unlock(&r->mu);
  call_notes(r, notes);
}

int sl_ring_abort(sl_ring *r, int err) {
  if (!r || err >= 0)
    return SL_EINVAL;
  pthread_mutex_lock(&r->mu);
  int expected = 0;
  unsigned notes = 0;
  bool first = atomic_compare_exchange_strong_explicit(
      &r->err, &expected, err, memory_order_seq_cst, memory_order_relaxed);
  if (first)
    notes = wake_both_locked(r);
  pthread_mutex_unlock(&r->mu);
  if (first)
    release_queued(r);
  call_notes(r, notes);
  return 0;
}

void sl__ring_set_note(sl_ring *r, int side, sl__ring_note_fn fn, void *arg) {
  r->note[side].fn = fn;
  r->note[side].arg = arg;
}

void sl__ring_set_wait_hook(sl_ring *r, int side, sl__ring_wait_fn fn,
                            void *arg) {
  r->hook[side].fn = fn;
  r->hook[side].arg = arg;
}

/* The waits above, without the sleep: raise the flag, look again, and
 * leave the flag up with the note armed when the side would have slept. */
int sl__ring_arm(sl_ring *r, int side) {
  int rc;
  pthread_mutex_lock(&r->mu);
  struct ring_note *n = &r->note[side];
  if (side == SL__WRITER) {
    STORE_SC(&r->writer_waiting, 1);
    r->writer_woken = false;
    if ((rc = writer_stop(r)) == 0 && !full(r))
      rc = 0;
    else if (rc == 0) {
      rc = SL_AGAIN;
      if (!n->armed)
        r->pauses++;
    }
    if (rc != SL_AGAIN)
      STORE(&r->writer_waiting, 0, relaxed);
  } else {
    STORE_SC(&r->reader_waiting, 1);
    r->reader_woken = false;
    if ((rc = reader_state(r)) == SL_AGAIN && !n->armed)
      r->starves++;
    if (rc != SL_AGAIN)
      STORE(&r->reader_waiting, 0, relaxed);
  }
  n->armed = rc == SL_AGAIN;
  if (n->armed)
    notify_observers_locked(r);
  pthread_mutex_unlock(&r->mu);
  return rc;
}

size_t sl_ring_level(sl_ring *r) {
  if (!r || LOAD(&r->err, acquire))
    return 0;
  return level_of(r, LOAD(&r->units_in, acquire));
}

int sl_ring_stats_get(sl_ring *r, sl_ring_stats *st) {
  if (!r || !st)
    return SL_EINVAL;
  pthread_mutex_lock(&r->mu);
  st->error = LOAD(&r->err, acquire);
  uint64_t head = LOAD(&r->head, acquire);
  uint64_t tail = LOAD(&r->tail, acquire);
  st->chunks = st->error || tail < head ? 0 : (size_t)(tail - head);
  st->level = sl_ring_level(r);
  st->peak_level = LOAD(&r->peak_level, relaxed);
  st->hwm = r->hwm;
  st->lwm = r->lwm;
  st->chunks_in = tail;
  st->chunks_out = LOAD(&r->chunks_out, relaxed);
  st->bytes_in = LOAD(&r->bytes_in, relaxed);
  st->bytes_out = LOAD(&r->bytes_out, relaxed);
  st->pauses = r->pauses;
  st->drains = r->drains;
  st->starves = r->starves;
  st->signals = r->signals;
  st->writer_wait_ns = r->writer_wait_ns;
  st->reader_wait_ns = r->reader_wait_ns;
  st->writer_waiting = LOAD(&r->writer_waiting, relaxed);
  st->reader_waiting = LOAD(&r->reader_waiting, relaxed);
  st->closed = LOAD(&r->closed, acquire);
  pthread_mutex_unlock(&r->mu);
  return 0;
}

int sl__ring_wait_blocked(sl_ring *r, int side) {
  if (!r || (side != SL__WRITER && side != SL__READER))
    return SL_EINVAL;
  bool writer = side == SL__WRITER;
  _Atomic int *waiting = writer ? &r->writer_waiting : &r->reader_waiting;
  bool *woken = writer ? &r->writer_woken : &r->reader_woken;
  int rc;
  pthread_mutex_lock(&r->mu);
  r->observers++;
  for (;;) {
    /* A side counts as blocked once it sleeps with no wake-up on its way:
     * its flag is up and it has made its last check (it holds the lock
     * until it sleeps), and nobody has signalled it yet. */
    if ((rc = LOAD(&r->err, acquire)) != 0)
      break;
    if (LOAD(waiting, relaxed) && !*woken)
      break;
    if (LOAD(&r->closed, acquire)) {
      rc = SL_ECLOSED;
      break;
    }
    pthread_cond_wait(&r->observed, &r->mu);
  }
  r->observers--;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

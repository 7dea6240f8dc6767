/*
 * sl_ring — the bounded queue between two stage threads.
 *
 * Slots are a power-of-two array indexed by free-running head (next read)
 * and tail (next write) counters masked on use, so count = tail - head
 * needs no wrap test. Everything is under one mutex: the critical sections
 * are a few loads and stores, and a reader that pops a batch takes the
 * lock once for many chunks.
 *
 * Backpressure with hysteresis. The writer may queue while level < hwm and
 * a slot is free ("full" is the negation). A writer that finds the ring
 * full pauses on not_full. The reader wakes it only when it drains the
 * ring to the low mark ("resumable"): one signal per pause, however many
 * chunks are read. A reader that finds the ring empty starves on not_empty
 * and the next write wakes it.
 *
 * No signal without a waiter: each side publishes writer_waiting /
 * reader_waiting while it waits, and the other side signals only then, and
 * only once per wait (the *_woken flags), so a burst of writes to a
 * sleeping reader costs one signal, not one per chunk.
 *
 * Why-stop fields: err (aborted, first code wins) and closed. Every wait is
 * a while loop that re-checks them after each wake. Abort and free release
 * queued buffers after dropping the lock, since a buffer's destructor is
 * user code.
 *
 * Threads: one writer, one reader; close, abort, level and stats from any
 * thread. Observers (sl__ring_wait_blocked) wait on a third condition
 * variable that is only signalled while someone observes.
 */
#include "sluice-int.h"

#include <string.h>

#define RING_MAX_CHUNKS ((size_t)1 << 24)
#define RING_DEFAULT_CHUNKS 1024

struct sl_ring {
  pthread_mutex_t mu;
  pthread_cond_t not_full, not_empty, observed;

  sl_buf **slots;
  size_t mask;
  uint64_t head, tail; /* free-running: count = tail - head */

  size_t hwm, lwm;
  size_t max_chunks, lwm_chunks;
  bool objects;

  size_t level, peak_level;
  bool closed;
  int err;

  bool writer_waiting, reader_waiting;
  bool writer_woken, reader_woken; /* signalled during the current wait */
  int observers;

  uint64_t chunks_in, chunks_out, bytes_in, bytes_out;
  uint64_t pauses, drains, starves, signals;
  uint64_t writer_wait_ns, reader_wait_ns;
};

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

  sl_ring *r = sl__calloc(1, sizeof *r);
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
   * in byte mode a ring full of slots resumes at half. */
  r->lwm_chunks = objects ? max_chunks : max_chunks / 2;
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
  sl__free(r);
  return SL_ENOMEM;
}

void sl_ring_free(sl_ring *r) {
  if (!r)
    return;
  for (uint64_t i = r->head; i != r->tail; i++)
    sl_buf_unref(r->slots[i & r->mask]);
  pthread_cond_destroy(&r->observed);
  pthread_cond_destroy(&r->not_empty);
  pthread_cond_destroy(&r->not_full);
  pthread_mutex_destroy(&r->mu);
  sl__free(r->slots);
  sl__free(r);
}

static inline size_t cost(const sl_ring *r, const sl_buf *b) {
  return r->objects ? 1 : b->len;
}

static inline size_t count_locked(const sl_ring *r) {
  return (size_t)(r->tail - r->head);
}

static inline bool full_locked(const sl_ring *r) {
  return r->level >= r->hwm || count_locked(r) >= r->max_chunks;
}

static inline bool resumable_locked(const sl_ring *r) {
  return r->level <= r->lwm && count_locked(r) <= r->lwm_chunks;
}

static inline void signal_locked(sl_ring *r, pthread_cond_t *cv) {
  pthread_cond_signal(cv);
  r->signals++;
}

static inline void notify_observers_locked(sl_ring *r) {
  if (r->observers) {
    pthread_cond_broadcast(&r->observed);
    r->signals++;
  }
}

/* The "why stop" for the writer: 0 to go on. */
static inline int writer_stop_locked(const sl_ring *r) {
  return r->err ? r->err : r->closed ? SL_ECLOSED : 0;
}

/* Wait until the ring has room or the writer must stop. */
static int wait_room_locked(sl_ring *r, bool block) {
  int rc = writer_stop_locked(r);
  if (rc || !full_locked(r))
    return rc;
  if (!block)
    return SL_AGAIN;
  r->pauses++;
  r->writer_waiting = true;
  r->writer_woken = false;
  notify_observers_locked(r);
  uint64_t t0 = sl__now_ns();
  do {
    pthread_cond_wait(&r->not_full, &r->mu);
    rc = writer_stop_locked(r);
  } while (!rc && full_locked(r));
  r->writer_wait_ns += sl__now_ns() - t0;
  r->writer_waiting = false;
  return rc;
}

static int ring_write(sl_ring *r, sl_buf *b, bool block) {
  if (!r || !b)
    return SL_EINVAL;
  if (r->objects != !!(b->flags & BUF_OBJECT))
    return SL_EINVAL;
  pthread_mutex_lock(&r->mu);
  int rc = wait_room_locked(r, block);
  if (rc == 0) {
    size_t c = cost(r, b);
    r->slots[r->tail++ & r->mask] = b;
    r->level += c;
    if (r->level > r->peak_level)
      r->peak_level = r->level;
    r->chunks_in++;
    r->bytes_in += r->objects ? 0 : c;
    if (r->reader_waiting && !r->reader_woken) {
      r->reader_woken = true;
      signal_locked(r, &r->not_empty);
    }
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
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
  pthread_mutex_lock(&r->mu);
  int rc = wait_room_locked(r, true);
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* Wait until a chunk is queued; 0, SL_EOF, SL_AGAIN or the abort code. */
static int wait_data_locked(sl_ring *r, bool block) {
  if (r->err)
    return r->err;
  if (count_locked(r))
    return 0;
  if (r->closed)
    return SL_EOF;
  if (!block)
    return SL_AGAIN;
  r->starves++;
  r->reader_waiting = true;
  r->reader_woken = false;
  notify_observers_locked(r);
  uint64_t t0 = sl__now_ns();
  do {
    pthread_cond_wait(&r->not_empty, &r->mu);
  } while (!r->err && !r->closed && count_locked(r) == 0);
  r->reader_wait_ns += sl__now_ns() - t0;
  r->reader_waiting = false;
  if (r->err)
    return r->err;
  return count_locked(r) ? 0 : SL_EOF;
}

static int ring_read(sl_ring *r, sl_buf **out, size_t max, size_t *n,
                     bool block) {
  pthread_mutex_lock(&r->mu);
  int rc = wait_data_locked(r, block);
  size_t got = 0;
  if (rc == 0) {
    size_t avail = count_locked(r);
    if (max > avail)
      max = avail;
    size_t bytes = 0;
    for (; got < max; got++) {
      sl_buf *b = r->slots[r->head++ & r->mask];
      bytes += r->objects ? 0 : b->len;
      out[got] = b;
    }
    r->level -= r->objects ? got : bytes;
    r->chunks_out += got;
    r->bytes_out += bytes;
    if (r->writer_waiting && !r->writer_woken && resumable_locked(r)) {
      r->writer_woken = true;
      r->drains++;
      signal_locked(r, &r->not_full);
    }
  }
  pthread_mutex_unlock(&r->mu);
  if (n)
    *n = got;
  return rc;
}

int sl_ring_read(sl_ring *r, sl_buf **out) {
  if (!r || !out)
    return SL_EINVAL;
  *out = NULL;
  return ring_read(r, out, 1, NULL, true);
}

int sl_ring_try_read(sl_ring *r, sl_buf **out) {
  if (!r || !out)
    return SL_EINVAL;
  *out = NULL;
  return ring_read(r, out, 1, NULL, false);
}

int sl_ring_read_batch(sl_ring *r, sl_buf **out, size_t max, size_t *n) {
  if (n)
    *n = 0;
  if (!r || !out || !n || max == 0)
    return SL_EINVAL;
  return ring_read(r, out, max, n, true);
}

void sl_ring_close(sl_ring *r) {
  if (!r)
    return;
  pthread_mutex_lock(&r->mu);
  if (!r->err && !r->closed) {
    r->closed = true;
    if (r->reader_waiting)
      signal_locked(r, &r->not_empty);
    if (r->writer_waiting)
      signal_locked(r, &r->not_full);
    notify_observers_locked(r);
  }
  pthread_mutex_unlock(&r->mu);
}

int sl_ring_abort(sl_ring *r, int err) {
  if (!r || err >= 0)
    return SL_EINVAL;
  uint64_t from = 0, to = 0;
  pthread_mutex_lock(&r->mu);
  if (!r->err) {
    r->err = err;
    /* Once err is set no read or write touches the slots again, so the
     * queued chunks can be released after the lock is dropped (a
     * destructor is user code) without copying them out. */
    from = r->head;
    to = r->tail;
    r->head = r->tail;
    r->level = 0;
    if (r->reader_waiting)
      signal_locked(r, &r->not_empty);
    if (r->writer_waiting)
      signal_locked(r, &r->not_full);
    notify_observers_locked(r);
  }
  pthread_mutex_unlock(&r->mu);
  for (uint64_t i = from; i != to; i++)
    sl_buf_unref(r->slots[i & r->mask]);
  return 0;
}

size_t sl_ring_level(sl_ring *r) {
  if (!r)
    return 0;
  pthread_mutex_lock(&r->mu);
  size_t level = r->level;
  pthread_mutex_unlock(&r->mu);
  return level;
}

int sl_ring_stats_get(sl_ring *r, sl_ring_stats *st) {
  if (!r || !st)
    return SL_EINVAL;
  pthread_mutex_lock(&r->mu);
  st->level = r->level;
  st->chunks = count_locked(r);
  st->peak_level = r->peak_level;
  st->hwm = r->hwm;
  st->lwm = r->lwm;
  st->chunks_in = r->chunks_in;
  st->chunks_out = r->chunks_out;
  st->bytes_in = r->bytes_in;
  st->bytes_out = r->bytes_out;
  st->pauses = r->pauses;
  st->drains = r->drains;
  st->starves = r->starves;
  st->signals = r->signals;
  st->writer_wait_ns = r->writer_wait_ns;
  st->reader_wait_ns = r->reader_wait_ns;
  st->writer_waiting = r->writer_waiting;
  st->reader_waiting = r->reader_waiting;
  st->closed = r->closed;
  st->error = r->err;
  pthread_mutex_unlock(&r->mu);
  return 0;
}

int sl__ring_wait_blocked(sl_ring *r, int side) {
  if (!r || (side != SL__WRITER && side != SL__READER))
    return SL_EINVAL;
  pthread_mutex_lock(&r->mu);
  r->observers++;
  int rc;
  for (;;) {
    if ((rc = r->err) != 0)
      break;
    if (side == SL__WRITER ? r->writer_waiting : r->reader_waiting)
      break;
    if (r->closed) {
      rc = SL_ECLOSED;
      break;
    }
    pthread_cond_wait(&r->observed, &r->mu);
  }
  r->observers--;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

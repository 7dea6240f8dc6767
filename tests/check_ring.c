/* SPDX-License-Identifier: MIT */
/*
 * sl_ring: the bounded single-producer single-consumer queue.
 *
 * What these tests hold the ring to, all from the contract in sluice.h:
 * order and content survive any interleaving and any wrap of the slots; a
 * chunk is admitted while level < hwm and a slot is free, so the level never
 * passes hwm + one chunk; a paused writer is woken once, when the level
 * falls to lwm (one drain per pause); nothing is signalled unless a side
 * waits; close delivers every queued chunk and then SL_EOF; abort wakes
 * both sides with its code and releases what was queued; every call that
 * takes a buffer says who owns it on every return.
 *
 * No test sleeps. A test that needs a thread to be blocked inside the ring
 * asks the ring with sl__ring_wait_blocked(), which returns once the side
 * is waiting. Threads other than the test's own never call ck_assert: they
 * store what they saw and the test asserts after joining them.
 *
 * Every test runs under a fixture that routes the library's allocations
 * through a counting allocator and fails the test if a block is left
 * allocated at its end.
 *
 * SL_TEST_CHUNKS scales the long runs (default 1000000 chunks).
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "sluice-int.h"
#include "sluice.h"

#include "testutil.h"

#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_SHORT 60
#define TIMEOUT_LONG 180

static long long_run_chunks(void) {
  return test_iterations("SL_TEST_CHUNKS", 1000000);
}

/* ------------------------------------------------------------------------
 * Fixture: counting allocator, nothing leaked
 * ---------------------------------------------------------------------- */

static void alloc_setup(void) {
  ck_assert_int_eq(test_alloc_install(), 0);
}

static void alloc_teardown(void) {
  long live = test_alloc_live();

  test_alloc_uninstall();
  ck_assert_msg(live == 0, "%ld block(s) still allocated by the library", live);
}

/* ------------------------------------------------------------------------
 * Helpers (test thread only unless said otherwise)
 * ---------------------------------------------------------------------- */

static sl_ring *ring_make(size_t hwm, size_t lwm, int mode, size_t max_chunks) {
  sl_ring_opts o = {hwm, lwm, mode, max_chunks};
  sl_ring *r = NULL;

  ck_assert_int_eq(sl_ring_new(&r, &o), 0);
  ck_assert_ptr_nonnull(r);
  return r;
}

static sl_ring_stats ring_stats(sl_ring *r) {
  sl_ring_stats st;

  memset(&st, 0xa5, sizeof st);
  ck_assert_int_eq(sl_ring_stats_get(r, &st), 0);
  return st;
}

static sl_buf *pattern(size_t len, uint32_t seed) {
  sl_buf *b = test_buf_pattern(NULL, len, seed);

  test_check(b != NULL);
  return b;
}

/* An object buffer whose destructor counts into c. */
static sl_buf *object(test_counter *c) {
  sl_buf *b = NULL;

  test_check(sl_buf_new_object(NULL, c, test_counter_dtor, &b) == 0);
  test_check(b != NULL);
  return b;
}

static void write_ok(sl_ring *r, sl_buf *b) {
  int rc = sl_ring_write(r, b);

  test_check_msg(rc == 0, "sl_ring_write: got %d", rc);
}

/* Read one chunk and check it is len bytes in seed's pattern. */
static void read_pattern(sl_ring *r, size_t len, uint32_t seed) {
  sl_buf *b = NULL;
  int rc = sl_ring_read(r, &b);

  test_check_msg(rc == 0, "chunk %u: sl_ring_read got %d", (unsigned)seed, rc);
  test_check(b != NULL);
  test_check_msg(test_buf_check_pattern(b, len, seed),
                 "chunk %u: expected %zu bytes in its pattern, got %zu bytes",
                 (unsigned)seed, len, sl_buf_len(b));
  sl_buf_unref(b);
}

/* Queue chunks of len bytes with try_write until it says SL_AGAIN; returns
 * how many were admitted. Seeds run from *seed on. */
static int fill(sl_ring *r, size_t len, uint32_t *seed) {
  int admitted = 0;

  for (;;) {
    sl_buf *b = pattern(len, *seed);
    int rc = sl_ring_try_write(r, b);

    if (rc == SL_AGAIN) {
      sl_buf_unref(b);
      return admitted;
    }
    test_check_msg(rc == 0, "sl_ring_try_write: got %d", rc);
    test_check(admitted < 100000);
    admitted++;
    (*seed)++;
  }
}

/* One blocking call on another thread. */
typedef struct call {
  sl_ring *ring;
  sl_buf *buf;      /* write: the chunk; read: what came out */
  sl_buf *batch[8]; /* read_batch */
  size_t n;         /* read_batch: chunks taken */
  int rc;
  pthread_t thread;
} call;

static void *call_write_main(void *p) {
  call *c = p;

  c->rc = sl_ring_write(c->ring, c->buf);
  return NULL;
}

static void *call_wait_writable_main(void *p) {
  call *c = p;

  c->rc = sl_ring_wait_writable(c->ring);
  return NULL;
}

static void *call_read_main(void *p) {
  call *c = p;

  c->rc = sl_ring_read(c->ring, &c->buf);
  return NULL;
}

static void *call_read_batch_main(void *p) {
  call *c = p;

  c->n = 99;
  c->rc = sl_ring_read_batch(c->ring, c->batch, 8, &c->n);
  return NULL;
}

static void call_start(call *c, sl_ring *r, sl_buf *buf, void *(*fn)(void *)) {
  c->ring = r;
  c->buf = buf;
  c->n = 0;
  c->rc = INT_MIN;
  ck_assert_int_eq(pthread_create(&c->thread, NULL, fn, c), 0);
}

static void call_join(call *c) {
  ck_assert_int_eq(pthread_join(c->thread, NULL), 0);
}

/* ------------------------------------------------------------------------
 * Two-thread streams
 *
 * A writer thread sends n chunks and closes; the test thread reads to
 * SL_EOF, checking each chunk against its index. With force_every set the
 * reader stops every so many chunks until the writer is known to be
 * blocked, so pauses (and drains) happen a known number of times whatever
 * the scheduler does.
 * ---------------------------------------------------------------------- */

enum chunk_kind {
  CHUNK_SEQ,    /* 8 bytes: the index */
  CHUNK_RANDOM, /* 0..max_size bytes in the index's pattern */
  CHUNK_ZEROMIX /* even indexes empty, odd ones 8 bytes: the index */
};

#define STREAM_MAX_BATCH 64

typedef struct stream {
  /* in */
  sl_ring *ring;
  long n;
  int kind;
  size_t max_size;
  size_t batch;     /* 1: sl_ring_read; more: sl_ring_read_batch */
  long force_every; /* 0: never */
  long force_slack; /* chunks queued that surely block the writer */
  /* out, writer */
  int wrc;
  long written;
  size_t largest;
  /* out, reader */
  int rrc;
  long got;
  long bad_at; /* first chunk out of order or damaged, -1: none */
  long forced;
  int forced_rc;
  size_t level_seen; /* the highest sl_ring_level the reader saw */
} stream;

static size_t chunk_size(const stream *s, long i) {
  uint64_t x;

  switch (s->kind) {
  case CHUNK_SEQ:
    return 8;
  case CHUNK_RANDOM:
    x = (uint64_t)i + 1;
    return (size_t)(test_rand(&x) % (s->max_size + 1));
  default:
    return i % 2 == 0 ? 0 : 8;
  }
}

static sl_buf *chunk_make(const stream *s, long i) {
  size_t len = chunk_size(s, i);

  if (s->kind == CHUNK_RANDOM || len == 0)
    return test_buf_pattern(NULL, len, (uint32_t)i);
  return test_buf_seq(NULL, (uint64_t)i);
}

static bool chunk_ok(const stream *s, long i, const sl_buf *b) {
  size_t len = chunk_size(s, i);

  if (s->kind == CHUNK_RANDOM || len == 0)
    return test_buf_check_pattern(b, len, (uint32_t)i);
  return test_buf_get_seq(b) == (uint64_t)i;
}

static void *stream_writer(void *p) {
  stream *s = p;

  for (long i = 0; i < s->n; i++) {
    sl_buf *b = chunk_make(s, i);
    size_t len;
    int rc;

    if (b == NULL) {
      s->wrc = SL_ENOMEM;
      break;
    }
    len = sl_buf_len(b);
    rc = sl_ring_write(s->ring, b);
    if (rc != 0) {
      sl_buf_unref(b); /* a refused chunk stays ours */
      s->wrc = rc;
      break;
    }
    if (len > s->largest)
      s->largest = len;
    s->written++;
  }
  sl_ring_close(s->ring);
  return NULL;
}

static void stream_read(stream *s) {
  sl_buf *bufs[STREAM_MAX_BATCH];
  long next_force = s->force_every > 0 ? 0 : LONG_MAX;

  for (;;) {
    size_t n = 0;
    size_t level;
    int rc;

    if (s->got >= next_force) {
      while (next_force <= s->got)
        next_force += s->force_every;
      if (s->got + s->force_slack < s->n) {
        rc = sl__ring_wait_blocked(s->ring, SL__WRITER);
        if (rc != 0 && s->forced_rc == 0)
          s->forced_rc = rc;
        if (rc == 0)
          s->forced++;
      }
    }
    if (s->batch > 1) {
      rc = sl_ring_read_batch(s->ring, bufs, s->batch, &n);
    } else {
      rc = sl_ring_read(s->ring, &bufs[0]);
      n = rc == 0 ? 1 : 0;
    }
    if (rc != 0) {
      s->rrc = rc;
      if (n != 0 && s->bad_at < 0)
        s->bad_at = s->got; /* *n must be 0 on a non-zero return */
      return;
    }
    if (n < 1 || n > s->batch) {
      /* A broken batch: stop the writer too, or joining it would hang. */
      if (s->bad_at < 0)
        s->bad_at = s->got;
      s->rrc = SL_EIO;
      sl_ring_abort(s->ring, SL_EIO);
      return;
    }
    for (size_t k = 0; k < n; k++) {
      if (!chunk_ok(s, s->got, bufs[k]) && s->bad_at < 0)
        s->bad_at = s->got;
      sl_buf_unref(bufs[k]);
      s->got++;
    }
    level = sl_ring_level(s->ring);
    if (level > s->level_seen)
      s->level_seen = level;
  }
}

static void stream_init(stream *s, sl_ring *r, long n, int kind, size_t batch) {
  memset(s, 0, sizeof *s);
  s->ring = r;
  s->n = n;
  s->kind = kind;
  s->batch = batch;
  s->bad_at = -1;
  ck_assert_uint_le(batch, STREAM_MAX_BATCH);
}

static void stream_run(stream *s) {
  pthread_t t;

  ck_assert_int_eq(pthread_create(&t, NULL, stream_writer, s), 0);
  stream_read(s);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
}

/* Every chunk went through, in order and intact, and the stream ended. */
static void stream_assert_complete(const stream *s) {
  ck_assert_int_eq(s->wrc, 0);
  ck_assert_int_eq(s->written, s->n);
  ck_assert_msg(s->bad_at < 0, "chunk %ld out of order or damaged", s->bad_at);
  ck_assert_int_eq(s->rrc, SL_EOF);
  ck_assert_int_eq(s->got, s->n);
  ck_assert_int_eq(s->forced_rc, 0);
}

/* ------------------------------------------------------------------------
 * Order and wrap-around
 * ---------------------------------------------------------------------- */

/* Four slots written and read many times around, k chunks at a time for k
 * from 1 to 4, so head and tail cross the end of the slots at every offset
 * and batch reads span the wrap. */
START_TEST(test_wrap_around_keeps_order) {
  sl_ring *r = ring_make(1 << 20, SL_LWM_DEFAULT, SL_RING_BYTES, 4);
  uint32_t wseed = 0, rseed = 0;
  uint64_t rng = 7;
  uint64_t bytes = 0;

  for (int round = 0; round < 5000; round++) {
    int k = 1 + (int)(test_rand(&rng) % 4);

    for (int i = 0; i < k; i++) {
      size_t len = (wseed * 7u) % 13u; /* 0..12, empty chunks included */

      test_check(sl_ring_try_write(r, pattern(len, wseed)) == 0);
      bytes += len;
      wseed++;
    }
    if (round % 2 == 0) {
      for (int i = 0; i < k; i++, rseed++)
        read_pattern(r, (rseed * 7u) % 13u, rseed);
    } else {
      sl_buf *out[4];
      size_t n = 0;

      test_check(sl_ring_read_batch(r, out, 4, &n) == 0);
      test_check_msg(n == (size_t)k, "round %d: %zu of %d chunks", round, n, k);
      for (size_t i = 0; i < n; i++, rseed++) {
        test_check(test_buf_check_pattern(out[i], (rseed * 7u) % 13u, rseed));
        sl_buf_unref(out[i]);
      }
    }
    test_check(sl_ring_level(r) == 0);
  }
  {
    sl_ring_stats st = ring_stats(r);

    ck_assert_uint_eq(st.chunks_in, wseed);
    ck_assert_uint_eq(st.chunks_out, wseed);
    ck_assert_uint_eq(st.bytes_in, bytes);
    ck_assert_uint_eq(st.bytes_out, bytes);
    ck_assert_uint_eq(st.chunks, 0);
  }
  sl_ring_free(r);
}
END_TEST

/* With all four slots in use the fifth chunk waits, at every offset of the
 * wrap. */
START_TEST(test_wrap_around_full_at_every_offset) {
  sl_ring *r = ring_make(1 << 20, SL_LWM_DEFAULT, SL_RING_BYTES, 4);
  uint32_t wseed = 0, rseed = 0;

  for (int offset = 0; offset < 16; offset++) {
    sl_buf *extra;

    for (int i = 0; i < 4; i++, wseed++)
      ck_assert_int_eq(sl_ring_try_write(r, pattern(3, wseed)), 0);
    extra = pattern(3, 9999);
    ck_assert_int_eq(sl_ring_try_write(r, extra), SL_AGAIN);
    sl_buf_unref(extra);
    /* Leave one behind so the next round starts one slot further on. */
    for (int i = 0; i < 3; i++, rseed++)
      read_pattern(r, 3, rseed);
    for (int i = 0; i < 3; i++, wseed++)
      ck_assert_int_eq(sl_ring_try_write(r, pattern(3, wseed)), 0);
    for (int i = 0; i < 4; i++, rseed++)
      read_pattern(r, 3, rseed);
  }
  ck_assert_uint_eq(sl_ring_level(r), 0);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_fifo_two_threads_single_reads) {
  sl_ring *r = ring_make(4096, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  stream s;
  sl_ring_stats st;

  stream_init(&s, r, long_run_chunks(), CHUNK_SEQ, 1);
  stream_run(&s);
  stream_assert_complete(&s);
  st = ring_stats(r);
  ck_assert_uint_eq(st.chunks_in, (uint64_t)s.n);
  ck_assert_uint_eq(st.chunks_out, (uint64_t)s.n);
  ck_assert_uint_eq(st.bytes_in, 8 * (uint64_t)s.n);
  ck_assert_uint_eq(st.bytes_out, 8 * (uint64_t)s.n);
  ck_assert_uint_eq(st.level, 0);
  ck_assert_int_eq(st.closed, 1);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_fifo_two_threads_batch_reads) {
  sl_ring *r = ring_make(4096, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  stream s;
  sl_ring_stats st;

  stream_init(&s, r, long_run_chunks(), CHUNK_SEQ, STREAM_MAX_BATCH);
  stream_run(&s);
  stream_assert_complete(&s);
  st = ring_stats(r);
  ck_assert_uint_eq(st.chunks_in, (uint64_t)s.n);
  ck_assert_uint_eq(st.chunks_out, (uint64_t)s.n);
  ck_assert_uint_eq(st.bytes_out, 8 * (uint64_t)s.n);
  ck_assert_uint_eq(st.level, 0);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_batch_read_takes_up_to_max_in_order) {
  sl_ring *r = ring_make(1 << 20, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_buf *out[16];
  size_t n = 0;

  for (uint32_t i = 0; i < 10; i++)
    write_ok(r, pattern(i + 1, i));
  ck_assert_int_eq(sl_ring_read_batch(r, out, 4, &n), 0);
  ck_assert_uint_eq(n, 4);
  for (uint32_t i = 0; i < 4; i++) {
    ck_assert(test_buf_check_pattern(out[i], i + 1, i));
    sl_buf_unref(out[i]);
  }
  ck_assert_uint_eq(sl_ring_level(r), 5 + 6 + 7 + 8 + 9 + 10);
  ck_assert_int_eq(sl_ring_read_batch(r, out, 16, &n), 0);
  ck_assert_uint_eq(n, 6);
  for (uint32_t i = 0; i < 6; i++) {
    ck_assert(test_buf_check_pattern(out[i], i + 5, i + 4));
    sl_buf_unref(out[i]);
  }
  ck_assert_uint_eq(sl_ring_level(r), 0);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_try_read_empty_is_again) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_buf *b = NULL;

  ck_assert_int_eq(sl_ring_try_read(r, &b), SL_AGAIN);
  write_ok(r, pattern(5, 1));
  ck_assert_int_eq(sl_ring_try_read(r, &b), 0);
  ck_assert(test_buf_check_pattern(b, 5, 1));
  sl_buf_unref(b);
  ck_assert_int_eq(sl_ring_try_read(r, &b), SL_AGAIN);
  ck_assert_uint_eq(ring_stats(r).starves, 0);
  sl_ring_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Backpressure: the high mark
 * ---------------------------------------------------------------------- */

/* hwm 1000, chunks of 300: admitted at levels 0, 300, 600 and 900, so the
 * level stops at 1200 = hwm + 200, below hwm + one chunk. A blocking write
 * then waits, and the level does not move until the reader makes room. */
START_TEST(test_writer_blocks_at_high_mark) {
  sl_ring *r = ring_make(1000, 500, SL_RING_BYTES, 0);
  uint32_t seed = 0;
  sl_ring_stats st;
  call w;

  ck_assert_int_eq(fill(r, 300, &seed), 4);
  ck_assert_uint_eq(sl_ring_level(r), 1200);

  call_start(&w, r, pattern(300, 4), call_write_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__WRITER), 0);
  st = ring_stats(r);
  ck_assert_int_eq(st.writer_waiting, 1);
  ck_assert_uint_eq(st.pauses, 1);
  ck_assert_uint_eq(st.level, 1200);
  ck_assert_uint_eq(st.chunks, 4);
  ck_assert_uint_le(st.level, st.hwm + 300);

  /* 900 and 600 are still above lwm; 300 is at or below it. */
  read_pattern(r, 300, 0);
  read_pattern(r, 300, 1);
  read_pattern(r, 300, 2);
  call_join(&w);
  ck_assert_int_eq(w.rc, 0);

  st = ring_stats(r);
  ck_assert_int_eq(st.writer_waiting, 0);
  ck_assert_uint_eq(st.level, 600);
  ck_assert_uint_eq(st.peak_level, 1200);
  read_pattern(r, 300, 3);
  read_pattern(r, 300, 4);
  sl_ring_free(r);
}
END_TEST

/* Walk the level up and down across hwm and check at every step that
 * try_write says SL_AGAIN exactly when level >= hwm or all max_chunks
 * slots are taken, that a refused chunk is still the caller's and
 * untouched, and that what is admitted comes out in order. The walk runs
 * in phases: one-byte chunks (the level climbs byte by byte, so every
 * level below hwm sees an admission and the refusal comes at exactly hwm),
 * chunks of 0..7 bytes (the level jumps past hwm), and chunks of 0..1 bytes
 * (the slots run out first). */
START_TEST(test_try_write_again_exactly_at_mark) {
  enum { HWM = 64, SLOTS = 100, STEPS = 60000, PHASE = 1000 };
  sl_ring *r = ring_make(HWM, SL_LWM_DEFAULT, SL_RING_BYTES, SLOTS);
  size_t qlen[SLOTS + 1];
  uint32_t qseed[SLOTS + 1];
  size_t qhead = 0, qcount = 0, level = 0;
  uint32_t seed = 0;
  uint64_t rng = 42;
  long admitted_at[HWM] = {0};
  long again_at_hwm = 0, again_above = 0, again_slots = 0;

  for (int step = 0; step < STEPS; step++) {
    uint64_t x = test_rand(&rng);
    int phase = (step / PHASE) % 3;

    if (x % 3 == 0 && qcount > 0) {
      read_pattern(r, qlen[qhead], qseed[qhead]);
      level -= qlen[qhead];
      qhead = (qhead + 1) % (SLOTS + 1);
      qcount--;
    } else {
      size_t len = phase == 0   ? 1
                   : phase == 1 ? (size_t)((x >> 8) % 8)
                                : (size_t)((x >> 8) % 2);
      bool full = level >= HWM || qcount >= SLOTS;
      sl_buf *b = pattern(len, seed);
      int rc = sl_ring_try_write(r, b);

      test_check_msg(rc == (full ? SL_AGAIN : 0),
                     "step %d: level %zu, %zu chunks, %zu-byte chunk: got %d",
                     step, level, qcount, len, rc);
      if (rc == SL_AGAIN) {
        test_check(sl_buf_refcount(b) == 1);
        test_check(test_buf_check_pattern(b, len, seed));
        sl_buf_unref(b);
        if (level == HWM)
          again_at_hwm++;
        else if (level > HWM)
          again_above++;
        else
          again_slots++;
      } else {
        admitted_at[level]++;
        qlen[(qhead + qcount) % (SLOTS + 1)] = len;
        qseed[(qhead + qcount) % (SLOTS + 1)] = seed;
        qcount++;
        level += len;
      }
      seed++;
    }
    test_check_msg(sl_ring_level(r) == level, "step %d: level %zu, not %zu",
                   step, sl_ring_level(r), level);
  }
  /* The walk reached every case it is meant to check. */
  for (int l = 0; l < HWM; l++)
    ck_assert_msg(admitted_at[l] > 0, "no write tried at level %d", l);
  ck_assert_int_gt(again_at_hwm, 0);
  ck_assert_int_gt(again_above, 0);
  ck_assert_int_gt(again_slots, 0);
  ck_assert_uint_eq(ring_stats(r).pauses, 0);
  ck_assert_uint_le(ring_stats(r).peak_level, HWM - 1 + 7);
  sl_ring_free(r);
}
END_TEST

/* Three slots (not a power of two): the fourth chunk is refused at a level
 * far below hwm, an empty chunk too, and a read frees a slot. */
START_TEST(test_try_write_again_when_slots_full) {
  sl_ring *r = ring_make(1000, SL_LWM_DEFAULT, SL_RING_BYTES, 3);
  sl_buf *b;

  for (uint32_t i = 0; i < 3; i++)
    ck_assert_int_eq(sl_ring_try_write(r, pattern(1, i)), 0);
  ck_assert_uint_eq(sl_ring_level(r), 3);

  b = pattern(1, 3);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_AGAIN);
  ck_assert_uint_eq(sl_buf_refcount(b), 1);
  ck_assert(test_buf_check_pattern(b, 1, 3));

  {
    sl_buf *empty = pattern(0, 77);

    ck_assert_int_eq(sl_ring_try_write(r, empty), SL_AGAIN);
    ck_assert_uint_eq(sl_buf_refcount(empty), 1);
    sl_buf_unref(empty);
  }
  ck_assert_uint_eq(ring_stats(r).chunks, 3);

  read_pattern(r, 1, 0);
  ck_assert_int_eq(sl_ring_try_write(r, b), 0);
  for (uint32_t i = 1; i < 4; i++)
    read_pattern(r, 1, i);
  sl_ring_free(r);
}
END_TEST

/* Byte mode picks 1024 slots when max_chunks is 0. */
START_TEST(test_byte_mode_default_slots) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_buf *b;

  for (int i = 0; i < 1024; i++)
    test_check(sl_ring_try_write(r, pattern(0, (uint32_t)i)) == 0);
  b = pattern(0, 1024);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_AGAIN);
  sl_buf_unref(b);
  ck_assert_uint_eq(ring_stats(r).chunks, 1024);
  sl_ring_free(r); /* releases the 1024 queued chunks */
}
END_TEST

START_TEST(test_default_low_mark_is_half) {
  sl_ring *r = ring_make(1000, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_ring_stats st = ring_stats(r);

  ck_assert_uint_eq(st.hwm, 1000);
  ck_assert_uint_eq(st.lwm, 500);
  sl_ring_free(r);

  r = ring_make(1000, 123, SL_RING_BYTES, 0);
  st = ring_stats(r);
  ck_assert_uint_eq(st.lwm, 123);
  sl_ring_free(r);
}
END_TEST

/* Peak level <= hwm + the largest chunk, across two threads and random
 * chunk sizes. The reader first lets the writer block, so the peak also
 * reaches hwm and the bound is tested where it matters. */
START_TEST(test_peak_level_bounded) {
  enum { HWM = 4096, MAX_SIZE = 1500 };
  sl_ring *r = ring_make(HWM, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  long n = long_run_chunks() / 10;
  stream s;
  sl_ring_stats st;

  if (n < 2000)
    n = 2000;
  stream_init(&s, r, n, CHUNK_RANDOM, 8);
  s.max_size = MAX_SIZE;
  s.force_every = n / 4;
  s.force_slack = 1025; /* 1024 slots fill whatever the sizes */
  stream_run(&s);
  stream_assert_complete(&s);
  ck_assert_int_ge(s.forced, 1);

  st = ring_stats(r);
  ck_assert_uint_le(s.largest, MAX_SIZE);
  ck_assert_uint_ge(st.peak_level, HWM);
  ck_assert_uint_le(st.peak_level, HWM + s.largest);
  ck_assert_uint_le(s.level_seen, HWM + s.largest);
  sl_ring_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Backpressure: the low mark and signals
 * ---------------------------------------------------------------------- */

/* hwm 1000, lwm 400, chunks of 100. The writer pauses at 1000; the reader
 * takes one chunk at a time. Nothing wakes the writer at 900..500; the read
 * that brings the level to 400 wakes it, once, with one signal. */
START_TEST(test_one_drain_per_pause_at_low_mark) {
  sl_ring *r = ring_make(1000, 400, SL_RING_BYTES, 0);
  uint32_t seed = 0;
  sl_ring_stats st;
  call w;

  ck_assert_int_eq(fill(r, 100, &seed), 10);
  st = ring_stats(r);
  ck_assert_uint_eq(st.level, 1000);
  ck_assert_uint_eq(st.signals, 0);

  call_start(&w, r, pattern(100, 10), call_write_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__WRITER), 0);

  for (uint32_t k = 0; k < 5; k++) {
    read_pattern(r, 100, k);
    st = ring_stats(r);
    ck_assert_uint_eq(st.level, 900 - 100 * k);
    ck_assert_uint_eq(st.drains, 0);
    ck_assert_uint_eq(st.signals, 0);
    ck_assert_int_eq(st.writer_waiting, 1);
  }
  read_pattern(r, 100, 5); /* 500 -> 400: the low mark */
  call_join(&w);
  ck_assert_int_eq(w.rc, 0);

  st = ring_stats(r);
  ck_assert_uint_eq(st.pauses, 1);
  ck_assert_uint_eq(st.drains, 1);
  ck_assert_uint_eq(st.signals, 1);
  ck_assert_uint_eq(st.level, 500);
  ck_assert_int_eq(st.writer_waiting, 0);
  for (uint32_t k = 6; k <= 10; k++)
    read_pattern(r, 100, k);
  sl_ring_free(r);
}
END_TEST

/* Over a long two-thread run every pause ends in exactly one drain. The
 * reader lets the writer block every 1000 chunks, so there are pauses to
 * count whatever the scheduler does. */
START_TEST(test_pauses_equal_drains_long_run) {
  sl_ring *r = ring_make(4096, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  stream s;
  sl_ring_stats st;

  stream_init(&s, r, long_run_chunks(), CHUNK_SEQ, 1);
  s.force_every = 1000;
  s.force_slack = 4096 / 8 + 2;
  stream_run(&s);
  stream_assert_complete(&s);

  st = ring_stats(r);
  ck_assert_uint_ge(st.pauses, (uint64_t)s.forced);
  ck_assert_int_ge(s.forced, s.n / 1000 - 1);
  ck_assert_uint_eq(st.pauses, st.drains);
  ck_assert_int_eq(st.writer_waiting, 0);
  sl_ring_free(r);
}
END_TEST

/* A wait is the only reason to signal: a single thread alternating writes
 * and reads never waits, so a million chunks (the default) send none. */
START_TEST(test_no_signal_without_waiter) {
  sl_ring *r = ring_make(4096, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  long n = long_run_chunks();
  sl_ring_stats st;
  sl_buf *out[4];

  for (long i = 0; i < n; i += 4) {
    size_t got = 0;

    for (long k = 0; k < 4; k++) {
      sl_buf *b = test_buf_seq(NULL, (uint64_t)(i + k));

      test_check(b != NULL);
      write_ok(r, b);
    }
    if ((i / 4) % 2 == 0) {
      for (long k = 0; k < 4; k++) {
        test_check(sl_ring_read(r, &out[0]) == 0);
        test_check(test_buf_get_seq(out[0]) == (uint64_t)(i + k));
        sl_buf_unref(out[0]);
      }
    } else {
      test_check(sl_ring_read_batch(r, out, 4, &got) == 0);
      test_check(got == 4);
      for (size_t k = 0; k < got; k++) {
        test_check(test_buf_get_seq(out[k]) == (uint64_t)i + k);
        sl_buf_unref(out[k]);
      }
    }
  }
  st = ring_stats(r);
  ck_assert_uint_ge(st.chunks_in, (uint64_t)n);
  ck_assert_uint_eq(st.chunks_out, st.chunks_in);
  ck_assert_uint_eq(st.signals, 0);
  ck_assert_uint_eq(st.pauses, 0);
  ck_assert_uint_eq(st.starves, 0);
  ck_assert_uint_eq(st.writer_wait_ns, 0);
  ck_assert_uint_eq(st.reader_wait_ns, 0);
  sl_ring_free(r);
}
END_TEST

/* Two threads, batch reads: a signal only ever goes to a waiter, and a
 * write or read wakes a waiting side at most once per wait, so signals are
 * bounded by pauses + starves. One more is allowed: the close at the end
 * may find the reader still marked waiting after the last write already
 * signalled it (it has not run yet), and close must wake a waiting reader.
 * Each forced pause ends in a drain, which is a signal, so drains <=
 * signals as well.
 *
 * How far below the chunk count the signals fall with batch reads depends
 * on the scheduler (a reader that empties the ring each time it runs waits
 * before nearly every chunk), so no ratio is asserted. */
START_TEST(test_signals_bounded_by_waits) {
  sl_ring *r = ring_make(4096, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  stream s;
  sl_ring_stats st;

  stream_init(&s, r, long_run_chunks(), CHUNK_SEQ, STREAM_MAX_BATCH);
  s.force_every = 10000;
  s.force_slack = 4096 / 8 + 2;
  stream_run(&s);
  stream_assert_complete(&s);

  st = ring_stats(r);
  if (s.n > s.force_slack)
    ck_assert_int_ge(s.forced, 1);
  ck_assert_uint_ge(st.drains, (uint64_t)s.forced);
  ck_assert_uint_le(st.drains, st.signals);
  ck_assert_uint_le(st.signals, st.pauses + st.starves + 1);
  sl_ring_free(r);
}
END_TEST

/* A reader waiting on an empty ring is woken by the next write: one
 * starve, one signal. */
START_TEST(test_blocked_reader_woken_by_write) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_ring_stats st;
  call rd;

  call_start(&rd, r, NULL, call_read_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), 0);
  st = ring_stats(r);
  ck_assert_int_eq(st.reader_waiting, 1);
  ck_assert_uint_eq(st.starves, 1);
  ck_assert_uint_eq(st.signals, 0);

  write_ok(r, pattern(7, 3));
  call_join(&rd);
  ck_assert_int_eq(rd.rc, 0);
  ck_assert(test_buf_check_pattern(rd.buf, 7, 3));
  sl_buf_unref(rd.buf);

  st = ring_stats(r);
  ck_assert_int_eq(st.reader_waiting, 0);
  ck_assert_uint_eq(st.starves, 1);
  ck_assert_uint_eq(st.signals, 1);
  sl_ring_free(r);
}
END_TEST

/* A reader whose writer comes only after it went to sleep looks for less
 * and less time before sleeping: the spin budget halves after each spin
 * that found nothing, down to its floor, and stays there. */
START_TEST(test_reader_spin_shrinks_when_it_finds_nothing) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  unsigned before = sl__ring_spin_budget(r);
  call rd;

  ck_assert_uint_eq(before, SL__RING_SPIN_CEILING);
  for (int k = 0; k < 12; k++) {
    call_start(&rd, r, NULL, call_read_main);
    ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), 0);
    write_ok(r, pattern(7, (uint32_t)k));
    call_join(&rd);
    ck_assert_int_eq(rd.rc, 0);
    sl_buf_unref(rd.buf);
    unsigned now = sl__ring_spin_budget(r);
    unsigned want =
        before / 2 > SL__RING_SPIN_FLOOR ? before / 2 : SL__RING_SPIN_FLOOR;
    ck_assert_uint_eq(now, want);
    before = now;
  }
  ck_assert_uint_eq(before, SL__RING_SPIN_FLOOR);
  sl_ring_free(r);
}
END_TEST

/* sl_ring_wait_writable: at once when there is room (no pause), else a
 * pause that ends at the drain. */
START_TEST(test_wait_writable_pauses_until_drain) {
  sl_ring *r = ring_make(1000, 400, SL_RING_BYTES, 0);
  uint32_t seed = 0;
  sl_ring_stats st;
  call w;

  ck_assert_int_eq(sl_ring_wait_writable(r), 0);
  ck_assert_uint_eq(ring_stats(r).pauses, 0);

  ck_assert_int_eq(fill(r, 250, &seed), 4);
  call_start(&w, r, NULL, call_wait_writable_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__WRITER), 0);
  ck_assert_uint_eq(ring_stats(r).pauses, 1);
  read_pattern(r, 250, 0);
  read_pattern(r, 250, 1);
  ck_assert_uint_eq(ring_stats(r).drains, 0);
  read_pattern(r, 250, 2); /* 250 <= 400 */
  call_join(&w);
  ck_assert_int_eq(w.rc, 0);
  st = ring_stats(r);
  ck_assert_uint_eq(st.pauses, 1);
  ck_assert_uint_eq(st.drains, 1);
  ck_assert_uint_eq(st.level, 250);
  ck_assert_int_eq(sl_ring_try_write(r, pattern(1, 4)), 0);
  read_pattern(r, 250, 3);
  read_pattern(r, 1, 4);
  sl_ring_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Wait time counters
 * ---------------------------------------------------------------------- */

START_TEST(test_writer_wait_time_counted) {
  sl_ring *r = ring_make(100, 50, SL_RING_BYTES, 0);
  uint32_t seed = 0;
  sl_ring_stats st;
  call w;

  ck_assert_int_eq(fill(r, 100, &seed), 1);
  ck_assert_uint_eq(ring_stats(r).writer_wait_ns, 0);
  call_start(&w, r, pattern(10, 1), call_write_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__WRITER), 0);
  read_pattern(r, 100, 0);
  call_join(&w);
  ck_assert_int_eq(w.rc, 0);
  st = ring_stats(r);
  ck_assert_uint_gt(st.writer_wait_ns, 0);
  ck_assert_uint_eq(st.reader_wait_ns, 0);
  read_pattern(r, 10, 1);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_reader_wait_time_counted) {
  sl_ring *r = ring_make(100, 50, SL_RING_BYTES, 0);
  sl_ring_stats st;
  call rd;

  call_start(&rd, r, NULL, call_read_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), 0);
  write_ok(r, pattern(1, 0));
  call_join(&rd);
  ck_assert_int_eq(rd.rc, 0);
  sl_buf_unref(rd.buf);
  st = ring_stats(r);
  ck_assert_uint_gt(st.reader_wait_ns, 0);
  ck_assert_uint_eq(st.writer_wait_ns, 0);
  sl_ring_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Close
 * ---------------------------------------------------------------------- */

START_TEST(test_close_delivers_queued_then_eof) {
  sl_ring *r = ring_make(1000, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_buf *b = NULL;
  sl_buf *out[4];
  size_t n = 99;

  write_ok(r, pattern(0, 0));
  write_ok(r, pattern(1, 1));
  write_ok(r, pattern(2, 2));
  sl_ring_close(r);
  ck_assert_int_eq(ring_stats(r).closed, 1);
  read_pattern(r, 0, 0);
  read_pattern(r, 1, 1);
  read_pattern(r, 2, 2);
  ck_assert_int_eq(sl_ring_read(r, &b), SL_EOF);
  ck_assert_int_eq(sl_ring_read(r, &b), SL_EOF);
  ck_assert_int_eq(sl_ring_try_read(r, &b), SL_EOF);
  ck_assert_int_eq(sl_ring_read_batch(r, out, 4, &n), SL_EOF);
  ck_assert_uint_eq(n, 0);
  ck_assert_uint_eq(ring_stats(r).starves, 0);
  sl_ring_free(r);
}
END_TEST

/* After close every kind of write says SL_ECLOSED and leaves the buffer
 * with the caller; close again changes nothing. */
START_TEST(test_write_after_close_is_eclosed) {
  sl_ring *r = ring_make(1000, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_buf *b = pattern(10, 1);
  sl_buf *out = NULL;

  write_ok(r, pattern(3, 0));
  sl_ring_close(r);
  ck_assert_int_eq(sl_ring_write(r, b), SL_ECLOSED);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_ECLOSED);
  ck_assert_int_eq(sl_ring_wait_writable(r), SL_ECLOSED);
  sl_ring_close(r);
  ck_assert_int_eq(sl_ring_write(r, b), SL_ECLOSED);
  ck_assert_uint_eq(sl_buf_refcount(b), 1);
  ck_assert(test_buf_check_pattern(b, 10, 1));
  sl_buf_unref(b);

  ck_assert_uint_eq(ring_stats(r).chunks_in, 1);
  read_pattern(r, 3, 0);
  ck_assert_int_eq(sl_ring_read(r, &out), SL_EOF);
  ck_assert_int_eq(ring_stats(r).error, 0);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_close_wakes_blocked_reader) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  call rd;

  call_start(&rd, r, NULL, call_read_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), 0);
  sl_ring_close(r);
  call_join(&rd);
  ck_assert_int_eq(rd.rc, SL_EOF);
  ck_assert_int_eq(ring_stats(r).reader_waiting, 0);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_close_wakes_blocked_batch_reader) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  call rd;

  call_start(&rd, r, NULL, call_read_batch_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), 0);
  sl_ring_close(r);
  call_join(&rd);
  ck_assert_int_eq(rd.rc, SL_EOF);
  ck_assert_uint_eq(rd.n, 0);
  sl_ring_free(r);
}
END_TEST

/* wait_writable waits "until a write would be admitted, the ring is closed
 * or aborted": a close from another thread ends the wait. */
START_TEST(test_close_wakes_wait_writable) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  uint32_t seed = 0;
  call w;

  ck_assert_int_eq(fill(r, 100, &seed), 1);
  call_start(&w, r, NULL, call_wait_writable_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__WRITER), 0);
  sl_ring_close(r);
  call_join(&w);
  ck_assert_int_eq(w.rc, SL_ECLOSED);
  read_pattern(r, 100, 0);
  sl_ring_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Abort
 * ---------------------------------------------------------------------- */

/* An object ring of hwm 4 holding four counted objects; the writer blocks
 * on the fifth. Abort wakes it with the code, releases the four at once,
 * and the fifth stays the writer's. */
START_TEST(test_abort_wakes_blocked_writer) {
  sl_ring *r = ring_make(4, SL_LWM_DEFAULT, SL_RING_OBJECTS, 0);
  test_counter dtor;
  sl_buf *fifth;
  call w;

  test_counter_init(&dtor);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(sl_ring_try_write(r, object(&dtor)), 0);
  fifth = object(&dtor);
  call_start(&w, r, fifth, call_write_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__WRITER), 0);

  ck_assert_int_eq(sl_ring_abort(r, SL_EPIPE), 0);
  ck_assert_int_eq(test_counter_get(&dtor), 4);
  call_join(&w);
  ck_assert_int_eq(w.rc, SL_EPIPE);
  ck_assert_uint_eq(sl_buf_refcount(fifth), 1);
  ck_assert_int_eq(test_counter_get(&dtor), 4);
  sl_buf_unref(fifth);
  ck_assert_int_eq(test_counter_get(&dtor), 5);

  ck_assert_uint_eq(sl_ring_level(r), 0);
  ck_assert_int_eq(ring_stats(r).writer_waiting, 0);
  sl_ring_free(r);
  ck_assert_int_eq(test_counter_get(&dtor), 5);
}
END_TEST

START_TEST(test_abort_wakes_blocked_reader) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  call rd;

  call_start(&rd, r, NULL, call_read_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), 0);
  ck_assert_int_eq(sl_ring_abort(r, SL_EIO), 0);
  call_join(&rd);
  ck_assert_int_eq(rd.rc, SL_EIO);
  ck_assert_int_eq(ring_stats(r).reader_waiting, 0);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_abort_wakes_blocked_batch_reader) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  call rd;

  call_start(&rd, r, NULL, call_read_batch_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), 0);
  ck_assert_int_eq(sl_ring_abort(r, SL_ECANCELED), 0);
  call_join(&rd);
  ck_assert_int_eq(rd.rc, SL_ECANCELED);
  ck_assert_uint_eq(rd.n, 0);
  sl_ring_free(r);
}
END_TEST

/* An abort that comes between a reader's look at the ring and its claim
 * of the chunks it saw. The reader's wait hook runs on the reader's
 * thread after its wait found a chunk and before it claims it; the hook
 * aborts there, which releases that chunk. The read must then end with
 * the abort's code: had the reader read head only after its look, it
 * would find the ring empty past the released chunk and return success
 * with nothing, and where more was queued it would take the chunks after
 * the released ones, a stream with a hole. */
static void abort_in_hook(void *arg, uint64_t t0, uint64_t t1) {
  (void)t0;
  (void)t1;
  sl_ring_abort(arg, SL_EPIPE);
}

START_TEST(test_abort_between_look_and_claim) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_OBJECTS, 0);
  test_counter dtor;
  call rd;

  test_counter_init(&dtor);
  sl__ring_set_wait_hook(r, SL__READER, abort_in_hook, r);
  call_start(&rd, r, NULL, call_read_batch_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), 0);
  write_ok(r, object(&dtor));
  call_join(&rd);
  ck_assert_int_eq(rd.rc, SL_EPIPE);
  ck_assert_uint_eq(rd.n, 0);
  ck_assert_int_eq(test_counter_get(&dtor), 1); /* released once, by abort */
  sl_ring_free(r);
  ck_assert_int_eq(test_counter_get(&dtor), 1);
}
END_TEST

START_TEST(test_abort_releases_queued_chunks) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_OBJECTS, 0);
  test_counter dtor;
  sl_buf *kept;
  sl_ring_stats st;

  test_counter_init(&dtor);
  for (int i = 0; i < 3; i++)
    write_ok(r, object(&dtor));
  /* A chunk the reader still holds a reference to survives the abort. */
  kept = object(&dtor);
  write_ok(r, sl_buf_ref(kept));
  ck_assert_uint_eq(sl_buf_refcount(kept), 2);

  ck_assert_int_eq(sl_ring_abort(r, SL_EPIPE), 0);
  ck_assert_int_eq(test_counter_get(&dtor), 3);
  ck_assert_uint_eq(sl_buf_refcount(kept), 1);
  st = ring_stats(r);
  ck_assert_uint_eq(st.level, 0);
  ck_assert_uint_eq(st.chunks, 0);
  ck_assert_int_eq(st.error, SL_EPIPE);
  sl_ring_free(r);
  ck_assert_int_eq(test_counter_get(&dtor), 3);
  sl_buf_unref(kept);
  ck_assert_int_eq(test_counter_get(&dtor), 4);
}
END_TEST

/* The first abort's code sticks: a later abort, a close, and every call on
 * either side see it. */
START_TEST(test_first_abort_wins) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_buf *b = pattern(4, 4);
  sl_buf *out[2];
  sl_buf *one = NULL;
  size_t n = 99;
  sl_ring_stats st;

  write_ok(r, pattern(1, 1));
  ck_assert_int_eq(sl_ring_abort(r, SL_EPIPE), 0);
  ck_assert_int_eq(sl_ring_abort(r, SL_EIO), 0);
  sl_ring_close(r); /* a no-op after abort */

  st = ring_stats(r);
  ck_assert_int_eq(st.error, SL_EPIPE);
  ck_assert_int_eq(st.closed, 0);
  ck_assert_int_eq(sl_ring_read(r, &one), SL_EPIPE);
  ck_assert_int_eq(sl_ring_try_read(r, &one), SL_EPIPE);
  ck_assert_int_eq(sl_ring_read_batch(r, out, 2, &n), SL_EPIPE);
  ck_assert_uint_eq(n, 0);
  ck_assert_int_eq(sl_ring_write(r, b), SL_EPIPE);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_EPIPE);
  ck_assert_int_eq(sl_ring_wait_writable(r), SL_EPIPE);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__WRITER), SL_EPIPE);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__READER), SL_EPIPE);
  ck_assert_uint_eq(sl_buf_refcount(b), 1);
  ck_assert(test_buf_check_pattern(b, 4, 4));
  sl_buf_unref(b);
  sl_ring_free(r);
}
END_TEST

/* Abort after close still fails the stream: what was queued is dropped
 * and the reader gets the error, not the chunks or SL_EOF. */
START_TEST(test_abort_after_close_fails_stream) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_OBJECTS, 0);
  test_counter dtor;
  sl_buf *out = NULL;

  test_counter_init(&dtor);
  write_ok(r, object(&dtor));
  write_ok(r, object(&dtor));
  sl_ring_close(r);
  ck_assert_int_eq(sl_ring_abort(r, SL_ECANCELED), 0);
  ck_assert_int_eq(test_counter_get(&dtor), 2);
  ck_assert_int_eq(sl_ring_read(r, &out), SL_ECANCELED);
  ck_assert_int_eq(ring_stats(r).error, SL_ECANCELED);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_abort_rejects_nonnegative_code) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);

  ck_assert_int_eq(sl_ring_abort(r, 0), SL_EINVAL);
  ck_assert_int_eq(sl_ring_abort(r, SL_AGAIN), SL_EINVAL);
  ck_assert_int_eq(sl_ring_abort(r, SL_EOF), SL_EINVAL);
  ck_assert_int_eq(sl_ring_abort(r, INT_MAX), SL_EINVAL);
  ck_assert_int_eq(sl_ring_abort(NULL, SL_EIO), SL_EINVAL);
  ck_assert_int_eq(ring_stats(r).error, 0);
  /* Still a working ring. */
  write_ok(r, pattern(2, 9));
  read_pattern(r, 2, 9);
  sl_ring_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Object mode
 * ---------------------------------------------------------------------- */

START_TEST(test_object_mode_counts_items) {
  sl_ring *r = ring_make(3, SL_LWM_DEFAULT, SL_RING_OBJECTS, 0);
  test_counter objs[4];
  sl_buf *b;
  sl_ring_stats st;

  for (int i = 0; i < 4; i++)
    test_counter_init(&objs[i]);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(sl_ring_try_write(r, object(&objs[i])), 0);
    ck_assert_uint_eq(sl_ring_level(r), (size_t)i + 1);
  }
  b = object(&objs[3]);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_AGAIN);
  ck_assert_uint_eq(sl_buf_refcount(b), 1);

  st = ring_stats(r);
  ck_assert_uint_eq(st.level, 3);
  ck_assert_uint_eq(st.chunks, 3);
  ck_assert_uint_eq(st.bytes_in, 0);
  ck_assert_uint_eq(st.chunks_in, 3);

  for (int i = 0; i < 3; i++) {
    sl_buf *out = NULL;

    ck_assert_int_eq(sl_ring_read(r, &out), 0);
    ck_assert_ptr_eq(sl_buf_object(out), &objs[i]);
    ck_assert_uint_eq(sl_ring_level(r), 2 - (size_t)i);
    sl_buf_unref(out);
    ck_assert_int_eq(test_counter_get(&objs[i]), 1);
  }
  ck_assert_int_eq(sl_ring_try_write(r, b), 0);
  ck_assert_uint_eq(sl_ring_level(r), 1);
  st = ring_stats(r);
  ck_assert_uint_eq(st.bytes_out, 0);
  ck_assert_uint_eq(st.peak_level, 3);
  sl_ring_free(r);
  ck_assert_int_eq(test_counter_get(&objs[3]), 1);
}
END_TEST

START_TEST(test_byte_buffer_into_object_ring_rejected) {
  sl_ring *r = ring_make(3, SL_LWM_DEFAULT, SL_RING_OBJECTS, 0);
  sl_buf *b = pattern(5, 5);
  sl_buf *empty = pattern(0, 0);

  ck_assert_int_eq(sl_ring_write(r, b), SL_EINVAL);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_EINVAL);
  ck_assert_int_eq(sl_ring_write(r, empty), SL_EINVAL);
  ck_assert_uint_eq(sl_buf_refcount(b), 1);
  ck_assert(test_buf_check_pattern(b, 5, 5));
  ck_assert_uint_eq(ring_stats(r).chunks_in, 0);
  sl_buf_unref(b);
  sl_buf_unref(empty);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_object_buffer_into_byte_ring_rejected) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  test_counter dtor;
  sl_buf *b;

  test_counter_init(&dtor);
  b = object(&dtor);
  ck_assert_int_eq(sl_ring_write(r, b), SL_EINVAL);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_EINVAL);
  ck_assert_uint_eq(sl_buf_refcount(b), 1);
  ck_assert_int_eq(test_counter_get(&dtor), 0);
  ck_assert_uint_eq(ring_stats(r).chunks_in, 0);
  sl_buf_unref(b);
  ck_assert_int_eq(test_counter_get(&dtor), 1);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_free_releases_queued_chunks) {
  sl_ring *r = ring_make(10, SL_LWM_DEFAULT, SL_RING_OBJECTS, 0);
  test_counter dtor;

  test_counter_init(&dtor);
  for (int i = 0; i < 5; i++)
    write_ok(r, object(&dtor));
  ck_assert_int_eq(test_counter_get(&dtor), 0);
  sl_ring_free(r);
  ck_assert_int_eq(test_counter_get(&dtor), 5);
  sl_ring_free(NULL);
}
END_TEST

/* ------------------------------------------------------------------------
 * Zero-length chunks
 * ---------------------------------------------------------------------- */

/* 10^4 empty chunks interleaved with 10^4 data chunks through two threads
 * and a ring of 16 slots: none lost, all in order. */
START_TEST(test_zero_length_chunks_pass_in_order) {
  sl_ring *r = ring_make(64, SL_LWM_DEFAULT, SL_RING_BYTES, 16);
  long n = long_run_chunks() / 50; /* 20000 by default */
  stream s;
  sl_ring_stats st;

  if (n < 400)
    n = 400;
  stream_init(&s, r, n, CHUNK_ZEROMIX, 5);
  s.force_every = n / 20;
  s.force_slack = 17;
  stream_run(&s);
  stream_assert_complete(&s);
  st = ring_stats(r);
  ck_assert_uint_eq(st.chunks_out, (uint64_t)n);
  ck_assert_uint_eq(st.bytes_out, (uint64_t)n / 2 * 8);
  ck_assert_uint_eq(st.pauses, st.drains);
  ck_assert_uint_ge(st.pauses, (uint64_t)s.forced);
  sl_ring_free(r);
}
END_TEST

/* Eight empty chunks fill eight slots at level 0: the writer blocks, and
 * is woken once the reader brings the count down to half the slots. */
START_TEST(test_zero_length_chunks_fill_slots) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 8);
  uint32_t seed = 0;
  sl_ring_stats st;
  call w;

  ck_assert_int_eq(fill(r, 0, &seed), 8);
  ck_assert_uint_eq(sl_ring_level(r), 0);
  call_start(&w, r, pattern(0, 8), call_write_main);
  ck_assert_int_eq(sl__ring_wait_blocked(r, SL__WRITER), 0);
  st = ring_stats(r);
  ck_assert_uint_eq(st.level, 0);
  ck_assert_uint_eq(st.chunks, 8);
  ck_assert_uint_eq(st.pauses, 1);

  for (uint32_t k = 0; k < 3; k++) { /* 7, 6, 5 chunks: above half */
    read_pattern(r, 0, k);
    st = ring_stats(r);
    ck_assert_uint_eq(st.drains, 0);
    ck_assert_int_eq(st.writer_waiting, 1);
  }
  read_pattern(r, 0, 3); /* 4 chunks: half */
  call_join(&w);
  ck_assert_int_eq(w.rc, 0);
  st = ring_stats(r);
  ck_assert_uint_eq(st.drains, 1);
  ck_assert_uint_eq(st.chunks, 5);
  for (uint32_t k = 4; k <= 8; k++)
    read_pattern(r, 0, k);
  sl_ring_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Bad input and allocation failure
 * ---------------------------------------------------------------------- */

START_TEST(test_ring_new_rejects_bad_options) {
  static const struct {
    size_t hwm, lwm;
    int mode;
    size_t max_chunks;
  } bad[] = {
      {0, SL_LWM_DEFAULT, SL_RING_BYTES, 0},           /* hwm 0 */
      {0, 0, SL_RING_OBJECTS, 0},                      /* hwm 0 */
      {100, 100, SL_RING_BYTES, 0},                    /* lwm == hwm */
      {100, 101, SL_RING_BYTES, 0},                    /* lwm > hwm */
      {1, 1, SL_RING_BYTES, 0},                        /* lwm == hwm */
      {100, 10, 2, 0},                                 /* unknown mode */
      {100, 10, -1, 0},                                /* unknown mode */
      {4, SL_LWM_DEFAULT, SL_RING_OBJECTS, 4},         /* < hwm + 1 slots */
      {4, SL_LWM_DEFAULT, SL_RING_OBJECTS, 1},         /* < hwm + 1 slots */
      {100, 10, SL_RING_BYTES, ((size_t)1 << 24) + 1}, /* too many slots */
  };
  sl_ring_opts o = {100, SL_LWM_DEFAULT, SL_RING_BYTES, 0};
  sl_ring *r = NULL;

  ck_assert_int_eq(sl_ring_new(NULL, &o), SL_EINVAL);
  ck_assert_int_eq(sl_ring_new(&r, NULL), SL_EINVAL);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    sl_ring_opts b = {bad[i].hwm, bad[i].lwm, bad[i].mode, bad[i].max_chunks};

    r = NULL;
    ck_assert_msg(sl_ring_new(&r, &b) == SL_EINVAL,
                  "case %zu (hwm %zu, lwm %zu, mode %d, slots %zu) accepted", i,
                  b.hwm, b.lwm, b.mode, b.max_chunks);
  }
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* The edges that are valid: hwm 1 with lwm 0, object mode with exactly
 * hwm + 1 slots, one slot in byte mode. */
START_TEST(test_ring_new_accepts_edges) {
  sl_ring *r = ring_make(1, 0, SL_RING_BYTES, 0);
  sl_buf *b;

  ck_assert_uint_eq(ring_stats(r).lwm, 0);
  write_ok(r, pattern(1000, 1)); /* admitted at level 0 < 1 */
  b = pattern(1, 2);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_AGAIN);
  sl_buf_unref(b);
  read_pattern(r, 1000, 1);
  sl_ring_free(r);

  r = ring_make(4, SL_LWM_DEFAULT, SL_RING_OBJECTS, 5);
  sl_ring_free(r);

  r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 1);
  write_ok(r, pattern(1, 1));
  b = pattern(1, 2);
  ck_assert_int_eq(sl_ring_try_write(r, b), SL_AGAIN);
  read_pattern(r, 1, 1);
  ck_assert_int_eq(sl_ring_try_write(r, b), 0);
  read_pattern(r, 1, 2);
  sl_ring_free(r);
}
END_TEST

START_TEST(test_ring_calls_reject_null) {
  sl_ring *r = ring_make(100, SL_LWM_DEFAULT, SL_RING_BYTES, 0);
  sl_buf *b = pattern(3, 3);
  sl_buf *out[2] = {NULL, NULL};
  sl_buf *one = NULL;
  size_t n = 0;
  sl_ring_stats st;

  ck_assert_int_eq(sl_ring_write(NULL, b), SL_EINVAL);
  ck_assert_int_eq(sl_ring_write(r, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_ring_try_write(NULL, b), SL_EINVAL);
  ck_assert_int_eq(sl_ring_try_write(r, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_ring_wait_writable(NULL), SL_EINVAL);
  ck_assert_int_eq(sl_ring_read(NULL, &one), SL_EINVAL);
  ck_assert_int_eq(sl_ring_read(r, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_ring_try_read(NULL, &one), SL_EINVAL);
  ck_assert_int_eq(sl_ring_try_read(r, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_ring_read_batch(NULL, out, 2, &n), SL_EINVAL);
  ck_assert_int_eq(sl_ring_read_batch(r, NULL, 2, &n), SL_EINVAL);
  ck_assert_int_eq(sl_ring_read_batch(r, out, 2, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_ring_read_batch(r, out, 0, &n), SL_EINVAL);
  ck_assert_int_eq(sl_ring_abort(NULL, SL_EIO), SL_EINVAL);
  ck_assert_int_eq(sl_ring_stats_get(NULL, &st), SL_EINVAL);
  ck_assert_int_eq(sl_ring_stats_get(r, NULL), SL_EINVAL);
  sl_ring_close(NULL);
  sl_ring_free(NULL);

  /* None of it touched the ring or the buffer. */
  ck_assert_uint_eq(sl_buf_refcount(b), 1);
  st = ring_stats(r);
  ck_assert_uint_eq(st.chunks_in, 0);
  ck_assert_int_eq(st.closed, 0);
  ck_assert_int_eq(st.error, 0);
  write_ok(r, b);
  read_pattern(r, 3, 3);
  sl_ring_free(r);
}
END_TEST

/* Fail each allocation sl_ring_new makes, one at a time: SL_ENOMEM and
 * nothing left allocated, until a run where no allocation failed
 * succeeds. */
START_TEST(test_ring_new_enomem) {
  static const sl_ring_opts opts[] = {
      {4096, SL_LWM_DEFAULT, SL_RING_BYTES, 0},
      {8, 2, SL_RING_OBJECTS, 0},
  };

  for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
    long failures = 0;
    bool done = false;

    for (long nth = 1; nth <= 1000 && !done; nth++) {
      sl_ring *r = NULL;
      long failed;
      int rc;

      fail_alloc_arm(nth);
      rc = sl_ring_new(&r, &opts[o]);
      failed = fail_alloc_failed();
      fail_alloc_disarm();
      if (rc == 0) {
        test_counter dtor;

        test_counter_init(&dtor);
        ck_assert_ptr_nonnull(r);
        /* The ring works, whatever it survived. */
        write_ok(r,
                 opts[o].mode == SL_RING_BYTES ? pattern(1, 1) : object(&dtor));
        sl_ring_free(r);
        done = failed == 0;
      } else {
        ck_assert_msg(rc == SL_ENOMEM, "allocation %ld failed: got %d", nth,
                      rc);
        ck_assert_int_eq(failed, 1);
        failures++;
      }
      ck_assert_msg(test_alloc_live() == 0,
                    "allocation %ld failed: %ld block(s) leaked", nth,
                    test_alloc_live());
    }
    ck_assert(done);
    ck_assert_int_ge(failures, 1);
  }
}
END_TEST

/* ------------------------------------------------------------------------
 * Suite
 * ---------------------------------------------------------------------- */

static TCase *tcase(Suite *s, const char *name, int timeout) {
  TCase *tc = tcase_create(name);

  tcase_add_checked_fixture(tc, alloc_setup, alloc_teardown);
  tcase_set_timeout(tc, timeout);
  suite_add_tcase(s, tc);
  return tc;
}

static Suite *ring_suite(void) {
  Suite *s = suite_create("ring");
  TCase *tc;

  tc = tcase(s, "order", TIMEOUT_SHORT);
  tcase_add_test(tc, test_wrap_around_keeps_order);
  tcase_add_test(tc, test_wrap_around_full_at_every_offset);
  tcase_add_test(tc, test_batch_read_takes_up_to_max_in_order);
  tcase_add_test(tc, test_try_read_empty_is_again);

  tc = tcase(s, "high_mark", TIMEOUT_SHORT);
  tcase_add_test(tc, test_writer_blocks_at_high_mark);
  tcase_add_test(tc, test_try_write_again_exactly_at_mark);
  tcase_add_test(tc, test_try_write_again_when_slots_full);
  tcase_add_test(tc, test_byte_mode_default_slots);
  tcase_add_test(tc, test_default_low_mark_is_half);

  tc = tcase(s, "low_mark", TIMEOUT_SHORT);
  tcase_add_test(tc, test_one_drain_per_pause_at_low_mark);
  tcase_add_test(tc, test_blocked_reader_woken_by_write);
  tcase_add_test(tc, test_reader_spin_shrinks_when_it_finds_nothing);
  tcase_add_test(tc, test_wait_writable_pauses_until_drain);

  tc = tcase(s, "wait_time", TIMEOUT_SHORT);
  tcase_add_test(tc, test_writer_wait_time_counted);
  tcase_add_test(tc, test_reader_wait_time_counted);

  tc = tcase(s, "close", TIMEOUT_SHORT);
  tcase_add_test(tc, test_close_delivers_queued_then_eof);
  tcase_add_test(tc, test_write_after_close_is_eclosed);
  tcase_add_test(tc, test_close_wakes_blocked_reader);
  tcase_add_test(tc, test_close_wakes_blocked_batch_reader);
  tcase_add_test(tc, test_close_wakes_wait_writable);

  tc = tcase(s, "abort", TIMEOUT_SHORT);
  tcase_add_test(tc, test_abort_wakes_blocked_writer);
  tcase_add_test(tc, test_abort_wakes_blocked_reader);
  tcase_add_test(tc, test_abort_wakes_blocked_batch_reader);
  tcase_add_test(tc, test_abort_releases_queued_chunks);
  tcase_add_test(tc, test_abort_between_look_and_claim);
  tcase_add_test(tc, test_first_abort_wins);
  tcase_add_test(tc, test_abort_after_close_fails_stream);
  tcase_add_test(tc, test_abort_rejects_nonnegative_code);

  tc = tcase(s, "objects", TIMEOUT_SHORT);
  tcase_add_test(tc, test_object_mode_counts_items);
  tcase_add_test(tc, test_byte_buffer_into_object_ring_rejected);
  tcase_add_test(tc, test_object_buffer_into_byte_ring_rejected);
  tcase_add_test(tc, test_free_releases_queued_chunks);

  tc = tcase(s, "zero_length", TIMEOUT_SHORT);
  tcase_add_test(tc, test_zero_length_chunks_pass_in_order);
  tcase_add_test(tc, test_zero_length_chunks_fill_slots);

  tc = tcase(s, "bad_input", TIMEOUT_SHORT);
  tcase_add_test(tc, test_ring_new_rejects_bad_options);
  tcase_add_test(tc, test_ring_new_accepts_edges);
  tcase_add_test(tc, test_ring_calls_reject_null);
  tcase_add_test(tc, test_ring_new_enomem);

  tc = tcase(s, "long_run", TIMEOUT_LONG);
  tcase_add_test(tc, test_fifo_two_threads_single_reads);
  tcase_add_test(tc, test_fifo_two_threads_batch_reads);
  tcase_add_test(tc, test_pauses_equal_drains_long_run);
  tcase_add_test(tc, test_no_signal_without_waiter);
  tcase_add_test(tc, test_signals_bounded_by_waits);
  tcase_add_test(tc, test_peak_level_bounded);

  return s;
}

int main(void) {
  return run_suite(ring_suite());
}

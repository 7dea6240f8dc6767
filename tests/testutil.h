/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the Check suites.
 *
 * Everything here is static inline so a suite pays only for what it uses
 * and no helper needs a separate object file. No helper function asserts:
 * they report through their return values, so they are safe on any thread,
 * and only the test's own thread asserts (an assertion that fails on
 * another thread cannot unwind the test in no-fork mode). test_check is
 * the one assertion here, for the test's own thread.
 *
 *   run_suite(s)             main() of a suite: fork mode unless CK_FORK=no,
 *                            verbosity from CK_VERBOSITY, exit status.
 *   test_check(expr)         ck_assert for hot loops (silent when it holds).
 *   test_iterations(env, d)  a loop count that an environment variable can
 *                            scale down (sanitizers, valgrind) or up.
 *   test_buf_pattern(...)    a byte buffer filled with a reproducible pattern,
 *   test_buf_check_pattern   and its check.
 *   test_buf_seq / _get_seq  an 8-byte buffer carrying a sequence number.
 *   test_alloc_install()     route the library's allocations through counting
 *                            wrappers (live blocks, calls since arming);
 *   fail_alloc_arm(n)        make only the nth allocation after arming fail;
 *   fail_alloc_count()       allocations attempted since arming;
 *   test_alloc_live()        blocks the library holds now (0 = no leak).
 *   test_counter_*           an atomic counter, e.g. for object destructors.
 *   test_rand(&state)        a small reproducible pseudo-random generator.
 *   test_hang_clock_*        the bound of a wait that only a hang would
 *                            reach, counted in time the waiter ran.
 */
#ifndef SLUICE_TESTUTIL_H
#define SLUICE_TESTUTIL_H

#include "sluice.h"

#include <check.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------
 * Running a suite
 * ---------------------------------------------------------------------- */

/* Run every test of s and return the process exit status. Fork mode is the
 * default so that a hung or crashing thread fails only its own test;
 * CK_FORK=no turns it off (for a debugger). CK_VERBOSITY, CK_RUN_CASE,
 * CK_RUN_SUITE and CK_TIMEOUT_MULTIPLIER work as Check documents. */
static inline int run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  int failed;

  srunner_set_fork_status(sr, CK_FORK_GETENV);
  srunner_run_all(sr, CK_ENV);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ck_assert for loops that run millions of times. In fork mode Check
 * reports every passing ck_assert to the parent process (a system call
 * each), which can cost more than the code under test; these call into
 * Check only when the assertion fails. Test thread only. */
#define test_check(expr)                            \
  do {                                              \
    if (!(expr))                                    \
      ck_abort_msg("Assertion '%s' failed", #expr); \
  } while (0)

#define test_check_msg(expr, ...) \
  do {                            \
    if (!(expr))                  \
      ck_abort_msg(__VA_ARGS__);  \
  } while (0)

/* The bound of a wait that only a hang reaches (a finished callback that
 * never comes, a thread stuck in a join), not a synchronisation: the
 * waiter waits in slices and counts the time it ran on schedule. A slice
 * that comes back seconds late (the process was stopped, or the machine
 * starved it) counts as one slice, so a test stopped with SIGSTOP or
 * frozen by a busy machine does not read as hung when it resumes; a real
 * hang still fails after its seconds.
 *
 *   test_hang_clock hc;
 *   test_hang_clock_start(&hc, CLOCK_REALTIME);  // the condvar's clock
 *   while (!done && !over) {
 *     struct timespec next = test_hang_clock_next(&hc);
 *     pthread_cond_timedwait(&cv, &mu, &next);
 *     over = test_hang_clock_over(&hc, seconds);
 *   }
 */
#define TEST_HANG_SLICE_NS 200000000LL /* 0.2 s */
#define TEST_HANG_LATE_NS 2000000000LL /* later than this: not running */

typedef struct test_hang_clock {
  clockid_t id;
  struct timespec last; /* when the waiter last looked */
  int64_t spent_ns;     /* running time counted so far */
} test_hang_clock;

static inline int64_t test_ts_ns(const struct timespec *t) {
  return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static inline void test_hang_clock_start(test_hang_clock *h, clockid_t id) {
  h->id = id;
  clock_gettime(id, &h->last);
  h->spent_ns = 0;
}

/* The end of the next slice, an absolute time on h's clock. */
static inline struct timespec test_hang_clock_next(const test_hang_clock *h) {
  int64_t t = test_ts_ns(&h->last) + TEST_HANG_SLICE_NS;
  struct timespec ts = {(time_t)(t / 1000000000LL), (long)(t % 1000000000LL)};
  return ts;
}

/* After a wait: count the time since the last look (one slice when it came
 * back late; nothing when the clock went back) and tell whether seconds
 * of running time have passed. */
static inline bool test_hang_clock_over(test_hang_clock *h, int seconds) {
  struct timespec now;
  clock_gettime(h->id, &now);
  int64_t d = test_ts_ns(&now) - test_ts_ns(&h->last);
  h->last = now;
  if (d < 0)
    d = 0;
  else if (d > TEST_HANG_SLICE_NS + TEST_HANG_LATE_NS)
    d = TEST_HANG_SLICE_NS;
  h->spent_ns += d;
  return h->spent_ns >= (int64_t)seconds * 1000000000LL;
}

/* A loop count: the value of the environment variable env when it holds a
 * positive integer, else dflt. Long loops read it so that slow builds
 * (ThreadSanitizer, valgrind) can scale them down and soak runs up. */
static inline long test_iterations(const char *env, long dflt) {
  const char *s = env != NULL ? getenv(env) : NULL;
  char *end;
  long v;

  if (s == NULL || *s == '\0')
    return dflt;
  v = strtol(s, &end, 10);
  if (*end != '\0' || v <= 0)
    return dflt;
  return v;
}

/* ------------------------------------------------------------------------
 * Buffers
 * ---------------------------------------------------------------------- */

/* The pattern byte at offset i for seed. Varies with both, so a chunk that
 * is swapped, truncated or shifted shows. */
static inline unsigned char test_pattern_byte(uint32_t seed, size_t i) {
  uint32_t x = seed * 2654435761u + (uint32_t)i * 40503u + (uint32_t)(i >> 8);
  return (unsigned char)(x ^ (x >> 13) ^ (x >> 24));
}

/* A byte buffer from pool (may be NULL) of len bytes in the pattern of seed,
 * with len set, or NULL when the library refuses. */
static inline sl_buf *test_buf_pattern(sl_pool *pool, size_t len,
                                       uint32_t seed) {
  sl_buf *b = NULL;
  unsigned char *p;

  if (sl_buf_new(pool, len, &b) != 0 || b == NULL)
    return NULL;
  p = sl_buf_data(b);
  if (len > 0 && p == NULL)
    goto fail;
  for (size_t i = 0; i < len; i++)
    p[i] = test_pattern_byte(seed, i);
  if (sl_buf_set_len(b, len) != 0)
    goto fail;
  return b;
fail:
  sl_buf_unref(b);
  return NULL;
}

/* True when buf is a byte buffer of exactly len bytes in seed's pattern. */
static inline bool test_buf_check_pattern(const sl_buf *buf, size_t len,
                                          uint32_t seed) {
  const unsigned char *p;

  if (buf == NULL || sl_buf_is_object(buf) || sl_buf_len(buf) != len)
    return false;
  p = sl_buf_data(buf);
  if (len > 0 && p == NULL)
    return false;
  for (size_t i = 0; i < len; i++)
    if (p[i] != test_pattern_byte(seed, i))
      return false;
  return true;
}

/* An 8-byte buffer carrying seq (native byte order), or NULL. */
static inline sl_buf *test_buf_seq(sl_pool *pool, uint64_t seq) {
  sl_buf *b = NULL;

  if (sl_buf_new(pool, sizeof seq, &b) != 0 || b == NULL)
    return NULL;
  memcpy(sl_buf_data(b), &seq, sizeof seq);
  if (sl_buf_set_len(b, sizeof seq) != 0) {
    sl_buf_unref(b);
    return NULL;
  }
  return b;
}

/* The sequence number of a test_buf_seq buffer; UINT64_MAX when buf does
 * not hold exactly 8 bytes. */
static inline uint64_t test_buf_get_seq(const sl_buf *buf) {
  uint64_t seq;

  if (buf == NULL || sl_buf_len(buf) != sizeof seq || sl_buf_data(buf) == NULL)
    return UINT64_MAX;
  memcpy(&seq, sl_buf_data(buf), sizeof seq);
  return seq;
}

/* ------------------------------------------------------------------------
 * An atomic counter (object destructors, events seen by another thread)
 * ---------------------------------------------------------------------- */

typedef struct test_counter {
  atomic_long n;
} test_counter;

static inline void test_counter_init(test_counter *c) {
  atomic_init(&c->n, 0);
}

static inline long test_counter_get(test_counter *c) {
  return atomic_load(&c->n);
}

/* Usable as an object buffer's destructor: the object is a test_counter. */
static inline void test_counter_dtor(void *obj) {
  atomic_fetch_add(&((test_counter *)obj)->n, 1);
}

/* ------------------------------------------------------------------------
 * Pseudo-random numbers: reproducible (a failing run fails again), no
 * global state, fine for sizes and interleavings, not for anything else.
 * ---------------------------------------------------------------------- */

/* The next number of the sequence whose state *state holds (any seed but
 * 0 works; 0 is replaced by a fixed constant). */
static inline uint64_t test_rand(uint64_t *state) {
  uint64_t x = *state != 0 ? *state : 0x9e3779b97f4a7c15u;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *state = x;
  return x * 0x2545f4914f6cdd1du;
}

/* ------------------------------------------------------------------------
 * Counting and failing allocator
 *
 * test_alloc_install() routes the library's allocations through the
 * wrappers below. Every malloc, calloc and realloc counts as one
 * allocation; fail_alloc_arm(n) restarts the count and makes only the nth
 * allocation from then on return NULL (0 disarms). The live count lets a
 * test prove that a failed call left nothing behind, and a fixture that
 * checks test_alloc_live() == 0 in its teardown proves every test frees all
 * it made. Counters are atomic: the library allocates from many threads.
 * ---------------------------------------------------------------------- */

/* Requests above this fail as a real allocator's would, without reaching
 * it: sanitizers abort on absurd sizes instead of returning NULL. */
#define TEST_ALLOC_MAX ((size_t)1 << 40)

static atomic_long test_alloc_calls_;   /* allocations since arming */
static atomic_long test_alloc_fail_at_; /* the one to fail, 0: none */
static atomic_long test_alloc_failed_;  /* failures injected */
static atomic_long test_alloc_live_;    /* blocks allocated, not freed */

static inline bool test_alloc_should_fail_(void) {
  long n = atomic_fetch_add(&test_alloc_calls_, 1) + 1;
  long at = atomic_load(&test_alloc_fail_at_);

  if (at > 0 && n == at) {
    atomic_fetch_add(&test_alloc_failed_, 1);
    return true;
  }
  return false;
}

static inline void *test_alloc_malloc_(size_t size) {
  void *p;

  if (test_alloc_should_fail_() || size > TEST_ALLOC_MAX)
    return NULL;
  p = malloc(size != 0 ? size : 1);
  if (p != NULL)
    atomic_fetch_add(&test_alloc_live_, 1);
  return p;
}

static inline void *test_alloc_calloc_(size_t count, size_t size) {
  void *p;

  if (test_alloc_should_fail_())
    return NULL;
  if (size != 0 && count > TEST_ALLOC_MAX / size)
    return NULL;
  p = (count == 0 || size == 0) ? calloc(1, 1) : calloc(count, size);
  if (p != NULL)
    atomic_fetch_add(&test_alloc_live_, 1);
  return p;
}

/* realloc(NULL, n) is an allocation; a failed realloc leaves ptr as it was,
 * as the C library's does; size 0 keeps a live block rather than freeing. */
static inline void *test_alloc_realloc_(void *ptr, size_t size) {
  void *p;

  if (test_alloc_should_fail_() || size > TEST_ALLOC_MAX)
    return NULL;
  p = realloc(ptr, size != 0 ? size : 1);
  if (p != NULL && ptr == NULL)
    atomic_fetch_add(&test_alloc_live_, 1);
  return p;
}

static inline void test_alloc_free_(void *ptr) {
  if (ptr == NULL)
    return;
  atomic_fetch_sub(&test_alloc_live_, 1);
  free(ptr);
}

/* Install the counting allocator, disarmed, with every counter at zero.
 * Call while no sluice object exists (a fixture's setup). Returns the
 * result of sl_set_allocator. */
static inline int test_alloc_install(void) {
  atomic_store(&test_alloc_calls_, 0);
  atomic_store(&test_alloc_fail_at_, 0);
  atomic_store(&test_alloc_failed_, 0);
  atomic_store(&test_alloc_live_, 0);
  return sl_set_allocator(test_alloc_malloc_, test_alloc_realloc_,
                          test_alloc_calloc_, test_alloc_free_);
}

/* Restore the C library's allocator. Call once every sluice object is
 * freed (a fixture's teardown). */
static inline int test_alloc_uninstall(void) {
  atomic_store(&test_alloc_fail_at_, 0);
  return sl_set_allocator(NULL, NULL, NULL, NULL);
}

/* Restart the allocation count and make only the nth allocation from now
 * on fail (n counts from 1; 0 disarms). */
static inline void fail_alloc_arm(long n) {
  atomic_store(&test_alloc_fail_at_, 0);
  atomic_store(&test_alloc_failed_, 0);
  atomic_store(&test_alloc_calls_, 0);
  atomic_store(&test_alloc_fail_at_, n);
}

static inline void fail_alloc_disarm(void) {
  atomic_store(&test_alloc_fail_at_, 0);
}

/* Allocations attempted since the last fail_alloc_arm (or install), the
 * failed one included. */
static inline long fail_alloc_count(void) {
  return atomic_load(&test_alloc_calls_);
}

/* How many allocations were made to fail since the last arming (0 or 1). */
static inline long fail_alloc_failed(void) {
  return atomic_load(&test_alloc_failed_);
}

/* Blocks allocated through the library and not yet freed. */
static inline long test_alloc_live(void) {
  return atomic_load(&test_alloc_live_);
}

#endif /* SLUICE_TESTUTIL_H */

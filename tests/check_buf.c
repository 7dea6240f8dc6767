/* SPDX-License-Identifier: MIT */
/*
 * sl_buf and sl_pool: chunks and the pool that recycles them.
 *
 * What these tests hold the two to, from the contract in sluice.h: a byte
 * buffer has room for at least what was asked (exactly that without a
 * pool, the size class's from one) and starts empty; an object buffer owns
 * its object and runs the destructor once, at the last unref; a pool
 * serves requests up to its buffer size from its cache, so a steady
 * take-and-release loop makes no allocation at all; bigger requests are
 * counted but never cached; each size class keeps at most max_cached free
 * buffers (0: all); a pool outlives its own sl_pool_free while buffers are
 * out; any thread may take from or release into a pool; bad arguments give
 * SL_EINVAL and a failed allocation SL_ENOMEM with nothing left behind.
 *
 * Every test runs under a fixture that routes the library's allocations
 * through a counting allocator and fails the test if a block is left
 * allocated at its end (so a pool that is never freed, or a buffer freed
 * twice or not at all, shows even without a sanitizer). No test sleeps.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "sluice.h"

#include "testutil.h"

#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT 60

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
 * Helpers
 * ---------------------------------------------------------------------- */

static sl_pool *pool_make(size_t buf_size, size_t max_cached) {
  sl_pool *p = NULL;

  ck_assert_int_eq(sl_pool_new(&p, buf_size, max_cached), 0);
  ck_assert_ptr_nonnull(p);
  return p;
}

static sl_pool_stats pool_stats(sl_pool *p) {
  sl_pool_stats st;

  memset(&st, 0xa5, sizeof st);
  ck_assert_int_eq(sl_pool_stats_get(p, &st), 0);
  return st;
}

static sl_buf *buf_make(sl_pool *p, size_t cap) {
  sl_buf *b = NULL;
  int rc = sl_buf_new(p, cap, &b);

  test_check_msg(rc == 0, "sl_buf_new(%zu): got %d", cap, rc);
  test_check(b != NULL);
  return b;
}

static sl_buf *object_make(sl_pool *p, test_counter *c) {
  sl_buf *b = NULL;

  test_check(sl_buf_new_object(p, c, test_counter_dtor, &b) == 0);
  test_check(b != NULL);
  return b;
}

/* Write every byte of b's room: a sanitizer catches a buffer smaller than
 * its cap, or one that was already released. */
static void scribble(sl_buf *b, unsigned char v) {
  if (sl_buf_cap(b) > 0)
    memset(sl_buf_data(b), v, sl_buf_cap(b));
}

/* ------------------------------------------------------------------------
 * Byte buffers
 * ---------------------------------------------------------------------- */

START_TEST(test_new_plain) {
  sl_buf *b = buf_make(NULL, 100);

  ck_assert_ptr_nonnull(sl_buf_data(b));
  ck_assert_uint_eq(sl_buf_len(b), 0);
  ck_assert_uint_eq(sl_buf_cap(b), 100); /* without a pool: exactly cap */
  ck_assert_uint_eq(sl_buf_refcount(b), 1);
  ck_assert_int_eq(sl_buf_is_object(b), 0);
  ck_assert_ptr_null(sl_buf_object(b));
  scribble(b, 0x5a);
  ck_assert_int_eq(sl_buf_set_len(b, 100), 0);
  ck_assert_uint_eq(sl_buf_len(b), 100);
  ck_assert_uint_eq(sl_buf_data(b)[99], 0x5a);
  sl_buf_unref(b);
}
END_TEST

START_TEST(test_new_cap_zero) {
  sl_pool *p = pool_make(64, 0);
  sl_buf *a = buf_make(NULL, 0);
  sl_buf *b = buf_make(p, 0);

  ck_assert_uint_eq(sl_buf_len(a), 0);
  ck_assert_uint_eq(sl_buf_len(b), 0);
  ck_assert_int_eq(sl_buf_is_object(a), 0);
  ck_assert_int_eq(sl_buf_is_object(b), 0);
  ck_assert_int_eq(sl_buf_set_len(a, 0), 0);
  ck_assert_int_eq(sl_buf_set_len(b, 0), 0);
  sl_buf_unref(a);
  sl_buf_unref(b);
  sl_pool_free(p);
}
END_TEST

/* A pooled request of any size up to buf_size gets at least its size and
 * len 0, and the pool counts it. */
START_TEST(test_new_from_pool) {
  static const size_t sizes[] = {0, 1, 2, 3, 255, 256};
  sl_pool *p = pool_make(256, 0);
  sl_buf *b[sizeof sizes / sizeof sizes[0]];
  sl_pool_stats st;
  size_t bytes = 0;

  ck_assert_uint_eq(pool_stats(p).buf_size, 256);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    b[i] = buf_make(p, sizes[i]);
    ck_assert_uint_ge(sl_buf_cap(b[i]), sizes[i]);
    ck_assert_uint_eq(sl_buf_len(b[i]), 0);
    ck_assert_uint_eq(sl_buf_refcount(b[i]), 1);
    scribble(b[i], (unsigned char)i);
    bytes += sl_buf_cap(b[i]);
  }
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, sizeof sizes / sizeof sizes[0]);
  ck_assert_uint_eq(st.bytes_outstanding, bytes);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    if (sl_buf_cap(b[i]) > 0)
      ck_assert_uint_eq(sl_buf_data(b[i])[0], (unsigned char)i);
    sl_buf_unref(b[i]);
  }
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 0);
  ck_assert_uint_eq(st.bytes_outstanding, 0);
  sl_pool_free(p);
}
END_TEST

/* Copies of the edge sizes, with and without a pool whose buffers hold 64
 * bytes: 0..3, one below, at and one above the block, two blocks. */
START_TEST(test_new_copy_edge_sizes) {
  static const size_t sizes[] = {0, 1, 2, 3, 63, 64, 65, 128};
  sl_pool *p = pool_make(64, 0);
  unsigned char src[128];

  for (size_t i = 0; i < sizeof src; i++)
    src[i] = test_pattern_byte(11, i);
  for (int pooled = 0; pooled < 2; pooled++) {
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      sl_buf *b = NULL;

      ck_assert_int_eq(sl_buf_new_copy(pooled ? p : NULL, src, sizes[i], &b),
                       0);
      ck_assert_ptr_nonnull(b);
      ck_assert_uint_eq(sl_buf_len(b), sizes[i]);
      ck_assert_uint_ge(sl_buf_cap(b), sizes[i]);
      ck_assert_int_eq(sl_buf_is_object(b), 0);
      ck_assert(test_buf_check_pattern(b, sizes[i], 11));
      sl_buf_unref(b);
    }
  }
  ck_assert_uint_eq(pool_stats(p).outstanding, 0);
  sl_pool_free(p);
}
END_TEST

START_TEST(test_new_copy_is_a_copy) {
  unsigned char src[16];
  sl_buf *b = NULL;

  memset(src, 'a', sizeof src);
  ck_assert_int_eq(sl_buf_new_copy(NULL, src, sizeof src, &b), 0);
  ck_assert_ptr_ne(sl_buf_data(b), src);
  memset(src, 'b', sizeof src);
  for (size_t i = 0; i < sizeof src; i++)
    ck_assert_uint_eq(sl_buf_data(b)[i], 'a');
  sl_buf_unref(b);
}
END_TEST

/* ------------------------------------------------------------------------
 * Object buffers and reference counts
 * ---------------------------------------------------------------------- */

START_TEST(test_object_accessors) {
  test_counter c;
  sl_buf *b;

  test_counter_init(&c);
  b = object_make(NULL, &c);
  ck_assert_int_eq(sl_buf_is_object(b), 1);
  ck_assert_ptr_eq(sl_buf_object(b), &c);
  ck_assert_ptr_null(sl_buf_data(b));
  ck_assert_uint_eq(sl_buf_len(b), 0);
  ck_assert_uint_eq(sl_buf_cap(b), 0);
  ck_assert_uint_eq(sl_buf_refcount(b), 1);
  ck_assert_int_eq(sl_buf_set_len(b, 0), SL_EINVAL);
  ck_assert_int_eq(sl_buf_set_len(b, 1), SL_EINVAL);
  ck_assert_int_eq(test_counter_get(&c), 0);
  sl_buf_unref(b);
  ck_assert_int_eq(test_counter_get(&c), 1);
}
END_TEST

/* Three extra references: the destructor waits for the fourth unref and
 * runs exactly once. */
START_TEST(test_object_dtor_runs_once_on_last_unref) {
  test_counter c;
  sl_buf *b;

  test_counter_init(&c);
  b = object_make(NULL, &c);
  for (unsigned i = 0; i < 3; i++) {
    ck_assert_ptr_eq(sl_buf_ref(b), b);
    ck_assert_uint_eq(sl_buf_refcount(b), i + 2);
  }
  for (unsigned i = 0; i < 3; i++) {
    sl_buf_unref(b);
    ck_assert_uint_eq(sl_buf_refcount(b), 3 - i);
    ck_assert_int_eq(test_counter_get(&c), 0);
  }
  sl_buf_unref(b);
  ck_assert_int_eq(test_counter_get(&c), 1);
}
END_TEST

START_TEST(test_object_dtor_null) {
  int obj = 42;
  sl_buf *b = NULL;

  ck_assert_int_eq(sl_buf_new_object(NULL, &obj, NULL, &b), 0);
  ck_assert_ptr_eq(sl_buf_object(b), &obj);
  sl_buf_unref(b);
  ck_assert_int_eq(obj, 42);
}
END_TEST

/* A wrapped buffer is the caller's bytes, not a copy: the same address,
 * writable in place; its destructor runs once, on the last release, and
 * the header goes back to the pool bare (no bytes counted, and an object
 * or byte buffer made from it afterwards sees none of the wrap). */
START_TEST(test_wrap_no_copy) {
  sl_pool *p = pool_make(64, 0);
  test_counter c;
  unsigned char bytes[100];
  sl_buf *b, *o;

  memset(bytes, 'x', sizeof bytes);
  test_counter_init(&c);
  ck_assert_int_eq(
      sl_buf_new_wrap(p, bytes, sizeof bytes, test_counter_dtor, &c, &b), 0);
  ck_assert_ptr_eq(sl_buf_data(b), bytes);
  ck_assert_uint_eq(sl_buf_len(b), sizeof bytes);
  ck_assert_uint_eq(sl_buf_cap(b), sizeof bytes);
  ck_assert_int_eq(sl_buf_is_object(b), 0);
  ck_assert_ptr_null(sl_buf_object(b));
  ck_assert_int_eq(sl_buf_is_flush(b), 0);
  ck_assert_uint_eq(pool_stats(p).bytes_outstanding, 0);
  sl_buf_data(b)[0] = 'y';
  ck_assert_int_eq(bytes[0], 'y');
  ck_assert_int_eq(sl_buf_set_len(b, 10), 0);
  ck_assert_int_eq(sl_buf_set_len(b, sizeof bytes + 1), SL_EINVAL);
  sl_buf_ref(b);
  sl_buf_unref(b);
  ck_assert_int_eq(test_counter_get(&c), 0);
  sl_buf_unref(b);
  ck_assert_int_eq(test_counter_get(&c), 1);
  ck_assert_uint_eq(pool_stats(p).outstanding, 0);
  ck_assert_uint_eq(pool_stats(p).bytes_outstanding, 0);

  /* The recycled header: an object buffer with no bytes, then a flush. */
  ck_assert_int_eq(sl_buf_new_object(p, &c, NULL, &o), 0);
  ck_assert_ptr_null(sl_buf_data(o));
  ck_assert_uint_eq(sl_buf_cap(o), 0);
  ck_assert_uint_eq(sl_buf_len(o), 0);
  sl_buf_unref(o);
  ck_assert_int_eq(sl_buf_new_flush(p, &o), 0);
  ck_assert_ptr_null(sl_buf_data(o));
  ck_assert_uint_eq(sl_buf_len(o), 0);
  sl_buf_unref(o);
  ck_assert_int_eq(test_counter_get(&c), 1);

  /* Without a pool, without a destructor, and empty. */
  ck_assert_int_eq(sl_buf_new_wrap(NULL, bytes, 3, NULL, NULL, &b), 0);
  ck_assert_ptr_eq(sl_buf_data(b), bytes);
  sl_buf_unref(b);
  ck_assert_int_eq(sl_buf_new_wrap(NULL, NULL, 0, NULL, NULL, &b), 0);
  ck_assert_uint_eq(sl_buf_len(b), 0);
  sl_buf_unref(b);
  ck_assert_int_eq(sl_buf_new_wrap(NULL, NULL, 1, NULL, NULL, &b), SL_EINVAL);
  ck_assert_ptr_null(b);
  ck_assert_int_eq(sl_buf_new_wrap(NULL, bytes, 1, NULL, NULL, NULL),
                   SL_EINVAL);
  sl_pool_free(p);
}
END_TEST

/* Object buffers from a pool are counted (no bytes) and their headers
 * recycled: the destructor still runs once per buffer. */
START_TEST(test_object_from_pool) {
  sl_pool *p = pool_make(64, 0);
  test_counter c;
  sl_buf *a, *b;
  sl_pool_stats st;

  test_counter_init(&c);
  a = object_make(p, &c);
  b = object_make(p, &c);
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 2);
  ck_assert_uint_eq(st.bytes_outstanding, 0);
  sl_buf_unref(a);
  ck_assert_int_eq(test_counter_get(&c), 1);
  a = object_make(p, &c);
  ck_assert_ptr_eq(sl_buf_object(a), &c);
  sl_buf_unref(a);
  sl_buf_unref(b);
  ck_assert_int_eq(test_counter_get(&c), 3);
  ck_assert_uint_eq(pool_stats(p).outstanding, 0);
  sl_pool_free(p);
}
END_TEST

START_TEST(test_ref_keeps_bytes_alive) {
  sl_buf *b = test_buf_pattern(NULL, 50, 3);
  sl_buf *r;

  ck_assert_ptr_nonnull(b);
  r = sl_buf_ref(b);
  ck_assert_ptr_eq(r, b);
  ck_assert_uint_eq(sl_buf_refcount(b), 2);
  sl_buf_unref(b);
  ck_assert_uint_eq(sl_buf_refcount(r), 1);
  ck_assert(test_buf_check_pattern(r, 50, 3));
  sl_buf_unref(r);
  sl_buf_unref(NULL);
}
END_TEST

/* A recycled buffer forgets its earlier life: a byte buffer taken after an
 * object buffer was released is a byte buffer with len 0, and the other way
 * round. */
START_TEST(test_recycled_header_is_clean) {
  sl_pool *p = pool_make(64, 0);
  test_counter c;
  sl_buf *b;

  test_counter_init(&c);
  for (int round = 0; round < 4; round++) {
    b = object_make(p, &c);
    sl_buf_unref(b);
    b = buf_make(p, 10);
    ck_assert_int_eq(sl_buf_is_object(b), 0);
    ck_assert_ptr_null(sl_buf_object(b));
    ck_assert_ptr_nonnull(sl_buf_data(b));
    ck_assert_uint_eq(sl_buf_len(b), 0);
    ck_assert_uint_eq(sl_buf_refcount(b), 1);
    scribble(b, 1);
    ck_assert_int_eq(sl_buf_set_len(b, 10), 0);
    sl_buf_unref(b);
    b = object_make(p, &c);
    ck_assert_ptr_null(sl_buf_data(b));
    ck_assert_uint_eq(sl_buf_len(b), 0);
    ck_assert_uint_eq(sl_buf_refcount(b), 1);
    sl_buf_unref(b);
  }
  ck_assert_int_eq(test_counter_get(&c), 8);
  sl_pool_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * The pool: reuse, bounds, counters, lifetime
 * ---------------------------------------------------------------------- */

/* Take eight, release eight, a thousand times, the same sizes each round
 * (from 1 byte to the whole buffer). After the first round the loop is
 * served from the cache: not one call reaches the allocator. */
START_TEST(test_pool_steady_state_allocates_nothing) {
  enum { INFLIGHT = 8, ROUNDS = 1000 };
  static const size_t want[INFLIGHT] = {1, 64, 65, 500, 1000, 2048, 4000, 4096};
  sl_pool *p = pool_make(4096, 0);
  sl_buf *b[INFLIGHT];
  sl_pool_stats st;
  uint64_t allocations;

  for (int i = 0; i < INFLIGHT; i++)
    b[i] = buf_make(p, want[i]);
  for (int i = 0; i < INFLIGHT; i++)
    sl_buf_unref(b[i]);
  st = pool_stats(p);
  allocations = st.allocations;
  ck_assert_uint_ge(allocations, INFLIGHT);
  ck_assert_uint_eq(st.reuses, 0);
  ck_assert_uint_eq(st.cached, INFLIGHT);

  fail_alloc_arm(0); /* restart the count, fail nothing */
  for (int round = 1; round < ROUNDS; round++) {
    for (int i = 0; i < INFLIGHT; i++) {
      b[i] = buf_make(p, want[i]);
      test_check(sl_buf_len(b[i]) == 0);
      test_check(sl_buf_cap(b[i]) >= want[i]);
      scribble(b[i], (unsigned char)round);
      test_check(sl_buf_set_len(b[i], want[i]) == 0);
    }
    for (int i = 0; i < INFLIGHT; i++)
      sl_buf_unref(b[i]);
  }
  ck_assert_int_eq(fail_alloc_count(), 0);
  st = pool_stats(p);
  ck_assert_uint_eq(st.allocations, allocations);
  ck_assert_uint_eq(st.reuses, (uint64_t)INFLIGHT * (ROUNDS - 1));
  ck_assert_uint_eq(st.outstanding, 0);
  ck_assert_uint_eq(st.cached, INFLIGHT);
  sl_pool_free(p);
}
END_TEST

/* A pooled request is rounded up to its power-of-two size class, from 64
 * bytes up, the last class being buf_size (here not a power of two), and a
 * buffer returned to a class serves the next request of that class. */
START_TEST(test_pool_size_classes) {
  static const struct {
    size_t want, cap;
  } cases[] = {{0, 64},    {1, 64},     {63, 64},    {64, 64},
               {65, 128},  {128, 128},  {129, 256},  {300, 512},
               {512, 512}, {513, 1000}, {999, 1000}, {1000, 1000}};
  sl_pool *p = pool_make(1000, 0);
  sl_pool_stats st;

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sl_buf *b = buf_make(p, cases[i].want);

    ck_assert_msg(sl_buf_cap(b) == cases[i].cap,
                  "request %zu: cap %zu, expected %zu", cases[i].want,
                  sl_buf_cap(b), cases[i].cap);
    scribble(b, 9);
    sl_buf_unref(b);
  }
  /* Each class got one buffer; the second of a class is a reuse. */
  st = pool_stats(p);
  ck_assert_uint_eq(st.cached, 5);
  fail_alloc_arm(0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    sl_buf_unref(buf_make(p, cases[i].want));
  ck_assert_int_eq(fail_alloc_count(), 0);
  ck_assert_uint_eq(pool_stats(p).reuses,
                    st.reuses + sizeof cases / sizeof cases[0]);
  sl_pool_free(p);
}
END_TEST

/* Object buffers and copies of every size up to buf_size, one of each at a
 * time: after one pass over the sizes, a second pass allocates nothing
 * (headers and bytes recycled). */
START_TEST(test_pool_steady_state_objects_and_copies) {
  sl_pool *p = pool_make(256, 0);
  test_counter c;
  unsigned char src[256];

  test_counter_init(&c);
  memset(src, 7, sizeof src);
  for (int pass = 0; pass < 2; pass++) {
    fail_alloc_arm(0);
    for (size_t len = 0; len <= sizeof src; len++) {
      sl_buf *o = object_make(p, &c);
      sl_buf *b = NULL;

      test_check(sl_buf_new_copy(p, src, len, &b) == 0);
      test_check(sl_buf_len(b) == len);
      sl_buf_unref(b);
      sl_buf_unref(o);
    }
    if (pass == 1)
      ck_assert_int_eq(fail_alloc_count(), 0);
  }
  ck_assert_int_eq(test_counter_get(&c), 2 * 257);
  sl_pool_free(p);
}
END_TEST

/* A request above buf_size works, is counted while out, and is never
 * cached: each one goes to the allocator. */
START_TEST(test_pool_big_requests_not_cached) {
  sl_pool *p = pool_make(1024, 0);
  sl_pool_stats st;
  uint64_t allocations = pool_stats(p).allocations;

  for (int round = 0; round < 10; round++) {
    sl_buf *b;

    fail_alloc_arm(0);
    b = buf_make(p, 1025 + (size_t)round * 1000);
    ck_assert_int_gt(fail_alloc_count(), 0);
    ck_assert_uint_ge(sl_buf_cap(b), 1025 + (size_t)round * 1000);
    ck_assert_uint_eq(sl_buf_len(b), 0);
    scribble(b, 0xee);
    ck_assert_int_eq(sl_buf_set_len(b, 1025), 0);
    st = pool_stats(p);
    ck_assert_uint_eq(st.outstanding, 1);
    ck_assert_uint_eq(st.bytes_outstanding, sl_buf_cap(b));
    ck_assert_uint_gt(st.allocations, allocations);
    allocations = st.allocations;
    sl_buf_unref(b);
    st = pool_stats(p);
    ck_assert_uint_eq(st.outstanding, 0);
    ck_assert_uint_eq(st.bytes_outstanding, 0);
    ck_assert_uint_eq(st.cached, 0);
  }
  ck_assert_uint_eq(pool_stats(p).reuses, 0);
  ck_assert_uint_ge(pool_stats(p).peak_bytes, 1025 + 9000);
  sl_pool_free(p);
}
END_TEST

/* max_cached bounds the free buffers each size class keeps; the rest are
 * freed on release. */
START_TEST(test_pool_cache_bounded_per_class) {
  sl_pool *p = pool_make(4096, 2);
  sl_buf *b[10];
  long live;

  for (int i = 0; i < 5; i++)
    b[i] = buf_make(p, 4096);
  live = test_alloc_live();
  for (int i = 0; i < 5; i++)
    sl_buf_unref(b[i]);
  ck_assert_uint_eq(pool_stats(p).cached, 2);
  ck_assert_int_lt(test_alloc_live(), live); /* the other three freed */

  for (int i = 0; i < 10; i++)
    b[i] = buf_make(p, i % 2 ? 4096 : 1);
  for (int i = 0; i < 10; i++)
    sl_buf_unref(b[i]);
  ck_assert_uint_eq(pool_stats(p).cached, 4); /* two classes, two each */
  sl_pool_free(p);
}
END_TEST

/* max_cached 0 keeps every buffer returned: the pool settles at the peak
 * working set and serves it again without allocating. */
START_TEST(test_pool_unbounded_cache_keeps_all) {
  enum { N = 300 };
  sl_pool *p = pool_make(16, 0);
  sl_buf *b[N];

  for (int i = 0; i < N; i++)
    b[i] = buf_make(p, 16);
  for (int i = 0; i < N; i++)
    sl_buf_unref(b[i]);
  ck_assert_uint_eq(pool_stats(p).cached, N);
  fail_alloc_arm(0);
  for (int i = 0; i < N; i++)
    b[i] = buf_make(p, 16);
  ck_assert_int_eq(fail_alloc_count(), 0);
  ck_assert_uint_eq(pool_stats(p).reuses, N);
  for (int i = 0; i < N; i++)
    sl_buf_unref(b[i]);
  sl_pool_free(p);
}
END_TEST

/* sl_pool_trim frees cached buffers, largest class first, down to the
 * floor it is given, and never an outstanding one: those still return to
 * the cache, and a take after the trim allocates again. */
START_TEST(test_pool_trim_to_floor) {
  sl_pool *p = pool_make(4096, 0);
  sl_buf *big[6], *small[4], *held, *obj;
  test_counter c;
  size_t freed = 1;
  long live;

  test_counter_init(&c);
  for (int i = 0; i < 6; i++)
    big[i] = buf_make(p, 4096);
  for (int i = 0; i < 4; i++)
    small[i] = buf_make(p, 64);
  held = buf_make(p, 4096);
  scribble(held, 0x5a);
  obj = object_make(p, &c);
  for (int i = 0; i < 6; i++)
    sl_buf_unref(big[i]);
  for (int i = 0; i < 4; i++)
    sl_buf_unref(small[i]);
  sl_buf_unref(obj);
  ck_assert_uint_eq(pool_stats(p).cached, 11); /* 6 + 4 + one header */

  /* A floor of two big buffers and a bit: four big ones go, the
   * smallest class and the header stay. */
  live = test_alloc_live();
  ck_assert_int_eq(sl_pool_trim(p, 2 * 4096 + 4 * 64 + 100, &freed), 0);
  ck_assert_uint_eq(freed, 4 * 4096);
  ck_assert_uint_eq(pool_stats(p).cached, 7);
  ck_assert_int_eq(test_alloc_live(), live - 4);

  /* Under the smallest: the rest of the big ones, then small ones. */
  ck_assert_int_eq(sl_pool_trim(p, 2 * 64, &freed), 0);
  ck_assert_uint_eq(freed, 2 * 4096 + 2 * 64);
  ck_assert_uint_eq(pool_stats(p).cached, 3); /* 2 small, the header */

  /* Nothing above the floor: nothing freed. */
  ck_assert_int_eq(sl_pool_trim(p, 1 << 20, &freed), 0);
  ck_assert_uint_eq(freed, 0);
  ck_assert_uint_eq(pool_stats(p).cached, 3);

  /* Floor 0: everything cached, headers too; held is untouched. */
  ck_assert_int_eq(sl_pool_trim(p, 0, NULL), 0);
  ck_assert_uint_eq(pool_stats(p).cached, 0);
  ck_assert_uint_eq(pool_stats(p).outstanding, 1);
  for (size_t i = 0; i < sl_buf_cap(held); i++)
    ck_assert_uint_eq(sl_buf_data(held)[i], 0x5a);
  sl_buf_unref(held); /* returns to the cache as usual */
  ck_assert_uint_eq(pool_stats(p).cached, 1);

  uint64_t allocs = pool_stats(p).allocations;
  ck_assert_int_eq(sl_pool_trim(p, 0, NULL), 0);
  held = buf_make(p, 4096); /* allocated again */
  ck_assert_uint_eq(pool_stats(p).allocations, allocs + 1);
  sl_buf_unref(held);

  ck_assert_int_eq(sl_pool_trim(NULL, 0, &freed), SL_EINVAL);
  ck_assert_uint_eq(freed, 0);
  ck_assert_int_eq(test_counter_get(&c), 1);
  sl_pool_free(p);
}
END_TEST

/* peak_outstanding and peak_bytes keep the high-water marks while the
 * current counters follow every take and release. */
START_TEST(test_pool_peak_counters) {
  sl_pool *p = pool_make(256, 0);
  sl_buf *b[5];
  sl_buf *big;
  size_t bytes = 0, peak_bytes;
  sl_pool_stats st;

  for (int i = 0; i < 5; i++) {
    b[i] = buf_make(p, 256);
    bytes += sl_buf_cap(b[i]);
  }
  peak_bytes = bytes;
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 5);
  ck_assert_uint_eq(st.peak_outstanding, 5);
  ck_assert_uint_eq(st.bytes_outstanding, bytes);
  ck_assert_uint_eq(st.peak_bytes, bytes);

  for (int i = 0; i < 3; i++) {
    bytes -= sl_buf_cap(b[i]);
    sl_buf_unref(b[i]);
  }
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 2);
  ck_assert_uint_eq(st.peak_outstanding, 5);
  ck_assert_uint_eq(st.bytes_outstanding, bytes);
  ck_assert_uint_eq(st.peak_bytes, peak_bytes);

  big = buf_make(p, 4000); /* bytes now above the old peak, count below */
  bytes += sl_buf_cap(big);
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 3);
  ck_assert_uint_eq(st.peak_outstanding, 5);
  ck_assert_uint_eq(st.bytes_outstanding, bytes);
  ck_assert_uint_eq(st.peak_bytes, bytes);
  peak_bytes = bytes;

  sl_buf_unref(big);
  sl_buf_unref(b[3]);
  sl_buf_unref(b[4]);
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 0);
  ck_assert_uint_eq(st.bytes_outstanding, 0);
  ck_assert_uint_eq(st.peak_outstanding, 5);
  ck_assert_uint_eq(st.peak_bytes, peak_bytes);
  sl_pool_free(p);
}
END_TEST

/* sl_pool_free with buffers out: they stay valid (the sanitizer run proves
 * no use after free), and the pool is freed when the last returns (the
 * fixture proves nothing is left). */
START_TEST(test_pool_free_with_outstanding) {
  sl_pool *p = pool_make(512, 0);
  test_counter c;
  sl_buf *small[3], *big, *obj, *spare;

  test_counter_init(&c);
  spare = buf_make(p, 512);
  sl_buf_unref(spare); /* one cached, too */
  for (int i = 0; i < 3; i++)
    small[i] = test_buf_pattern(p, 500, (uint32_t)i);
  big = test_buf_pattern(p, 5000, 9);
  ck_assert_ptr_nonnull(big);
  obj = object_make(p, &c);
  sl_pool_free(p);

  for (int i = 0; i < 3; i++) {
    ck_assert_ptr_nonnull(small[i]);
    ck_assert(test_buf_check_pattern(small[i], 500, (uint32_t)i));
    scribble(small[i], 0x11);
  }
  ck_assert(test_buf_check_pattern(big, 5000, 9));
  ck_assert_ptr_eq(sl_buf_ref(small[0]), small[0]);
  sl_buf_unref(small[0]);
  sl_buf_unref(small[0]);
  sl_buf_unref(big);
  ck_assert_int_eq(test_counter_get(&c), 0);
  sl_buf_unref(obj);
  ck_assert_int_eq(test_counter_get(&c), 1);
  ck_assert_int_gt(test_alloc_live(), 0);
  sl_buf_unref(small[1]);
  sl_buf_unref(small[2]);
  ck_assert_int_eq(test_alloc_live(), 0);
  sl_pool_free(NULL);
}
END_TEST

/* Each owner reference (sl_pool_new, sl_pool_ref) is released by one
 * sl_pool_free: the pool keeps its cache until the last, and buffers
 * outstanding then still keep it alive. */
START_TEST(test_pool_ref_shares_until_last_owner) {
  sl_pool *p = pool_make(512, 0);
  sl_buf *b, *kept;

  ck_assert_uint_eq(sl_pool_buf_size(p), 512);
  ck_assert_uint_eq(sl_pool_buf_size(NULL), 0);
  ck_assert_ptr_null(sl_pool_ref(NULL));
  ck_assert_ptr_eq(sl_pool_ref(p), p);
  b = buf_make(p, 512);
  sl_buf_unref(b);
  ck_assert_uint_eq(pool_stats(p).cached, 1);
  sl_pool_free(p); /* one owner left: nothing changes */
  ck_assert_uint_eq(pool_stats(p).cached, 1);
  b = buf_make(p, 512);
  ck_assert_uint_eq(pool_stats(p).reuses, 1);
  kept = buf_make(p, 100);
  sl_buf_unref(b);
  sl_pool_free(p); /* the last owner: the cache goes, kept keeps it */
  ck_assert_int_gt(test_alloc_live(), 0);
  sl_buf_unref(kept);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------- */

typedef struct handoff {
  sl_buf **bufs;
  int n;
  int bad; /* buffers that arrived damaged */
} handoff;

static void *release_all_main(void *arg) {
  handoff *h = arg;

  for (int i = 0; i < h->n; i++) {
    if (!test_buf_check_pattern(h->bufs[i], 100, (uint32_t)i))
      h->bad++;
    sl_buf_unref(h->bufs[i]);
  }
  return NULL;
}

/* Buffers taken on this thread and released on another go back to the
 * pool: the next takes are served from the cache. */
START_TEST(test_release_on_other_thread_returns_to_pool) {
  enum { N = 32 };
  sl_pool *p = pool_make(128, 0);
  sl_buf *b[N];
  handoff h = {b, N, 0};
  pthread_t t;
  sl_pool_stats st;

  for (int i = 0; i < N; i++) {
    b[i] = test_buf_pattern(p, 100, (uint32_t)i);
    ck_assert_ptr_nonnull(b[i]);
  }
  ck_assert_int_eq(pthread_create(&t, NULL, release_all_main, &h), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  ck_assert_int_eq(h.bad, 0);
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 0);
  ck_assert_uint_eq(st.cached, N);

  fail_alloc_arm(0);
  for (int i = 0; i < N; i++)
    b[i] = buf_make(p, 128);
  ck_assert_int_eq(fail_alloc_count(), 0);
  ck_assert_uint_eq(pool_stats(p).reuses, N);
  for (int i = 0; i < N; i++)
    sl_buf_unref(b[i]);
  sl_pool_free(p);
}
END_TEST

/* One thread takes batches while another releases the previous batch, at
 * the same time, round after round. Each buffer carries its round and
 * index, checked by the releasing thread. At most two batches are out at
 * once and the cache holds 64, so at most 64 buffers are ever created:
 * every other request is a reuse. */
enum { XT_BATCH = 32 };

typedef struct cross {
  sl_pool *pool;
  long rounds;
  sl_buf *slot[2][XT_BATCH];
  pthread_barrier_t barrier;
  int take_fail;
  long bad;
} cross;

static void *cross_taker(void *arg) {
  cross *x = arg;

  for (long r = 0; r < x->rounds; r++) {
    for (int i = 0; i < XT_BATCH; i++) {
      sl_buf *b = test_buf_pattern(x->pool, 64, (uint32_t)(r * XT_BATCH + i));

      if (b == NULL)
        x->take_fail++;
      x->slot[r % 2][i] = b;
    }
    pthread_barrier_wait(&x->barrier);
  }
  return NULL;
}

static void *cross_releaser(void *arg) {
  cross *x = arg;

  for (long r = 0; r < x->rounds; r++) {
    pthread_barrier_wait(&x->barrier);
    /* Round r is complete; the taker now fills the other slot. */
    for (int i = 0; i < XT_BATCH; i++) {
      sl_buf *b = x->slot[r % 2][i];

      if (b == NULL)
        continue;
      if (!test_buf_check_pattern(b, 64, (uint32_t)(r * XT_BATCH + i)))
        x->bad++;
      sl_buf_unref(b);
    }
  }
  return NULL;
}

START_TEST(test_take_and_release_concurrently) {
  cross x;
  pthread_t taker, releaser;
  sl_pool_stats st;
  uint64_t requests;

  memset(&x, 0, sizeof x);
  x.pool = pool_make(64, 64);
  x.rounds = test_iterations("SL_TEST_ROUNDS", 20000);
  ck_assert_int_eq(pthread_barrier_init(&x.barrier, NULL, 2), 0);
  ck_assert_int_eq(pthread_create(&taker, NULL, cross_taker, &x), 0);
  ck_assert_int_eq(pthread_create(&releaser, NULL, cross_releaser, &x), 0);
  ck_assert_int_eq(pthread_join(taker, NULL), 0);
  ck_assert_int_eq(pthread_join(releaser, NULL), 0);
  pthread_barrier_destroy(&x.barrier);

  ck_assert_int_eq(x.take_fail, 0);
  ck_assert_int_eq(x.bad, 0);
  requests = (uint64_t)x.rounds * XT_BATCH;
  st = pool_stats(x.pool);
  ck_assert_uint_eq(st.outstanding, 0);
  ck_assert_uint_eq(st.bytes_outstanding, 0);
  ck_assert_uint_le(st.peak_outstanding, 2 * XT_BATCH);
  ck_assert_uint_le(st.cached, 64);
  ck_assert_uint_ge(st.reuses + 2 * XT_BATCH, requests);
  ck_assert_uint_le(st.reuses, requests);
  sl_pool_free(x.pool);
}
END_TEST

/* ------------------------------------------------------------------------
 * Bad input
 * ---------------------------------------------------------------------- */

START_TEST(test_pool_new_rejects_bad_args) {
  sl_pool *p = NULL;

  ck_assert_int_eq(sl_pool_new(NULL, 64, 0), SL_EINVAL);
  ck_assert_int_eq(sl_pool_new(&p, 0, 0), SL_EINVAL);
  ck_assert_int_eq(sl_pool_new(&p, ((size_t)1 << 30) + 1, 0), SL_EINVAL);
  ck_assert_int_eq(sl_pool_new(&p, SIZE_MAX, 0), SL_EINVAL);
  ck_assert_int_eq(test_alloc_live(), 0);

  /* 1 GiB itself is allowed; nothing is taken from it. */
  ck_assert_int_eq(sl_pool_new(&p, (size_t)1 << 30, 1), 0);
  ck_assert_uint_eq(pool_stats(p).buf_size, (size_t)1 << 30);
  sl_pool_free(p);
}
END_TEST

START_TEST(test_buf_calls_reject_bad_args) {
  sl_pool *p = pool_make(64, 0);
  sl_pool_stats st;
  sl_buf *b = NULL;
  unsigned char src[4] = {1, 2, 3, 4};
  int obj;
  long live = test_alloc_live();

  ck_assert_int_eq(sl_buf_new(NULL, 10, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_buf_new(p, 10, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_buf_new_copy(NULL, src, 4, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_buf_new_copy(p, NULL, 4, &b), SL_EINVAL);
  ck_assert_int_eq(sl_buf_new_copy(NULL, NULL, 4, &b), SL_EINVAL);
  ck_assert_int_eq(sl_buf_new_object(NULL, &obj, NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_buf_new_object(p, &obj, NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_pool_stats_get(NULL, &st), SL_EINVAL);
  ck_assert_int_eq(sl_pool_stats_get(p, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_buf_set_len(NULL, 0), SL_EINVAL);
  sl_buf_unref(NULL);

  ck_assert_int_eq(test_alloc_live(), live);
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 0);
  ck_assert_uint_eq(st.cached, 0);
  sl_pool_free(p);
}
END_TEST

/* set_len accepts 0..cap and nothing above; a refused length changes
 * nothing. */
START_TEST(test_set_len_bounds) {
  sl_buf *b = buf_make(NULL, 10);
  size_t cap = sl_buf_cap(b);

  ck_assert_int_eq(sl_buf_set_len(b, cap), 0);
  ck_assert_uint_eq(sl_buf_len(b), cap);
  ck_assert_int_eq(sl_buf_set_len(b, cap + 1), SL_EINVAL);
  ck_assert_uint_eq(sl_buf_len(b), cap);
  ck_assert_int_eq(sl_buf_set_len(b, SIZE_MAX), SL_EINVAL);
  ck_assert_uint_eq(sl_buf_len(b), cap);
  ck_assert_int_eq(sl_buf_set_len(b, 0), 0);
  ck_assert_uint_eq(sl_buf_len(b), 0);
  ck_assert_int_eq(sl_buf_set_len(b, 1), 0);
  ck_assert_uint_eq(sl_buf_len(b), 1);
  sl_buf_unref(b);
}
END_TEST

/* A request no allocator can meet fails cleanly (no overflow in the size
 * arithmetic, nothing left allocated, the pool's counters unchanged). */
START_TEST(test_huge_request_fails_cleanly) {
  static const size_t caps[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX / 2 + 1};
  sl_pool *p = pool_make(64, 0);

  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
    for (int pooled = 0; pooled < 2; pooled++) {
      sl_buf *b = NULL;
      int rc = sl_buf_new(pooled ? p : NULL, caps[i], &b);

      ck_assert_msg(rc == SL_ENOMEM || rc == SL_EINVAL,
                    "cap %zu: got %d, buffer %p", caps[i], rc, (void *)b);
    }
  }
  ck_assert_uint_eq(pool_stats(p).outstanding, 0);
  ck_assert_uint_eq(pool_stats(p).bytes_outstanding, 0);
  sl_pool_free(p);
  ck_assert_int_eq(test_alloc_live(), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * Allocation failure
 *
 * Each test fails the 1st, 2nd, ... allocation of one call until a run in
 * which no allocation failed succeeds: every failure must give SL_ENOMEM
 * and leave nothing behind. Without a pool that means the allocator's live
 * count is where it was; a pool may keep what it got before the failure
 * for later (a header, say), so there the pool's counters must show nothing
 * handed out, and the fixture proves sl_pool_free releases the rest.
 * ---------------------------------------------------------------------- */

typedef int (*enomem_try)(void *ctx, bool *made);

/* Runs try with the nth allocation failing for n = 1, 2, ... . try makes
 * the object, checks and releases it when it succeeded, and returns the
 * call's result. */
static void enomem_sweep(const char *what, enomem_try try, void *ctx,
                         sl_pool *pool) {
  long live = test_alloc_live();
  long failures = 0;
  bool done = false;

  for (long nth = 1; nth <= 1000 && !done; nth++) {
    bool made = false;
    long failed;
    int rc;

    fail_alloc_arm(nth);
    rc = try(ctx, &made);
    failed = fail_alloc_failed();
    fail_alloc_disarm();
    if (rc == 0) {
      ck_assert(made);
      done = failed == 0;
    } else {
      ck_assert_msg(rc == SL_ENOMEM, "%s, allocation %ld failed: got %d", what,
                    nth, rc);
      ck_assert_int_eq(failed, 1);
      failures++;
    }
    if (pool == NULL) {
      ck_assert_msg(test_alloc_live() == live,
                    "%s, allocation %ld failed: %ld block(s) leaked", what, nth,
                    test_alloc_live() - live);
    } else {
      sl_pool_stats st = pool_stats(pool);

      ck_assert_msg(st.outstanding == 0 && st.bytes_outstanding == 0,
                    "%s, allocation %ld failed: %zu buffer(s), %zu byte(s) "
                    "outstanding",
                    what, nth, st.outstanding, st.bytes_outstanding);
    }
  }
  ck_assert_msg(done, "%s never succeeded", what);
  ck_assert_msg(failures >= 1, "%s made no allocation", what);
}

static int try_pool_new(void *ctx, bool *made) {
  sl_pool *p = NULL;
  int rc = sl_pool_new(&p, *(size_t *)ctx, 0);

  if (rc == 0) {
    sl_buf *b = NULL;

    *made = p != NULL;
    /* The pool works, whatever it survived. */
    if (sl_buf_new(p, 8, &b) == 0)
      sl_buf_unref(b);
    sl_pool_free(p);
  }
  return rc;
}

START_TEST(test_pool_new_enomem) {
  size_t size = 4096;

  enomem_sweep("sl_pool_new", try_pool_new, &size, NULL);
}
END_TEST

typedef struct buf_try {
  sl_pool *pool;
  size_t cap;
} buf_try;

static int try_buf_new(void *ctx, bool *made) {
  buf_try *t = ctx;
  sl_buf *b = NULL;
  int rc = sl_buf_new(t->pool, t->cap, &b);

  if (rc == 0) {
    *made = b != NULL && sl_buf_cap(b) >= t->cap;
    if (*made)
      scribble(b, 3);
    sl_buf_unref(b);
  }
  return rc;
}

START_TEST(test_buf_new_enomem_plain) {
  buf_try t = {NULL, 100};

  enomem_sweep("sl_buf_new without pool", try_buf_new, &t, NULL);
}
END_TEST

/* From a pool whose cache is empty: the sweep ends at the first success
 * (the buffer it releases is cached, so later takes need no allocation). */
START_TEST(test_buf_new_enomem_pooled) {
  buf_try t = {NULL, 100};
  sl_pool *p = pool_make(128, 0);
  sl_pool_stats st;

  t.pool = p;
  enomem_sweep("sl_buf_new from an empty pool", try_buf_new, &t, p);
  st = pool_stats(p);
  ck_assert_uint_eq(st.outstanding, 0);
  ck_assert_uint_eq(st.bytes_outstanding, 0);
  sl_pool_free(p);
}
END_TEST

START_TEST(test_buf_new_enomem_big) {
  buf_try t = {NULL, 100000};
  sl_pool *p = pool_make(128, 0);

  t.pool = p;
  enomem_sweep("sl_buf_new above the pool's size", try_buf_new, &t, p);
  ck_assert_uint_eq(pool_stats(p).outstanding, 0);
  ck_assert_uint_eq(pool_stats(p).bytes_outstanding, 0);
  sl_pool_free(p);
}
END_TEST

static int try_new_copy(void *ctx, bool *made) {
  static const char text[] = "the quick brown fox";
  sl_buf *b = NULL;
  int rc = sl_buf_new_copy(ctx, text, sizeof text, &b);

  if (rc == 0) {
    *made = b != NULL && sl_buf_len(b) == sizeof text &&
            memcmp(sl_buf_data(b), text, sizeof text) == 0;
    sl_buf_unref(b);
  }
  return rc;
}

START_TEST(test_new_copy_enomem) {
  enomem_sweep("sl_buf_new_copy", try_new_copy, NULL, NULL);
}
END_TEST

/* On failure the object stays the caller's: its destructor does not run. */
typedef struct object_try {
  sl_pool *pool;
  test_counter dtor;
} object_try;

static int try_new_object(void *ctx, bool *made) {
  object_try *t = ctx;
  sl_buf *b = NULL;
  long before = test_counter_get(&t->dtor);
  int rc = sl_buf_new_object(t->pool, &t->dtor, test_counter_dtor, &b);

  if (rc != 0)
    return test_counter_get(&t->dtor) == before ? rc : SL_EIO;
  *made = b != NULL && sl_buf_object(b) == &t->dtor;
  sl_buf_unref(b);
  if (test_counter_get(&t->dtor) != before + 1)
    *made = false;
  return rc;
}

START_TEST(test_new_object_enomem) {
  object_try t;

  t.pool = NULL;
  test_counter_init(&t.dtor);
  enomem_sweep("sl_buf_new_object", try_new_object, &t, NULL);
  t.pool = pool_make(64, 0);
  enomem_sweep("sl_buf_new_object from a pool", try_new_object, &t, t.pool);
  sl_pool_free(t.pool);
}
END_TEST

/* ------------------------------------------------------------------------
 * Suite
 * ---------------------------------------------------------------------- */

static TCase *tcase(Suite *s, const char *name) {
  TCase *tc = tcase_create(name);

  tcase_add_checked_fixture(tc, alloc_setup, alloc_teardown);
  tcase_set_timeout(tc, TIMEOUT);
  suite_add_tcase(s, tc);
  return tc;
}

static Suite *buf_suite(void) {
  Suite *s = suite_create("buf");
  TCase *tc;

  tc = tcase(s, "bytes");
  tcase_add_test(tc, test_new_plain);
  tcase_add_test(tc, test_new_cap_zero);
  tcase_add_test(tc, test_new_from_pool);
  tcase_add_test(tc, test_new_copy_edge_sizes);
  tcase_add_test(tc, test_new_copy_is_a_copy);
  tcase_add_test(tc, test_set_len_bounds);

  tc = tcase(s, "objects");
  tcase_add_test(tc, test_object_accessors);
  tcase_add_test(tc, test_object_dtor_runs_once_on_last_unref);
  tcase_add_test(tc, test_object_dtor_null);
  tcase_add_test(tc, test_object_from_pool);
  tcase_add_test(tc, test_wrap_no_copy);
  tcase_add_test(tc, test_ref_keeps_bytes_alive);
  tcase_add_test(tc, test_recycled_header_is_clean);

  tc = tcase(s, "pool");
  tcase_add_test(tc, test_pool_steady_state_allocates_nothing);
  tcase_add_test(tc, test_pool_size_classes);
  tcase_add_test(tc, test_pool_steady_state_objects_and_copies);
  tcase_add_test(tc, test_pool_big_requests_not_cached);
  tcase_add_test(tc, test_pool_cache_bounded_per_class);
  tcase_add_test(tc, test_pool_unbounded_cache_keeps_all);
  tcase_add_test(tc, test_pool_trim_to_floor);
  tcase_add_test(tc, test_pool_peak_counters);
  tcase_add_test(tc, test_pool_free_with_outstanding);
  tcase_add_test(tc, test_pool_ref_shares_until_last_owner);

  tc = tcase(s, "threads");
  tcase_add_test(tc, test_release_on_other_thread_returns_to_pool);
  tcase_add_test(tc, test_take_and_release_concurrently);

  tc = tcase(s, "bad_input");
  tcase_add_test(tc, test_pool_new_rejects_bad_args);
  tcase_add_test(tc, test_buf_calls_reject_bad_args);
  tcase_add_test(tc, test_huge_request_fails_cleanly);

  tc = tcase(s, "enomem");
  tcase_add_test(tc, test_pool_new_enomem);
  tcase_add_test(tc, test_buf_new_enomem_plain);
  tcase_add_test(tc, test_buf_new_enomem_pooled);
  tcase_add_test(tc, test_buf_new_enomem_big);
  tcase_add_test(tc, test_new_copy_enomem);
  tcase_add_test(tc, test_new_object_enomem);

  return s;
}

int main(void) {
  return run_suite(buf_suite());
}

/*
 * Internal declarations shared by the library's files and its tests. Not
 * installed. Internal non-static names start with sl__.
 */
#ifndef SLUICE_INT_H
#define SLUICE_INT_H

#include "sluice.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define SL_CACHELINE 64

/* buf.c: the chunk, visible inside the library so the ring reads a length
 * without a call. */
enum { BUF_OBJECT = 1u, BUF_CACHEABLE = 2u, BUF_FLUSH = 4u, BUF_CLASS_SHIFT = 8 };

struct sl_buf {
  atomic_uint refs;
  unsigned flags;
  sl_pool *pool; /* NULL for a plain allocation */
  size_t len, cap;
  unsigned char *data;
  void *obj;
  void (*dtor)(void *);
  sl_buf *next; /* free-list link while cached */
};

/* alloc.c: every allocation goes through these (sl_set_allocator). */
void *sl__malloc(size_t size);
void *sl__calloc(size_t count, size_t size);
void *sl__realloc(void *ptr, size_t size);
void sl__free(void *ptr);
char *sl__strdup(const char *s);
/* Zeroed, aligned to SL_CACHELINE (for structs with padded counters). */
void *sl__aligned_calloc(size_t size);
void sl__aligned_free(void *ptr);

/* clock.c: CLOCK_MONOTONIC in nanoseconds. */
uint64_t sl__now_ns(void);

/* ring.c: for tests and the stall report. Block until the writer
 * (SL__WRITER) or reader (SL__READER) of ring is waiting inside the ring.
 * Returns 0; the ring's abort code once it is aborted; SL_ECLOSED once it
 * is closed and the side can no longer block. */
enum { SL__WRITER = 0, SL__READER = 1 };
int sl__ring_wait_blocked(sl_ring *ring, int side);

#endif

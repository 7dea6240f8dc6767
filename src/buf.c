/* SPDX-License-Identifier: MIT */
/*
 * Chunks and the pool that recycles them.
 *
 * A byte buffer is one allocation: the header, then cap bytes of data. A
 * pool keeps two free lists, full-size byte buffers and bare headers for
 * object buffers, so a pipeline in its steady state takes every chunk from
 * a list and gives it back: no allocation per chunk.
 *
 * Threads: any thread takes from a pool and any thread releases into it
 * (the sink releases what the source took). The lists and counters sit
 * under the pool's mutex; the critical sections are a few pointer moves.
 * The reference count is atomic and needs no lock: the release on the
 * decrement publishes the buffer's contents to whoever frees it, the
 * acquire on the last decrement sees them.
 *
 * A wrapped buffer (sl_buf_new_wrap) is a bare header, taken from the
 * object list, whose data points at the caller's bytes: the way a source
 * hands on memory it was given (a message a client library received)
 * without copying it. Its release runs the caller's destructor and
 * returns the header as bare as it came, so the pool's byte counts see
 * only memory the pool owns.
 *
 * Lifetime: sl_pool_new and sl_pool_ref give owner references (several
 * pipelines may share a pool) and sl_pool_free drops one; when the last
 * owner is gone the free lists are released, outstanding buffers keep the
 * pool alive, and the last one to return frees it.
 *
 * Trimming: a pool keeps what it is given back, so a long-lived shared
 * pool settles at the most its users ever held at once. sl_pool_trim,
 * called by its owner after a quiet period (the pool has no thread or
 * clock of its own), frees cached buffers, the largest classes first,
 * down to a floor the caller names; outstanding buffers are not touched.
 */
#include "sluice-int.h"

#include <stdlib.h>
#include <string.h>

/* Size classes: powers of two from 64 bytes up to the pool's buffer size,
 * which is the last class; one more list holds bare headers for object
 * buffers. A small chunk takes a small buffer, so memory follows the bytes
 * really queued, not the count of chunks times the largest size. */
#define CLASS_MIN ((size_t)64)
#define CLASS_MAX 27 /* 64 B << 24 = 1 GiB, plus the header list */

struct free_list {
  sl_buf *head;
  size_t n;
};

struct sl_pool {
  pthread_mutex_t mu;
  size_t buf_size, max_cached;
  int nclasses; /* byte classes; lists[nclasses] holds object headers */
  struct free_list lists[CLASS_MAX + 1];
  size_t outstanding, peak_outstanding;
  size_t bytes_outstanding, peak_bytes, cached;
  uint64_t allocations, reuses;
  size_t owners; /* references by sl_pool_new and sl_pool_ref */
  bool dead;     /* no owner left: free what returns */
};

#define POOL_MAX_BUF ((size_t)1 << 30)

static size_t class_size(const sl_pool *pool, int k) {
  size_t size = CLASS_MIN << k;
  return k == pool->nclasses - 1 || size > pool->buf_size ? pool->buf_size
                                                          : size;
}

/* The class serving cap bytes, or -1 when cap is above the buffer size. */
static int class_of(const sl_pool *pool, size_t cap) {
  if (cap > pool->buf_size)
    return -1;
  int k = 0;
  while (k < pool->nclasses - 1 && (CLASS_MIN << k) < cap)
    k++;
  return k;
}

int sl_pool_new(sl_pool **out, size_t buf_size, size_t max_cached) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (buf_size == 0 || buf_size > POOL_MAX_BUF)
    return SL_EINVAL;
  sl_pool *pool = sl__calloc(1, sizeof *pool);
  if (!pool)
    return SL_ENOMEM;
  if (pthread_mutex_init(&pool->mu, NULL) != 0) {
    sl__free(pool);
    return SL_ENOMEM;
  }
  pool->buf_size = buf_size;
  pool->max_cached = max_cached ? max_cached : SIZE_MAX;
  pool->owners = 1;
  pool->nclasses = 1;
  while ((CLASS_MIN << (pool->nclasses - 1)) < buf_size)
    pool->nclasses++;
  *out = pool;
  return 0;
}

static void free_chain(sl_buf *b) {
  while (b) {
    sl_buf *next = b->next;
    sl__free(b);
    b = next;
  }
}

static void pool_destroy(sl_pool *pool) {
  for (int k = 0; k <= pool->nclasses; k++)
    free_chain(pool->lists[k].head);
  pthread_mutex_destroy(&pool->mu);
  sl__free(pool);
}

sl_pool *sl_pool_ref(sl_pool *pool) {
  if (pool) {
    pthread_mutex_lock(&pool->mu);
    pool->owners++;
    pthread_mutex_unlock(&pool->mu);
  }
  return pool;
}

size_t sl_pool_buf_size(const sl_pool *pool) {
  return pool ? pool->buf_size : 0; /* read-only after creation */
}

void sl_pool_free(sl_pool *pool) {
  if (!pool)
    return;
  pthread_mutex_lock(&pool->mu);
  if (--pool->owners > 0) {
    pthread_mutex_unlock(&pool->mu);
    return;
  }
  pool->dead = true;
  sl_buf *chains[CLASS_MAX + 1];
  for (int k = 0; k <= pool->nclasses; k++) {
    chains[k] = pool->lists[k].head;
    pool->lists[k] = (struct free_list){0};
  }
  pool->cached = 0;
  bool last = pool->outstanding == 0;
  pthread_mutex_unlock(&pool->mu);
  for (int k = 0; k <= pool->nclasses; k++)
    free_chain(chains[k]);
  if (last)
    pool_destroy(pool);
}

/* The capacity bytes a free list holds (object headers count none). */
static size_t list_bytes(const sl_pool *pool, int k) {
  return k == pool->nclasses ? 0 : pool->lists[k].n * class_size(pool, k);
}

int sl_pool_trim(sl_pool *pool, size_t keep_bytes, size_t *freed_bytes) {
  if (freed_bytes)
    *freed_bytes = 0;
  if (!pool)
    return SL_EINVAL;
  sl_buf *chain = NULL;
  size_t cached = 0, freed = 0;

  pthread_mutex_lock(&pool->mu);
  for (int k = 0; k < pool->nclasses; k++)
    cached += list_bytes(pool, k);
  /* Largest classes first: fewest blocks for the most bytes. Detach under
   * the lock, free after it. */
  for (int k = pool->nclasses - 1; k >= 0 && cached > keep_bytes; k--) {
    size_t size = class_size(pool, k);
    struct free_list *l = &pool->lists[k];
    while (l->head && cached > keep_bytes) {
      sl_buf *b = l->head;
      l->head = b->next;
      l->n--;
      pool->cached--;
      b->next = chain;
      chain = b;
      cached -= size;
      freed += size;
    }
  }
  /* With no floor the bare headers go too. */
  if (keep_bytes == 0 && pool->lists[pool->nclasses].head) {
    struct free_list *l = &pool->lists[pool->nclasses];
    sl_buf *last = l->head;
    while (last->next)
      last = last->next;
    last->next = chain;
    chain = l->head;
    pool->cached -= l->n;
    *l = (struct free_list){0};
  }
  pthread_mutex_unlock(&pool->mu);
  free_chain(chain);
  if (freed_bytes)
    *freed_bytes = freed;
  return 0;
}

int sl_pool_stats_get(sl_pool *pool, sl_pool_stats *st) {
  if (!pool || !st)
    return SL_EINVAL;
  pthread_mutex_lock(&pool->mu);
  st->buf_size = pool->buf_size;
  st->outstanding = pool->outstanding;
  st->peak_outstanding = pool->peak_outstanding;
  st->bytes_outstanding = pool->bytes_outstanding;
  st->peak_bytes = pool->peak_bytes;
  st->cached = pool->cached;
  st->allocations = pool->allocations;
  st->reuses = pool->reuses;
  pthread_mutex_unlock(&pool->mu);
  return 0;
}

static sl_buf *buf_alloc(size_t cap) {
  if (cap > SIZE_MAX - sizeof(sl_buf))
    return NULL;
  sl_buf *b = sl__malloc(sizeof(sl_buf) + cap);
  if (b) {
    b->data = cap ? (unsigned char *)(b + 1) : NULL;
    b->cap = cap;
  }
  return b;
}

/* Take a buffer of capacity cap (object: a bare header) from pool. */
static sl_buf *pool_take(sl_pool *pool, size_t cap, bool object) {
  sl_buf *b = NULL;
  int k = object ? pool->nclasses : class_of(pool, cap);
  size_t real_cap = object ? 0 : k < 0 ? cap : class_size(pool, k);

  pthread_mutex_lock(&pool->mu);
  if (k >= 0 && pool->lists[k].head) {
    b = pool->lists[k].head;
    pool->lists[k].head = b->next;
    pool->lists[k].n--;
    pool->cached--;
    pool->reuses++;
  }
  /* Count before allocating so the peak covers the allocation too; undone
   * below if the allocation fails. */
  pool->outstanding++;
  pool->bytes_outstanding += real_cap;
  if (pool->outstanding > pool->peak_outstanding)
    pool->peak_outstanding = pool->outstanding;
  if (pool->bytes_outstanding > pool->peak_bytes)
    pool->peak_bytes = pool->bytes_outstanding;
  if (!b)
    pool->allocations++;
  pthread_mutex_unlock(&pool->mu);

  if (!b) {
    b = buf_alloc(real_cap);
    if (!b) {
      pthread_mutex_lock(&pool->mu);
      pool->outstanding--;
      pool->bytes_outstanding -= real_cap;
      pool->allocations--;
      pthread_mutex_unlock(&pool->mu);
      return NULL;
    }
  }
  b->flags = k >= 0 ? BUF_CACHEABLE | ((unsigned)k << BUF_CLASS_SHIFT) : 0;
  b->pool = pool;
  return b;
}

static void pool_give(sl_pool *pool, sl_buf *b) {
  bool destroy;
  int k = (int)(b->flags >> BUF_CLASS_SHIFT);

  pthread_mutex_lock(&pool->mu);
  pool->outstanding--;
  pool->bytes_outstanding -= b->cap;
  if (!pool->dead && (b->flags & BUF_CACHEABLE) &&
      pool->lists[k].n < pool->max_cached) {
    b->next = pool->lists[k].head;
    pool->lists[k].head = b;
    pool->lists[k].n++;
    pool->cached++;
    b = NULL;
  }
  destroy = pool->dead && pool->outstanding == 0;
  pthread_mutex_unlock(&pool->mu);
  sl__free(b);
  if (destroy)
    pool_destroy(pool);
}

static void buf_init(sl_buf *b, bool object) {
  atomic_init(&b->refs, 1);
  b->flags &= ~(unsigned)(BUF_OBJECT | BUF_FLUSH | BUF_CHECKPOINT | BUF_WRAP);
  atomic_init(&b->dropped, 0);
  if (object)
    b->flags |= BUF_OBJECT;
  b->len = 0;
  b->obj = NULL;
  b->dtor = NULL;
  b->next = NULL;
}

int sl_buf_new(sl_pool *pool, size_t cap, sl_buf **out) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  sl_buf *b;
  if (pool) {
    b = pool_take(pool, cap, false);
  } else {
    b = buf_alloc(cap);
    if (b) {
      b->flags = 0;
      b->pool = NULL;
    }
  }
  if (!b)
    return SL_ENOMEM;
  buf_init(b, false);
  *out = b;
  return 0;
}

int sl_buf_new_copy(sl_pool *pool, const void *data, size_t len, sl_buf **out) {
  if (!out || (!data && len))
    return SL_EINVAL;
  int rc = sl_buf_new(pool, len, out);
  if (rc == 0 && len) {
    memcpy((*out)->data, data, len);
    (*out)->len = len;
  }
  return rc;
}

int sl_buf_new_object(sl_pool *pool, void *obj, void (*dtor)(void *),
                      sl_buf **out) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  sl_buf *b;
  if (pool) {
    b = pool_take(pool, 0, true);
  } else {
    b = buf_alloc(0);
    if (b) {
      b->flags = 0;
      b->pool = NULL;
    }
  }
  if (!b)
    return SL_ENOMEM;
  buf_init(b, true);
  b->obj = obj;
  b->dtor = dtor;
  *out = b;
  return 0;
}

int sl_buf_new_wrap(sl_pool *pool, void *data, size_t len, void (*dtor)(void *),
                    void *arg, sl_buf **out) {
  if (!out || (!data && len)) {
    if (out)
      *out = NULL;
    return SL_EINVAL;
  }
  /* A bare header, as an object buffer's, of byte kind. */
  int rc = sl_buf_new_object(pool, arg, dtor, out);
  if (rc == 0) {
    (*out)->flags = ((*out)->flags & ~(unsigned)BUF_OBJECT) | BUF_WRAP;
    (*out)->data = data;
    (*out)->len = (*out)->cap = len;
  }
  return rc;
}

sl_buf *sl_buf_ref(sl_buf *buf) {
  if (buf)
    atomic_fetch_add_explicit(&buf->refs, 1, memory_order_relaxed);
  return buf;
}

/* Drop one reference; a checkpoint's reference released otherwise than
 * by sl__buf_pass marks it dropped first, and the release ordering of the
 * count makes that mark seen by whoever drops the last reference. */
static void buf_release(sl_buf *buf, bool passed) {
  if ((buf->flags & BUF_CHECKPOINT) && !passed)
    atomic_store_explicit(&buf->dropped, 1, memory_order_relaxed);
  if (atomic_fetch_sub_explicit(&buf->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (buf->flags & BUF_CHECKPOINT) {
    buf->passed(buf->obj,
                !atomic_load_explicit(&buf->dropped, memory_order_relaxed));
  } else if ((buf->flags & (BUF_OBJECT | BUF_WRAP)) && buf->dtor) {
    buf->dtor(buf->obj);
  }
  if (buf->flags & BUF_WRAP) { /* back to a bare header */
    buf->data = NULL;
    buf->cap = 0;
  }
  if (buf->pool)
    pool_give(buf->pool, buf);
  else
    sl__free(buf);
}

void sl_buf_unref(sl_buf *buf) {
  if (buf)
    buf_release(buf, false);
}

void sl__buf_pass(sl_buf *buf) {
  if (buf)
    buf_release(buf, true);
}

unsigned char *sl_buf_data(const sl_buf *buf) {
  return buf && !(buf->flags & BUF_OBJECT) ? buf->data : NULL;
}

size_t sl_buf_len(const sl_buf *buf) {
  return buf ? buf->len : 0;
}

size_t sl_buf_cap(const sl_buf *buf) {
  return buf ? buf->cap : 0;
}

int sl_buf_set_len(sl_buf *buf, size_t len) {
  if (!buf || (buf->flags & BUF_OBJECT) || len > buf->cap)
    return SL_EINVAL;
  buf->len = len;
  return 0;
}

void *sl_buf_object(const sl_buf *buf) {
  return buf && (buf->flags & BUF_OBJECT) ? buf->obj : NULL;
}

int sl_buf_is_object(const sl_buf *buf) {
  return buf && (buf->flags & BUF_OBJECT) ? 1 : 0;
}

unsigned sl_buf_refcount(const sl_buf *buf) {
  return buf ? atomic_load_explicit(&buf->refs, memory_order_acquire) : 0;
}

int sl_buf_new_flush(sl_pool *pool, sl_buf **out) {
  /* A bare header, as an object buffer's, but of byte kind. */
  int rc = sl_buf_new_object(pool, NULL, NULL, out);
  if (rc == 0)
    (*out)->flags = ((*out)->flags & ~(unsigned)BUF_OBJECT) | BUF_FLUSH;
  return rc;
}

int sl_buf_is_flush(const sl_buf *buf) {
  return buf && (buf->flags & BUF_FLUSH) ? 1 : 0;
}

int sl_buf_new_checkpoint(sl_pool *pool, sl_checkpoint_cb cb, void *arg,
                          sl_buf **out) {
  if (!cb) {
    if (out)
      *out = NULL;
    return SL_EINVAL;
  }
  int rc = sl_buf_new_flush(pool, out);
  if (rc == 0) {
    (*out)->flags |= BUF_CHECKPOINT;
    (*out)->obj = arg;
    (*out)->passed = cb;
  }
  return rc;
}

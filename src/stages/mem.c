/* SPDX-License-Identifier: MIT */
/*
 * Memory stages: a source from one buffer, a source from an array of
 * chunks, a sink into a growable buffer and a sink into a callback.
 *
 * The sources copy the caller's bytes into pooled buffers, one chunk per
 * read call: a sl_buf cannot point into memory it does not own (the stage
 * holding its only reference may write it in place), and copying as the
 * stream goes keeps the pipeline's memory bounded by its marks, whatever
 * the input's size. With SL_MEM_COPY the input is copied once more, at
 * construction, so that the caller may free it at once.
 *
 * Threads: a context is built by the constructing thread and then touched
 * only by the stage's thread. The memory sink's getters read it after
 * sl_pipeline_wait, which joined that thread; while the stage may still
 * run (its running flag, set by sl_pipeline_start and cleared by the join)
 * they refuse with SL_EBUSY.
 */
#include "stage-int.h"

#include <sluice/stages.h>

#include <string.h>

#define MEM_MAX_CHUNK ((size_t)1 << 30) /* the pool's largest buffer */
#define SINK_MIN_CAP ((size_t)4096)

/* True while a thread of stage may run: between sl_pipeline_start and the
 * join in sl_pipeline_wait. Once it reads false after a join, everything
 * the thread wrote is visible (the flag is cleared after the join). */
static bool stage_busy(const sl_stage *stage) {
  return atomic_load(&((sl_stage *)stage)->running) != 0;
}

static int object_refused(sl_stage *stage, sl_buf *in) {
  sl_buf_unref(in);
  sl_stage_set_error(stage, "object buffer in a byte stream");
  return SL_EINVAL;
}

/* ------------------------------------------------------------------------
 * Sources
 * ---------------------------------------------------------------------- */

struct mem_source {
  const unsigned char *data;  /* one buffer: the bytes, */
  size_t len, pos;            /* their length, bytes emitted */
  size_t chunk_size;          /* 0: the pipeline's buffer size */
  const sl_mem_chunk *chunks; /* or an array: the entries, */
  size_t n, next;             /* their number, entries emitted */
  void *copy;                 /* what SL_MEM_COPY allocated, or NULL */
};

static void mem_source_destroy(void *ctx) {
  struct mem_source *m = ctx;
  sl__free(m->copy);
  sl__free(m);
}

/* Push len bytes from data in a fresh pooled buffer of exactly that
 * size class. */
static int push_copy(sl_stage *stage, const void *data, size_t len) {
  sl_buf *b = NULL;
  int rc = sl_buf_new(sl_stage_pool(stage), len, &b);
  if (rc != 0)
    return rc;
  if (len > 0)
    memcpy(sl_buf_data(b), data, len);
  sl_buf_set_len(b, len);
  return sl_stage_push(stage, b);
}

static int mem_source_read(sl_stage *stage, void *ctx) {
  struct mem_source *m = ctx;
  if (m->pos == m->len)
    return SL_EOF;
  size_t chunk = m->chunk_size ? m->chunk_size : stage->p->opts.buf_size;
  size_t n = m->len - m->pos;
  if (n > chunk)
    n = chunk;
  int rc = push_copy(stage, m->data + m->pos, n);
  if (rc != 0)
    return rc;
  m->pos += n;
  return m->pos == m->len ? SL_EOF : 0;
}

static int mem_chunks_read(sl_stage *stage, void *ctx) {
  struct mem_source *m = ctx;
  if (m->next == m->n)
    return SL_EOF;
  const sl_mem_chunk *c = &m->chunks[m->next];
  int rc = push_copy(stage, c->data, c->len);
  if (rc != 0)
    return rc;
  m->next++;
  return m->next == m->n ? SL_EOF : 0;
}

static const char *name_or(const sl_mem_opts *opts, const char *dflt) {
  return opts && opts->name ? opts->name : dflt;
}

/* Make the stage around m; on failure free m and what it owns. */
static int source_stage(sl_stage **out, struct mem_source *m,
                        const sl_mem_opts *opts,
                        int (*read)(sl_stage *, void *)) {
  sl_stage_ops ops = {.read = read, .destroy = mem_source_destroy};
  int rc = sl_stage_new(out, name_or(opts, "mem-source"), &ops, m);
  if (rc != 0)
    mem_source_destroy(m);
  return rc;
}

int sl_mem_source_new(sl_stage **out, const void *data, size_t len,
                      const sl_mem_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (!data && len > 0)
    return SL_EINVAL;
  if (opts &&
      ((opts->flags & ~SL_MEM_COPY) || opts->chunk_size > MEM_MAX_CHUNK))
    return SL_EINVAL;
  struct mem_source *m = sl__calloc(1, sizeof *m);
  if (!m)
    return SL_ENOMEM;
  m->data = data;
  m->len = len;
  m->chunk_size = opts ? opts->chunk_size : 0;
  if (opts && (opts->flags & SL_MEM_COPY) && len > 0) {
    m->copy = sl__malloc(len);
    if (!m->copy) {
      sl__free(m);
      return SL_ENOMEM;
    }
    memcpy(m->copy, data, len);
    m->data = m->copy;
  }
  return source_stage(out, m, opts, mem_source_read);
}

/* The array and every entry's bytes in one block: the entries first, then
 * the bytes, each entry pointing into the block. */
static sl_mem_chunk *copy_chunks(const sl_mem_chunk *chunks, size_t n) {
  size_t total = n * sizeof *chunks; /* n was checked against overflow */
  for (size_t i = 0; i < n; i++) {
    if (chunks[i].len > SIZE_MAX - total)
      return NULL;
    total += chunks[i].len;
  }
  sl_mem_chunk *v = sl__malloc(total);
  if (!v)
    return NULL;
  unsigned char *at = (unsigned char *)(v + n);
  for (size_t i = 0; i < n; i++) {
    v[i].len = chunks[i].len;
    v[i].data = at;
    if (chunks[i].len > 0)
      memcpy(at, chunks[i].data, chunks[i].len);
    at += chunks[i].len;
  }
  return v;
}

int sl_mem_source_chunks_new(sl_stage **out, const sl_mem_chunk *chunks,
                             size_t n, const sl_mem_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if ((!chunks && n > 0) || n > SIZE_MAX / sizeof *chunks)
    return SL_EINVAL;
  if (opts && (opts->flags & ~SL_MEM_COPY))
    return SL_EINVAL;
  for (size_t i = 0; i < n; i++)
    if ((!chunks[i].data && chunks[i].len > 0) || chunks[i].len > MEM_MAX_CHUNK)
      return SL_EINVAL;
  struct mem_source *m = sl__calloc(1, sizeof *m);
  if (!m)
    return SL_ENOMEM;
  m->chunks = chunks;
  m->n = n;
  if (opts && (opts->flags & SL_MEM_COPY) && n > 0) {
    sl_mem_chunk *v = copy_chunks(chunks, n);
    if (!v) {
      sl__free(m);
      return SL_ENOMEM;
    }
    m->copy = v;
    m->chunks = v;
  }
  return source_stage(out, m, opts, mem_chunks_read);
}

/* ------------------------------------------------------------------------
 * Sink into a growable buffer
 * ---------------------------------------------------------------------- */

struct mem_sink {
  unsigned char *data;
  size_t len, cap;
  size_t max; /* 0: no limit */
};

/* Room for need bytes in all: double, but never past the limit. */
static int sink_grow(struct mem_sink *k, size_t need) {
  size_t cap = k->cap ? k->cap : SINK_MIN_CAP;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  if (k->max && cap > k->max)
    cap = k->max;
  unsigned char *grown = sl__realloc(k->data, cap);
  if (!grown)
    return SL_ENOMEM;
  k->data = grown;
  k->cap = cap;
  return 0;
}

static int mem_sink_write(sl_stage *stage, void *ctx, sl_buf *in) {
  struct mem_sink *k = ctx;
  if (sl_buf_is_object(in))
    return object_refused(stage, in);
  size_t n = sl_buf_len(in);
  int rc = 0;
  if (k->max && n > k->max - k->len) {
    sl_stage_set_error(stage, "more than %zu bytes", k->max);
    rc = SL_EMSGSIZE;
  } else if (n > SIZE_MAX - k->len) {
    rc = SL_ENOMEM;
  } else if (k->len + n > k->cap) {
    rc = sink_grow(k, k->len + n);
    if (rc != 0)
      sl_stage_set_error(stage, "cannot grow the buffer past %zu bytes",
                         k->len);
  }
  if (rc == 0 && n > 0) {
    memcpy(k->data + k->len, sl_buf_data(in), n);
    k->len += n;
  }
  sl_buf_unref(in);
  return rc;
}

static void mem_sink_destroy(void *ctx) {
  struct mem_sink *k = ctx;
  sl__free(k->data);
  sl__free(k);
}

int sl_mem_sink_new(sl_stage **out, const sl_mem_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  struct mem_sink *k = sl__calloc(1, sizeof *k);
  if (!k)
    return SL_ENOMEM;
  k->max = opts ? opts->max_size : 0;
  sl_stage_ops ops = {.write = mem_sink_write, .destroy = mem_sink_destroy};
  int rc = sl_stage_new(out, name_or(opts, "mem-sink"), &ops, k);
  if (rc != 0)
    sl__free(k);
  return rc;
}

/* The sink's context if stage is a memory sink at rest, else an error. */
static int sink_at_rest(const sl_stage *stage, struct mem_sink **k) {
  if (!stage || stage->ops.write != mem_sink_write)
    return SL_EINVAL;
  if (stage_busy(stage))
    return SL_EBUSY;
  *k = stage->ctx;
  return 0;
}

int sl_mem_sink_data(const sl_stage *stage, const void **data, size_t *len) {
  struct mem_sink *k;
  if (!data || !len)
    return SL_EINVAL;
  int rc = sink_at_rest(stage, &k);
  if (rc != 0)
    return rc;
  *data = k->len ? k->data : NULL;
  *len = k->len;
  return 0;
}

int sl_mem_sink_take(sl_stage *stage, void **data, size_t *len) {
  struct mem_sink *k;
  if (!data || !len)
    return SL_EINVAL;
  int rc = sink_at_rest(stage, &k);
  if (rc != 0)
    return rc;
  if (k->len == 0) {
    sl__free(k->data);
    k->data = NULL;
  }
  *data = k->data;
  *len = k->len;
  k->data = NULL;
  k->len = k->cap = 0;
  return 0;
}

void sl_mem_free(void *data) {
  sl__free(data);
}

/* ------------------------------------------------------------------------
 * Sink into a callback
 * ---------------------------------------------------------------------- */

struct cb_sink {
  sl_data_cb data_cb;
  sl_end_cb end_cb;
  void *arg;
};

static int cb_failed(sl_stage *stage, int rc) {
  if (rc >= 0)
    return 0;
  sl_stage_set_error(stage, "callback failed: %s", sl_strerror(rc));
  return rc;
}

static int cb_sink_write(sl_stage *stage, void *ctx, sl_buf *in) {
  struct cb_sink *k = ctx;
  if (sl_buf_is_object(in))
    return object_refused(stage, in);
  int rc = k->data_cb(sl_buf_data(in), sl_buf_len(in), k->arg);
  sl_buf_unref(in);
  return cb_failed(stage, rc);
}

static int cb_sink_final(sl_stage *stage, void *ctx) {
  struct cb_sink *k = ctx;
  return k->end_cb ? cb_failed(stage, k->end_cb(k->arg)) : 0;
}

static void cb_sink_destroy(void *ctx) {
  sl__free(ctx);
}

int sl_callback_sink_new(sl_stage **out, sl_data_cb data_cb, sl_end_cb end_cb,
                         void *arg, const sl_mem_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (!data_cb)
    return SL_EINVAL;
  struct cb_sink *k = sl__calloc(1, sizeof *k);
  if (!k)
    return SL_ENOMEM;
  k->data_cb = data_cb;
  k->end_cb = end_cb;
  k->arg = arg;
  sl_stage_ops ops = {.write = cb_sink_write,
                      .final = cb_sink_final,
                      .destroy = cb_sink_destroy};
  int rc = sl_stage_new(out, name_or(opts, "callback-sink"), &ops, k);
  if (rc != 0)
    sl__free(k);
  return rc;
}

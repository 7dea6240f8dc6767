/* SPDX-License-Identifier: MIT */
/*
 * Parallel gunzip of gzip members whose length is known: the block format
 * (an FEXTRA subfield 'S','L' holding the member's whole length as a
 * little-endian uint32) and BGZF ('B','C', the length - 1 as a uint16).
 *
 * The stage's thread splits: it reads each member's header with the gzip
 * module's reader (keeping its bytes), takes the length from the
 * subfield, gathers the whole member into one buffer and submits it to the
 * ordered map engine (map-int.h). A worker inflates the member at once
 * (libdeflate with ISIZE as the output size when built in, else the
 * engine's inflater over the whole buffer), checks that the deflate data
 * ends exactly at the trailer the length points to, and checks CRC-32 and
 * ISIZE. A worker never fails the pipeline: it files its error in the job,
 * and the stage's thread reports it when the member's turn comes, so the
 * first damaged member in stream order is the one named, whatever the
 * timing; every member before it has been pushed by then.
 *
 * Everything else goes to the streaming gunzip (zlib.c's, made by
 * sl__gunzip_split_new), whose ops this stage runs on its own thread, as
 * if they were its own, from the first byte it cannot take onwards:
 *   - a first member without a length subfield: the whole stream, exactly
 *     as without this stage (same checks, errors and offsets);
 *   - a later member without one (a gzip file appended to a block file),
 *     bytes after the last member (padding, garbage), a damaged header:
 *     once every member before has been pushed, the streaming gunzip
 *     resumes at that member's first byte and reads the rest of the input.
 *     A member whose length is not known can only be ended by inflating
 *     it; resuming the one reader of the library there keeps gzip's
 *     answers for what follows (trailing garbage, zero padding, the next
 *     member) without a second copy of them here. The rest of such a file
 *     is read on one thread;
 *   - a member too large to hold whole (compressed over MEMBER_MAX, or
 *     ISIZE over OUT_MAX or beyond what its data could hold): the same,
 *     from that member on, so memory stays bounded whatever the lengths
 *     claim;
 *   - a member the input ends inside: the same, so that every byte of it
 *     that can be decoded is delivered before the error, as gzip does.
 *
 * The CRC-32 of the streamed members is checked by the stage after this
 * one (pgzip.c's checker) through the member-end callback, as in
 * sl_pgunzip_chain's two-stage gunzip. The bytes of block members, checked
 * here, are announced to it with the pass callback (before they are
 * pushed), so that it counts them without a check.
 *
 * Threads: transform, flush, sync, emit and the streaming gunzip's ops on
 * the stage's thread; run and the worker hooks on the workers. A job
 * belongs to the stage's thread until submitted, to one worker while it
 * runs, and to the stage's thread again at emit. Memory: at most WINDOW
 * jobs (fewer once they weigh WINDOW_BYTES), each a member and its
 * output, both bounded above; the header being read is held up to
 * HDR_MAX bytes (longer ones are streamed).
 */
#include "engine-int.h"
#include "gzip-int.h"
#include "map-int.h"
#include "stage-int.h"
#include "zlib-int.h"

#include <sluice/pgzip.h>

#include <stdio.h>
#include <string.h>

#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

/* Members longer than this are streamed: below it ISIZE (mod 2^32) is
 * the exact length of a valid member's output (deflate expands at most
 * 1032 times), and a whole member is a bounded amount to hold. */
#define MEMBER_MAX ((size_t)4 << 20)
/* Members whose ISIZE says more are streamed. */
#define OUT_MAX ((uint32_t)64 << 20)
#define DEFLATE_MAX_RATIO 1032u
#define HDR_MAX ((size_t)256 << 10)
#define WINDOW_JOBS 256u
#define WINDOW_BYTES ((size_t)4 << 20)
#define SCRATCH ((size_t)32 << 10)
/* The members and their outputs come from a pool of the stage's own, in
 * power-of-two classes up to this size (the pipeline's pool keeps only
 * chunks of its buffer size): a member's buffers are used again by a
 * later member instead of being mapped afresh from the allocator, whose
 * large allocations cost a page fault per page. At most POOL_KEEP are
 * kept per class, and never more than were in use at once. */
#define POOL_BUF ((size_t)1 << 20)
#define POOL_KEEP 64

enum bmode {
  BM_HEADER, /* a member's header */
  BM_BODY,   /* the rest of a member whose length is known */
  BM_STREAM  /* the streaming gunzip reads everything from here */
};

typedef struct bg_job {
  size_t hdr_len;
  uint64_t off; /* input offset of the member's first byte */
  int err;      /* the worker's verdict: 0 or SL_E* */
  char msg[SL_ERRMSG_MAX];
  struct bg_job *next; /* free list */
} bg_job;

typedef struct bg_worker {
  sl__inflater *inf;
#ifdef HAVE_LIBDEFLATE
  struct libdeflate_decompressor *ld;
#endif
  unsigned char scratch[SCRATCH]; /* output past ISIZE, counted only */
} bg_worker;

typedef struct bgz {
  sl_stage *stage;
  sl_stage *inner; /* the streaming gunzip; never in a pipeline */
  sl__map *m;
  sl_pool *pool; /* members and outputs; any thread */
  sl__member_pass_fn pass;
  void *pass_arg; /* the inner stage owns it */
  int engine;     /* the inflate engine of the workers' checked path */
  unsigned workers;
  bg_job *jobs, *free_jobs;

  /* The stage's thread only. */
  enum bmode mode;
  uint64_t in_off;     /* input bytes taken */
  uint64_t nmember;    /* members submitted */
  uint64_t nblocks;    /* members a worker inflated, pushed */
  uint64_t member_off; /* offset of the member being read */
  sl__gzhdr gh;
  unsigned char *hdr; /* its header's bytes so far */
  size_t hdr_len, hdr_cap;
  sl_buf *member; /* BM_BODY: the member being gathered */
  size_t clen;    /* its length */
} bgz;

/* ---- the workers ---- */

static void bg_worker_fini(void *owner, void *wctx) {
  bg_worker *w = wctx;

  (void)owner;
  if (w == NULL)
    return;
  sl__inflater_free(w->inf);
#ifdef HAVE_LIBDEFLATE
  if (w->ld != NULL)
    libdeflate_free_decompressor(w->ld);
#endif
  sl__free(w);
}

static int bg_worker_make(bgz *g, bg_worker **out) {
  bg_worker *w = sl__calloc(1, sizeof *w);
  int rc = SL_ENOMEM;

  *out = NULL;
  if (w == NULL)
    goto fail;
  if ((rc = sl__inflater_new(&w->inf, g->engine, 15)) != 0)
    goto fail;
#ifdef HAVE_LIBDEFLATE
  if ((w->ld = libdeflate_alloc_decompressor()) == NULL) {
    rc = SL_ENOMEM;
    goto fail;
  }
#endif
  *out = w;
  return 0;
fail:
  bg_worker_fini(g, w);
  sl_stage_set_error(g->stage, "inflate: %s",
                     rc == SL_ENOMEM ? "out of memory" : sl_strerror(rc));
  return rc;
}

static int bg_worker_init(void *owner, unsigned i, void **wctx) {
  (void)i;
  return bg_worker_make(owner, (bg_worker **)wctx);
}

/* Inflate the member m[0..clen) (its header hdr_len bytes, at input offset
 * off) whose data is there only in part when avail < clen, into o (cap
 * bytes; NULL: counted only), checking everything the engine's
 * streaming gunzip checks. Returns 0 with *made the output's length, or an
 * SL_E* code with msg filled (SL_EDATA) or the stage's error set. With
 * avail < clen, SL_AGAIN when the data is fine as far as it goes. */
static int member_inflate(bgz *g, bg_worker *w, const unsigned char *m,
                          size_t hdr_len, size_t clen, size_t avail,
                          uint64_t off, unsigned char *o, size_t cap,
                          size_t *made_out, char *msg, size_t msg_cap) {
  const unsigned char *d = m + hdr_len;
  size_t dlen = (avail < clen ? avail : clen - 8) - hdr_len;
  size_t took_all = 0, made_all = 0;
  uint32_t crc = sl__crc32(0, NULL, 0);
  int r;

  sl__inflater_reset(w->inf);
  for (;;) {
    unsigned char *dst = made_all < cap ? o + made_all : w->scratch;
    size_t room = made_all < cap ? cap - made_all : SCRATCH;
    size_t took = dlen - took_all, made = room;
    const char *why = NULL;
    r = sl__inflate(w->inf, d + took_all, &took, dst, &made, &why);
    if (r < 0) {
      sl_stage_set_error(g->stage, "inflate: %s", sl_strerror(r));
      return r;
    }
    took_all += took;
    crc = sl__crc32(crc, dst, made);
    made_all += made;
    if (r == SL__INF_END) {
      unsigned char left[8];
      took_all -= sl__inflater_leftover(w->inf, left);
      break;
    }
    if (r == SL__INF_DATA) {
      uint64_t at = off + hdr_len + took_all,
               back = sl__inflater_behind(w->inf) + 1;
      snprintf(msg, msg_cap, "%s at input byte %llu", why,
               (unsigned long long)(at >= back ? at - back : 0));
      return SL_EDATA;
    }
    if (took == 0 && made == 0) { /* every byte taken, and no end */
      if (avail < clen)
        return SL_AGAIN;
      snprintf(msg, msg_cap,
               "wrong block length at input byte %llu: the deflate data "
               "runs past the member's end at byte %llu",
               (unsigned long long)off, (unsigned long long)(off + clen - 8));
      return SL_EDATA;
    }
  }
  if (avail < clen && hdr_len + took_all + 8 > avail)
    return SL_AGAIN; /* the trailer is not all there */
  if (hdr_len + took_all + 8 != clen) {
    snprintf(msg, msg_cap,
             "wrong block length at input byte %llu: the deflate data ends "
             "at byte %llu, the length says %llu",
             (unsigned long long)off,
             (unsigned long long)(off + hdr_len + took_all),
             (unsigned long long)(off + clen - 8));
    return SL_EDATA;
  }
  if (sl__gz_trailer_check(m + clen - 8, crc, (uint32_t)made_all,
                           off + clen - 8, msg, msg_cap) != 0)
    return SL_EDATA;
  *made_out = made_all;
  return 0;
}

static int bg_run(void *owner, void *wctx, sl_buf *in, void *arg,
                  sl_buf **out) {
  bgz *g = owner;
  bg_worker *w = wctx;
  bg_job *j = arg;
  const unsigned char *m = sl_buf_data(in);
  size_t clen = sl_buf_len(in);
  uint32_t isize = sl__le32(m + clen - 4);
  size_t dlen = clen - 8 - j->hdr_len, made = 0;
  /* A claim that the data cannot hold is checked into the scratch. */
  size_t cap =
      (uint64_t)isize <= (uint64_t)dlen * DEFLATE_MAX_RATIO + 64 ? isize : 0;
  sl_buf *o = NULL;
  int rc;

  *out = NULL;
  if (cap > 0 && (rc = sl_buf_new(g->pool, cap, &o)) != 0) {
    sl_buf_unref(in);
    sl_stage_set_error(g->stage, "inflate: out of memory");
    return rc;
  }
#ifdef HAVE_LIBDEFLATE
  size_t ain = 0, aout = 0;
  if (cap > 0 &&
      libdeflate_deflate_decompress_ex(w->ld, m + j->hdr_len, dlen,
                                       sl_buf_data(o), cap, &ain,
                                       &aout) == LIBDEFLATE_SUCCESS &&
      ain == dlen && aout == cap &&
      sl__crc32(0, sl_buf_data(o), cap) == sl__le32(m + clen - 8)) {
    sl_buf_set_len(o, cap);
    sl_buf_unref(in);
    *out = o;
    return 0;
  }
  /* Anything amiss: the checked path below names what and where. */
#endif
  rc = member_inflate(g, w, m, j->hdr_len, clen, clen, j->off,
                      o ? sl_buf_data(o) : NULL, cap, &made, j->msg,
                      sizeof j->msg);
  sl_buf_unref(in);
  if (rc == SL_EDATA) {
    j->err = rc;
    sl_buf_unref(o);
    return 0;
  }
  if (rc != 0) {
    sl_buf_unref(o);
    return rc;
  }
  if (o != NULL)
    sl_buf_set_len(o, made);
  *out = o;
  return 0;
}

/* ---- the stage's thread ---- */

static void job_put(bgz *g, bg_job *j) {
  j->next = g->free_jobs;
  g->free_jobs = j;
}

/* A member's result, in order: its error, or its bytes. */
static int bg_emit(void *owner, sl_buf *out, void *arg) {
  bgz *g = owner;
  bg_job *j = arg;
  int rc = 0;

  if (j->err != 0) {
    sl_stage_set_error(g->stage, "%s", j->msg);
    rc = j->err;
    sl_buf_unref(out);
  } else if (out != NULL && sl_buf_len(out) > 0) {
    g->nblocks++;
    if ((rc = g->pass(g->pass_arg, sl_buf_len(out))) != 0) {
      sl_stage_set_error(g->stage, "out of memory for a member's length");
      sl_buf_unref(out);
    } else {
      rc = sl_stage_push(g->stage, out);
    }
  } else {
    g->nblocks++;
    sl_buf_unref(out);
  }
  job_put(g, j);
  return rc;
}

/* Hand p[0..n) to the streaming gunzip. */
static int inner_feed(sl_stage *st, bgz *g, const unsigned char *p, size_t n) {
  sl_buf *b;
  int rc;

  if (n == 0)
    return 0;
  if ((rc = sl_stage_buf(st, n, &b)) != 0)
    return rc;
  memcpy(sl_buf_data(b), p, n);
  sl_buf_set_len(b, n);
  return g->inner->ops.transform(st, g->inner->ctx, b);
}

/* From the member at member_off on, the streaming gunzip reads the input:
 * every member before it is pushed first, then the bytes this stage holds
 * of that member (its header so far, or the member gathered) go to it. */
static int to_stream(sl_stage *st, bgz *g) {
  int rc = sl__map_drain(g->m);

  if (rc != 0)
    return rc;
  g->mode = BM_STREAM;
  if (g->nmember > 0)
    sl__gunzip_resume(g->inner, g->member_off, g->nmember);
  if (g->member != NULL) {
    sl_buf *b = g->member;
    g->member = NULL;
    return g->inner->ops.transform(st, g->inner->ctx, b);
  }
  return inner_feed(st, g, g->hdr, g->hdr_len);
}

/* The member's length from its extra field: ours or BGZF's; 0 for none. */
static uint64_t member_length(const bgz *g) {
  if (!(g->gh.flg & SL_GZIP_FEXTRA))
    return 0;
  const unsigned char *x = g->hdr + g->gh.extra_pos;
  size_t xlen = g->gh.xlen;
  while (xlen >= 4) {
    size_t len = (size_t)x[2] | (size_t)x[3] << 8;
    if (len > xlen - 4)
      break;
    if (x[0] == 'S' && x[1] == 'L' && len == 4)
      return sl__le32(x + 4);
    if (x[0] == 'B' && x[1] == 'C' && len == 2)
      return ((uint64_t)x[4] | (uint64_t)x[5] << 8) + 1;
    x += 4 + len;
    xlen -= 4 + len;
  }
  return 0;
}

static void member_next(bgz *g) {
  g->mode = BM_HEADER;
  g->hdr_len = 0;
  g->member_off = g->in_off;
  sl__gzhdr_begin(&g->gh, false, g->in_off);
}

/* Keep header bytes; false when the header is too long to keep. */
static bool hdr_keep(bgz *g, const unsigned char *p, size_t n) {
  if (g->hdr_len + n > g->hdr_cap) {
    size_t cap = g->hdr_cap ? g->hdr_cap : 1024;
    while (cap < g->hdr_len + n)
      cap *= 2;
    if (cap > HDR_MAX)
      return false;
    unsigned char *h = sl__realloc(g->hdr, cap);
    if (h == NULL)
      return false;
    g->hdr = h;
    g->hdr_cap = cap;
  }
  memcpy(g->hdr + g->hdr_len, p, n);
  g->hdr_len += n;
  return true;
}

/* The header is complete: gather the member, or stream from here. *
 * Returns 0 with g->mode set (BM_STREAM: the caller feeds the rest). */
static int header_done(sl_stage *st, bgz *g) {
  uint64_t clen = member_length(g);
  int rc;

  if (clen == 0 || clen > MEMBER_MAX)
    return to_stream(st, g);
  if (clen < g->hdr_len + 8) {
    /* The members before come first: theirs is the error to report, if
     * one of them has one, and their bytes are pushed before this one. */
    if ((rc = sl__map_drain(g->m)) != 0)
      return rc;
    sl_stage_set_error(st,
                       "block length %llu shorter than its header and "
                       "trailer at input byte %llu",
                       (unsigned long long)clen,
                       (unsigned long long)g->member_off);
    return SL_EDATA;
  }
  if ((rc = sl_buf_new(g->pool, (size_t)clen, &g->member)) != 0) {
    sl_stage_set_error(st, "out of memory for a member");
    return rc;
  }
  memcpy(sl_buf_data(g->member), g->hdr, g->hdr_len);
  sl_buf_set_len(g->member, g->hdr_len);
  g->clen = (size_t)clen;
  g->mode = BM_BODY;
  return 0;
}

/* The member is gathered: to a worker, unless it is too large to inflate
 * whole. */
static int member_done(sl_stage *st, bgz *g) {
  const unsigned char *m = sl_buf_data(g->member);
  uint32_t isize = sl__le32(m + g->clen - 4);
  bg_job *j = g->free_jobs;

  /* A large output is streamed, unless the data cannot hold it: then a
   * worker counts it (into its scratch) to say what is wrong. */
  if (isize > OUT_MAX &&
      (uint64_t)isize <=
          (uint64_t)(g->clen - 8 - g->hdr_len) * DEFLATE_MAX_RATIO + 64)
    return to_stream(st, g);
  if (j == NULL) { /* cannot happen: in_flight + 1 jobs exist */
    sl_stage_set_error(st, "no free job");
    return SL_EIO;
  }
  g->free_jobs = j->next;
  j->next = NULL;
  j->hdr_len = g->hdr_len;
  j->off = g->member_off;
  j->err = 0;
  j->msg[0] = '\0';
  sl_buf *b = g->member;
  g->member = NULL;
  g->nmember++;
  member_next(g);
  return sl__map_submit(g->m, b, j);
}

static int bg_feed(sl_stage *st, bgz *g, const unsigned char *p, size_t n) {
  int rc = 0;

  while (n > 0 && rc == 0 && g->mode != BM_STREAM) {
    if (g->mode == BM_HEADER) {
      char msg[SL_ERRMSG_MAX];
      size_t used = 0;
      int r = sl__gzhdr_feed(&g->gh, p, n, &used, msg, sizeof msg);
      if (r == SL__GZH_MORE || r == SL__GZH_DONE) {
        if (!hdr_keep(g, p, used)) {
          rc = to_stream(st, g);
          break; /* p[0..n) follows what was kept */
        }
        g->in_off += used;
        p += used;
        n -= used;
        if (r == SL__GZH_DONE)
          rc = header_done(st, g);
      } else {
        /* Not a header we read: no magic (the end of the members, or
         * not gzip), a bad field or no memory: the streaming gunzip
         * reads it from its first byte and says what it is. */
        rc = to_stream(st, g);
      }
    } else {
      size_t have = sl_buf_len(g->member), take = g->clen - have;
      if (take > n)
        take = n;
      memcpy(sl_buf_data(g->member) + have, p, take);
      sl_buf_set_len(g->member, have + take);
      g->in_off += take;
      p += take;
      n -= take;
      if (have + take == g->clen)
        rc = member_done(st, g);
    }
  }
  if (rc == 0 && n > 0 && g->mode == BM_STREAM)
    rc = inner_feed(st, g, p, n);
  return rc;
}

static int bg_transform(sl_stage *st, void *ctx, sl_buf *in) {
  bgz *g = ctx;

  if (g->mode == BM_STREAM)
    return g->inner->ops.transform(st, g->inner->ctx, in);
  int rc = bg_feed(st, g, sl_buf_data(in), sl_buf_len(in));
  sl_buf_unref(in);
  return rc;
}

/* A flush marker: everything before it goes out. A member gathered in
 * part can only go out through the streaming gunzip, which from then on
 * reads the rest of the input (sgzip marks the end of its input so, that
 * a cut member's decodable bytes are written before the error). */
static int bg_sync(sl_stage *st, void *ctx) {
  bgz *g = ctx;
  int rc = g->mode == BM_BODY ? to_stream(st, g) : sl__map_drain(g->m);

  if (rc == 0 && g->mode == BM_STREAM)
    rc = g->inner->ops.sync(st, g->inner->ctx);
  return rc;
}

static int bg_flush(sl_stage *st, void *ctx) {
  bgz *g = ctx;
  int rc = 0;

  if (g->mode == BM_BODY) {
    /* The input ends inside a member: the streaming gunzip reads what
     * there is of it, so that every byte it can decode is delivered
     * before the error, as gzip delivers it, and the error is gzip's. */
    rc = to_stream(st, g);
  } else if (g->mode == BM_HEADER && (g->nmember == 0 || g->hdr_len > 0)) {
    /* Nothing, or a header cut short: the streaming gunzip's answer. */
    rc = to_stream(st, g);
  } else {
    rc = sl__map_drain(g->m);
  }
  if (rc == 0 && g->mode == BM_STREAM)
    rc = g->inner->ops.flush(st, g->inner->ctx);
  sl__map_stop(g->m);
  return rc;
}

static void bg_exit(sl_stage *st) {
  bgz *g = sl_stage_ctx(st);

  sl__map_stop(g->m);
}

static void bg_destroy(void *ctx) {
  bgz *g = ctx;

  if (g == NULL)
    return;
  sl__map_free(g->m);
  sl_buf_unref(g->member);
  sl__gzhdr_free(&g->gh);
  sl__free(g->hdr);
  sl__free(g->jobs);
  sl_stage_free(g->inner);
  sl_pool_free(g->pool);
  sl__free(g);
}

static const sl_stage_ops bg_ops = {.transform = bg_transform,
                                    .flush = bg_flush,
                                    .sync = bg_sync,
                                    .destroy = bg_destroy};

int sl__bgunzip_new(sl_stage **out, const sl_zlib_opts *opts, unsigned workers,
                    sl__member_end_fn end, sl__member_pass_fn pass, void *arg,
                    void (*arg_free)(void *)) {
  static const sl__map_ops engine_ops = {.run = bg_run,
                                         .emit = bg_emit,
                                         .worker_init = bg_worker_init,
                                         .worker_fini = bg_worker_fini};
  sl_stage *inner = NULL, *s = NULL;
  bgz *g;
  int rc;

  *out = NULL;
  if (workers > SL_MAP_MAX_WORKERS) {
    arg_free(arg);
    return SL_EINVAL;
  }
  if ((rc = sl__gunzip_split_new(&inner, opts, end, arg, arg_free)) != 0)
    return rc;
  g = sl__calloc(1, sizeof *g);
  if (g == NULL) {
    sl_stage_free(inner);
    return SL_ENOMEM;
  }
  g->inner = inner;
  g->pass = pass;
  g->pass_arg = arg;
  g->engine = sl__inflate_engine(opts ? opts->engine : SL_ZLIB_ENGINE_AUTO, 15);
  if (g->engine < 0) { /* cannot happen: the inner stage took it */
    rc = g->engine;
    goto fail;
  }
  g->workers = workers ? workers : sl_cpu_count();
  if (g->workers > SL_MAP_MAX_WORKERS)
    g->workers = SL_MAP_MAX_WORKERS;
  g->jobs = sl__calloc(WINDOW_JOBS + 1, sizeof *g->jobs);
  if (g->jobs == NULL) {
    rc = SL_ENOMEM;
    goto fail;
  }
  for (unsigned i = 0; i <= WINDOW_JOBS; i++)
    job_put(g, &g->jobs[i]);
  if ((rc = sl_pool_new(&g->pool, POOL_BUF, POOL_KEEP)) != 0)
    goto fail;
  member_next(g);

  rc = sl_stage_new(&s, opts && opts->name ? opts->name : "gunzip", &bg_ops, g);
  if (rc != 0)
    goto fail;
  g->stage = s;
  rc = sl__map_new(&g->m, s, &engine_ops, g, g->workers, WINDOW_JOBS, 0, false);
  if (rc != 0) {
    sl_stage_free(s); /* destroys g */
    return rc;
  }
  sl__map_set_window(g->m, WINDOW_BYTES, 2 * g->workers + 2);
  s->on_exit = bg_exit;
  *out = s;
  return 0;
fail:
  bg_destroy(g);
  return rc;
}

int sl__bgunzip_trailing(const sl_stage *stage, uint64_t *offset,
                         int *garbage) {
  if (stage == NULL || stage->ops.transform != bg_transform)
    return sl__gunzip_trailing(stage, offset, garbage);
  const bgz *g = stage->ctx;
  return sl__gunzip_trailing(g->inner, offset, garbage);
}

uint64_t sl__bgunzip_blocks(const sl_stage *stage) {
  if (stage == NULL || stage->ops.transform != bg_transform)
    return 0;
  const bgz *g = stage->ctx;
  return g->nblocks;
}

/* SPDX-License-Identifier: MIT */
/*
 * Parallel gzip: pigz's scheme on the ordered map engine (map-int.h), and
 * a gunzip whose CRC-32 check runs on a thread of its own.
 *
 * Compression. The stage's thread copies its input into the block being
 * filled (a pooled buffer of block_size bytes; the pool may round the
 * capacity up, only block_size bytes are used), except that an input
 * chunk of exactly one block arriving on a block boundary becomes the
 * block itself, uncopied (sgzip reads a file a block at a time, so it
 * copies nothing on the way in). A full block goes to the
 * engine with a job that holds a reference to the block before it, so the
 * worker can prime its deflate with that block's last 32 KiB. A worker
 * owns one raw deflate stream (memLevel 9 by default, pigz's is 8), made
 * once and reset per job: reset, preset dictionary, deflate the block
 * with Z_SYNC_FLUSH (the last block with Z_FINISH) into the worker's own
 * output area, then copy the result into a pooled buffer of its size, so
 * that what waits in the rings weighs what it holds. A sync flush ends each
 * block's output with an empty stored block on a byte boundary, and a block's
 * stream starts with an empty bit buffer, so the outputs join into one deflate
 * stream. (pigz ends a block with Z_BLOCK and adds the empty stored block
 * itself; the bytes are the same in effect.) The worker also computes the
 * block's CRC-32 and leaves it in the job.
 *
 * The block format (format BLOCKS) runs the same machinery with every
 * block on its own: no dictionary (the stage keeps no previous block),
 * each block finished instead of flushed, and the worker writes the whole
 * member into its output area, header first (the caller's on the first
 * block, a bare one after), the deflate data, the trailer, and last the
 * member's length into the header's 'S' 'L' subfield. So the stage only
 * pushes members as they come back; it writes no header or trailer of its
 * own. libdeflate compresses a block in one call and can only do this.
 *
 * A block that looks incompressible (looks_incompressible: bytes close to
 * uniform, no repeats worth a match) skips deflate: the worker writes it
 * as stored blocks, the bytes zlib itself writes at level 0, and the
 * sync flush. zlib would spend as long on such a block as on text, at
 * any level, only to store it as well.
 *
 * The engine hands results back to the stage's thread in submit order
 * (emit): the first one is preceded by the gzip header, each is pushed,
 * and its CRC is merged into the stream's with crc32_combine. At the end
 * of the stream the last block (short, or empty) is submitted with
 * Z_FINISH, the engine is drained, and the trailer follows. A flush marker
 * submits the block being filled early (with a sync flush, so the stream
 * goes on) and drains: everything before the marker has then been pushed
 * when the framework passes the marker on.
 *
 * Determinism: a block's output depends only on its bytes, its dictionary
 * and the level, never on the worker or on what that worker compressed
 * before (deflateReset restores the whole matching state, and zlib does
 * not look for matches past the end of the input), and blocks are cut at
 * fixed offsets (and at flush markers) whatever the input chunks are. So
 * any number of workers gives the same bytes.
 *
 * Memory: at most in_flight jobs wait for a worker or run, each holding
 * its block and a reference to the block before it (its dictionary); a
 * worker releases both as soon as it has compressed the block. Finished
 * jobs hold only their results, and up to in_flight + extra jobs are in
 * the engine in all (extra = 2 * (workers - 4), none below 5 workers), so
 * that a slow block (a binary one among text, say) does not stop the
 * workers from going on with the blocks behind it while its result is
 * awaited: pigz's ordered writer does stop them, once its input buffers
 * (2N + 3) are all taken. So about in_flight + 2 blocks exist at once
 * (with the block being filled and the stage's own reference to the
 * newest one), and at most in_flight + extra compressed results. Few
 * workers seldom all wait for one block, so they get no extra slots and
 * keep the smaller footprint: in a model of the bench corpus at -6 the
 * stalls cost nothing below 8 workers, 25% at 16 workers with no extra
 * slots and 2% with 24.
 *
 * Threads. transform, flush and sync run on the stage's thread, and so do
 * submit, drain and emit; run, worker_init and worker_fini on the workers.
 * A job (its block, dictionary reference, CRC and length) belongs to the
 * stage's thread until submitted, to one worker while it runs, and to the
 * stage's thread again at emit; the engine's mutex orders the hand-overs.
 * The job structs come from a free list that only the stage's thread
 * touches; drop, which may run elsewhere after a failure, only releases a
 * job's dictionary. What sl_pgzip_result reads is published under mu.
 * The engine is stopped (workers joined) by the stage's exit hook on
 * every path, before the stage's thread ends.
 *
 * Decompression. gzip cannot be inflated in parallel, but the check can
 * leave the inflate's thread. sl_pgunzip_chain makes two stages. The
 * first is zlib.c's gunzip (sl__gunzip_split_new: the one gzip reader of
 * the library, on whichever engine the options choose) with the CRC-32
 * left out; it checks ISIZE against the bytes each member gave, and puts
 * {stored CRC-32, the member's length, the trailer's offset} into a queue
 * shared with the
 * second stage, pushing the member's last output first so that a member's
 * output ends a chunk. The second stage computes the CRC-32 of the bytes
 * passing through and, each time it has counted a queued member's length,
 * compares. The queue is filled before any byte of the next member is
 * pushed, so the checker always finds a member's entry by the time it
 * sees a byte beyond it; and since a member's output ends a chunk, the
 * queue holds at most one entry per chunk between the stages. A member
 * with no output is checked by the first stage alone (its CRC must be 0)
 * and queued nowhere, so a run of empty members cannot grow the queue.
 */
#include "engine-int.h"
#include "map-int.h"
#include "zlib-int.h"

#include <sluice/pgzip.h>

#include <limits.h>
#include <stdarg.h>
#include <string.h>

#define ZLIB_CONST
#include <zlib.h>

#ifdef HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#define DICT_SIZE ((size_t)32768)
#define IN_FLIGHT_MAX 65536u
/* zlib's largest memLevel: its own default is 8, but 9 (a hash table
 * with half the collisions, for 128 KiB more per worker) takes about 7%
 * less CPU at level 1 and up to 2% less at 6 and 9, and compresses a
 * little better. */
#define MEM_LEVEL_DEFAULT 9

/* Blocks shorter than this are always deflated (see looks_incompressible). */
#define STORE_MIN ((size_t)16 << 10)
#define SEEN_BITS 12
#define STORED_MAX 65535u /* the most bytes one stored deflate block holds */

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  (void)opaque;
  if (size != 0 && items > SIZE_MAX / size)
    return Z_NULL;
  return sl__malloc((size_t)items * size);
}

static void z_free(voidpf opaque, voidpf ptr) {
  (void)opaque;
  sl__free(ptr);
}

static void put_le32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

/* Explain a data error and return SL_EDATA. */
static int data_error(sl_stage *st, const char *fmt, ...) SL_PRINTF(2, 3);

static int data_error(sl_stage *st, const char *fmt, ...) {
  char msg[SL_ERRMSG_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  sl_stage_set_error(st, "%s", msg);
  return SL_EDATA;
}

/* zlib's code for an error outside the data: memory, or a broken state. */
static int zlib_error(sl_stage *st, const char *what, int zr) {
  if (zr == Z_MEM_ERROR) {
    sl_stage_set_error(st, "%s: out of memory", what);
    return SL_ENOMEM;
  }
  sl_stage_set_error(st, "%s: zlib error %d", what, zr);
  return SL_EIO;
}

/* ========================================================================
 * Compression
 * ===================================================================== */

/* One block's job: handed to the engine with the block, back at emit. */
typedef struct pgz_job {
  sl_buf *dict;         /* the block before (a reference), or NULL */
  sl_buf *rest;         /* the result's second part (pgz_run), or NULL */
  size_t len;           /* bytes in the block */
  uint32_t crc;         /* the block's CRC-32, set by the worker */
  bool last;            /* finish the stream instead of a sync flush */
  bool first;           /* the block format's first member */
  struct pgz_job *next; /* free list */
} pgz_job;

/* A worker's own state. */
typedef struct pgz_worker {
  z_stream strm;
  bool strm_ready;
#ifdef HAVE_ISAL
  struct isal_zstream *is; /* the ISA-L engine's stream, and its buffer */
  uint8_t *level_buf;
#endif
#ifdef HAVE_LIBDEFLATE
  struct libdeflate_compressor *ld; /* the libdeflate engine's */
#endif
  unsigned char *out; /* output area, about one block */
  size_t cap;
  uint32_t seen[1 << SEEN_BITS]; /* looks_incompressible's positions */
} pgz_worker;

typedef struct pgz {
  sl_stage *stage;
  sl__map *m;
  int level, mem_level;
  int engine;  /* SL_ZLIB_ENGINE_ZLIB, _ISAL or _LIBDEFLATE */
  bool blocks; /* the block format (SL_PGZIP_FORMAT_BLOCKS) */
  bool store;  /* store blocks that look incompressible */
  size_t block;
  unsigned workers, in_flight;
  unsigned slots;        /* jobs in the engine at most: in_flight + extra */
  unsigned char *header; /* the gzip header's bytes */
  size_t header_len;
  unsigned char *bare; /* blocks: the header of every later member */
  size_t bare_len;

  /* The stage's thread only. */
  sl_buf *cur;   /* the block being filled, or NULL */
  sl_buf *prev;  /* the newest block submitted: the next one's dictionary */
  pgz_job *jobs; /* slots + 1 of them */
  pgz_job *free_jobs;
  bool header_sent;
  uint64_t submitted; /* blocks handed to the engine */
  uint32_t crc;
  uint64_t bytes_in, bytes_out;

  /* Published under mu for sl_pgzip_result. */
  pthread_mutex_t mu;
  bool finished;
  uint32_t r_crc;
  uint64_t r_in, r_out;
} pgz;

/* ---- the workers ---- */

static void pgz_worker_fini(void *owner, void *wctx);

#ifdef HAVE_ISAL
/* ISA-L's level buffer for a level, 0 to 3: its default size, which is
 * part of what the output is a function of (it bounds a deflate block). */
static size_t isal_level_buf_size(int level) {
  switch (level) {
  case 1:
    return ISAL_DEF_LVL1_DEFAULT;
  case 2:
    return ISAL_DEF_LVL2_DEFAULT;
  case 3:
    return ISAL_DEF_LVL3_DEFAULT;
  default:
    return ISAL_DEF_LVL0_DEFAULT;
  }
}
#endif

static int pgz_worker_init(void *owner, unsigned i, void **wctx) {
  pgz *g = owner;
  pgz_worker *w;
  int zr;

  (void)i;
  *wctx = NULL;
  w = sl__calloc(1, sizeof *w);
  if (w == NULL)
    goto nomem;
  /* Room for the block at its worst (stored blocks: 5 bytes per 64 KiB,
   * which is also deflateBound's margin) plus the sync flush's empty
   * stored block; run grows it should an engine ever need more. */
  w->cap = g->block + (g->block >> 12) + (g->block >> 14) + (g->block >> 25) +
           13 + 64;
#ifdef HAVE_LIBDEFLATE
  if (g->engine == SL_ZLIB_ENGINE_LIBDEFLATE) {
    w->ld = libdeflate_alloc_compressor(g->level);
    if (w->ld == NULL) {
      sl__free(w);
      goto nomem;
    }
    size_t bound = libdeflate_deflate_compress_bound(w->ld, g->block);
    if (bound > w->cap)
      w->cap = bound;
  }
#endif
  /* The block format: a whole member, header and trailer around the
   * deflate data. */
  if (g->blocks)
    w->cap += (g->header_len > g->bare_len ? g->header_len : g->bare_len) + 8;
  w->out = sl__malloc(w->cap);
  if (w->out == NULL) {
    pgz_worker_fini(owner, w);
    goto nomem;
  }
#ifdef HAVE_LIBDEFLATE
  if (g->engine == SL_ZLIB_ENGINE_LIBDEFLATE) {
    *wctx = w;
    return 0;
  }
#endif
#ifdef HAVE_ISAL
  if (g->engine == SL_ZLIB_ENGINE_ISAL) {
    w->is = sl__malloc(sizeof *w->is);
    size_t lb = isal_level_buf_size(g->level);
    w->level_buf = lb ? sl__malloc(lb) : NULL;
    if (w->is == NULL || (lb && w->level_buf == NULL)) {
      pgz_worker_fini(owner, w);
      goto nomem;
    }
    *wctx = w;
    return 0;
  }
#endif
  w->strm.zalloc = z_alloc;
  w->strm.zfree = z_free;
  zr = deflateInit2(&w->strm, g->level, Z_DEFLATED, -15, g->mem_level,
                    Z_DEFAULT_STRATEGY);
  if (zr != Z_OK) {
    sl__free(w->out);
    sl__free(w);
    return zlib_error(g->stage, "deflate", zr);
  }
  w->strm_ready = true;
  *wctx = w;
  return 0;
nomem:
  sl_stage_set_error(g->stage, "deflate: out of memory");
  return SL_ENOMEM;
}

static void pgz_worker_fini(void *owner, void *wctx) {
  pgz_worker *w = wctx;

  (void)owner;
  if (w == NULL)
    return;
  if (w->strm_ready)
    deflateEnd(&w->strm);
#ifdef HAVE_ISAL
  sl__free(w->is);
  sl__free(w->level_buf);
#endif
#ifdef HAVE_LIBDEFLATE
  libdeflate_free_compressor(w->ld);
#endif
  sl__free(w->out);
  sl__free(w);
}

/* Double the worker's output area, keeping the used bytes that deflate
 * wrote. */
static int pgz_worker_grow(pgz *g, pgz_worker *w) {
  size_t cap = w->cap * 2;
  unsigned char *grown = cap > UINT_MAX ? NULL : sl__realloc(w->out, cap);

  if (grown == NULL) {
    sl_stage_set_error(g->stage, "deflate: out of memory");
    return SL_ENOMEM;
  }
  w->out = grown;
  w->cap = cap;
  return 0;
}

/* ---- blocks that do not compress ---- */

/* Pearson's chi-squared statistic of n bytes counted in h against the
 * uniform distribution. For bytes close to uniform, chi2 / n / (16 ln 2)
 * is the fraction by which the best order-0 (Huffman) code could shrink
 * them. */
static double chi2_uniform(const uint32_t h[256], size_t n) {
  double sumsq = 0;

  for (int i = 0; i < 256; i++)
    sumsq += (double)h[i] * h[i];
  return 256.0 * sumsq / (double)n - (double)n;
}

static uint32_t load32(const unsigned char *p) {
  uint32_t v;

  memcpy(&v, p, sizeof v);
  return v;
}

/* Whether deflate would store the block as it is: compressed or encrypted
 * data, whose bytes are close to uniform and do not repeat. zlib spends
 * about as long looking for matches in such a block as in text (at level
 * 1 as at level 9), only to find that a stored block is the shortest.
 * Three tests, each one run only when the one before passes, so that
 * compressible data pays for the first alone (a thousand bytes read):
 *
 *   1. four 256-byte samples spread over the block are not far from
 *      uniform (text and most binary formats fail here);
 *   2. the whole block is close enough to uniform that a Huffman code
 *      could save at most 0.14% of it (chi2 < n / 64);
 *   3. it holds no run of repeated bytes worth a match: one position in
 *      16, chosen by the hash of its four bytes (so that the positions of
 *      two copies of a string are chosen alike), is looked up in a table
 *      of the last such position per hash; a hit is the same four bytes
 *      at most 32 KiB back. Random bytes give none; a repeat of about a
 *      hundred bytes or more gives several, and more than n / 32768 hits
 *      make the block compressible.
 *
 * The verdict depends on the block's bytes alone, so the output still
 * does not depend on the workers. A block it calls incompressible could
 * have been deflated by at most a few tenths of a percent smaller. */
static bool looks_incompressible(pgz_worker *w, const unsigned char *p,
                                 size_t n) {
  uint32_t h[4][256];
  size_t hits = 0, limit = n >> 15;

  if (n < STORE_MIN)
    return false;
  memset(h, 0, sizeof h[0]);
  for (size_t k = 0; k < 4; k++) {
    const unsigned char *q = p + (n - 256) / 3 * k;
    for (size_t i = 0; i < 256; i++)
      h[0][q[i]]++;
  }
  if (chi2_uniform(h[0], 1024) > 2048)
    return false;

  memset(h, 0, sizeof h); /* four tables: no stall on repeated bytes */
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    h[0][p[i]]++;
    h[1][p[i + 1]]++;
    h[2][p[i + 2]]++;
    h[3][p[i + 3]]++;
  }
  for (; i < n; i++)
    h[0][p[i]]++;
  for (int b = 0; b < 256; b++)
    h[0][b] += h[1][b] + h[2][b] + h[3][b];
  if (chi2_uniform(h[0], n) >= (double)n / 64)
    return false;

  memset(w->seen, 0, sizeof w->seen);
  for (i = 0; i + 4 <= n; i++) {
    uint32_t v = load32(p + i), x = v * 2654435761u;
    if (x >> 28 != 0)
      continue;
    uint32_t *slot = &w->seen[(x >> 16) & ((1u << SEEN_BITS) - 1)];
    if (*slot != 0) {
      size_t at = *slot - 1;
      if (i - at <= DICT_SIZE && load32(p + at) == v && ++hits > limit)
        return false;
    }
    *slot = (uint32_t)(i + 1);
  }
  return true;
}

/* The room put_stored needs for n bytes. */
static size_t stored_size(size_t n) {
  return n + 5 * (n / STORED_MAX + 1) + 5;
}

/* Write n bytes at p as stored deflate blocks at out, byte for byte what
 * zlib writes at level 0: blocks of at most 65535 bytes, each a header
 * byte (BFINAL, type 00, padding), LEN and its complement; the last of
 * the stream's last block has BFINAL set, and any other block ends with
 * the sync flush's empty stored block. The block starts on a byte
 * boundary (after the header or another block's flush), so no bits are
 * pending. Returns the bytes written. */
static size_t put_stored(unsigned char *out, const unsigned char *p, size_t n,
                         bool last) {
  unsigned char *o = out;

  do {
    size_t k = n < STORED_MAX ? n : STORED_MAX;
    n -= k;
    *o++ = last && n == 0;
    *o++ = (unsigned char)(k & 0xff);
    *o++ = (unsigned char)(k >> 8);
    *o++ = (unsigned char)(~k & 0xff);
    *o++ = (unsigned char)((~k >> 8) & 0xff);
    memcpy(o, p, k);
    o += k;
    p += k;
  } while (n > 0);
  if (!last) {
    static const unsigned char sync[5] = {0, 0, 0, 0xff, 0xff};
    memcpy(o, sync, sizeof sync);
    o += sizeof sync;
  }
  return (size_t)(o - out);
}

/* Deflate the n bytes at p into the worker's output area: reset, the
 * job's dictionary, then a sync flush or (the last block) a finish. Sets
 * *olen to the bytes written. */
static int deflate_block(pgz *g, pgz_worker *w, const pgz_job *job,
                         const unsigned char *p, size_t n, size_t at,
                         size_t *olen) {
  int flush = job->last ? Z_FINISH : Z_SYNC_FLUSH;
  int zr, rc;

  deflateReset(&w->strm);
  if (job->dict != NULL && sl_buf_len(job->dict) > 0) {
    size_t dlen = sl_buf_len(job->dict);
    size_t take = dlen < DICT_SIZE ? dlen : DICT_SIZE;
    zr = deflateSetDictionary(&w->strm, sl_buf_data(job->dict) + dlen - take,
                              (uInt)take);
    if (zr != Z_OK)
      return zlib_error(g->stage, "deflate", zr);
  }
  w->strm.next_in = p;
  w->strm.avail_in = (uInt)n;
  w->strm.next_out = w->out + at;
  w->strm.avail_out = (uInt)(w->cap - at);
  for (;;) {
    /* A sync flush wants more than six bytes of room, or it may emit its
     * marker twice. */
    if (w->strm.avail_out <= 6) {
      size_t used = (size_t)(w->strm.next_out - w->out);
      if ((rc = pgz_worker_grow(g, w)) != 0)
        return rc;
      w->strm.next_out = w->out + used;
      w->strm.avail_out = (uInt)(w->cap - used);
    }
    uInt room = w->strm.avail_out;
    zr = deflate(&w->strm, flush);
    if (zr == Z_STREAM_END)
      break;
    if (zr == Z_OK && flush == Z_SYNC_FLUSH && w->strm.avail_out != 0)
      break; /* the flush is complete */
    if ((zr != Z_OK && zr != Z_BUF_ERROR) ||
        (zr == Z_BUF_ERROR && w->strm.avail_out == room))
      return zlib_error(g->stage, "deflate", zr); /* cannot happen */
  }
  *olen = (size_t)(w->strm.next_out - w->out) - at;
  return 0;
}

#ifdef HAVE_ISAL
/* deflate_block on ISA-L: a fresh stream at the level, the job's
 * dictionary (isal_deflate_set_dict), then the block with a sync flush
 * (an empty stored block: the output ends on a byte boundary) or, for the
 * last block, the end of the stream. */
static int isal_block(pgz *g, pgz_worker *w, const pgz_job *job,
                      const unsigned char *p, size_t n, size_t at,
                      size_t *olen) {
  struct isal_zstream *s = w->is;
  size_t used = at;
  int rc;

  isal_deflate_init(s);
  s->level = (uint32_t)g->level;
  s->level_buf = w->level_buf;
  s->level_buf_size = (uint32_t)isal_level_buf_size(g->level);
  s->gzip_flag = IGZIP_DEFLATE;
  if (job->dict != NULL && sl_buf_len(job->dict) > 0) {
    size_t dlen = sl_buf_len(job->dict);
    size_t take = dlen < DICT_SIZE ? dlen : DICT_SIZE;
    if (isal_deflate_set_dict(s, sl_buf_data(job->dict) + dlen - take,
                              (uint32_t)take) != COMP_OK) {
      sl_stage_set_error(g->stage, "deflate: isa-l refused the dictionary");
      return SL_EIO;
    }
  }
  s->end_of_stream = job->last;
  s->flush = job->last ? NO_FLUSH : SYNC_FLUSH;
  s->next_in = (uint8_t *)(uintptr_t)p;
  s->avail_in = (uint32_t)n;
  for (;;) {
    s->next_out = w->out + used;
    s->avail_out = (uint32_t)(w->cap - used);
    uint32_t room = s->avail_out;
    if (isal_deflate(s) != COMP_OK) {
      sl_stage_set_error(g->stage, "deflate: isa-l error");
      return SL_EIO;
    }
    used += room - s->avail_out;
    bool done =
        s->avail_in == 0 &&
        (job->last ? s->internal_state.state == ZSTATE_END : s->avail_out > 0);
    if (done)
      break;
    if (s->avail_out == 0 && (rc = pgz_worker_grow(g, w)) != 0)
      return rc;
  }
  *olen = used - at;
  return 0;
}
#endif

#ifdef HAVE_LIBDEFLATE
/* A whole block on libdeflate, as one raw deflate stream: the worker's
 * area has room for libdeflate's bound (pgz_worker_init). */
static int libdeflate_block(pgz *g, pgz_worker *w, const unsigned char *p,
                            size_t n, size_t at, size_t *olen) {
  size_t r = libdeflate_deflate_compress(w->ld, p, n, w->out + at, w->cap - at);

  if (r == 0) { /* cannot happen: the area holds the bound */
    sl_stage_set_error(g->stage, "deflate: libdeflate ran out of room");
    return SL_EIO;
  }
  *olen = r;
  return 0;
}
#endif

/* Compress one block (owned by the call) into *out. */
static int pgz_run(void *owner, void *wctx, sl_buf *in, void *arg,
                   sl_buf **out) {
  pgz *g = owner;
  pgz_worker *w = wctx;
  pgz_job *job = arg;
  const unsigned char *p = sl_buf_data(in);
  size_t n = sl_buf_len(in), olen = 0;
  sl_buf *b = NULL;
  int rc;

  /* The block format: the member's header first (the caller's on the
   * first, a bare one on the others), the deflate data after it. */
  const unsigned char *hdr = job->first ? g->header : g->bare;
  size_t at = g->blocks ? (job->first ? g->header_len : g->bare_len) : 0;

  *out = NULL;
  job->crc = sl__crc32(0, p, n);
  if (g->store && looks_incompressible(w, p, n)) {
    if (at + stored_size(n) > w->cap) /* cannot happen: cap >= its bound */
      rc = zlib_error(g->stage, "deflate", Z_BUF_ERROR);
    else {
      olen = put_stored(w->out + at, p, n, job->last);
      rc = 0;
    }
  }
#ifdef HAVE_ISAL
  else if (g->engine == SL_ZLIB_ENGINE_ISAL)
    rc = isal_block(g, w, job, p, n, at, &olen);
#endif
#ifdef HAVE_LIBDEFLATE
  else if (g->engine == SL_ZLIB_ENGINE_LIBDEFLATE)
    rc = libdeflate_block(g, w, p, n, at, &olen);
#endif
  else
    rc = deflate_block(g, w, job, p, n, at, &olen);
  if (rc == 0 && g->blocks) {
    /* The trailer, then the member's length into its header. */
    if (w->cap - at - olen < 8 && (rc = pgz_worker_grow(g, w)) != 0)
      goto out;
    memcpy(w->out, hdr, at);
    put_le32(w->out + at + olen, job->crc);
    put_le32(w->out + at + olen + 4, (uint32_t)n);
    olen += at + 8;
    if (olen > UINT32_MAX) { /* cannot happen: blocks are at most 256 MiB */
      sl_stage_set_error(g->stage, "deflate: a member over 4 GiB");
      rc = SL_EIO;
      goto out;
    }
    sl__gzip_block_header_set(w->out, at, (uint32_t)olen);
  }
  /* The dictionary has been used: let the block go while this job's
   * result waits for the ones before it. */
  sl_buf_unref(job->dict);
  job->dict = NULL;
  if (rc != 0)
    goto out;
  /* The result goes into a pooled buffer of its own size, so that what
   * waits in the rings weighs what it holds. A block that did not
   * compress comes out a few bytes longer than it went in, more than a
   * pool whose buffers are a block long recycles: such a result is cut
   * in two pooled parts instead of taking an allocation per block. */
  size_t first = olen, most = sl_pool_buf_size(sl_stage_pool(g->stage));
  if (most != 0 && olen > most && olen - most <= most)
    first = most;
  rc = sl_buf_new_copy(sl_stage_pool(g->stage), w->out, first, &b);
  if (rc == 0 && first < olen)
    rc = sl_buf_new_copy(sl_stage_pool(g->stage), w->out + first, olen - first,
                         &job->rest);
  if (rc != 0) {
    sl_buf_unref(b);
    sl_stage_set_error(g->stage, "out of memory for a compressed block");
    goto out;
  }
  *out = b;
out:
  sl_buf_unref(in);
  return rc;
}

/* ---- the stage's thread ---- */

static void job_put(pgz *g, pgz_job *job) {
  sl_buf_unref(job->dict);
  sl_buf_unref(job->rest);
  job->dict = job->rest = NULL;
  job->next = g->free_jobs;
  g->free_jobs = job;
}

/* A job that will never be emitted: a failure or a stop cut it short. Any
 * thread; the struct itself stays where it is until destroy. */
static void pgz_drop(void *owner, void *arg) {
  pgz_job *job = arg;

  (void)owner;
  sl_buf_unref(job->dict);
  sl_buf_unref(job->rest);
  job->dict = job->rest = NULL;
}

static int push_copy(pgz *g, const unsigned char *p, size_t n) {
  sl_buf *b = NULL;
  int rc = sl_stage_buf(g->stage, n, &b);

  if (rc != 0)
    return rc;
  memcpy(sl_buf_data(b), p, n);
  sl_buf_set_len(b, n);
  g->bytes_out += n;
  return sl_stage_push(g->stage, b);
}

static int header_push(pgz *g) {
  if (g->header_sent)
    return 0;
  g->header_sent = true;
  return push_copy(g, g->header, g->header_len);
}

/* Push a part of a result (owned), if any. */
static int result_push(pgz *g, sl_buf *part) {
  if (part == NULL)
    return 0;
  g->bytes_out += sl_buf_len(part);
  return sl_stage_push(g->stage, part);
}

/* A result, in order: the header first, then the block (in one part or
 * two); its CRC joins the stream's. */
static int pgz_emit(void *owner, sl_buf *out, void *arg) {
  pgz *g = owner;
  pgz_job *job = arg;
  sl_buf *rest = job->rest;
  int rc = g->blocks ? 0 : header_push(g); /* a member has its own */

  job->rest = NULL;
  if (rc == 0)
    rc = result_push(g, out);
  else
    sl_buf_unref(out);
  if (rc == 0)
    rc = result_push(g, rest);
  else
    sl_buf_unref(rest);
  if (rc == 0) {
    g->crc = (uint32_t)crc32_combine(g->crc, job->crc, (z_off_t)job->len);
    g->bytes_in += job->len;
  }
  job_put(g, job);
  return rc;
}

/* Hand the block being filled (an empty one when there is none) to the
 * engine, with the block before it as its dictionary. */
static int submit_block(pgz *g, bool last) {
  pgz_job *job = g->free_jobs;
  sl_buf *b = g->cur;
  int rc;

  if (job == NULL) { /* cannot happen: slots + 1 jobs exist */
    sl_stage_set_error(g->stage, "no free job");
    return SL_EIO;
  }
  if (b == NULL && (rc = sl_stage_buf(g->stage, 1, &b)) != 0)
    return rc;
  g->cur = NULL;
  g->free_jobs = job->next;
  job->next = NULL;
  job->dict = g->prev; /* the stage's reference moves to the job */
  job->len = sl_buf_len(b);
  job->rest = NULL;
  job->crc = 0;
  /* The block format: every block a stream of its own, finished, with no
   * dictionary. */
  job->last = last || g->blocks;
  job->first = g->submitted++ == 0;
  g->prev = last || g->blocks ? NULL : sl_buf_ref(b);
  return sl__map_submit(g->m, b, job);
}

static int pgz_transform(sl_stage *st, void *ctx, sl_buf *in) {
  pgz *g = ctx;
  const unsigned char *p = sl_buf_data(in);
  size_t n = sl_buf_len(in);
  int rc = 0;

  if (sl_buf_is_object(in)) {
    sl_buf_unref(in);
    sl_stage_set_error(st, "an object chunk in a byte stream");
    return SL_EINVAL;
  }
  /* A chunk of exactly one block that starts a block is that block: it
   * goes to a worker as it is, with no copy. A reader whose buffers are a
   * block long (sgzip's, on a regular file) hands over nothing else. The
   * chunk is only read from then on, as a block and as a dictionary, so
   * it may be shared (a tee upstream). */
  if (g->cur == NULL && n == g->block) {
    g->cur = in;
    return submit_block(g, false);
  }
  while (n > 0) {
    if (g->cur == NULL && (rc = sl_stage_buf(st, g->block, &g->cur)) != 0) {
      sl_stage_set_error(st, "out of memory for a block");
      break;
    }
    size_t have = sl_buf_len(g->cur), take = g->block - have;
    if (take > n)
      take = n;
    memcpy(sl_buf_data(g->cur) + have, p, take);
    sl_buf_set_len(g->cur, have + take);
    p += take;
    n -= take;
    if (have + take == g->block && (rc = submit_block(g, false)) != 0)
      break;
  }
  sl_buf_unref(in);
  return rc;
}

/* A flush marker: the block being filled leaves now, then everything
 * before it. */
static int pgz_sync(sl_stage *st, void *ctx) {
  pgz *g = ctx;
  int rc = 0;

  (void)st;
  if (g->cur != NULL && sl_buf_len(g->cur) > 0)
    rc = submit_block(g, false);
  if (rc == 0)
    rc = sl__map_drain(g->m);
  if (rc == 0 && !g->blocks) /* a member is never pushed in part */
    rc = header_push(g);
  return rc;
}

/* End of stream: the last block, every result, the trailer. */
static int pgz_flush(sl_stage *st, void *ctx) {
  pgz *g = ctx;
  unsigned char trailer[8];
  int rc;

  (void)st;
  /* The block format ends with the last block that holds data; an empty
   * stream is one member of empty content. */
  if (!g->blocks || g->submitted == 0 ||
      (g->cur != NULL && sl_buf_len(g->cur) > 0))
    rc = submit_block(g, true);
  else
    rc = 0;
  if (rc == 0)
    rc = sl__map_drain(g->m);
  if (rc == 0 && !g->blocks) {
    put_le32(trailer, g->crc);
    put_le32(trailer + 4, (uint32_t)g->bytes_in);
    rc = push_copy(g, trailer, sizeof trailer);
  }
  sl__map_stop(g->m);
  if (rc == 0) {
    pthread_mutex_lock(&g->mu);
    g->finished = true;
    g->r_crc = g->crc;
    g->r_in = g->bytes_in;
    g->r_out = g->bytes_out;
    pthread_mutex_unlock(&g->mu);
  }
  return rc;
}

/* The stage's thread is about to end, however it ends. */
static void pgz_exit(sl_stage *st) {
  pgz *g = sl_stage_ctx(st);

  sl__map_stop(g->m);
}

static void pgz_destroy(void *ctx) {
  pgz *g = ctx;

  if (g == NULL)
    return;
  sl__map_free(g->m);
  sl_buf_unref(g->cur);
  sl_buf_unref(g->prev);
  if (g->jobs != NULL)
    for (unsigned i = 0; i <= g->slots; i++)
      sl_buf_unref(g->jobs[i].dict);
  sl__free(g->jobs);
  sl__free(g->header);
  sl__free(g->bare);
  pthread_mutex_destroy(&g->mu);
  sl__free(g);
}

int sl_pgzip_opts_init(sl_pgzip_opts *opts) {
  if (opts == NULL)
    return SL_EINVAL;
  memset(opts, 0, sizeof *opts);
  opts->level = SL_ZLIB_LEVEL_DEFAULT;
  opts->mem_level = MEM_LEVEL_DEFAULT;
  return 0;
}

/* AUTO's choice at each level 0..12, engine and format, by measurement
 * (sgzip(1) has the table and the figures): the fastest that writes no
 * more than pigz at the level. libdeflate, in the block format with its
 * default 1 MiB blocks, writes less than pigz at every level, in about
 * half zlib's CPU time. ISA-L is faster still but writes more than pigz
 * at each of its levels, in either format, so AUTO never picks it.
 * Without libdeflate, zlib in pigz's format, whose chained blocks cost
 * next to nothing against pigz. Level 0 stores: zlib, pigz's format. */
static void pgz_auto(int level, int *engine, int *format) {
  *engine = SL_ZLIB_ENGINE_ZLIB;
  *format = SL_PGZIP_FORMAT_PIGZ;
  if (level >= 1 && sl__engine_built(SL_ZLIB_ENGINE_LIBDEFLATE)) {
    *engine = SL_ZLIB_ENGINE_LIBDEFLATE;
    *format = SL_PGZIP_FORMAT_BLOCKS;
  }
}

/* The engine, format and level (0..12) sl_pgzip_new uses for o, or
 * SL_EINVAL: an engine not built in, or unable to do the level or the
 * format. ISA-L does levels 0 to 3, zlib 0 to 9, libdeflate 0 to 12 and
 * only the block format (it has no dictionary to chain blocks with). */
static int pgz_choose(const sl_pgzip_opts *o, int *engine, int *format,
                      int *level) {
  int l = o->level == SL_ZLIB_LEVEL_DEFAULT ? 6 : o->level;
  int e = o->engine, f = o->format;

  if (l < 0 || l > 12 || sl_zlib_engine_name(e) == NULL ||
      f < SL_PGZIP_FORMAT_AUTO || f > SL_PGZIP_FORMAT_BLOCKS)
    return SL_EINVAL;
  if (e == SL_ZLIB_ENGINE_AUTO && f == SL_PGZIP_FORMAT_AUTO) {
    pgz_auto(l, &e, &f);
  } else if (e == SL_ZLIB_ENGINE_AUTO) {
    int ae, af;
    pgz_auto(l, &ae, &af);
    /* pigz's format: ISA-L at 1 to 3 (faster than zlib there), zlib
     * above; the block format: the table's engine, or ISA-L at 1 to 3
     * and zlib above where the table says zlib. */
    if (f == SL_PGZIP_FORMAT_PIGZ || ae == SL_ZLIB_ENGINE_ZLIB)
      ae = sl__engine_built(SL_ZLIB_ENGINE_ISAL) && l >= 1 && l <= 3
               ? SL_ZLIB_ENGINE_ISAL
               : SL_ZLIB_ENGINE_ZLIB;
    e = ae;
  } else if (f == SL_PGZIP_FORMAT_AUTO) {
    f = e == SL_ZLIB_ENGINE_LIBDEFLATE ? SL_PGZIP_FORMAT_BLOCKS
                                       : SL_PGZIP_FORMAT_PIGZ;
  }
  if (!sl__engine_built(e))
    return SL_EINVAL;
  if (l > (e == SL_ZLIB_ENGINE_LIBDEFLATE ? 12
           : e == SL_ZLIB_ENGINE_ISAL     ? 3
                                          : 9))
    return SL_EINVAL;
  if (e == SL_ZLIB_ENGINE_LIBDEFLATE && f != SL_PGZIP_FORMAT_BLOCKS)
    return SL_EINVAL;
  *engine = e;
  *format = f;
  *level = l;
  return 0;
}

static bool pgz_opts_valid(const sl_pgzip_opts *o) {
  const sl_gzip_header *h = o->header;
  int e, f, l;

  if (o->name != NULL && o->name[0] == '\0')
    return false;
  if (o->level < SL_ZLIB_LEVEL_DEFAULT)
    return false;
  if (o->mem_level < 0 || o->mem_level > 9)
    return false;
  if (o->block_size != 0 && (o->block_size < SL_PGZIP_BLOCK_MIN ||
                             o->block_size > SL_PGZIP_BLOCK_MAX))
    return false;
  if (o->workers > SL_MAP_MAX_WORKERS || o->in_flight > IN_FLIGHT_MAX)
    return false;
  if (pgz_choose(o, &e, &f, &l) != 0)
    return false;
  if (h != NULL &&
      (h->extra_len > (f == SL_PGZIP_FORMAT_BLOCKS ? 65535 - 8 : 65535) ||
       (h->extra == NULL && h->extra_len)))
    return false;
  return true;
}

int sl_pgzip_opts_resolve(sl_pgzip_opts *opts) {
  int e, f, l;

  if (opts == NULL || !pgz_opts_valid(opts))
    return SL_EINVAL;
  pgz_choose(opts, &e, &f, &l);
  opts->engine = e;
  opts->format = f;
  opts->level = l;
  if (opts->block_size == 0)
    opts->block_size = f == SL_PGZIP_FORMAT_BLOCKS ? SL_PGZIP_BLOCKS_DEFAULT
                                                   : SL_PGZIP_BLOCK_DEFAULT;
  return 0;
}

int sl_pgzip_new(sl_stage **out, const sl_pgzip_opts *opts) {
  static const sl_stage_ops stage_ops = {.transform = pgz_transform,
                                         .flush = pgz_flush,
                                         .sync = pgz_sync,
                                         .destroy = pgz_destroy};
  static const sl__map_ops engine_ops = {.run = pgz_run,
                                         .emit = pgz_emit,
                                         .drop = pgz_drop,
                                         .worker_init = pgz_worker_init,
                                         .worker_fini = pgz_worker_fini};
  sl_pgzip_opts o;
  sl_stage *s = NULL;
  pgz *g;
  int rc;

  if (out == NULL)
    return SL_EINVAL;
  *out = NULL;
  if (opts != NULL)
    o = *opts;
  else
    sl_pgzip_opts_init(&o);
  if (sl_pgzip_opts_resolve(&o) != 0)
    return SL_EINVAL;

  g = sl__calloc(1, sizeof *g);
  if (g == NULL)
    return SL_ENOMEM;
  if (pthread_mutex_init(&g->mu, NULL) != 0) {
    sl__free(g);
    return SL_ENOMEM;
  }
  g->level = o.level;
  g->engine = o.engine;
  g->blocks = o.format == SL_PGZIP_FORMAT_BLOCKS;
  g->mem_level = o.mem_level ? o.mem_level : MEM_LEVEL_DEFAULT;
  g->store = g->level > 0 && !o.deflate_incompressible;
  g->block = o.block_size;
  g->workers = o.workers;
  if (g->workers == 0) {
    g->workers = sl_cpu_count();
    if (g->workers > SL_MAP_MAX_WORKERS)
      g->workers = SL_MAP_MAX_WORKERS;
  }
  g->in_flight = o.in_flight ? o.in_flight : 2 * g->workers + 2;
  g->slots = g->in_flight + (g->workers > 4 ? 2 * (g->workers - 4) : 0);
  g->crc = (uint32_t)crc32(0L, Z_NULL, 0);

  if (g->blocks) {
    rc = sl__gzip_block_header_make(o.header, g->level, &g->header,
                                    &g->header_len);
    if (rc == 0)
      rc = sl__gzip_block_header_make(NULL, g->level, &g->bare, &g->bare_len);
  } else {
    rc = sl__gzip_header_make(o.header, g->level, Z_DEFAULT_STRATEGY,
                              &g->header, &g->header_len);
  }
  if (rc != 0)
    goto fail;
  g->jobs = sl__calloc((size_t)g->slots + 1, sizeof *g->jobs);
  if (g->jobs == NULL) {
    rc = SL_ENOMEM;
    goto fail;
  }
  for (unsigned i = 0; i <= g->slots; i++) {
    g->jobs[i].next = g->free_jobs;
    g->free_jobs = &g->jobs[i];
  }

  rc = sl_stage_new(&s, o.name ? o.name : "pgzip", &stage_ops, g);
  if (rc != 0)
    goto fail;
  g->stage = s;
  rc = sl__map_new(&g->m, s, &engine_ops, g, g->workers, g->slots, g->in_flight,
                   false);
  if (rc != 0) {
    sl_stage_free(s); /* destroys g */
    return rc;
  }
  s->on_exit = pgz_exit;
  *out = s;
  return 0;
fail:
  pgz_destroy(g);
  return rc;
}

/* The context of a pgzip stage, NULL for any other stage. */
static pgz *pgz_of(const sl_stage *s) {
  if (s == NULL || s->ops.transform != pgz_transform)
    return NULL;
  return s->ctx;
}

int sl_pgzip_result(const sl_stage *stage, uint32_t *crc, uint64_t *bytes_in,
                    uint64_t *bytes_out) {
  pgz *g = pgz_of(stage);
  int rc;

  if (g == NULL)
    return SL_EINVAL;
  pthread_mutex_lock(&g->mu);
  if (g->finished) {
    if (crc != NULL)
      *crc = g->r_crc;
    if (bytes_in != NULL)
      *bytes_in = g->r_in;
    if (bytes_out != NULL)
      *bytes_out = g->r_out;
    rc = 0;
  } else {
    /* The stage's thread ended without finishing: it never will. */
    rc = atomic_load(&stage->end_ns) != 0 ? SL_ECANCELED : SL_EBUSY;
  }
  pthread_mutex_unlock(&g->mu);
  return rc;
}

/* ========================================================================
 * Decompression: inflate on one stage, check on the next
 * ===================================================================== */

/* A member's trailer, from the inflating stage to the checking one. */
typedef struct member_end {
  uint64_t len;   /* the member's output bytes */
  uint64_t off;   /* input offset of its trailer */
  uint32_t crc;   /* the CRC-32 stored there */
  bool unchecked; /* checked already (a block member): only counted */
} member_end;

/* The queue between the two stages: a ring of entries that grows when
 * full, under mu; freed by the last of the two stages to go. */
typedef struct trailer_queue {
  pthread_mutex_t mu;
  atomic_int refs;
  member_end *q;
  size_t cap, head, len;
} trailer_queue;

static trailer_queue *queue_new(void) {
  trailer_queue *t = sl__calloc(1, sizeof *t);

  if (t == NULL)
    return NULL;
  if (pthread_mutex_init(&t->mu, NULL) != 0) {
    sl__free(t);
    return NULL;
  }
  atomic_init(&t->refs, 1);
  return t;
}

static void queue_unref(trailer_queue *t) {
  if (t == NULL || atomic_fetch_sub(&t->refs, 1) != 1)
    return;
  pthread_mutex_destroy(&t->mu);
  sl__free(t->q);
  sl__free(t);
}

static int queue_push(trailer_queue *t, const member_end *e) {
  int rc = 0;

  pthread_mutex_lock(&t->mu);
  if (t->len == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 16;
    member_end *q = sl__malloc(cap * sizeof *q);
    if (q == NULL) {
      rc = SL_ENOMEM;
      goto out;
    }
    for (size_t i = 0; i < t->len; i++)
      q[i] = t->q[(t->head + i) % t->cap];
    sl__free(t->q);
    t->q = q;
    t->cap = cap;
    t->head = 0;
  }
  t->q[(t->head + t->len) % t->cap] = *e;
  t->len++;
out:
  pthread_mutex_unlock(&t->mu);
  return rc;
}

/* Copy the oldest entry into *e; false when there is none. */
static bool queue_peek(trailer_queue *t, member_end *e) {
  bool have;

  pthread_mutex_lock(&t->mu);
  have = t->len > 0;
  if (have)
    *e = t->q[t->head];
  pthread_mutex_unlock(&t->mu);
  return have;
}

static void queue_pop(trailer_queue *t) {
  pthread_mutex_lock(&t->mu);
  if (t->len > 0) {
    t->head = (t->head + 1) % t->cap;
    t->len--;
  }
  pthread_mutex_unlock(&t->mu);
}

/* ---- the inflating stage: zlib.c's gunzip, reporting member ends ---- */

static int queue_member_end(void *arg, uint32_t crc, uint64_t len,
                            uint64_t off) {
  member_end e = {.len = len, .off = off, .crc = crc};

  return queue_push(arg, &e);
}

static int queue_pass(void *arg, uint64_t len) {
  member_end e = {.len = len, .unchecked = true};

  return queue_push(arg, &e);
}

static void queue_release(void *arg) {
  queue_unref(arg);
}

/* ---- the checking stage ---- */

typedef struct pgchk {
  trailer_queue *q;
  uint32_t crc;  /* CRC-32 of the member's bytes so far */
  uint64_t done; /* their count */
} pgchk;

/* Count p[0..n), closing every member whose length is reached. */
static int chk_count(sl_stage *st, pgchk *c, const unsigned char *p, size_t n) {
  member_end e;

  for (;;) {
    bool have = queue_peek(c->q, &e);
    if (have && c->done == e.len) {
      if (!e.unchecked && c->crc != e.crc)
        return data_error(st,
                          "crc32 mismatch at input byte %llu "
                          "(stored 0x%08x, computed 0x%08x)",
                          (unsigned long long)e.off, (unsigned)e.crc,
                          (unsigned)c->crc);
      queue_pop(c->q);
      c->crc = sl__crc32(0, NULL, 0);
      c->done = 0;
      continue;
    }
    if (n == 0)
      return 0;
    size_t take = n;
    if (have && e.len - c->done < take)
      take = (size_t)(e.len - c->done);
    if (!have || !e.unchecked)
      c->crc = sl__crc32(c->crc, p, take);
    c->done += take;
    p += take;
    n -= take;
  }
}

static int chk_transform(sl_stage *st, void *ctx, sl_buf *in) {
  int rc = chk_count(st, ctx, sl_buf_data(in), sl_buf_len(in));

  if (rc != 0) {
    sl_buf_unref(in);
    return rc;
  }
  return sl_stage_push(st, in);
}

static int chk_flush(sl_stage *st, void *ctx) {
  pgchk *c = ctx;
  member_end e;
  int rc = chk_count(st, c, NULL, 0);

  if (rc != 0)
    return rc;
  if (c->done != 0 || queue_peek(c->q, &e)) { /* cannot happen */
    sl_stage_set_error(st, "the stream ended inside a member");
    return SL_EIO;
  }
  return 0;
}

static void chk_destroy(void *ctx) {
  pgchk *c = ctx;

  if (c == NULL)
    return;
  queue_unref(c->q);
  sl__free(c);
}

int sl_pgunzip_chain(sl_pipeline *p, sl_stage *src, sl_stage *next,
                     const sl_zlib_opts *opts) {
  return sl_pgunzip_chain_workers(p, src, next, opts, 0);
}

int sl_pgunzip_chain_workers(sl_pipeline *p, sl_stage *src, sl_stage *next,
                             const sl_zlib_opts *opts, unsigned workers) {
  static const sl_stage_ops chk_ops = {
      .transform = chk_transform, .flush = chk_flush, .destroy = chk_destroy};
  sl_stage *inf = NULL, *chk = NULL;
  trailer_queue *q = NULL;
  pgchk *c = NULL;
  char *chk_name = NULL;
  const char *name;
  int rc = SL_ENOMEM;

  if (p == NULL || src == NULL || next == NULL || workers > SL_MAP_MAX_WORKERS)
    return SL_EINVAL;
  name = opts != NULL && opts->name != NULL ? opts->name : "gunzip";
  q = queue_new();
  if (q == NULL)
    return SL_ENOMEM;
  atomic_fetch_add(&q->refs, 1); /* the inflating stage's */
  if ((rc = sl__bgunzip_new(&inf, opts, workers, queue_member_end, queue_pass,
                            q, queue_release)) != 0) {
    queue_unref(q);
    return rc;
  }
  rc = SL_ENOMEM;
  c = sl__calloc(1, sizeof *c);
  chk_name = sl__malloc(strlen(name) + sizeof "-check");
  if (c == NULL || chk_name == NULL)
    goto fail;
  strcpy(chk_name, name);
  strcat(chk_name, "-check");
  c->q = q; /* the creator's reference */
  q = NULL;
  c->crc = sl__crc32(0, NULL, 0);
  if ((rc = sl_stage_new(&chk, chk_name, &chk_ops, c)) != 0)
    goto fail;
  c = NULL;
  if ((rc = sl_pipeline_chain(p, src, inf, chk, next, NULL)) != 0)
    goto fail;
  sl__free(chk_name);
  return 0;
fail:
  sl_stage_free(chk);
  sl_stage_free(inf);
  chk_destroy(c);
  queue_unref(q);
  sl__free(chk_name);
  return rc;
}

int sl_pgunzip_trailing(const sl_stage *stage, uint64_t *offset, int *garbage) {
  return sl__bgunzip_trailing(stage, offset, garbage);
}

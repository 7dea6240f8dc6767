/* SPDX-License-Identifier: MIT */
/*
 * lines — a transform that emits one chunk per line (Node's readline,
 * split2).
 *
 * Each input chunk is scanned with memchr for '\n'. A line that lies
 * wholly inside one chunk is copied straight into its output buffer; the
 * bytes after the last '\n' of a chunk are kept in a partial-line buffer,
 * and the line they begin is assembled from it when its end arrives, in
 * whatever later chunk. flush emits a last line that has no terminator.
 *
 * The invariant that bounds memory: the partial line never holds more than
 * max_line + 1 bytes. A line is checked as it grows, so an endless line
 * fails as soon as it passes the limit instead of when it ends; the one
 * byte of slack is a '\r' that, with SL_LINES_CRLF, may turn out to be
 * half of a terminator when the next chunk starts with '\n'.
 *
 * Threads: the context is touched only by the stage's thread.
 */
#include "stage-int.h"

#include <sluice/stages.h>

#include <string.h>

#define PART_MIN_CAP ((size_t)256)

struct lines {
  unsigned flags;
  size_t max;          /* the longest line, terminator not counted */
  unsigned char *part; /* the partial line carried between chunks */
  size_t plen, pcap;
  uint64_t line;  /* number of the line being read, from 1 */
  uint64_t start; /* its first byte's offset in the input */
  uint64_t pos;   /* input bytes before the chunk being scanned */
};

static int too_long(sl_stage *stage, struct lines *l) {
  sl_stage_set_error(stage,
                     "line %llu longer than %zu bytes (starting at input "
                     "byte %llu)",
                     (unsigned long long)l->line, l->max,
                     (unsigned long long)l->start);
  return SL_EMSGSIZE;
}

/* Is a line that has len bytes so far, the last of them last, over the
 * limit even if it ends right here? With SL_LINES_CRLF a final '\r' may
 * still become part of the terminator, so it gets one byte of slack. */
static bool over(const struct lines *l, size_t len, unsigned char last) {
  if (len <= l->max)
    return false;
  return len - l->max > 1 || !(l->flags & SL_LINES_CRLF) || last != '\r';
}

/* The last byte of the partial line followed by seg[0..n-1]. */
static unsigned char last_byte(const struct lines *l, const unsigned char *seg,
                               size_t n) {
  if (n > 0)
    return seg[n - 1];
  return l->plen > 0 ? l->part[l->plen - 1] : 0;
}

static int part_append(struct lines *l, const unsigned char *seg, size_t n) {
  if (n == 0)
    return 0;
  if (l->plen + n > l->pcap) {
    size_t cap = l->pcap ? l->pcap : PART_MIN_CAP;
    while (cap < l->plen + n)
      cap = cap > SIZE_MAX / 2 ? l->plen + n : cap * 2;
    unsigned char *grown = sl__realloc(l->part, cap);
    if (!grown)
      return SL_ENOMEM;
    l->part = grown;
    l->pcap = cap;
  }
  memcpy(l->part + l->plen, seg, n);
  l->plen += n;
  return 0;
}

/* Emit one line: the first keep bytes of the partial line followed by the
 * bytes at seg (the line's bytes in this chunk, then its terminator); what
 * is not kept is the terminator being removed. */
static int emit(sl_stage *stage, struct lines *l, const unsigned char *seg,
                size_t keep) {
  sl_buf *b = NULL;
  int rc = sl_buf_new(sl_stage_pool(stage), keep, &b);
  if (rc != 0)
    return rc;
  unsigned char *d = sl_buf_data(b);
  size_t from_part = keep < l->plen ? keep : l->plen;
  if (from_part > 0)
    memcpy(d, l->part, from_part);
  if (keep > from_part)
    memcpy(d + from_part, seg, keep - from_part);
  sl_buf_set_len(b, keep);
  l->plen = 0;
  return sl_stage_push(stage, b);
}

static int lines_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  struct lines *l = ctx;
  if (sl_buf_is_object(in)) {
    sl_buf_unref(in);
    sl_stage_set_error(stage, "object buffer in a byte stream");
    return SL_EINVAL;
  }
  const unsigned char *d = sl_buf_data(in);
  size_t len = sl_buf_len(in), i = 0;
  int rc = 0;
  while (i < len && rc == 0) {
    const unsigned char *nl = memchr(d + i, '\n', len - i);
    size_t seg = (nl ? (size_t)(nl - d) : len) - i;
    if (!nl) {
      /* The line goes on in the next chunk. */
      if (over(l, l->plen + seg, last_byte(l, d + i, seg)))
        rc = too_long(stage, l);
      else
        rc = part_append(l, d + i, seg);
      break;
    }
    size_t content = l->plen + seg, term = 1;
    if ((l->flags & SL_LINES_CRLF) && content > 0 &&
        last_byte(l, d + i, seg) == '\r') {
      content--;
      term = 2;
    }
    if (content > l->max) {
      rc = too_long(stage, l);
      break;
    }
    size_t keep = content + (l->flags & SL_LINES_KEEP_NEWLINE ? term : 0);
    rc = emit(stage, l, d + i, keep);
    i += seg + 1;
    l->line++;
    l->start = l->pos + i;
  }
  l->pos += len;
  sl_buf_unref(in);
  return rc;
}

static int lines_flush(sl_stage *stage, void *ctx) {
  struct lines *l = ctx;
  if (l->plen == 0)
    return 0;
  /* No terminator: a final '\r' is an ordinary byte after all. */
  if (l->plen > l->max)
    return too_long(stage, l);
  return emit(stage, l, NULL, l->plen);
}

static void lines_destroy(void *ctx) {
  struct lines *l = ctx;
  sl__free(l->part);
  sl__free(l);
}

int sl_lines_new(sl_stage **out, const sl_lines_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  unsigned known = SL_LINES_KEEP_NEWLINE | SL_LINES_CRLF;
  if (opts && (opts->flags & ~known))
    return SL_EINVAL;
  struct lines *l = sl__calloc(1, sizeof *l);
  if (!l)
    return SL_ENOMEM;
  l->flags = opts ? opts->flags : 0;
  l->max = opts && opts->max_line ? opts->max_line : SL_LINES_MAX_DEFAULT;
  l->line = 1;
  sl_stage_ops ops = {.transform = lines_transform,
                      .flush = lines_flush,
                      .destroy = lines_destroy};
  int rc =
      sl_stage_new(out, opts && opts->name ? opts->name : "lines", &ops, l);
  if (rc != 0)
    sl__free(l);
  return rc;
}

/* SPDX-License-Identifier: MIT */
/*
 * The gzip format, read in one place (gzip-int.h): the header reader that
 * every gunzip path feeds, whatever engine inflates the data, so that a
 * bad field gets the same message at the same offset everywhere; the
 * trailer check; and sl_gzip_header_parse, the same reader over a buffer,
 * for programs (sgzip -l, -N) that need a header without a pipeline.
 *
 * The reader takes bytes one at a time, so that any field may be split
 * across input chunks, down to one byte per chunk. It checks the magic,
 * the method (8), the reserved flag bits and, when present, the header
 * CRC16; it keeps (keep) the first member's name and comment up to
 * SL_GZIP_FIELD_MAX bytes and its extra field, and notes where each field
 * starts, for sl_gzip_header_parse to point into its buffer.
 */
#include "engine-int.h"
#include "gzip-int.h"

#include <stdio.h>
#include <string.h>

/* Fields of a gzip header, in the order they come. */
enum hstep { HS_FIXED, HS_XLEN, HS_EXTRA, HS_NAME, HS_COMMENT, HS_HCRC };

uint32_t sl__le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

void sl__gzhdr_begin(sl__gzhdr *g, bool keep, uint64_t base) {
  g->step = HS_FIXED;
  g->keep = keep;
  if (keep)
    memset(&g->h, 0, sizeof g->h);
  g->nfixed = 0;
  g->ntail = 0;
  g->flg = 0;
  g->xlen = g->xgot = 0;
  g->hcrc = sl__crc32(0, NULL, 0);
  g->pos = 0;
  g->base = base;
  g->extra_pos = g->name_pos = g->comment_pos = 0;
}

void sl__gzhdr_free(sl__gzhdr *g) {
  sl__free(g->name.p);
  sl__free(g->comment.p);
  sl__free(g->extra);
  g->name.p = g->comment.p = NULL;
  g->extra = NULL;
}

/* Add byte c to a kept name or comment. */
static int field_add(struct sl__field *f, unsigned char c, unsigned bit,
                     unsigned *truncated) {
  if (f->len + 1 >= SL_GZIP_FIELD_MAX) {
    *truncated |= bit;
    return 0;
  }
  if (f->len + 2 > f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 64;
    if (cap > SL_GZIP_FIELD_MAX)
      cap = SL_GZIP_FIELD_MAX;
    char *grown = sl__realloc(f->p, cap);
    if (grown == NULL)
      return SL_ENOMEM;
    f->p = grown;
    f->cap = cap;
  }
  f->p[f->len++] = (char)c;
  f->p[f->len] = '\0';
  return 0;
}

/* An empty kept field, for a name or comment that is present. */
static int field_start(struct sl__field *f) {
  if (f->p == NULL) {
    f->p = sl__malloc(1);
    if (f->p == NULL)
      return SL_ENOMEM;
    f->cap = 1;
  }
  f->p[0] = '\0';
  f->len = 0;
  return 0;
}

/* The field that follows `after` in this header, or HS_FIXED when the
 * header is complete. */
static int next_step(unsigned flg, int after) {
  if (after < HS_XLEN && (flg & SL_GZIP_FEXTRA))
    return HS_XLEN;
  if (after < HS_NAME && (flg & SL_GZIP_FNAME))
    return HS_NAME;
  if (after < HS_COMMENT && (flg & SL_GZIP_FCOMMENT))
    return HS_COMMENT;
  if (after < HS_HCRC && (flg & SL_GZIP_FHCRC))
    return HS_HCRC;
  return HS_FIXED;
}

/* Move past a field. Returns SL__GZH_DONE at the end of the header. */
static int step(sl__gzhdr *g, int after) {
  g->step = next_step(g->flg, after);
  g->ntail = 0;
  if (g->step == HS_NAME) {
    g->name_pos = (size_t)g->pos;
    if (g->keep && field_start(&g->name) != 0)
      return SL_ENOMEM;
  }
  if (g->step == HS_COMMENT) {
    g->comment_pos = (size_t)g->pos;
    if (g->keep && field_start(&g->comment) != 0)
      return SL_ENOMEM;
  }
  if (g->step != HS_FIXED)
    return SL__GZH_MORE;
  if (g->keep) {
    g->h.name = g->flg & SL_GZIP_FNAME ? g->name.p : NULL;
    g->h.comment = g->flg & SL_GZIP_FCOMMENT ? g->comment.p : NULL;
    g->h.extra = g->flg & SL_GZIP_FEXTRA ? g->extra : NULL;
    g->h.extra_len = g->flg & SL_GZIP_FEXTRA ? g->xlen : 0;
  }
  return SL__GZH_DONE;
}

int sl__gzhdr_feed(sl__gzhdr *g, const unsigned char *p, size_t n, size_t *used,
                   char *msg, size_t cap) {
  size_t i = 0;
  int rc = SL__GZH_MORE;

  while (i < n && rc == SL__GZH_MORE) {
    unsigned char c = p[i++];
    unsigned long long off = (unsigned long long)(g->base + g->pos++);

    if (g->step != HS_HCRC)
      g->hcrc = sl__crc32(g->hcrc, &c, 1);
    switch (g->step) {
    case HS_FIXED:
      g->fixed[g->nfixed++] = c;
      if ((g->nfixed == 1 && c != 0x1f) || (g->nfixed == 2 && c != 0x8b)) {
        rc = SL__GZH_NOMAGIC;
      } else if (g->nfixed == 3 && c != 8) {
        snprintf(msg, cap, "unknown compression method %u at input byte %llu",
                 c, off);
        rc = SL_EDATA;
      } else if (g->nfixed == 4 && (c & 0xe0) != 0) {
        snprintf(msg, cap, "reserved flag bits set (0x%02x) at input byte %llu",
                 c & 0xe0u, off);
        rc = SL_EDATA;
      } else if (g->nfixed == 10) {
        g->flg = g->fixed[3];
        if (g->keep) {
          g->h.flags = g->flg;
          g->h.text = (g->flg & SL_GZIP_FTEXT) != 0;
          g->h.mtime = sl__le32(g->fixed + 4);
          g->h.xfl = g->fixed[8];
          g->h.os = g->fixed[9];
          g->h.hcrc = (g->flg & SL_GZIP_FHCRC) != 0;
        }
        rc = step(g, HS_FIXED);
      }
      break;
    case HS_XLEN:
      g->tail[g->ntail++] = c;
      if (g->ntail == 2) {
        g->xlen = (unsigned)g->tail[0] | (unsigned)g->tail[1] << 8;
        g->xgot = 0;
        g->extra_pos = (size_t)g->pos;
        if (g->keep) {
          sl__free(g->extra);
          g->extra = sl__malloc(g->xlen ? g->xlen : 1);
          if (g->extra == NULL) {
            rc = SL_ENOMEM;
            break;
          }
        }
        if (g->xlen > 0)
          g->step = HS_EXTRA;
        else
          rc = step(g, HS_EXTRA);
      }
      break;
    case HS_EXTRA:
      if (g->keep)
        g->extra[g->xgot] = c;
      if (++g->xgot == g->xlen)
        rc = step(g, HS_EXTRA);
      break;
    case HS_NAME:
    case HS_COMMENT:
      if (c == 0) {
        rc = step(g, g->step);
      } else if (g->keep) {
        bool name = g->step == HS_NAME;
        rc =
            field_add(name ? &g->name : &g->comment, c,
                      name ? SL_GZIP_FNAME : SL_GZIP_FCOMMENT, &g->h.truncated);
      }
      break;
    case HS_HCRC:
      if (g->ntail == 0)
        g->tail_off = off;
      g->tail[g->ntail++] = c;
      if (g->ntail == 2) {
        unsigned stored = (unsigned)g->tail[0] | (unsigned)g->tail[1] << 8;
        unsigned computed = (unsigned)(g->hcrc & 0xffff);
        if (stored != computed) {
          snprintf(msg, cap,
                   "header crc16 mismatch at input byte %llu "
                   "(stored 0x%04x, computed 0x%04x)",
                   (unsigned long long)g->tail_off, stored, computed);
          rc = SL_EDATA;
        } else {
          rc = step(g, HS_HCRC);
        }
      }
      break;
    }
  }
  if (rc == SL_ENOMEM)
    snprintf(msg, cap, "out of memory for the gzip header");
  *used = i;
  return rc;
}

int sl__gz_trailer_check(const unsigned char t[8], uint32_t crc, uint32_t isize,
                         uint64_t off, char *msg, size_t cap) {
  uint32_t s_crc = sl__le32(t), s_isize = sl__le32(t + 4);

  if (s_crc != crc) {
    snprintf(msg, cap,
             "crc32 mismatch at input byte %llu "
             "(stored 0x%08x, computed 0x%08x)",
             (unsigned long long)off, (unsigned)s_crc, (unsigned)crc);
    return SL_EDATA;
  }
  if (s_isize != isize) {
    snprintf(msg, cap,
             "isize mismatch at input byte %llu "
             "(stored %u, computed %u)",
             (unsigned long long)off + 4, (unsigned)s_isize, (unsigned)isize);
    return SL_EDATA;
  }
  return 0;
}

int sl_gzip_header_parse(const void *buf, size_t len, sl_gzip_header *h,
                         size_t *hdr_len) {
  const unsigned char *b = buf;
  sl__gzhdr g;
  char msg[8];
  size_t used = 0;
  int rc;

  if ((buf == NULL && len > 0) || h == NULL)
    return SL_EINVAL;
  memset(&g, 0, sizeof g);
  sl__gzhdr_begin(&g, false, 0);
  rc = sl__gzhdr_feed(&g, b, len, &used, msg, sizeof msg);
  if (rc == SL__GZH_MORE)
    return SL_AGAIN;
  if (rc != SL__GZH_DONE)
    return SL_EDATA;
  memset(h, 0, sizeof *h);
  h->flags = g.flg;
  h->text = (g.flg & SL_GZIP_FTEXT) != 0;
  h->mtime = sl__le32(g.fixed + 4);
  h->xfl = g.fixed[8];
  h->os = g.fixed[9];
  h->hcrc = (g.flg & SL_GZIP_FHCRC) != 0;
  if (g.flg & SL_GZIP_FEXTRA) {
    h->extra = b + g.extra_pos;
    h->extra_len = g.xlen;
  }
  if (g.flg & SL_GZIP_FNAME)
    h->name = (const char *)b + g.name_pos;
  if (g.flg & SL_GZIP_FCOMMENT)
    h->comment = (const char *)b + g.comment_pos;
  if (hdr_len != NULL)
    *hdr_len = used;
  return 0;
}

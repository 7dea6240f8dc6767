/* SPDX-License-Identifier: MIT */
/*
 * The gzip format (RFC 1952), in one place for every stage that reads it
 * (gunzip, unzip, the two-stage pgunzip) and for sl_gzip_header_parse: an
 * incremental header reader that checks every field and names the offset
 * of what is wrong, and the trailer check. The engines (engine-int.h) see
 * only the deflate data between. Not installed.
 */
#ifndef SLUICE_GZIP_INT_H
#define SLUICE_GZIP_INT_H

#include "sluice-int.h"

#include <sluice/zlib.h>

/* A growing zero-terminated byte string, at most SL_GZIP_FIELD_MAX bytes
 * with its terminator. */
struct sl__field {
  char *p;
  size_t len, cap;
};

/* An incremental gzip header reader. Zero it, then sl__gzhdr_begin for
 * each member; sl__gzhdr_free at the end. */
typedef struct sl__gzhdr {
  int step;  /* the field being read */
  bool keep; /* copy name, comment and extra into h */
  unsigned char fixed[10];
  unsigned nfixed;
  unsigned flg;
  unsigned xlen, xgot;
  unsigned char tail[2];
  unsigned ntail;
  uint32_t hcrc; /* CRC-32 of the header bytes before FHCRC */
  uint64_t pos;  /* header bytes read */
  uint64_t base; /* input offset of the header's first byte */
  uint64_t tail_off;
  /* Where the fields start, counted from the header's first byte. */
  size_t extra_pos, name_pos, comment_pos;
  /* With keep: the header, its strings owned by the reader and stable
   * until sl__gzhdr_free (later members, read without keep, leave them). */
  sl_gzip_header h;
  struct sl__field name, comment;
  unsigned char *extra;
} sl__gzhdr;

/* What sl__gzhdr_feed returns besides an SL_E* code. */
enum {
  SL__GZH_MORE = 0,   /* every byte taken; the header goes on */
  SL__GZH_DONE = 1,   /* the header is complete: *used ends it */
  SL__GZH_NOMAGIC = 2 /* byte 0 or 1 is not the magic (*used takes it) */
};

/* Start reading a header whose first byte is at input offset base. */
void sl__gzhdr_begin(sl__gzhdr *g, bool keep, uint64_t base);

/* Read header bytes from p[0..n); *used gets the bytes taken. Returns
 * SL__GZH_*, SL_EDATA with msg[0..cap) naming the offset (a bad method,
 * reserved flag bits, a header CRC16 mismatch) or SL_ENOMEM (keep). */
int sl__gzhdr_feed(sl__gzhdr *g, const unsigned char *p, size_t n, size_t *used,
                   char *msg, size_t cap);

/* Release what the reader kept. */
void sl__gzhdr_free(sl__gzhdr *g);

/* Check a gzip trailer t[0..8) read at input offset off against the
 * member's CRC-32 and length (mod 2^32). Returns 0, or SL_EDATA with
 * msg[0..cap) (prefixed by nothing: the stage adds its name). */
int sl__gz_trailer_check(const unsigned char t[8], uint32_t crc, uint32_t isize,
                         uint64_t off, char *msg, size_t cap);

uint32_t sl__le32(const unsigned char *p);

#endif

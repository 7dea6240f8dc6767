/* SPDX-License-Identifier: MIT */
/*
 * crc32 and adler32 — pass-through transforms that checksum the stream.
 *
 * Each chunk is fed to zlib's crc32() or adler32() and pushed on as it is,
 * the same buffer: nothing is copied, and since the stage only reads the
 * bytes, a buffer shared with a tee branch is safe. At the end of the
 * stream flush marks the value final and calls the optional callback.
 *
 * Threads: the context is written only by the stage's thread; the getters
 * read it after sl_pipeline_wait has joined that thread, and refuse with
 * SL_EBUSY before (the stage's running flag, cleared after the join).
 */
#include "stage-int.h"

#include <sluice/stages.h>

#include <zlib.h>

enum sum_kind { SUM_CRC32, SUM_ADLER32 };

/* zlib takes a uInt length: feed longer chunks in pieces. */
#define SUM_PIECE ((size_t)1 << 30)

struct checksum {
  enum sum_kind kind;
  uLong value;
  uint64_t bytes;
  bool ended; /* flush ran: value covers the whole stream */
  sl_checksum_cb on_end;
  void *arg;
};

static int checksum_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  struct checksum *c = ctx;
  if (sl_buf_is_object(in)) {
    sl_buf_unref(in);
    sl_stage_set_error(stage, "object buffer in a byte stream");
    return SL_EINVAL;
  }
  const unsigned char *d = sl_buf_data(in);
  size_t len = sl_buf_len(in);
  c->bytes += len;
  while (len > 0) {
    uInt n = (uInt)(len < SUM_PIECE ? len : SUM_PIECE);
    c->value =
        c->kind == SUM_CRC32 ? crc32(c->value, d, n) : adler32(c->value, d, n);
    d += n;
    len -= n;
  }
  return sl_stage_push(stage, in);
}

static int checksum_flush(sl_stage *stage, void *ctx) {
  struct checksum *c = ctx;
  c->ended = true;
  if (!c->on_end)
    return 0;
  int rc = c->on_end((uint32_t)c->value, c->bytes, c->arg);
  if (rc >= 0)
    return 0;
  sl_stage_set_error(stage, "checksum callback failed: %s", sl_strerror(rc));
  return rc;
}

static void checksum_destroy(void *ctx) {
  sl__free(ctx);
}

static int checksum_new(sl_stage **out, const sl_checksum_opts *opts,
                        enum sum_kind kind) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  struct checksum *c = sl__calloc(1, sizeof *c);
  if (!c)
    return SL_ENOMEM;
  c->kind = kind;
  c->value = kind == SUM_CRC32 ? crc32(0, Z_NULL, 0) : adler32(0, Z_NULL, 0);
  if (opts) {
    c->on_end = opts->on_end;
    c->arg = opts->arg;
  }
  const char *name = opts && opts->name  ? opts->name
                     : kind == SUM_CRC32 ? "crc32"
                                         : "adler32";
  sl_stage_ops ops = {.transform = checksum_transform,
                      .flush = checksum_flush,
                      .destroy = checksum_destroy};
  int rc = sl_stage_new(out, name, &ops, c);
  if (rc != 0)
    sl__free(c);
  return rc;
}

int sl_crc32_new(sl_stage **out, const sl_checksum_opts *opts) {
  return checksum_new(out, opts, SUM_CRC32);
}

int sl_adler32_new(sl_stage **out, const sl_checksum_opts *opts) {
  return checksum_new(out, opts, SUM_ADLER32);
}

static int checksum_value(const sl_stage *stage, enum sum_kind kind,
                          uint32_t *value, uint64_t *bytes) {
  if (!stage || !value || stage->ops.transform != checksum_transform)
    return SL_EINVAL;
  const struct checksum *c = stage->ctx;
  if (c->kind != kind)
    return SL_EINVAL;
  if (atomic_load(&((sl_stage *)stage)->running))
    return SL_EBUSY;
  *value = (uint32_t)c->value;
  if (bytes)
    *bytes = c->bytes;
  return c->ended ? 0 : SL_ECANCELED;
}

int sl_crc32_value(const sl_stage *stage, uint32_t *crc, uint64_t *bytes) {
  return checksum_value(stage, SUM_CRC32, crc, bytes);
}

int sl_adler32_value(const sl_stage *stage, uint32_t *adler, uint64_t *bytes) {
  return checksum_value(stage, SUM_ADLER32, adler, bytes);
}

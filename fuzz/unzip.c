/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the auto-detecting decompressor (sl_unzip_new): gzip,
 * zlib or raw deflate told apart by the first two bytes, against zlib's
 * inflate() under the same rule (fuzz/fuzz.h). Also checks the format the
 * stage reports (sl_zlib_format_get) against the rule.
 */
#include "fuzz.h"

static int build(sl_pipeline *p, sl_stage *src, sl_stage *sink,
                 const sl_zlib_opts *zo, sl_stage **middle) {
  int rc = sl_unzip_new(middle, zo);
  if (rc != 0)
    return rc;
  return sl_pipeline_chain(p, src, *middle, sink, NULL);
}

static void extra(sl_stage *uz, const struct fz_oracle *o, int rc,
                  const uint8_t *d, size_t n) {
  static const int want[] = {[FZ_GZIP] = SL_ZLIB_FORMAT_GZIP,
                             [FZ_ZLIB] = SL_ZLIB_FORMAT_ZLIB,
                             [FZ_RAW] = SL_ZLIB_FORMAT_RAW};
  int format = 0;
  int fr = sl_zlib_format_get(uz, &format);

  (void)o;
  (void)rc;
  if (n < 2) {
    FZ_CHECK(fr == SL_AGAIN, "format decided on %zu bytes: %d", n, format);
    return;
  }
  FZ_CHECK(fr == 0, "format_get: %s", sl_err_name(fr));
  FZ_CHECK(format == want[fz_detect(d, n)], "format %d, rule says %d", format,
           want[fz_detect(d, n)]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_run(data, size, FZ_AUTO, build, extra);
  return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the gunzip stage (sl_gunzip_new), every member of the
 * input, against zlib's inflate() of the same bytes (fuzz/fuzz.h). Also
 * checks that the stage's member count (sl_gzip_header_get) is the
 * oracle's once the stream decoded.
 */
#include "fuzz.h"

static int build(sl_pipeline *p, sl_stage *src, sl_stage *sink,
                 const sl_zlib_opts *zo, sl_stage **middle) {
  int rc = sl_gunzip_new(middle, zo);
  if (rc != 0)
    return rc;
  return sl_pipeline_chain(p, src, *middle, sink, NULL);
}

static void extra(sl_stage *gz, const struct fz_oracle *o, int rc,
                  const uint8_t *d, size_t n) {
  sl_gzip_header h;
  int format = 0;

  (void)d;
  (void)n;
  FZ_CHECK(sl_zlib_format_get(gz, &format) == 0 &&
               format == SL_ZLIB_FORMAT_GZIP,
           "format %d", format);
  if (rc != 0)
    return;
  int hr = sl_gzip_header_get(gz, &h);
  FZ_CHECK(hr == 0, "header_get after success: %s", sl_err_name(hr));
  FZ_CHECK(h.members == o->members, "members %llu, zlib %u",
           (unsigned long long)h.members, o->members);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_run(data, size, FZ_GZIP, build, extra);
  return 0;
}

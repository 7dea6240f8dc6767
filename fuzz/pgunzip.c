/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: sgzip's decompression path. sgzip -d and -t run
 *
 *   read -> gunzip -> gunzip-check (CRC-32) -> write
 *
 * built by sl_pgunzip_chain with sl_zlib_opts_init's defaults and the name
 * "gunzip" (tools/sgzip.c, run_job); here the same chain runs between a
 * memory source and a memory sink, against zlib's inflate() of every member
 * (fuzz/fuzz.h), under gzip's rules plus the block rule: members that
 * carry their length (the block format, BGZF) are inflated on workers, and
 * a length that is not the member's fails the stream (fz_block_length in
 * fuzz/fuzz.h). The CRC-32 check runs on a thread of its own, so a failure
 * may come from either stage; the message must name one of them.
 */
#include "fuzz.h"

static int build(sl_pipeline *p, sl_stage *src, sl_stage *sink,
                 const sl_zlib_opts *zo, sl_stage **middle) {
  sl_zlib_opts o = *zo;

  *middle = NULL;
  o.name = "gunzip";
  return sl_pgunzip_chain(p, src, sink, &o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_run(data, size, FZ_GZIP_BLOCKS, build, NULL);
  return 0;
}

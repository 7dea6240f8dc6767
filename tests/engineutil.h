/* SPDX-License-Identifier: MIT */
/*
 * Which engine a suite's AUTO choices resolve to: SL_TEST_ENGINE=zlib,
 * isal or libdeflate (tests/engines.sh runs the gzip suites once per
 * engine built in), so that every test of a decoder runs on each engine
 * with the same expectations. Unset: the library's own choice. An engine
 * that is not built in fails the suite at once (exit 77 would hide it).
 */
#ifndef SL_TEST_ENGINEUTIL_H
#define SL_TEST_ENGINEUTIL_H

#include "stages/engine-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void engine_from_env(void) {
  const char *e = getenv("SL_TEST_ENGINE");

  if (e == NULL || *e == '\0')
    return;
  for (int i = SL_ZLIB_ENGINE_ZLIB; i <= SL_ZLIB_ENGINE_LIBDEFLATE; i++) {
    if (strcmp(e, sl_zlib_engine_name(i)) == 0 && sl__engine_built(i)) {
      sl__engine_prefer = i;
      return;
    }
  }
  fprintf(stderr, "SL_TEST_ENGINE=%s: not an engine built in\n", e);
  exit(1);
}

#endif

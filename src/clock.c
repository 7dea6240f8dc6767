/* SPDX-License-Identifier: MIT */
/* The one clock the library reads: monotonic, in nanoseconds. */
#include "sluice-int.h"

#include <time.h>

uint64_t sl__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#!/bin/sh
# SPDX-License-Identifier: MIT
# Run the suites whose tests race threads against each other N times in a
# row (default 1000), in a build configured with --enable-sanitizer=thread,
# stopping at the first failure. Loop counts inside the suites are scaled
# down (a round takes about 9 s on two cores); every round still crosses
# every interleaving point the suites cover, and the randomized stress
# suite runs a short stretch of new random pipelines in each round (seed:
# the round's number, counted from FIRST below; a failure names the seed,
# which replays it with SL_STRESS_SEED=<seed>).
#
#   ../configure --enable-sanitizer=thread && make check
#   sh ../tests/race-loop.sh 1000
#
# A second argument numbers the first round (default 1), so that two loops
# can share a machine's cores with different seeds:
#   sh ../tests/race-loop.sh 500 & sh ../tests/race-loop.sh 500 501
# SL_RACE_SUITES names other suites to loop (default: all of them below):
#   SL_RACE_SUITES=tests/check_done sh ../tests/race-loop.sh 300
set -eu
n=${1:-1000}
first=${2:-1}
case $n$first in *[!0-9]*) echo "race-loop: counts must be numbers" >&2; exit 2 ;; esac
log=race-loop.$$.log
suites=${SL_RACE_SUITES:-"tests/check_ring tests/check_pipeline tests/check_backpressure tests/check_graph tests/check_map tests/check_buf tests/check_bridge tests/check_done tests/check_socket tests/check_observe tests/check_stress"}
for s in $suites; do
  [ -x "$s" ] || { echo "race-loop: $s not built (run make check first)" >&2; exit 2; }
done
export CK_FORK=no SL_TEST_CHUNKS=${SL_TEST_CHUNKS:-20000} \
  SL_TEST_CANCELS=${SL_TEST_CANCELS:-20} SL_TEST_ROUNDS=${SL_TEST_ROUNDS:-2000} \
  SL_TEST_POOL_MIB=${SL_TEST_POOL_MIB:-4} SL_TEST_SPIN=${SL_TEST_SPIN:-500} \
  SL_TEST_SOCKET_MIB=${SL_TEST_SOCKET_MIB:-4} SL_STRESS_ITER=${SL_STRESS_ITER:-20} \
  TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1}
i=0
while [ "$i" -lt "$n" ]; do
  i=$((i + 1))
  [ $((i % 50)) -ne 0 ] || echo "race-loop: $((i - 1)) rounds passed"
  SL_STRESS_SEED=$((first + i - 1))
  export SL_STRESS_SEED
  for s in $suites; do
    if ! "$s" > "$log" 2>&1; then
      cat "$log"
      echo "race-loop: $s failed in round $i of $n (SL_STRESS_SEED=$SL_STRESS_SEED)" >&2
      exit 1
    fi
  done
done
rm -f "$log"
echo "race-loop: $n rounds passed (seeds $first to $((first + n - 1))): $suites"

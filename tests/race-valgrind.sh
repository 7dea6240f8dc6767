#!/bin/sh
# SPDX-License-Identifier: MIT
# Run the suites whose threads race each other under one of valgrind's race
# checkers, helgrind or DRD, and fail on any report.
#
#   ../configure --enable-valgrind-annotations && make helgrind
#   sh ../tests/race-valgrind.sh drd [SRCDIR]     (what make drd runs)
#
# Run from a build directory configured with --enable-valgrind-annotations:
# the checkers model pthreads but not C11 atomics, and that build tells
# them what the atomics order (src/annotate.h); in any other build they
# would report every chunk that crosses a ring. What they report there is
# a real finding. Suppressions, each with its reason, are in
# tests/valgrind/<tool>.supp.
#
# The suites run in one process each (CK_FORK=no, so valgrind follows every
# thread), with their loop counts scaled down: valgrind runs one thread at
# a time, some fifty times slower than native, and the interleavings come
# from its scheduler, not from the number of rounds. SL_TEST_* and
# RACE_SUITES set in the environment win; RACE_TIMEOUT bounds each suite
# (seconds, default 900) where timeout(1) exists.
#
# --fair-sched=yes: valgrind's default lock between threads is not fair,
# and a thread that never sleeps (a source whose read returns without
# pushing, a reader spinning before it sleeps) can take it back again and
# again while the thread that would stop it waits for a turn; the idle
# source's cancel test took from one second to the whole timeout. The
# ticket lock hands the turns round in order.
set -eu

tool=${1:-}
srcdir=${2:-$(dirname "$0")/..}
case $tool in
  helgrind | drd) ;;
  *)
    echo "usage: $0 helgrind|drd [SRCDIR]" >&2
    exit 2
    ;;
esac

if ! command -v valgrind >/dev/null 2>&1; then
  echo "race-valgrind: valgrind not found (on Debian: apt-get install valgrind)" >&2
  exit 2
fi
if ! grep -q -- '-DSL_VALGRIND' Makefile 2>/dev/null; then
  echo "race-valgrind: run it in a build configured with --enable-valgrind-annotations" >&2
  exit 2
fi

suites=${RACE_SUITES:-"tests/check_ring tests/check_pipeline tests/check_backpressure"}
for s in $suites; do
  [ -x "$s" ] || {
    echo "race-valgrind: $s not built (make $s)" >&2
    exit 2
  }
done

# DRD costs about four times what helgrind does per atomic operation (each
# is a client request): fewer chunks through the ring's long runs.
chunks=2000
[ "$tool" = helgrind ] || chunks=500
export CK_FORK=no \
  SL_TEST_CHUNKS="${SL_TEST_CHUNKS:-$chunks}" \
  SL_TEST_BYTES="${SL_TEST_BYTES:-65536}" \
  SL_TEST_CANCELS="${SL_TEST_CANCELS:-10}" \
  SL_TEST_ROUNDS="${SL_TEST_ROUNDS:-20}" \
  SL_TEST_POOL_MIB="${SL_TEST_POOL_MIB:-1}" \
  SL_TEST_SPIN="${SL_TEST_SPIN:-50}" \
  CK_TIMEOUT_MULTIPLIER="${CK_TIMEOUT_MULTIPLIER:-20}"

limit=
if command -v timeout >/dev/null 2>&1; then
  limit="timeout ${RACE_TIMEOUT:-900}"
fi

status=0
for s in $suites; do
  log=race-$tool-$(basename "$s").log
  start=$(date +%s)
  rc=0
  # shellcheck disable=SC2086 # $limit is a command and its argument
  $limit valgrind --tool="$tool" --fair-sched=yes --error-exitcode=99 --num-callers=30 \
    --suppressions="$srcdir/tests/valgrind/$tool.supp" --gen-suppressions=all \
    "$s" >"$log" 2>&1 || rc=$?
  secs=$(($(date +%s) - start))
  if [ "$rc" -eq 0 ]; then
    echo "race-valgrind: $tool: $s: clean (${secs}s)"
  else
    cat "$log"
    case $rc in
      99) why="reports above" ;;
      124) why="timed out" ;;
      *) why="exit status $rc" ;;
    esac
    echo "race-valgrind: $tool: $s: FAILED, $why (${secs}s, log in $log)" >&2
    status=1
  fi
done
exit $status

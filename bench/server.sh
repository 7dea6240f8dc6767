#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/server.sh — examples/gzip-server (one sluice pipeline per
# connection, gzip on its own thread) against the same server run with
# --inline (zlib on the event loop's thread, the classic single-threaded
# event-loop server), measured in the same run.
#
# For 1, 8, 64 and 200 concurrent clients on loopback (bench/server-client,
# one epoll thread), each server gets a fresh process per run, and each run
# is two rounds of the same clients: a first round that starts the server
# up, and the timed round, in steady state. Runs are interleaved (who goes
# first alternates) and medians compared:
#
#   MB/s       request bytes gzipped and sent back, per second, over all
#              clients (the client's wall time from first connect to last
#              end of file), in the timed round
#   ratio      sluice / inline: the median of the ratios of runs made back
#              to back, which a machine whose speed drifts with its
#              neighbours' load moves less than a ratio of medians
#   first      the same ratio in the first round
#   CPU s      the server's user + system time in the timed round (all
#              threads), from /proc: what the work cost, whatever else
#              the machine was doing; on a busy machine the wall-clock MB/s
#              says more about the neighbours than about the servers, the
#              CPU seconds do not
#   peak RSS   the server's, from its --stats
#   threads    the server's threads when the most connections were open
#
# Why a first round. A server runs for days; what it costs to start is paid
# once. In the first round every buffer is new memory that the kernel
# faults in and zeroes page by page: the sluice server's shared pool grows
# to what its connections hold at once (the marks), and from then on reuses
# it; so with its set of gzip threads, which later connections take over. A page fault is cheap on bare metal but costs about 15 us on some
# virtual machines, where the first round of 128 MiB over 200 connections
# takes the sluice server a fifth more CPU than the timed one, and most of
# what it spends beyond --inline. The first round's ratio is printed all
# the same. Both servers run with glibc's heap trimming off
# (glibc.malloc.trim_threshold): the rounds end with every connection
# closed, and --inline's heap, then empty, would otherwise go back to the
# kernel and be faulted in again next round, which a server that always
# has connections open does not do.
#
# Before the timed runs, one run of each server per client count checks
# every response (inflated and compared with its body); timed runs only
# count bytes, so that the client costs little next to the server.
#
# Where they run. The target is the server's throughput on two cores,
# with the clients standing for the network. With three cores or more
# (cores, not SMT siblings) each server is pinned to two CPUs on two cores
# and the client to a CPU on a third, so that the client's CPU time is not
# taken from the server under test. With fewer, server and client share
# what there is: the client's time then comes out of the sluice server's
# two cores but not out of --inline's one, which costs the sluice server
# about client CPU / server CPU of its ratio (a few percent here).
#
# Targets: MB/s of the sluice server >= 1.8x --inline's under load (64 and
# 200 clients); its peak RSS <= connections x (what the marks let one
# connection hold) + its RSS with one client. What one connection holds
# (tests/server.sh asserts it; the account is at the top of
# examples/gzip-server.c): two rings of up to hwm each (hwm is a multiple
# of buf), what gzip took from its input ring (up to that ring's fill
# again), and two buffers in hand: 3 x hwm + 2 x buf.
#
# Environment:
#   BENCH_DIR            the build's bench directory (make bench-server
#                        sets it); the server is $BENCH_DIR/../examples/
#                        gzip-server; results go to $BENCH_DIR/results/
#   BENCH_SERVER_MIB     request bytes per run over all clients (default 128)
#   BENCH_CLIENTS        client counts (default "1 8 64 200")
#   BENCH_LEVEL          gzip level (default 6)
#   BENCH_REPS           timed runs of each server per count (default 3)
#   BENCH_STRICT=1       exit 1 when a target is missed
#   BENCH_PIN            auto (default: as above), shared (server and
#                        client on the same two CPUs on two cores, as on
#                        a 2-core machine) or none (no pinning)
#   BENCH_SERVER_CPUS    the server's CPUs, a taskset list (overrides
#   BENCH_CLIENT_CPUS    BENCH_PIN; set both)
#
# Exit status: 0 when every run completed (targets missed or not, unless
# BENCH_STRICT=1), 1 on an error.

set -u
LC_ALL=C
export LC_ALL

here=$(cd "$(dirname "$0")" && pwd) || exit 1
BENCH_DIR=${BENCH_DIR:-$here}
total_mib=${BENCH_SERVER_MIB:-128}
counts=${BENCH_CLIENTS:-1 8 64 200}
level=${BENCH_LEVEL:-6}
reps=${BENCH_REPS:-3}
strict=${BENCH_STRICT:-0}
hwm=262144 # the pipeline defaults the server runs with
buf=65536

server=$BENCH_DIR/../examples/gzip-server
client=$BENCH_DIR/server-client
results=$BENCH_DIR/results

die() {
  echo "server.sh: $*" >&2
  exit 1
}

for v in "$total_mib" "$reps" "$level" $counts; do
  case $v in
  '' | *[!0-9]*) die "sizes, counts, the level and BENCH_REPS must be integers" ;;
  esac
done
[ -x "$server" ] || die "$server not found: build it first (make bench-server)"
[ -x "$client" ] || die "$client not found: build it first (make bench-server)"
[ "$(uname -s)" = Linux ] || die "the example server needs epoll (Linux)"

# In a build with shared libraries examples/gzip-server is a libtool
# wrapper script: run the program it runs, with the library path it sets.
sdir=$(dirname "$server")
if [ -x "$sdir/.libs/gzip-server" ] && grep -q libtool "$server" 2> /dev/null; then
  libdir=$(sed -n 's/^ *LD_LIBRARY_PATH="\(.*\):\$LD_LIBRARY_PATH"$/\1/p' "$server" |
    head -n 1)
  if [ -n "$libdir" ]; then
    LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    server=$sdir/.libs/gzip-server
  fi
fi

# The CPUs this process may use, one per line.
cpus_allowed() {
  list=$(taskset -pc $$ 2> /dev/null | sed 's/.*: *//')
  [ -n "$list" ] || list=$(cat /sys/devices/system/cpu/online 2> /dev/null)
  echo "$list" | tr ',' '\n' |
    awk -F- '/^[0-9]/ { if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1 }'
}
# One allowed CPU per core (the first of each), in order.
one_per_core() {
  for c in $(cpus_allowed); do
    t=/sys/devices/system/cpu/cpu$c/topology
    echo "$c $(cat "$t/physical_package_id" 2> /dev/null):$(cat "$t/core_id" 2> /dev/null)"
  done | awk '!seen[$2]++ { print $1 }'
}

pin=${BENCH_PIN:-auto}
server_cpus=${BENCH_SERVER_CPUS:-}
client_cpus=${BENCH_CLIENT_CPUS:-}
if [ -n "$server_cpus" ] || [ -n "$client_cpus" ]; then
  if [ -z "$server_cpus" ] || [ -z "$client_cpus" ]; then
    die "set both BENCH_SERVER_CPUS and BENCH_CLIENT_CPUS, or neither"
  fi
elif [ "$pin" != none ] && command -v taskset > /dev/null 2>&1; then
  # shellcheck disable=SC2046 # one CPU number per word
  set -- $(one_per_core)
  case $pin in
  auto)
    if [ $# -ge 3 ]; then
      server_cpus=$1,$2
      client_cpus=$3
    fi
    ;;
  shared)
    [ $# -ge 2 ] || die "BENCH_PIN=shared needs two cores"
    server_cpus=$1,$2
    client_cpus=$1,$2
    ;;
  *) die "BENCH_PIN is auto, shared or none" ;;
  esac
fi
if [ -n "$server_cpus" ]; then
  run_server="taskset -c $server_cpus"
  run_client="taskset -c $client_cpus"
  placement="server on CPUs $server_cpus, client on CPUs $client_cpus"
else
  run_server=
  run_client=
  placement="$(nproc 2> /dev/null || echo '?') CPUs shared by server and client"
fi

# Heap trimming off for both servers (see above).
tunables=${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.trim_threshold=1073741824

ulimit -n 4096 2> /dev/null || ulimit -n "$(ulimit -H -n)" 2> /dev/null || :

mkdir -p "$results" || die "cannot create $results"
work=$(mktemp -d "$BENCH_DIR/.server-bench.XXXXXX") || die "cannot create a temporary directory"
srv_pid=
cleanup() {
  [ -z "$srv_pid" ] || kill -KILL "$srv_pid" 2> /dev/null || :
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { # median of the numbers in file $1, printed with format $2
  sort -n "$1" | awk -v f="${2:-%.1f}" '{ v[NR] = $1 }
    END {
      if (NR == 0) print "-"
      else printf f "\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}
calc() { awk "BEGIN { x = ($1); print x }"; }

# CPU seconds (user + system, every thread) of process $1 so far.
cpu_of() {
  awk -v t="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / t }' \
    "/proc/$1/stat"
}

# A round of N clients over $total_mib MiB against the server on port $2,
# counting bytes, with its line in $work/c; $1 is the server's name.
round() {
  $run_client "$client" --no-verify -c "$n" -n "$per" "$2" > "$work/c" ||
    die "$1 server, $n clients: $(cat "$work/c")"
}
mbps_of() { tr ' ' '\n' < "$work/c" | sed -n 's/^mbps=//p'; }

# one MODE N VERIFY: start a server (MODE sluice or inline), run N clients
# over $total_mib MiB twice, stop it. Appends the timed round's MB/s and
# CPU seconds, the first round's MB/s, the RSS and the threads to
# $work/MODE-N.{mbps,cpu,first,rss,thr}; with VERIFY, one round that
# checks every response, and nothing appended.
one() {
  mode=$1
  n=$2
  verify=$3
  rm -f "$work/out"
  mkfifo "$work/out" || die "mkfifo failed"
  if [ "$mode" = inline ]; then
    GLIBC_TUNABLES=$tunables $run_server "$server" --inline --stats --level "$level" 0 > "$work/out" 2> "$work/err" &
  else
    GLIBC_TUNABLES=$tunables $run_server "$server" --stats --level "$level" 0 > "$work/out" 2> "$work/err" &
  fi
  srv_pid=$!
  exec 3< "$work/out"
  read -r port <&3 || die "the $mode server did not start: $(cat "$work/err")"
  per=$((total_mib * 1048576 / n))
  if [ "$verify" = 1 ]; then
    $run_client "$client" -c "$n" -n "$per" "$port" > "$work/c" ||
      die "$mode server, $n clients: a response was wrong: $(cat "$work/c")"
  else
    round "$mode" "$port"
    first=$(mbps_of)
    cpu0=$(cpu_of "$srv_pid")
    round "$mode" "$port"
    cpu=$(calc "sprintf(\"%.3f\", $(cpu_of "$srv_pid") - $cpu0)")
  fi
  kill -TERM "$srv_pid"
  cat <&3 > "$work/stats"
  exec 3<&-
  wait "$srv_pid" || die "the $mode server exited with an error"
  srv_pid=
  [ "$verify" = 1 ] && return 0
  mbps_of >> "$work/$mode-$n.mbps"
  echo "$first" >> "$work/$mode-$n.first"
  tr ' ' '\n' < "$work/stats" | sed -n 's/^peak_rss_kib=//p' >> "$work/$mode-$n.rss"
  tr ' ' '\n' < "$work/stats" | sed -n 's/^threads_at_peak=//p' >> "$work/$mode-$n.thr"
  echo "$cpu" >> "$work/$mode-$n.cpu"
}

echo "gzip server: sluice pipelines vs --inline, level $level, $total_mib MiB per run," \
  "$reps runs each, medians; $placement"
echo

for n in $counts; do
  one sluice "$n" 1
  one inline "$n" 1
  for f in mbps first rss cpu thr; do
    : > "$work/sluice-$n.$f"
    : > "$work/inline-$n.$f"
  done
  r=1
  while [ $r -le "$reps" ]; do
    if [ $((r % 2)) = 1 ]; then
      one sluice "$n" 0
      one inline "$n" 0
    else
      one inline "$n" 0
      one sluice "$n" 0
    fi
    r=$((r + 1))
  done
  echo "  $n clients: sluice $(median "$work/sluice-$n.mbps") MB/s," \
    "inline $(median "$work/inline-$n.mbps") MB/s (responses checked)"
done
echo

per_conn_kib=$(((3 * hwm + 2 * buf) / 1024))
base_rss=
fails=0
{
  printf '%7s %11s %11s %6s %6s %9s %9s %10s %10s %10s %7s  %s\n' clients "sluice MB/s" \
    "inline MB/s" ratio first "sluice s" "inline s" "sluice KiB" "inline KiB" "bound KiB" \
    threads result
  for n in $counts; do
    s=$(median "$work/sluice-$n.mbps")
    i=$(median "$work/inline-$n.mbps")
    # Runs r of the two servers ran back to back: the median of their
    # ratios follows the servers, not the neighbours' load drifting
    # between the first run and the last.
    paste "$work/sluice-$n.mbps" "$work/inline-$n.mbps" |
      awk '$2 > 0 { print $1 / $2 }' > "$work/ratio-$n"
    ratio=$(median "$work/ratio-$n" %.2f)
    paste "$work/sluice-$n.first" "$work/inline-$n.first" |
      awk '$2 > 0 { print $1 / $2 }' > "$work/first-$n"
    fratio=$(median "$work/first-$n" %.2f)
    srss=$(median "$work/sluice-$n.rss" %.0f)
    irss=$(median "$work/inline-$n.rss" %.0f)
    thr=$(median "$work/sluice-$n.thr" %.0f)
    scpu=$(median "$work/sluice-$n.cpu" %.2f)
    icpu=$(median "$work/inline-$n.cpu" %.2f)
    [ -n "$base_rss" ] || base_rss=$srss
    bound=$((n * per_conn_kib + base_rss))
    result=PASS
    if [ "$srss" -gt "$bound" ]; then result=FAIL; fi
    if [ "$n" -ge 64 ] && [ "$(calc "$ratio >= 1.8 ? 1 : 0")" != 1 ]; then
      result=FAIL
    fi
    [ $result = PASS ] || fails=$((fails + 1))
    printf '%7s %11s %11s %5sx %5sx %9s %9s %10s %10s %10s %7s  %s\n' "$n" "$s" "$i" \
      "$ratio" "$fratio" "$scpu" "$icpu" "$srss" "$irss" "$bound" "$thr" "$result"
  done
  echo
  echo "$placement"
  echo "MB/s = request bytes per wall second over all clients in the timed round (a"
  echo "server's second round of the same clients), medians; ratio = the median over"
  echo "runs of sluice / inline, each pair of runs back to back (target >= 1.8x at 64"
  echo "and 200 clients); first = that ratio in the first round, which starts the"
  echo "server up; s = the server's CPU seconds in the timed round;"
  echo "KiB = the server's peak RSS;"
  echo "RSS bound = clients x $per_conn_kib KiB (3 x hwm + 2 x buf," \
    "hwm $hwm, buf $buf) + the sluice server's RSS with the first count;"
  echo "threads = the sluice server's threads at its most connections" \
    "(one gzip thread per connection plus the loop)"
} | tee "$results/server.txt"

[ "$strict" = 1 ] && [ $fails -gt 0 ] && exit 1
exit 0

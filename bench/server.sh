#!/bin/sh
# bench/server.sh — examples/gzip-server (one sluice pipeline per
# connection, gzip on its own thread) against the same server run with
# --inline (zlib on the event loop's thread, the classic single-threaded
# event-loop server), measured in the same run.
#
# For 1, 8, 64 and 200 concurrent clients on loopback (bench/server-client,
# one epoll thread), each server gets a fresh process per run; runs are
# interleaved (who goes first alternates) and medians compared:
#
#   MB/s       request bytes gzipped and sent back, per second, over all
#              clients (the client's wall time from first connect to last
#              end of file)
#   peak RSS   the server's, from its --stats
#   CPU s      the server's user + system time for the run (all threads),
#              from /proc: what the work cost, whatever else the machine
#              was doing; on a busy machine the wall-clock MB/s says more
#              about the neighbours than about the servers, the CPU
#              seconds do not
#   threads    the server's threads when the most connections were open
#
# Before the timed runs, one run of each server per client count checks
# every response (inflated and compared with its body); timed runs only
# count bytes, so that the client costs little next to the server.
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

# one MODE N VERIFY: start a server (MODE sluice or inline), run N clients
# over $total_mib MiB, stop it. Appends MB/s, RSS, CPU seconds and threads
# to $work/MODE-N.{mbps,rss,cpu,thr} unless VERIFY (a checking run).
one() {
  mode=$1
  n=$2
  verify=$3
  rm -f "$work/out"
  mkfifo "$work/out" || die "mkfifo failed"
  if [ "$mode" = inline ]; then
    "$server" --inline --stats --level "$level" 0 > "$work/out" 2> "$work/err" &
  else
    "$server" --stats --level "$level" 0 > "$work/out" 2> "$work/err" &
  fi
  srv_pid=$!
  exec 3< "$work/out"
  read -r port <&3 || die "the $mode server did not start: $(cat "$work/err")"
  per=$((total_mib * 1048576 / n))
  if [ "$verify" = 1 ]; then
    "$client" -c "$n" -n "$per" "$port" > "$work/c" ||
      die "$mode server, $n clients: a response was wrong: $(cat "$work/c")"
  else
    "$client" --no-verify -c "$n" -n "$per" "$port" > "$work/c" ||
      die "$mode server, $n clients: $(cat "$work/c")"
  fi
  cpu=$(cpu_of "$srv_pid")
  kill -TERM "$srv_pid"
  cat <&3 > "$work/stats"
  exec 3<&-
  wait "$srv_pid" || die "the $mode server exited with an error"
  srv_pid=
  [ "$verify" = 1 ] && return 0
  tr ' ' '\n' < "$work/c" | sed -n 's/^mbps=//p' >> "$work/$mode-$n.mbps"
  tr ' ' '\n' < "$work/stats" | sed -n 's/^peak_rss_kib=//p' >> "$work/$mode-$n.rss"
  tr ' ' '\n' < "$work/stats" | sed -n 's/^threads_at_peak=//p' >> "$work/$mode-$n.thr"
  echo "$cpu" >> "$work/$mode-$n.cpu"
}

ncpu=$(nproc 2> /dev/null || getconf _NPROCESSORS_ONLN 2> /dev/null || echo 1)
echo "gzip server: sluice pipelines vs --inline, level $level, $total_mib MiB per run," \
  "$reps runs each, medians; $ncpu CPUs shared by server and clients"
echo

for n in $counts; do
  one sluice "$n" 1
  one inline "$n" 1
  for f in mbps rss cpu thr; do
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
  printf '%7s %11s %11s %6s %9s %9s %10s %10s %10s %7s  %s\n' clients "sluice MB/s" \
    "inline MB/s" ratio "sluice s" "inline s" "sluice KiB" "inline KiB" "bound KiB" \
    threads result
  for n in $counts; do
    s=$(median "$work/sluice-$n.mbps")
    i=$(median "$work/inline-$n.mbps")
    ratio=$(calc "sprintf(\"%.2f\", $s / $i)")
    srss=$(median "$work/sluice-$n.rss" %.0f)
    irss=$(median "$work/inline-$n.rss" %.0f)
    thr=$(median "$work/sluice-$n.thr" %.0f)
    scpu=$(median "$work/sluice-$n.cpu" %.2f)
    icpu=$(median "$work/inline-$n.cpu" %.2f)
    [ -n "$base_rss" ] || base_rss=$srss
    bound=$((n * per_conn_kib + base_rss))
    result=PASS
    if [ "$srss" -gt "$bound" ]; then result=FAIL; fi
    if [ "$n" -ge 64 ] && [ "$(calc "$s >= 1.8 * $i ? 1 : 0")" != 1 ]; then
      result=FAIL
    fi
    [ $result = PASS ] || fails=$((fails + 1))
    printf '%7s %11s %11s %5sx %9s %9s %10s %10s %10s %7s  %s\n' "$n" "$s" "$i" \
      "$ratio" "$scpu" "$icpu" "$srss" "$irss" "$bound" "$thr" "$result"
  done
  echo
  echo "MB/s = request bytes per wall second over all clients; ratio = sluice / inline"
  echo "(target >= 1.8x at 64 and 200 clients); s = the server's CPU seconds per run;"
  echo "KiB = the server's peak RSS;"
  echo "RSS bound = clients x $per_conn_kib KiB (3 x hwm + 2 x buf," \
    "hwm $hwm, buf $buf) + the sluice server's RSS with the first count;"
  echo "threads = the sluice server's threads at its most connections" \
    "(one gzip thread per connection plus the loop)"
} | tee "$results/server.txt"

[ "$strict" = 1 ] && [ $fails -gt 0 ] && exit 1
exit 0

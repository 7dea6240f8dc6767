#!/bin/sh
# SPDX-License-Identifier: MIT
# examples/gzip-server under load from bench/server-client, on loopback:
#
#   slow     one client sends 256 MiB of random bytes (the response is as
#            large) and reads the response 1 KiB at a time with pauses,
#            far slower than the server makes it; the server's counters
#            show that sends blocked and its rings paused, both ways, and
#            its buffered bytes (the peak of the connection's pool, which
#            the server reports) stay within the bound the marks set, so
#            the body was held back by backpressure, not buffered
#   drop     10 clients reset their connection halfway through the body
#            while 10 others and then 20 more are served: exactly the
#            10 pipelines fail, every response of the others inflates to
#            its body, and at exit the library holds no allocation
#   many     200 concurrent clients, all in the server at once (it
#            reports 200 connections and 201 threads at its peak), every
#            response byte-exact
#   limits   with its descriptor limit at 64 (room for 10 connections),
#            100 idle connections (bash's /dev/tcp) and then 3 rounds of
#            4 normal clients: every normal client is served, the server
#            closing the oldest connections that have sent nothing to make
#            room, and it never exceeds its --max-connections
#   idle     --idle-timeout 1: a client that connects and sends nothing
#            sees the server close it (EOF), and the server counts it
#   memory   --trim-after 1: after 32 clients at once, once nothing has
#            happened for a second the server gives back what its pool
#            caches beyond one connection's worth (the floor it reports)
#            and its idle threads, and says so on a line of its output,
#            which the test waits for; its resident size then is within
#            twice its size at start plus that floor
#
# Each server runs with --stats and is stopped with SIGTERM; it must exit
# 0 having freed everything. The port is read from the server's first line
# of output through a FIFO, so nothing waits on time. Run by make check
# from the build directory; $1 may name another build directory.
set -eu
top=${1:-.}
server=$top/examples/gzip-server
client=$top/bench/server-client
for p in "$server" "$client"; do
  [ -x "$p" ] || { echo "server.sh: $p not built" >&2; exit 99; }
done
case $(uname -s) in
Linux) ;;
*) echo "server.sh: the example server needs epoll (Linux): skipped"; exit 77 ;;
esac

# 200 clients and their server hold about 1000 descriptors.
ulimit -n 4096 2> /dev/null || ulimit -n "$(ulimit -H -n)" 2> /dev/null || :

dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-server.XXXXXX")
srv_pid=
cleanup() {
  [ -z "$srv_pid" ] || kill -KILL "$srv_pid" 2> /dev/null || :
  exec 3<&- 2> /dev/null || :
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# start_server ARGS...: run it, read its port into $port. Its output comes
# through a FIFO held open on descriptor 3, so the read waits for the line
# the server prints once it listens. With $nofile set, under that
# descriptor limit.
start_server() {
  rm -f "$dir/out"
  mkfifo "$dir/out"
  # shellcheck disable=SC2016 # for the inner sh
  sh -c 'ulimit -n "$1" || exit 1; shift; exec "$@"' limit "${nofile:-$(ulimit -n)}" \
    "$server" --stats "$@" 0 > "$dir/out" 2> "$dir/server.err" &
  srv_pid=$!
  exec 3< "$dir/out"
  read -r port <&3 || { echo "server.sh: the server did not start" >&2; exit 1; }
}

# stop_server: SIGTERM, wait, the rest of its output into $dir/stats.
stop_server() {
  kill -TERM "$srv_pid"
  cat <&3 > "$dir/stats"
  exec 3<&-
  rc=0
  wait "$srv_pid" || rc=$?
  srv_pid=
  [ "$rc" = 0 ] || bad "the server exited with status $rc"
  [ ! -s "$dir/server.err" ] || { echo "server stderr:"; cat "$dir/server.err"; }
}

stat_of() { tr ' ' '\n' < "$dir/stats" | sed -n "s/^$1=//p"; }

check_freed() { # nothing of the library left at exit
  live=$(stat_of live_allocations)
  if [ "$live" = 0 ]; then ok "$1: everything freed"; else bad "$1: $live allocations live at exit"; fi
}

# --- slow: a slow reader of a 256 MiB body ------------------------------------
# The body is random, so the response is as large as the body, and the
# client reads it 1 KiB per recv, eight recvs per millisecond pause: about
# 7 MB/s, several times slower than gzip on one core, so the response path
# must block (the client's pauses shape the load; nothing waits on them).
hwm=65536
buf=16384
start_server --hwm $hwm --buf $buf
if "$client" --slow --slow-reads 8 --data random -c 1 -n $((256 << 20)) "$port" > "$dir/c.out"; then
  ok "slow: $(cat "$dir/c.out")"
else
  bad "slow: $(cat "$dir/c.out")"
fi
stop_server
client_of() { tr ' ' '\n' < "$dir/c.out" | sed -n "s/^$1=//p"; }
sent=$(client_of sent)
recvd=$(client_of recv)
if [ -n "$recvd" ] && [ "$recvd" -ge "$sent" ]; then
  ok "slow: the response ($recvd bytes) is as large as the body ($sent)"
else
  bad "slow: response '$recvd' bytes for a body of '$sent'"
fi
# Backpressure on the response side: sends that would block turned the
# reader off, and gzip found its output ring full; and so on the request
# side: the writer said stop and the loop stopped reading the client.
for k in send_blocked response_pauses recv_paused request_pauses; do
  v=$(stat_of $k)
  if [ -n "$v" ] && [ "$v" -gt 0 ]; then
    ok "slow: $k=$v"
  else
    bad "slow: $k '$v', want > 0: the slow reader held nothing back"
  fi
done
# What one connection's pool can hold (the account is at the top of
# examples/gzip-server.c): a ring admits a chunk while its level is below
# the mark and every chunk weighs a whole buffer, so a ring holds at most
# R, the mark rounded up to a whole buffer; the request ring with the
# buffer being received into hold R, gzip's batch taken from it R more,
# the response ring R, gzip's output buffer and the chunk being sent one
# buffer each: 3R + 2 buf. The two rings' R are the sum of the marks.
R=$(((hwm + buf - 1) / buf * buf))
bound=$((3 * R + 2 * buf))
peak=$(stat_of peak_pool_bytes)
if [ -n "$peak" ] && [ "$peak" -gt 0 ] && [ "$peak" -le $bound ]; then
  ok "slow: peak pool bytes $peak <= 3R + 2 buf = $bound (marks $hwm, buffers $buf)"
else
  bad "slow: peak pool bytes '$peak' not within 3R + 2 buf = $bound"
fi
if [ "$(stat_of conn_bound_bytes)" = $bound ]; then
  ok "slow: the server reports the same bound"
else
  bad "slow: the server's conn_bound_bytes '$(stat_of conn_bound_bytes)', want $bound"
fi
for k in request_ring_peak response_ring_peak; do
  v=$(stat_of $k)
  if [ -n "$v" ] && [ "$v" -le $R ]; then
    ok "slow: $k $v <= R = $R"
  else
    bad "slow: $k '$v' above R = $R"
  fi
done
check_freed slow

# --- drop: clients that reset mid-stream ----------------------------------------
start_server
"$client" --disconnect 10 -c 20 -n $((4 << 20)) "$port" > "$dir/d.out" &
drop_pid=$!
"$client" -c 10 -n $((2 << 20)) "$port" > "$dir/o.out" || :
drop_rc=0
wait $drop_pid || drop_rc=$?
if [ $drop_rc = 0 ] && grep -q 'ok=10 dropped=10 failed=0' "$dir/d.out"; then
  ok "drop: $(cat "$dir/d.out")"
else
  bad "drop: $(cat "$dir/d.out")"
fi
if grep -q 'ok=10 dropped=0 failed=0' "$dir/o.out"; then
  ok "drop: served alongside: $(cat "$dir/o.out")"
else
  bad "drop: alongside: $(cat "$dir/o.out")"
fi
if "$client" -c 20 -n $((1 << 20)) "$port" > "$dir/a.out"; then
  ok "drop: served after: $(cat "$dir/a.out")"
else
  bad "drop: after: $(cat "$dir/a.out")"
fi
stop_server
served=$(stat_of served)
failed=$(stat_of failed)
if [ "$served" = 40 ] && [ "$failed" = 10 ]; then
  ok "drop: the server failed exactly the 10 dropped pipelines"
else
  bad "drop: served '$served', failed '$failed' (want 40, 10)"
fi
# 50 connections, each with a gzip thread from the server's set: started
# for it or left waiting by a connection before (how many depends on how
# the batches overlapped; check_pipeline tests the reuse itself).
created=$(stat_of threads_created)
reused=$(stat_of threads_reused)
if [ -n "$created" ] && [ -n "$reused" ] && [ $((created + reused)) = 50 ]; then
  ok "drop: gzip threads started $created, taken again $reused"
else
  bad "drop: threads_created '$created', threads_reused '$reused' (want a sum of 50)"
fi
check_freed drop

# --- many: 200 concurrent clients -----------------------------------------------
# With --together no client ends its body before all 200 have received
# part of their responses (random bodies of four of the server's buffers,
# which gzip cannot hold back), so the 200 are in the server's hands at
# once, deterministically: each that answered was accepted, and none
# whose body has not ended can have finished. The server then runs one
# gzip thread per connection and its loop: 201 threads.
start_server
if "$client" --together --data random -c 200 -n $((256 << 10)) "$port" > "$dir/m.out"; then
  ok "many: $(cat "$dir/m.out")"
else
  bad "many: $(cat "$dir/m.out")"
fi
stop_server
if grep -q 'ok=200 .*peak_answered=200' "$dir/m.out"; then
  ok "many: 200 answered at once, every response byte-exact"
else
  bad "many: $(cat "$dir/m.out")"
fi
conns=$(stat_of peak_connections)
threads=$(stat_of threads_at_peak)
if [ "$conns" = 200 ]; then
  ok "many: the server held 200 connections at once"
else
  bad "many: the server's peak_connections '$conns', want 200"
fi
# One gzip thread per connection and the loop; a sanitizer's runtime may
# add a few threads of its own (never named as stage threads).
stage_threads=$(stat_of stage_threads_at_peak)
extra=0
case ${SL_SANITIZER:-no} in no) ;; *) extra=4 ;; esac
if [ "$stage_threads" = 200 ] && [ "$threads" -ge 201 ] &&
  [ "$threads" -le $((201 + extra)) ]; then
  ok "many: $threads threads then: one gzip thread per connection and the loop"
else
  bad "many: threads_at_peak '$threads' (stage threads '$stage_threads'), want 201 (200)"
fi
[ "$(stat_of served)" = 200 ] || bad "many: served $(stat_of served) of 200"
check_freed many

# --- limits: more idle connections than the descriptors allow ------------------
# bash holds 100 connections open and sends nothing; the server, at 64
# descriptors, has room for (64 - 32) / 3 = 10 connections. The normal
# clients connect behind them, and each must be served: the server closes
# the oldest silent connections to make room (counted as evicted).
# Every wait is on an event: the FIFO line that says the 100 connected,
# the clients' own ends; the guard (timeout) only bounds a hang.
guard="timeout 120"
command -v timeout > /dev/null || guard=
if command -v bash > /dev/null; then
  nofile=64
  start_server
  nofile=
  mkfifo "$dir/idle.ready" "$dir/idle.go"
  # shellcheck disable=SC2016 # for bash
  bash -c 'i=0
    while [ $i -lt 100 ]; do
      exec {fd}<>"/dev/tcp/127.0.0.1/$1" || exit 1
      i=$((i + 1))
    done
    echo "$i connected" > "$2"
    read -r _ < "$3"' idle "$port" "$dir/idle.ready" "$dir/idle.go" &
  idle_pid=$!
  read -r held < "$dir/idle.ready" || held=
  [ "$held" = "100 connected" ] || bad "limits: the idle connections: '$held'"
  for round in 1 2 3; do
    if $guard "$client" -c 4 -n $((1 << 20)) "$port" > "$dir/l.out" &&
      grep -q 'ok=4 dropped=0 failed=0' "$dir/l.out"; then
      ok "limits: round $round beside 100 idle connections: $(cat "$dir/l.out")"
    else
      bad "limits: round $round: $(cat "$dir/l.out")"
    fi
  done
  echo go > "$dir/idle.go"
  wait "$idle_pid" || bad "limits: the idle connections failed"
  stop_server
  max=$(stat_of max_connections)
  peak=$(stat_of peak_connections)
  evicted=$(stat_of evicted)
  if [ "$max" = 10 ] && [ -n "$peak" ] && [ "$peak" -le 10 ]; then
    ok "limits: at most $peak connections at once, the limit $max"
  else
    bad "limits: peak_connections '$peak', max_connections '$max' (want 10)"
  fi
  if [ -n "$evicted" ] && [ "$evicted" -ge 90 ]; then
    ok "limits: $evicted silent connections closed to make room"
  else
    bad "limits: evicted '$evicted', want at least 90"
  fi
  check_freed limits

  # --- idle: the idle timeout ---------------------------------------------------
  start_server --idle-timeout 1
  # shellcheck disable=SC2016
  if $guard bash -c 'exec 5<>"/dev/tcp/127.0.0.1/$1" && cat <&5' idle "$port" \
    > "$dir/i.out"; then
    ok "idle: the server closed a client that sent nothing (EOF)"
  else
    bad "idle: the silent client was not closed"
  fi
  stop_server
  if [ "$(stat_of idle_closed)" = 1 ]; then
    ok "idle: idle_closed=1"
  else
    bad "idle: idle_closed '$(stat_of idle_closed)', want 1"
  fi
  check_freed idle
else
  echo "server.sh: bash not found: the limits and idle parts skipped"
fi

# --- memory: given back after a quiet second -------------------------------------
start_server --trim-after 1
if $guard "$client" --together --data random -c 32 -n $((1 << 20)) "$port" > "$dir/t.out"; then
  ok "memory: $(cat "$dir/t.out")"
else
  bad "memory: $(cat "$dir/t.out")"
fi
# The server's own line, once it has trimmed with no connection left.
# shellcheck disable=SC2016
trim=$($guard sh -c 'while read -r l; do
  case $l in trimmed:*trim_connections=0*) echo "$l"; exit 0 ;; esac
done; exit 1' <&3) || trim=
stop_server
echo "memory: $trim"
tv() { echo "$trim" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
start=$(tv trim_start_rss_kib)
rss=$(tv trim_rss_kib)
floor=$(tv pool_floor_bytes)
pool_peak=$(stat_of peak_pool_bytes)
if [ -z "$trim" ] || [ -z "$start" ] || [ -z "$rss" ] || [ -z "$floor" ]; then
  bad "memory: no trim line from the server"
elif [ "$(tv trim_pool_freed_bytes)" -le "$floor" ]; then
  bad "memory: the trim freed $(tv trim_pool_freed_bytes) bytes of a peak of $pool_peak"
elif [ "${SL_SANITIZER:-no}" != no ]; then
  ok "memory: trimmed (resident size not compared under a sanitizer)"
elif [ "$rss" -gt 0 ] && [ $((rss * 1024)) -le $((2 * start * 1024 + floor)) ]; then
  ok "memory: resident $rss KiB after the trim <= 2 x $start KiB at start + the floor of $floor bytes (the pool's peak was $pool_peak bytes)"
else
  bad "memory: resident $rss KiB after the trim > 2 x $start KiB + $floor bytes"
fi
check_freed memory

exit $fail

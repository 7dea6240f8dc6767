#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/nats.sh — `make bench-nats`: sluice's NATS stages against the C
# client alone, and the distributed gzip against sgzip, in the same run.
#
#   relay   stream -> stream through one server: a sluice pipeline (nats
#           source -> nats sink) against a plain fetch / publish / ack loop
#           (bench/nats-relay), COUNT messages of 128 B and of 16 KiB;
#           ratio of messages/s and MB/s (goal >= 0.8x)
#   gzip    examples/nats-gzip with 1 and 2 worker processes on this
#           machine (produce, work, collect, wall time of the whole job)
#           against sgzip -p 1 and -p 2 on the same input
#
# Each pair runs three times, alternating which goes first; medians.
# Environment: BENCH_DIR (the build's bench directory), NATS_SERVER,
# COUNT (default 20000), GZIP_MIB (default 32).
set -eu

dir=${BENCH_DIR:-bench}
top=$dir/..
server=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
count=${COUNT:-20000}
mib=${GZIP_MIB:-32}
test -x "$server" || { echo "bench-nats: nats-server not found (install nats-server)"; exit 1; }

tmp=$(mktemp -d "$dir/nats-bench.XXXXXX")
spid=
trap 'test -z "$spid" || kill -9 "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT

start_server() {
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  url=nats://127.0.0.1:$port
  rm -rf "$tmp/js"
  "$server" -js -a 127.0.0.1 -p "$port" -sd "$tmp/js" >"$tmp/server.log" 2>&1 &
  spid=$!
  "$top/examples/nats-gzip" setup "$url" # waits until it accepts
}

stop_server() {
  kill -9 "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  spid=
}

median() {
  sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

now() {
  python3 -c 'import time; print(time.monotonic())'
}

echo "== relay: $count messages, sluice nats source -> sink vs a plain client loop"
for size in 128 16384; do
  : >"$tmp/sluice" && : >"$tmp/plain"
  for i in 1 2 3; do
    for mode in sluice plain; do
      test $((i % 2)) -eq 0 && mode=$(test $mode = sluice && echo plain || echo sluice)
      start_server
      "$dir/nats-relay" "$url" "$mode" "$count" "$size" >>"$tmp/$mode.all"
      tail -1 "$tmp/$mode.all" >>"$tmp/$mode"
      stop_server
    done
  done
  sm=$(cut -d' ' -f2 "$tmp/sluice" | median)
  pm=$(cut -d' ' -f2 "$tmp/plain" | median)
  sb=$(cut -d' ' -f3 "$tmp/sluice" | median)
  pb=$(cut -d' ' -f3 "$tmp/plain" | median)
  printf '%6s B  sluice %8s msg/s %8s MB/s   plain %8s msg/s %8s MB/s   ratio %s (msgs) %s (MB)\n' \
    "$size" "$sm" "$sb" "$pm" "$pb" \
    "$(awk -v a="$sm" -v b="$pm" 'BEGIN { printf "%.2fx", a / b }')" \
    "$(awk -v a="$sb" -v b="$pb" 'BEGIN { printf "%.2fx", a / b }')"
done

echo "== distributed gzip: nats-gzip (N workers, one server) vs sgzip -p N, $mib MiB"
python3 - "$tmp/input" "$mib" <<'PY'
import random, sys
r = random.Random(7)
n = int(sys.argv[2]) << 20
words = [b"sluice", b"nats", b"jetstream", b"gzip", b"worker", b"block"]
out = bytearray()
while len(out) < n:
    out += r.randbytes(64) if r.random() < 0.05 else r.choice(words) + b"%d " % r.randrange(10**6)
open(sys.argv[1], "wb").write(out[:n])
PY
for w in 1 2; do
  : >"$tmp/g" && : >"$tmp/s"
  for i in 1 2 3; do
    start_server
    t0=$(now)
    n=$("$top/examples/nats-gzip" produce "$url" "$tmp/input" 131072)
    k=0
    workers=
    while test $k -lt $w; do
      "$top/examples/nats-gzip" work "$url" --idle-exit &
      workers="$workers $!"
      k=$((k + 1))
    done
    "$top/examples/nats-gzip" collect "$url" "$n" "$tmp/out.gz" >/dev/null
    # The workers by their pids: `jobs -p` in a command substitution runs
    # in a subshell that has no jobs, and a bare wait would wait for the
    # server too.
    wait $workers 2>/dev/null || true
    t1=$(now)
    stop_server
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }' >>"$tmp/g"
    t0=$(now)
    "$top/tools/sgzip" -p "$w" -c "$tmp/input" >"$tmp/ref.gz"
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }' >>"$tmp/s"
  done
  gm=$(median <"$tmp/g")
  sm=$(median <"$tmp/s")
  printf '%d worker(s): nats-gzip %.2f s   sgzip -p %d %.2f s   ratio %.2fx (time, lower is better)\n' \
    "$w" "$gm" "$w" "$sm" "$(awk -v a="$gm" -v b="$sm" 'BEGIN { print a / b }')"
done

#!/bin/bash
# SPDX-License-Identifier: MIT
# examples/nats-gzip against a real nats-server: a worker killed with
# SIGKILL mid-batch (it holds a block, unacknowledged, when killed), a
# second worker finishes the job (the killed worker's blocks come back to
# it after the consumer's ack wait), and the collected .gz is complete,
# byte-identical to the same blocks compressed locally, readable by gzip,
# with every result stored once (the server dropped the second copies by
# message id). The server runs in its own session on a free port with its
# own storage directory, and is killed on every way out.
#
# Skips (77) without nats-server or without the example (libnats-dev).
set -eu

bin=examples/nats-gzip
server=${NATS_SERVER:-}
if test -z "$server" || test ! -x "$server"; then
  server=$(command -v nats-server || true)
fi
if test -z "$server" && test -x /usr/sbin/nats-server; then
  server=/usr/sbin/nats-server
fi
if test -z "$server"; then
  echo "nats-gzip.sh: nats-server not found; skipping (install the nats-server package)"
  exit 77
fi
if test "${SL_HAVE_NATS:-yes}" != yes || test ! -x "$bin"; then
  echo "nats-gzip.sh: $bin not built (the NATS C client was not found: install libnats-dev); skipping"
  exit 77
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Each background process leads a process group of its own (setsid), so
# that the cleanup kills whatever it started.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=nats://127.0.0.1:$port
setsid "$server" -js -a 127.0.0.1 -p "$port" -sd "$tmp/js" >"$tmp/server.log" 2>&1 &
pids+=($!)

# setup retries its connect a bounded number of times while the server
# starts.
"$bin" setup "$url"

python3 - "$tmp/input" <<'PY'
import random, sys
r = random.Random(22)
words = [b"sluice", b"nats", b"jetstream", b"gzip", b"worker", b"block", b"%d"]
out = bytearray()
while len(out) < 3 * 1024 * 1024 + 12345:
    if r.random() < 0.1:
        out += r.randbytes(200)
    else:
        w = r.choice(words)
        out += (w % r.randrange(100000) if b"%" in w else w) + b" "
open(sys.argv[1], "wb").write(out)
PY

block=32768
n=$("$bin" produce "$url" "$tmp/input" $block)
echo "nats-gzip.sh: $n blocks"

# Worker A compresses 5 blocks, then holds the 6th; its batch is never
# acknowledged. Kill it there.
mkfifo "$tmp/a.fifo"
setsid "$bin" work "$url" --hold-after 5 >"$tmp/a.fifo" 2>"$tmp/a.err" &
a=$!
pids+=($a)
read -r line <"$tmp/a.fifo"
test "$line" = holding
kill -9 -- "-$a"
wait "$a" 2>/dev/null || true
echo "nats-gzip.sh: worker A killed while holding a block"

setsid "$bin" work "$url" 2>"$tmp/b.err" &
pids+=($!)

summary=$(timeout 300 "$bin" collect "$url" "$n" "$tmp/out.gz")
echo "nats-gzip.sh: $summary"
test "$summary" = "blocks $n stored $n dropped 0"

"$bin" local "$tmp/input" $block >"$tmp/ref.gz"
cmp "$tmp/ref.gz" "$tmp/out.gz"
gzip -dc "$tmp/out.gz" | cmp - "$tmp/input"
if test -x tools/sgzip; then
  tools/sgzip -dc "$tmp/out.gz" | cmp - "$tmp/input"
fi
echo "nats-gzip.sh: output complete and identical ($(wc -c <"$tmp/out.gz") bytes)"

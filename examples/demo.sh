#!/bin/sh
# SPDX-License-Identifier: MIT
# The sluice demo (make demo): sgzip, the parallel gzip built on sluice,
# compresses a 256 MiB sample of mixed text and binary on every processor,
# with its progress bar (on a terminal) and its per-stage statistics; the
# result is checked with sgzip -d and gzip -t.
#
# Usage: sh examples/demo.sh BUILDDIR
#   BUILDDIR holds tools/sgzip; the sample and its compressed copy are
#   written under BUILDDIR/examples/demo/ and removed when the demo ends.
#   DEMO_MIB sets the sample's size (default 256, a multiple of 4).
#   DEMO_TRACE=FILE also has the compressing sgzip write its timeline to
#   FILE (--trace=FILE, relative to the current directory), for Perfetto
#   or docs/trace-svg.py: the README's picture is
#     make demo DEMO_MIB=32 DEMO_TRACE=demo-trace.json
#     python3 docs/trace-svg.py demo-trace.json docs/demo-trace.svg

set -eu
LC_ALL=C
export LC_ALL
unset SGZIP_THREADS

build=${1:-.}
sgzip=$build/tools/sgzip
work=$build/examples/demo
sample=$work/sample
mib=${DEMO_MIB:-256}
mib=$(((mib + 3) / 4 * 4))
trace=${DEMO_TRACE:-}
size=$((mib * 1048576))

if [ ! -x "$sgzip" ]; then
  echo "demo: $sgzip not found; build it first (make demo)" >&2
  exit 1
fi

mkdir -p "$work"
trap 'rm -f "$sample" "$sample.gz" "$sample.seed" "$sample.part"' EXIT
trap 'exit 1' HUP INT TERM

# Free space for the sample, its compressed copy and a margin.
avail=$(df -Pk "$work" | awk 'NR == 2 { printf "%d\n", $4 / 1024 }')
if [ "$avail" -lt $((mib * 2 + 64)) ]; then
  echo "demo: $((mib * 2 + 64)) MiB of free space needed under $work," \
    "$avail MiB free (set DEMO_MIB lower)" >&2
  exit 1
fi

# Nanoseconds since the epoch where date(1) has %N, else whole seconds.
now_ns() {
  t=$(date +%s%N)
  case $t in
    *[!0-9]*) echo "$(date +%s)000000000" ;;
    *) echo "$t" ;;
  esac
}

# A deterministic sample in a few seconds: a 4 MiB seed made of 2.5 MiB of
# web-server log lines (awk), 1 MiB of bytes that do not compress (the
# seed's text through gzip -1) and 0.5 MiB of fixed-size binary records,
# repeated to the size asked for. Deflate looks back only 32 KiB, so each
# repeat costs the compressor as much as new data would.
echo "demo: writing a $mib MiB sample of mixed text and binary"
awk 'BEGIN {
  split("GET POST PUT DELETE HEAD", m, " ")
  split("/index.html /api/v1/items /static/app.js /login /search?q=sluice" \
        " /img/logo.png /api/v1/users /health", u, " ")
  x = 12345; n = 2621440
  while (len < n) {
    x = (x * 69069 + 1) % 4294967296
    s = sprintf("10.%d.%d.%d - - [%02d/Nov/2024:%02d:%02d:%02d +0000] \"%s %s HTTP/1.1\" %d %d\n",
                x % 256, int(x / 256) % 256, int(x / 65536) % 256, 1 + x % 28,
                x % 24, int(x / 7) % 60, int(x / 11) % 60, m[1 + x % 5],
                u[1 + int(x / 5) % 8], (x % 10 < 8) ? 200 : 404, x % 50000)
    if (len + length(s) > n) s = substr(s, 1, n - len)
    printf "%s", s; len += length(s)
  }
}' >"$sample.seed"
cat "$sample.seed" "$sample.seed" "$sample.seed" | gzip -1n >"$sample.part"
dd if="$sample.part" bs=1048576 count=1 2>/dev/null >>"$sample.seed"
awk 'BEGIN {
  x = 7
  for (r = 0; r < 65536; r++) {
    x = (x * 69069 + 1) % 4294967296
    printf "%c%c%c%c%c%c%c%c", 1 + r % 255, 1 + int(r / 255) % 255,
      1 + int(r / 65025) % 255, 1 + x % 16, (x % 3) ? 1 : 255,
      1 + int(x / 256) % 255, 1 + int(x / 65536) % 255, 1 + int(x / 16777216) % 255
  }
}' >>"$sample.seed"
rm -f "$sample.part"
i=0
while [ $i -lt $((mib / 4)) ]; do
  cat "$sample.seed"
  i=$((i + 1))
done >"$sample"
rm -f "$sample.seed"
bytes=$(wc -c <"$sample" | tr -d ' ')
if [ "$bytes" -ne "$size" ]; then
  echo "demo: the sample has $bytes bytes, not $size" >&2
  exit 1
fi
cat "$sample" >/dev/null # into the page cache: time the compressor, not the disk

# Compress: a reader, the pgzip stage with one worker per processor, and
# the atomic file sink, each on its own thread. -v draws a progress bar
# when stderr is a terminal and prints the space saved, as gzip -v does;
# --stats prints each stage's busy and blocked time and each ring's peak
# and pauses when it ends; -k keeps the sample. With
# DEMO_TRACE, --trace writes the run's timeline too.
threads=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
set -- -v --stats -p "$threads" -k
if [ -n "$trace" ]; then
  set -- "$@" "--trace=$trace"
fi
echo "demo: $sgzip $* $sample"
start=$(now_ns)
if ! "$sgzip" "$@" "$sample"; then
  echo "demo: FAILED: sgzip exited with an error" >&2
  exit 1
fi
end=$(now_ns)

# The round trip must give the sample back, byte for byte, and gzip(1)
# must accept the file.
echo "demo: checking: $sgzip -d -c | cmp, and gzip -t"
dstart=$(now_ns)
if ! "$sgzip" -d -c "$sample.gz" | cmp - "$sample"; then
  echo "demo: FAILED: the round trip differs from the sample" >&2
  exit 1
fi
dend=$(now_ns)
if command -v gzip >/dev/null 2>&1; then
  if ! gzip -t "$sample.gz"; then
    echo "demo: FAILED: gzip -t rejects the output" >&2
    exit 1
  fi
else
  echo "demo: gzip(1) not found; skipping gzip -t"
fi

packed=$(wc -c <"$sample.gz" | tr -d ' ')
awk -v b="$bytes" -v c="$packed" -v ns="$((end - start))" \
  -v dns="$((dend - dstart))" -v p="$threads" 'BEGIN {
  s = ns / 1e9; if (s <= 0) s = 1e-9
  d = dns / 1e9; if (d <= 0) d = 1e-9
  # sgzip -v, as gzip -v, prints the space saved; say both, by name.
  printf "demo: %d bytes -> %d bytes: the output is %.1f%% of the input" \
         " (%.1f%% saved, the figure sgzip -v printed), ratio %.2f:1\n",
         b, c, 100 * c / b, 100 - 100 * c / b, b / c
  printf "demo: compressed in %.3f s: %.0f MB/s on %d threads\n", s, b / s / 1e6, p
  printf "demo: decompressed and compared in %.3f s: %.0f MB/s\n", d, b / d / 1e6
}'
if [ -n "$trace" ]; then
  echo "demo: the compression's timeline is in $trace (open it in" \
    "ui.perfetto.dev, or draw it: python3 docs/trace-svg.py $trace out.svg);" \
    "its ring counters carry the level, sampled every few ms, and the" \
    "ring's exact peak, the one in the table above"
fi
echo "demo: OK (sgzip round trip identical, gzip -t passes)"

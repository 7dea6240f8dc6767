#!/bin/sh
# The sluice demo (make demo): 64 MiB of text through examples/upper, a
# three-thread pipeline, with its statistics, checked against tr(1).
#
# Usage: sh examples/demo.sh BUILDDIR
#   BUILDDIR holds examples/upper; the sample and its output are written
#   under BUILDDIR/examples/demo/ and removed when the demo succeeds.

set -eu
LC_ALL=C
export LC_ALL

build=${1:-.}
upper=$build/examples/upper
work=$build/examples/demo
sample=$work/sample.txt
result=$work/sample.upper
size=67108864 # 64 MiB

if [ ! -x "$upper" ]; then
  echo "demo: $upper not found; build it first (make demo)" >&2
  exit 1
fi

mkdir -p "$work"

# Nanoseconds since the epoch where date(1) has %N, else whole seconds.
now_ns() {
  t=$(date +%s%N)
  case $t in
    *[!0-9]*) echo "$(date +%s)000000000" ;;
    *) echo "$t" ;;
  esac
}

# A deterministic sample: 64 KiB of mixed-case text from awk, doubled ten
# times (64 KiB * 2^10 = 64 MiB). Only a few seconds on any machine.
echo "demo: writing a $((size / 1048576)) MiB sample text"
awk 'BEGIN {
  split("The quick brown Fox jumps over the lazy Dog;" \
        " Pack my box with five dozen liquor jugs!" \
        " Sphinx of black quartz, judge my vow." \
        " How vexingly quick daft zebras jump.", w, " ")
  n = 0; line = 0
  while (n < 65536) {
    s = sprintf("%06d:", line++)
    for (i = 0; i < 12; i++) s = s " " w[(line * 7 + i * 3) % 30 + 1]
    print s; n += length(s) + 1
  }
}' > "$sample.seed"
dd if="$sample.seed" of="$sample" bs=65536 count=1 2>/dev/null
rm -f "$sample.seed"
i=0
while [ $i -lt 10 ]; do
  cat "$sample" "$sample" > "$sample.tmp"
  mv "$sample.tmp" "$sample"
  i=$((i + 1))
done
bytes=$(wc -c < "$sample" | tr -d ' ')
if [ "$bytes" -ne "$size" ]; then
  echo "demo: the sample has $bytes bytes, not $size" >&2
  exit 1
fi

# The pipeline: stdin -> upper -> stdout, one thread each; -s prints the
# per-stage and per-ring counters to stderr when it ends.
echo "demo: $upper -s < $sample > $result"
start=$(now_ns)
if ! "$upper" -s < "$sample" > "$result"; then
  echo "demo: FAILED: $upper exited with an error" >&2
  exit 1
fi
end=$(now_ns)

# The same text through tr(1) must match byte for byte (ASCII on purpose:
# upper changes a-z only, whatever the locale).
# shellcheck disable=SC2018,SC2019
if ! tr a-z A-Z < "$sample" | cmp - "$result"; then
  echo "demo: FAILED: the output differs from tr a-z A-Z" >&2
  exit 1
fi

awk -v b="$bytes" -v ns="$((end - start))" 'BEGIN {
  s = ns / 1e9; if (s <= 0) s = 1e-9
  printf "demo: %d bytes in %.3f s: %.0f MB/s\n", b, s, b / s / 1e6
}'
rm -f "$sample" "$result"
echo "demo: OK (output identical to tr a-z A-Z)"

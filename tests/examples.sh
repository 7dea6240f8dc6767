#!/bin/sh
# SPDX-License-Identifier: MIT
# The examples, run as a user would, checked against the system's tools:
# upper (LC_ALL=C tr a-z A-Z, on text and on every byte value), copy
# (byte-exact), tee (gzip -dc of its output, CRC-32 from Python's
# zlib), zlines (awk's line count of the same text), head (the first
# lines as sed prints them, having read only part of its input, with
# success, from a file and from a pipe), backpressure (the
# writer pauses, the output is intact) and epoll-bridge (gzip -dc of its
# output, from a file and from a pipe). Run by make check from the build
# directory; $1 may name another build directory.
set -eu
top=${1:-.}
ex=$top/examples
for p in upper copy tee zlines head backpressure epoll-bridge; do
  [ -x "$ex/$p" ] || { echo "examples.sh: $ex/$p not built" >&2; exit 99; }
done
command -v gzip > /dev/null || { echo "examples.sh: gzip not found, skipped"; exit 77; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-examples.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# A log of 200000 lines of varied length, the last without a newline.
awk 'BEGIN { for (i = 0; i < 200000; i++) {
  printf "%d GET /item/%d status=%d", i, i * 7919 % 100003, 200 + i % 5;
  for (j = 0; j < i % 13; j++) printf " x%d", j;
  if (i < 199999) printf "\n" } }' > "$dir/log"

# upper: what tr makes of the log, and of every byte value (its loop has
# no branch: one unsigned compare that must hold for a-z alone), in
# blocks of 64 and in the tail after them.
"$ex/upper" < "$dir/log" > "$dir/log.up"
if LC_ALL=C tr a-z A-Z < "$dir/log" | cmp -s - "$dir/log.up"; then
  ok "upper: as tr a-z A-Z"
else
  bad "upper differs from tr a-z A-Z"
fi
i=0
while [ $i -lt 256 ]; do
  # shellcheck disable=SC2059 # the format is the byte
  printf "\\$(printf %o $i)"
  i=$((i + 1))
done > "$dir/bytes"
cat "$dir/bytes" "$dir/bytes" "$dir/bytes" > "$dir/bytes3"
printf 'az{`@[' >> "$dir/bytes3" # a tail shorter than a block
"$ex/upper" < "$dir/bytes3" > "$dir/bytes3.up"
if [ "$(wc -c < "$dir/bytes")" -eq 256 ] &&
  LC_ALL=C tr a-z A-Z < "$dir/bytes3" | cmp -s - "$dir/bytes3.up"; then
  ok "upper: every byte value as tr"
else
  bad "upper: byte values differ from tr a-z A-Z"
fi

# copy: byte-exact, atomic (no temporary left), refuses to overwrite.
"$ex/copy" "$dir/log" "$dir/log.copy" 2> /dev/null
if cmp -s "$dir/log" "$dir/log.copy"; then ok "copy"; else bad "copy differs"; fi
if "$ex/copy" "$dir/log" "$dir/log.copy" 2> /dev/null; then
  bad "copy overwrote an existing file"
else
  ok "copy refuses to overwrite"
fi
if ls -a "$dir" | grep -q '^\.log\.copy\.'; then bad "copy left a temporary"; fi

# tee: one read, gzip and crc32 at once.
out=$("$ex/tee" "$dir/log" "$dir/log.gz")
if gzip -dc "$dir/log.gz" | cmp -s - "$dir/log"; then
  ok "tee: gzip branch"
else
  bad "tee: gzip -dc differs"
fi
if command -v python3 > /dev/null; then
  want=$(python3 -c 'import sys, zlib
print("%08x" % zlib.crc32(open(sys.argv[1], "rb").read()))' "$dir/log")
  case $out in
  *"crc32 $want"*) ok "tee: crc32 branch ($want)" ;;
  *) bad "tee: crc32 branch: got '$out', want $want" ;;
  esac
fi

# zlines: the lines of the gzip'd log, as awk counts them.
want=$(awk 'END { print NR }' "$dir/log")
got=$("$ex/zlines" "$dir/log.gz")
if [ "$got" = "$want" ]; then ok "zlines: $got lines"; else bad "zlines: $got, want $want"; fi
printf 'not gzip' > "$dir/bad.gz"
if "$ex/zlines" "$dir/bad.gz" 2> "$dir/err"; then
  bad "zlines accepted a file that is not gzip"
elif grep -q 'gunzip' "$dir/err"; then
  ok "zlines: $(cat "$dir/err")"
else
  bad "zlines: unclear error: $(cat "$dir/err")"
fi

# head: the first lines, as sed prints them, with success; it reads only
# part of its input (the rings bound how far the source reads ahead: a
# few hundred KiB of the log's 1.5 MB), from a file and from a pipe.
size=$(wc -c < "$dir/log.gz")
for n in 1 10 1000; do
  sed "${n}q" "$dir/log" > "$dir/want"
  if "$ex/head" -n "$n" -v "$dir/log.gz" > "$dir/got" 2> "$dir/err" &&
    cmp -s "$dir/got" "$dir/want"; then
    read_=$(sed -n 's/^head: read \([0-9]*\) of.*/\1/p' "$dir/err")
    if [ -n "$read_" ] && [ "$read_" -lt "$size" ]; then
      ok "head -n $n: $(cat "$dir/err")"
    else
      bad "head -n $n read it all: $(cat "$dir/err")"
    fi
  else
    bad "head -n $n: status or output differ: $(cat "$dir/err")"
  fi
done
# The writer of the pipe may see SIGPIPE once head has stopped reading.
if gzip -1 < "$dir/log" | "$ex/head" -n 2 > "$dir/got"; then
  if sed 2q "$dir/log" | cmp -s - "$dir/got"; then
    ok "head from a pipe"
  else
    bad "head from a pipe: output differs"
  fi
else
  bad "head from a pipe: failed"
fi
if "$ex/head" -n 2 "$dir/bad.gz" > /dev/null 2> "$dir/err"; then
  bad "head accepted a file that is not gzip"
else
  ok "head: $(cat "$dir/err")"
fi

# backpressure: a fast writer paused by a throttled reader.
out=$("$ex/backpressure" -r 33554432 -n 2097152 -H 32768)
case $out in
*"output intact"*) ok "backpressure: output intact" ;;
*) bad "backpressure: output damaged" ;;
esac
case $out in
*"paused 0 times"*) bad "backpressure: the writer never paused" ;;
*"paused "*) ok "backpressure: the writer paused" ;;
esac

# epoll-bridge: one event loop feeds gzip through the writer bridge and
# drains it through the reader bridge; from a file and from a pipe.
"$ex/epoll-bridge" < "$dir/log" > "$dir/log.eb.gz"
if gzip -dc "$dir/log.eb.gz" | cmp -s - "$dir/log"; then
  ok "epoll-bridge: file in, gzip -dc matches"
else
  bad "epoll-bridge: gzip -dc differs (file in)"
fi
cat "$dir/log" | "$ex/epoll-bridge" > "$dir/log.eb2.gz"
if gzip -dc "$dir/log.eb2.gz" | cmp -s - "$dir/log"; then
  ok "epoll-bridge: pipe in, gzip -dc matches"
else
  bad "epoll-bridge: gzip -dc differs (pipe in)"
fi

exit $fail

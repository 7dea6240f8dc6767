#!/bin/sh
# SPDX-License-Identifier: MIT
# sgzip -d on files whose gzip members carry their length, which it
# inflates in parallel (sl_pgunzip_chain): the block format ('S','L'
# subfield) and BGZF ('B','C') written by tests/blockgen.py, and BGZF
# written by bgzip(1) (htslib) when installed. Each must decompress to its
# input on 1, 2 and 4 threads, and so must files of gzip(1) and pigz,
# which take the streaming path; a block file with a gzip file appended,
# zero padding or garbage after it must give what the same bytes after a
# gzip file give; a damaged member must fail with its offset and a
# truncated file with the truncation's.
#
# Usage: sh tests/blocks.sh [BUILDDIR]
#
# Exit status: 0 pass, 1 fail, 77 skip (no python3, no gzip(1)).

set -u
LC_ALL=C
export LC_ALL
unset SGZIP_THREADS

here=$(dirname "$0")
if test $# -gt 0; then
  sg=$1/tools/sgzip
elif test -x ./tools/sgzip; then
  sg=./tools/sgzip
else
  sg=$here/../tools/sgzip
fi
if test ! -x "$sg"; then
  echo "blocks.sh: $sg not found or not executable; build it first" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1 || ! command -v gzip >/dev/null 2>&1; then
  echo "blocks.sh: python3 or gzip(1) not found; skipping"
  exit 77
fi
gen="python3 $here/blockgen.py"

work=$(mktemp -d "${TMPDIR:-/tmp}/blocks-test.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

fails=0
fail() {
  echo "FAIL: $*" >&2
  fails=$((fails + 1))
}

# Inputs: the edge sizes, and 3 MiB of text, random bytes and zeros.
python3 - "$work" <<'PY'
import os, random, sys
d = sys.argv[1]
r = random.Random(7)
for n in (0, 1, 2, 3):
    open(os.path.join(d, "e%d" % n), "wb").write(b"xyz"[:n])
text = b"".join(b"line %d: a block of text that compresses well\n" % i
                for i in range(20000))
rnd = bytes(r.getrandbits(8) for _ in range(1 << 20))
open(os.path.join(d, "big"), "wb").write(text + rnd + bytes(1 << 20) + text)
PY

# decomp FILE.gz WANT: sgzip -d on 1, 2 and 4 threads, from a file and
# from standard input, and sgzip -t.
decomp() {
  for p in 1 2 4; do
    "$sg" -d -c -p $p "$1" >"$work/out" 2>"$work/err" &&
      cmp -s "$work/out" "$2" ||
      fail "sgzip -d -p $p $(basename "$1"): $(cat "$work/err")"
  done
  "$sg" -d <"$1" >"$work/out" 2>"$work/err" && cmp -s "$work/out" "$2" ||
    fail "sgzip -d < $(basename "$1"): $(cat "$work/err")"
  "$sg" -t "$1" 2>"$work/err" || fail "sgzip -t $(basename "$1"): $(cat "$work/err")"
}

have_bgzip=no
if command -v bgzip >/dev/null 2>&1; then
  have_bgzip=yes
else
  echo "blocks.sh: bgzip not found; skipping the bgzip part"
fi
have_pigz=no
command -v pigz >/dev/null 2>&1 && have_pigz=yes

for f in e0 e1 e2 e3 big; do
  in=$work/$f
  $gen <"$in" >"$work/$f.sl.gz" && decomp "$work/$f.sl.gz" "$in"
  $gen -b 1000 <"$in" >"$work/$f.sl1k.gz" && decomp "$work/$f.sl1k.gz" "$in"
  $gen --bgzf <"$in" >"$work/$f.bc.gz" && decomp "$work/$f.bc.gz" "$in"
  if test $have_bgzip = yes; then
    bgzip -c <"$in" >"$work/$f.bgzip.gz" && decomp "$work/$f.bgzip.gz" "$in"
    bgzip -c -@ 2 -l 1 <"$in" >"$work/$f.bgzip1.gz" &&
      decomp "$work/$f.bgzip1.gz" "$in"
  fi
  gzip -c <"$in" >"$work/$f.gzip.gz" && decomp "$work/$f.gzip.gz" "$in"
  if test $have_pigz = yes; then
    pigz -c <"$in" >"$work/$f.pigz.gz" && decomp "$work/$f.pigz.gz" "$in"
  fi
done
# Block members with members without a length among them.
$gen -b 5000 --plain 3,4,40 <"$work/big" >"$work/mixed.gz" &&
  decomp "$work/mixed.gz" "$work/big"

# After the block members: a gzip file, zero padding, garbage. sgzip -d
# must treat them as it does after a gzip file (same output, same status).
gzip -c <"$work/e3" >"$work/tail.gz"
head -c 1000 /dev/zero >"$work/zeros"
printf 'garbage\n' >"$work/garbage"
for t in tail.gz zeros garbage; do
  cat "$work/big.gzip.gz" "$work/$t" >"$work/ref.gz"
  "$sg" -d -c "$work/ref.gz" >"$work/ref.out" 2>/dev/null
  ref_rc=$?
  for k in sl bc; do
    cat "$work/big.$k.gz" "$work/$t" >"$work/try.gz"
    "$sg" -d -c "$work/try.gz" >"$work/try.out" 2>"$work/err"
    rc=$?
    test $rc = $ref_rc && cmp -s "$work/try.out" "$work/ref.out" ||
      fail "$k + $t: status $rc (gzip file: $ref_rc): $(cat "$work/err")"
  done
done

# Damage: a flipped CRC-32 in member 5, a truncated member 5.
python3 - "$work/big.sl1k.gz" "$work" <<'PY'
import os, struct, sys
z = open(sys.argv[1], "rb").read()
offs, pos = [], 0
while pos < len(z):
    offs.append(pos)
    pos += struct.unpack("<I", z[pos + 16:pos + 20])[0]
end5 = offs[6]
crc = bytearray(z)
crc[end5 - 8] ^= 1
open(os.path.join(sys.argv[2], "crc.gz"), "wb").write(crc)
open(os.path.join(sys.argv[2], "crc.at"), "w").write(str(end5 - 8))
open(os.path.join(sys.argv[2], "cut.gz"), "wb").write(z[:offs[5] + 30])
open(os.path.join(sys.argv[2], "cut.at"), "w").write(str(offs[5] + 30))
PY
for p in 1 4; do
  if "$sg" -d -c -p $p "$work/crc.gz" >/dev/null 2>"$work/err"; then
    fail "a bad CRC-32 decompressed"
  elif ! grep -q "crc32 mismatch at input byte $(cat "$work/crc.at")" "$work/err"; then
    fail "a bad CRC-32: $(cat "$work/err")"
  fi
  if "$sg" -d -c -p $p "$work/cut.gz" >/dev/null 2>"$work/err"; then
    fail "a truncated file decompressed"
  elif ! grep -q "truncated input at byte $(cat "$work/cut.at")" "$work/err"; then
    fail "a truncated file: $(cat "$work/err")"
  fi
done

if test $fails -gt 0; then
  echo "blocks.sh: $fails failed" >&2
  exit 1
fi
echo "blocks.sh: ok"
exit 0

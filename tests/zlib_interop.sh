#!/bin/sh
# SPDX-License-Identifier: MIT
# Interoperability of the zlib stages with other gzip implementations,
# through examples/gzip (file -> sl_gzip / sl_gunzip -> file). Inputs are
# made here: 0, 1, 2, 3, 65536 and 65537 bytes and 5 MiB of mixed text,
# random bytes and zeros. Each goes both ways against gzip(1), Python's
# gzip module and pigz: their tools read what we write (and gzip -t and
# pigz -t test it), we read what they write. Also: levels, several
# members, standard input and output, the header name, and a truncated
# file rejected with its offset.
#
# Usage: sh tests/zlib_interop.sh [DIR]
#   DIR holds the gzip example program, or is the build directory above
#   examples/; by default ./examples (make check runs tests from the build
#   directory), else examples/ beside this script's directory.
#
# Exit status: 0 pass, 1 fail, 77 skip (no gzip(1)). Python and pigz are
# optional: without them their part is skipped with a message.

set -u
LC_ALL=C
export LC_ALL

here=$(dirname "$0")
if test $# -gt 0; then
  if test -x "$1/examples/gzip"; then
    drv=$1/examples/gzip
  else
    drv=$1/gzip
  fi
elif test -x ./examples/gzip; then
  drv=./examples/gzip
else
  drv=$here/../examples/gzip
fi

if test ! -x "$drv"; then
  echo "zlib_interop: $drv not found or not executable; build it first" >&2
  exit 1
fi
if ! command -v gzip >/dev/null 2>&1; then
  echo "zlib_interop: gzip(1) not found; skipping"
  exit 77
fi
have_python=no
if command -v python3 >/dev/null 2>&1 &&
  python3 -c 'import gzip' >/dev/null 2>&1; then
  have_python=yes
else
  echo "zlib_interop: python3 with its gzip module not found; skipping" \
    "the Python part"
fi
have_pigz=no
if command -v pigz >/dev/null 2>&1; then
  have_pigz=yes
else
  echo "zlib_interop: pigz not found; skipping the pigz part"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/zlib_interop.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

failures=0
checks=0
fail() {
  echo "zlib_interop: FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() {
  checks=$((checks + 1))
}

# ---- inputs ---------------------------------------------------------------

# 5 MiB of mixed content: text from awk, bytes from /dev/urandom (when
# there is one), zeros; cut to exactly 5 MiB.
text() {
  awk -v n="$1" 'BEGIN {
    split("sluice stream ring gzip member backpressure the of and a", w, " ")
    while (len < n) {
      s = sprintf("%07d", line++)
      for (i = 0; i < 9; i++) s = s " " w[(line * 7 + i * 3) % 10 + 1]
      print s; len += length(s) + 1
    }
  }'
}
random() {
  if test -r /dev/urandom; then
    dd if=/dev/urandom bs=65536 count="$1" 2>/dev/null
  else
    text $(($1 * 65536)) | tr 'abcdefghijklm' 'nopqrstuvwxyz'
  fi
}
zeros() {
  dd if=/dev/zero bs=65536 count="$1" 2>/dev/null
}
{
  text 1500000
  random 16
  zeros 8
  text 700000
  random 8
  zeros 24
  text 1200000
} >"$work/all"
dd if="$work/all" of="$work/mixed" bs=1048576 count=5 2>/dev/null
size=$(wc -c <"$work/mixed" | tr -d ' ')
if test "$size" -ne 5242880; then
  echo "zlib_interop: the mixed input has $size bytes, not 5242880" >&2
  exit 1
fi

# The start of the mixed input, n bytes.
cut_to() {
  if test "$1" -eq 0; then
    : >"$2"
  else
    dd if="$work/mixed" of="$2" bs="$1" count=1 2>/dev/null
  fi
}

inputs=
for n in 0 1 2 3 65536 65537; do
  cut_to "$n" "$work/in$n"
  inputs="$inputs in$n"
done
inputs="$inputs mixed"

# Python starts slowly, so one run checks every input: it reads what we
# wrote (NAME.ours.gz) and writes its own (NAME.py.gz) for us to read.
py_both='import gzip, sys
bad = 0
for name in sys.argv[1:]:
    data = open(name, "rb").read()
    try:
        ours = gzip.decompress(open(name + ".ours.gz", "rb").read())
    except Exception as e:
        ours = repr(e)
    if ours != data:
        print("zlib_interop: FAIL: %s: Python does not read our output back"
              % name, file=sys.stderr)
        bad += 1
    open(name + ".py.gz", "wb").write(gzip.compress(data))
sys.exit(1 if bad else 0)'
py_gunzip='import gzip, sys
sys.stdout.buffer.write(gzip.decompress(open(sys.argv[1], "rb").read()))'

# ---- both ways, every input ------------------------------------------------

for name in $inputs; do
  f=$work/$name

  # Ours compresses; the others read it.
  if "$drv" "$f" "$f.ours.gz"; then ok; else fail "$name: our gzip failed"; fi
  if gzip -t "$f.ours.gz" 2>/dev/null; then ok; else
    fail "$name: gzip -t rejects our output"
  fi
  if gzip -dc "$f.ours.gz" | cmp -s - "$f"; then ok; else
    fail "$name: gzip -dc of our output differs"
  fi
  if test $have_pigz = yes; then
    if pigz -t "$f.ours.gz" 2>/dev/null; then ok; else
      fail "$name: pigz -t rejects our output"
    fi
    if pigz -dc "$f.ours.gz" | cmp -s - "$f"; then ok; else
      fail "$name: pigz -dc of our output differs"
    fi
  fi

  # Ours reads what they compress.
  gzip -c "$f" >"$f.gzip.gz"
  if "$drv" -d "$f.gzip.gz" "$f.out" && cmp -s "$f.out" "$f"; then ok; else
    fail "$name: our gunzip of gzip's output differs or failed"
  fi
  if test $have_pigz = yes; then
    pigz -c "$f" >"$f.pigz.gz"
    if "$drv" -d "$f.pigz.gz" "$f.out" && cmp -s "$f.out" "$f"; then ok; else
      fail "$name: our gunzip of pigz's output differs or failed"
    fi
  fi
done

if test $have_python = yes; then
  # shellcheck disable=SC2086 # $inputs is a list of plain names
  if (cd "$work" && python3 -c "$py_both" $inputs); then ok; else
    fail "Python does not read our output back (above)"
  fi
  for name in $inputs; do
    f=$work/$name
    if "$drv" -d "$f.py.gz" "$f.out" && cmp -s "$f.out" "$f"; then ok; else
      fail "$name: our gunzip of Python's output differs or failed"
    fi
  done
fi
for name in $inputs; do
  f=$work/$name
  rm -f "$f.ours.gz" "$f.gzip.gz" "$f.py.gz" "$f.pigz.gz" "$f.out"
done

# ---- levels ------------------------------------------------------------------

f=$work/mixed
for level in 0 1 6 9; do
  if "$drv" -l "$level" "$f" "$f.l$level.gz" && gzip -t "$f.l$level.gz" &&
    gzip -dc "$f.l$level.gz" | cmp -s - "$f"; then ok; else
    fail "level $level: gzip does not read our output back"
  fi
done
for level in 1 9; do
  if gzip -"$level" -c "$f" >"$f.g$level.gz" &&
    "$drv" -d "$f.g$level.gz" "$f.out" && cmp -s "$f.out" "$f"; then ok; else
    fail "gzip -$level: our gunzip differs or failed"
  fi
done
s0=$(wc -c <"$f.l0.gz")
s9=$(wc -c <"$f.l9.gz")
if test "$s0" -gt 5242880 && test "$s9" -lt "$s0"; then ok; else
  fail "levels: level 0 gave $s0 bytes, level 9 gave $s9"
fi
rm -f "$f".l*.gz "$f".g*.gz "$f.out"

# ---- several members -------------------------------------------------------

a=$work/in65537
b=$work/mixed
gzip -c "$a" >"$work/a.gz"
"$drv" "$b" "$work/b.gz" || fail "multi-member: our gzip failed"
cat "$work/a.gz" "$work/b.gz" "$work/a.gz" >"$work/multi.gz"
cat "$a" "$b" "$a" >"$work/multi"
if "$drv" -d "$work/multi.gz" "$work/multi.out" &&
  cmp -s "$work/multi.out" "$work/multi"; then ok; else
  fail "multi-member: our gunzip differs or failed"
fi
if gzip -dc "$work/multi.gz" | cmp -s - "$work/multi"; then ok; else
  fail "multi-member: gzip -dc differs"
fi
if test $have_python = yes; then
  if python3 -c "$py_gunzip" "$work/multi.gz" | cmp -s - "$work/multi"; then
    ok
  else
    fail "multi-member: Python differs"
  fi
fi
if "$drv" -d -v "$work/multi.gz" "$work/multi.out" 2>"$work/hdr" &&
  grep -q '^members: 3$' "$work/hdr"; then ok; else
  fail "multi-member: -v does not report 3 members"
fi

# ---- standard input and output, header name ---------------------------------

f=$work/in65537
cp "$f" "$work/piped"
if "$drv" -c - <"$f" | "$drv" -d -c - | cmp -s - "$work/piped"; then ok; else
  fail "stdin/stdout: the round trip differs"
fi
cp "$f" "$work/named.txt"
gzip -c "$work/named.txt" >"$work/named.gz" # gzip stores the name
if "$drv" -d -v "$work/named.gz" "$work/named.out" 2>"$work/hdr" &&
  grep -q '^name: *named.txt$' "$work/hdr"; then ok; else
  fail "header: the name gzip stored is not reported"
fi
"$drv" "$work/named.txt" "$work/ours-named.gz"
if gzip -lN "$work/ours-named.gz" 2>/dev/null | grep -q 'named\.txt$'; then
  ok
else
  fail "header: gzip -lN does not find the name we stored"
fi

# ---- a truncated file is rejected, naming its offset, and OUT is kept --------

gzip -c "$work/mixed" >"$work/whole.gz"
dd if="$work/whole.gz" of="$work/cut.gz" bs=100000 count=1 2>/dev/null
echo keep >"$work/kept"
if "$drv" -d "$work/cut.gz" "$work/kept" 2>"$work/err"; then
  fail "truncated: accepted"
else
  if grep -q 'gunzip: truncated input at byte 100000' "$work/err"; then ok; else
    fail "truncated: unexpected message: $(cat "$work/err")"
  fi
  if test "$(cat "$work/kept")" = keep; then ok; else
    fail "truncated: the output file was replaced"
  fi
fi

echo "zlib_interop: $checks checks passed, $failures failed"
test "$failures" -eq 0

#!/bin/sh
# SPDX-License-Identifier: MIT
# The compression engines (zlib, ISA-L, libdeflate), each against the
# others and against gzip(1), pigz and Python's gzip module:
#
#   - the gzip Check suites (tests/check_zlib, tests/check_pgzip,
#     tests/check_bgunzip) once per streaming engine built in, with AUTO
#     resolved to it (SL_TEST_ENGINE):
#     every round trip and every corrupt-input test, with the same errors
#     at the same offsets, on each decoder
#   - sgzip -V and --help name the engines built in; --engine refuses an
#     unknown name and one not built in
#   - sgzip round trips for every engine x level at the edge sizes (0, 1,
#     2, 3 bytes, a block, a block +- 1, many blocks): the output is read
#     back by gzip, pigz, Python and sgzip -d on every engine, and its
#     bytes do not depend on -p nor on a pipe or a file as input
#
# Usage: sh tests/engines.sh [BUILDDIR]
#   BUILDDIR holds tools/sgzip and tests/check_*; by default the current
#   directory (make check runs tests from the build directory).
#
# Exit status: 0 pass, 1 fail, 77 skip (no gzip(1)). pigz and Python are
# optional: without them their part is skipped with a message.

set -u
LC_ALL=C
export LC_ALL
unset SGZIP_THREADS SL_TEST_ENGINE

top=${1:-.}
sg=$top/tools/sgzip
for f in "$sg" "$top/tests/check_zlib" "$top/tests/check_pgzip" \
  "$top/tests/check_bgunzip"; do
  if test ! -x "$f"; then
    echo "engines.sh: $f not found or not executable; build it first" >&2
    exit 1
  fi
done
if ! command -v gzip >/dev/null 2>&1; then
  echo "engines.sh: gzip(1) not found; skipping"
  exit 77
fi
have_pigz=no
command -v pigz >/dev/null 2>&1 && have_pigz=yes
test $have_pigz = yes || echo "engines.sh: pigz not found; skipping its part"
have_py=no
python3 -c 'import gzip' >/dev/null 2>&1 && have_py=yes
test $have_py = yes || echo "engines.sh: python3 not found; skipping its part"

work=$(mktemp -d "${TMPDIR:-/tmp}/engines.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
fails=0
fail() {
  echo "FAIL: $*" >&2
  fails=$((fails + 1))
}

# The engines built in, from sgzip -V ("Engines: zlib isal ...").
engines=$("$sg" -V | sed -n 's/^Engines://p')
case " $engines " in
*" zlib "*) ;;
*) fail "sgzip -V does not name zlib: '$engines'" ;;
esac
"$sg" --help | grep -q "^Engines built in:$engines\$" ||
  fail "sgzip --help does not list the engines '$engines'"
echo "engines:$engines"

"$sg" --engine bogus -c </dev/null >/dev/null 2>"$work/err" &&
  fail "--engine bogus accepted"
grep -q "'bogus' is not auto, zlib, isal or libdeflate" "$work/err" ||
  fail "--engine bogus: $(cat "$work/err")"
for e in isal libdeflate; do
  case " $engines " in
  *" $e "*) ;;
  *)
    "$sg" --engine $e -c </dev/null >/dev/null 2>"$work/err" &&
      fail "--engine $e accepted though not built in"
    grep -q "$e is not built in" "$work/err" || fail "--engine $e: $(cat "$work/err")"
    ;;
  esac
done

# The Check suites on each streaming decoder but the default one (ISA-L
# when built in), on which make check runs them already.
default=zlib
case " $engines " in *" isal "*) default=isal ;; esac
for e in $engines; do
  test "$e" = libdeflate && continue # no streaming inflate
  test "$e" = $default && continue
  for s in check_zlib check_pgzip check_bgunzip; do
    if ! SL_TEST_ENGINE=$e "$top/tests/$s" >"$work/log" 2>&1; then
      fail "$s on $e"
      tail -20 "$work/log" >&2
    fi
  done
done

# Inputs: mixed text and binary, cut at the edge sizes of a 32 KiB block
# (sgzip -b 32).
python3 - "$work" <<'PY' 2>/dev/null || head -c 400000 /dev/urandom >"$work/base"
import random, sys
r = random.Random(18)
words = [bytes(r.choice(b"etaoinshrdlu") for _ in range(r.randint(1, 9)))
         for _ in range(500)]
out = bytearray()
while len(out) < 400000:
    if r.random() < 0.9:
        out += b" ".join(r.choice(words) for _ in range(12)) + b"\n"
    else:
        out += bytes(r.getrandbits(8) for _ in range(300))
open(sys.argv[1] + "/base", "wb").write(out[:400000])
PY
block=32768
sizes="0 1 2 3 $((block - 1)) $block $((block + 1)) 400000"

cmp_py() { # cmp_py FILE.gz PLAIN
  python3 -c 'import gzip, sys; sys.exit(gzip.open(sys.argv[1]).read() != open(sys.argv[2], "rb").read())' "$1" "$2"
}

for n in $sizes; do
  head -c "$n" "$work/base" >"$work/in"
  for e in auto $engines; do
    for l in 1 3 6 9; do
      tag="size $n engine $e -$l"
      if ! "$sg" --engine "$e" -$l -n -b 32 -p 2 -c "$work/in" >"$work/a.gz" \
        2>"$work/err"; then
        # An engine may not compress at every level: it says so.
        grep -q "invalid argument" "$work/err" || fail "$tag: $(cat "$work/err")"
        continue
      fi
      "$sg" --engine "$e" -$l -n -b 32 -p 1 -c <"$work/in" >"$work/b.gz" ||
        fail "$tag: -p 1 from a pipe"
      cmp -s "$work/a.gz" "$work/b.gz" || fail "$tag: -p 2 file != -p 1 pipe"
      gzip -dc "$work/a.gz" | cmp -s - "$work/in" || fail "$tag: gzip -d"
      if test $have_pigz = yes; then
        pigz -dc "$work/a.gz" | cmp -s - "$work/in" || fail "$tag: pigz -d"
      fi
      if test $have_py = yes; then
        cmp_py "$work/a.gz" "$work/in" || fail "$tag: python"
      fi
      for d in $engines; do
        test "$d" = libdeflate && continue
        "$sg" --engine "$d" -dc <"$work/a.gz" | cmp -s - "$work/in" ||
          fail "$tag: sgzip -d --engine $d"
      done
    done
  done
done

if test $fails -ne 0; then
  echo "engines.sh: $fails failures" >&2
  exit 1
fi
echo "engines.sh: all passed"

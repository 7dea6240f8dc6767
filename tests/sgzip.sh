#!/bin/sh
# SPDX-License-Identifier: MIT
# The sgzip command, run as a user would and checked against gzip(1),
# pigz and Python's gzip module:
#
#   - round trips: empty, 1 byte, 1 MiB of random bytes, 50 MiB of text,
#     the smallest block size (-b 32), every level used
#   - the output does not depend on the thread count (-p 1, 2, 8)
#   - interoperability both ways with gzip and pigz; Python reads ours
#   - several members in one file decompress to the concatenation
#   - -k -c -f -S -t -l -n -N -r, owner mode and times kept (set through
#     the descriptor, before the output has its name), exit codes (2 for
#     a file skipped), SGZIP_THREADS, standard input's MTIME
#   - FIFOs, devices and process substitution read with -c, -t, -l;
#     symbolic link loops; a directory that links to itself under -r
#   - every malformed input (truncated, a flipped CRC byte, garbage, a bad
#     member after a good one) fails with a message naming the file,
#     leaves no output and no temporary, and keeps the input as it was;
#     on standard output, what could be decoded comes out first; zero
#     padding after the data is accepted, other trailing garbage is
#     delivered with a warning (status 2) and the input kept
#   - an input that grows while it is compressed is kept (status 2), the
#     output holding exactly what was read
#   - a closed pipe ends sgzip by SIGPIPE, quietly; SIGTERM removes what
#     was half made and ends it by SIGTERM; SIGKILL leaves nothing
#   - the progress bar shows the end of a long name
#
# Usage: sh tests/sgzip.sh [BUILDDIR]
#   BUILDDIR holds tools/sgzip; by default ./tools/sgzip (make check runs
#   tests from the build directory), else tools/ beside this script's
#   directory.
#
# Exit status: 0 pass, 1 fail, 77 skip (no gzip(1)). pigz, Python, bash
# and strace are optional: without them their part is skipped with a
# message.

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
  echo "sgzip.sh: $sg not found or not executable; build it first" >&2
  exit 1
fi
case $sg in
/*) ;;
*) sg=$(pwd)/$sg ;;
esac

if ! command -v gzip >/dev/null 2>&1; then
  echo "sgzip.sh: gzip(1) not found; skipping"
  exit 77
fi
have_pigz=no
if command -v pigz >/dev/null 2>&1; then
  have_pigz=yes
else
  echo "sgzip.sh: pigz not found; skipping the pigz part"
fi
have_python=no
if command -v python3 >/dev/null 2>&1 &&
  python3 -c 'import gzip' >/dev/null 2>&1; then
  have_python=yes
else
  echo "sgzip.sh: python3 with its gzip module not found; skipping the" \
    "Python part"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sgzip-test.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
cd "$work" || exit 1

failures=0
checks=0
fail() {
  echo "sgzip.sh: FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() {
  checks=$((checks + 1))
}

# $1: what; the rest: a command whose status must be $expect.
expect_rc() {
  want=$1
  what=$2
  shift 2
  "$@" >"$work/out" 2>"$work/err"
  got=$?
  if test "$got" -eq "$want"; then ok; else
    fail "$what: exit status $got, want $want ($(sed -n 1,3p "$work/err"))"
  fi
}

# No temporary left beside the outputs: the file sink writes ".NAME.XXXXXX".
no_temporaries() {
  if ls -a "${1:-.}" | grep -q '^\.[^.].*\.......$'; then
    fail "$2: a temporary was left: $(ls -a "${1:-.}" | tr '\n' ' ')"
  else
    ok
  fi
}

# ---- inputs ---------------------------------------------------------------

# n bytes of varied text, deterministic.
text() {
  awk -v n="$1" 'BEGIN {
    split("sluice stream ring gzip member backpressure the of and a pigz" \
          " block window dictionary thread worker ordered", w, " ")
    while (len < n) {
      s = sprintf("%08d", line++)
      k = 6 + line % 9
      for (i = 0; i < k; i++)
        s = s " " w[(line * 7 + i * 5 + int(line / 97)) % 17 + 1]
      s = s "\n"
      if (len + length(s) > n) s = substr(s, 1, n - len)
      printf "%s", s; len += length(s)
    }
  }'
}
random() { # $1 blocks of 64 KiB
  if test -r /dev/urandom; then
    dd if=/dev/urandom bs=65536 count="$1" 2>/dev/null
  else
    text $(($1 * 65536)) | tr 'abcdefghijklm' 'nopqrstuvwxyz'
  fi
}

: >empty
printf 'x' >one
random 16 >rand1m
text 52428800 >text50m
{
  text 2000000
  random 24
  dd if=/dev/zero bs=65536 count=8 2>/dev/null
  text 1500000
  random 8
} >mixed
size() { wc -c <"$1" | tr -d ' '; }
if test "$(size text50m)" -ne 52428800 || test "$(size rand1m)" -ne 1048576; then
  echo "sgzip.sh: could not make the inputs ($(size text50m) bytes of text)" >&2
  exit 1
fi

# ---- round trips -----------------------------------------------------------

for f in empty one rand1m text50m; do
  if "$sg" -c "$f" >"$f.gz"; then ok; else fail "$f: compressing failed"; fi
  if gzip -t "$f.gz" 2>/dev/null; then ok; else fail "$f: gzip -t rejects ours"; fi
  if gzip -dc "$f.gz" | cmp -s - "$f"; then ok; else
    fail "$f: gzip -dc of ours differs"
  fi
  if "$sg" -dc "$f.gz" | cmp -s - "$f"; then ok; else
    fail "$f: sgzip -dc of ours differs"
  fi
done

# In place: the input is replaced by NAME.gz and back, its bytes intact.
cp mixed inplace
"$sg" inplace
if test -f inplace.gz && test ! -e inplace; then ok; else
  fail "in place: inplace.gz missing or inplace not removed"
fi
"$sg" -d inplace.gz
if test -f inplace && test ! -e inplace.gz && cmp -s inplace mixed; then ok; else
  fail "in place: the round trip differs"
fi
no_temporaries . "in place"

# The smallest block and every level.
for args in "-b 32" "-1" "-9" "-b 32 -9" "-b 1024 -1"; do
  # shellcheck disable=SC2086 # $args is a list of options
  if "$sg" $args -c mixed >m.gz && gzip -dc m.gz | cmp -s - mixed; then ok; else
    fail "$args: gzip -dc of ours differs"
  fi
done
expect_rc 1 "-b 16 (below the smallest block)" "$sg" -b 16 -c mixed
expect_rc 1 "-p 0" "$sg" -p 0 -c mixed
s1=$("$sg" -1 -c mixed | wc -c)
s9=$("$sg" -9 -c mixed | wc -c)
if test "$s9" -lt "$s1"; then ok; else fail "levels: -9 gave $s9 bytes, -1 $s1"; fi

# The thread count never changes the output.
"$sg" -p 1 -c mixed >p1.gz
for p in 2 8; do
  "$sg" -p "$p" -c mixed >"p$p.gz"
  if cmp -s p1.gz "p$p.gz"; then ok; else fail "-p $p differs from -p 1"; fi
done
SGZIP_THREADS=3 "$sg" -c mixed >p3.gz
if cmp -s p1.gz p3.gz; then ok; else fail "SGZIP_THREADS=3 differs from -p 1"; fi
expect_rc 1 "SGZIP_THREADS=many" env SGZIP_THREADS=many "$sg" -c mixed
rm -f p*.gz m.gz

# ---- interoperability -------------------------------------------------------

gzip -c mixed >g.gz
if "$sg" -dc g.gz | cmp -s - mixed; then ok; else fail "we do not read gzip's output"; fi
gzip -9 -c text50m >g9.gz
if "$sg" -dc g9.gz | cmp -s - text50m; then ok; else fail "we do not read gzip -9's output"; fi
if test $have_pigz = yes; then
  pigz -c mixed >pz.gz
  if "$sg" -dc pz.gz | cmp -s - mixed; then ok; else fail "we do not read pigz's output"; fi
  "$sg" -c mixed >ours.gz
  if pigz -t ours.gz && pigz -dc ours.gz | cmp -s - mixed; then ok; else
    fail "pigz does not read our output"
  fi
  pigz -c empty >pe.gz
  if "$sg" -dc pe.gz | cmp -s - empty; then ok; else fail "we do not read pigz's empty output"; fi
fi
if test $have_python = yes; then
  for f in empty one rand1m mixed; do
    "$sg" -c "$f" >"$f.py.gz"
  done
  if python3 -c 'import gzip, sys
bad = 0
for name in sys.argv[1:]:
    if gzip.decompress(open(name + ".py.gz", "rb").read()) != open(name, "rb").read():
        print("python3 differs on", name, file=sys.stderr)
        bad = 1
sys.exit(bad)' empty one rand1m mixed; then ok; else
    fail "Python's gzip module does not read our output"
  fi
  python3 -c 'import gzip, sys
sys.stdout.buffer.write(gzip.compress(open("mixed", "rb").read()))' >py.gz
  if "$sg" -dc py.gz | cmp -s - mixed; then ok; else fail "we do not read Python's output"; fi
fi

# The block format (--format=blocks): a gzip member per block, each
# with its length in the 'S' 'L' subfield at byte 16 of its header; every
# reader reads it as one stream, and its bytes depend on neither -p nor
# a pipe.
member_lengths() { # the members' lengths, as their headers give them
  python3 -c 'import struct, sys
d = open(sys.argv[1], "rb").read()
at = 0
while at < len(d):
    if d[at:at + 3] != b"\x1f\x8b\x08" or not d[at + 3] & 4 or d[at + 12:at + 16] != b"SL\x04\x00":
        print("bad header at", at)
        break
    n = struct.unpack("<I", d[at + 16:at + 20])[0]
    print(n)
    at += n
' "$1"
}
for f in empty one rand1m mixed; do
  for lv in 1 6 9; do
    tag="--format=blocks -$lv $f"
    "$sg" --format=blocks -$lv -n -b 64 -p 3 -c "$f" >"$f.b.gz" || fail "$tag: failed"
    if gzip -t "$f.b.gz" && gzip -dc "$f.b.gz" | cmp -s - "$f"; then ok; else
      fail "$tag: gzip does not read it"
    fi
    if test $have_pigz = yes; then
      if pigz -t "$f.b.gz" && pigz -dc "$f.b.gz" | cmp -s - "$f"; then ok; else
        fail "$tag: pigz does not read it"
      fi
    fi
    if test $have_python = yes; then
      if python3 -c 'import gzip, sys
sys.exit(gzip.decompress(open(sys.argv[1], "rb").read()) != open(sys.argv[2], "rb").read())' \
        "$f.b.gz" "$f"; then ok; else
        fail "$tag: Python's gzip module does not read it"
      fi
      # A member per 64 KiB block (one for no input), lengths end to end.
      want=$((($(size "$f") + 65535) / 65536))
      test "$want" -eq 0 && want=1
      member_lengths "$f.b.gz" >lens
      if ! grep -q bad lens && test "$(wc -l <lens | tr -d ' ')" -eq "$want" &&
        test "$(awk '{ s += $1 } END { print s + 0 }' lens)" -eq "$(size "$f.b.gz")"; then
        ok
      else
        fail "$tag: members $(tr '\n' ' ' <lens), want $want"
      fi
    fi
    "$sg" --format=blocks -$lv -n -b 64 -p 1 -c <"$f" >"$f.b1.gz"
    if cmp -s "$f.b.gz" "$f.b1.gz"; then ok; else fail "$tag: -p 1 from a pipe differs"; fi
  done
done
"$sg" --format=blocks -b 64 -c mixed >fb.gz
"$sg" --format=pigz -c mixed >fp.gz
if ! cmp -s fb.gz fp.gz && "$sg" -dc fb.gz | cmp -s - mixed; then ok; else
  fail "--format=blocks: same bytes as --format=pigz, or not read back"
fi
expect_rc 1 "--format=bogus" "$sg" --format=bogus -c mixed
if grep -q "'bogus' is not auto, pigz or blocks" "$work/err"; then ok; else
  fail "--format=bogus: $(cat "$work/err")"
fi
if "$sg" -V | grep -q libdeflate; then
  expect_rc 1 "--format=pigz --engine=libdeflate" \
    "$sg" --format=pigz --engine=libdeflate -c mixed
fi
rm -f ./*.b.gz ./*.b1.gz lens fb.gz fp.gz

# Several members: gzip's, ours (and pigz's), one after another.
"$sg" -c rand1m >m2.gz
cat g.gz m2.gz g.gz >multi.gz
cat mixed rand1m mixed >multi
if test $have_pigz = yes; then
  cat pz.gz >>multi.gz
  cat mixed >>multi
fi
if "$sg" -dc multi.gz | cmp -s - multi; then ok; else fail "multi-member: differs"; fi
if "$sg" -t multi.gz; then ok; else fail "multi-member: -t rejects it"; fi
rm -f g.gz g9.gz pz.gz pe.gz ours.gz ./*.py.gz py.gz m2.gz multi.gz multi

# Standard input to standard output, both ways, and '-'.
if "$sg" <mixed | "$sg" -d | cmp -s - mixed; then ok; else fail "stdin -> stdout differs"; fi
if "$sg" -c - <mixed | gzip -dc | cmp -s - mixed; then ok; else fail "'-' differs"; fi

# ---- options ---------------------------------------------------------------

mkdir opts
cd opts || exit 1
cp ../mixed f

# -k keeps the input; -c writes stdout and keeps it.
"$sg" -k f
if test -f f && test -f f.gz && gzip -dc f.gz | cmp -s - f; then ok; else fail "-k"; fi
rm -f f.gz
"$sg" -c f >out.gz
if test -f f && test ! -e f.gz && gzip -dc out.gz | cmp -s - f; then ok; else fail "-c"; fi

# An existing output is not overwritten without -f: a warning, status 2.
echo old >f.gz
expect_rc 2 "existing output without -f" "$sg" -k f </dev/null
if grep -q 'f.gz already exists; not overwritten' "$work/err"; then ok; else
  fail "existing output: message '$(cat "$work/err")'"
fi
if test "$(cat f.gz)" = old && test -f f; then ok; else fail "existing output was touched"; fi
expect_rc 0 "-f overwrites" "$sg" -f f
if test ! -e f && gzip -dc f.gz | cmp -s - ../mixed; then ok; else fail "-f"; fi
no_temporaries . "-f"

# Already compressed, unknown suffix, a directory: skipped, status 2.
expect_rc 2 "a .gz file again" "$sg" f.gz
if grep -q 'already has .gz suffix' "$work/err"; then ok; else
  fail "suffix warning: '$(cat "$work/err")'"
fi
expect_rc 2 "-q still exits 2" "$sg" -q f.gz
if test -s "$work/err"; then fail "-q printed '$(cat "$work/err")'"; else ok; fi
cp ../one plain
expect_rc 2 "-d without a suffix" "$sg" -d plain
mkdir d
expect_rc 2 "a directory without -r" "$sg" d
cp ../one linked
ln linked linked2
expect_rc 2 "a file with another link" "$sg" linked
if test -f linked && test ! -e linked.gz; then ok; else fail "a linked file was compressed"; fi
expect_rc 0 "-f: a file with another link" "$sg" -f linked
if test ! -e linked && test -f linked.gz && cmp -s linked2 ../one; then ok; else
  fail "-f on a linked file"
fi
rm -f linked.gz linked2

# -S: another suffix, both ways.
cp ../one s
expect_rc 0 "-S .sz" "$sg" -S .sz s
if test -f s.sz && test ! -e s.gz; then ok; else fail "-S .sz made no s.sz"; fi
expect_rc 0 "-d -S .sz" "$sg" -d -S .sz s.sz
if cmp -s s ../one; then ok; else fail "-d -S .sz differs"; fi
expect_rc 1 "-S ''" "$sg" -S '' s

# -t: good and bad.
expect_rc 0 "-t on a good file" "$sg" -t f.gz
expect_rc 0 "-t -v" "$sg" -tv f.gz
if grep -q 'f.gz:.*OK' "$work/err"; then ok; else fail "-tv: '$(cat "$work/err")'"; fi

# -l: sizes, ratio and name, ISIZE as gzip gives it.
"$sg" -l f.gz >list
want_c=$(size f.gz)
want_u=$(size ../mixed)
if awk -v c="$want_c" -v u="$want_u" 'NR == 2 && $1 == c && $2 == u && $4 == "f" { ok = 1 }
  END { exit !ok }' list; then ok; else
  fail "-l: $(cat list)"
fi
# gzip -l gives the last member's ISIZE: on pigz's format (one member)
# the two agree; on the block format (a member per block) -l adds up the
# members, with the lengths their headers give.
"$sg" --format=pigz -c ../mixed >fp.gz
"$sg" -l fp.gz >list
gzip -l fp.gz >glist
if test "$(awk 'NR == 2 { print $1, $2, $3, $4 }' list)" = \
  "$(awk 'NR == 2 { print $1, $2, $3, $4 }' glist)"; then ok; else
  fail "-l differs from gzip -l: $(cat list glist)"
fi
"$sg" --format=blocks -b 32 -c ../mixed >fb.gz
"$sg" -l fb.gz >list
if awk -v c="$(size fb.gz)" -v u="$want_u" 'NR == 2 && $1 == c && $2 == u { ok = 1 }
  END { exit !ok }' list; then ok; else
  fail "-l of the block format: $(cat list)"
fi
rm -f fp.gz fb.gz

# -n stores no name and no time; the default stores both (FLG bit 3, MTIME).
header() { od -An -tu1 -N8 "$1" | tr -s ' ' | sed 's/^ //'; }
cp ../one named
touch -t 200102030405.06 named
chmod 640 named
"$sg" -n -c named >n.gz
set -- $(header n.gz)
if test $(($4 & 8)) -eq 0 && test "$5$6$7$8" = 0000; then ok; else fail "-n: header $*"; fi
"$sg" -k named
set -- $(header named.gz)
if test $(($4 & 8)) -eq 8 && test "$5$6$7$8" != 0000; then ok; else
  fail "default: no name or time in the header: $*"
fi
if gzip -lN named.gz | grep -q ' named$'; then ok; else fail "gzip -lN does not see the name"; fi

# Mode and times go to the output; -N restores the stored name and time.
if stat -c %Y named >/dev/null 2>&1; then
  when=$(stat -c %Y named)
  rm named.gz
  "$sg" named
  if test "$(stat -c %a:%Y named.gz)" = "640:$when"; then
    ok
  else
    fail "mode and mtime not kept: $(stat -c %a:%Y named.gz)"
  fi
  mv named.gz other.gz
  touch other.gz
  expect_rc 0 "-dN" "$sg" -dN other.gz
  if test -f named && test ! -e other && cmp -s named ../one &&
    test "$(stat -c %a:%Y named)" = "640:$when"; then
    ok
  else
    fail "-dN did not restore the name and time: $(ls)"
  fi
  "$sg" -k named
  mv named.gz other.gz
  rm named
  expect_rc 0 "-d without -N" "$sg" -d other.gz
  if test -f other && test ! -e named; then ok; else fail "-d took the stored name"; fi
else
  echo "sgzip.sh: no GNU stat; skipping the mode and time checks"
fi

# -r: every file under a directory, and back.
mkdir -p tree/sub
cp ../one tree/a
cp ../rand1m tree/sub/b
expect_rc 0 "-r" "$sg" -r tree
if test -f tree/a.gz && test -f tree/sub/b.gz && test ! -e tree/a; then ok; else
  fail "-r: $(find tree | tr '\n' ' ')"
fi
expect_rc 0 "-dr" "$sg" -dr tree
if cmp -s tree/sub/b ../rand1m && cmp -s tree/a ../one; then ok; else fail "-dr"; fi

# Options that need no file.
expect_rc 0 "--help" "$sg" --help
expect_rc 0 "--version" "$sg" --version
expect_rc 1 "an unknown option" "$sg" --no-such-option
expect_rc 0 "--stats" "$sg" --stats -c f.gz -d
if grep -q 'bottleneck' "$work/err"; then ok; else fail "--stats printed no table"; fi
cd .. || exit 1

# ---- malformed input --------------------------------------------------------

"$sg" -c mixed >good.gz
n=$(size good.gz)
dd if=good.gz of=truncated.gz bs=$((n / 2)) count=1 2>/dev/null
# A flipped byte of the CRC-32 in the trailer (8 bytes from the end).
cp good.gz crc.gz
b=$(od -An -tu1 -j $((n - 8)) -N1 good.gz | tr -d ' ')
printf "$(printf '\\%03o' $((b ^ 255)))" |
  dd of=crc.gz bs=1 seek=$((n - 8)) conv=notrunc 2>/dev/null
random 2 >garbage.gz
# A second member that starts like one (the magic) but is not one.
cp good.gz badmember.gz
printf '\037\213\000\000' >>badmember.gz
: >zero.gz
if cmp -s good.gz crc.gz; then fail "could not flip the CRC byte"; fi
for bad in truncated crc garbage badmember zero; do
  cp "$bad.gz" "$bad.copy"
  expect_rc 1 "$bad: -d" "$sg" -d "$bad.gz"
  if grep -q "$bad.gz" "$work/err"; then ok; else
    fail "$bad: the message does not name the file: $(cat "$work/err")"
  fi
  if test -e "$bad"; then fail "$bad: a partial output was left"; else ok; fi
  if cmp -s "$bad.gz" "$bad.copy"; then ok; else fail "$bad: the input changed"; fi
  expect_rc 1 "$bad: -t" "$sg" -t "$bad.gz"
  expect_rc 1 "$bad: -dc" "$sg" -dc "$bad.gz"
  rm -f "$bad.copy"
done
"$sg" -d truncated.gz 2>err
if grep -q 'sgzip: truncated.gz: .*truncated.*byte' err; then ok; else
  fail "truncated: message '$(cat err)'"
fi
"$sg" -d crc.gz 2>err
if grep -q 'sgzip: crc.gz: .*crc' err; then ok; else fail "crc: message '$(cat err)'"; fi
no_temporaries . "malformed input"

# On standard output, every byte that could be decoded comes out before
# the error, as gzip writes it: a truncated stream, and (with Python) a
# stream that ends in a sync flush without its last block.
"$sg" -dc truncated.gz >part 2>err
rc=$?
gzip -dc truncated.gz >gpart 2>/dev/null
if test "$rc" -eq 1 && grep -q 'truncated.gz: truncated input at byte' err; then
  ok
else
  fail "truncated on stdout: status $rc, '$(cat err)'"
fi
n=$(size part)
if test "$n" -gt 0 && test "$n" -ge "$(size gpart)" &&
  head -c "$n" mixed | cmp -s - part; then
  ok
else
  fail "truncated on stdout: $n bytes out, gzip $(size gpart)"
fi
if test $have_python = yes; then
  python3 -c 'import sys, zlib
c = zlib.compressobj(6, zlib.DEFLATED, 31)
sys.stdout.buffer.write(c.compress(b"no last block\n" * 1000) +
                        c.flush(zlib.Z_SYNC_FLUSH))' >sync.gz
  expect_rc 1 "a sync flush and no last block" "$sg" -dc sync.gz
  if test "$(size "$work/out")" -eq 14000; then ok; else
    fail "sync flush on stdout: $(size "$work/out") bytes, want 14000"
  fi
  rm -f sync.gz
fi
rm -f part gpart

# After the last member: zero padding is accepted without a word; other
# bytes are ignored with a warning, status 2, as gzip does, every byte of
# the data delivered, and the input kept (its last bytes are in no
# output).
cp good.gz padded.gz
dd if=/dev/zero bs=512 count=3 2>/dev/null >>padded.gz
cp good.gz trailing.gz
printf 'trailing garbage' >>trailing.gz
expect_rc 0 "zero padding: -dc" "$sg" -dc padded.gz
if cmp -s "$work/out" mixed && test ! -s "$work/err"; then ok; else
  fail "zero padding: -dc output or message '$(cat "$work/err")'"
fi
expect_rc "$(gzip -dc padded.gz >/dev/null 2>&1; echo $?)" \
  "zero padding: the status gzip gives" "$sg" -t padded.gz
expect_rc 0 "zero padding: -d" "$sg" -d padded.gz
if cmp -s padded mixed && test ! -e padded.gz; then ok; else
  fail "zero padding: -d did not replace padded.gz with its data"
fi
expect_rc 2 "trailing garbage: -dc" "$sg" -dc trailing.gz
if cmp -s "$work/out" mixed &&
  grep -q 'trailing.gz: decompression OK, trailing garbage ignored' \
    "$work/err"; then ok; else
  fail "trailing garbage: -dc output or message '$(cat "$work/err")'"
fi
expect_rc "$(gzip -dc trailing.gz >/dev/null 2>&1; echo $?)" \
  "trailing garbage: the status gzip gives" "$sg" -dc trailing.gz
cp trailing.gz trailing.copy
expect_rc 2 "trailing garbage: -d" "$sg" -d trailing.gz
if cmp -s trailing mixed && cmp -s trailing.gz trailing.copy; then ok; else
  fail "trailing garbage: -d output differs or the input was not kept"
fi
expect_rc 2 "trailing garbage: -q" "$sg" -tq trailing.gz
if test -s "$work/err"; then fail "-q printed '$(cat "$work/err")'"; else ok; fi
rm -f padded padded.gz trailing trailing.gz trailing.copy
rm -f truncated.gz crc.gz garbage.gz badmember.gz zero.gz err

# A missing file is an error; the others still run.
cp one one.k
expect_rc 1 "a missing file" "$sg" -k no-such-file one.k
if test -f one.k.gz; then ok; else fail "the file after a missing one was not done"; fi

# ---- streams, links, metadata -------------------------------------------------

# Standard input that is not a file has no time: MTIME 0, so the same
# bytes give the same output on every run, as with gzip.
# shellcheck disable=SC2002,SC2046 # standard input must be a pipe
set -- $(cat one | "$sg" | od -An -tu1 -N8)
if test "$5$6$7$8" = 0000; then ok; else fail "stdin from a pipe: MTIME $5 $6 $7 $8"; fi

# FIFOs, devices and process substitution are read with -c (and -t, -l),
# as gzip reads them; without -c they are skipped, as gzip skips them.
mkfifo fifo
gzip -c mixed >fifo &
if "$sg" -dc fifo | cmp -s - mixed; then ok; else fail "-dc of a FIFO"; fi
wait
# -l reads a stream once, so it sees the last member's ISIZE only (as
# gzip -l does): pigz's format, one member.
"$sg" --format=pigz -c mixed >fifo.src.gz
cat fifo.src.gz >fifo &
expect_rc 0 "-t of a FIFO" "$sg" -t fifo
wait
cat fifo.src.gz >fifo &
expect_rc 0 "-l of a FIFO" "$sg" -l fifo
wait
if awk -v c="$(size fifo.src.gz)" -v u="$(size mixed)" \
  'NR == 2 && $1 == c && $2 == u { ok = 1 } END { exit !ok }' "$work/out"; then
  ok
else
  fail "-l of a FIFO: $(cat "$work/out")"
fi
cat mixed >fifo &
if "$sg" -c fifo | gzip -dc | cmp -s - mixed; then ok; else fail "-c of a FIFO"; fi
wait
expect_rc 2 "a FIFO without -c: skipped, as gzip skips it" "$sg" fifo
if test ! -e fifo.gz; then ok; else fail "a FIFO without -c was compressed"; fi
if test "$("$sg" -c /dev/zero | gzip -dc 2>/dev/null | head -c 100000 | wc -c)" -eq 100000; then
  ok
else
  fail "-c of /dev/zero"
fi
if command -v bash >/dev/null 2>&1; then
  if bash -c '"$1" -dc <(cat "$2")' sh "$sg" fifo.src.gz | cmp -s - mixed; then ok; else
    fail "-dc of a process substitution"
  fi
else
  echo "sgzip.sh: no bash; skipping the process substitution"
fi
rm -f fifo fifo.src.gz

# A loop of symbolic links is an error, as in gzip (exit 1, "Too many
# levels of symbolic links"); with -r a directory that links back to
# its parent is walked once.
mkdir links
ln -s b links/a
ln -s a links/b
want=$(gzip -f links/a 2>/dev/null; echo $?)
expect_rc "$want" "-f on a symbolic link loop" "$sg" -f links/a
if grep -q 'links/a: Too many levels of symbolic links' "$work/err"; then ok; else
  fail "link loop: message '$(cat "$work/err")'"
fi
mkdir -p links/tree/sub
cp one links/tree/x
cp one links/tree/sub/y
ln -s .. links/tree/sub/up
expect_rc 2 "-rf over a directory cycle" "$sg" -rf links/tree
if grep -q 'links/tree/sub/up: directory cycle -- ignored' "$work/err" &&
  ! grep -q 'Too many levels' "$work/err" && test -f links/tree/x.gz &&
  test -f links/tree/sub/y.gz; then ok; else
  fail "-rf over a cycle: $(cat "$work/err") $(find links/tree | tr '\n' ' ')"
fi
rm -rf links

# Owner, mode and times are set through the descriptor before the output
# has its name (fchmod, futimens), never by path after it (the race of
# CVE-2005-0988).
if command -v strace >/dev/null 2>&1 && strace -o /dev/null true 2>/dev/null; then
  cp one meta
  chmod 640 meta
  strace -f -o strace.log \
    -e trace=%file,fchmod,fchown,utimensat \
    "$sg" meta 2>/dev/null
  if awk '/fchmod\(/ && !m { m = NR } /utimensat\([0-9]+, NULL/ && !t { t = NR }
    /linkat\(|rename/ && !n { n = NR }
    /[^f]chmod\(|fchmodat\(|utimensat\(AT_FDCWD|[^f]chown\(|fchownat\(/ { bad = 1 }
    END { exit !(m && t && n && m < n && t < n && !bad) }' strace.log; then
    ok
  else
    fail "metadata not set through the descriptor first:" \
      "$(grep -E 'chmod|chown|utimensat|link|rename' strace.log | tr '\n' ';')"
  fi
  if test "$(stat -c %a meta.gz 2>/dev/null)" = 640; then ok; else fail "metadata: mode"; fi
  rm -f meta.gz strace.log
else
  echo "sgzip.sh: no strace (or not permitted); skipping the metadata order"
fi

# ---- a file that grows while it is compressed ---------------------------------

# The input is appended to while sgzip reads it. sgzip cannot end before
# its output has been read, and the test reads it only after the append:
# the append comes before sgzip's last look at the input, whatever the
# timing. The input is kept, the status is 2, and the output holds exactly
# the bytes read, a prefix of the input as it ends.
random 256 >grow
cp grow grow.orig
rc=$( ("$sg" -c -p 1 grow 2>grow.err; echo $? >rc.txt) |
  {
    dd bs=1 count=1 2>/dev/null
    text 1000000 >>grow
    cat
  } >grow.gz
  cat rc.txt)
n=$(sed -n 's/.*the output holds the \([0-9]*\) bytes read.*/\1/p' grow.err)
if test "$rc" = 2 && test -n "$n"; then ok; else
  fail "-c of a growing file: status $rc, '$(cat grow.err)'"
fi
if gzip -dc grow.gz >grow.out && test "$(size grow.out)" = "${n:-x}" &&
  head -c "$(size grow.out)" grow | cmp -s - grow.out &&
  head -c "$(size grow.orig)" grow | cmp -s - grow.orig; then
  ok
else
  fail "-c of a growing file: the output is not the $n bytes read"
fi
rm -f grow grow.gz grow.out grow.err

# In place, the output a FIFO that the test reads: the input stays.
cp grow.orig grow
mkfifo grow.gz
exec 3<>grow.gz # a reader, so that sgzip may open it; and a writer
"$sg" -f -p 1 grow 2>grow.err &
pid=$!
exec 4<grow.gz
dd bs=1 count=1 <&4 2>/dev/null >grow.out.gz
exec 3>&- # sgzip is the only writer now: its end is our end of file
text 1000000 >>grow
cat <&4 >>grow.out.gz
exec 4<&-
wait "$pid"
rc=$?
n=$(sed -n 's/.*the output holds the \([0-9]*\) bytes read.*/\1/p' grow.err)
if test "$rc" = 2 && test -f grow && grep -q 'input kept' grow.err; then ok; else
  fail "a growing file: status $rc, input $(test -f grow && echo kept || echo removed), '$(cat grow.err)'"
fi
if gzip -dc grow.out.gz >grow.out && test "$(size grow.out)" = "${n:-x}" &&
  head -c "$(size grow.out)" grow | cmp -s - grow.out; then
  ok
else
  fail "a growing file: the output is not the $n bytes read"
fi
rm -f grow grow.gz grow.orig grow.out grow.out.gz grow.err rc.txt

# ---- a closed pipe and signals ------------------------------------------------

# A closed pipe ends sgzip by SIGPIPE without a word, as it ends gzip.
"$sg" -c rand1m >rand1m.gz
for how in "-c rand1m" "-dc rand1m.gz"; do
  # shellcheck disable=SC2086 # $how is a list of arguments
  rc=$( ("$sg" $how 2>closed.err; echo $? >rc.txt) |
    dd bs=1 count=1 >/dev/null 2>&1
    cat rc.txt)
  # shellcheck disable=SC2086
  want=$( (gzip $how 2>/dev/null; echo $? >rc.txt) |
    dd bs=1 count=1 >/dev/null 2>&1
    cat rc.txt)
  if test "$rc" = "$want" && test "$rc" -gt 128 && test ! -s closed.err; then
    ok
  else
    fail "a closed pipe ($how): status $rc (gzip $want), '$(cat closed.err)'"
  fi
done
rm -f rand1m.gz closed.err rc.txt

# Signals come while the output is being written: the test learns that
# from the pipeline's trace (--trace to a FIFO), in which the writing
# stage's first finished span means bytes written. 50 MiB at -9 on one
# thread takes seconds more.
mkfifo trace.fifo sync.fifo
mkdir sig
cp text50m sig/in
signal_midway() { # $1: the signal; sets rc
  "$sg" -9 -p 1 --trace=trace.fifo sig/in 2>/dev/null &
  pid=$!
  awk '/"thread_name"/ && /"sl:write"/ {
         match($0, /"tid":[0-9]+/); w = substr($0, RSTART + 6, RLENGTH - 6) }
       !done && w != "" && /"name":"busy"/ && index($0, "\"tid\":" w ",") {
         print "writing"; fflush(); done = 1 }' <trace.fifo >sync.fifo &
  apid=$!
  read -r _ <sync.fifo
  kill "-$1" "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  wait "$apid"
}
# SIGTERM (a background job of a script ignores SIGINT, and so does sgzip
# then, as gzip does; both take the same path): what was half made goes,
# the input stays, and sgzip dies by the signal, so that a shell loop
# over files stops.
signal_midway TERM
if test "$rc" -eq 143; then
  if test "$(ls -A sig)" = in && cmp -s sig/in text50m; then ok; else
    fail "SIGTERM: left $(ls -A sig | tr '\n' ' ')"
  fi
elif test "$rc" -eq 0; then
  echo "sgzip.sh: the SIGTERM came too late to check; skipped"
  rm -f sig/in.gz
  cp text50m sig/in
else
  fail "SIGTERM: exit status $rc, want 143 (killed by SIGTERM)"
fi
# SIGKILL: nothing can clean up, and nothing is left: the output has no
# name until it is complete.
signal_midway KILL
if test "$rc" -eq 137; then
  if test "$(ls -A sig)" = in && cmp -s sig/in text50m; then ok; else
    fail "SIGKILL: left $(ls -A sig | tr '\n' ' ')"
  fi
elif test "$rc" -eq 0; then
  echo "sgzip.sh: the SIGKILL came too late to check; skipped"
else
  fail "SIGKILL: exit status $rc, want 137"
fi
# SIGINT, as Ctrl-C sends it to a shell loop's foreground sgzip (a job
# of this script could not get it: it runs with SIGINT ignored). Python
# starts sgzip with SIGINT at its default, and waits the same way.
if test $have_python = yes; then
  if python3 - "$sg" <<'PY'; then ok; else fail "SIGINT: see above"; fi
import os, signal, subprocess, sys
sg = sys.argv[1]
p = subprocess.Popen([sg, "-9", "-p", "1", "--trace=trace.fifo", "sig/in"],
                     stderr=subprocess.DEVNULL,
                     preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                      signal.SIG_DFL))
w, sent = None, False
with open("trace.fifo") as t:
    for line in t:
        if '"thread_name"' in line and '"sl:write"' in line:
            w = line.split('"tid":')[1].split(",")[0]
        if (not sent and w is not None and '"name":"busy"' in line and
                '"tid":%s,' % w in line):
            p.send_signal(signal.SIGINT)
            sent = True
rc = p.wait()
left = sorted(os.listdir("sig"))
if rc == 0:
    print("sgzip.sh: the SIGINT came too late to check; skipped")
    sys.exit(0)
if rc != -signal.SIGINT or left != ["in"]:
    print("sgzip.sh: SIGINT: status %d, left %s" % (rc, left), file=sys.stderr)
    sys.exit(1)
PY
fi
rm -rf sig trace.fifo sync.fifo

# ---- the progress bar -----------------------------------------------------------

# On a terminal (a pty) the bar shows the end of a long name, which is
# what tells files apart. The name is a FIFO fed until the bar shows, so
# that no timing decides when it does.
if test $have_python = yes && python3 -c 'import pty' 2>/dev/null; then
  d=a-directory-with-a-rather-long-name/and-another-one-below-it
  mkdir -p "$d"
  mkfifo "$d/the-end-tells-files-apart"
  if python3 - "$sg" "$d/the-end-tells-files-apart" <<'PY'
import os, pty, subprocess, sys, threading
sg, path = sys.argv[1], sys.argv[2]
master, slave = pty.openpty()
p = subprocess.Popen([sg, "-cv", "-9", "-p", "1", path],
                     stdout=subprocess.DEVNULL, stderr=slave)
os.close(slave)
stop = threading.Event()
def feed():
    chunk = b"".join(b"%08d sluice stream ring gzip\n" % i for i in range(4096))
    with open(path, "wb") as f:
        while not stop.is_set():
            f.write(chunk)
threading.Thread(target=feed, daemon=True).start()
out = b""
while b"MB/s" not in out:
    try:
        data = os.read(master, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
stop.set()
while True:
    try:
        data = os.read(master, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
p.wait()
bars = [b for b in out.split(b"\r") if b"MB/s" in b]
want = b"..." + path.encode()[-37:] + b" "
ok = bars and all(want in b for b in bars)
if not ok:
    print("bar:", out, file=sys.stderr)
sys.exit(0 if ok else 1)
PY
  then ok; else fail "the progress bar cuts off the end of the name"; fi
  rm -rf a-directory-with-a-rather-long-name
else
  echo "sgzip.sh: no python3 pty; skipping the progress bar"
fi

echo "sgzip.sh: $checks checks passed, $failures failed"
test "$failures" -eq 0

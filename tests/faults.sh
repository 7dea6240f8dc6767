#!/bin/sh
# SPDX-License-Identifier: MIT
# sgzip when the disk fills up: every write error ends the command with a
# non-zero status and a message, leaves no partial output and no
# temporary, and keeps the input as it was.
#
#   - compressing and decompressing a file under `ulimit -f` (a full disk
#     as one process sees it: with SIGXFSZ ignored, a write past the limit
#     fails with EFBIG)
#   - compressing and decompressing with -c to /dev/full (ENOSPC)
#   - compressing and decompressing a file on a file system that fills up
#     (ENOSPC on the file path: a small tmpfs, when run as root where
#     mount is allowed; skipped, saying so, elsewhere)
#
# Usage: sh tests/faults.sh [BUILDDIR]
#   BUILDDIR holds tools/sgzip; by default ./tools/sgzip (make check runs
#   tests from the build directory), else tools/ beside this script's
#   directory.
#
# Exit status: 0 pass, 1 fail, 77 skip (no way to make a disk full here).

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
  echo "faults.sh: $sg not found or not executable; build it first" >&2
  exit 1
fi
case $sg in
/*) ;;
*) sg=$(pwd)/$sg ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/faults-test.XXXXXX") || exit 1
# The tmpfs, while mounted: every way out unmounts it before the removal,
# which would otherwise empty it and leave it mounted.
mnt=
cleanup() {
  cd / || :
  if test -n "$mnt"; then
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    mnt=
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
cd "$work" || exit 1

failures=0
checks=0
fail() {
  echo "faults.sh: FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() {
  checks=$((checks + 1))
}

# Nothing in the directory but the files named.
only() {
  what=$1
  shift
  want=$(printf '%s\n' "$@" | LC_ALL=C sort | tr '\n' ' ')
  got=$(ls -A | LC_ALL=C sort | tr '\n' ' ')
  if test "$got" = "$want"; then ok; else
    fail "$what: the directory holds '$got', want '$want'"
  fi
}

# $1 what, $2 status (an error is 1, see sgzip(1)), $3 the file with its
# standard error.
failed_with_message() {
  if test "$2" -eq 1; then ok; else fail "$1: exit status $2, want 1"; fi
  if test -s "$3"; then ok; else fail "$1: no message"; fi
}

same() {
  if cmp -s "$2" "$3"; then ok; else fail "$1: $2 changed"; fi
}

# An input that compresses poorly, so the output is as big as the input:
# 2 MiB, far above the limit below.
if test -r /dev/urandom; then
  dd if=/dev/urandom of=data bs=65536 count=32 2>/dev/null
else
  awk 'BEGIN { srand(7); for (i = 0; i < 2097152; i++)
    printf "%c", 33 + int(rand() * 90) }' >data
fi
cp data data.orig
"$sg" -c data >data.gz.orig || {
  echo "faults.sh: sgzip cannot compress at all" >&2
  exit 1
}
mkdir d && cd d || exit 1

# The file-size limit, in 512-byte blocks (what ulimit -f counts in a POSIX
# shell; bash counts 1024, which only makes it larger): 256 KiB at most.
limit=256

# ---- a file that cannot grow: EFBIG -----------------------------------------

cp ../data data
(
  trap '' XFSZ
  ulimit -f "$limit" || exit 99
  exec "$sg" data
) 2>err
rc=$?
if test "$rc" -eq 99; then
  echo "faults.sh: ulimit -f is not available; skipping that part"
else
  failed_with_message "compress under ulimit -f" "$rc" err
  same "compress under ulimit -f" data ../data.orig
  only "compress under ulimit -f" data err
  grep -q 'data' err && ok || fail "compress under ulimit -f: the message" \
    "names no file: $(cat err)"

  rm -f data err
  cp ../data.gz.orig data.gz
  (
    trap '' XFSZ
    ulimit -f "$limit" || exit 99
    exec "$sg" -d data.gz
  ) 2>err
  rc=$?
  failed_with_message "decompress under ulimit -f" "$rc" err
  same "decompress under ulimit -f" data.gz ../data.gz.orig
  only "decompress under ulimit -f" data.gz err
  rm -f data.gz err
fi

# ---- standard output on a full device: ENOSPC -------------------------------

if test -w /dev/full; then
  cp ../data data
  "$sg" -c data >/dev/full 2>err
  rc=$?
  failed_with_message "compress -c >/dev/full" "$rc" err
  same "compress -c >/dev/full" data ../data.orig
  only "compress -c >/dev/full" data err
  rm -f data err

  cp ../data.gz.orig data.gz
  "$sg" -dc data.gz >/dev/full 2>err
  rc=$?
  failed_with_message "decompress -c >/dev/full" "$rc" err
  same "decompress -c >/dev/full" data.gz ../data.gz.orig
  only "decompress -c >/dev/full" data.gz err
  rm -f data.gz err

  # From standard input too: nothing to keep, but the status and message.
  "$sg" <../data >/dev/full 2>err
  rc=$?
  failed_with_message "compress stdin >/dev/full" "$rc" err
  only "compress stdin >/dev/full" err
  rm -f err
else
  echo "faults.sh: no writable /dev/full; skipping that part"
fi

# ---- a file system that fills up: ENOSPC on the file path -----------------

# A 1 MiB tmpfs holds a 640 KiB input that does not compress, but not its
# output beside it; nor the 2 MiB that a small .gz of zeros holds. Root
# only, where mount is allowed (not in every container): anything else
# skips this part.
if test "$(id -u)" -eq 0 && mkdir "$work/small" &&
  mount -t tmpfs -o size=1m,mode=0700 sluice-faults "$work/small" 2>/dev/null; then
  mnt=$work/small
  cd "$mnt" || exit 1
  dd if=../data of=data bs=65536 count=10 2>/dev/null
  cp data ../data.small
  "$sg" data 2>../err
  rc=$?
  failed_with_message "compress on a full file system" "$rc" ../err
  same "compress on a full file system" data ../data.small
  only "compress on a full file system" data
  if grep -q 'No space left on device' ../err; then ok; else
    fail "compress on a full file system: no ENOSPC in: $(cat ../err)"
  fi
  rm -f data ../err

  dd if=/dev/zero bs=65536 count=32 2>/dev/null | "$sg" -c >data.gz
  cp data.gz ../data.gz.small
  "$sg" -d data.gz 2>../err
  rc=$?
  failed_with_message "decompress on a full file system" "$rc" ../err
  same "decompress on a full file system" data.gz ../data.gz.small
  only "decompress on a full file system" data.gz
  if grep -q 'No space left on device' ../err; then ok; else
    fail "decompress on a full file system: no ENOSPC in: $(cat ../err)"
  fi
  rm -f data.gz ../err ../data.small ../data.gz.small

  cd "$work/d" || exit 1
  if umount "$mnt"; then mnt=; else fail "cannot unmount $mnt"; fi
else
  echo "faults.sh: cannot mount a small tmpfs (not root, or mount is not" \
    "allowed here); skipping the full file system part"
fi

if test "$checks" -eq 0; then
  echo "faults.sh: nothing could be checked here"
  exit 77
fi
echo "faults.sh: $checks checks, $failures failures"
test "$failures" -eq 0

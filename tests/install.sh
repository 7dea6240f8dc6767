#!/bin/sh
# SPDX-License-Identifier: MIT
# The library as a user installs it: `make install prefix=DIR` into a
# temporary prefix, then every C program of README.md, taken from the
# README itself (each ```c block), built against that prefix with
# pkg-config, as the README says:
#
#   shared   cc a.c $(pkg-config --cflags --libs sluice) with an rpath to
#            pkg-config's libdir; ldd shows the prefix's libsluice.so.0
#   static   cc a.c $(pkg-config --cflags --libs sluice-static); ldd
#            shows no libsluice at all
#
# sluice.pc must point into the prefix (its paths follow ${pcfiledir}),
# not where configure was told to install. The programs the test knows
# (upper, the gzip copy, write()/drain, pause()/resume(), the line-count
# Transform, the epoll bridge) are run and their output checked; any other
# block is only built. Skipped (77) without pkg-config or cc, on a build
# with a sanitizer (its runtime would have to be linked into every
# program) and where the build has no shared library; the static half is
# skipped where it has no static one. Run by make check from the build
# directory ($1 may name another), with srcdir set.
set -eu
top=${1:-.}
src=${srcdir:-.}
make=${SL_MAKE:-make}
skip() { echo "install.sh: $*: skipped"; exit 77; }

[ -f "$src/README.md" ] || { echo "install.sh: $src/README.md not found" >&2; exit 99; }
[ -f "$top/Makefile" ] || { echo "install.sh: $top/Makefile not found" >&2; exit 99; }
command -v pkg-config > /dev/null || skip "pkg-config not found"
command -v cc > /dev/null || skip "cc not found"
case ${SL_SANITIZER:-no} in no) ;; *) skip "a --enable-sanitizer=$SL_SANITIZER build" ;; esac
command -v gzip > /dev/null || skip "gzip not found"

dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-install.XXXXXX")
trap 'rm -rf "$dir"' EXIT
trap 'exit 1' INT TERM
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# The install, by a make of its own: the one running the tests must not
# lend it its jobs or its command-line variables (distcheck's prefix).
prefix=$dir/prefix
if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $make -C "$top" install \
  prefix="$prefix" > "$dir/install.log" 2>&1; then
  cat "$dir/install.log"
  echo "install.sh: make install prefix=$prefix failed" >&2
  exit 1
fi
pc=$(find "$prefix" -name sluice.pc -type f | head -n 1)
[ -n "$pc" ] || { echo "install.sh: no sluice.pc under $prefix" >&2; exit 1; }
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
libdir=$(cd "$(pkg-config --variable=libdir sluice)" && pwd -P)
incdir=$(cd "$(pkg-config --variable=includedir sluice)" && pwd -P)
real=$(cd "$prefix" && pwd -P)
case $libdir/ in "$real"/*) ok "sluice.pc: libdir in the prefix" ;;
*) bad "sluice.pc: libdir $libdir is not under $real" ;; esac
case $incdir/ in "$real"/*) ok "sluice.pc: includedir in the prefix" ;;
*) bad "sluice.pc: includedir $incdir is not under $real" ;; esac
[ -f "$incdir/sluice.h" ] || bad "no sluice.h in $incdir"
for pc in "$libdir"/pkgconfig/sluice*.pc; do
  ! grep -n '@[A-Za-z_]*@' "$pc" || bad "$pc: a configure variable left unsubstituted"
done
[ "$fail" = 0 ] || exit 1
ls "$libdir"/libsluice.so* > /dev/null 2>&1 || skip "no shared library (--disable-shared)"
static=yes
pkg-config --exists sluice-static && [ -f "$libdir/libsluice.a" ] || static=no

# Each ```c block of the README, as prog1.c, prog2.c, ...
awk -v d="$dir" '/^```c[ \t]*$/ { n++; f = d "/prog" n ".c"; inside = 1; next }
  /^```/ { inside = 0; next }
  inside { print > f }' "$src/README.md"
# A block with no main() is a fragment of a longer program (the HTTP
# section's callback), not a program: it is left out, and numbered anew.
frag=0 n=0
for c in $(ls "$dir"/prog*.c 2> /dev/null | sort -V); do
  if grep -q 'main(' "$c"; then
    n=$((n + 1))
    [ "$c" = "$dir/prog$n.c" ] || mv "$c" "$dir/prog$n.c"
  else
    frag=$((frag + 1))
    rm -f "$c"
  fi
done
[ "$frag" = 0 ] || echo "install.sh: $frag fragments (no main) left out"
[ "$n" -gt 0 ] || { echo "install.sh: no C program in README.md" >&2; exit 1; }
echo "install.sh: $n programs in README.md"

# A text to feed them: 100000 lines, upper and lower case.
awk 'BEGIN { for (i = 0; i < 100000; i++)
  printf "line %d: The Quick brown fox, item=%d\n", i, i * 7919 % 100003 }' > "$dir/in"

# run KIND PROG SOURCE: run a built program as its source says; 1 if the
# result is wrong.
run() {
  kind=$1 prog=$2 c=$3 out=$dir/out.$kind err=$dir/err.$kind
  rm -f "$dir/out.gz"
  set -- "$prog"
  if grep -q 'sl_file_source_new' "$c" && grep -q 'sl_file_sink_new' "$c" &&
    grep -q 'sl_gzip_new' "$c"; then
    what="gzip in out.gz"
    "$@" "$dir/in" "$dir/out.gz" > "$out" 2> "$err" &&
      gzip -dc "$dir/out.gz" | cmp -s - "$dir/in"
  elif grep -q 'sl_writer_new' "$c" && grep -q 'sl_gzip_new' "$c"; then
    what="epoll bridge: gzip stdin"
    "$@" < "$dir/in" > "$out" 2> "$err" && gzip -dc "$out" | cmp -s - "$dir/in"
  elif grep -q '"upper"' "$c"; then
    what="upper"
    "$@" < "$dir/in" > "$out" 2> "$err" &&
      LC_ALL=C tr a-z A-Z < "$dir/in" | cmp -s - "$out"
  elif grep -q 'count_flush' "$c"; then
    what="line count"
    "$@" < "$dir/in" > "$out" 2> "$err" &&
      [ "$(tail -n 1 "$out")" = "100000 lines" ] &&
      head -n 100000 "$out" | cmp -s - "$dir/in"
  elif grep -q 'sl_ring_try_write' "$c"; then
    what="write() and drain"
    "$@" < /dev/null > "$out" 2> "$err" && grep -q 'drains' "$out"
  elif grep -q 'sl_throttle_new' "$c"; then
    what="pause() and resume()"
    "$@" < /dev/null > "$out" 2> "$err"
  else
    echo "  ($(basename "$c"): built, not run)"
    return 0
  fi || {
    echo "  $what ($kind): wrong result; stderr:"
    sed 's/^/    /' "$err"
    return 1
  }
  echo "  $(basename "$c"): $what ($kind): right"
}

i=0
while [ "$i" -lt "$n" ]; do
  i=$((i + 1))
  c=$dir/prog$i.c
  # shellcheck disable=SC2046 # pkg-config's words, as the README has them
  if cc -o "$dir/shared$i" "$c" $(pkg-config --cflags --libs sluice) \
    -Wl,-rpath,"$(pkg-config --variable=libdir sluice)" 2> "$dir/cc.err"; then
    so=$(ldd "$dir/shared$i" | sed -n 's/^[[:space:]]*libsluice\.so[^ ]* => \(.*\) (.*/\1/p')
    if [ -n "$so" ] && [ "$(cd "$(dirname "$so")" && pwd -P)" = "$libdir" ]; then
      run shared "$dir/shared$i" "$c" || bad "prog$i (shared)"
    else
      bad "prog$i (shared) does not load the prefix's libsluice: $(ldd "$dir/shared$i" | grep sluice)"
    fi
  else
    cat "$dir/cc.err"
    bad "prog$i: cc \$(pkg-config --cflags --libs sluice) -Wl,-rpath,... failed"
  fi
  [ "$static" = yes ] || continue
  # shellcheck disable=SC2046
  if cc -o "$dir/static$i" "$c" $(pkg-config --cflags --libs sluice-static) 2> "$dir/cc.err"; then
    if ldd "$dir/static$i" 2>&1 | grep -q sluice; then
      bad "prog$i (static) still needs: $(ldd "$dir/static$i" | grep sluice)"
    else
      run static "$dir/static$i" "$c" || bad "prog$i (static)"
    fi
  else
    cat "$dir/cc.err"
    bad "prog$i: cc \$(pkg-config --cflags --libs sluice-static) failed"
  fi
done
if [ "$static" = yes ]; then
  ok "static: no program needs libsluice.so"
else
  echo "install.sh: no static library (--disable-static): the static recipe was not tried"
fi
[ "$fail" = 0 ] && ok "$n README programs built and run against $prefix"
exit $fail

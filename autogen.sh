#!/bin/bash
# SPDX-License-Identifier: MIT
# Bootstrap a sluice checkout: make sure the build tools and libraries are
# installed (Debian and Ubuntu package names), run `autoreconf -fi`, then
# `./configure` with this script's arguments.
#
# Anything missing is installed with apt-get when run as root; otherwise the
# one apt-get line to run is printed and the script fails.
#
#   ./autogen.sh                       bootstrap and configure in the source tree
#   ./autogen.sh --enable-sanitizer=thread
#   NOCONFIGURE=1 ./autogen.sh         bootstrap only (then configure elsewhere)
set -eu

cd "$(dirname "$0")"

have() {
  command -v "$1" >/dev/null 2>&1
}

# Is a Debian package installed? Only asked where a file or command test
# cannot answer, and only when dpkg is there.
have_pkg() {
  have dpkg-query &&
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# A pkg-config module, or the Debian package that ships it.
have_module() {
  if have pkg-config; then
    pkg-config --exists "$1"
  else
    have_pkg "$2"
  fi
}

# autoconf-archive ships its macros next to aclocal's.
have_archive_macro() {
  local dir
  for dir in "$(aclocal --print-ac-dir 2>/dev/null || true)" /usr/share/aclocal /usr/local/share/aclocal; do
    test -n "$dir" && test -f "$dir/$1" && return 0
  done
  return 1
}

# A C compiler that can build and link a program (gcc, libc6-dev, make).
have_toolchain() {
  local cc=${CC:-cc} tmp status=1
  have "${cc%% *}" && have make || return 1
  tmp=$(mktemp -d) || return 1
  printf '#include <stdio.h>\nint main(void) { return puts("") < 0; }\n' >"$tmp/t.c"
  if $cc -o "$tmp/t" "$tmp/t.c" >/dev/null 2>&1; then
    status=0
  fi
  rm -rf "$tmp"
  return $status
}

# clang that can link a libFuzzer program (make fuzz, .ci/run), not just
# compile: its runtime, libclang_rt.fuzzer, is in a package that clang
# only recommends, and the --no-install-recommends below leaves it out.
have_fuzz_clang() {
  local tmp status=1
  have clang || return 1
  tmp=$(mktemp -d) || return 1
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return d && n > 9; }' \
    >"$tmp/probe.c"
  if clang -fsanitize=fuzzer,address,undefined "$tmp/probe.c" \
    -o "$tmp/probe" >/dev/null 2>&1; then
    status=0
  fi
  rm -rf "$tmp"
  return $status
}

# The packages that give that: for an installed clang N, its runtime,
# libclang-rt-N-dev (Debian from LLVM 14, Ubuntu from 18; before, the
# runtime came with clang itself and the probe does not fail); with no
# clang yet, clang and libclang-rt-dev, the runtime of the same default
# version, unless the package lists know clang and not libclang-rt-dev
# (an older release).
fuzz_packages() {
  local v
  if have clang; then
    v=$(clang -dumpversion 2>/dev/null || true)
    v=${v%%.*}
    if test -n "$v"; then
      echo "libclang-rt-$v-dev"
    else
      echo libclang-rt-dev
    fi
  elif have apt-cache && apt-cache show clang >/dev/null 2>&1 &&
    ! apt-cache show libclang-rt-dev >/dev/null 2>&1; then
    echo clang
  else
    echo clang libclang-rt-dev
  fi
}

missing=()
need() { # need "PACKAGE..." TEST...: the packages when the test fails
  local pkgs
  read -r -a pkgs <<<"$1"
  shift
  "$@" || missing+=("${pkgs[@]}")
}

need build-essential have_toolchain
need autoconf have autoreconf
need automake have automake
need libtool have libtoolize
need pkg-config have pkg-config
need autoconf-archive have_archive_macro ax_pthread.m4
need zlib1g-dev have_module zlib zlib1g-dev
need check have_module check check
need gzip have gzip
need python3 have python3
need pigz have pigz
need "$(fuzz_packages)" have_fuzz_clang # make fuzz (.ci/run)
need valgrind have valgrind             # make helgrind, make drd (.ci/run)

# Optional: the faster compression engines (configure --with-isal,
# --with-libdeflate) and their command-line tools, peers in bench/sgzip.sh
# and tests/engines.sh. Without them everything builds on zlib.
need libisal-dev test -f /usr/include/isa-l/igzip_lib.h
need libdeflate-dev have_module libdeflate libdeflate-dev
need isal have igzip
need libdeflate-tools have libdeflate-gzip

if test ${#missing[@]} -gt 0; then
  if test "$(id -u)" -eq 0 && have apt-get; then
    echo "autogen.sh: installing ${missing[*]}" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "autogen.sh: missing build dependencies: ${missing[*]}" >&2
    echo "sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

autoreconf -fi

if test -n "${NOCONFIGURE:-}"; then
  echo "autogen.sh: NOCONFIGURE set; now run ./configure"
  exit 0
fi

./configure "$@"

#!/bin/bash
# SPDX-License-Identifier: MIT
# Bootstrap a sluice checkout: make sure the build tools and libraries are
# installed (Debian and Ubuntu package names), run `autoreconf -fi`, then
# `./configure` with this script's arguments.
#
# Two kinds of dependency: required ones (`need`: the build and `make
# check` cannot do without them) and optional ones (`want`: only a test
# part, a benchmark peer or a CI step uses them, and skips without them).
# Run as root, the script installs whatever is missing of both with
# apt-get (CI runs it so, and gets everything). As another user it fails
# only when a required one is missing, printing the one apt-get line to
# run; for missing optional ones it prints their line and goes on.
#
#   ./autogen.sh                       bootstrap and configure in the source tree
#   ./autogen.sh --enable-sanitizer=thread
#   NOCONFIGURE=1 ./autogen.sh         bootstrap only (then configure elsewhere)
#   AUTOGEN_CHECK_ONLY=1 ./autogen.sh  say what is missing, as to a user who
#                                      is not root, and stop: install
#                                      nothing, run nothing (exit 1 when a
#                                      required one is missing)
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

missing=()  # required
optional=() # optional: each entry "PACKAGES|what they are for"

# need "PACKAGE..." TEST...: required; the packages when the test fails.
need() {
  local pkgs
  read -r -a pkgs <<<"$1"
  shift
  "$@" || missing+=("${pkgs[@]}")
}

# want "PACKAGE..." "WHAT FOR" TEST...: optional; the packages when the
# test fails. One line per optional dependency: add yours below.
# Debian puts nats-server in /usr/sbin, outside a user's PATH.
have_nats_server() {
  have nats-server || test -x /usr/sbin/nats-server
}

want() {
  local pkgs=$1 why=$2
  shift 2
  "$@" || optional+=("$pkgs|$why")
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

want python3 "interop tests, make fuzz" have python3
want pigz "interop tests, bench peer" have pigz
want tabix "tests/blocks.sh: BGZF files written by bgzip (htslib)" have bgzip
want "$(fuzz_packages)" "make fuzz (.ci/run)" have_fuzz_clang
want valgrind "make helgrind, make drd (.ci/run)" have valgrind
want libmicrohttpd-dev "examples/http-server, tests/http.sh" have_module libmicrohttpd libmicrohttpd-dev
want curl "tests/http.sh, make bench-http" have curl
want strace "tests/sgzip.sh: the order of the output's metadata calls" have strace
want libnats-dev "the NATS JetStream stages (--with-nats)" have_module libnats libnats-dev
want nats-server "tests/check_nats, tests/nats-gzip.sh" have_nats_server
want openssl "tests/check_nats: certificates for the TLS case" have openssl
want "g++ libtbb-dev" "make bench-map: the peer, oneTBB's parallel_pipeline" have_module tbb libtbb-dev
want libisal-dev "the ISA-L engine (--with-isal)" test -f /usr/include/isa-l/igzip_lib.h
want libdeflate-dev "the libdeflate engine (--with-libdeflate)" have_module libdeflate libdeflate-dev
want isal "igzip: a peer in bench/sgzip.sh and tests/engines.sh" have igzip
want libdeflate-tools "libdeflate-gzip: a peer in bench/sgzip.sh" have libdeflate-gzip

opt_pkgs=() opt_why=()
for o in ${optional[@]+"${optional[@]}"}; do
  read -r -a pkgs <<<"${o%%|*}"
  opt_pkgs+=("${pkgs[@]}")
  opt_why+=("${o%%|*} (${o#*|})")
done

if test "$(id -u)" -eq 0 && have apt-get && test -z "${AUTOGEN_CHECK_ONLY:-}"; then
  if test ${#missing[@]} -gt 0 || test ${#opt_pkgs[@]} -gt 0; then
    echo "autogen.sh: installing ${missing[*]} ${opt_pkgs[*]}" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ${missing[@]+"${missing[@]}"} ${opt_pkgs[@]+"${opt_pkgs[@]}"}
  fi
else
  if test ${#opt_pkgs[@]} -gt 0; then
    echo "autogen.sh: optional, not installed (what needs them skips):" >&2
    printf '  %s\n' "${opt_why[@]}" >&2
    echo "sudo apt-get install -y ${opt_pkgs[*]}" >&2
  fi
  if test ${#missing[@]} -gt 0; then
    echo "autogen.sh: missing build dependencies: ${missing[*]}" >&2
    echo "sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if test -n "${AUTOGEN_CHECK_ONLY:-}"; then
  echo "autogen.sh: every required dependency is installed"
  exit 0
fi

autoreconf -fi

if test -n "${NOCONFIGURE:-}"; then
  echo "autogen.sh: NOCONFIGURE set; now run ./configure"
  exit 0
fi

./configure "$@"

#!/bin/sh
# SPDX-License-Identifier: MIT
# Only the public API may leave the shared library: every symbol that
# libsluice.so defines and exports must be an sl_ name (and never an
# internal sl__ one). Run by `make check` from the build directory;
# an argument names another library to inspect.
#
# Exit status: 0 pass, 1 fail, 77 skip (no shared library, no nm).

lib=${1:-.libs/libsluice.so}
NM=${NM:-nm}

if test ! -f "$lib"; then
  echo "exports: $lib not found (shared library disabled?); skipping"
  exit 77
fi
if ! "$NM" --version >/dev/null 2>&1; then
  echo "exports: $NM not found; skipping"
  exit 77
fi

syms=$("$NM" -D --defined-only "$lib") || {
  echo "exports: $NM -D --defined-only $lib failed"
  exit 1
}

bad=
good=0
# Lines look like "0000000000001234 T sl_ring_new" (address, type, name).
while read -r addr type name; do
  test -n "$name" || { name=$type; type=$addr; }
  case $type in
    [TtDdBbRrVvWwGgSsiu]) ;;
    *) continue ;; # absolute, undefined, debug, ...
  esac
  name=${name%%@*}
  case $name in
    sl__*) bad="$bad $name" ;;
    sl_*) good=$((good + 1)) ;;
    _init | _fini | _edata | _end | __bss_start | __bss_end__ | \
      _bss_end__ | __end__ | __data_start | data_start | __dso_handle | \
      _DYNAMIC | _GLOBAL_OFFSET_TABLE_ | __TMC_END__ | _IO_stdin_used | \
      __odr_asan.* | __odr_asan_gen_*) ;;
    *) bad="$bad $name" ;;
  esac
done <<EOT
$syms
EOT

status=0
if test -n "$bad"; then
  echo "exports: $lib exports symbols outside the sl_ API:"
  for s in $bad; do echo "  $s"; done
  status=1
fi
if test "$good" -eq 0; then
  echo "exports: $lib exports no sl_ symbol at all"
  status=1
fi
test $status -ne 0 || echo "exports: $good sl_ symbols, nothing else"
exit $status

#!/bin/sh
# SPDX-License-Identifier: MIT
# sluice is released under the MIT licence, and says so everywhere a user
# or a packager looks: the LICENSE file, the README, every source file's
# first lines (SPDX-License-Identifier), both man pages and sgzip --version.
# Run by make check from the build directory; $1 names the source tree
# (default: $srcdir, which the harness sets), $2 the build directory.
set -u
src=${1:-${srcdir:-.}}
top=${2:-.}
fail=0
bad() { echo "FAIL: $*"; fail=1; }

grep -q '^MIT License' "$src/LICENSE" 2>/dev/null || bad "LICENSE is not the MIT licence"
grep -q 'MIT licence' "$src/README.md" || bad "README.md does not name the licence"
for m in "$src/man/sgzip.1" "$src/man/sluice.3"; do
  grep -q '^\.SH LICENSE' "$m" || bad "$m has no LICENSE section"
done

n=0
for f in $(cd "$src" && find include src tools tests bench examples fuzz \
  -type f \( -name '*.c' -o -name '*.h' -o -name '*.sh' -o -name '*.py' \) |
  sort) configure.ac Makefile.am autogen.sh; do
  test -f "$src/$f" || continue
  n=$((n + 1))
  head -n 3 "$src/$f" | grep -q 'SPDX-License-Identifier: MIT' ||
    bad "$f: no SPDX-License-Identifier in its first lines"
done
test "$n" -gt 50 || bad "only $n source files found under $src"

if test -x "$top/tools/sgzip"; then
  "$top/tools/sgzip" --version | grep -q 'MIT licence' ||
    bad "sgzip --version does not name the licence"
else
  bad "$top/tools/sgzip not built"
fi

test $fail -eq 0 && echo "license: $n source files, LICENSE, README, man pages, sgzip --version: ok"
exit $fail

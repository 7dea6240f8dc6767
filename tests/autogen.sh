#!/bin/sh
# SPDX-License-Identifier: MIT
# ./autogen.sh's dependency check as a user who is not root sees it, with
# AUTOGEN_CHECK_ONLY=1 (check, report, install and run nothing), on a PATH
# made of the system's commands less some:
#
#   optional   without clang, valgrind, pigz and python3 it succeeds, and
#              prints the apt-get line for them as optional
#   required   without pkg-config too it fails, and names pkg-config as a
#              missing build dependency
#   root       (when the test runs as root) without AUTOGEN_CHECK_ONLY and
#              with apt-get and autoreconf replaced by scripts that log
#              their arguments, it installs the required and the
#              optional packages at once, as CI needs
#
# Run as root, it runs the script as nobody (setpriv) where it can, so
# that the script's own test for root is the one that answers; the check
# mode takes the same path for root anyway. Run by make check, with
# srcdir set. Skipped (77) without bash.
set -eu
src=${srcdir:-.}
[ -f "$src/autogen.sh" ] || { echo "autogen.sh test: $src/autogen.sh not found" >&2; exit 99; }
bash=$(command -v bash) || { echo "autogen.sh test: bash not found: skipped"; exit 77; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-autogen.XXXXXX")
trap 'rm -rf "$dir"' EXIT
trap 'exit 1' INT TERM
chmod 755 "$dir"
mkdir -m 1777 "$dir/tmp"
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# bin DIR REGEX: a directory of links to every command on PATH but those
# whose names match the extended regular expression; where two PATH
# directories have a name, the first one's, as for the shell.
bin() {
  mkdir -m 755 "$1"
  dirs=
  old_ifs=$IFS
  IFS=:
  for d in $PATH; do
    dirs="$d${dirs:+:$dirs}"
  done
  for d in $dirs; do
    IFS=$old_ifs
    [ -d "$d" ] || continue
    # shellcheck disable=SC2012 # names of commands, no odd characters
    ls -A "$d" | grep -Ev "$2" | sed "s|^|$d/|" |
      xargs -r -d '\n' ln -sf -t "$1"
  done
  IFS=$old_ifs
}

# apt-cache too: the script asks it only to name clang's packages, slowly.
optional='apt-cache|clang|clang-.*|clang\+\+.*|valgrind.*|pigz|unpigz|python3|python3\..*|python'
bin "$dir/opt" "^($optional)\$"
bin "$dir/req" "^($optional|pkg-config|pkgconf|.*-pkg-config)\$"
for b in opt req; do
  for c in clang valgrind pigz python3; do
    [ ! -e "$dir/$b/$c" ] || { echo "autogen.sh test: $c not hidden" >&2; exit 99; }
  done
done
[ ! -e "$dir/req/pkg-config" ] || { echo "autogen.sh test: pkg-config not hidden" >&2; exit 99; }

# As nobody where setpriv can make us so and nobody can read the script.
as=
if [ "$(id -u)" = 0 ] && command -v setpriv > /dev/null &&
  setpriv --reuid=65534 --regid=65534 --clear-groups \
    test -r "$src/autogen.sh" 2> /dev/null; then
  as="setpriv --reuid=65534 --regid=65534 --clear-groups"
fi
echo "autogen.sh test: running as uid $(${as:-env} id -u)"

# check BIN: the script's check on PATH=BIN; its status in $rc, its
# output in $dir/out.
check() {
  rc=0
  $as env -i PATH="$1" HOME=/ TMPDIR="$dir/tmp" LC_ALL=C AUTOGEN_CHECK_ONLY=1 \
    "$bash" "$src/autogen.sh" > "$dir/out" 2>&1 || rc=$?
  sed 's/^/  | /' "$dir/out"
}

check "$dir/opt"
if [ "$rc" = 0 ]; then
  ok "optional: succeeds without clang, valgrind, pigz and python3"
else
  bad "optional: exits $rc without clang, valgrind, pigz and python3"
fi
apt=$(grep '^sudo apt-get install' "$dir/out" || :)
for p in clang valgrind pigz python3; do
  case $apt in
  *" $p"*) ok "optional: the apt-get line names $p" ;;
  *) bad "optional: no apt-get line names $p" ;;
  esac
done
if grep -q 'missing build dependencies' "$dir/out"; then
  bad "optional: called required"
fi

check "$dir/req"
if [ "$rc" = 1 ] && grep -q '^autogen.sh: missing build dependencies:.* pkg-config' "$dir/out"; then
  ok "required: fails without pkg-config and names it"
else
  bad "required: without pkg-config: exit $rc, no message naming it"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -m 755 "$dir/fake"
  for c in apt-get autoreconf; do
    printf '#!/bin/sh\necho "%s $*" >> "%s/fake.log"\n' "$c" "$dir" > "$dir/fake/$c"
    chmod 755 "$dir/fake/$c"
  done
  rc=0
  env -i PATH="$dir/fake:$dir/req" HOME=/ TMPDIR="$dir/tmp" LC_ALL=C NOCONFIGURE=1 \
    "$bash" "$src/autogen.sh" > "$dir/out" 2>&1 || rc=$?
  sed 's/^/  | /' "$dir/out" "$dir/fake.log"
  inst=$(grep '^apt-get install' "$dir/fake.log" || :)
  all=yes
  for p in pkg-config clang valgrind pigz python3; do
    case $inst in *" $p"*) ;; *) all=no ;; esac
  done
  if [ "$rc" = 0 ] && [ "$all" = yes ]; then
    ok "root: one apt-get install of the required and the optional packages"
  else
    bad "root: exit $rc; apt-get install did not get all of pkg-config clang valgrind pigz python3"
  fi
fi
exit $fail

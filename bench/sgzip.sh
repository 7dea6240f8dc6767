#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/sgzip.sh — sgzip against pigz and gzip, measured in the same run.
#
# Shared machines are noisy, so every headline is a ratio between sgzip and
# pigz measured in the same run: runs interleaved (who goes first
# alternates), medians compared, absolute numbers only as detail.
#
#   compress     sgzip -L -p N, pigz -L -p N and gzip -L on a deterministic
#                mixed corpus (text, incompressible and structured binary),
#                at levels 1, 6 and 9: wall time, output size, peak RSS
#   decompress   sgzip -d, pigz -d and gzip -d of the same file (pigz's
#                output at that level, gzip's without pigz): wall time and
#                peak RSS
#   CPU          user + system seconds of every run above, all threads:
#                what the work cost whatever else the machine was doing
#                (a neighbour's load moves the wall time, much less the
#                CPU time), reported beside the wall-time ratios
#   memory       peak RSS of sgzip -c (and pigz -c) streaming a 200 MiB and
#                a 2 GiB input from a pipe to /dev/null: it must not grow
#                with the input
#
# Targets (pigz at the same level and thread count): compression wall
# <= 1.0x, size <= 1.001x; decompression wall <= 1.0x pigz -d; peak RSS
# <= 1.5x. Without pigz those rows are skipped with a message and only
# gzip is compared.
#
# The fastest peers, when installed (isal, libdeflate-tools), in the same
# runs: igzip -L -T N at levels 1 to 3 (ISA-L has no higher level) and
# igzip -d; libdeflate-gzip -L (one thread: it has no others) and
# libdeflate-gunzip. Their rows report sgzip / peer against the goals:
# compress -1 wall <= 0.9x igzip; compress -6 wall <= 0.6x
# libdeflate-gzip; decompress wall <= 1.0x igzip -d; decompressing
# sgzip's own output (block members, inflated in parallel) <= 0.6x igzip
# -d of the same file; the other peer rows are for information.
#
# Peak RSS and CPU time come from GNU time (/usr/bin/time -f '%M %U %S')
# when it is there, else from Python's resource module (the child's
# ru_maxrss, ru_utime and ru_stime), else they are not reported. A child's
# peak RSS counts what its parent had when it forked (the kernel keeps the
# peak across exec), so with Python every figure is at least Python's own
# size, about 14 MiB, and the RSS ratios say little (GNU time: 1 MiB).
#
# Environment:
#   BENCH_DIR         the build's bench directory (make bench sets it);
#                     sgzip is found at $BENCH_DIR/../tools/sgzip, results
#                     go to $BENCH_DIR/results/sgzip.txt, the corpus and
#                     outputs to a temporary directory under $BENCH_DIR
#   SGZIP             the sgzip to measure (overrides the above)
#   BENCH_SGZIP_MIB   corpus size in MiB (default 200)
#   BENCH_BIG_MIB     the big streamed input of the memory test (default
#                     2048)
#   BENCH_THREADS     -p for sgzip and pigz (default: the online processors,
#                     at most 64)
#   BENCH_LEVELS      levels to measure (default "1 6 9")
#   BENCH_REPS        runs of each command (default 3)
#   BENCH_STRICT=1    exit 1 when a target is missed
#
# Usage: sh bench/sgzip.sh [BUILDDIR]
#   BUILDDIR holds tools/sgzip; BENCH_DIR then defaults to BUILDDIR/bench.
# Exit status: 0 when every benchmark ran (targets missed or not, unless
# BENCH_STRICT=1), 1 on an error.

set -u
LC_ALL=C
export LC_ALL
unset SGZIP_THREADS

here=$(cd "$(dirname "$0")" && pwd) || exit 1
build=
if [ $# -gt 0 ]; then
  build=$(cd "$1" && pwd) || exit 1
  BENCH_DIR=${BENCH_DIR:-$build/bench}
fi
BENCH_DIR=${BENCH_DIR:-$(pwd)/bench}
mkdir -p "$BENCH_DIR" || exit 1
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) || exit 1
size_mib=${BENCH_SGZIP_MIB:-200}
big_mib=${BENCH_BIG_MIB:-2048}
levels=${BENCH_LEVELS:-1 6 9}
reps=${BENCH_REPS:-3}
strict=${BENCH_STRICT:-0}
MiB=1048576

die() {
  echo "sgzip.sh: $*" >&2
  exit 1
}

if [ -n "${SGZIP:-}" ]; then
  sg=$SGZIP
elif [ -n "$build" ] && [ -x "$build/tools/sgzip" ]; then
  sg=$build/tools/sgzip
elif [ -x "$BENCH_DIR/../tools/sgzip" ]; then
  sg=$BENCH_DIR/../tools/sgzip
elif [ -x "$here/../tools/sgzip" ]; then
  sg=$here/../tools/sgzip
else
  die "tools/sgzip not found: build it first (make), or set SGZIP"
fi
[ -x "$sg" ] || die "$sg is not executable"

# In a build with shared libraries tools/sgzip is a libtool wrapper
# script, which costs a shell start on every run: measure the program it
# runs instead, with the library path it would set.
sg_dir=$(dirname "$sg")
sg_base=$(basename "$sg")
if [ -x "$sg_dir/.libs/$sg_base" ] && grep -q libtool "$sg" 2>/dev/null; then
  libdir=$(sed -n 's/^ *LD_LIBRARY_PATH="\(.*\):\$LD_LIBRARY_PATH"$/\1/p' "$sg" |
    head -n 1)
  if [ -n "$libdir" ] &&
    LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      "$sg_dir/.libs/$sg_base" -V >/dev/null 2>&1; then
    LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    sg=$sg_dir/.libs/$sg_base
  fi
fi

for v in "$size_mib" "$big_mib" "$reps"; do
  case $v in
  '' | *[!0-9]*) die "sizes and BENCH_REPS must be positive integers" ;;
  esac
  [ "$v" -gt 0 ] || die "sizes and BENCH_REPS must be positive integers"
done

ncpu=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
[ "$ncpu" -le 64 ] || ncpu=64
threads=${BENCH_THREADS:-$ncpu}

command -v gzip >/dev/null 2>&1 || die "gzip(1) not found"
have_igzip=no
command -v igzip >/dev/null 2>&1 && have_igzip=yes
have_ldg=no
command -v libdeflate-gzip >/dev/null 2>&1 &&
  command -v libdeflate-gunzip >/dev/null 2>&1 && have_ldg=yes
have_pigz=no
if command -v pigz >/dev/null 2>&1; then
  have_pigz=yes
else
  echo "sgzip.sh: pigz not found: the pigz columns and targets are skipped"
fi

# Nanoseconds from an arbitrary origin (GNU date, else perl, else python3).
if [ "$(date +%N)" != N ] && [ -n "$(date +%N)" ]; then
  now_ns() { date +%s%N; }
elif command -v perl >/dev/null 2>&1; then
  now_ns() { perl -MTime::HiRes=time -e 'printf "%.0f\n", time() * 1e9'; }
elif command -v python3 >/dev/null 2>&1; then
  now_ns() { python3 -c 'import time; print(time.time_ns())'; }
else
  die "need GNU date (+%N), perl or python3 for sub-second timing"
fi

# Peak RSS (KiB) and CPU time (user + system, ms) of one command, into the
# files $rss_out and $cpu_out.
rss_tool=none
if [ -x /usr/bin/time ] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
  rss_tool=time
elif command -v python3 >/dev/null 2>&1 &&
  python3 -c 'import resource, subprocess' 2>/dev/null; then
  rss_tool=python
else
  echo "sgzip.sh: neither GNU time nor python3: peak RSS is not reported"
fi
py_rss='import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    print(ru.ru_maxrss, ru.ru_utime, ru.ru_stime, file=f)
sys.exit(rc)'
with_rss() { # with_rss CMD ARGS...: run it; peak RSS and CPU into the files
  case $rss_tool in
  time) /usr/bin/time -f '%M %U %S' -o "$work/ru" "$@" ;;
  python) python3 -c "$py_rss" "$work/ru" "$@" ;;
  *) echo "- - -" >"$work/ru" && "$@" ;;
  esac
  rc=$?
  awk 'END {
    print $1 >"'"$rss_out"'"
    if ($2 == "-") print "-" >"'"$cpu_out"'"
    else printf "%.0f\n", ($2 + $3) * 1000 >"'"$cpu_out"'"
  }' "$work/ru"
  return $rc
}

mkdir -p "$BENCH_DIR/results" || die "cannot create $BENCH_DIR/results"
work=$(mktemp -d "$BENCH_DIR/.sgzip-bench.XXXXXX") || die "cannot create a temporary directory"
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
rss_out=$work/rss
cpu_out=$work/cpu

avail_mib() {
  df -Pk "$1" | awk 'NR == 2 { printf "%d\n", $4 / 1024 }'
}
# The corpus, the outputs of three tools at one level and a margin.
need=$((size_mib * 2 + 64))
[ "$(avail_mib "$work")" -ge "$need" ] ||
  die "need $need MiB free under $BENCH_DIR for a $size_mib MiB corpus"

median() { # median of the numbers in file $1
  sort -n "$1" | awk '{ v[NR] = $1 }
    END {
      if (NR == 0) print "-"
      else if (v[1] == "-") print "-"
      else printf "%.0f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}
calc() { # calc EXPR: awk arithmetic (and sprintf, and c ? a : b)
  awk "BEGIN { x = ($1); print x }"
}

# ---- the corpus -------------------------------------------------------------

# A 4 MiB seed: 2.5 MiB of log-like text, 1 MiB of incompressible bytes
# (gzip -1n of more text: deterministic for a given gzip), 0.5 MiB of
# structured binary (records of small integers, as in a table file). The
# corpus repeats it: deflate sees only 32 KiB back, so a repeat 4 MiB away
# costs every compressor as much as new data.
echo "== corpus: $size_mib MiB of mixed text and binary (seed of 4 MiB, repeated)"
seed=$work/seed
awk 'BEGIN {
  split("GET POST PUT DELETE HEAD", m, " ")
  split("/index.html /api/v1/items /static/app.js /login /search?q=sluice" \
        " /img/logo.png /api/v1/users /health", u, " ")
  split("Mozilla/5.0 curl/8.4.0 Wget/1.21 python-requests/2.31", a, " ")
  x = 12345
  n = 2621440
  while (len < n) {
    x = (x * 69069 + 1) % 4294967296
    s = sprintf("10.%d.%d.%d - - [%02d/Nov/2024:%02d:%02d:%02d +0000] \"%s %s HTTP/1.1\" %d %d \"%s\"\n",
                x % 256, int(x / 256) % 256, int(x / 65536) % 256,
                1 + x % 28, x % 24, int(x / 7) % 60, int(x / 11) % 60,
                m[1 + x % 5], u[1 + int(x / 5) % 8], (x % 10 < 8) ? 200 : 404,
                x % 50000, a[1 + int(x / 3) % 4])
    if (len + length(s) > n) s = substr(s, 1, n - len)
    printf "%s", s; len += length(s)
  }
}' >"$seed.text"
[ "$(wc -c <"$seed.text")" -eq 2621440 ] || die "cannot make the text part of the seed"
# Incompressible: compressed text, which gzip cannot shrink further.
cat "$seed.text" "$seed.text" "$seed.text" | gzip -1n >"$seed.gz"
dd if="$seed.gz" of="$seed.rand" bs=1048576 count=1 2>/dev/null
rm -f "$seed.gz"
[ "$(wc -c <"$seed.rand")" -eq 1048576 ] || die "cannot make the binary part of the seed"
awk 'BEGIN {
  x = 7
  for (r = 0; n < 524288; r++) {
    x = (x * 69069 + 1) % 4294967296
    # a record: id (3 bytes), a small count, a flag byte, 3 bytes of noise
    printf "%c%c%c%c%c%c%c%c", 1 + r % 255, 1 + int(r / 255) % 255, 1 + int(r / 65025) % 255,
      1 + x % 16, (x % 3) ? 1 : 255, 1 + int(x / 256) % 255, 1 + int(x / 65536) % 255,
      1 + int(x / 16777216) % 255
    n += 8
  }
}' >"$seed.bin"
[ "$(wc -c <"$seed.bin")" -eq 524288 ] || die "cannot make the structured part of the seed"
cat "$seed.text" "$seed.rand" "$seed.bin" >"$seed"
rm -f "$seed.text" "$seed.rand" "$seed.bin"

gen() { # gen MIB: the seed repeated, MIB bytes in all (a multiple of 4)
  n=$(($1 / 4))
  [ "$n" -gt 0 ] || n=1
  j=0
  while [ $j -lt $n ]; do
    cat "$seed"
    j=$((j + 1))
  done
}
size_mib=$(((size_mib + 3) / 4 * 4))
corpus=$work/corpus
gen "$size_mib" >"$corpus" || die "cannot write the corpus"
bytes=$(wc -c <"$corpus" | tr -d ' ')
[ "$bytes" -eq $((size_mib * MiB)) ] || die "the corpus has $bytes bytes"
cat "$corpus" >/dev/null # warm the page cache before anything is timed

# ---- measuring ----------------------------------------------------------------

# timed TAG IN OUT CMD ARGS...: CMD < IN > OUT; appends the wall time (ns)
# to $work/TAG.t, the peak RSS (KiB) to $work/TAG.m and the CPU time (ms)
# to $work/TAG.c.
timed() {
  tag=$1
  in=$2
  out=$3
  shift 3
  t0=$(now_ns)
  with_rss "$@" <"$in" >"$out" || die "failed: $*"
  t1=$(now_ns)
  echo $((t1 - t0)) >>"$work/$tag.t"
  cat "$rss_out" >>"$work/$tag.m"
  cat "$cpu_out" >>"$work/$tag.c"
}

# Run each command of the list $@ (tags; cmd_TAG holds the command) $reps
# times, in rotated order.
interleave() {
  for tag in "$@"; do
    : >"$work/$tag.t"
    : >"$work/$tag.m"
    : >"$work/$tag.c"
  done
  r=0
  while [ $r -lt "$reps" ]; do
    # Rotate the order so that nobody always gets the quieter slot.
    k=0
    while [ $k -lt $# ]; do
      idx=$(((k + r) % $# + 1))
      eval "tag=\${$idx}"
      eval "run_$tag"
      k=$((k + 1))
    done
    r=$((r + 1))
  done
}

secs() { calc "sprintf(\"%.3f\", $(median "$work/$1.t") / 1e9)"; }
rss() { median "$work/$1.m"; }
cpus() { # the median CPU time of TAG in seconds, or -
  m=$(median "$work/$1.c")
  case $m in
  -) echo - ;;
  *) calc "sprintf(\"%.2f\", $m / 1000)" ;;
  esac
}
mbps() { calc "sprintf(\"%.0f\", $bytes / ($(median "$work/$1.t") / 1e9) / 1e6)"; }
ratio_of() { # ratio_of A B: A / B with 3 decimals, or - when either is -
  case "$1$2" in
  *-*) echo - ;;
  *) calc "sprintf(\"%.3f\", $1 / $2)" ;;
  esac
}

summary=$work/summary
detail=$work/detail
: >"$summary"
: >"$detail"
fails=0
row() { # row METRIC SGZIP PIGZ RATIO TARGET: the result is computed
  metric=$1
  a=$2
  b=$3
  r=$4
  target=$5
  case "$target$r" in
  -*) result=report ;; # no target: for information
  *-) result=SKIP ;;
  *)
    limit=${target#<= }
    result=$(calc "$r <= $limit ? \"PASS\" : \"FAIL\"")
    ;;
  esac
  [ "$result" != FAIL ] || fails=$((fails + 1))
  printf '%-30s %14s %14s %8s %9s  %s\n' "$metric" "$a" "$b" "$r" "$target" \
    "$result" >>"$summary"
}
detail_row() { # TOOL SECONDS CPU MB/S SIZE RSS
  printf '  %-28s %10s %8s %8s %13s %10s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$detail"
}
detail_head() { # SIZE-HEADING
  printf '  %-28s %10s %8s %8s %13s %10s\n' "command" "median s" "CPU s" "MB/s" "$1" \
    "RSS KiB" >>"$detail"
}

echo "sgzip: $sg -p $threads; pigz: $([ $have_pigz = yes ] && echo "pigz -p $threads" || echo absent);" \
  "gzip: $(command -v gzip); $reps runs each, medians"
echo

# ---- compression and decompression, per level ----------------------------------

for L in $levels; do
  echo "== level $L: compress $size_mib MiB"
  eval "run_sgc() { timed sgc \"\$corpus\" \"\$work/sg.gz\" \"\$sg\" -$L -p $threads -c; }"
  eval "run_pzc() { timed pzc \"\$corpus\" \"\$work/pz.gz\" pigz -$L -p $threads -c; }"
  eval "run_gzc() { timed gzc \"\$corpus\" \"\$work/gz.gz\" gzip -$L -c; }"
  eval "run_igc() { timed igc \"\$corpus\" \"\$work/ig.gz\" igzip -$L -T $threads -c; }"
  eval "run_ldc() { timed ldc \"\$corpus\" \"\$work/ld.gz\" libdeflate-gzip -$L -c; }"
  peers=
  [ $have_igzip = yes ] && [ "$L" -le 3 ] && peers="$peers igc"
  [ $have_ldg = yes ] && peers="$peers ldc"
  if [ $have_pigz = yes ]; then
    interleave sgc pzc gzc $peers
  else
    interleave sgc gzc $peers
  fi
  gzip -t "$work/sg.gz" || die "gzip -t rejects sgzip -$L output"
  s_sg=$(wc -c <"$work/sg.gz" | tr -d ' ')
  s_gz=$(wc -c <"$work/gz.gz" | tr -d ' ')
  {
    echo "level $L, compress:"
    detail_head bytes
  } >>"$detail"
  detail_row "sgzip -$L -p $threads" "$(secs sgc)" "$(cpus sgc)" "$(mbps sgc)" "$s_sg" \
    "$(rss sgc)"
  if [ $have_pigz = yes ]; then
    s_pz=$(wc -c <"$work/pz.gz" | tr -d ' ')
    detail_row "pigz -$L -p $threads" "$(secs pzc)" "$(cpus pzc)" "$(mbps pzc)" "$s_pz" \
      "$(rss pzc)"
  fi
  detail_row "gzip -$L" "$(secs gzc)" "$(cpus gzc)" "$(mbps gzc)" "$s_gz" "$(rss gzc)"
  for t in $peers; do
    case $t in
    igc) pn="igzip -$L -T $threads" goal="-" ; [ "$L" = 1 ] && goal="<= 0.9" ;;
    *) pn="libdeflate-gzip -$L" goal="-" ; [ "$L" = 6 ] && goal="<= 0.6" ;;
    esac
    s_p=$(wc -c <"$work/${t%c}.gz" | tr -d ' ')
    detail_row "$pn" "$(secs $t)" "$(cpus $t)" "$(mbps $t)" "$s_p" "$(rss $t)"
    row "-$L wall vs ${pn%% *}" "$(secs sgc)" "$(secs $t)" \
      "$(ratio_of "$(median "$work/sgc.t")" "$(median "$work/$t.t")")" "$goal"
    row "-$L size vs ${pn%% *}" "$s_sg" "$s_p" "$(ratio_of "$s_sg" "$s_p")" "-"
  done
  printf '  %-28s %10s\n' "speed-up over gzip" \
    "$(calc "sprintf(\"%.2fx\", $(median "$work/gzc.t") / $(median "$work/sgc.t"))")" >>"$detail"

  if [ $have_pigz = yes ]; then
    row "compress -$L wall (s)" "$(secs sgc)" "$(secs pzc)" \
      "$(ratio_of "$(median "$work/sgc.t")" "$(median "$work/pzc.t")")" "<= 1.0"
    row "compress -$L CPU (s)" "$(cpus sgc)" "$(cpus pzc)" \
      "$(ratio_of "$(median "$work/sgc.c")" "$(median "$work/pzc.c")")" "-"
    row "compress -$L size (bytes)" "$s_sg" "$s_pz" "$(ratio_of "$s_sg" "$s_pz")" "<= 1.001"
    row "compress -$L peak RSS (KiB)" "$(rss sgc)" "$(rss pzc)" \
      "$(ratio_of "$(rss sgc)" "$(rss pzc)")" "<= 1.5"
    dsrc=$work/pz.gz
  else
    row "compress -$L wall (s)" "$(secs sgc)" "-" "-" "<= 1.0"
    row "compress -$L size (bytes)" "$s_sg" "-" "-" "<= 1.001"
    row "compress -$L peak RSS (KiB)" "$(rss sgc)" "-" "-" "<= 1.5"
    dsrc=$work/gz.gz
  fi

  echo "== level $L: decompress $(basename "$dsrc")"
  eval "run_sgd() { timed sgd \"\$dsrc\" /dev/null \"\$sg\" -d -c; }"
  eval "run_pzd() { timed pzd \"\$dsrc\" /dev/null pigz -d -c; }"
  eval "run_gzd() { timed gzd \"\$dsrc\" /dev/null gzip -d -c; }"
  eval "run_igd() { timed igd \"\$dsrc\" /dev/null igzip -d -c; }"
  eval "run_ldd() { timed ldd \"\$dsrc\" /dev/null libdeflate-gunzip -c; }"
  dpeers=
  [ $have_igzip = yes ] && dpeers="$dpeers igd"
  [ $have_ldg = yes ] && dpeers="$dpeers ldd"
  if [ $have_pigz = yes ]; then
    interleave sgd pzd gzd $dpeers
  else
    interleave sgd gzd $dpeers
  fi
  "$sg" -dc "$work/sg.gz" | cmp -s - "$corpus" || die "sgzip -$L does not round-trip"
  # sgzip's own output (the block format where libdeflate is built in),
  # whose members sgzip -d inflates on every thread, against igzip -d of
  # the same file.
  if [ $have_igzip = yes ]; then
    eval "run_sgo() { timed sgo \"\$work/sg.gz\" /dev/null \"\$sg\" -d -c; }"
    eval "run_igo() { timed igo \"\$work/sg.gz\" /dev/null igzip -d -c; }"
    interleave sgo igo
    row "decompress own -$L vs igzip" "$(secs sgo)" "$(secs igo)" \
      "$(ratio_of "$(median "$work/sgo.t")" "$(median "$work/igo.t")")" "<= 0.6"
  fi
  {
    echo "level $L, decompress $(basename "$dsrc"):"
    detail_head ""
  } >>"$detail"
  detail_row "sgzip -d" "$(secs sgd)" "$(cpus sgd)" "$(mbps sgd)" "" "$(rss sgd)"
  if [ $have_pigz = yes ]; then
    detail_row "pigz -d" "$(secs pzd)" "$(cpus pzd)" "$(mbps pzd)" "" "$(rss pzd)"
    row "decompress -$L wall (s)" "$(secs sgd)" "$(secs pzd)" \
      "$(ratio_of "$(median "$work/sgd.t")" "$(median "$work/pzd.t")")" "<= 1.0"
    row "decompress -$L CPU (s)" "$(cpus sgd)" "$(cpus pzd)" \
      "$(ratio_of "$(median "$work/sgd.c")" "$(median "$work/pzd.c")")" "-"
    row "decompress -$L peak RSS (KiB)" "$(rss sgd)" "$(rss pzd)" \
      "$(ratio_of "$(rss sgd)" "$(rss pzd)")" "<= 1.5"
  else
    row "decompress -$L wall (s)" "$(secs sgd)" "-" "-" "<= 1.0"
  fi
  detail_row "gzip -d" "$(secs gzd)" "$(cpus gzd)" "$(mbps gzd)" "" "$(rss gzd)"
  for t in $dpeers; do
    case $t in
    igd) pn="igzip -d" goal="<= 1.0" ;;
    *) pn="libdeflate-gunzip" goal="-" ;;
    esac
    detail_row "$pn" "$(secs $t)" "$(cpus $t)" "$(mbps $t)" "" "$(rss $t)"
    row "decompress -$L vs ${pn%% *}" "$(secs sgd)" "$(secs $t)" \
      "$(ratio_of "$(median "$work/sgd.t")" "$(median "$work/$t.t")")" "$goal"
  done
  rm -f "$work/sg.gz" "$work/pz.gz" "$work/gz.gz" "$work/ig.gz" "$work/ld.gz"
done
rm -f "$corpus"

# ---- memory: streamed, 200 MiB against 2 GiB ---------------------------------------

if [ $rss_tool != none ]; then
  small=$size_mib
  echo "== memory: peak RSS streaming $small MiB and $big_mib MiB through -c to /dev/null"
  stream() { # stream TAG MIB CMD...: gen MIB | CMD > /dev/null
    tag=$1
    mib=$2
    shift 2
    gen "$mib" | with_rss "$@" >/dev/null || die "failed: $*"
    cat "$rss_out" >>"$work/$tag.m"
  }
  for tag in sgs sgb pzs pzb; do : >"$work/$tag.m"; done
  stream sgs "$small" "$sg" -6 -p "$threads" -c
  stream sgb "$big_mib" "$sg" -6 -p "$threads" -c
  if [ $have_pigz = yes ]; then
    stream pzs "$small" pigz -6 -p "$threads" -c
    stream pzb "$big_mib" pigz -6 -p "$threads" -c
  fi
  g_sg=$(($(rss sgb) - $(rss sgs)))
  {
    echo "memory, streamed from a pipe (peak RSS KiB):"
    printf '  %-28s %10s %10s %10s\n' "command" "$small MiB" "$big_mib MiB" "growth"
    printf '  %-28s %10s %10s %10s\n' "sgzip -6 -p $threads -c" "$(rss sgs)" "$(rss sgb)" "$g_sg"
    if [ $have_pigz = yes ]; then
      printf '  %-28s %10s %10s %10s\n' "pigz -6 -p $threads -c" "$(rss pzs)" "$(rss pzb)" \
        "$(($(rss pzb) - $(rss pzs)))"
    fi
  } >>"$detail"
  if [ $have_pigz = yes ]; then
    row "stream $big_mib MiB peak RSS (KiB)" "$(rss sgb)" "$(rss pzb)" \
      "$(ratio_of "$(rss sgb)" "$(rss pzb)")" "<= 1.5"
  fi
  # Bounded by the options, not the input: at most 2 MiB more for 10x the
  # data (allocator noise).
  printf '%-30s %14s %14s %8s %9s  %s\n' "RSS growth $small->$big_mib MiB" "$g_sg KiB" "-" "-" \
    "< 2048" "$([ "$g_sg" -lt 2048 ] && echo PASS || echo FAIL)" >>"$summary"
  [ "$g_sg" -lt 2048 ] || fails=$((fails + 1))
else
  echo "== memory: skipped (no way to read a peak RSS)"
fi

# ---- report -----------------------------------------------------------------------

echo
{
  echo "sgzip benchmark: $size_mib MiB mixed corpus, -p $threads, $reps runs each (medians)"
  echo
  cat "$detail"
  echo
  printf '%-30s %14s %14s %8s %9s  %s\n' "metric" "sgzip" "pigz" "ratio" "target" "result"
  cat "$summary"
  echo
  echo "ratio = sgzip / pigz at the same level and thread count, measured in this run;"
  echo "CPU = user + system seconds over all threads (no target: the wall time is"
  echo "what the targets judge, the CPU time says what the work cost)"
  [ $have_pigz = yes ] || echo "pigz was not found: its rows are skipped"
} | tee "$BENCH_DIR/results/sgzip.txt"

[ "$strict" = 1 ] && [ $fails -gt 0 ] && exit 1
exit 0

#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/run.sh — sluice against its peers, measured in the same run.
#
# Shared machines are noisy, so every headline is a ratio between sluice
# and a peer measured in the same run: runs interleaved, medians compared,
# absolute times only as detail. Three benchmarks:
#
#   ring      ring_bench: one chunk handed from thread to thread, sl_ring
#             against a naive mutex + condvar queue (see bench/ring_bench.c)
#   through   passthrough -t 3 FILE /dev/null against
#             cat FILE | cat | cat | cat > /dev/null   (wall time, medians)
#   memory    peak resident size of the same pipeline for a 100 MiB and a
#             2 GiB input read from a pipe (medians of 3 runs each): it
#             must not grow with the input
#
# Environment:
#   BENCH_DIR       where ring_bench and passthrough are (default: this
#                   script's directory); results go to $BENCH_DIR/results
#   BENCH_SIZE_MIB  size of the pass-through input file (default 1024)
#   BENCH_SMALL_MIB smaller input of the memory test (default 100)
#   BENCH_BIG_MIB   bigger input of the memory test (default 2048)
#   BENCH_REPS      repetitions of each candidate and peer (default 5)
#   BENCH_MEM_REPS  runs of each input size in the memory test (default 3)
#   BENCH_RING_SMALL, BENCH_RING_BIG   chunks per ring_bench run
#   BENCH_KEEP=1    keep the generated input file; later runs reuse it
#                   (and leave it in place) until it is removed by hand
#   BENCH_STRICT=1  exit 1 when a target is missed
#
# Exit status: 0 when every benchmark ran (targets missed or not, unless
# BENCH_STRICT=1), 1 on an error.

set -u

here=$(cd "$(dirname "$0")" && pwd) || exit 1
BENCH_DIR=${BENCH_DIR:-$here}
size_mib=${BENCH_SIZE_MIB:-1024}
small_mib=${BENCH_SMALL_MIB:-100}
big_mib=${BENCH_BIG_MIB:-2048}
reps=${BENCH_REPS:-5}
mem_reps=${BENCH_MEM_REPS:-3}
keep=${BENCH_KEEP:-0}
strict=${BENCH_STRICT:-0}

ring_bench=$BENCH_DIR/ring_bench
passthrough=$BENCH_DIR/passthrough
results=$BENCH_DIR/results
MiB=1048576

die() {
  echo "run.sh: $*" >&2
  exit 1
}

for v in "$size_mib" "$small_mib" "$big_mib" "$reps" "$mem_reps"; do
  case $v in
  '' | *[!0-9]*) die "sizes and BENCH_REPS must be positive integers" ;;
  esac
  [ "$v" -gt 0 ] || die "sizes and BENCH_REPS must be positive integers"
done
for prog in "$ring_bench" "$passthrough"; do
  [ -x "$prog" ] || die "$prog not found: build the benchmarks first (make bench)"
done

mkdir -p "$results" || die "cannot create $results"
work=$(mktemp -d "$BENCH_DIR/.bench.XXXXXX") || die "cannot create a temporary directory"
created=""

cleanup() {
  rm -rf "$work"
  if [ "$keep" != 1 ] && [ -n "$created" ]; then
    rm -f "$created"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Nanoseconds from an arbitrary origin (GNU date, else perl).
if [ "$(date +%N)" != N ] && [ -n "$(date +%N)" ]; then
  now_ns() { date +%s%N; }
elif command -v perl >/dev/null 2>&1; then
  now_ns() { perl -MTime::HiRes=time -e 'printf "%.0f\n", time() * 1e9'; }
else
  die "need GNU date (+%N) or perl for sub-second timing"
fi

median() { # median of the numbers in file $1
  sort -n "$1" | awk '{ v[NR] = $1 }
    END {
      if (NR == 0) print "-"
      else printf "%.0f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

calc() { # calc EXPR: awk arithmetic (and sprintf, and c ? a : b)
  awk "BEGIN { x = ($1); print x }"
}

avail_mib() {
  df -Pk "$1" | awk 'NR == 2 { printf "%d\n", $4 / 1024 }'
}

summary=$work/summary
fails=0
row() { # row METRIC SLUICE PEER RATIO TARGET RESULT
  printf '%-36s %14s %14s %8s %10s  %s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$summary"
  [ "$6" != FAIL ] || fails=$((fails + 1))
}

echo "sluice benchmarks (ratios are against peers measured in the same run)"
echo

# --- 1. ring handoff --------------------------------------------------------

echo "== ring handoff: sl_ring vs a naive mutex + condvar queue"
echo
{
  "$ring_bench" -o "$work/ring.res"
  echo $? >"$work/ring.rc"
} | tee "$results/ring.txt"
[ "$(cat "$work/ring.rc")" = 0 ] || die "ring_bench failed"
echo

res() { sed -n "s/^$1=//p" "$work/ring.res"; }
mps() { calc "sprintf(\"%.2f M/s\", $1 / 1e6)"; }
x2() { calc "sprintf(\"%.2fx\", $1)"; }
r8=$(res ring_8B_ratio)
row "ring, 8 B chunks (items/s)" "$(mps "$(res ring_8B_sluice_rate)")" \
  "$(mps "$(res ring_8B_naive_rate)")" "$(x2 "$r8")" ">= 3x" \
  "$(calc "$r8 >= 3 ? \"PASS\" : \"FAIL\"")"
row "ring, 64 KiB chunks (items/s)" "$(mps "$(res ring_64KiB_sluice_rate)")" \
  "$(mps "$(res ring_64KiB_naive_rate)")" "$(x2 "$(res ring_64KiB_ratio)")" "report" "-"
idle=$(calc "$(res idle_reader_cpu_ms) > $(res idle_writer_cpu_ms) ? $(res idle_reader_cpu_ms) : $(res idle_writer_cpu_ms)")
row "ring, CPU while a side blocks 0.5 s" "${idle} ms" "-" "-" "< 5 ms" \
  "$(calc "$idle < 5 ? \"PASS\" : \"FAIL\"")"

# --- 2. pass-through throughput --------------------------------------------

echo "== pass-through: passthrough -t 3 vs cat | cat | cat | cat, ${size_mib} MiB, $reps runs each"
echo

data=$BENCH_DIR/passthrough-input-${size_mib}MiB.dat
want=$((size_mib * MiB))
have=0
[ -f "$data" ] && have=$(wc -c <"$data")
through_ok=1
if [ "$have" -ne "$want" ]; then
  rm -f "$data"
  if [ "$(avail_mib "$BENCH_DIR")" -lt $((size_mib + 256)) ]; then
    echo "not enough disk space under $BENCH_DIR for a ${size_mib} MiB input: skipped"
    through_ok=0
  else
    # Deterministic text: one MiB of counting, repeated.
    seq 1 200000 | head -c $MiB >"$work/seed" || die "cannot write the seed"
    created="$data"
    i=0
    while [ $i -lt "$size_mib" ]; do
      cat "$work/seed"
      i=$((i + 1))
    done >"$data" || die "cannot write $data"
  fi
fi

if [ $through_ok = 1 ]; then
  cat "$data" >/dev/null # warm the page cache before anything is timed
  : >"$work/t_sluice"
  : >"$work/t_cat"
  run_sluice() {
    t0=$(now_ns)
    "$passthrough" -t 3 "$data" /dev/null 2>"$work/pt.err" ||
      { cat "$work/pt.err" >&2; die "passthrough failed"; }
    t1=$(now_ns)
    got=$(sed -n 's/^bytes=\([0-9]*\) .*/\1/p' "$work/pt.err")
    [ "$got" = "$want" ] || die "passthrough passed $got bytes of $want"
    echo $((t1 - t0)) >>"$work/t_sluice"
  }
  run_cat() {
    t0=$(now_ns)
    cat "$data" | cat | cat | cat >/dev/null || die "cat pipeline failed"
    t1=$(now_ns)
    echo $((t1 - t0)) >>"$work/t_cat"
  }
  i=1
  while [ $i -le "$reps" ]; do
    # Alternate who goes first so neither always gets the quieter slot.
    if [ $((i % 2)) = 1 ]; then
      run_sluice
      run_cat
    else
      run_cat
      run_sluice
    fi
    i=$((i + 1))
  done
  s_med=$(calc "$(median "$work/t_sluice") / 1e9")
  c_med=$(calc "$(median "$work/t_cat") / 1e9")
  ratio_raw=$(calc "$s_med / $c_med")
  ratio=$(calc "sprintf(\"%.2f\", $ratio_raw)")
  {
    printf '%-34s %10s %10s %10s\n' "command" "median s" "min s" "max s"
    for who in sluice cat; do
      if [ $who = sluice ]; then
        label="passthrough -t 3 FILE /dev/null"
      else
        label="cat FILE | cat | cat | cat"
      fi
      sort -n "$work/t_$who" | awk -v l="$label" -v m="$(median "$work/t_$who")" '
        { v[NR] = $1 }
        END { printf "%-34s %10.3f %10.3f %10.3f\n", l, m / 1e9, v[1] / 1e9, v[NR] / 1e9 }'
    done
    printf '%-34s %10s\n' "ratio sluice/cat (medians)" "$ratio"
    printf '%-34s %10s\n' "throughput sluice, MiB/s" "$(calc "sprintf(\"%.0f\", $size_mib / $s_med)")"
  } | tee "$results/passthrough.txt"
  echo
  row "pass-through ${size_mib} MiB (wall s)" "$(calc "sprintf(\"%.3f s\", $s_med)")" \
    "$(calc "sprintf(\"%.3f s\", $c_med)")" "$ratio" "<= 0.5" \
    "$(calc "$ratio_raw <= 0.5 ? \"PASS\" : \"FAIL\"")"
  if [ "$keep" != 1 ]; then
    rm -f "$created"
    created=""
  fi
else
  row "pass-through ${size_mib} MiB (wall s)" "-" "-" "-" "<= 0.5" "SKIP"
fi

# --- 3. memory bounded by the marks, not the input ------------------------

echo "== memory: peak RSS of passthrough -t 3, input from a pipe, $mem_reps runs each"
echo

# Each run appends its peak RSS (KiB) and the pool's peak count of buffers
# to $work/rss_LABEL and $work/bufs_LABEL. How many buffers are out at
# once depends on which stage lags, so the runs are repeated and the
# medians compared.
mem_run() { # mem_run LABEL MIB
  yes 'sluice streams bytes between threads, bounded by the marks 0123456789' |
    head -c $(($2 * MiB)) |
    "$passthrough" -s -t 3 /dev/stdin /dev/null 2>"$work/mem.err" ||
    { cat "$work/mem.err" >&2; die "passthrough failed on a $2 MiB input"; }
  got=$(sed -n 's/^bytes=\([0-9]*\) .*/\1/p' "$work/mem.err")
  [ "$got" = $(($2 * MiB)) ] || die "passthrough passed $got bytes of $(($2 * MiB))"
  sed -n 's/.*peak_rss_kib=\([0-9]*\).*/\1/p' "$work/mem.err" >>"$work/rss_$1"
  sed -n 's/^pool: .* peak \([0-9]*\) outstanding.*/\1/p' "$work/mem.err" >>"$work/bufs_$1"
}
: >"$work/rss_small"
: >"$work/rss_big"
i=1
while [ $i -le "$mem_reps" ]; do
  mem_run small "$small_mib"
  mem_run big "$big_mib"
  i=$((i + 1))
done
p_small=$(median "$work/rss_small")
p_big=$(median "$work/rss_big")
growth=$((p_big - p_small))
{
  printf '%-12s %22s %10s %10s %22s\n' "input" "peak RSS KiB (median)" "min" "max" \
    "pool buffers (median)"
  for label in small big; do
    if [ $label = small ]; then mib=$small_mib; else mib=$big_mib; fi
    printf '%-12s %22s %10s %10s %22s\n' "$mib MiB" "$(median "$work/rss_$label")" \
      "$(sort -n "$work/rss_$label" | head -n 1)" "$(sort -n "$work/rss_$label" | tail -n 1)" \
      "$(median "$work/bufs_$label")"
  done
  printf '%-12s %22s\n' "growth" "$growth"
} | tee "$results/memory.txt"
echo
row "peak RSS, ${small_mib} MiB input" "$p_small KiB" "-" "-" "report" "-"
row "peak RSS, ${big_mib} MiB input" "$p_big KiB" "-" "-" "report" "-"
row "peak RSS growth ${small_mib} -> ${big_mib} MiB" "$growth KiB" "-" "-" "< 1024 KiB" \
  "$([ "$growth" -lt 1024 ] && echo PASS || echo FAIL)"

# --- summary -----------------------------------------------------------------

echo "== summary"
echo
{
  printf '%-36s %14s %14s %8s %10s  %s\n' "metric" "sluice" "peer" "ratio" "target" "result"
  cat "$summary"
  echo
  echo "peers: ring = naive mutex + condvar queue (a signal per item);"
  echo "       pass-through = cat | cat | cat | cat; ratio = sluice / peer"
} | tee "$results/summary.txt"

[ "$strict" = 1 ] && [ $fails -gt 0 ] && exit 1
exit 0

#!/bin/sh
# SPDX-License-Identifier: MIT
# The trace timeline, as a user gets it: sgzip --trace writes a Chrome
# trace-event JSON file for its compression pipeline and for its
# decompression pipeline; each must parse (python3 -m json.tool), hold a
# named track (thread_name) for every stage thread with at least one span
# on it, counter events for the rings, and the displayTimeUnit; each
# ring's peak in the trace is the stats table's for the same run. Also: -q
# silences --stats, and a trace file that cannot be created, or written
# (/dev/full, where there is one), fails the run with a message.
#
# Usage: sh tests/trace.sh [BUILDDIR]
#   BUILDDIR holds tools/sgzip (default: the current directory, as make
#   check runs it).
#
# Exit status: 0 pass, 1 fail, 77 skip (no python3).

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
  echo "trace.sh: $sg not found or not executable; build it first" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "trace.sh: python3 not found; skipping"
  exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sl-trace.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
fail=0
bad() {
  echo "trace.sh: FAIL: $*" >&2
  fail=1
}

# Input: 4 MiB of text that compresses, so every stage has work.
python3 - "$work/in" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(100000):
        f.write("line %d of the sample, %x and then some words\n" % (i, i * 7919))
PY

# check FILE STAGE...: valid JSON, a track per stage with spans on it.
check() {
  file=$1
  shift
  if ! python3 -m json.tool "$file" >/dev/null; then
    bad "$file is not valid JSON"
    return
  fi
  python3 - "$file" "$@" <<'PY' || bad "$file: tracks or spans missing"
import json, sys
doc = json.load(open(sys.argv[1]))
stages = sys.argv[2:]
ev = doc["traceEvents"]
assert doc.get("displayTimeUnit") == "ms", "displayTimeUnit"
names = {e["tid"]: e["args"]["name"] for e in ev
         if e.get("ph") == "M" and e.get("name") == "thread_name"}
spans = {}
for e in ev:
    if e.get("ph") == "X":
        assert e["dur"] >= 0 and e["name"] in (
            "busy", "blocked full", "blocked empty"), e
        spans[e["tid"]] = spans.get(e["tid"], 0) + 1
ok = True
for s in stages:
    tids = [t for t, n in names.items() if n == "sl:" + s]
    if len(tids) != 1:
        print("no track named sl:%s in %s" % (s, sorted(names.values())))
        ok = False
    elif spans.get(tids[0], 0) < 1:
        print("no span on sl:%s" % s)
        ok = False
if not any(e.get("ph") == "C" for e in ev):
    print("no counter events")
    ok = False
sys.exit(0 if ok else 1)
PY
}

"$sg" -c -p 2 --trace="$work/c.json" "$work/in" >"$work/in.gz" ||
  bad "sgzip -c --trace failed"
check "$work/c.json" read pgzip write

"$sg" -dc --trace "$work/d.json" "$work/in.gz" >"$work/out" ||
  bad "sgzip -dc --trace failed"
cmp -s "$work/in" "$work/out" || bad "round trip with --trace differs"
check "$work/d.json" read gunzip gunzip-check write

# One run, its trace and its stats table: each ring's peak in the trace
# (the last "peak" of its counter events; "level" is only sampled) is the
# peak the table prints, and a peak above the ring's hwm comes with the
# line that says a ring admits one chunk more.
"$sg" -c -p 2 --stats --trace="$work/s.json" "$work/in" >/dev/null 2>"$work/s.stats" ||
  bad "sgzip -c --stats --trace failed"
python3 - "$work/s.json" "$work/s.stats" <<'PY' || bad "trace and stats disagree on the rings' peaks"
import json, re, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
stats = open(sys.argv[2]).read()
table = {}
for line in stats.splitlines():
    m = re.match(r"^(\S+ -> \S+)\s+(\d+)\s+(\d+)\s+\d+\s+\d+\s+\d+$", line)
    if m:
        table[m.group(1)] = (int(m.group(2)), int(m.group(3)))
trace = {}
for e in ev:
    if e.get("ph") == "C" and "peak" in e.get("args", {}):
        trace[e["name"]] = max(trace.get(e["name"], 0), e["args"]["peak"])
ok = bool(table) and set(table) == set(trace)
for ring, (hwm, peak) in table.items():
    print("ring %s: hwm %d, peak %d in the table, %s in the trace"
          % (ring, hwm, peak, trace.get(ring)))
    ok &= trace.get(ring) == peak
over = any(peak > hwm for hwm, peak in table.values())
note = "may pass hwm by up to one chunk" in stats
print("a peak above hwm: %s; the note: %s" % (over, note))
sys.exit(0 if ok and over == note else 1)
PY

# -q silences --stats; without -q the table names the bottleneck.
"$sg" -c --stats "$work/in" 2>"$work/stats" >/dev/null || bad "--stats failed"
grep -q '^bottleneck: ' "$work/stats" || bad "--stats names no bottleneck"
"$sg" -c -q --stats "$work/in" 2>"$work/quiet" >/dev/null || bad "-q failed"
test -s "$work/quiet" && bad "-q --stats printed: $(cat "$work/quiet")"

# A trace that cannot be written is an error, and nothing is written.
if "$sg" -c --trace "$work/no/such/dir/t.json" "$work/in" >/dev/null 2>"$work/err"; then
  bad "an unwritable trace file was accepted"
fi
grep -q 't.json' "$work/err" || bad "no message names the trace file"

# A trace that fails while it is written (a full disk) fails the run with
# gzip's kind of message; the output itself is complete.
if test -w /dev/full; then
  if "$sg" -c --trace=/dev/full "$work/in" >"$work/full.gz" 2>"$work/err"; then
    bad "a trace to /dev/full exited 0"
  fi
  grep -q '^sgzip: /dev/full: No space left on device$' "$work/err" ||
    bad "no message for the trace's write error: $(cat "$work/err")"
  "$sg" -dc "$work/full.gz" | cmp -s - "$work/in" ||
    bad "the output of a run whose trace failed differs"
fi

exit $fail

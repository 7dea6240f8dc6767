#!/bin/sh
# SPDX-License-Identifier: MIT
# examples/http-server (libmicrohttpd) with curl as the client, on
# loopback:
#
#   files      GET /files/NAME of 0 B, 1 B, 3 MiB (gzip) and 24 MiB (pgzip)
#              files: `curl --compressed` gets them byte-identical with
#              Content-Encoding: gzip, and without Accept-Encoding as they
#              are, with their Content-Length
#   body       POST /echo and /gzip with bodies of 0 B, 1 B and 10 MiB:
#              the answer is the body (gunzipped, for /gzip); the 10 MiB
#              body made the writer say stop (request_suspends) and went
#              through the spool; a Content-Length past --max-body is 413
#   paths      "..", an absolute path and symbolic links out of the root
#              are refused (403), a missing file is 404, a link inside
#              the root is followed
#   slow       `curl --limit-rate 1M` on a 64 MiB file, gzipped: once the
#              server's own counters show the ring into the reader full
#              (the client holds the pipeline back), its pool holds no
#              more than the marks allow (3R + 3 buf) and its RSS has not
#              grown by the file's size; then the client goes away mid-
#              response, and the server's live pipelines go back to 0
#   upload     a client that goes away mid-upload: live pipelines back
#              to 0
#   limits     --max-connections 2 holds a third client back until one
#              of two goes; --timeout 1 closes a connection whose body
#              stops coming
#   many       200 concurrent clients, every response byte-identical
#   big        a 10 GiB sparse file (SL_TEST_HTTP_GIB; 1 GiB in a sanitizer
#              build) sent plain, by a server whose peak RSS is then
#              that of one that sent 10 MiB
#
# Each server runs with --stats and is stopped with SIGTERM; it must exit
# 0 with no allocation of the library left. The port comes from the
# server's first line through a FIFO; states are observed through GET
# /stats, polled a bounded number of times, never by waiting on time.
# Run by make check from the build directory; $1 may name another build
# directory.
set -eu
top=${1:-.}
server=$top/examples/http-server
if [ ! -x "$server" ]; then
  echo "http.sh: examples/http-server not built (needs libmicrohttpd-dev): skipped"
  exit 77
fi
for t in curl gzip; do
  command -v $t > /dev/null || { echo "http.sh: $t not found (install $t): skipped"; exit 77; }
done
# 10 GiB takes tens of seconds; under a sanitizer, 1 GiB.
case ${SL_SANITIZER:-no} in no) gib=${SL_TEST_HTTP_GIB:-10} ;; *) gib=${SL_TEST_HTTP_GIB:-1} ;; esac

ulimit -n 4096 2> /dev/null || ulimit -n "$(ulimit -H -n)" 2> /dev/null || :

dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-http.XXXXXX")
srv_pid=
bg=
cleanup() {
  for p in $bg $srv_pid; do kill -KILL "$p" 2> /dev/null || :; done
  exec 3<&- 2> /dev/null || :
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

root=$dir/root
mkdir "$root" "$root/sub" "$dir/m"
: > "$root/empty"
printf x > "$root/one"
awk 'BEGIN { for (i = 0; i < 400000; i++) printf "%d GET /item/%d %d\n", i, i * 7919 % 100003, 200 + i % 5 }' > "$root/text"
head -c $((3 << 20)) "$root/text" > "$root/mid"
head -c $((256 << 10)) "$root/text" > "$root/small"
cat "$root/text" "$root/text" "$root/text" | head -c $((24 << 20)) > "$root/large"
head -c $((64 << 20)) /dev/urandom > "$root/big"
head -c $((10 << 20)) /dev/urandom > "$dir/body10m"
: > "$dir/body0"
printf y > "$dir/body1"
cp "$root/one" "$root/sub/inner"
ln -s ../one "$root/sub/up-inside"
ln -s /etc/passwd "$root/passwd"
ln -s / "$root/slash"
ln -s ../.. "$root/sub/escape"
echo secret > "$dir/secret"

# start_server ARGS...: run it on $root, its port into $port and $url.
start_server() {
  rm -f "$dir/out"
  mkfifo "$dir/out"
  "$server" --stats "$@" "$root" > "$dir/out" 2> "$dir/server.err" &
  srv_pid=$!
  exec 3< "$dir/out"
  read -r port <&3 || { echo "http.sh: the server did not start" >&2; exit 1; }
  url=http://127.0.0.1:$port
}

# stop_server: SIGTERM, wait, its --stats into $dir/stats.
stop_server() {
  kill -TERM "$srv_pid"
  cat <&3 > "$dir/stats"
  exec 3<&-
  rc=0
  wait "$srv_pid" || rc=$?
  srv_pid=
  [ "$rc" = 0 ] || bad "the server exited with status $rc"
  [ ! -s "$dir/server.err" ] || { echo "server stderr:"; cat "$dir/server.err"; }
  la=$(stat_of live_allocations)
  if [ "$la" = 0 ] && [ "$(stat_of live_pipelines)" = 0 ]; then
    ok "$1: every pipeline and allocation freed at exit"
  else
    bad "$1: at exit live_allocations '$la', live_pipelines '$(stat_of live_pipelines)'"
  fi
}

stat_of() { tr ' ' '\n' < "$dir/stats" | sed -n "s/^$1=//p"; }
# live KEY: the running server's counter, from GET /stats.
live() { curl -s "$url/stats" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# wait_until KEY OP VALUE: poll /stats until the test holds (at most
# 20000 looks, each a request to the server). Returns 1 when it never did.
wait_until() {
  n=0
  while :; do
    v=$(live "$1")
    [ -n "$v" ] && [ "$v" "$2" "$3" ] && return 0
    n=$((n + 1))
    [ $n -lt 20000 ] || return 1
  done
}
header() { grep -i "^$1:" "$dir/h" | tr -d '\r' | sed 's/^[^:]*: *//'; }

# --- files, body, paths -------------------------------------------------------
start_server --max-body $((16 << 20))
for f in empty one mid large; do
  if curl -s --compressed -D "$dir/h" "$url/files/$f" -o "$dir/got" &&
    cmp -s "$dir/got" "$root/$f"; then
    enc=$(header Content-Encoding)
    if [ "$enc" = gzip ]; then
      ok "files: $f gzipped, byte-identical after curl --compressed"
    else
      bad "files: $f: Content-Encoding '$enc', want gzip"
    fi
  else
    bad "files: $f differs after curl --compressed"
  fi
  if curl -s -D "$dir/h" "$url/files/$f" -o "$dir/got" &&
    cmp -s "$dir/got" "$root/$f"; then
    if [ -z "$(header Content-Encoding)" ] &&
      [ "$(header Content-Length)" = "$(wc -c < "$root/$f" | tr -d ' ')" ]; then
      ok "files: $f plain without Accept-Encoding, with its Content-Length"
    else
      bad "files: $f without Accept-Encoding: Content-Encoding '$(header Content-Encoding)', Content-Length '$(header Content-Length)'"
    fi
  else
    bad "files: $f differs without Accept-Encoding"
  fi
done
curl -s -H 'Accept-Encoding: gzip;q=0, identity' -D "$dir/h" "$url/files/mid" -o "$dir/got"
if cmp -s "$dir/got" "$root/mid" && [ -z "$(header Content-Encoding)" ]; then
  ok "files: gzip;q=0 is refused gzip"
else
  bad "files: gzip;q=0 got Content-Encoding '$(header Content-Encoding)'"
fi
g=$(live gzip_files)
pg=$(live pgzip_files)
if [ "$g" = 3 ] && [ "$pg" = 1 ]; then
  ok "files: the three small files went through gzip, the 24 MiB one through pgzip"
else
  bad "files: gzip_files '$g' pgzip_files '$pg', want 3 and 1"
fi

for b in body0 body1 body10m; do
  if curl -s --data-binary @"$dir/$b" "$url/echo" -o "$dir/got" &&
    cmp -s "$dir/got" "$dir/$b"; then
    ok "body: /echo of $b"
  else
    bad "body: /echo of $b differs"
  fi
  if curl -s --data-binary @"$dir/$b" -D "$dir/h" "$url/gzip" -o "$dir/got.gz" &&
    gzip -dc < "$dir/got.gz" | cmp -s - "$dir/$b" && [ "$(header Content-Encoding)" = gzip ]; then
    ok "body: /gzip of $b"
  else
    bad "body: /gzip of $b does not inflate to it"
  fi
done
rs=$(live request_suspends)
sp=$(live spooled)
if [ -n "$rs" ] && [ "$rs" -gt 0 ] && [ -n "$sp" ] && [ "$sp" -gt 0 ]; then
  ok "body: the writer said stop $rs times (connection suspended); $sp bytes spooled"
else
  bad "body: request_suspends '$rs', spooled '$sp': no backpressure on the body"
fi
head -c $((17 << 20)) /dev/zero > "$dir/body17m"
code=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$dir/body17m" "$url/echo")
if [ "$code" = 413 ]; then ok "body: 17 MiB past --max-body 16 MiB: 413"; else bad "body: 17 MiB: $code, want 413"; fi

check_code() { # WANT PATH [curl options]: the status of GET PATH
  want=$1
  path=$2
  shift 2
  code=$(curl -s -o "$dir/got" -w '%{http_code}' "$@" "$url$path")
  if [ "$code" = "$want" ]; then
    ok "paths: $path: $code"
  else
    bad "paths: $path: $code, want $want"
  fi
  if [ "$want" != 200 ] && grep -q -e secret -e root: "$dir/got" 2> /dev/null; then
    bad "paths: $path leaked a file"
  fi
}
check_code 403 /files/../secret --path-as-is
check_code 403 /files/sub/../../secret --path-as-is
check_code 403 /files/%2e%2e/secret
check_code 403 /files//etc/passwd --path-as-is
check_code 403 /files/passwd
check_code 403 /files/slash/etc/passwd
check_code 403 /files/sub/escape/etc/passwd
check_code 404 /files/nothing
check_code 404 /files/sub
check_code 200 /files/sub/inner
check_code 200 /files/sub/up-inside
stop_server files

# --- slow: a client at 1 MB/s, then it goes away -------------------------------
hwm=65536
buf=16384
R=$(((hwm + buf - 1) / buf * buf))
bound=$((3 * R + 3 * buf))
start_server --hwm $hwm --buf $buf --pgzip-min $((1 << 40))
rss0=$(live rss_kib)
curl -s --compressed --limit-rate 1M "$url/files/big" -o /dev/null &
bg=$!
if wait_until live_response_pauses -ge 3; then
  ok "slow: the ring into the reader filled $(live live_response_pauses) times: the client holds the pipeline"
else
  bad "slow: the ring into the reader never filled"
fi
snap=$(curl -s "$url/stats" | tr '\n' ' ')
peak=$(echo "$snap" | tr ' ' '\n' | sed -n 's/^peak_pool_bytes=//p')
rss=$(echo "$snap" | tr ' ' '\n' | sed -n 's/^rss_kib=//p')
read_=$(echo "$snap" | tr ' ' '\n' | sed -n 's/^live_file_bytes=//p')
if [ -n "$peak" ] && [ "$peak" -gt 0 ] && [ "$peak" -le $bound ]; then
  ok "slow: peak pool bytes $peak <= 3R + 3 buf = $bound (marks $hwm, buffers $buf); $read_ of 64 MiB read so far"
else
  bad "slow: peak pool bytes '$peak' not within $bound"
fi
if [ -n "$rss" ] && [ $((rss - rss0)) -lt 16384 ]; then
  ok "slow: RSS $rss KiB, $((rss - rss0)) KiB above the idle server's"
else
  bad "slow: RSS '$rss' KiB, from '$rss0': grew with the file"
fi
kill "$bg"
wait "$bg" 2> /dev/null || :
bg=
if wait_until live_pipelines -eq 0; then
  ok "slow: the client went away mid-response: no pipeline left"
else
  bad "slow: live_pipelines '$(live live_pipelines)' after the client went away"
fi

# --- upload: a client that goes away mid-upload --------------------------------
curl -s --limit-rate 1M --data-binary @"$root/big" "$url/echo" -o /dev/null &
bg=$!
if wait_until live_body_bytes -ge $((1 << 20)); then
  ok "upload: $(live live_body_bytes) bytes of the body taken"
else
  bad "upload: the body did not arrive"
fi
kill "$bg"
wait "$bg" 2> /dev/null || :
bg=
if wait_until live_pipelines -eq 0; then
  ok "upload: the client went away mid-upload: no pipeline left"
else
  bad "upload: live_pipelines '$(live live_pipelines)' after the client went away"
fi
stop_server slow
failed=$(stat_of failed)
if [ "$failed" = 2 ]; then ok "slow, upload: the server failed exactly those 2 pipelines"; else bad "slow, upload: failed '$failed', want 2"; fi

# --- limits: connections, idle timeout -----------------------------------------
# Two downloads into FIFOs that the test opens and reads one byte of:
# each is then a connection the server serves and cannot finish (the FIFO
# is full). With --max-connections 2 the server takes no third: MHD
# leaves it in the listen backlog until a slot frees. A third client
# connects (the kernel's table shows three connections to the port), the
# first download's client goes, and the third is served; the server never
# had more than two connections open at once (its peak_connections).
start_server --max-connections 2
mkfifo "$dir/d1" "$dir/d2"
curl -s "$url/files/big" -o "$dir/d1" 2> /dev/null &
c1=$!
curl -s "$url/files/big" -o "$dir/d2" 2> /dev/null &
c2=$!
bg="$c1 $c2"
exec 5< "$dir/d1" 6< "$dir/d2"
head -c 1 <&5 > /dev/null
head -c 1 <&6 > /dev/null
curl -s "$url/files/one" -o "$dir/third" &
c3=$!
bg="$c1 $c2 $c3"
# Client ends of established connections to the port (state 01), from the
# kernel's table (IPv4 loopback).
hexport=$(printf '%04X' "$port")
clients_connected() {
  awk -v p=":$hexport" 'substr($3, length($3) - 4) == p && $4 == "01" { n++ }
    END { print n + 0 }' /proc/net/tcp
}
n=0
while [ "$(clients_connected)" -lt 3 ] && [ $n -lt 20000 ]; do n=$((n + 1)); done
connected=$(clients_connected)
exec 5<&- # the first download's client goes: its slot frees
rc=0
wait $c3 || rc=$?
if [ "$connected" = 3 ] && [ $rc = 0 ] && cmp -s "$dir/third" "$root/one"; then
  ok "limits: a third client connected while two downloads were held, and was served once one went"
else
  bad "limits: the third client: $connected connected, curl $rc"
fi
exec 6<&-
wait $c1 $c2 2> /dev/null || :
bg=
if wait_until live_pipelines -eq 0; then
  ok "limits: both downloads' pipelines freed once their clients went"
else
  bad "limits: live_pipelines '$(live live_pipelines)' after the downloads went"
fi
stop_server limits
if [ "$(stat_of peak_connections)" = 2 ]; then
  ok "limits: never more than 2 connections open (--max-connections 2)"
else
  bad "limits: peak_connections '$(stat_of peak_connections)', want 2"
fi

# An upload whose body stops coming (curl reads it from a FIFO the test
# holds open and never writes): --timeout 1 closes it.
start_server --timeout 1
mkfifo "$dir/stall"
curl -s -T "$dir/stall" -X POST "$url/echo" -o /dev/null 2> /dev/null &
bg=$!
exec 4> "$dir/stall"
if wait_until failed -ge 1 && wait_until live_pipelines -eq 0 &&
  [ "$(live failed)" = 1 ]; then
  ok "limits: an upload idle past --timeout 1 was closed, its pipeline freed"
else
  bad "limits: the idle upload: requests '$(live requests)' live_pipelines '$(live live_pipelines)' failed '$(live failed)'"
fi
exec 4>&-
wait "$bg" 2> /dev/null || :
bg=
stop_server timeout

# --- many: 200 concurrent clients ----------------------------------------------
start_server
if curl -s --compressed -Z --parallel-max 200 "$url/files/small?n=[1-200]" \
  -o "$dir/m/#1" 2> /dev/null; then
  n=0
  for f in "$dir"/m/*; do
    cmp -s "$f" "$root/small" && n=$((n + 1))
  done
  if [ $n = 200 ]; then ok "many: 200 concurrent responses byte-identical"; else bad "many: $n of 200 intact"; fi
else
  bad "many: curl failed"
fi
stop_server many
echo "many: the server's peak of live pipelines $(stat_of peak_pipelines), served $(stat_of served)"
[ "$(stat_of served)" = 200 ] || bad "many: served $(stat_of served), want 200"

# --- big: 10 GiB with the RSS of 10 MiB ----------------------------------------
truncate -s $((10 << 20)) "$root/sparse-small"
truncate -s $((gib << 30)) "$root/sparse-big"
for f in small big; do
  start_server
  r=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$url/files/sparse-$f")
  stop_server "big: $f"
  eval "rss_$f=\$(stat_of peak_rss_kib)"
  echo "big: sparse-$f: $r (status, bytes, seconds); peak RSS $(stat_of peak_rss_kib) KiB"
  eval "res_$f=\$r"
done
want_bytes=$((gib << 30))
case $res_big in
"200 $want_bytes "*) ok "big: $gib GiB sent in full" ;;
*) bad "big: $gib GiB: $res_big" ;;
esac
# The same peak: within 2 MiB (the kernel and MHD's buffers vary a
# little), 8 MiB under a sanitizer (its shadow memory varies more).
slack=2048
case ${SL_SANITIZER:-no} in no) ;; *) slack=8192 ;; esac
if [ $((rss_big - rss_small)) -le $slack ]; then
  ok "big: peak RSS $rss_big KiB for $gib GiB, $rss_small KiB for 10 MiB"
else
  bad "big: peak RSS $rss_big KiB for $gib GiB against $rss_small KiB for 10 MiB"
fi
rm -f "$root/sparse-small" "$root/sparse-big"

exit $fail

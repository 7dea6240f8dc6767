#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/http.sh — examples/http-server (libmicrohttpd, each response a
# sluice pipeline: file -> gzip or pgzip -> the client) against nginx from
# Debian serving the same files gzipped (gzip on; gzip_comp_level 6; two
# worker processes), measured in the same run.
#
# nginx is started by this script on 127.0.0.1 at a free port, with its
# own prefix, configuration, logs and temporary directories in a
# temporary directory, and stopped at the end; nothing of the system's
# nginx is used but the binary. The client is curl: N clients are one
# curl with N parallel transfers (-Z), asking for gzip and counting the
# compressed bytes without inflating them, so the client costs little
# next to the servers.
#
#   1 client    one large gzipped response (BENCH_HTTP_MIB, 200 MiB):
#               wall time; sluice compresses it with pgzip on every core,
#               nginx in one worker's event loop, on one. Goal: sluice's
#               wall <= 0.5x nginx's.
#   8, 64       N clients at once, each fetching a file of BENCH_HTTP_MIB
#               / N: total throughput (uncompressed MiB over the wall
#               time). Goal: sluice >= 1.0x nginx.
#
# For each, the servers take turns (who goes first alternates) for
# BENCH_REPS runs, and medians are compared. Beside wall time: the CPU
# seconds each server spent (user + system over all its threads, or all
# nginx processes, from /proc), and the peak RSS of each (the sluice
# server's VmHWM; for nginx the sum of its master's and workers'), each
# server started afresh for each client count. The data is text-like
# (log lines), so that gzip has work to do.
#
# Environment:
#   BENCH_DIR        the build's bench directory (make bench-http sets
#                    it); the server is $BENCH_DIR/../examples/http-server
#   BENCH_HTTP_MIB   MiB per run over all clients (default 200)
#   BENCH_CLIENTS    client counts (default "1 8 64")
#   BENCH_REPS       runs of each server per count (default 3)
#   NGINX            the nginx binary (default: nginx in PATH or
#                    /usr/sbin/nginx)
#
# Exit status: 0 when every run completed, 1 on an error, 77 when nginx,
# curl or the server is missing (the message names the package).
set -u
LC_ALL=C
export LC_ALL

here=$(cd "$(dirname "$0")" && pwd) || exit 1
BENCH_DIR=${BENCH_DIR:-$here}
server=$BENCH_DIR/../examples/http-server
mib=${BENCH_HTTP_MIB:-200}
counts=${BENCH_CLIENTS:-1 8 64}
reps=${BENCH_REPS:-3}

die() {
  echo "http.sh: $*" >&2
  exit 1
}
skip() {
  echo "http.sh: $*: skipped" >&2
  exit 77
}

for v in "$mib" "$reps" $counts; do
  case $v in
  '' | *[!0-9]*) die "sizes, counts and BENCH_REPS must be integers" ;;
  esac
done
[ -x "$server" ] || skip "$server not built (needs libmicrohttpd-dev)"
command -v curl > /dev/null || skip "curl not found (install curl)"
nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$nginx" ] || skip "nginx not found (install nginx-light)"
command -v python3 > /dev/null || skip "python3 not found (install python3)"

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-http.XXXXXX") || exit 1
chmod 755 "$work" # nginx's workers may run as another user
srv_pid=
ng_pid=
cleanup() {
  [ -z "$srv_pid" ] || kill -KILL "$srv_pid" 2> /dev/null || :
  [ -z "$ng_pid" ] || kill -TERM "$ng_pid" 2> /dev/null || :
  [ -z "$ng_pid" ] || wait "$ng_pid" 2> /dev/null || :
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { # median of the numbers in file $1, printed with format $2
  sort -n "$1" | awk -v f="${2:-%.2f}" '{ v[NR] = $1 }
    END {
      if (NR == 0) print "-"
      else printf f "\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}
calc() { awk "BEGIN { x = ($1); print x }"; }
now() { date +%s.%N; }

# CPU seconds (user + system, every thread) of the processes $@ so far.
cpu_of() {
  for p in "$@"; do cat "/proc/$p/stat"; done |
    awk -v t="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); s += $12 + $13 }
      END { printf "%.2f\n", s / t }'
}
# Peak RSS in KiB (VmHWM), summed over the processes $@.
hwm_of() {
  for p in "$@"; do cat "/proc/$p/status"; done |
    awk '/^VmHWM:/ { s += $2 } END { print s + 0 }'
}
# The nginx master and its workers.
nginx_pids() {
  echo "$ng_pid"
  cat /proc/[0-9]*/stat 2> /dev/null |
    awk -v m="$ng_pid" '{ pid = $1; sub(/^.*\) /, ""); if ($2 == m) print pid }'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- the data: log lines, 20 MiB made once and repeated -----------------------
www=$work/www
mkdir "$www"
awk 'BEGIN { srand(1); for (i = 0; i < 800000; i++)
  printf "%d 10.%d.%d.%d GET /item/%d?ref=%x status=%d bytes=%d t=%.3f\n", i,
    i % 7, i % 251, int(rand() * 256), int(rand() * 100003), i * 2654435761 % 4294967296,
    200 + int(rand() * 4) * 100, int(rand() * 90000), rand() * 3 }' |
  head -c $((20 << 20)) > "$work/chunk"
: > "$www/data"
i=0
while [ $((i * 20)) -lt "$mib" ]; do
  cat "$work/chunk" >> "$www/data"
  i=$((i + 1))
done
truncate -s $((mib << 20)) "$www/data"
for n in $counts; do
  head -c $(((mib << 20) / n)) "$www/data" > "$www/data-$n"
done

# --- the servers ------------------------------------------------------------
start_sluice() {
  rm -f "$work/out"
  mkfifo "$work/out"
  "$server" "$www" > "$work/out" 2> "$work/sluice.err" &
  srv_pid=$!
  exec 3< "$work/out"
  read -r sport <&3 || die "the sluice server did not start: $(cat "$work/sluice.err")"
  exec 3<&-
}
stop_sluice() {
  kill -TERM "$srv_pid"
  wait "$srv_pid" 2> /dev/null || :
  srv_pid=
}

start_nginx() {
  ng=$work/nginx
  rm -rf "$ng"
  mkdir -p "$ng/logs" "$ng/tmp"
  nport=$(free_port) || die "no free port"
  user=
  [ "$(id -u)" != 0 ] || user="user root root;"
  cat > "$ng/nginx.conf" << EOF
$user
daemon off;
worker_processes 2;
pid $ng/nginx.pid;
error_log $ng/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  gzip on;
  gzip_comp_level 6;
  gzip_types *;
  gzip_min_length 0;
  client_body_temp_path $ng/tmp/body;
  proxy_temp_path $ng/tmp/proxy;
  fastcgi_temp_path $ng/tmp/fastcgi;
  uwsgi_temp_path $ng/tmp/uwsgi;
  scgi_temp_path $ng/tmp/scgi;
  server {
    listen 127.0.0.1:$nport;
    location /files/ { alias $www/; }
  }
}
EOF
  "$nginx" -p "$ng" -e "$ng/logs/error.log" -c "$ng/nginx.conf" 2> "$ng/start.err" &
  ng_pid=$!
  # Wait until it answers: a bounded retry on curl's exit status.
  i=0
  until curl -s -o /dev/null "http://127.0.0.1:$nport/files/data-1" --max-filesize 1 -r 0-0; do
    i=$((i + 1))
    kill -0 "$ng_pid" 2> /dev/null || die "nginx did not start: $(cat "$ng/start.err" "$ng/logs/error.log")"
    [ $i -lt 500 ] || die "nginx does not answer on port $nport"
  done
}
stop_nginx() {
  kill -TERM "$ng_pid"
  wait "$ng_pid" 2> /dev/null || :
  ng_pid=
}

# fetch PORT N: N parallel gzipped transfers of data-N; prints the wall
# seconds and the compressed bytes.
fetch() {
  port=$1
  n=$2
  i=0
  args=
  while [ $i -lt "$n" ]; do
    i=$((i + 1))
    args="$args -o /dev/null http://127.0.0.1:$port/files/data-$n?c=$i"
  done
  t0=$(now)
  # shellcheck disable=SC2086
  bytes=$(curl -s -Z --parallel-max "$n" -H 'Accept-Encoding: gzip' \
    -w '%{size_download}\n' $args 2> /dev/null | awk '{ s += $1 } END { print s + 0 }') ||
    die "curl failed"
  t1=$(now)
  echo "$(calc "$t1 - $t0") $bytes"
}

# Check once that both servers send the file back intact, gzipped.
start_sluice
start_nginx
for p in "$sport" "$nport"; do
  curl -s --compressed -D "$work/h" "http://127.0.0.1:$p/files/data-1" | cmp -s - "$www/data-1" ||
    die "the server on port $p did not send data-1 intact"
  grep -qi '^content-encoding: gzip' "$work/h" || die "the server on port $p did not gzip"
done
stop_sluice
stop_nginx

echo "bench/http.sh: $mib MiB per run, $(getconf _NPROCESSORS_ONLN) CPUs," \
  "$reps runs each, medians; nginx $("$nginx" -v 2>&1 | sed 's/.*nginx\///')" \
  "(2 workers), curl as the client"
printf '%-8s %-7s %9s %9s %9s %10s %11s\n' clients server "wall s" "CPU s" "MiB/s" "gzip MiB" "peak RSS"
for n in $counts; do
  start_sluice
  start_nginx
  : > "$work/s.wall"
  : > "$work/n.wall"
  : > "$work/s.cpu"
  : > "$work/n.cpu"
  : > "$work/ratio"
  r=0
  while [ $r -lt "$reps" ]; do
    r=$((r + 1))
    order="s n"
    [ $((r % 2)) = 1 ] || order="n s"
    for who in $order; do
      if [ $who = s ]; then
        c0=$(cpu_of "$srv_pid")
        res=$(fetch "$sport" "$n")
        c1=$(cpu_of "$srv_pid")
      else
        pids=$(nginx_pids)
        # shellcheck disable=SC2086
        c0=$(cpu_of $pids)
        res=$(fetch "$nport" "$n")
        # shellcheck disable=SC2086
        c1=$(cpu_of $pids)
      fi
      echo "$res" | awk '{ print $1 }' >> "$work/$who.wall"
      echo "$res" | awk '{ print $2 }' > "$work/$who.bytes"
      calc "$c1 - $c0" >> "$work/$who.cpu"
    done
    calc "$(tail -n 1 "$work/s.wall") / $(tail -n 1 "$work/n.wall")" >> "$work/ratio"
  done
  s_rss=$(hwm_of "$srv_pid")
  # shellcheck disable=SC2046
  n_rss=$(hwm_of $(nginx_pids))
  stop_sluice
  stop_nginx
  total=$(((mib << 20) / n * n))
  for who in s n; do
    w=$(median "$work/$who.wall" %.3f)
    name=sluice
    rss=$s_rss
    [ $who = s ] || { name=nginx; rss=$n_rss; }
    printf '%-8s %-7s %9s %9s %9.1f %10.1f %8d KiB\n' "$n" $name "$w" \
      "$(median "$work/$who.cpu")" "$(calc "$total / 1048576 / $w")" \
      "$(calc "$(cat "$work/$who.bytes") / 1048576")" "$rss"
  done
  ratio=$(median "$work/ratio" %.2f)
  if [ "$n" = 1 ]; then
    echo "  1 client: sluice wall / nginx wall = ${ratio}x (goal <= 0.5x)"
  else
    echo "  $n clients: sluice throughput / nginx = $(calc "sprintf(\"%.2f\", 1 / $ratio)")x (goal >= 1.0x)"
  fi
done

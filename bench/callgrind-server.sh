#!/usr/bin/env bash
# Instructions per request of a whole server (one worker) under load, counted by callgrind:
# the server runs under valgrind, fcgi-loadtest loads it for DURATION seconds, the server is
# stopped with SIGINT and prints requests=N; the program total divided by N is printed. The
# total includes start and shutdown (a few million instructions, under 1 % at these counts).
#
# Usage: bench/callgrind-server.sh PORT -- SERVER_CMD...
# Environment: CONNS=16 DEPTH=16 DURATION=10 PATH_=/hello SERVER_CPU=0 CLIENT_CPU=1
#   OUT=/tmp/cg-server.out
#   LOADTEST=PATH   the fcgi-loadtest binary (default: target/release/fcgi-loadtest)
#   BODY_BYTES=N    a POST body (then PATH_=/echo)
#   CACHE_SIM=1     also simulate the caches (callgrind's first-level data cache model) and
#                   print first-level data cache misses (reads, writes) per request
#   CALLGRIND_ARGS  more callgrind options, space-separated (e.g. "--dump-instr=yes")
# Fails, with the server's log, when the server exits before it listens or answers nothing.
# Example:
#   bench/callgrind-server.sh 9340 -- target/release/fcgi-uring serve --listen 127.0.0.1:9340 --workers 1
# Needs valgrind and a release build.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help || $# -lt 3 ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
port=$1
shift
[[ "${1:-}" == "--" ]] && shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
loadtest="${LOADTEST:-$here/../target/release/fcgi-loadtest}"
out="${OUT:-/tmp/cg-server.out}"
log=$(mktemp)
options=()
[[ -n "${CACHE_SIM:-}" ]] && options=(--cache-sim=yes)
# shellcheck disable=SC2206 # space-separated options, by design
options+=(${CALLGRIND_ARGS:-})
taskset -c "${SERVER_CPU:-0}" valgrind --tool=callgrind "${options[@]}" --callgrind-out-file="$out" \
    "$@" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
body=()
[[ -n "${BODY_BYTES:-}" ]] && body=(--body-bytes "$BODY_BYTES")
taskset -c "${CLIENT_CPU:-1}" "$loadtest" run --addr "127.0.0.1:$port" --conns "${CONNS:-16}" \
    --depth "${DEPTH:-16}" --duration "${DURATION:-10}" --warmup 0 "${body[@]}" \
    "${PATH_:-/hello}" >/dev/null
kill -INT "$server"
wait "$server" || true
reqs=$(grep -o 'requests=[0-9]*' "$log" | tail -1 | cut -d= -f2)
[[ -n "$reqs" && "$reqs" -gt 0 ]] || { cat "$log" >&2; exit 1; }
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "requests=$reqs instructions=$total per_request=$((total / reqs))"
if [[ -n "${CACHE_SIM:-}" ]]; then
    callgrind_annotate --show=D1mr,D1mw "$out" 2>/dev/null | awk -v n="$reqs" \
        '/PROGRAM TOTALS/{gsub(",","",$1); gsub(",","",$3); printf "d1_read_misses_per_request=%.1f d1_write_misses_per_request=%.1f\n", $1/n, $3/n}'
fi

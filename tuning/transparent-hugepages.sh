#!/usr/bin/env bash
# Transparent huge pages: `madvise` (Debian's default) against `always` and `never`, same binary,
# same run. mimalloc's arena asks for huge pages itself (MADV_HUGEPAGE), so `madvise` and
# `always` differ only outside the heap; `never` takes them from the heap too.
#
# Usage: tuning/transparent-hugepages.sh   (as root: it writes
#            /sys/kernel/mm/transparent_hugepage/enabled, and puts the original value back on exit)
#        tuning/transparent-hugepages.sh --help
# Environment: DURATION=5 ROUNDS=3 SERVER_CPU=0 CLIENT_CPU=1 PORT=9570 IDLE=10000
#   BIN=DIR   where fcgi-uring and fcgi-loadtest are (default: target/release; build them with
#             cargo build --release --workspace)
#
# Per round and mode (interleaved): a fresh `fcgi-uring serve --workers 1` pinned to SERVER_CPU,
# loaded by fcgi-loadtest pinned to CLIENT_CPU with GET /hello at 16 connections x 16
# multiplexed requests, then at 64 keep-alive connections; the server's CPU per request from
# /proc (fcgi-loadtest --server-pid). Then, once per mode, what IDLE idle keep-alive connections
# add to a fresh server's RSS (bench/idle-rss.py) and the server's AnonHugePages.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${BIN:-$here/../target/release}"
duration=${DURATION:-5} rounds=${ROUNDS:-3} idle=${IDLE:-10000}
scpu=${SERVER_CPU:-0} ccpu=${CLIENT_CPU:-1} port=${PORT:-9570}
knob=/sys/kernel/mm/transparent_hugepage/enabled
[[ -w $knob ]] || { echo "transparent-hugepages.sh: $knob is not writable (run as root)" >&2; exit 2; }
saved=$(sed -E 's/.*\[([a-z]+)\].*/\1/' "$knob")
server=
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
    echo "$saved" >"$knob"
}
trap cleanup EXIT

start() {
    echo "$1" >"$knob"
    taskset -c "$scpu" "$bin/fcgi-uring" serve --listen "127.0.0.1:$port" --workers 1 \
        >/dev/null 2>&1 &
    server=$!
    sleep 0.7
}
stop() {
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
}
anon_huge_kib() {
    awk '/^AnonHugePages:/{s+=$2} END{print s+0}' "/proc/$1/smaps_rollup"
}

# load MODE LABEL CONNS DEPTH
load() {
    start "$1"
    local out
    out=$(taskset -c "$ccpu" "$bin/fcgi-loadtest" run --addr "127.0.0.1:$port" --conns "$3" \
        --depth "$4" --duration "$duration" --warmup 1 --cpus "$ccpu" --server-pid "$server" \
        /hello --json 2>/dev/null)
    local huge
    huge=$(anon_huge_kib "$server")
    stop
    python3 - "$1" "$2" "$huge" "$out" <<'PY'
import json, sys
mode, label, huge, out = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
print(f"{mode:<8} {label:<8} {out['rps']:>9.0f} {out['p50_us']:>7} {out['p99_us']:>7}"
      f" {out['server_cpu_us_per_req']:>10.3f} {huge:>9}"
      f"{'  client saturated' if out['client_saturated'] else ''}")
PY
}

echo "server CPU $scpu, client CPU $ccpu, ${duration} s runs, $rounds rounds, THP was $saved"
printf '%-8s %-8s %9s %7s %7s %10s %9s\n' thp load rps p50_us p99_us cpu_us/req huge_kib
for _ in $(seq "$rounds"); do
    for mode in madvise always never; do
        load "$mode" 16x16 16 16
        load "$mode" c64 64 1
    done
done
echo
echo "idle connections ($idle):"
for mode in madvise always never; do
    start "$mode"
    ulimit -n $((idle + 1000)) 2>/dev/null || true
    printf '%-8s %s, AnonHugePages %s KiB\n' "$mode" \
        "$(python3 "$here/../bench/idle-rss.py" "$server" "127.0.0.1:$port" "$idle" | tail -1)" \
        "$(anon_huge_kib "$server")"
    stop
done

#!/usr/bin/env bash
# SCHED_BATCH and the yield after a wake next to a CPU-bound neighbour: what each costs when
# the worker's CPU is shared with a process that does not block (their gain, with a proxy on
# that CPU, is measured by bench/behind-nginx.py --sched normal,batch and its --variant with
# --yield-after-wake false).
#
# Usage: tuning/sched-batch.sh
#        tuning/sched-batch.sh --help
# Environment: DURATION=4 ROUNDS=2 SERVER_CPU=0 CLIENT_CPU=1 PORT=9580 (and PORT+1 for the
#   server's admin listener) IO=uring|epoll (the server's --io; default: its own choice)
#   BIN=DIR   where fcgi-uring and fcgi-loadtest are (default: target/release; build them with
#             cargo build --release --workspace)
#
# Per round and case (interleaved): a busy loop (`sh -c 'while :; do :; done'`) pinned to
# SERVER_CPU, a fresh `fcgi-uring serve --workers 1` pinned there too, started as is (normal:
# SCHED_OTHER, ring.yield_after_wake on), with --yield-after-wake false (noyield), or under
# `chrt --batch 0` (batch), and fcgi-loadtest pinned to CLIENT_CPU with GET /hello on one
# connection, one request at a time. Prints each run's rate and latency, and the yields the
# server found costly (fcgi_uring_wake_yields_total{outcome="costly"}: each one waited for the
# busy loop, then paused the yields).
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${BIN:-$here/../target/release}"
duration=${DURATION:-4} rounds=${ROUNDS:-2}
scpu=${SERVER_CPU:-0} ccpu=${CLIENT_CPU:-1} port=${PORT:-9580} admin=$((${PORT:-9580} + 1))
io=()
[[ -n "${IO:-}" ]] && io=(--io "$IO")
server= hog=
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
    [[ -n "$hog" ]] && kill "$hog" 2>/dev/null || true
}
trap cleanup EXIT

listening() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "sched-batch.sh: the server did not listen on port $port" >&2
    exit 1
}

# run CASE
run() {
    local prefix=() args=()
    [[ $1 == batch ]] && prefix=(chrt --batch 0)
    [[ $1 == noyield ]] && args=(--yield-after-wake false)
    taskset -c "$scpu" sh -c 'while :; do :; done' &
    hog=$!
    taskset -c "$scpu" "${prefix[@]}" "$bin/fcgi-uring" serve --listen "127.0.0.1:$port" \
        --workers 1 --admin-listen "127.0.0.1:$admin" "${io[@]}" "${args[@]}" >/dev/null 2>&1 &
    server=$!
    listening
    local costly
    costly=$(taskset -c "$ccpu" "$bin/fcgi-loadtest" run --addr "127.0.0.1:$port" --conns 1 \
        --duration "$duration" --warmup 1 /hello --json 2>/dev/null | python3 -c "
import json, re, sys, urllib.request
r = json.load(sys.stdin)
metrics = urllib.request.urlopen('http://127.0.0.1:$admin/metrics').read().decode()
costly = sum(float(v) for v in re.findall(
    r'^fcgi_uring_wake_yields_total\{[^}]*outcome=\"costly\"[^}]*\} (\S+)$', metrics, re.M))
print(f\"| $1 | {r['rps']:,.0f} | {r['p50_us']:,} us | {r['p99_us']:,} us | {costly:.0f} |\")")
    echo "$costly"
    kill "$server" "$hog"
    wait "$server" "$hog" 2>/dev/null || true
    server= hog=
}

echo "| case | requests/s | p50 | p99 | costly yields |"
echo "|---|---|---|---|---|"
for _ in $(seq "$rounds"); do
    run normal
    run noyield
    run batch
done

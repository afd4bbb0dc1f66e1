#!/usr/bin/env bash
# SCHED_BATCH next to a CPU-bound neighbour: what the policy costs when the worker's CPU is
# shared with a process that does not block (its gain, with a proxy on that CPU, is measured
# by bench/behind-nginx.py --sched normal,batch).
#
# Usage: tuning/sched-batch.sh
#        tuning/sched-batch.sh --help
# Environment: DURATION=4 ROUNDS=2 SERVER_CPU=0 CLIENT_CPU=1 PORT=9580
#   BIN=DIR   where fcgi-uring and fcgi-loadtest are (default: target/release; build them with
#             cargo build --release --workspace)
#
# Per round and policy (interleaved): a busy loop (`sh -c 'while :; do :; done'`) pinned to
# SERVER_CPU, a fresh `fcgi-uring serve --workers 1` pinned there too, started as is (normal,
# SCHED_OTHER) or under `chrt --batch 0` (batch), and fcgi-loadtest pinned to CLIENT_CPU with
# GET /hello on one connection, one request at a time. Prints each run's rate and latency.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${BIN:-$here/../target/release}"
duration=${DURATION:-4} rounds=${ROUNDS:-2}
scpu=${SERVER_CPU:-0} ccpu=${CLIENT_CPU:-1} port=${PORT:-9580}
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

# run POLICY
run() {
    local prefix=()
    [[ $1 == batch ]] && prefix=(chrt --batch 0)
    taskset -c "$scpu" sh -c 'while :; do :; done' &
    hog=$!
    taskset -c "$scpu" "${prefix[@]}" "$bin/fcgi-uring" serve --listen "127.0.0.1:$port" \
        --workers 1 --admin-listen none >/dev/null 2>&1 &
    server=$!
    listening
    taskset -c "$ccpu" "$bin/fcgi-loadtest" run --addr "127.0.0.1:$port" --conns 1 \
        --duration "$duration" --warmup 1 /hello --json 2>/dev/null |
        python3 -c "import json, sys
r = json.load(sys.stdin)
print(f\"| $1 | {r['rps']:,.0f} | {r['p50_us']:,} us | {r['p99_us']:,} us |\")"
    kill "$server" "$hog"
    wait "$server" "$hog" 2>/dev/null || true
    server= hog=
}

echo "| policy | requests/s | p50 | p99 |"
echo "|---|---|---|---|"
for _ in $(seq "$rounds"); do
    run normal
    run batch
done

#!/usr/bin/env bash
# The listen backlog and net.core.somaxconn under a burst of new connections.
#
# Usage: tuning/listen-backlog.sh     (as root for the somaxconn row; the others need no root)
#        tuning/listen-backlog.sh --help
# Environment: CONNS=512 DURATION=3 ROUNDS=2 SERVER_CPU=0 CLIENT_CPU=1 PORT=9560
#   BIN=DIR   where fcgi-uring and fcgi-loadtest are (default: target/release; build them with
#             cargo build --release --workspace)
#
# Each run starts `fcgi-uring serve --workers 1` pinned to SERVER_CPU with a given --backlog and
# loads it with CONNS connections at a time, a new connection per request (KEEP_CONN=0, what Caddy
# and lighttpd do), from fcgi-loadtest pinned to CLIENT_CPU. It prints throughput, p50/p99/max
# and the kernel's counters over the run (nstat): ListenOverflows (a completed handshake found the
# accept queue full and was dropped), SyncookiesSent (the SYN queue was full too) and
# TCPSynRetrans (the client's SYNs retransmitted, 1 s then 3 s later). Settings are interleaved
# over ROUNDS rounds. The last row lowers net.core.somaxconn to 16 with --backlog 4096: the kernel
# clamps the backlog to somaxconn silently. somaxconn is restored on exit.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${BIN:-$here/../target/release}"
conns=${CONNS:-512} duration=${DURATION:-3} rounds=${ROUNDS:-2}
scpu=${SERVER_CPU:-0} ccpu=${CLIENT_CPU:-1} port=${PORT:-9560}
saved_somaxconn=$(cat /proc/sys/net/core/somaxconn)
server=
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
    if [[ -w /proc/sys/net/core/somaxconn ]]; then
        echo "$saved_somaxconn" >/proc/sys/net/core/somaxconn
    fi
}
trap cleanup EXIT

# run LABEL BACKLOG SOMAXCONN
run() {
    local label=$1 backlog=$2 somaxconn=$3
    if [[ "$somaxconn" != "$saved_somaxconn" ]]; then
        [[ -w /proc/sys/net/core/somaxconn ]] || { echo "$label: skipped (needs root)"; return; }
        echo "$somaxconn" >/proc/sys/net/core/somaxconn
    fi
    taskset -c "$scpu" "$bin/fcgi-uring" serve --listen "127.0.0.1:$port" --workers 1 \
        --backlog "$backlog" >/dev/null 2>&1 &
    server=$!
    sleep 0.5
    echo "$saved_somaxconn" >/proc/sys/net/core/somaxconn 2>/dev/null || true
    nstat -n >/dev/null
    local out
    out=$(taskset -c "$ccpu" "$bin/fcgi-loadtest" run --addr "127.0.0.1:$port" --conns "$conns" \
        --keep-conn false --duration "$duration" --warmup 0 --cpus "$ccpu" /hello --json 2>/dev/null)
    local counters
    counters=$(nstat 2>/dev/null || true)
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
    python3 - "$label" "$out" "$counters" <<'PY'
import json, sys
label, out, counters = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
c = {}
for line in counters.splitlines():
    parts = line.split()
    if len(parts) >= 2 and parts[1].isdigit():
        c[parts[0]] = int(parts[1])
get = lambda k: c.get(k, 0)
print(f"{label:<34} {out['rps']:>8.0f} {out['p50_us']:>8} {out['p99_us']:>9} {out['max_us']:>9}"
      f" {get('TcpExtListenOverflows'):>9} {get('TcpExtSyncookiesSent'):>8}"
      f" {get('TcpExtTCPSynRetrans'):>8}{'  client saturated' if out['client_saturated'] else ''}")
PY
}

echo "fcgi-uring serve --workers 1 on CPU $scpu; fcgi-loadtest on CPU $ccpu; $conns connections" \
     "at a time, a new connection per request, ${duration} s per run; somaxconn $saved_somaxconn"
printf '%-34s %8s %8s %9s %9s %9s %8s %8s\n' setting rps p50_us p99_us max_us overflows cookies \
    synretx
for _ in $(seq "$rounds"); do
    run "backlog 16" 16 "$saved_somaxconn"
    run "backlog 128" 128 "$saved_somaxconn"
    run "backlog 4096 (default)" 4096 "$saved_somaxconn"
    run "backlog 4096, somaxconn 16" 4096 16
done

#!/usr/bin/env bash
# Soak: 10,000 idle keep-alive connections plus sustained load, RSS sampled every second.
#
# Usage: bench/soak.sh            (SOAK_SECONDS=600 by default; the test suite runs 30)
#        bench/soak.sh --help
# Environment:
#   SOAK_SECONDS   duration of the sustained load (600)
#   SOAK_IDLE      idle connections held (10000)
#   SOAK_CONNS     load connections of fcgi-loadtest (64)
#   SOAK_RSS_MIB   allowed growth of RSS from start (after the idle connections are open) to end (64)
#   SOAK_PORT      loopback port (19400)
#   FCGI_URING, FCGI_LOADTEST   binaries (default: target/release, built if missing)
# Exits non-zero on any load error, any idle connection lost, or RSS growth past the bound.
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
seconds="${SOAK_SECONDS:-600}"
idle="${SOAK_IDLE:-10000}"
conns="${SOAK_CONNS:-64}"
rss_bound_mib="${SOAK_RSS_MIB:-64}"
port="${SOAK_PORT:-19400}"
addr="127.0.0.1:$port"
server_bin="${FCGI_URING:-$root/target/release/fcgi-uring}"
load_bin="${FCGI_LOADTEST:-$root/target/release/fcgi-loadtest}"
work="$(mktemp -d)"

if [[ ! -x "$server_bin" || ! -x "$load_bin" ]]; then
    (cd "$root" && nice -n 10 cargo build --release -p fcgi-uring-cli -p fcgi-loadtest)
fi

# Idle connections need one fd each on both sides.
ulimit -n "$(( idle + 4096 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < idle + 200 )); then
    echo "soak: RLIMIT_NOFILE $(ulimit -n) is too low for $idle connections" >&2
    exit 2
fi

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "soak: port $port is already in use" >&2
    exit 2
fi

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Idle connections must outlive the run: the idle timeout is raised above it.
"$server_bin" serve --listen "$addr" --workers 1 --idle-timeout "$(( seconds * 2 + 600 ))" \
    >"$work/server.out" 2>"$work/server.err" &
server=$!
pids+=("$server")
for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$server/status"; }

rss_boot=$(rss)
# Hold the idle connections (each serves one request first) until told to stop; report lost ones.
python3 - "$addr" "$idle" "$work/idle.ready" "$work/idle.stop" >"$work/idle.out" 2>&1 <<'EOF' &
import select, socket, struct, sys, time, os
host, port = sys.argv[1].rsplit(":", 1); n = int(sys.argv[2]); ready, stop = sys.argv[3], sys.argv[4]
def rec(t, i, c): return struct.pack(">BBHHBB", 1, t, i, len(c), 0, 0) + c
def pair(k, v): return bytes([len(k), len(v)]) + k + v
params = b"".join(pair(k, v) for k, v in [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/hello"),
    (b"SCRIPT_NAME", b"/hello"), (b"QUERY_STRING", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1")])
req = rec(1, 1, struct.pack(">HB5x", 1, 1)) + rec(4, 1, params) + rec(4, 1, b"") + rec(5, 1, b"")
socks = []
for i in range(n):
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(req)
    buf = b""
    while True:
        buf += s.recv(65536)
        if not buf: raise SystemExit("closed during the first request")
        # END_REQUEST is the last record: 8 + 8 bytes.
        if len(buf) >= 16 and buf[-16] == 1 and buf[-15] == 3: break
    s.setblocking(False)
    socks.append(s)
open(ready, "w").close()
lost = 0
while not os.path.exists(stop):
    r, _, _ = select.select(socks[:1000], [], [], 1.0) if socks else ([], [], [])
    for s in r:
        try:
            if s.recv(1) == b"": lost += 1; socks.remove(s)
        except BlockingIOError: pass
        except OSError: lost += 1; socks.remove(s)
# A final check on all of them.
for s in list(socks):
    try:
        if s.recv(1) == b"": lost += 1
    except BlockingIOError: pass
    except OSError: lost += 1
print(f"idle {n} lost {lost}")
EOF
idle_pid=$!
pids+=("$idle_pid")
while [[ ! -e "$work/idle.ready" ]]; do
    kill -0 "$idle_pid" 2>/dev/null || { cat "$work/idle.out" >&2; exit 1; }
    sleep 0.2
done
rss_start=$(rss)

# RSS sampler.
( while kill -0 "$server" 2>/dev/null; do rss >>"$work/rss"; sleep 1; done ) &
pids+=($!)

"$load_bin" run --protocol fastcgi --addr "$addr" --conns "$conns" --duration "$seconds" \
    --warmup 1 --expect-body "Hello, World!" --json /hello >"$work/load.json" 2>"$work/load.err" || true
sleep 1
rss_end=$(rss)
touch "$work/idle.stop"
wait "$idle_pid" || true
kill -TERM "$server"
wait "$server" || true

rss_peak=$(sort -n "$work/rss" | tail -1)
errors=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["errors"])' "$work/load.json" 2>/dev/null || echo "unknown")
rps=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["rps"]))' "$work/load.json" 2>/dev/null || echo "unknown")
requests=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$work/load.json" 2>/dev/null || echo "unknown")
lost=$(awk '/^idle/ {print $4}' "$work/idle.out")
growth_kib=$(( rss_end - rss_start ))

echo "soak: ${seconds}s  idle_conns $idle (lost ${lost:-?})  load_conns $conns"
echo "soak: requests $requests  rps $rps  errors $errors"
echo "soak: rss_kib boot $rss_boot  start $rss_start  peak $rss_peak  end $rss_end  growth $growth_kib (bound $(( rss_bound_mib * 1024 )))"
grep -h "shutting down" "$work/server.err" | sed 's/^/soak: /' || true

status=0
[[ "$errors" == "0" ]] || { echo "soak: FAIL: load errors ($errors)"; cat "$work/load.err" >&2; status=1; }
[[ "${lost:-x}" == "0" ]] || { echo "soak: FAIL: idle connections lost ($lost)"; cat "$work/idle.out" >&2; status=1; }
(( growth_kib <= rss_bound_mib * 1024 )) || { echo "soak: FAIL: RSS grew by $growth_kib KiB"; status=1; }
exit $status

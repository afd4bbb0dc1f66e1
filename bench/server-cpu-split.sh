#!/usr/bin/env bash
# Server user and system CPU per request under one fcgi-loadtest run.
#
# Usage: bench/server-cpu-split.sh PROTOCOL ADDR -- SERVER_CMD...
#        bench/server-cpu-split.sh --help
#   PROTOCOL   fastcgi | http1 | h2 (what fcgi-loadtest speaks to the server)
#   ADDR       HOST:PORT the server listens on (given in SERVER_CMD too)
# Environment: CONNS=64 DEPTH=1 DURATION=6 SERVER_CPU=0 CLIENT_CPU=1 PATH_=/hello
#   LOADTEST=PATH       the fcgi-loadtest binary (default: target/release/fcgi-loadtest)
# The server runs pinned to SERVER_CPU, the client to CLIENT_CPU; /proc/PID/stat utime and
# stime are read at the run's edges (warmup 0, so the window is the whole run).
# Example:
#   CONNS=16 DEPTH=16 bench/server-cpu-split.sh fastcgi 127.0.0.1:9330 -- \
#       target/release/fcgi-uring serve --listen 127.0.0.1:9330 --workers 1
# Needs a release build (cargo build --release --workspace) and python3.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
if [[ $# -lt 3 ]]; then
    echo "usage: bench/server-cpu-split.sh PROTOCOL ADDR -- SERVER_CMD... (--help for more)" >&2
    exit 2
fi
proto=$1 addr=$2
shift 2
[[ "${1:-}" == "--" ]] && shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
loadtest="${LOADTEST:-$here/../target/release/fcgi-loadtest}"
taskset -c "${SERVER_CPU:-0}" "$@" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null && wait $server 2>/dev/null || true' EXIT
sleep 1.5
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$server/stat")
out=$(taskset -c "${CLIENT_CPU:-1}" "$loadtest" run --protocol "$proto" --addr "$addr" \
    --conns "${CONNS:-64}" --depth "${DEPTH:-1}" --duration "${DURATION:-6}" --warmup 0 \
    --cpus "${CLIENT_CPU:-1}" "${PATH_:-/hello}")
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$server/stat")
reqs=$(awk '/^  requests/{print $2}' <<<"$out")
rps=$(awk '/^  rps/{print $2}' <<<"$out")
hz=$(getconf CLK_TCK)
python3 - "$reqs" "$rps" "$u0" "$u1" "$s0" "$s1" "$hz" <<'PY'
import sys
reqs, rps = int(sys.argv[1]), float(sys.argv[2])
u0, u1, s0, s1, hz = map(int, sys.argv[3:8])
us = 1e6 / hz
user, sys_ = (u1 - u0) * us / reqs, (s1 - s0) * us / reqs
print(f"rps {rps:.0f}  user {user:.2f} us/req  system {sys_:.2f} us/req  total {user + sys_:.2f} us/req")
PY

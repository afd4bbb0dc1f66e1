#!/usr/bin/env bash
# Cross-check fcgi-loadtest against independent clients on the same server and load:
#   HTTP/1.1: fcgi-loadtest --protocol http1 vs wrk, both closed loop, C connections;
#   HTTP/2:   fcgi-loadtest --protocol h2 vs h2load, both closed loop, N connections x S streams.
# The server is `fcgi-uring serve --protocol http1|h2c` pinned to SERVER_CPU, the clients to
# CLIENT_CPU. Rounds alternate the two clients; the table shows medians and the ratio
# fcgi-loadtest / other (throughput and p50 latency).
#
# Usage: bench/crosscheck-clients.sh
#        bench/crosscheck-clients.sh --help
# Environment: DURATION=5 ROUNDS=3 CONNS=64 H2_CONNS=16 H2_STREAMS=4 SERVER_CPU=0 CLIENT_CPU=1
# Needs: wrk, h2load (apt-get install -y wrk nghttp2-client), a release build of the workspace.
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
H2_CONNS="${H2_CONNS:-16}"
H2_STREAMS="${H2_STREAMS:-4}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
OUT="$(mktemp -d)"

for tool in wrk h2load; do
    command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install -y wrk nghttp2-client)" >&2; exit 1; }
done
(cd "$root" && cargo build --release -q --workspace --bins)
server_bin="$root/target/release/fcgi-uring"
loadtest="$root/target/release/fcgi-loadtest"

# shellcheck source=server-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"
trap stop_server EXIT

start_server() { # PROTOCOL PORT
    if ss -ltnH "sport = :$2" 2>/dev/null | grep -q .; then
        echo "port $2 is already in use: stop the process listening on it first" >&2
        exit 1
    fi
    taskset -c "$SERVER_CPU" "$server_bin" serve --protocol "$1" --listen "127.0.0.1:$2" \
        --workers 1 --shutdown-timeout 1 >"$OUT/server-$1.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server did not start: $(cat "$OUT/server-$1.log")" >&2
    exit 1
}

results="$OUT/results.tsv"
: >"$results"
loadtest_case() { # NAME ARGS...
    local name="$1"; shift
    taskset -c "$CLIENT_CPU" "$loadtest" run --cpus "$CLIENT_CPU" --threads 1 --duration "$DURATION" \
        --warmup 1 --expect-body 'Hello, World!' --json "$@" /hello >"$OUT/$name.$round.json"
    python3 - "$OUT/$name.$round.json" "$name" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}\t{r['rps']:.0f}\t{r['p50_us']}\t{r['errors']}\t{r['client_cpu_pct']:.0f}")
PY
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for round in $(seq "$ROUNDS"); do
    echo "== round $round: HTTP/1.1" >&2
    port=$(free_port)
    start_server http1 "$port"
    # wrk's -d includes no warmup: give it the same 1 s of load first.
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$port/hello" >/dev/null
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:$port/hello" >"$OUT/wrk.$round.txt"
    python3 - "$OUT/wrk.$round.txt" >>"$results" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", t, re.M)
p50 = float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
err = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses|errors: connect \d+, read \d+, write \d+, timeout)\s*:?\s*(\d+)", t))
print(f"wrk\t{rps:.0f}\t{p50:.0f}\t{err}\t-")
PY
    loadtest_case loadtest-http1 --protocol http1 --addr "127.0.0.1:$port" --conns "$CONNS"
    stop_server

    echo "== round $round: HTTP/2" >&2
    port=$(free_port)
    start_server h2c "$port"
    taskset -c "$CLIENT_CPU" h2load -c "$H2_CONNS" -m "$H2_STREAMS" -D 1 \
        "http://127.0.0.1:$port/hello" >/dev/null
    taskset -c "$CLIENT_CPU" h2load -c "$H2_CONNS" -m "$H2_STREAMS" -D "$DURATION" \
        "http://127.0.0.1:$port/hello" >"$OUT/h2load.$round.txt"
    python3 - "$OUT/h2load.$round.txt" >>"$results" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", t).group(1))
failed = int(re.search(r"(\d+) failed", t).group(1))
# h2load prints min/max/mean/sd of request time, no percentiles: mean in the p50 column.
m = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", t)
mean = float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
print(f"h2load\t{rps:.0f}\t{mean:.0f}\t{failed}\t-")
PY
    loadtest_case loadtest-h2 --protocol h2 --addr "127.0.0.1:$port" --conns "$H2_CONNS" \
        --depth "$H2_STREAMS"
    stop_server
done

python3 - "$results" "$ROUNDS" "$DURATION" "$CONNS" "$H2_CONNS" "$H2_STREAMS" <<'PY'
import sys
path, rounds, duration, conns, h2c, h2s = sys.argv[1:]
rows = {}
for line in open(path):
    name, rps, p50, err, cpu = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((float(rps), float(p50), int(err), cpu))
def med(xs):
    xs = sorted(xs); return xs[len(xs) // 2]
print(f"{'client':<16}{'rps (median)':>14}{'p50 us':>9}{'errors':>8}  rounds: rps")
m = {}
for name in ("wrk", "loadtest-http1", "h2load", "loadtest-h2"):
    rs = rows.get(name, [])
    if not rs:
        continue
    m[name] = (med([r[0] for r in rs]), med([r[1] for r in rs]))
    print(f"{name:<16}{m[name][0]:>14.0f}{m[name][1]:>9.0f}{sum(r[2] for r in rs):>8}  "
          + " ".join(f"{r[0]:.0f}" for r in rs))
print()
for a, b in (("loadtest-http1", "wrk"), ("loadtest-h2", "h2load")):
    if a in m and b in m:
        # The two runs of a round are back to back: their ratio is steadier than a ratio of
        # medians when the machine's load drifts between rounds.
        per_round = [x[0] / y[0] for x, y in zip(rows[a], rows[b])]
        ratio = med(per_round)
        flag = "within 10%" if abs(ratio - 1) <= 0.10 else "DIFFERS by more than 10%"
        print(f"{a} / {b}: throughput, median of per-round ratios {ratio:.3f} ({flag}); "
              f"rounds: {' '.join(f'{r:.2f}' for r in per_round)}; ratio of medians "
              f"{m[a][0] / m[b][0]:.3f}")
print(f"\n{rounds} rounds x {duration} s; HTTP/1.1 {conns} connections; HTTP/2 {h2c} connections x "
      f"{h2s} streams; closed loop; server fcgi-uring (1 worker) and clients pinned apart. "
      "h2load reports no percentiles: its p50 column is the mean.")
PY

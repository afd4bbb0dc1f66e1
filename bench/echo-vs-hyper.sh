#!/usr/bin/env bash
# POST /echo with a 64 KiB body at 16 connections: fcgi-uring over FastCGI on both IO backends
# (loaded by fcgi-loadtest) against hyper serving the same demo app over HTTP/1.1
# (`fcgi-uring serve --protocol http1`), loaded by wrk with the same body and by fcgi-loadtest
# (`--protocol http1`, the same client engine as the FastCGI cases), and the echo floor
# (`fcgi-floor --epoll --echo`: no application, the body copied only by the kernel, in and
# out) under the same fcgi-loadtest command: the least CPU any server spends echoing the body
# here. The client's CPU is shown where it is known: at 90 % or more of its core the rate
# measures the client, and a server whose client is busy pays no wakeups of it.
#
# Usage: bench/echo-vs-hyper.sh [PATH/TO/fcgi-uring]
#   One worker pinned with `taskset -c 0`, the client (one thread) with `taskset -c 1`. Each case
#   runs DURATION seconds (after 1 s of warmup for fcgi-loadtest; wrk has none, so a 1 s wrk run
#   warms it first); server CPU per request is read from /proc/PID/stat around the measured
#   window. Rounds are interleaved; the table shows medians.
# Environment: DURATION=6, ROUNDS=3, BODY=65536, CONNS=16.
# Needs: wrk (apt-get install -y wrk). Builds the release binaries first (without a path, the
# server too).
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fcgi_uring="${1:-}"
packages=(-p fcgi-loadtest)
if [[ -z "$fcgi_uring" ]]; then
    fcgi_uring="$root/target/release/fcgi-uring"
    packages+=(-p fcgi-uring-cli)
fi
# Built from the tree as it is: a stale target/release would measure other code.
(cd "$root" && cargo build --release -q "${packages[@]}")
loadtest="$root/target/release/fcgi-loadtest"
DURATION="${DURATION:-6}"
ROUNDS="${ROUNDS:-3}"
BODY="${BODY:-65536}"
CONNS="${CONNS:-16}"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
out="$(mktemp -d)"
# shellcheck source=server-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"
trap 'stop_server; rm -rf "$out"' EXIT

cat >"$out/post.lua" <<LUA
wrk.method = "POST"
wrk.body = string.rep("x", $BODY)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

# serve PORT ARGS...: starts one pinned worker (`fcgi-uring serve ARGS`), waits until it accepts.
serve() {
    local port=$1
    shift
    taskset -c 0 "$fcgi_uring" serve --listen "127.0.0.1:$port" --workers 1 \
        --admin-listen none "$@" >"$out/server.log" 2>&1 &
    server_pid=$!
    wait_accepting "$port"
}

# serve_floor PORT: starts the echo floor pinned like the server, waits until it accepts.
serve_floor() {
    taskset -c 0 "$root/target/release/fcgi-floor" --epoll --echo "127.0.0.1:$1" \
        >"$out/server.log" 2>&1 &
    server_pid=$!
    wait_accepting "$1"
}

wait_accepting() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start: $(tail -3 "$out/server.log")" >&2
    exit 1
}

# load PORT PROTOCOL JSON: fcgi-loadtest's load, every answer checked against the body sent.
load() {
    taskset -c 1 "$loadtest" run --protocol "$2" --addr "127.0.0.1:$1" --conns "$CONNS" --cpus 1 \
        --threads 1 --duration "$DURATION" --warmup 1 --body-bytes "$BODY" \
        --expect-body "$(head -c "$BODY" /dev/zero | tr '\0' x)" \
        --server-pid "$server_pid" --json /echo >"$3"
}

ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }

for round in $(seq "$ROUNDS"); do
    port=$((19200 + round * 5))
    # NAME PROTOCOL [SERVE ARGS]: the cases fcgi-loadtest loads (the floor has no serve args).
    for case in "uring fastcgi --io uring" "epoll fastcgi --io epoll" "floor fastcgi" \
        "hyper-lt http1 --protocol http1"; do
        read -r name protocol args <<<"$case"
        if [[ "$name" == floor ]]; then
            serve_floor "$port"
        else
            # shellcheck disable=SC2086 # the serve args are words
            serve "$port" $args
        fi
        load "$port" "$protocol" "$out/$name.$round.json"
        stop_server
        port=$((port + 1))
    done

    serve "$port" --protocol http1
    taskset -c 1 wrk -t1 -c"$CONNS" -d1s -s "$out/post.lua" "http://127.0.0.1:$port/echo" >/dev/null
    before=$(ticks)
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$out/post.lua" \
        "http://127.0.0.1:$port/echo" >"$out/hyper.$round.wrk"
    after=$(ticks)
    echo "server_ticks $((after - before)) $(getconf CLK_TCK)" >>"$out/hyper.$round.wrk"
    stop_server
done

python3 - "$out" "$ROUNDS" "$DURATION" "$BODY" "$CONNS" <<'PY'
import json, re, statistics, sys
out, rounds, duration, body, conns = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
cases = [("uring", "fcgi-uring --io uring, FastCGI", "fcgi-loadtest"),
         ("epoll", "fcgi-uring --io epoll, FastCGI", "fcgi-loadtest"),
         ("floor", "echo floor (fcgi-floor --epoll --echo)", "fcgi-loadtest"),
         ("hyper-lt", "hyper (fcgi-uring --protocol http1)", "fcgi-loadtest --protocol http1")]
rows = {name: [] for name, _, _ in cases}
wrk = []
for r in range(1, rounds + 1):
    for name, _, _ in cases:
        j = json.load(open(f"{out}/{name}.{r}.json"))
        if j["errors"]:
            raise SystemExit(f"{name} round {r}: {j['errors']} errors")
        rows[name].append((j["rps"], j["server_cpu_us_per_req"], j["client_cpu_pct"], j["p99_us"]))
    text = open(f"{out}/hyper.{r}.wrk").read()
    if re.search(r"Non-2xx|Socket errors", text):
        raise SystemExit(f"wrk round {r} saw errors:\n{text}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    ticks, hz = map(int, re.search(r"server_ticks (\d+) (\d+)", text).groups())
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    p99_us = float(p99.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[p99.group(2)]
    wrk.append((rps, ticks / hz * 1e6 / (rps * duration), None, p99_us))
med = lambda xs, i: statistics.median(x[i] for x in xs)
print(f"POST /echo, {body}-byte body, {conns} connections; medians of {rounds} rounds of {duration:.0f} s")
print("| server | client | requests/s | server CPU / request | p99 | client CPU |")
print("|---|---|---|---|---|---|")
for name, server, client in cases:
    xs = rows[name]
    print(f"| {server} | {client} | {med(xs, 0):,.0f} | {med(xs, 1):.1f} us | {med(xs, 3) / 1e3:.2f} ms | {med(xs, 2):.0f} % |")
print(f"| hyper (fcgi-uring --protocol http1) | wrk | {med(wrk, 0):,.0f} | {med(wrk, 1):.1f} us | {med(wrk, 3) / 1e3:.2f} ms | - |")
for name, server, _ in cases[:3]:
    xs = rows[name]
    print(f"{server} / hyper under wrk: rate {med(xs, 0) / med(wrk, 0):.2f}x, CPU per request "
          f"{med(xs, 1) / med(wrk, 1):.2f}x; / hyper under fcgi-loadtest: rate "
          f"{med(xs, 0) / med(rows['hyper-lt'], 0):.2f}x, CPU {med(xs, 1) / med(rows['hyper-lt'], 1):.2f}x")
PY

#!/usr/bin/env bash
# What a restart loses, at the same load: a plain restart (SIGTERM, wait for the exit, start
# again) against a hot upgrade (`fcgi-uring reload`), with a connection per request (Caddy,
# lighttpd, nginx without keepalive) and with kept-alive connections.
#
# Usage: bench/restart-losses.sh [RESTARTS] [SECONDS] [CONNS]
#        bench/restart-losses.sh --help
#   defaults: 10 restarts in a 12 s window, 16 connections.
# Server pinned to CPU 0 (one worker), load (fcgi-loadtest, closed loop) to CPU 1. Prints, per
# case, the requests answered and the errors the load saw by kind: `connect` (connection
# refused: nothing listened; each retry of the load's loop counts, so it bounds the gap rather
# than counting users) and `io` (a request on a connection that was reset or closed under it).
# Behind a proxy every one of them is a 502.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
for arg in "$@"; do
    if ! [[ "$arg" =~ ^[0-9]+$ ]]; then
        echo "restart-losses.sh: $arg is not a whole number (usage: [RESTARTS] [SECONDS] [CONNS]; --help)" >&2
        exit 2
    fi
done
cd "$(dirname "$0")/.."
RESTARTS=${1:-10}
SECONDS_=${2:-12}
CONNS=${3:-16}
BIN=target/release/fcgi-uring
LOAD=target/release/fcgi-loadtest
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release -p fcgi-uring-cli --bin fcgi-uring -p fcgi-loadtest --bin fcgi-loadtest
DIR=$(mktemp -d)
trap 'kill $(cat "$DIR/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$DIR"' EXIT
PORT=$((20000 + RANDOM % 20000))

start() {
    taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --workers 1 --no-pin --admin-listen none \
        --shutdown-timeout 10 --pid-file "$DIR/pid" >/dev/null 2>"$DIR/server.log" &
    until [ -s "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null &&
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.01; done
}

plain_restart() {
    local pid
    pid=$(cat "$DIR/pid")
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.005; done
    start
}

hot_upgrade() {
    "$BIN" reload --pid-file "$DIR/pid" >/dev/null
}

run_case() { # MODE KEEP_CONN
    local mode=$1 keep=$2 gap
    start
    taskset -c 1 "$LOAD" run --addr "127.0.0.1:$PORT" --conns "$CONNS" --keep-conn "$keep" \
        --warmup 0 --duration "$SECONDS_" --cpus 1 --json /hello >"$DIR/load.json" &
    local load=$!
    gap=$(echo "$SECONDS_ / ($RESTARTS + 1)" | bc -l)
    for _ in $(seq "$RESTARTS"); do
        sleep "$gap"
        "$mode"
    done
    wait "$load"
    kill -TERM "$(cat "$DIR/pid")"
    while [ -s "$DIR/pid" ]; do sleep 0.01; done
    jq -r --arg m "$mode" --arg k "$keep" \
        '"\($m)\tkeep_conn=\($k)\tanswered=\(.requests)\terrors=\(.errors)\tconnect=\(.errors_by_kind.connect)\tio=\(.errors_by_kind.io)"' \
        "$DIR/load.json"
}

echo "# $RESTARTS restarts in ${SECONDS_} s, $CONNS connections, closed loop, GET /hello"
for keep in false true; do
    for mode in plain_restart hot_upgrade; do
        run_case "$mode" "$keep"
    done
done

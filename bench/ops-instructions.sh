#!/usr/bin/env bash
# What the operator features cost in instructions per request: the server under callgrind, its
# counters zeroed once it has served a second of warm-up load, then a fixed load; total
# instructions / requests of that load.
# Unlike a rate, the count barely moves with other work on the machine.
#
# Usage: bench/ops-instructions.sh BASELINE_FCGI_URING [PATH/TO/fcgi-uring]
#        bench/ops-instructions.sh --help
#   BASELINE_FCGI_URING: a build without the operator features (see bench/ops-cost.sh); the
#   second binary (default: this workspace's release build) runs as
#     off        --admin-listen none (counters and histograms recorded, nothing exported)
#     admin      the admin listener on, scraped once a second during the load
#     accesslog  admin, scraped, and the access log written to a file
#   each at 64 keep-alive connections and at 16 connections x 16 multiplexed requests.
# Environment:
#   DURATION=8   seconds of load per case   OUT=DIR   keep the callgrind files and logs there
# Needs: valgrind (callgrind_control, callgrind_annotate), curl.
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help || $# -lt 1 ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
baseline="$1"
fcgi_uring="${2:-$root/target/release/fcgi-uring}"
DURATION="${DURATION:-8}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
log() { echo "== $*" >&2; }

packages=(-p fcgi-loadtest)
[[ -n "${2:-}" ]] || packages+=(-p fcgi-uring-cli)
(cd "$root" && cargo build --release -q "${packages[@]}")
loadtest="$root/target/release/fcgi-loadtest"

port=19280
admin_port=19281
server_pid=""
scraper_pid=""
cleanup() {
    [[ -n "$scraper_pid" ]] && { kill "$scraper_pid" 2>/dev/null || true; wait "$scraper_pid" 2>/dev/null || true; }
    [[ -n "$server_pid" ]] && { kill -INT "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
    scraper_pid=""
    server_pid=""
}
trap cleanup EXIT

# Runs one case: $1 name, $2 shape, the rest the server command line.
measure() {
    local name="$1" shape="$2"
    shift 2
    local cg="$OUT/$name-$shape.cg" slog="$OUT/$name-$shape.log"
    rm -f "$cg" "$OUT/access.log"
    valgrind --tool=callgrind --callgrind-out-file="$cg" "$@" >"$slog" 2>&1 &
    server_pid=$!
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    # The workers set up their rings (megabytes of buffers zeroed) after the port is bound:
    # one second of load first, so that the count starts after them.
    "$loadtest" run --addr "127.0.0.1:$port" --duration 1 --warmup 0 --conns 1 /hello >/dev/null 2>&1
    callgrind_control -z "$server_pid" >/dev/null 2>&1
    if [[ "$name" != baseline && "$name" != off ]]; then
        (while true; do curl -s -o /dev/null "http://127.0.0.1:$admin_port/metrics" || true; sleep 1; done) &
        scraper_pid=$!
    fi
    local args=(--conns 64)
    [[ "$shape" == c16xd16 ]] && args=(--conns 16 --depth 16)
    "$loadtest" run --addr "127.0.0.1:$port" --duration "$DURATION" --warmup 0 "${args[@]}" /hello \
        >"$OUT/$name-$shape.load" 2>&1
    cleanup
    local requests instructions
    # The requests of the measured load (the server's own count includes the warm-up).
    requests=$(awk '$1 == "requests" {print $2; exit}' "$OUT/$name-$shape.load")
    instructions=$(callgrind_annotate "$cg" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')
    printf '%s\t%s\t%s\t%s\n' "$name" "$shape" "$requests" "$instructions"
}

common=(serve --listen "127.0.0.1:$port" --workers 1)
results="$OUT/results.tsv"
: >"$results"
for shape in c64 c16xd16; do
    log "$shape"
    measure baseline "$shape" "$baseline" "${common[@]}" >>"$results"
    measure off "$shape" "$fcgi_uring" "${common[@]}" --admin-listen none >>"$results"
    measure admin "$shape" "$fcgi_uring" "${common[@]}" --admin-listen "127.0.0.1:$admin_port" >>"$results"
    measure accesslog "$shape" "$fcgi_uring" "${common[@]}" --admin-listen "127.0.0.1:$admin_port" \
        --access-log "$OUT/access.log" >>"$results"
done

awk -F'\t' '
    { key = $1 "-" $2; req[key] = $3; per[key] = $4 / $3; order[n++] = key; shape[key] = $2 }
    END {
        printf "%-20s%12s%14s%10s\n", "case", "requests", "instr/req", "ratio"
        for (i = 0; i < n; i++) {
            k = order[i]; base = per["baseline-" shape[k]]
            printf "%-20s%12d%14.0f%9.3fx\n", k, req[k], per[k], per[k] / base
        }
    }' "$results"
echo "callgrind, one worker, $DURATION s of load per case; counters zeroed after startup"

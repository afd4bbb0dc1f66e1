#!/usr/bin/env bash
# What the operator features cost: the same server with and without them, on one server core.
#
# Usage: bench/ops-cost.sh BASELINE_FCGI_URING [PATH/TO/fcgi-uring]
#        bench/ops-cost.sh --help
#   BASELINE_FCGI_URING is an fcgi-uring binary built without the metrics (an earlier commit:
#   see docs/performance.md for how to build one); the second binary (default: the release
#   build of this workspace) is measured in four configurations:
#     off       --admin-listen none: counters and histograms recorded, nothing exported
#     admin     the admin listener on (metrics exported, /status tracking in-flight requests)
#     scraped   admin, and GET /metrics every second during the run
#     accesslog scraped, and the access log written to a file
#   Each at 64 keep-alive connections and at 16 connections x 16 multiplexed requests.
#   Servers run pinned with `taskset -c 0` (--workers 1), the client and the scraper with
#   `taskset -c 1`. Cases are interleaved over rounds; the table shows medians and each case's
#   ratio to the baseline (requests/s, and baseline server CPU per request / this one's).
# Environment:
#   DURATION=6   measured seconds per case      ROUNDS=3   rounds (medians)
#   OUT=DIR      keep each case's JSON and the access logs there (default: a temporary directory)
# Needs: cargo, python3, curl.
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help || $# -lt 1 ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
baseline="$1"
DURATION="${DURATION:-6}"
ROUNDS="${ROUNDS:-3}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
log() { echo "== $*" >&2; }

packages=(-p fcgi-loadtest)
fcgi_uring="${2:-}"
if [[ -z "$fcgi_uring" ]]; then
    fcgi_uring="$root/target/release/fcgi-uring"
    packages+=(-p fcgi-uring-cli)
fi
log "building (release): cargo build ${packages[*]}"
(cd "$root" && cargo build --release -q "${packages[@]}")
loadtest="$root/target/release/fcgi-loadtest"

server_pid=""
scraper_pid=""
cleanup() {
    for pid in "$scraper_pid" "$server_pid"; do
        if [[ -n "$pid" ]]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    server_pid=""
    scraper_pid=""
}
trap cleanup EXIT

port=19200
admin_port=19201
start_server() {
    taskset -c 0 "$@" >"$OUT/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "server did not start: $(tail -5 "$OUT/server.log")"
    return 1
}

start_scraper() {
    (
        while true; do
            curl -s -o /dev/null "http://127.0.0.1:$admin_port/metrics" || true
            sleep 1
        done
    ) &
    scraper_pid=$!
    taskset -cp 1 "$scraper_pid" >/dev/null
}

results="$OUT/results.tsv"
: >"$results"
run_cases() {
    local name="$1"
    for shape in c64 c16xd16; do
        local args=(--conns 64)
        [[ "$shape" == c16xd16 ]] && args=(--conns 16 --depth 16)
        local file="$OUT/$name-$shape.r$round.json"
        log "$name $shape (round $round)"
        if taskset -c 1 "$loadtest" run --cpus 1 --threads 1 --duration "$DURATION" --warmup 1 \
            --expect-body 'Hello, World!' --server-pid "$server_pid" --json \
            --protocol fastcgi --addr "127.0.0.1:$port" "${args[@]}" /hello >"$file"; then
            printf '%s-%s\t%s\n' "$name" "$shape" "$file" >>"$results"
        fi
    done
}

common=(serve --listen "127.0.0.1:$port" --workers 1)
for round in $(seq "$ROUNDS"); do
    start_server "$baseline" "${common[@]}" && run_cases baseline
    cleanup
    start_server "$fcgi_uring" "${common[@]}" --admin-listen none && run_cases off
    cleanup
    start_server "$fcgi_uring" "${common[@]}" --admin-listen "127.0.0.1:$admin_port" &&
        run_cases admin
    cleanup
    start_server "$fcgi_uring" "${common[@]}" --admin-listen "127.0.0.1:$admin_port" &&
        start_scraper && run_cases scraped
    cleanup
    rm -f "$OUT/access.log"
    start_server "$fcgi_uring" "${common[@]}" --admin-listen "127.0.0.1:$admin_port" \
        --access-log "$OUT/access.log" && start_scraper && run_cases accesslog
    cleanup
done

python3 - "$results" "$DURATION" <<'PY'
import json, sys
results, duration = sys.argv[1], float(sys.argv[2])
runs = {}
for line in open(results):
    name, path = line.rstrip("\n").split("\t")
    runs.setdefault(name, []).append(json.load(open(path)))
def median(vs):
    vs = sorted(v for v in vs if v is not None)
    return vs[len(vs) // 2] if vs else None
rows = {n: {k: median([r.get(k) for r in rs]) for k in ("rps", "p99_us", "server_cpu_us_per_req", "client_cpu_pct")}
        for n, rs in runs.items()}
print(f"\n{'case':<20}{'rps':>10}{'p99 us':>9}{'srv us/req':>12}{'client cpu':>12}{'rps ratio':>11}{'cpu ratio':>11}")
for shape in ("c64", "c16xd16"):
    base = rows.get(f"baseline-{shape}")
    for name in ("baseline", "off", "admin", "scraped", "accesslog"):
        r = rows.get(f"{name}-{shape}")
        if not r:
            continue
        rr = f"{r['rps'] / base['rps']:.3f}x" if base else "-"
        cr = f"{base['server_cpu_us_per_req'] / r['server_cpu_us_per_req']:.3f}x" if base else "-"
        print(f"{name + '-' + shape:<20}{r['rps']:>10.0f}{r['p99_us']:>9.0f}"
              f"{r['server_cpu_us_per_req']:>12.2f}{r['client_cpu_pct']:>11.0f}%{rr:>11}{cr:>11}")
print(f"\nmedian of {len(next(iter(runs.values())))} rounds of {duration:.0f} s; server on CPU 0, "
      f"client and scraper on CPU 1")
PY

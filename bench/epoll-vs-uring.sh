#!/usr/bin/env bash
# The epoll backend against the io_uring backend on one server core, in one run, with hyper
# HTTP/1.1 + wrk as the reference: the four rows of the fallback's speed targets.
#
# Usage: bench/epoll-vs-uring.sh [PATH/TO/fcgi-uring]
#        bench/epoll-vs-uring.sh --help
#   Servers run pinned with `taskset -c 0` and `--workers 1`, clients with `taskset -c 1`.
#   GET /hello. Cases, for `--io uring` and `--io epoll`: 64 keep-alive connections, 16
#   connections x 16 multiplexed requests, a new connection per request (16 at a time, as Caddy
#   and lighttpd connect); then hyper with `wrk -t1 -c64`. Every case runs DURATION seconds
#   after a 1 s warmup; server CPU per request is read from /proc/PID/stat over the window.
#   Without a path, it builds and uses target/release/fcgi-uring.
# Environment:
#   DURATION=10   measured seconds per case
#   ROUNDS=3      rounds, every case once per round, interleaved; the table shows medians
#   OUT=DIR       keep each case's JSON there (default: a temporary directory)
#   PORT=19260    the servers listen on PORT and PORT+1
# Needs: cargo, python3, wrk (apt-get install wrk; the hyper row is skipped without it).
# On a machine shared with other work, run it as `chrt -f 10 bench/epoll-vs-uring.sh` (root):
# the measured processes then run as soon as they wake instead of after another process's
# time slice (see docs/performance.md).
# Idle memory is measured apart: see docs/performance.md (bench/idle-rss.py).
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
SERVER_CPU=0
CLIENT_CPU=1
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"

fcgi_uring="${1:-}"
packages=(-p fcgi-loadtest)
if [[ -z "$fcgi_uring" ]]; then
    fcgi_uring="$root/target/release/fcgi-uring"
    packages+=(-p fcgi-uring-cli)
fi
log() { echo "== $*" >&2; }
log "building (release): cargo build ${packages[*]}"
(cd "$root" && cargo build --release -q "${packages[@]}")
loadtest="$root/target/release/fcgi-loadtest"
hyper_hello="$root/target/release/hyper-hello"

# shellcheck source=server-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"
trap stop_server EXIT

results="$OUT/results.tsv"
: >"$results"

for round in $(seq "$ROUNDS"); do
    for io in uring epoll; do
        port=${PORT:-19260}
        if start_server "$port" "$fcgi_uring" serve --io "$io" --listen "127.0.0.1:$port" \
            --workers 1; then
            addr=(--protocol fastcgi --addr "127.0.0.1:$port")
            loadtest_case "$io-c64" "${addr[@]}" --conns 64
            loadtest_case "$io-c16xd16" "${addr[@]}" --conns 16 --depth 16
            loadtest_case "$io-conn-per-request" "${addr[@]}" --conns 16 --keep-conn false
            stop_server
        fi
    done
    if command -v wrk >/dev/null; then
        port=$((${PORT:-19260} + 1))
        if start_server "$port" "$hyper_hello" "127.0.0.1:$port"; then
            wrk_case "hyper-wrk-c64" "http://127.0.0.1:$port/hello"
            stop_server
        fi
    else
        log "wrk not found (apt-get install -y wrk): skipping the hyper row"
    fi
done

python3 - "$results" "$DURATION" <<'PY'
import json, re, sys

results, duration = sys.argv[1], float(sys.argv[2])

def wrk(path):
    text = open(path).read()
    row = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    m = re.search(r"(\d+) requests in", text)
    requests = int(m.group(1)) if m else 0
    ticks, hz = map(int, re.search(r"server_ticks (\d+) (\d+)", text).groups())
    row["server_cpu_us_per_req"] = ticks / hz * 1e6 / requests if requests else None
    return row

runs = {}
for line in open(results):
    name, kind, path = line.rstrip("\n").split("\t")
    runs.setdefault(name, [])
    if kind != "failed":
        runs[name].append(json.load(open(path)) if kind == "loadtest" else wrk(path))

def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None

by = {}
for name, rs in runs.items():
    by[name] = {k: median([r.get(k) for r in rs])
                for k in ("rps", "p50_us", "p99_us", "server_cpu_us_per_req", "client_cpu_pct")}
    by[name]["errors"] = sum(r.get("errors") or 0 for r in rs)
    by[name]["saturated"] = any(r.get("client_saturated") for r in rs)

def f(v, fmt):
    return "-" if v is None else format(v, fmt)

print(f"\n{'case':<26}{'rps':>10}{'p50 us':>9}{'p99 us':>9}{'srv us/req':>12}{'client cpu':>12}{'errors':>8}")
for name, r in by.items():
    print(f"{name:<26}{f(r['rps'], '.0f'):>10}{f(r['p50_us'], '.0f'):>9}{f(r['p99_us'], '.0f'):>9}"
          f"{f(r['server_cpu_us_per_req'], '.2f'):>12}{f(r['client_cpu_pct'], '.0f'):>11}%"
          f"{r['errors']:>8}{'  (client saturated)' if r['saturated'] else ''}")

def ratio(a, b, key, inverse=False):
    ra, rb = by.get(a), by.get(b)
    if not ra or not rb or not ra.get(key) or not rb.get(key):
        return "-"
    return f"{(rb[key] / ra[key]) if inverse else (ra[key] / rb[key]):.2f}x"

print("\nepoll against its targets (medians): throughput ratio, and server CPU per request (theirs / ours)")
for case, other, target in (("c64", "uring-c64", ">= 0.9x"), ("c64", "hyper-wrk-c64", ">= 1.0x"),
                            ("c16xd16", "uring-c16xd16", ">= 0.85x"),
                            ("conn-per-request", "uring-conn-per-request", ">= 0.9x")):
    print(f"  epoll-{case:<17} / {other:<23} rps {ratio('epoll-' + case, other, 'rps'):>6} "
          f"(target {target})   cpu/req {ratio('epoll-' + case, other, 'server_cpu_us_per_req', True):>6}")
print(f"\nmedian of {len(next(iter(runs.values()), []))} rounds of {duration:.0f} s per case; "
      f"servers on CPU 0, clients on CPU 1. JSON and logs in {results.rsplit('/', 1)[0]}")
PY

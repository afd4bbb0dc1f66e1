#!/usr/bin/env bash
# fcgi-uring against its peers on one server core: Go net/http/fcgi, hyper HTTP/1.1, and
# fcgi-floor (the same io_uring loop with no application: the ceiling for a FastCGI server).
#
# Usage: bench/compare-peers.sh [PATH/TO/fcgi-uring]
#        bench/compare-peers.sh --help
#   Servers run pinned with `taskset -c 0`, clients with `taskset -c 1` (and --cpus 1).
#   Each case runs DURATION seconds after a 1 s warmup; server CPU per request is read from
#   /proc/PID/stat over the measured window. Cases: fcgi-uring at 1, 16 and 64 keep-alive
#   connections and 16 connections x 16 multiplexed requests; fcgi-floor at 64 and 16 x 16;
#   Go at 64; hyper at 64 with wrk and with fcgi-loadtest --protocol http1.
#   Without a path, it builds and uses target/release/fcgi-uring (the release workspace).
# Environment:
#   DURATION=10         measured seconds per case
#   ROUNDS=3            every case runs once per round, rounds interleaved; the table shows
#                       the median of the rounds
#   SKIP_FCGI_URING=1   skip the fcgi-uring cases (also skipped when no binary is given/found)
#   SKIP_GO=1, SKIP_HYPER=1, SKIP_WRK=1, SKIP_FLOOR=1   skip those cases
#   OUT=DIR             keep each case's JSON there (default: a temporary directory)
# Needs: cargo, python3; go (apt-get install golang-go) and wrk (apt-get install wrk) for
# those cases, which are skipped with a note when the tool is missing.
# Compare ratios from one run, not absolute figures across runs: see docs/performance.md.
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

fcgi_uring="${1:-${FCGI_URING:-}}"
packages=(-p fcgi-loadtest)
if [[ -z "$fcgi_uring" && "${SKIP_FCGI_URING:-0}" != 1 ]]; then
    fcgi_uring="$root/target/release/fcgi-uring"
    packages+=(-p fcgi-uring-cli)
fi

log() { echo "== $*" >&2; }

# --- build the client and the baselines -------------------------------------------------------
log "building (release): cargo build ${packages[*]}"
if ! (cd "$root" && cargo build --release -q "${packages[@]}") 2>"$OUT/build.log"; then
    cat "$OUT/build.log" >&2
    exit 1
fi
loadtest="$root/target/release/fcgi-loadtest"
hyper_hello="$root/target/release/hyper-hello"
fcgi_floor="$root/target/release/fcgi-floor"
go_fcgi=""
if [[ "${SKIP_GO:-0}" != 1 ]]; then
    if command -v go >/dev/null; then
        log "building the Go fcgi baseline"
        go_fcgi="$OUT/go-fcgi"
        (cd "$root/crates/fcgi-loadtest/baselines/go-fcgi" && go build -o "$go_fcgi" .)
    else
        log "go not found (apt-get install -y golang-go): skipping the Go baseline"
    fi
fi

# --- servers ----------------------------------------------------------------------------------
# shellcheck source=server-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"
trap stop_server EXIT

# --- cases ------------------------------------------------------------------------------------
results="$OUT/results.tsv"
: >"$results"

for round in $(seq "$ROUNDS"); do
    if [[ "${SKIP_FCGI_URING:-0}" != 1 && -n "$fcgi_uring" ]]; then
        port=19100
        if start_server "$port" "$fcgi_uring" serve --listen "127.0.0.1:$port" --workers 1; then
            for c in 1 16 64; do
                loadtest_case "fcgi-uring-c$c" --protocol fastcgi --addr "127.0.0.1:$port" --conns "$c"
            done
            loadtest_case "fcgi-uring-c16xd16" --protocol fastcgi --addr "127.0.0.1:$port" \
                --conns 16 --depth 16
            stop_server
        fi
    else
        log "skipping fcgi-uring (no binary given, or SKIP_FCGI_URING=1)"
    fi

    if [[ "${SKIP_FLOOR:-0}" != 1 ]]; then
        port=19103
        if start_server "$port" "$fcgi_floor" "127.0.0.1:$port"; then
            loadtest_case "fcgi-floor-c64" --protocol fastcgi --addr "127.0.0.1:$port" --conns 64
            loadtest_case "fcgi-floor-c16xd16" --protocol fastcgi --addr "127.0.0.1:$port" \
                --conns 16 --depth 16
            stop_server
        fi
    fi

    if [[ -n "$go_fcgi" ]]; then
        port=19101
        if GOMAXPROCS=1 start_server "$port" "$go_fcgi" "127.0.0.1:$port"; then
            loadtest_case "go-fcgi-c64" --protocol fastcgi --addr "127.0.0.1:$port" --conns 64
            stop_server
        fi
    fi

    if [[ "${SKIP_HYPER:-0}" != 1 ]]; then
        port=19102
        if start_server "$port" "$hyper_hello" "127.0.0.1:$port"; then
            if [[ "${SKIP_WRK:-0}" != 1 ]] && command -v wrk >/dev/null; then
                wrk_case "hyper-wrk-c64" "http://127.0.0.1:$port/hello"
            else
                log "wrk not found (apt-get install -y wrk) or SKIP_WRK=1: skipping the wrk case"
            fi
            loadtest_case "hyper-http1-c64" --protocol http1 --addr "127.0.0.1:$port" --conns 64
            stop_server
        fi
    fi
done

# --- table ------------------------------------------------------------------------------------
python3 - "$results" "$DURATION" <<'PY'
import json, re, sys

results, duration = sys.argv[1], float(sys.argv[2])

def us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

def wrk(path):
    text = open(path).read()
    row = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for q, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{q}%\s+(\S+)", text, re.M)
        row[key] = us(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    requests = int(m.group(1)) if m else 0
    ticks, hz = map(int, re.search(r"server_ticks (\d+) (\d+)", text).groups())
    row["server_cpu_us_per_req"] = ticks / hz * 1e6 / requests if requests else None
    row["p999_us"] = row["client_cpu_pct"] = row["errors"] = None
    return row

def cell(v, fmt):
    return "-" if v is None else format(v, fmt)

runs = {}
for line in open(results):
    name, kind, path = line.rstrip("\n").split("\t")
    runs.setdefault(name, [])
    if kind != "failed":
        runs[name].append(json.load(open(path)) if kind == "loadtest" else wrk(path))

def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None

rows = []
for name, rs in runs.items():
    if not rs:
        rows.append((name, None))
        continue
    row = {k: median([r.get(k) for r in rs]) for k in
           ("rps", "p50_us", "p99_us", "p999_us", "server_cpu_us_per_req", "client_cpu_pct", "errors")}
    row["errors"] = None if row["errors"] is None else int(sum(r.get("errors") or 0 for r in rs))
    row["client_saturated"] = any(r.get("client_saturated") for r in rs)
    row["rounds"] = len(rs)
    rows.append((name, row))

print(f"\n{'case':<22}{'rps':>10}{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}"
      f"{'srv us/req':>12}{'client cpu':>12}{'errors':>8}")
for name, r in rows:
    if r is None:
        print(f"{name:<22}  failed (see the log above)")
        continue
    print(f"{name:<22}{r['rps']:>10.0f}{cell(r['p50_us'], '.0f'):>9}{cell(r['p99_us'], '.0f'):>9}"
          f"{cell(r['p999_us'], '.0f'):>10}{cell(r['server_cpu_us_per_req'], '.2f'):>12}"
          f"{cell(r['client_cpu_pct'], '.0f') + ('%' if r['client_cpu_pct'] is not None else ''):>12}"
          f"{cell(r['errors'], 'd'):>8}")
    if r.get("client_saturated"):
        print(f"  ^ client saturated ({r['client_cpu_pct']:.0f}%): this row measures the client")
by = dict(rows)
def ratio(a, b, key, inverse=False):
    ra, rb = by.get(a), by.get(b)
    if not ra or not rb or not ra.get(key) or not rb.get(key):
        return "-"
    return f"{(rb[key] / ra[key]) if inverse else (ra[key] / rb[key]):.2f}x"
print("\nRatios (medians): throughput, and server CPU per request (theirs / ours)")
for other in ("go-fcgi-c64", "hyper-wrk-c64", "hyper-http1-c64"):
    print(f"  fcgi-uring-c64 vs {other:<16} rps {ratio('fcgi-uring-c64', other, 'rps'):>7}"
          f"   cpu/req {ratio('fcgi-uring-c64', other, 'server_cpu_us_per_req', inverse=True):>7}")
print("\nCeilings: the no-application floor (fcgi-floor) against the same baselines, and the share")
print("of the floor's rate fcgi-uring reaches")
for other in ("go-fcgi-c64", "hyper-wrk-c64", "hyper-http1-c64"):
    print(f"  fcgi-floor-c64 vs {other:<16} rps {ratio('fcgi-floor-c64', other, 'rps'):>7}"
          f"   cpu/req {ratio('fcgi-floor-c64', other, 'server_cpu_us_per_req', inverse=True):>7}")
for case in ("c64", "c16xd16"):
    print(f"  fcgi-uring-{case} / fcgi-floor-{case:<8}   rps {ratio('fcgi-uring-' + case, 'fcgi-floor-' + case, 'rps'):>7}"
          f"   cpu/req {ratio('fcgi-uring-' + case, 'fcgi-floor-' + case, 'server_cpu_us_per_req', inverse=True):>7}")
print(f"\nmedian of {max((r or {}).get('rounds', 0) for r in by.values())} rounds of "
      f"{duration:.0f} s per case; servers on CPU 0, clients on CPU 1. JSON and logs in "
      f"{results.rsplit('/', 1)[0]}")
PY

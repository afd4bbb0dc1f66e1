#!/usr/bin/env bash
# Which HAProxy fcgi-app options multiplex, and what that costs in HAProxy's own 500s.
#
# Usage: bench/haproxy-mpxs.sh [PATH/TO/fcgi-uring]
#        bench/haproxy-mpxs.sh --help
#   One fcgi-uring (--workers 1, pinned to CPU 0) behind the installed HAProxy (pinned to
#   CPU 0 as well) on loopback, `fcgi-loadtest run --protocol http1` pinned to CPU 1: 64
#   HTTP/1.1 keep-alive clients, GET /hello and POST /echo with a 1 KiB body. Every variant
#   keeps `option keep-conn` and `http-reuse always`; they differ in the fcgi-app options:
#     keep-conn        option keep-conn only
#     get-values       + option get-values (the server answers FCGI_MPXS_CONNS=1 and
#                      FCGI_MAX_REQS=256)
#     mpxs             + option mpxs-conns (max-reqs left at HAProxy's default, 1)
#     mpxs-max-reqs    + option mpxs-conns + option max-reqs 100
#     all              + option get-values + option mpxs-conns + option max-reqs 100
#     all-reqs1        as all, the server started with --advertised-max-reqs 1 (it answers
#                      FCGI_MAX_REQS=1 to get-values)
#   Cases are interleaved over rounds, each on a fresh server and HAProxy. Per case: requests
#   answered 200 per second; the requests answered with anything else (the demo answers 200
#   to both, so a 500 is HAProxy's own; its log shows them as internal errors, termination
#   state IH); and HAProxy's CPU per successful request (`--server-pid`).
# Environment:
#   DURATION=4   measured seconds per case     ROUNDS=3   rounds (median and range)
#   CONNS=64     client connections           OUT=DIR    keep JSON and logs there
#   HAPROXY=PATH the HAProxy binary (default: haproxy on the PATH)
# Needs: haproxy, python3; builds fcgi-uring and fcgi-loadtest (release) when not given.
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
DURATION="${DURATION:-4}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
log() { echo "== $*" >&2; }

haproxy="${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}"
[[ -x "$haproxy" ]] || { log "haproxy not found"; exit 1; }
packages=(-p fcgi-loadtest)
fcgi_uring="${1:-}"
if [[ -z "$fcgi_uring" ]]; then
    fcgi_uring="$root/target/release/fcgi-uring"
    packages+=(-p fcgi-uring-cli)
fi
log "building (release): cargo build ${packages[*]}"
(cd "$root" && cargo build --release -q "${packages[@]}")
loadtest="$root/target/release/fcgi-loadtest"

server_pid=""
haproxy_pid=""
stop() {
    for pid in "$haproxy_pid" "$server_pid"; do
        if [[ -n "$pid" ]]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    server_pid=""
    haproxy_pid=""
}
trap stop EXIT
trap 'exit 130' INT TERM

fcgi_port=19300
http_port=19301
wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "nothing listens on port $1"
    return 1
}

variants=(keep-conn get-values mpxs mpxs-max-reqs all all-reqs1)
options() {
    case "$1" in
        keep-conn) ;;
        get-values) echo "    option get-values" ;;
        mpxs) echo "    option mpxs-conns" ;;
        mpxs-max-reqs) printf '    option mpxs-conns\n    option max-reqs 100\n' ;;
        all | all-reqs1) printf '    option get-values\n    option mpxs-conns\n    option max-reqs 100\n' ;;
    esac
}

# start VARIANT: a fresh server and HAProxy (no connection state carried over).
start() {
    local v="$1" extra=()
    [[ "$v" == all-reqs1 ]] && extra=(--advertised-max-reqs 1)
    taskset -c 0 "$fcgi_uring" serve --listen "127.0.0.1:$fcgi_port" --workers 1 --no-pin \
        --admin-listen none "${extra[@]}" >"$OUT/server.log" 2>&1 &
    server_pid=$!
    wait_port "$fcgi_port"
    cat >"$OUT/haproxy-$v.cfg" <<EOF
global
    log stderr format raw local0 info
    maxconn 4096
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 20s
    timeout server 20s
fcgi-app app
    docroot /srv
    option keep-conn
$(options "$v")
frontend web
    bind 127.0.0.1:$http_port
    default_backend app
backend app
    use-fcgi-app app
    http-reuse always
    server s1 127.0.0.1:$fcgi_port proto fcgi
EOF
    taskset -c 0 "$haproxy" -db -f "$OUT/haproxy-$v.cfg" >"$OUT/haproxy.log" 2>&1 &
    haproxy_pid=$!
    wait_port "$http_port"
}

# run VARIANT LOAD ROUND: one measured run; appends a JSON line to $OUT/results.jsonl.
run() {
    local v="$1" load="$2" round="$3" args=()
    case "$load" in
        get) args=(/hello) ;;
        post) args=(--body-bytes 1024 /echo) ;;
    esac
    start "$v"
    taskset -c 1 timeout 60 "$loadtest" run --protocol http1 --addr "127.0.0.1:$http_port" \
        --conns "$CONNS" --duration "$DURATION" --warmup 1 --cpus 1 --json \
        --server-pid "$haproxy_pid" "${args[@]}" >"$OUT/run.json" 2>"$OUT/run.err"
    stop
    local ih
    ih=$(grep -c ' 500 .* IH' "$OUT/haproxy.log" || true)
    python3 - "$v" "$load" "$round" "$ih" "$OUT/run.json" >>"$OUT/results.jsonl" <<'EOF'
import json, sys
v, load, rnd, ih, path = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"variant": v, "load": load, "round": int(rnd), "rps": r["rps"],
                  "ok": r["requests"], "failed": r["errors"],
                  "codes": r["errors_by_kind"]["status_codes"], "ih": int(ih),
                  "kinds": {k: n for k, n in r["errors_by_kind"].items()
                            if k != "status_codes" and n},
                  "haproxy_us": r.get("server_cpu_us_per_req")}))
EOF
    log "$v $load round $round: $(tail -1 "$OUT/results.jsonl")"
}

: >"$OUT/results.jsonl"
for round in $(seq "$ROUNDS"); do
    for load in get post; do
        for v in "${variants[@]}"; do
            run "$v" "$load" "$round"
        done
    done
done

python3 - "$OUT/results.jsonl" "$CONNS" "$DURATION" "$ROUNDS" "$("$haproxy" -v | head -1)" <<'EOF'
import json, statistics, sys
path, conns, duration, rounds, version = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
print(f"{version}")
print(f"{conns} HTTP/1.1 clients, {duration} s x {rounds} rounds per case; "
      "HAProxy and one fcgi-uring worker on CPU 0, the client on CPU 1")
print("| variant | load | 200s/s (median, range) | not 200 (per round) | share | IH 500s in HAProxy's log (per round, warmup included) | HAProxy us/req (median) |")
print("|---|---|---|---|---|---|---|")
order = ["keep-conn", "get-values", "mpxs", "mpxs-max-reqs", "all", "all-reqs1"]
for load in ["get", "post"]:
    for v in order:
        rs = [r for r in rows if r["variant"] == v and r["load"] == load]
        if not rs:
            continue
        rps = [r["rps"] for r in rs]
        failed = [r["failed"] for r in rs]
        total = sum(r["ok"] + r["failed"] for r in rs)
        share = 100.0 * sum(failed) / total if total else 0.0
        codes = {}
        for r in rs:
            for c, n in r["codes"].items():
                codes[c] = codes.get(c, 0) + n
            for k, n in r.get("kinds", {}).items():
                if k != "status":
                    codes[k] = codes.get(k, 0) + n
        what = "GET /hello" if load == "get" else "POST 1 KiB"
        print(f"| {v} | {what} | {statistics.median(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) "
              f"| {' / '.join(str(f) for f in failed)} {codes if codes else ''} | {share:.2f} % "
              f"| {' / '.join(str(r['ih']) for r in rs)} "
              f"| {statistics.median(r['haproxy_us'] for r in rs):.1f} |")
EOF
log "results: $OUT/results.jsonl"

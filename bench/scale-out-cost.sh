#!/usr/bin/env bash
# CPU per request of a load balancer and its fcgi-uring backends at 1, 2 and 3 backend hosts.
#
# Usage: sudo bench/scale-out-cost.sh [PATH/TO/fcgi-uring]
#        bench/scale-out-cost.sh --help
#   A lab of network namespaces (as tests/common/lab.rs builds): a bridge in a namespace of
#   its own, a proxy host `lb` at 10.232.0.1 and backend hosts at 10.232.0.2-4. Each backend
#   runs `fcgi-uring serve --workers 1` (the lb as its only allowed peer); the proxy runs with
#   the configuration of docs/deploy/scale-out.md (nginx: one worker, `keepalive` sized to
#   the client connections, NGINX_KEEPALIVE; HAProxy: one thread; Caddy: GOMAXPROCS=1). The
#   proxy and every backend are pinned to CPU 0, `fcgi-loadtest run --protocol http1` inside
#   the lb namespace to CPU 1 (CONNS keep-alive clients, GET /hello and POST /echo with a
#   1 KiB body). Per case: a fresh set of processes, a 1 s warmup run, then utime+stime of
#   the proxy and of each backend (/proc/PID/stat), and the backends' context switches
#   (/proc/PID/task/*/status), around a DURATION s run. Cases are interleaved over rounds;
#   the table gives the median and range per case.
#
#   All processes share one core: this shows what a request COSTS (proxy + backends, CPU per
#   request) as backends are added, not a speed-up. More backends on more cores would add
#   capacity; here they only split the same core.
# Environment:
#   DURATION=4   measured seconds per case      ROUNDS=3   rounds
#   CONNS=64     client connections             PROXIES="haproxy nginx caddy"
#   BACKENDS="1 2 3"                            LOADS="get post"
#   NGINX_KEEPALIVE=CONNS  nginx's upstream keepalive (idle connections it keeps)
#   OUT=DIR      keep the JSON, configs and logs there (default: a temporary directory)
# Needs: root (ip netns), ip, taskset, curl, python3, and the proxies named in PROXIES; builds
# fcgi-uring and fcgi-loadtest (release) when no binary is given.
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
PROXIES="${PROXIES:-haproxy nginx caddy}"
BACKENDS="${BACKENDS:-1 2 3}"
LOADS="${LOADS:-get post}"
NGINX_KEEPALIVE="${NGINX_KEEPALIVE:-$CONNS}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
log() { echo "== $*" >&2; }

packages=(-p fcgi-loadtest)
fcgi_uring="${1:-}"
if [[ -z "$fcgi_uring" ]]; then
    fcgi_uring="$root/target/release/fcgi-uring"
    packages+=(-p fcgi-uring-cli)
fi
log "building (release): cargo build ${packages[*]}"
(cd "$root" && cargo build --release -q "${packages[@]}")
loadtest="$root/target/release/fcgi-loadtest"
for p in $PROXIES; do
    command -v "$p" >/dev/null || { log "$p not found"; exit 1; }
done

# The lab (bench/lab-lib.sh): the switch, the lb at 10.232.0.1 and three backend hosts.
# shellcheck source=bench/lab-lib.sh
source "$here/lab-lib.sh"
lab_tag="fcgi-cost-$$"
lab_net=10.232.0
lab_dir="$OUT"
lab_pin=(taskset -c 0)
lab_proxy_env=(GOMAXPROCS=1)
trap lab_cleanup EXIT
trap 'exit 130' INT TERM
lab_create 3
lb="$lab_lb"

# cpu_ticks PID...: utime+stime of each process, in clock ticks.
cpu_ticks() {
    local pid
    for pid in "$@"; do
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"
    done
}

# switches PID...: the context switches of all threads of the processes (each one a thread
# that went to sleep or was preempted), summed.
switches() {
    local pid total=0 n
    for pid in "$@"; do
        for n in $(awk '/^(non)?voluntary_ctxt_switches/ { print $2 }' /proc/"$pid"/task/*/status); do
            total=$((total + n))
        done
    done
    echo "$total"
}

start_backends() { # N
    lab_backend_pids=()
    local i
    for i in $(seq "$1"); do
        lab_start_backend "$i" --admin-listen none
    done
    lab_wait_backends "$1"
}

# run PROXY N LOAD ROUND: appends one JSON line to $OUT/results.jsonl.
run() {
    local proxy="$1" n="$2" load="$3" round="$4" args=()
    case "$load" in
        get) args=(/hello) ;;
        post) args=(--body-bytes 1024 /echo) ;;
    esac
    start_backends "$n"
    lab_start_proxy "$proxy" "$n"
    local client=(ip netns exec "$lb" taskset -c 1 timeout 60 "$loadtest" run --protocol http1
        --addr 127.0.0.1:8080 --conns "$CONNS" --cpus 1 --json)
    # Warmup: every backend connected to and in service before the window.
    "${client[@]}" --duration 1 --warmup 0 "${args[@]}" >/dev/null 2>&1
    # Caddy counts the requests the warmup's clients left in flight as upstream failures
    # (max_fails 1: every upstream out for fail_duration): measure once it answers again.
    local answered=""
    for _ in $(seq 100); do
        answered=$(ip netns exec "$lb" curl -s -m 5 -o /dev/null -w '%{http_code}' \
            http://127.0.0.1:8080/hello || true)
        [[ "$answered" == 200 ]] && break
        sleep 0.1
    done
    [[ "$answered" == 200 ]] || { log "$proxy does not answer after the warmup"; return 1; }
    local before after sw_before sw_after
    sw_before=$(switches "${lab_backend_pids[@]}")
    before=$(cpu_ticks "$lab_proxy_pid" "${lab_backend_pids[@]}" | tr '\n' ' ')
    "${client[@]}" --duration "$DURATION" --warmup 0 "${args[@]}" >"$OUT/run.json" 2>"$OUT/run.err"
    after=$(cpu_ticks "$lab_proxy_pid" "${lab_backend_pids[@]}" | tr '\n' ' ')
    sw_after=$(switches "${lab_backend_pids[@]}")
    lab_stop_all
    python3 - "$proxy" "$n" "$load" "$round" "$before" "$after" "$(getconf CLK_TCK)" \
        "$OUT/run.json" "$((sw_after - sw_before))" >>"$OUT/results.jsonl" <<'EOF'
import json, sys
proxy, n, load, rnd, before, after, hz, path, switches = sys.argv[1:]
r = json.load(open(path))
d = [(int(a) - int(b)) / int(hz) for a, b in zip(after.split(), before.split())]
done = r["requests"] + r["errors"]
us = lambda s: 1e6 * s / done if done else None
print(json.dumps({"proxy": proxy, "n": int(n), "load": load, "round": int(rnd),
                  "rps": r["rps"], "ok": r["requests"], "failed": r["errors"],
                  "proxy_us": us(d[0]), "backends_us": us(sum(d[1:])),
                  "total_us": us(sum(d)), "backend_cpu_s": d[1:],
                  "backend_switches_per_req": int(switches) / done if done else None,
                  "client_saturated": r["client_saturated"]}))
EOF
    log "$proxy n=$n $load round $round: $(tail -1 "$OUT/results.jsonl")"
}

: >"$OUT/results.jsonl"
for round in $(seq "$ROUNDS"); do
    for load in $LOADS; do
        for proxy in $PROXIES; do
            for n in $BACKENDS; do
                run "$proxy" "$n" "$load" "$round"
            done
        done
    done
done

python3 - "$OUT/results.jsonl" "$CONNS" "$DURATION" "$ROUNDS" <<'EOF'
import json, statistics, sys
path, conns, duration, rounds = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
print(f"{conns} HTTP/1.1 keep-alive clients, {duration} s x {rounds} rounds per case; the proxy "
      "and every backend (one worker each) on CPU 0, the client on CPU 1.")
print("One core serves them all: the figures show the COST of a request, not a speed-up.")
print("| proxy | load | backends | requests/s | failed | proxy us/req | backends us/req | total us/req | backends' context switches/req |")
print("|---|---|---|---|---|---|---|---|---|")
def cell(xs, fmt):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = statistics.median(xs)
    return f"{fmt(m)} ({fmt(min(xs))}-{fmt(max(xs))})"
seen = []
for r in rows:
    k = (r["proxy"], r["load"], r["n"])
    if k not in seen:
        seen.append(k)
seen.sort(key=lambda k: (["get", "post"].index(k[1]), k[0], k[2]))
for proxy, load, n in seen:
    rs = [r for r in rows if (r["proxy"], r["load"], r["n"]) == (proxy, load, n)]
    what = "GET /hello" if load == "get" else "POST 1 KiB"
    sat = " (client saturated)" if any(r["client_saturated"] for r in rs) else ""
    print(f"| {proxy} | {what} | {n} | {cell([r['rps'] for r in rs], lambda x: f'{x:,.0f}')}{sat} "
          f"| {' / '.join(str(r['failed']) for r in rs)} "
          f"| {cell([r['proxy_us'] for r in rs], lambda x: f'{x:.1f}')} "
          f"| {cell([r['backends_us'] for r in rs], lambda x: f'{x:.1f}')} "
          f"| {cell([r['total_us'] for r in rs], lambda x: f'{x:.1f}')} "
          f"| {cell([r.get('backend_switches_per_req') for r in rs], lambda x: f'{x:.2f}')} |")
EOF
log "results: $OUT/results.jsonl"

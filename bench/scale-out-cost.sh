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

tag="fcgi-cost-$$"
sw="$tag-sw"
lb="$tag-lb"
lb_ip=10.232.0.1
hosts=()
pids=()

stop_all() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    stop_all
    for ns in "$lb" "${hosts[@]}" "$sw"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The lab: the switch, then the lb and three backend hosts, each linked to the bridge.
ip netns add "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
add_host() { # NS IP PORT
    ip netns add "$1"
    ip -n "$1" link set lo up
    ip -n "$1" link add eth0 type veth peer name "$3" netns "$sw"
    ip -n "$sw" link set "$3" master br0
    ip -n "$sw" link set "$3" up
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
}
add_host "$lb" "$lb_ip" p0
for i in 1 2 3; do
    hosts+=("$tag-b$i")
    add_host "$tag-b$i" "10.232.0.$((i + 1))" "p$i"
done

# wait_port NS HOST PORT
wait_port() {
    for _ in $(seq 100); do
        if ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "nothing listens on $2:$3 in $1"
    return 1
}

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

backend_pids=()
proxy_pid=""

start_backends() { # N
    backend_pids=()
    local i
    for i in $(seq "$1"); do
        ip netns exec "${hosts[$((i - 1))]}" taskset -c 0 "$fcgi_uring" serve \
            --listen 0.0.0.0:9000 --workers 1 --no-pin --admin-listen none \
            --ping-path /ping --allowed-peers "$lb_ip" >"$OUT/b$i.log" 2>&1 &
        backend_pids+=($!)
        pids+=($!)
    done
    for i in $(seq "$1"); do
        wait_port "${hosts[$((i - 1))]}" "10.232.0.$((i + 1))" 9000
    done
}

config_haproxy() { # N DIR
    local servers="" i
    for i in $(seq "$1"); do
        servers+="    server s$i 10.232.0.$((i + 1)):9000 proto fcgi check inter 500ms fall 2 rise 2"$'\n'
    done
    cat >"$2/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 20s
    timeout server 20s
fcgi-app app
    docroot /srv
    option keep-conn
frontend web
    bind 127.0.0.1:8080
    default_backend app
backend app
    use-fcgi-app app
    http-reuse always
    balance roundrobin
    option httpchk GET /ping
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response
$servers
EOF
    echo haproxy -db -f "$2/haproxy.cfg"
}

config_nginx() { # N DIR
    local servers="" i
    for i in $(seq "$1"); do
        servers+="        server 10.232.0.$((i + 1)):9000 max_fails=1 fail_timeout=2s;"$'\n'
    done
    mkdir -p "$2/nginx"
    cat >"$2/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $2/nginx/error.log warn;
pid $2/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $2/nginx/client_body;
    fastcgi_temp_path $2/nginx/fastcgi;
    proxy_temp_path $2/nginx/proxy;
    uwsgi_temp_path $2/nginx/uwsgi;
    scgi_temp_path $2/nginx/scgi;
    upstream app {
$servers        keepalive $NGINX_KEEPALIVE;
    }
    server {
        listen 127.0.0.1:8080;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_pass app;
            fastcgi_keep_conn on;
            fastcgi_next_upstream error timeout;
            fastcgi_next_upstream_tries 2;
        }
    }
}
EOF
    echo nginx -p "$2/nginx" -c "$2/nginx.conf" -e "$2/nginx/error.log"
}

config_caddy() { # N DIR
    local upstreams="" i
    for i in $(seq "$1"); do
        upstreams+=" 10.232.0.$((i + 1)):9000"
    done
    cat >"$2/Caddyfile" <<EOF
{
    admin off
    auto_https off
    storage file_system $2/caddy
    log {
        output stderr
        level WARN
    }
}
http://:8080 {
    bind 127.0.0.1
    reverse_proxy$upstreams {
        lb_policy round_robin
        lb_try_duration 2s
        fail_duration 2s
        max_fails 1
        transport fastcgi {
            root /srv
        }
    }
}
EOF
    echo caddy run --adapter caddyfile --config "$2/Caddyfile"
}

start_proxy() { # PROXY N
    local dir="$OUT/$1-$2" cmd
    mkdir -p "$dir"
    read -r -a cmd <<<"$("config_$1" "$2" "$dir")"
    HOME="$dir" XDG_DATA_HOME="$dir/caddy" XDG_CONFIG_HOME="$dir/caddy" GOMAXPROCS=1 \
        ip netns exec "$lb" taskset -c 0 "${cmd[@]}" >"$dir/proxy.log" 2>&1 &
    proxy_pid=$!
    pids+=($!)
    wait_port "$lb" 127.0.0.1 8080
}

# run PROXY N LOAD ROUND: appends one JSON line to $OUT/results.jsonl.
run() {
    local proxy="$1" n="$2" load="$3" round="$4" args=()
    case "$load" in
        get) args=(/hello) ;;
        post) args=(--body-bytes 1024 /echo) ;;
    esac
    start_backends "$n"
    start_proxy "$proxy" "$n"
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
    sw_before=$(switches "${backend_pids[@]}")
    before=$(cpu_ticks "$proxy_pid" "${backend_pids[@]}" | tr '\n' ' ')
    "${client[@]}" --duration "$DURATION" --warmup 0 "${args[@]}" >"$OUT/run.json" 2>"$OUT/run.err"
    after=$(cpu_ticks "$proxy_pid" "${backend_pids[@]}" | tr '\n' ' ')
    sw_after=$(switches "${backend_pids[@]}")
    stop_all
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

#!/usr/bin/env bash
# A multi-host lab on one machine to try fcgi-uring behind a load balancer: N backend hosts and
# a proxy host, each its own network namespace on a private bridge, torn down at Ctrl-C.
#
# Usage: sudo bench/lab.sh [--proxy nginx|haproxy|caddy] [--backends N] [PATH/TO/fcgi-uring]
#        bench/lab.sh --help
#   --proxy     the load balancer (default nginx), configured as docs/deploy/scale-out.md shows
#   --backends  how many backend hosts, 1 to 8 (default 3)
#   Without a binary, builds fcgi-uring (cargo build --release -p fcgi-uring-cli).
#
#   The proxy host `lb` is 10.233.0.1, backend host bI is 10.233.0.(I+1); the namespaces are
#   named fcgi-shlab-PID-lb, fcgi-shlab-PID-b1... (PID: this script's). Each backend runs
#   `fcgi-uring serve` (the demo app) on 0.0.0.0:9000 with the lb as its only allowed peer,
#   the ping path /ping, `--drain-delay 1.5` and its admin listener (metrics, /readyz) on
#   127.0.0.1:9100 in its own namespace. The proxy listens on 10.233.0.1:8080 in the lb's.
#   Prints what runs where and how to use it, then `lab ready` once every backend is ready
#   and a request through the proxy is answered; then waits. Ctrl-C or SIGTERM stops every
#   process in the lab and deletes its namespaces (also when the start fails).
# Needs: root (ip netns), ip, curl, and the proxy chosen.
set -euo pipefail

usage() { sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"; }
die() {
    echo "lab.sh: $*" >&2
    exit 2
}

proxy=nginx
backends=3
fcgi_uring=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --proxy)
            [[ $# -ge 2 ]] || die "--proxy needs a value: nginx, haproxy or caddy"
            proxy="$2"
            shift 2
            ;;
        --proxy=*)
            proxy="${1#*=}"
            shift
            ;;
        --backends)
            [[ $# -ge 2 ]] || die "--backends needs a number from 1 to 8"
            backends="$2"
            shift 2
            ;;
        --backends=*)
            backends="${1#*=}"
            shift
            ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [[ -z "$fcgi_uring" ]] || die "one fcgi-uring binary at most, got $fcgi_uring and $1"
            fcgi_uring="$1"
            shift
            ;;
    esac
done
case "$proxy" in
    nginx | haproxy | caddy) ;;
    *) die "unknown proxy '$proxy': nginx, haproxy or caddy" ;;
esac
[[ "$backends" =~ ^[1-8]$ ]] || die "--backends must be a number from 1 to 8, got '$backends'"
[[ $EUID -eq 0 ]] || die "needs root to create network namespaces (run it with sudo)"
for tool in ip curl "$proxy"; do
    command -v "$tool" >/dev/null || die "$tool not found (install it: apt-get install $(
        case "$tool" in ip) echo iproute2 ;; *) echo "$tool" ;; esac
    ))"
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
if [[ -z "$fcgi_uring" ]]; then
    echo "== building (release): cargo build --release -p fcgi-uring-cli" >&2
    (cd "$root" && cargo build --release -q -p fcgi-uring-cli)
    fcgi_uring="$root/target/release/fcgi-uring"
fi
[[ -x "$fcgi_uring" ]] || die "$fcgi_uring is not an executable file"
fcgi_uring="$(cd "$(dirname "$fcgi_uring")" && pwd)/$(basename "$fcgi_uring")"

# shellcheck source=bench/lab-lib.sh
source "$here/lab-lib.sh"
lab_tag="fcgi-shlab-$$"
lab_net=10.233.0
lab_dir="$(mktemp -d "${TMPDIR:-/tmp}/fcgi-lab.XXXXXX")"
lab_proxy_bind=0.0.0.0
NGINX_KEEPALIVE=64
lab_haproxy_server_opts="slowstart 2s"
lab_haproxy_backend_extra="    http-request disable-l7-retry unless METH_GET"
sleeper=""
finish() {
    local rc=$?
    trap - EXIT INT TERM
    set +e # tear down all of it, whatever fails
    [[ -n "$sleeper" ]] && kill "$sleeper" 2>/dev/null
    echo "== tearing the lab down" >&2
    lab_cleanup
    if [[ $rc -ne 0 ]]; then
        echo "lab.sh: failed (exit $rc); the lab is torn down; its logs:" >&2
        tail -n 5 "$lab_dir"/b*.log "$lab_dir"/*/proxy.log >&2 2>/dev/null || true
    fi
    rm -rf "$lab_dir"
    exit "$rc"
}
trap finish EXIT
# A requested stop is the normal end: exit 0 after the teardown.
trap 'exit 0' INT TERM

lab_create "$backends"
backend_args() { # I: the flags of backend host I besides lab-lib's
    echo --admin-listen 127.0.0.1:9100 --drain-delay 1.5 --pid-file "$lab_dir/b$1.pid"
}
for i in $(seq "$backends"); do
    # shellcheck disable=SC2046
    lab_start_backend "$i" $(backend_args "$i")
done
lab_wait_backends "$backends"
lab_start_proxy "$proxy" "$backends"

# Ready: every backend's /readyz answers 200 and the proxy answers GET /hello with 200.
ready() {
    local i
    for i in $(seq "$backends"); do
        ip netns exec "${lab_hosts[$((i - 1))]}" curl -sf -m 2 -o /dev/null \
            http://127.0.0.1:9100/readyz || return 1
    done
    [[ "$(ip netns exec "$lab_lb" curl -s -m 2 -o /dev/null -w '%{http_code}' \
        "http://$lab_lb_ip:8080/hello")" == 200 ]]
}
is_ready=""
for _ in $(seq 100); do
    ready && is_ready=1 && break
    sleep 0.1
done
[[ -n "$is_ready" ]] || {
    echo "lab.sh: the lab does not answer" >&2
    exit 1
}

b1="${lab_hosts[0]}"
cat <<EOF
fcgi-uring lab: $proxy in front of $backends backend host(s); files in $lab_dir

  host  namespace                  address       runs
  lb    $(printf '%-26s %-13s' "$lab_lb" "$lab_lb_ip") $proxy on :8080 (pid $lab_proxy_pid)
EOF
for i in $(seq "$backends"); do
    printf '  b%-4s%-26s %-13s fcgi-uring on :9000, admin 127.0.0.1:9100 (pid %s, pid file %s)\n' \
        "$i" "${lab_hosts[$((i - 1))]}" "$(lab_ip "$i")" "${lab_backend_pids[$((i - 1))]}" \
        "$lab_dir/b$i.pid"
done
cat <<EOF

Try it (as root, from another terminal):
  through the proxy:     ip netns exec $lab_lb curl http://$lab_lb_ip:8080/hello
  under load:            ip netns exec $lab_lb $root/target/release/fcgi-loadtest run \\
                             --protocol http1 --addr $lab_lb_ip:8080 --duration 10 /hello
                         (cargo build --release -p fcgi-loadtest)
  a host's share:        ip netns exec $b1 curl -s 127.0.0.1:9100/metrics | grep '^fcgi_uring_requests'
  drain a host:          kill -TERM \$(cat $lab_dir/b1.pid)
                         (ping and /readyz answer 503 for 1.5 s, then it answers what it has and exits)
  kill a host:           kill -KILL \$(cat $lab_dir/b1.pid)
  cut a host off:        ip -n $b1 link set eth0 down     (back: ... up)
  hot upgrade a host:    $fcgi_uring reload --pid-file $lab_dir/b1.pid
  start a host again:    ip netns exec $b1 $fcgi_uring serve --listen 0.0.0.0:9000 \\
                             --workers 1 --no-pin --ping-path /ping --allowed-peers $lab_lb_ip \\
                             $(backend_args 1) &
  the proxy's files:     $lab_dir/$proxy-$backends/
Ctrl-C here (or kill -TERM $$) stops everything in the lab and deletes its namespaces.
lab ready
EOF

# Wait for Ctrl-C or SIGTERM (a trap runs as soon as `wait` is interrupted).
sleep infinity &
sleeper=$!
wait "$sleeper"

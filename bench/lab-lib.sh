# A multi-host lab of network namespaces, sourced by bench/lab.sh and bench/scale-out-cost.sh
# (the tests build the same one in Rust: crates/fcgi-uring-cli/tests/common/lab.rs).
#
# A bridge in a namespace of its own (the "switch"), a proxy host `lb` at NET.1 and backend
# hosts b1..bN at NET.2.., each linked to the bridge by a veth pair: all traffic stays inside
# the lab, and labs running at once are separate networks. Each backend runs `fcgi-uring serve`
# on 0.0.0.0:9000 (the lb as its only allowed peer, the ping path /ping); the proxy in the lb
# namespace listens on port 8080 with the configuration of docs/deploy/scale-out.md.
#
# The caller sets, before lab_create:
#   lab_tag        prefix of the namespaces' names (include $$: "$lab_tag-lb", "$lab_tag-b1")
#   lab_net        the /24 as three octets (10.232.0)
#   lab_dir        where configurations and logs go
#   fcgi_uring     the fcgi-uring binary
# and may set:
#   lab_pin=(taskset -c 0)           run the proxy and the backends under this prefix
#   lab_proxy_env=(GOMAXPROCS=1)     environment of the proxy
#   lab_proxy_bind=127.0.0.1         the proxy's listen address in the lb namespace
#   NGINX_KEEPALIVE=64               nginx's upstream keepalive
#   lab_haproxy_server_opts=""       appended to each HAProxy `server` line
#   lab_haproxy_backend_extra=""     lines appended to HAProxy's backend section
# Teardown: trap lab_cleanup on EXIT; it stops every process started here, then anything
# still running in the lab's namespaces, and deletes the namespaces.

lab_pin=("${lab_pin[@]+"${lab_pin[@]}"}")
lab_proxy_env=("${lab_proxy_env[@]+"${lab_proxy_env[@]}"}")
lab_proxy_bind="${lab_proxy_bind:-127.0.0.1}"
NGINX_KEEPALIVE="${NGINX_KEEPALIVE:-64}"
lab_haproxy_server_opts="${lab_haproxy_server_opts:-}"
lab_haproxy_backend_extra="${lab_haproxy_backend_extra:-}"

lab_sw=""          # the switch's namespace
lab_lb=""          # the proxy host's namespace
lab_lb_ip=""
lab_hosts=()       # the backend hosts' namespaces, b1 first
lab_pids=()        # every process started (stopped by lab_stop_all)
lab_backend_pids=()
lab_proxy_pid=""
lab_namespaces=()  # every namespace created (deleted by lab_cleanup)

lab_log() { echo "== $*" >&2; }

# lab_create N: the switch, the lb and N backend hosts.
lab_create() {
    lab_sw="$lab_tag-sw"
    lab_lb="$lab_tag-lb"
    lab_lb_ip="$lab_net.1"
    ip netns add "$lab_sw"
    lab_namespaces+=("$lab_sw")
    ip -n "$lab_sw" link add br0 type bridge
    ip -n "$lab_sw" link set br0 up
    lab_add_host "$lab_lb" "$lab_lb_ip" p0
    local i
    for i in $(seq "$1"); do
        lab_hosts+=("$lab_tag-b$i")
        lab_add_host "$lab_tag-b$i" "$(lab_ip "$i")" "p$i"
    done
}

# lab_ip I: backend host I's address.
lab_ip() { echo "$lab_net.$(($1 + 1))"; }

# lab_add_host NS IP PORT: a namespace linked to the bridge by its eth0 (the bridge side: PORT).
lab_add_host() {
    ip netns add "$1"
    lab_namespaces+=("$1")
    ip -n "$1" link set lo up
    ip -n "$1" link add eth0 type veth peer name "$3" netns "$lab_sw"
    ip -n "$lab_sw" link set "$3" master br0
    ip -n "$lab_sw" link set "$3" up
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
}

# lab_wait_port NS HOST PORT: until something accepts on HOST:PORT in NS (10 s at most).
lab_wait_port() {
    local _
    for _ in $(seq 100); do
        if ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    lab_log "nothing listens on $2:$3 in $1"
    return 1
}

# lab_backend_command I [ARGS...]: prints nothing; sets lab_cmd to the command that runs
# backend host I (one worker, unpinned, the lb as its only peer, the ping path) plus ARGS.
lab_backend_command() {
    local i="$1"
    shift
    lab_cmd=(ip netns exec "${lab_hosts[$((i - 1))]}" "${lab_pin[@]+"${lab_pin[@]}"}"
        "$fcgi_uring" serve --listen 0.0.0.0:9000 --workers 1 --no-pin --ping-path /ping
        --allowed-peers "$lab_lb_ip" "$@")
}

# lab_start_backend I [ARGS...]: starts backend host I (log: $lab_dir/bI.log), appends its pid
# to lab_backend_pids.
lab_start_backend() {
    local i="$1"
    lab_backend_command "$@"
    "${lab_cmd[@]}" >"$lab_dir/b$i.log" 2>&1 </dev/null &
    lab_backend_pids+=($!)
    lab_pids+=($!)
}

# lab_wait_backends N: until backends 1..N accept FastCGI connections from the lb (their
# allowed peer: a connection from elsewhere would be refused and logged).
lab_wait_backends() {
    local i
    for i in $(seq "$1"); do
        lab_wait_port "$lab_lb" "$(lab_ip "$i")" 9000
    done
}

config_haproxy() { # N DIR
    local servers="" extra="" i
    [[ -n "$lab_haproxy_backend_extra" ]] && extra="$lab_haproxy_backend_extra"$'\n'
    for i in $(seq "$1"); do
        servers+="    server s$i $(lab_ip "$i"):9000 proto fcgi check inter 500ms fall 2 rise 2${lab_haproxy_server_opts:+ $lab_haproxy_server_opts}"$'\n'
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
    bind $lab_proxy_bind:8080
    default_backend app
backend app
    use-fcgi-app app
    http-reuse always
    balance roundrobin
    option httpchk GET /ping
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response
$extra$servers
EOF
    echo haproxy -db -f "$2/haproxy.cfg"
}

config_nginx() { # N DIR
    local servers="" i
    for i in $(seq "$1"); do
        servers+="        server $(lab_ip "$i"):9000 max_fails=1 fail_timeout=2s;"$'\n'
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
        listen $lab_proxy_bind:8080;
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
        upstreams+=" $(lab_ip "$i"):9000"
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
    bind $lab_proxy_bind
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

# lab_start_proxy PROXY N: PROXY (haproxy, nginx, caddy) in the lb namespace in front of
# backends 1..N, its files in $lab_dir/PROXY-N; waits until it accepts on port 8080.
lab_start_proxy() {
    local dir="$lab_dir/$1-$2" cmd
    mkdir -p "$dir"
    read -r -a cmd <<<"$("config_$1" "$2" "$dir")"
    env HOME="$dir" XDG_DATA_HOME="$dir/caddy" XDG_CONFIG_HOME="$dir/caddy" \
        "${lab_proxy_env[@]+"${lab_proxy_env[@]}"}" \
        ip netns exec "$lab_lb" "${lab_pin[@]+"${lab_pin[@]}"}" "${cmd[@]}" \
        >"$dir/proxy.log" 2>&1 </dev/null &
    lab_proxy_pid=$!
    lab_pids+=($!)
    local where="$lab_proxy_bind"
    [[ "$where" == 0.0.0.0 ]] && where="$lab_lb_ip"
    lab_wait_port "$lab_lb" "$where" 8080
}

# lab_stop_all: SIGTERM to every process started, and waits for them.
lab_stop_all() {
    local pid
    for pid in "${lab_pids[@]+"${lab_pids[@]}"}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${lab_pids[@]+"${lab_pids[@]}"}"; do
        wait "$pid" 2>/dev/null || true
    done
    lab_pids=()
    lab_backend_pids=()
    lab_proxy_pid=""
}

# lab_cleanup: stops the processes, kills what still runs in the lab's namespaces (a server
# started by hand, or the new process of a hot upgrade), deletes the namespaces.
lab_cleanup() {
    lab_stop_all
    local ns pids
    local left=()
    for ns in "${lab_namespaces[@]+"${lab_namespaces[@]}"}"; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        # shellcheck disable=SC2206
        left+=($pids)
    done
    if [[ ${#left[@]} -gt 0 ]]; then
        kill -KILL "${left[@]}" 2>/dev/null || true
        local _ pid
        for _ in $(seq 50); do
            pids=""
            for pid in "${left[@]}"; do
                [[ -e /proc/$pid ]] && pids+=" $pid"
            done
            [[ -z "$pids" ]] && break
            sleep 0.1
        done
    fi
    for ns in "${lab_namespaces[@]+"${lab_namespaces[@]}"}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    lab_namespaces=()
}

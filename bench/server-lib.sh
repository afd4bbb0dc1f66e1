# Sourced by the bench scripts that run one server at a time: `server_pid` is the running one,
# `stop_server` kills and reaps it (nothing when none runs). `start_server`, `loadtest_case` and
# `wrk_case` use the caller's OUT, SERVER_CPU, CLIENT_CPU, DURATION, loadtest, results and round
# (a script may define its own in their place after sourcing this).
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}

# start_server PORT CMD...: starts CMD pinned to the server core, waits for PORT to accept.
start_server() {
    local port="$1"
    shift
    # A stale server on the same port would share the connections (SO_REUSEPORT) and corrupt
    # the figures: refuse to start.
    if ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
        log "port $port is already in use: stop the process listening on it first"
        return 1
    fi
    taskset -c "$SERVER_CPU" "$@" >"$OUT/server-$port.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            log "server on port $port exited: $(tail -5 "$OUT/server-$port.log")"
            server_pid=""
            return 1
        fi
        sleep 0.1
    done
    log "server on port $port did not start listening"
    return 1
}

# loadtest_case NAME ARGS...: one fcgi-loadtest run against the running server.
loadtest_case() {
    local name="$1"
    shift
    log "$name (round $round)"
    local file="$OUT/$name.r$round.json"
    if taskset -c "$CLIENT_CPU" "$loadtest" run --cpus "$CLIENT_CPU" --threads 1 \
        --duration "$DURATION" --warmup 1 --expect-body 'Hello, World!' \
        --server-pid "$server_pid" --json "$@" /hello >"$file"; then
        printf '%s\tloadtest\t%s\n' "$name" "$file" >>"$results"
    else
        printf '%s\tfailed\t-\n' "$name" >>"$results"
    fi
}

# wrk_case NAME URL: one wrk run; server CPU from /proc around it.
wrk_case() {
    local name="$1" url="$2"
    log "$name (round $round)"
    local file="$OUT/$name.r$round.wrk"
    local before after
    before=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
    taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${DURATION}s" --latency "$url" >"$file"
    after=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
    echo "server_ticks $((after - before)) $(getconf CLK_TCK)" >>"$file"
    printf '%s\twrk\t%s\n' "$name" "$file" >>"$results"
}

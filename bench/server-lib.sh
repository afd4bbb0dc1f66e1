# Sourced by the bench scripts that run one server at a time: `server_pid` is the running one,
# `stop_server` kills and reaps it (nothing when none runs).
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}

#!/usr/bin/env bash
# Makes crates/fcgi-uring-cli/hot-functions.txt: the functions every request runs, by their
# linker names, which the release build of `fcgi-uring` lays out first and together (that
# crate's build.rs). Run it again when the request path changed much, or after a toolchain
# update (the names carry hashes that change with the compiler): names the binary no longer has
# are skipped by the linker, so a stale list costs only layout.
#
# How: the release build of `fcgi-uring serve --workers 1` runs under callgrind
# (`bench/callgrind-server.sh`, names kept mangled, every instruction's address dumped) on each
# IO backend, under GET /hello at one
# connection and at 64; `bench/code-lines.py --names` lists the functions with code run once
# per request or more; the lists are merged in that order (each name once) and kept to the
# binary's own functions.
#
# Usage: tuning/hot-functions.sh [OUT]   (default: crates/fcgi-uring-cli/hot-functions.txt)
#        tuning/hot-functions.sh --help
# Environment:
#   DURATION=4   seconds of each load under callgrind
#   PORT         the loopback port the server listens on (default: a free one)
# Needs valgrind and python3; builds the release binaries first. Pins the server to CPU 0 and
# the load to CPU 1 when the machine has two CPUs.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-$root/crates/fcgi-uring-cli/hot-functions.txt}"
command -v valgrind >/dev/null || { echo "hot-functions.sh: needs valgrind" >&2; exit 1; }
(cd "$root" && cargo build --release -p fcgi-uring-cli -p fcgi-loadtest)
server="$root/target/release/fcgi-uring"
loadtest="$root/target/release/fcgi-loadtest"
port="${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
# The load on CPU 1 when there is one.
client_cpu=0
[[ $(nproc) -ge 2 ]] && client_cpu=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for io in uring epoll; do
    for conns in 1 64; do
        profile="$work/$io-$conns.out"
        counted=$(OUT="$profile" CONNS="$conns" DEPTH=1 DURATION="${DURATION:-4}" \
            SERVER_CPU=0 CLIENT_CPU="$client_cpu" LOADTEST="$loadtest" \
            CALLGRIND_ARGS="--demangle=no --dump-instr=yes" \
            "$root/bench/callgrind-server.sh" "$port" -- "$server" serve \
            --listen "127.0.0.1:$port" --workers 1 --admin-listen none --io "$io")
        requests=$(grep -o 'requests=[0-9]*' <<<"$counted" | cut -d= -f2)
        python3 "$root/bench/code-lines.py" "$profile" --requests "$requests" --names \
            >>"$work/names"
        echo "$io, $conns connection(s): $requests requests profiled" >&2
    done
done
nm --defined-only "$server" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/symbols"
awk 'NR == FNR {own[$0] = 1; next} own[$0] && !seen[$0]++' "$work/symbols" "$work/names" >"$out"
echo "$(wc -l <"$out") functions written to $out" >&2

#!/usr/bin/env bash
# A profile-guided (PGO) release build of a server binary: an instrumented build, a training
# run under fcgi-loadtest, the profile merged with llvm-profdata, and the optimized build, which
# lays out and inlines the code the way the requests ran it.
#
# Usage: tuning/pgo-build.sh [--package PKG --bin BIN] [-- SERVE_ARGS...]
#        tuning/pgo-build.sh --help
#   --package PKG --bin BIN   the binary to build (default: fcgi-uring from fcgi-uring-cli, the
#                             server with the demo app); an application's own binary works the
#                             same way if it serves FastCGI where SERVE_ARGS tell it to
#   SERVE_ARGS   the binary's arguments for the training, {addr} standing for the loopback
#                address it must listen on (default: serve --listen {addr} --workers 1
#                --admin-listen none); it must exit on SIGINT (the profile is written at exit)
# Environment:
#   TRAIN_SECONDS=3   seconds of each training load
#   GETS="/hello"     paths requested with GET (space-separated)
#   POSTS             PATH:BYTES pairs posted with a body of BYTES (default "/echo:1024
#                     /echo:65536" for the default binary, none for another)
#   HTTP1=1           the default binary is also trained over HTTP/1.1 (--protocol http1), so
#                     that both of its protocols gain; 0: FastCGI only
#   PGO_DIR=target/pgo   where the builds and the profiles go; the binary is
#                     PGO_DIR/release/BIN, built with the profile PGO_DIR/BIN-<hash>.profdata
#   PORT              the loopback port the training server listens on (default: a free one)
#   LOADTEST          the fcgi-loadtest binary (default: target/release/fcgi-loadtest, built)
#   LLVM_PROFDATA     the llvm-profdata to use (default: the one of rustc's LLVM major version:
#                     llvm-profdata-N on PATH, /usr/lib/llvm-N/bin/llvm-profdata, or rustup's
#                     llvm-tools; Debian: apt-get install llvm-N)
# The training: the instrumented binary pinned to CPU 0 and fcgi-loadtest to CPU 1 when the
# machine has two CPUs; every GET at one connection, one connection with 16 requests in flight
# and 64 connections, every POST at 16 connections; once per IO backend (FCGI_URING_IO=uring,
# then epoll; a backend that cannot start here, io_uring in most containers, is left out with a
# note). The instrumented build and the optimized one use their own target directories, so a
# normal `cargo build --release` is untouched. Needs a C compiler (mimalloc) as any build does.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
package=fcgi-uring-cli bin=fcgi-uring custom=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --package) package=$2; custom=1; shift 2 ;;
        --bin) bin=$2; custom=1; shift 2 ;;
        --) shift; break ;;
        *) echo "pgo-build.sh: unknown argument $1 (--help for usage)" >&2; exit 2 ;;
    esac
done
serve_args=("$@")
if [[ ${#serve_args[@]} -eq 0 ]]; then
    if [[ $custom == 1 ]]; then
        echo "pgo-build.sh: with --package/--bin, give the binary's arguments after -- ({addr} for its address)" >&2
        exit 2
    fi
    serve_args=(serve --listen '{addr}' --workers 1 --admin-listen none)
fi
if [[ $custom == 1 ]]; then
    posts=${POSTS:-}
    http1=0
else
    posts=${POSTS-/echo:1024 /echo:65536}
    http1=${HTTP1:-1}
fi
gets=${GETS:-/hello}
seconds=${TRAIN_SECONDS:-3}
pgo_dir="$(mkdir -p "${PGO_DIR:-$root/target/pgo}" && cd "${PGO_DIR:-$root/target/pgo}" && pwd)"

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
find_profdata() {
    if [[ -n "${LLVM_PROFDATA:-}" ]]; then
        if [[ -x "$LLVM_PROFDATA" ]]; then
            echo "$LLVM_PROFDATA"
        fi
        return 0
    fi
    local host candidate
    host=$(rustc -vV | sed -n 's/^host: //p')
    for candidate in "$(command -v "llvm-profdata-$llvm_major" || true)" \
        "/usr/lib/llvm-$llvm_major/bin/llvm-profdata" \
        "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return
        fi
    done
}
profdata=$(find_profdata)
if [[ -z "$profdata" ]]; then
    echo "pgo-build.sh: no llvm-profdata for LLVM $llvm_major (rustc's)${LLVM_PROFDATA:+: $LLVM_PROFDATA is not an executable}:" \
        "apt-get install llvm-$llvm_major, or rustup component add llvm-tools, or set LLVM_PROFDATA" >&2
    exit 1
fi

raw="$pgo_dir/raw"
rm -rf "$raw"
mkdir -p "$raw"
echo "pgo-build.sh: the instrumented build ($package, $bin)" >&2
if [[ -z "${LOADTEST:-}" ]]; then
    (cd "$root" && cargo build --release -q -p fcgi-loadtest)
fi
loadtest="${LOADTEST:-$root/target/release/fcgi-loadtest}"
(cd "$root" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" CARGO_TARGET_DIR="$pgo_dir/gen" \
    cargo build --release -q -p "$package" --bin "$bin")
# Build scripts ran instrumented too: their profiles would only add noise.
rm -rf "$raw"
mkdir -p "$raw"
instrumented="$pgo_dir/gen/release/$bin"

server_cpu=() client_cpu=()
if [[ $(nproc) -ge 2 ]]; then
    server_cpu=(taskset -c 0)
    client_cpu=(taskset -c 1)
fi
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=${PORT:-}
if [[ -z "$port" ]]; then
    port=$((12000 + RANDOM % 20000))
    while accepts "$port"; do port=$((12000 + RANDOM % 20000)); done
elif accepts "$port"; then
    echo "pgo-build.sh: something already listens on port $port" >&2
    exit 1
fi
addr="127.0.0.1:$port"
args=()
for a in "${serve_args[@]}"; do
    args+=("${a//\{addr\}/$addr}")
done

# Runs one training load; fails the build if the load failed or saw errors (a path the binary
# does not serve answers 404: a training on error pages is not the traffic it will see).
load() {
    if ! "${client_cpu[@]}" "$loadtest" run --addr "$addr" --warmup 0 --duration "$seconds" "$@" \
        >"$pgo_dir/load.log" 2>&1 || ! grep -q '^  errors          0 ' "$pgo_dir/load.log"; then
        echo "pgo-build.sh: the training load failed (fcgi-loadtest run $*):" >&2
        cat "$pgo_dir/load.log" >&2
        return 1
    fi
}

# Trains on backend $1 over protocol $2 (extra serve arguments after them); returns 3 when the
# server cannot start on that backend here.
train() {
    local io=$1 protocol=$2
    shift 2
    FCGI_URING_IO=$io "${server_cpu[@]}" "$instrumented" "${args[@]}" "$@" >"$pgo_dir/serve.log" 2>&1 &
    local server=$! up=0
    for _ in $(seq 1 100); do
        if accepts "$port"; then
            up=1
            break
        fi
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if [[ $up == 0 ]]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        echo "pgo-build.sh: the server did not start with FCGI_URING_IO=$io: $(tail -3 "$pgo_dir/serve.log")" >&2
        return 3
    fi
    local path spec ok=1
    for path in $gets; do
        load --protocol "$protocol" --conns 1 --depth 1 "$path" || ok=0
        if [[ $protocol == fastcgi ]]; then
            load --protocol "$protocol" --conns 1 --depth 16 "$path" || ok=0
        fi
        load --protocol "$protocol" --conns 64 --depth 1 "$path" || ok=0
    done
    for spec in $posts; do
        load --protocol "$protocol" --conns 16 --body-bytes "${spec##*:}" "${spec%:*}" || ok=0
    done
    kill -INT "$server"
    if ! wait "$server"; then
        echo "pgo-build.sh: the server did not exit cleanly on SIGINT (its profile may be lost):" >&2
        tail -5 "$pgo_dir/serve.log" >&2
        return 1
    fi
    [[ $ok == 1 ]]
}

trained=0
for io in uring epoll; do
    echo "pgo-build.sh: training on $io for ${seconds} s per load" >&2
    status=0
    train "$io" fastcgi || status=$?
    if [[ $status == 3 ]]; then
        continue
    elif [[ $status != 0 ]]; then
        exit 1
    fi
    trained=$((trained + 1))
    if [[ $http1 == 1 ]]; then
        train "$io" http1 --protocol http1 || exit 1
    fi
done
if [[ $trained == 0 ]]; then
    echo "pgo-build.sh: the server started on no IO backend; nothing to train on" >&2
    exit 1
fi

merged="$pgo_dir/merged.profdata"
"$profdata" merge -o "$merged" "$raw"
# Named after its content: a new profile changes RUSTFLAGS, so cargo rebuilds with it.
hash=$(sha256sum "$merged" | cut -c1-16)
profile="$pgo_dir/$bin-$hash.profdata"
mv "$merged" "$profile"
echo "pgo-build.sh: the optimized build with $profile" >&2
(cd "$root" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile -Cllvm-args=-pgo-warn-missing-function=false" \
    CARGO_TARGET_DIR="$pgo_dir" cargo build --release -q -p "$package" --bin "$bin")
echo "$pgo_dir/release/$bin"

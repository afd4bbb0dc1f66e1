#!/usr/bin/env python3
"""Backend CPU per request behind nginx (or HAProxy), split into user and system time:
fcgi-uring over FastCGI (both IO backends) and over HTTP/1.1 (hyper), and the no-application
FastCGI floors, each behind the same proxy, at 1, 16 and 64 clients.

Usage: bench/behind-nginx.py [--rounds 3] [--duration 4] [--clients 1,16,64] [--only NAMES]
                             [--variant NAME=CASE:ARGS ...] [--sched normal,batch]
                             [--base PATH] [--callgrind] [--proxy nginx|haproxy]
                             [--body-bytes N] [--unix] [--keep-counts DIR]

Cases (the backend on 127.0.0.1:9372, or with --unix on a UNIX socket, the proxy on
127.0.0.1:9371, both pinned to CPU 0;
fcgi-loadtest pinned to CPU 1 sends GET /hello, or POST /echo with --body-bytes, over HTTP/1.1
with one kept-alive connection per client):
  floor         fcgi-floor (io_uring, no application), fastcgi_pass with fastcgi_keep_conn
  floor-epoll   fcgi-floor --epoll
  surface, surface-epoll   fcgi-floor --surface, fcgi-floor --epoll --surface: the floors with
                every request answered through the http surface (an http::Request handed to
                the demo's /hello steps through tower::Service): what a FastCGI backend whose
                protocol side cost nothing would spend
  uring         fcgi-uring serve --io uring, fastcgi_pass with fastcgi_keep_conn
  epoll         fcgi-uring serve --io epoll
  hyper         fcgi-uring serve --protocol http1, proxy_pass with HTTP/1.1 keepalive
  --variant NAME=CASE:ARGS   one case more: CASE's backend with ARGS appended, e.g.
                             'epoll-1ms=epoll:--idle-wait-us 1000' (repeatable)
  --base PATH                base-uring, base-epoll, base-hyper: another fcgi-uring binary
                             (an older build, a profile-guided one) on both IO backends and
                             over HTTP/1.1, in the same rounds
  --sched POLICIES           the backends' scheduling policies, each case run under each:
                             normal (the default), batch (SCHED_BATCH with `chrt --batch 0`,
                             cases named NAME-batch: a woken backend does not preempt nginx
                             on their shared CPU); each case is compared with hyper under
                             the same policy
  --proxy haproxy            HAProxy in nginx's place: FastCGI through an fcgi-app with
                             keep-conn, get-values, mpxs-conns and max-reqs 100 (requests
                             multiplexed on kept connections), HTTP/1.1 with http-reuse
                             always; one thread. HAProxy 2.6 answers some multiplexed
                             requests with its own 500s at 64 clients (see
                             docs/deploy/README.md): the run then stops on the errors
  --callgrind                instead of timing: each backend runs under valgrind's callgrind,
                             its counts zeroed after the warmup (callgrind_control -z), and
                             the table gives the instructions it executed per request while
                             loaded (startup, warmup and shutdown excluded); the same for
                             the same binaries and requests whatever the machine is doing,
                             so one round is enough (--rounds is ignored). Needs valgrind.
  --keep-counts DIR          with --callgrind: keep each dump as DIR/CASE-CLIENTS.callgrind,
                             for `callgrind_annotate --inclusive=yes DIR/uring-1.callgrind`
                             (where each case's instructions go)
  --body-bytes N             POST /echo with an N-byte body instead of GET /hello (the demo
                             echoes it; the floor cases are left out, except floor-epoll as
                             `fcgi-floor --epoll --echo`); nginx buffers bodies up to 128 KiB
                             in memory (client_body_buffer_size, as `fcgi-loadtest compare`)
  --unix                     the proxy reaches every backend over a UNIX socket (in the temp
                             directory) instead of TCP on loopback, as many single-host
                             deployments do: nginx's `server unix:PATH`, HAProxy's
                             `server s1 unix@PATH`; the client still reaches the proxy over TCP
nginx: one worker, upstream keepalive 256, access log off. Cases are interleaved over rounds
(each once per round at each client count); the table gives medians of the backend's CPU per
request from /proc/PID/stat (fcgi-loadtest --server-pid), its system part, the client's p99
latency (through nginx), and each case's
total against hyper's of the same run, twice: the ratio of the two medians, and the median of
each round's ratio (hyper run in the same round) with its range and the rounds at or below the
target's 0.85x. The floors (floor, floor-epoll) bound what any FastCGI
backend can cost here: they read only record headers and answer with fixed bytes; the surface
cases add what handing the app an http::Request costs. Builds the release binaries
it runs first. Needs nginx (apt-get install -y nginx), or haproxy with --proxy haproxy.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from benchlib import (fractional_latencies, parse_variant, ratio_summary, round_ratios, stop,
                      wait_listening, wait_port_free)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
TARGET = os.path.join(ROOT, "target", "release")
BACKEND = "127.0.0.1:9372"
FRONT = "127.0.0.1:9371"

FASTCGI = ("include /etc/nginx/fastcgi_params; fastcgi_pass app; fastcgi_keep_conn on;")
HTTP1 = 'proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";'


def cases(base=None, body_bytes=0):
    serve = [os.path.join(TARGET, "fcgi-uring"), "serve", "--listen", BACKEND, "--workers", "1",
             "--admin-listen", "none"]
    floor = os.path.join(TARGET, "fcgi-floor")
    out = {
        "floor": ([floor, BACKEND], FASTCGI),
        "floor-epoll": ([floor, "--epoll", BACKEND], FASTCGI),
        "surface": ([floor, "--surface", BACKEND], FASTCGI),
        "surface-epoll": ([floor, "--epoll", "--surface", BACKEND], FASTCGI),
        "uring": (serve + ["--io", "uring"], FASTCGI),
        "epoll": (serve + ["--io", "epoll"], FASTCGI),
        "hyper": (serve + ["--protocol", "http1"], HTTP1),
    }
    if body_bytes:
        # Only the epoll floor echoes; the others would answer without reading the body.
        out = {n: c for n, c in out.items() if not n.startswith(("floor", "surface"))}
        out["floor-epoll"] = ([floor, "--epoll", "--echo", BACKEND], FASTCGI)
    if base:
        old = [base] + serve[1:]
        out["base-uring"] = (old + ["--io", "uring"], FASTCGI)
        out["base-epoll"] = (old + ["--io", "epoll"], FASTCGI)
        out["base-hyper"] = (old + ["--protocol", "http1"], HTTP1)
    return out


def variant(spec, known):
    """A `--variant NAME=CASE:ARGS`: (NAME, CASE's backend with ARGS appended, its location)."""
    name, case, args = parse_variant(spec, known)
    backend, location = known[case]
    return name, (backend + args, location)


def nginx_conf(work, location):
    temp = " ".join(f"{k}_temp_path {work}/{k};"
                    for k in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"))
    return f"""daemon off;
master_process off;
worker_processes 1;
error_log {work}/error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    {temp}
    client_max_body_size 64m;
    client_body_buffer_size 128k;
    keepalive_requests 100000000;
    upstream app {{ server {BACKEND}; keepalive 256; keepalive_requests 100000000; }}
    server {{ listen {FRONT}; location / {{ {location} }} }}
}}
"""


def haproxy_conf(location):
    """HAProxy in nginx's place: one thread, kept (and for FastCGI multiplexed) connections to
    the backend. The same configuration as `fcgi-loadtest compare`'s (haproxy_conf in
    crates/fcgi-loadtest/src/compare.rs, which this script cannot call): keep them in step."""
    server = f"server s1 {haproxy_address(BACKEND)}"
    fcgi_app = ""
    if location == FASTCGI:
        server = f"use-fcgi-app app\n    {server} proto fcgi"
        fcgi_app = ("fcgi-app app\n    docroot /srv\n    option keep-conn\n"
                    "    option get-values\n    option mpxs-conns\n    option max-reqs 100\n")
    return f"""global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind {FRONT}
    default_backend be
backend be
    {server}
{fcgi_app}"""


def haproxy_address(addr):
    """`addr` as HAProxy writes it: host:port, or unix@PATH for "unix:PATH"."""
    return "unix@" + addr[len("unix:"):] if addr.startswith("unix:") else addr


def start_proxy(proxy, work, name, location, logs):
    """nginx or HAProxy on FRONT in front of BACKEND, pinned to CPU 0, in the foreground."""
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(haproxy_conf(location) if proxy == "haproxy" else nginx_conf(work, location))
    cmd = (["haproxy", "-db", "-f", conf] if proxy == "haproxy" else
           ["nginx", "-p", work, "-c", conf, "-e", os.path.join(work, "error.log")])
    return subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=logs, stderr=logs)


def load(clients, duration, server_pid=None, body_bytes=0):
    cmd = ["taskset", "-c", "1", os.path.join(TARGET, "fcgi-loadtest"), "run", "--protocol",
           "http1", "--addr", FRONT, "--conns", str(clients), "--duration", str(duration),
           "--warmup", "0", "--json", "/echo" if body_bytes else "/hello"]
    if body_bytes:
        cmd[-1:-1] = ["--body-bytes", str(body_bytes)]
        if body_bytes <= 65536:
            # The echo must come back whole: another answer counts as an error. (A longer
            # body would not fit one command-line argument.)
            cmd[-1:-1] = ["--expect-body", "x" * body_bytes]
    if server_pid is not None:
        cmd[-1:-1] = ["--server-pid", str(server_pid)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return fractional_latencies(json.loads(out.stdout))


def run_case(work, name, case, clients, duration, callgrind=False, proxy="nginx",
             body_bytes=0, keep_counts=None):
    """One case at one client count behind `proxy`: its load report, with `callgrind` also the
    instructions the backend executed during the measured load (`instructions`), its dump
    copied into the directory `keep_counts` if given."""
    backend, location = case
    counts = os.path.join(work, f"{name}-{clients}.callgrind")
    if callgrind:
        backend = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}"] + backend
    logs = open(os.path.join(work, f"{name}.log"), "w")
    server = subprocess.Popen(["taskset", "-c", "0"] + backend, stdout=logs, stderr=logs)
    front = start_proxy(proxy, work, name, location, logs)
    try:
        # Under valgrind a backend takes seconds to start.
        wait_listening(BACKEND, [server], deadline=60.0 if callgrind else 10.0)
        wait_listening(FRONT, [front])
        load(clients, 1, body_bytes=body_bytes)  # warms the proxy's upstream connections and both processes
        if callgrind:
            # The server's pid is that of taskset, which execs valgrind.
            subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                           capture_output=True)
            rep = load(clients, duration, body_bytes=body_bytes)
            # Dumped now (to COUNTS.1), not at exit: a backend blocked in io_uring_enter is
            # killed by stop(), and its exit-time dump never comes.
            subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                           capture_output=True)
            rep["instructions"] = instructions(f"{counts}.1")
            if keep_counts:
                shutil.copyfile(f"{counts}.1",
                                os.path.join(keep_counts, f"{name}-{clients}.callgrind"))
            return rep
        # The server's pid is that of taskset, which execs the backend.
        return load(clients, duration, server.pid, body_bytes)
    finally:
        stop(front)
        if callgrind:
            # Counted and dumped already; valgrind would wait for the backend's blocking call.
            server.kill()
            server.wait()
        else:
            stop(server)
        logs.close()
        wait_port_free(BACKEND)
        wait_port_free(FRONT)


def what(body_bytes):
    """The request each client sends, as the tables name it."""
    return f"POST /echo with {body_bytes:,} bytes" if body_bytes else "GET /hello"


def link():
    """How the proxy reaches the backend, as the tables' titles say it."""
    return " over a UNIX socket" if BACKEND.startswith("unix:") else ""


def instructions(counts):
    """The instructions a callgrind dump counts (its `summary:` line)."""
    with open(counts) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"{counts}: no summary line")


def callgrind_table(work, all_cases, names, clients, duration, proxy, body_bytes,
                    keep_counts=None):
    """Runs every case once under callgrind at each client count and prints instructions per
    request, each against hyper's."""
    per_req = {}
    for c in clients:
        for n in names:
            rep = run_case(work, n, all_cases[n], c, duration, callgrind=True, proxy=proxy,
                           body_bytes=body_bytes, keep_counts=keep_counts)
            if rep["errors"] or not rep["requests"]:
                raise SystemExit(f"{n} at {c} clients: {rep['requests']} requests, "
                                 f"{rep['errors']} errors {rep['errors_by_kind']}")
            per_req[(c, n)] = (rep["instructions"] / rep["requests"], rep["requests"])
            print(f"{c} clients {n}: {per_req[(c, n)][0]:,.0f} instructions per request "
                  f"({rep['requests']} requests)", file=sys.stderr)
    print(f"{what(body_bytes)} behind {proxy}{link()}: backend instructions per request (callgrind, "
          f"{duration:g} s of load after a 1 s warmup); {proxy} and backend on CPU 0, client "
          f"on CPU 1")
    print("| clients | case | instructions / request | requests counted | against hyper |")
    print("|---|---|---|---|---|")
    for c in clients:
        for n in names:
            count, reqs = per_req[(c, n)]
            same = "hyper-batch" if n.endswith("-batch") else "hyper"
            ratio = f"{count / per_req[(c, same)][0]:.2f}x" if (c, same) in per_req else "-"
            print(f"| {c} | {n} | {count:,.0f} | {reqs:,} | {ratio} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=CASE:ARGS",
                    help="one case more: CASE's backend with ARGS appended (repeatable)")
    ap.add_argument("--base", help="another fcgi-uring binary (an older build) to compare")
    ap.add_argument("--sched", default="normal",
                    help="comma-separated scheduling policies of the backends: normal, batch")
    ap.add_argument("--callgrind", action="store_true",
                    help="count the backends' instructions per request instead of timing them")
    ap.add_argument("--proxy", default="nginx", choices=["nginx", "haproxy"],
                    help="the proxy in front of the backends")
    ap.add_argument("--body-bytes", type=int, default=0, metavar="N",
                    help="POST /echo with an N-byte body instead of GET /hello")
    ap.add_argument("--unix", action="store_true",
                    help="the backends listen on a UNIX socket instead of TCP on loopback")
    ap.add_argument("--keep-counts", metavar="DIR",
                    help="with --callgrind: keep each case's dump in DIR")
    args = ap.parse_args()
    if args.keep_counts:
        if not args.callgrind:
            raise SystemExit("--keep-counts: needs --callgrind")
        os.makedirs(args.keep_counts, exist_ok=True)
    if args.unix:
        global BACKEND
        BACKEND = "unix:" + os.path.join(tempfile.gettempdir(),
                                         f"behind-nginx-{os.getpid()}.sock")
    if shutil.which(args.proxy) is None:
        raise SystemExit(f"{args.proxy} not found: apt-get install -y {args.proxy}")
    if args.callgrind and shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install -y valgrind")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "fcgi-uring-cli", "-p",
                    "fcgi-loadtest"], cwd=ROOT, check=True)
    if args.body_bytes < 0:
        raise SystemExit("--body-bytes: expected a size in bytes")
    all_cases = cases(args.base, args.body_bytes)
    names = args.only.split(",") if args.only else list(all_cases)
    unknown = [n for n in names if n not in all_cases]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}: {', '.join(all_cases)}")
    for spec in args.variant:
        name, case = variant(spec, cases(body_bytes=args.body_bytes))
        if name in all_cases:
            raise SystemExit(f"--variant {spec!r}: the case {name} exists already")
        all_cases[name] = case
        names.append(name)
    scheds = args.sched.split(",")
    if not scheds or any(p not in ("normal", "batch") for p in scheds):
        raise SystemExit(f"--sched {args.sched!r}: expected normal, batch or both")
    if "batch" in scheds:
        for n in list(names):
            backend, location = all_cases[n]
            all_cases[f"{n}-batch"] = (["chrt", "--batch", "0"] + backend, location)
        # Each case next to its batch twin, so that both meet the same spell of the machine.
        names = [m for n in names
                 for m in ([n] if "normal" in scheds else []) + [f"{n}-batch"]]
    clients = [int(c) for c in args.clients.split(",")]
    if args.callgrind:
        with tempfile.TemporaryDirectory() as work:
            callgrind_table(work, all_cases, names, clients, args.duration, args.proxy,
                            args.body_bytes, args.keep_counts)
        return
    results = {(c, n): [] for c in clients for n in names}
    with tempfile.TemporaryDirectory() as work:
        for r in range(1, args.rounds + 1):
            for c in clients:
                for n in names:
                    rep = run_case(work, n, all_cases[n], c, args.duration, proxy=args.proxy,
                                   body_bytes=args.body_bytes)
                    if rep["errors"]:
                        raise SystemExit(f"{n} at {c} clients: {rep['errors']} errors "
                                         f"{rep['errors_by_kind']}")
                    results[(c, n)].append(rep)
                    print(f"round {r} {c} clients {n}: {rep['rps']:.0f}/s backend "
                          f"{rep['server_cpu_us_per_req']:.2f} us (system "
                          f"{rep['server_system_us_per_req']:.2f})", file=sys.stderr)
    print(f"{what(args.body_bytes)} behind {args.proxy}{link()}: medians of {args.rounds} interleaved rounds of "
          f"{args.duration:g} s; {args.proxy} and backend on CPU 0, client on CPU 1")
    print("| clients | case | requests/s | client p99 | backend CPU / request | user | system "
          "| backend CPU vs hyper (same build and policy) | per round |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in clients:
        def med(name, key):
            return statistics.median(rep[key] for rep in results[(c, name)])
        for n in names:
            # Against hyper of the same build (the base build's cases against its own) and policy.
            prefix = "base-" if n.startswith("base-") and "base-hyper" in names else ""
            same = prefix + ("hyper-batch" if n.endswith("-batch") else "hyper")
            hyper = med(same, "server_cpu_us_per_req") if same in names else None
            cpu = med(n, "server_cpu_us_per_req")
            system = med(n, "server_system_us_per_req")
            user = statistics.median(rep["server_cpu_us_per_req"] - rep["server_system_us_per_req"]
                                     for rep in results[(c, n)])
            ratio = f"{cpu / hyper:.2f}x" if hyper else "-"
            rounds = ratio_summary(round_ratios(results[(c, n)], results[(c, same)],
                                                "server_cpu_us_per_req"), 0.85) \
                if same in names and same != n else "-"
            print(f"| {c} | {n} | {med(n, 'rps'):,.0f} | {med(n, 'p99_us'):,.1f} us "
                  f"| {cpu:.2f} us | {user:.2f} us | {system:.2f} us | {ratio} | {rounds} |")


if __name__ == "__main__":
    main()

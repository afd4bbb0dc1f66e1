#!/usr/bin/env python3
"""Every load of the summary table of docs/performance.md in one run: this build, an older
build (--base) and each load's bound, so that a change is judged at every load at once.

Usage: bench/every-load.py --base OLD/fcgi-uring [--rounds 3] [--duration 4] [--only LOADS]

Loads (servers pinned to CPU 0, fcgi-loadtest or wrk with one thread pinned to CPU 1, 1 s of
warmup; server CPU per request from /proc/PID/stat over the measured window):
  one     GET /hello, 1 connection, 1 request at a time; bound: fcgi-floor --epoll (one
          epoll_wait, one recv, one send per request); compared: CPU per request and p99
  1x16    GET /hello, 1 connection x 16 multiplexed; bound: fcgi-floor; compared: rate
  16x16   GET /hello, 16 connections x 16 multiplexed; bound: fcgi-floor; compared: rate
  64      GET /hello, 64 keep-alive connections; bound: fcgi-floor; compared: rate
  echo    POST /echo with a 64 KiB body, 16 connections; bound: hyper (fcgi-uring serve
          --protocol http1) under wrk with the same body; compared: rate and CPU per request
          (fcgi-floor --epoll --echo, the least any server spends echoing, is shown too)
  nginx   GET /hello behind nginx (fastcgi_keep_conn; hyper behind proxy_pass), 64 clients;
          bound: hyper behind the same nginx; compared: backend CPU per request
  nginx1  the same with one client (each request wakes nginx and the backend in turn)
Each load runs fcgi-uring on both IO backends (uring, epoll) for this build and for --base
(base-uring, base-epoll). The GET and nginx loads also run `surface`, the floor answering
through the http surface (fcgi-floor --surface; --epoll at one connection and behind nginx):
what a server whose FastCGI side cost nothing would reach, so whether the load's target is in
reach at all. Every case runs once per round, rounds interleaved; the tables give
medians and each case's ratio to its load's bound. Builds this tree's release binaries first.
Needs wrk and nginx (apt-get install -y wrk nginx).
"""
import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from benchlib import TARGET, fractional_latencies, serve_and_load, stop, wait_listening

HERE = os.path.dirname(os.path.abspath(__file__))
ADDR = "127.0.0.1:9380"
BODY = 65536


def behind_nginx():
    """bench/behind-nginx.py as a module (its name is not an identifier)."""
    spec = importlib.util.spec_from_file_location("behind_nginx",
                                                  os.path.join(HERE, "behind-nginx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(addr, *args, binary=None):
    """`fcgi-uring serve` of this build (or `binary`, an older one, which has no admin listener
    to turn off) with one worker on `addr`."""
    admin = [] if binary else ["--admin-listen", "none"]
    return [binary or os.path.join(TARGET, "fcgi-uring"), "serve", "--listen", addr,
            "--workers", "1", *admin, *args]


def servers(base, addr):
    """The fcgi-uring cases of every load: name -> command."""
    return {f"{prefix}{io}": serve(addr, "--io", io, binary=binary)
            for prefix, binary in (("", None), ("base-", base)) for io in ("uring", "epoll")}


def floor(addr, *flags):
    return [os.path.join(TARGET, "fcgi-floor"), *flags, addr]


# load -> (fcgi-loadtest arguments, the bound's case, what is compared); the nginx loads are
# behind-nginx.py's, with their client count in place of the arguments.
LOADS = {
    "one": (["--conns", "1", "--depth", "1"], "floor-epoll", ("cpu", "p99")),
    "1x16": (["--conns", "1", "--depth", "16"], "floor", ("rate",)),
    "16x16": (["--conns", "16", "--depth", "16"], "floor", ("rate",)),
    "64": (["--conns", "64", "--depth", "1"], "floor", ("rate",)),
    "echo": (["--conns", "16", "--threads", "1"], "hyper-wrk", ("rate", "cpu")),
    "nginx": (64, "hyper", ("cpu",)),
    "nginx1": (1, "hyper", ("cpu",)),
}
NGINX_LOADS = ("nginx", "nginx1")
GET_LOADS = ("one", "1x16", "16x16", "64")


def get_cases(load, base):
    cases = {n: (cmd, ["/hello"]) for n, cmd in servers(base, ADDR).items()}
    bound = LOADS[load][1]
    io = ["--epoll"] if bound == "floor-epoll" else []
    cases["surface"] = (floor(ADDR, *io, "--surface"), ["/hello"])
    cases[bound] = (floor(ADDR, *io), ["/hello"])
    return cases


def echo_cases(base):
    body = ["--method", "POST", "--body-bytes", str(BODY), "--expect-body", "x" * BODY, "/echo"]
    cases = {n: (cmd, body) for n, cmd in servers(base, ADDR).items()}
    cases["echo-floor"] = (floor(ADDR, "--epoll", "--echo"), body)
    return cases


def run_load_case(load, cmd, path_args, duration):
    args = LOADS[load][0] + ["--duration", str(duration), "--warmup", "1"] + path_args
    return fractional_latencies(serve_and_load(cmd, ADDR, args, "/tmp/every-load-server.log"))


def server_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def hyper_under_wrk(duration, lua):
    """hyper (fcgi-uring serve --protocol http1) under wrk -t1 -c16 POSTing the body."""
    server = subprocess.Popen(["taskset", "-c", "0"] + serve(ADDR, "--protocol", "http1"),
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://{ADDR}/echo"
    wrk = ["taskset", "-c", "1", "wrk", "-t1", "-c16", "-s", lua]
    try:
        wait_listening(ADDR, [server])
        subprocess.run(wrk + ["-d1s", url], capture_output=True, check=True)
        before = server_ticks(server.pid)
        out = subprocess.run(wrk + [f"-d{duration:g}s", "--latency", url], capture_output=True,
                             text=True, check=True).stdout
        ticks = server_ticks(server.pid) - before
    finally:
        stop(server)
    if re.search(r"Non-2xx|Socket errors", out):
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99_us = float(p99.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[p99.group(2)]
    cpu = ticks / os.sysconf("SC_CLK_TCK") * 1e6 / (rps * duration)
    return {"rps": rps, "server_cpu_us_per_req": cpu, "p99_us": p99_us}


def nginx_cases(bn, base):
    cases = {n: (cmd, bn.FASTCGI) for n, cmd in servers(base, bn.BACKEND).items()}
    cases["floor-epoll"] = (floor(bn.BACKEND, "--epoll"), bn.FASTCGI)
    cases["surface"] = (floor(bn.BACKEND, "--epoll", "--surface"), bn.FASTCGI)
    cases["hyper"] = (serve(bn.BACKEND, "--protocol", "http1"), bn.HTTP1)
    return cases


def measure(loads, args):
    """load -> case -> the reports of every round."""
    bn = behind_nginx() if any(load in NGINX_LOADS for load in loads) else None
    results = {load: {} for load in loads}
    with tempfile.TemporaryDirectory() as work:
        lua = os.path.join(work, "post.lua")
        with open(lua, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = string.rep("x", {BODY})\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        for rnd in range(1, args.rounds + 1):
            for load in loads:
                if load in GET_LOADS:
                    runs = [(n, lambda c=c, p=p: run_load_case(load, c, p, args.duration))
                            for n, (c, p) in get_cases(load, args.base).items()]
                elif load == "echo":
                    runs = [(n, lambda c=c, p=p: run_load_case(load, c, p, args.duration))
                            for n, (c, p) in echo_cases(args.base).items()]
                    runs.append(("hyper-wrk", lambda: hyper_under_wrk(args.duration, lua)))
                else:
                    clients = LOADS[load][0]
                    runs = [(n, lambda n=n, case=case: bn.run_case(work, n, case, clients,
                                                                  args.duration))
                            for n, case in nginx_cases(bn, args.base).items()]
                for name, run in runs:
                    report = run()
                    results[load].setdefault(name, []).append(report)
                    print(f"round {rnd} {load} {name}: {report['rps']:,.0f}/s, "
                          f"{report['server_cpu_us_per_req']:.2f} us, "
                          f"p99 {report['p99_us']:.1f} us", file=sys.stderr)
    return results


def median(reports, key):
    return statistics.median(r[key] for r in reports)


def ratio(load, case, what, results):
    """The case's median against the bound's: rate (higher is better), CPU and p99 (lower)."""
    key = {"rate": "rps", "cpu": "server_cpu_us_per_req", "p99": "p99_us"}[what]
    return median(results[load][case], key) / median(results[load][LOADS[load][1]], key)


def print_tables(loads, results, args):
    print(f"Medians of {args.rounds} interleaved rounds of {args.duration:g} s; servers (and "
          "nginx) on CPU 0, the client on CPU 1")
    print()
    print("| load | case | requests/s | server CPU / request | p99 |")
    print("|---|---|---|---|---|")
    for load in loads:
        for case, reports in results[load].items():
            print(f"| {load} | {case} | {median(reports, 'rps'):,.0f} | "
                  f"{median(reports, 'server_cpu_us_per_req'):.2f} us | "
                  f"{median(reports, 'p99_us'):,.1f} us |")
    print()
    print("| load | against | measure | base-uring | base-epoll | uring | epoll | surface |")
    print("|---|---|---|---|---|---|---|---|")
    for load in loads:
        bound, compared = LOADS[load][1:]
        for what in compared:
            cells = " | ".join(f"{ratio(load, c, what, results):.2f}x"
                               if c in results[load] else "-"
                               for c in ("base-uring", "base-epoll", "uring", "epoll", "surface"))
            print(f"| {load} | {bound} | {what} | {cells} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="an older build's fcgi-uring binary")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=4)
    p.add_argument("--only", help="comma-separated loads: " + ",".join(LOADS))
    args = p.parse_args()
    loads = args.only.split(",") if args.only else list(LOADS)
    unknown = [load for load in loads if load not in LOADS]
    if unknown:
        raise SystemExit(f"unknown load(s) {unknown}: {', '.join(LOADS)}")
    for tool, needs in (("wrk", ("echo",)), ("nginx", NGINX_LOADS)):
        if any(load in loads for load in needs) and shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install -y {tool}")
    if not os.access(args.base, os.X_OK):
        raise SystemExit(f"--base {args.base}: not an executable")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "fcgi-loadtest", "-p",
                    "fcgi-uring-cli"], cwd=os.path.join(HERE, ".."), check=True)
    print_tables(loads, measure(loads, args), args)


if __name__ == "__main__":
    main()

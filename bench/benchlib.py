"""Helpers the Python bench scripts share: waiting for a server's port to listen and to be
free again, one pinned server under one pinned fcgi-loadtest run, and per-round ratios."""
import json
import os
import socket
import statistics
import subprocess
import time

TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release")


def connect(addr, timeout):
    """A connection to `addr`: "host:port", or "unix:/path" for a UNIX socket."""
    if addr.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(addr[len("unix:"):])
        except OSError:
            s.close()
            raise
        return s
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def wait_listening(addr, procs, deadline=10.0):
    """Waits until something accepts on `addr` ("host:port" or "unix:/path"); exits if one of
    `procs` (the servers being started) exits first or nothing listens within `deadline`
    seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"{p.args[0]} exited with {p.returncode}")
        try:
            connect(addr, 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {addr} after {deadline} s")


def wait_port_free(addr, deadline=10.0):
    """Waits until `addr` can be bound again. An io_uring server's listening socket outlives
    its process for a moment (the kernel tears the ring down asynchronously), and the next
    server would fail to bind it. A UNIX socket's file ("unix:/path") is removed, for a server
    that left it behind (killed, or one that does not remove it)."""
    if addr.startswith("unix:"):
        try:
            os.remove(addr[len("unix:"):])
        except FileNotFoundError:
            pass
        return
    host, port = addr.rsplit(":", 1)
    end = time.monotonic() + deadline
    while True:
        s = socket.socket()
        # As servers bind: connections in TIME_WAIT do not count, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
            return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit(f"{addr} still in use after {deadline} s")
            time.sleep(0.05)
        finally:
            s.close()


def stop(proc):
    """Terminates `proc` and reaps it (killed after 10 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fractional_latencies(report):
    """An fcgi-loadtest report with p50_us and p99_us to a few nanoseconds (its _ns fields)
    instead of whole microseconds: at one connection they are 10-20 us, where one microsecond
    is 5-10 %, more than a 1.1x target leaves."""
    for q in ("p50", "p99"):
        report[f"{q}_us"] = report[f"{q}_ns"] / 1000
    return report


def serve_and_load(cmd, addr, load_args, log_path):
    """Starts `cmd` (a server listening on `addr`) pinned to CPU 0, waits until it accepts, runs
    `fcgi-loadtest run --addr ADDR --cpus 1 --server-pid PID --json LOAD_ARGS...` pinned to CPU 1
    and returns its JSON report. Exits with the server's log when the load fails or saw errors.
    """
    wait_port_free(addr)
    log = open(log_path, "w+")
    server = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=log, stderr=log)
    try:
        wait_listening(addr, [server])
        # Some builds bind before their workers run: give them a moment to take connections.
        time.sleep(0.5)
        out = subprocess.run(
            ["taskset", "-c", "1", os.path.join(TARGET, "fcgi-loadtest"), "run", "--addr", addr,
             "--cpus", "1", "--server-pid", str(server.pid), "--json"] + load_args,
            capture_output=True, text=True)
        if out.returncode != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(cmd)}: fcgi-loadtest failed: {out.stderr.strip()}\n"
                             f"server log ({log_path}):\n{log.read()[-2000:]}")
        report = json.loads(out.stdout)
        if report["errors"]:
            raise SystemExit(f"{' '.join(cmd)}: {report['errors']} errors "
                             f"{report.get('errors_by_kind', '')}")
        return report
    finally:
        stop(server)
        log.close()


def parse_variant(spec, known):
    """A `--variant NAME=CASE:ARGS`: (NAME, CASE, ARGS split on whitespace), CASE one of
    `known`; exits naming them otherwise."""
    name, eq, rest = spec.partition("=")
    case, _, args = rest.partition(":")
    if not eq or not name or case not in known:
        raise SystemExit(f"--variant {spec!r}: expected NAME=CASE:ARGS with CASE one of "
                         f"{', '.join(known)}")
    return name, case, args.split()


def round_ratios(case_rounds, ref_rounds, key):
    """Each round's ratio of a case's `key` to the reference case's in the same round (the
    scripts run every case once per round, back to back). The VM's slow drifts move both cases
    of a round alike, so these ratios spread less than the case's own figures do, and their
    median and range say more about a target than the ratio of two medians."""
    return [c[key] / r[key] for c, r in zip(case_rounds, ref_rounds) if r[key]]


def ratio_summary(ratios, limit=None, at_most=True):
    """`1.08x (1.02-1.15x)`: the median of per-round ratios and their range; with `limit`,
    also how many rounds met it (`, 4/5 <= 1.1x`; `>=` when not `at_most`)."""
    if not ratios:
        return "-"
    text = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x)"
    if limit is not None:
        met = sum(1 for r in ratios if (r <= limit if at_most else r >= limit))
        text += f", {met}/{len(ratios)} {'<=' if at_most else '>='} {limit:g}x"
    return text

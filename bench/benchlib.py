"""Helpers the Python bench scripts share: waiting for a server's port to listen and to be
free again."""
import socket
import time


def wait_listening(addr, procs, deadline=10.0):
    """Waits until something accepts on `addr` ("host:port"); exits if one of `procs` (the
    servers being started) exits first or nothing listens within `deadline` seconds."""
    host, port = addr.rsplit(":", 1)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"{p.args[0]} exited with {p.returncode}")
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {addr} after {deadline} s")


def wait_port_free(addr, deadline=10.0):
    """Waits until `addr` can be bound again. An io_uring server's listening socket outlives
    its process for a moment (the kernel tears the ring down asynchronously), and the next
    server would fail to bind it."""
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

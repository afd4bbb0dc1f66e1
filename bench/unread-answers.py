#!/usr/bin/env python3
"""Peers that send records the server must answer (unknown types: a 16-byte UNKNOWN_TYPE answer
per 8-byte record) and never read the answers: how much memory the server holds for them.

    python3 bench/unread-answers.py [--io uring|epoll] [--conns 20] [--binary target/release/fcgi-uring]

One worker on CPU 0, `limits.max_output_buffer` 1 MiB. Each connection (receive buffer 4 KiB)
sends 256 KiB writes of such records until the server has stopped reading it for 2 s; the
server's resident memory growth is printed, in all and per connection (it includes the
allocator's slack and, on io_uring, the receive buffers the ring wrote into).
"""
import argparse
import socket
import subprocess
import time


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default="target/release/fcgi-uring")
    ap.add_argument("--io", default="uring", choices=["uring", "epoll"])
    ap.add_argument("--conns", type=int, default=20)
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", args.binary, "serve", "--io", args.io, "--workers", "1",
         "--listen", f"127.0.0.1:{port}", "--admin-listen", "none",
         "--max-output-buffer", "1048576"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)
        base = rss_kib(server.pid)
        socks = []
        for _ in range(args.conns):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        chunk = bytes([1, 20, 0, 0, 0, 0, 0, 0]) * 32768
        sent, last = 0, time.time()
        while time.time() - last < 2:
            progress = False
            for s in socks:
                try:
                    sent += s.send(chunk)
                    progress = True
                except BlockingIOError:
                    pass
            if progress:
                last = time.time()
            else:
                time.sleep(0.01)
        time.sleep(1)
        grown = (rss_kib(server.pid) - base) / 1024
        print(f"{args.io}, {args.conns} connections: {sent / 1048576:.1f} MiB sent before the "
              f"server stopped reading; server RSS +{grown:.1f} MiB, "
              f"{grown / args.conns:.2f} MiB per connection")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()

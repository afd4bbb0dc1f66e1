#!/usr/bin/env python3
"""Holds N idle keep-alive FastCGI connections to a server and reports what they add to its RSS.

Usage: bench/idle-rss.py PID HOST:PORT [N=10000]

Each connection first completes one GET /hello with KEEP_CONN set (so it is a connection that
has served a request, as a proxy's keepalive pool holds them), then stays open and idle. The
server's VmRSS (/proc/PID/status) is read before the first connection and after all N are idle.
Connections go to loopback only; the script closes them all before it exits.
"""
import resource
import socket
import struct
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def record(rtype, rid, content):
    return struct.pack(">BBHHBB", 1, rtype, rid, len(content), 0, 0) + content


def pair(name, value):
    def length(n):
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


def request_bytes():
    params = b"".join(pair(n, v) for n, v in [
        (b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/hello"), (b"SCRIPT_NAME", b"/hello"),
        (b"QUERY_STRING", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"HTTP_HOST", b"localhost")])
    begin = record(1, 1, struct.pack(">HB5x", 1, 1))
    return begin + record(4, 1, params) + record(4, 1, b"") + record(5, 1, b"")


def read_until_end_request(sock):
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("server closed a keep-alive connection")
        buf += chunk
        while len(buf) >= 8:
            _, rtype, _, clen, plen, _ = struct.unpack(">BBHHBB", buf[:8])
            if len(buf) < 8 + clen + plen:
                break
            buf = buf[8 + clen + plen:]
            if rtype == 3:
                return


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    pid = int(sys.argv[1])
    host, port = sys.argv[2].rsplit(":", 1)
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    before = rss_kib(pid)
    req = request_bytes()
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(req)
            read_until_end_request(s)
            socks.append(s)
        time.sleep(1.0)
        after = rss_kib(pid)
        added = after - before
        print(f"connections {n}  rss_before_kib {before}  rss_after_kib {after}  "
              f"added_mib {added / 1024:.1f}  per_conn_bytes {added * 1024 / n:.0f}")
    finally:
        for s in socks:
            s.close()


if __name__ == "__main__":
    main()

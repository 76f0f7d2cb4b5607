#!/usr/bin/env python3
"""Resident memory of Runway idle and while holding N keep-alive TLS connections (loopback only, bounded).

usage: benches/memory.py CONFIG CA_PEM [N]   (default N = 1000)

Starts target/release/runway serve -c CONFIG on free loopback ports (RUNWAY__SERVER__LISTEN /
RUNWAY__ADMIN__LISTEN), waits for /readyz, reads VmRSS, opens N TLS connections that each send one request
without a token (answered 401, connection kept alive), reads VmRSS again, closes everything and stops Runway.
"""
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    config, ca = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    port, admin = free_port(), free_port()
    env = dict(os.environ, RUNWAY__SERVER__LISTEN=f"127.0.0.1:{port}", RUNWAY__ADMIN__LISTEN=f"127.0.0.1:{admin}")
    proc = subprocess.Popen(["target/release/runway", "serve", "-c", config], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conns = []
    try:
        for _ in range(200):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        time.sleep(1)
        idle = rss_kib(proc.pid)
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        ctx.set_alpn_protocols(["http/1.1"])
        request = b"GET /held HTTP/1.1\r\nHost: localhost\r\n\r\n"
        for _ in range(n):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
            s.sendall(request)
            head = s.recv(65536)
            assert head.startswith(b"HTTP/1.1 401"), head[:40]
            conns.append(s)
        time.sleep(1)
        held = rss_kib(proc.pid)
        print(f"idle RSS: {idle / 1024:.1f} MiB")
        print(f"RSS holding {n} keep-alive TLS connections: {held / 1024:.1f} MiB "
              f"({(held - idle) / n:.1f} KiB per connection)")
    finally:
        for s in conns:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()

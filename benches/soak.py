#!/usr/bin/env python3
"""Soak test: mixed allowed/denied traffic through a real `runway serve` while it is reloaded every few seconds.

Loopback only, bounded in time (SOAK_SECONDS) and in requests (SOAK_MAX_REQUESTS). `runway dev --dir D` provides
the PKI, a token issuer and the Kong stand-in (and the tokens); a separate `runway serve -c D/runway.toml` on free
ports is the process under test, so its peak RSS is Runway's alone.

Every request has one expected status (allowed job 200, policy-denied job 403, expired token 401, no token 401,
anonymous route 200, unknown path 404); anything else, and any connection error, is an error. Reloads alternate
between `POST /reload` and SIGHUP and alternate between two valid configs; every fifth reload first writes a broken
config and checks it is refused (422) while traffic keeps flowing, then restores a valid one.

Environment: RUNWAY_BIN (default target/release/runway), SOAK_SECONDS (60), SOAK_CLIENTS (8),
SOAK_RELOAD_EVERY (2.0 seconds), SOAK_MAX_REQUESTS (2000000), SOAK_OUT (optional path for the JSON summary).
Exit status 1 when any request failed, a reload misbehaved, or Runway died.
"""

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RUNWAY_BIN", os.path.join(ROOT, "target", "release", "runway"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "8"))
RELOAD_EVERY = float(os.environ.get("SOAK_RELOAD_EVERY", "2.0"))
MAX_REQUESTS = int(os.environ.get("SOAK_MAX_REQUESTS", "2000000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev(directory):
    """Runs `runway dev` and returns (process, {allowed, denied, expired} tokens) once it printed them."""
    dev = subprocess.Popen([BIN, "dev", "--dir", directory], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    tokens, label = {}, None
    deadline = time.time() + 60
    while len(tokens) < 3 and time.time() < deadline:
        line = dev.stdout.readline()
        if not line:
            break
        m = re.match(r"# (allowed|denied|expired):", line)
        if m:
            label = m.group(1)
            continue
        t = re.search(r"Authorization: Bearer ([^']+)'", line)
        if label and t:
            tokens[label] = t.group(1)
            label = None
    if len(tokens) < 3:
        dev.kill()
        sys.exit(f"runway dev did not print its tokens (got {sorted(tokens)})")
    # Keep draining its stdout so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in dev.stdout], daemon=True).start()
    return dev, tokens


def rss_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.errors = Counter()
        self.statuses = Counter()

    def record(self, kind, status, expected):
        with self.lock:
            self.sent += 1
            self.statuses[(kind, status)] += 1
            if status != expected:
                self.errors[f"{kind}: {status}"] += 1


def client_loop(index, port, ca, tokens, stats, stop):
    context = ssl.create_default_context(cafile=ca)
    mix = [
        ("allowed", "POST", "/deploy/production/app", tokens["allowed"], 200),
        ("allowed", "POST", "/deploy/production/app", tokens["allowed"], 200),
        ("denied", "POST", "/deploy/production/app", tokens["denied"], 403),
        ("expired", "POST", "/deploy/production/app", tokens["expired"], 401),
        ("no_token", "POST", "/deploy/production/app", None, 401),
        ("anonymous", "GET", "/status", None, 200),
        ("no_route", "GET", "/nowhere", None, 404),
    ]
    conn, i = None, index
    while not stop.is_set():
        kind, method, path, token, expected = mix[i % len(mix)]
        i += 1
        headers = {"Content-Length": "0"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            if conn is None:
                conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            response.read()
            stats.record(kind, response.status, expected)
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            stats.record(kind, f"{type(e).__name__}", expected)
            conn = None
        if stats.sent >= MAX_REQUESTS:
            stop.set()


def admin_reload(admin_port):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=30)
    conn.request("POST", "/reload", headers={"Content-Length": "0"})
    response = conn.getresponse()
    body = response.read().decode()
    return response.status, body


def metric(admin_port, series):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit(f"{BIN} not found: run `cargo build --release` (or set RUNWAY_BIN)")
    directory = tempfile.mkdtemp(prefix="runway-soak-")
    dev, tokens = start_dev(directory)
    config_path = os.path.join(directory, "runway.toml")
    with open(config_path) as f:
        base = f.read()
    # Two valid configs that differ (a header mapping, the in-flight bound) and one broken one.
    variant = base.replace('algorithms = ["ES256"]\n', 'algorithms = ["ES256"]\n[issuers.headers]\n"X-Runway-Soak" = "job_id"\n')
    variant = variant.replace("[server]\n", "[server]\nmax_concurrent_requests = 2048\n", 1)
    broken = base.replace('issuer = "gitlab"\nclaims', 'issuer = "gitlub"\nclaims')
    assert variant != base and broken != base
    port, admin = free_port(), free_port()
    env = dict(os.environ,
               RUNWAY__SERVER__LISTEN=f"127.0.0.1:{port}",
               RUNWAY__ADMIN__LISTEN=f"127.0.0.1:{admin}",
               RUNWAY__AUDIT__PATH=os.path.join(directory, "soak-audit.jsonl"))
    log = open(os.path.join(directory, "serve.log"), "w")
    serve = subprocess.Popen([BIN, "serve", "-c", config_path], env=env, stdout=log, stderr=log)
    for _ in range(200):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        sys.exit("runway serve never became ready")

    stats, stop = Stats(), threading.Event()
    ca = os.path.join(directory, "ca.pem")
    threads = [threading.Thread(target=client_loop, args=(i, port, ca, tokens, stats, stop)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    started = time.time()
    reloads = Counter()
    problems = []
    peak_rss = 0
    n = 0
    next_reload = started + RELOAD_EVERY
    while time.time() - started < SECONDS and not stop.is_set():
        time.sleep(0.2)
        current = rss_kib(serve.pid, "VmRSS")
        if current is None:
            problems.append("runway serve died")
            break
        peak_rss = max(peak_rss, current)
        if time.time() < next_reload:
            continue
        next_reload += RELOAD_EVERY
        n += 1
        if n % 5 == 0:
            with open(config_path, "w") as f:
                f.write(broken)
            status, body = admin_reload(admin)
            if status != 422 or "routes[0].allow[0].issuer" not in body:
                problems.append(f"broken config answered {status}: {body}")
            reloads["refused"] += 1
        with open(config_path, "w") as f:
            f.write(variant if n % 2 else base)
        if n % 2:
            status, body = admin_reload(admin)
            if status != 200:
                problems.append(f"POST /reload answered {status}: {body}")
            reloads["post"] += 1
        else:
            serve.send_signal(signal.SIGHUP)
            reloads["sighup"] += 1
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.time() - started
    time.sleep(0.5)  # let the last SIGHUP's reload land before reading the counters
    ok = metric(admin, 'runway_config_reloads_total{result="ok"}')
    refused = metric(admin, 'runway_config_reloads_total{result="error"}')
    expected_ok = reloads["post"] + reloads["sighup"]
    if ok != expected_ok or refused != reloads["refused"]:
        problems.append(f"reload counters ok={ok} error={refused}, expected {expected_ok} and {reloads['refused']}")
    hwm = rss_kib(serve.pid, "VmHWM") or peak_rss
    serve.send_signal(signal.SIGTERM)
    try:
        code = serve.wait(timeout=40)
    except subprocess.TimeoutExpired:
        serve.kill()
        code = "killed after 40 s"
    if code != 0:
        problems.append(f"runway serve exited {code} after SIGTERM")
    dev.send_signal(signal.SIGINT)
    try:
        dev.wait(timeout=10)
    except subprocess.TimeoutExpired:
        dev.kill()

    errors = sum(stats.errors.values())
    summary = {
        "seconds": round(elapsed, 1),
        "clients": CLIENTS,
        "requests": stats.sent,
        "requests_per_second": round(stats.sent / elapsed, 1) if elapsed else 0,
        "errors": errors,
        "error_kinds": dict(stats.errors),
        "by_kind": {f"{k} {s}": v for (k, s), v in sorted(stats.statuses.items(), key=str)},
        "reloads": {"post": reloads["post"], "sighup": reloads["sighup"], "refused_broken": reloads["refused"]},
        "reload_counters": {"ok": ok, "error": refused},
        "peak_rss_mib": round(hwm / 1024, 1),
        "problems": problems,
        "dir": directory,
    }
    print(json.dumps(summary, indent=2))
    if os.environ.get("SOAK_OUT"):
        with open(os.environ["SOAK_OUT"], "w") as f:
            json.dump(summary, f, indent=2)
    print(f"soak: {stats.sent} requests in {elapsed:.0f} s, {errors} errors, "
          f"{expected_ok} reloads (+{reloads['refused']} broken configs refused), peak RSS {hwm / 1024:.1f} MiB",
          file=sys.stderr)
    return 1 if errors or problems else 0


if __name__ == "__main__":
    sys.exit(main())

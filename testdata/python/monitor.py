"""Website monitoring: fetch each URL every INTERVAL seconds, ROUNDS
times, and print its status, size, sha256 and how long the fetch took by
this program's own clock; probe each HOST:PORT with a TCP connect.

usage: monitor.py [--ca FILE] ROUNDS INTERVAL [URL | tcp:HOST:PORT]...
(--ca: trust the certificate authority in FILE for https URLs)
"""
import hashlib
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request


def fetch(url, ctx):
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
            body, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    except OSError as e:
        return f"{url} failed: {e}"
    ms = (time.monotonic() - t0) * 1e3
    return f"{url} {status} {len(body)} bytes sha256 {hashlib.sha256(body).hexdigest()} in {ms:.3f} ms"


def probe(target):
    host, port = target.rsplit(":", 1)
    t0 = time.monotonic()
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        return f"tcp {target} down: {e.__class__.__name__}"
    return f"tcp {target} up in {(time.monotonic() - t0) * 1e3:.3f} ms"


def main():
    args, ctx = sys.argv[1:], None
    if args[0] == "--ca":
        ctx, args = ssl.create_default_context(cafile=args[1]), args[2:]
    rounds, interval, targets = int(args[0]), float(args[1]), args[2:]
    for i in range(rounds):
        print(f"round {i} at {time.strftime('%H:%M:%S', time.gmtime())}", flush=True)
        for t in targets:
            print(probe(t[4:]) if t.startswith("tcp:") else fetch(t, ctx), flush=True)
        if i + 1 < rounds:
            time.sleep(interval)


main()

"""Website monitoring: fetch each URL every INTERVAL seconds, ROUNDS
times, and print its status, size, sha256 and how long the fetch took by
this program's own clock; probe each HOST:PORT with a TCP connect.

usage: monitor.py ROUNDS INTERVAL [URL | tcp:HOST:PORT]...
"""
import hashlib
import socket
import sys
import time
import urllib.error
import urllib.request


def fetch(url):
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
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
    rounds, interval, targets = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    for i in range(rounds):
        print(f"round {i} at {time.strftime('%H:%M:%S', time.gmtime())}", flush=True)
        for t in targets:
            print(probe(t[4:]) if t.startswith("tcp:") else fetch(t), flush=True)
        if i + 1 < rounds:
            time.sleep(interval)


main()

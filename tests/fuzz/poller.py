"""Polls a gateway's /healthz over one keep-alive connection until stdin closes; one line per answer.

Run as a separate process (`python tests/fuzz/poller.py URL OUT`) so that the fuzzer's own CPU work in the test
process cannot delay the poll and be blamed on the gateway. Each line: `start_monotonic duration_ms status`
(status 0: no answer, the connection failed or timed out after 5 s)."""

from __future__ import annotations

import http.client
import sys
import threading
import time
from urllib.parse import urlsplit

INTERVAL_S = 0.02


def main(url: str, out_path: str) -> None:
    u = urlsplit(url)
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    conn: http.client.HTTPConnection | None = None
    with open(out_path, "w", buffering=1) as out:
        while not stop.is_set():
            t0 = time.monotonic()
            status = 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=5)
                conn.request("GET", "/healthz")
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            out.write(f"{t0:.6f} {(time.monotonic() - t0) * 1000:.3f} {status}\n")
            stop.wait(INTERVAL_S)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

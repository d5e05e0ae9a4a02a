"""How the SSE splitter's cost grows with a hostile or buggy upstream's event size.

    python bench/sse.py

Feeds one event of N MiB with no line end, in 1 KiB reads (as a slow upstream would), then its end, and prints
the CPU seconds per MiB: flat when the splitter is linear. In-process only; no network.
"""

from __future__ import annotations

import platform
import time

from relaycast.sse import EventSplitter


def run(mib: int, read: int = 1024) -> float:
    body = b"data: " + b"x" * (mib * 1024 * 1024)
    s = EventSplitter(max_event_bytes=64 * 1024 * 1024)
    t0 = time.process_time()
    for i in range(0, len(body), read):
        s.feed(body[i : i + read])
    events = s.feed(b"\n\n")
    assert len(events) == 1 and len(events[0].data) == mib * 1024 * 1024
    return time.process_time() - t0


def main() -> None:
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print("| event size | 1 KiB reads | CPU s | CPU ms per MiB |")
    print("|---:|---:|---:|---:|")
    for mib in (1, 4, 16):
        cpu = run(mib)
        print(f"| {mib} MiB | {mib * 1024:,} | {cpu:.3f} | {cpu / mib * 1000:.1f} |")


if __name__ == "__main__":
    main()

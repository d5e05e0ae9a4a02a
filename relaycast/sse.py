"""Server-sent events: split an upstream byte stream into events, and encode events for the client.

Only what the gateway needs is parsed; the bytes of each event are kept so they can be forwarded untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

DONE = b"[DONE]"


@dataclass(slots=True)
class Event:
    raw: bytes  # the event's bytes as received, without the blank line that ended it
    event: str | None  # the `event:` field, if any
    data: bytes  # the `data:` lines joined by "\n"


class EventSplitter:
    """Incremental SSE parser. Feed bytes as they arrive; get complete events back.

    Handles \\n, \\r\\n and \\r line endings, events split across reads, several events in one read,
    comments (lines starting with ':'), and multi-line data.
    """

    __slots__ = ("_buf", "max_event_bytes")

    def __init__(self, max_event_bytes: int = 8 * 1024 * 1024) -> None:
        self._buf = b""
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # Normalise \r\n and lone \r, but keep a trailing \r: its \n may be in the next read.
            tail = b"\r" if buf.endswith(b"\r") else b""
            buf = buf[: len(buf) - len(tail)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        events: list[Event] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + 2
            ev = parse_block(block)
            if ev is not None:
                events.append(ev)
        self._buf = buf[start:]
        if len(self._buf) > self.max_event_bytes:
            raise ValueError(f"SSE event larger than {self.max_event_bytes} bytes")
        return events

    def pending(self) -> bytes:
        """Bytes received that do not yet form a complete event."""
        return self._buf


def parse_block(block: bytes) -> Event | None:
    event: str | None = None
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if not data_lines and event is None:
        return None
    return Event(raw=block, event=event, data=b"\n".join(data_lines))


def encode(data: bytes, event: str | None = None) -> bytes:
    """One SSE event. Multi-line data becomes several `data:` lines."""
    head = f"event: {event}\n".encode() if event else b""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + ln + b"\n" for ln in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"

"""Server-sent events: split an upstream byte stream into events, and encode events for the client.

Only what the gateway needs is parsed: each event's name and data.
"""

from __future__ import annotations

import msgspec

DONE = b"[DONE]"


class Event(msgspec.Struct, gc=False):
    """One event (a Struct: made for every event of every stream, in a quarter of a dataclass's time)."""

    event: str | None  # the `event:` field, if any
    data: bytes  # the `data:` lines joined by "\n"


class EventSplitter:
    """Incremental SSE parser. Feed bytes as they arrive; get complete events back.

    Handles \\n, \\r\\n and \\r line endings, events split across reads, several events in one read,
    comments (lines starting with ':'), and multi-line data. Linear in the bytes fed, however they are split:
    each read is normalised and searched once, and the bytes of an unfinished event are joined once, when it
    ends. An unfinished event past `max_event_bytes` raises ValueError (the caller's `malformed`).
    """

    __slots__ = ("_parts", "_size", "_cr", "max_event_bytes", "whole")

    def __init__(self, max_event_bytes: int = 8 * 1024 * 1024) -> None:
        self._parts: list[bytes] = []  # the unfinished event, as received (normalised), read by read
        self._size = 0
        self._cr = False  # the last read ended with \r: its \n may open the next one
        self.max_event_bytes = max_event_bytes
        # After `feed`: the read itself when it was whole events that are each one `data: ` line, so that event i
        # is exactly `data: ` + its data + `\n\n`, one after another (a caller may forward it as it is); else None.
        self.whole: bytes | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        self.whole = None
        if self._cr:
            chunk = b"\r" + chunk
        self._cr = chunk.endswith(b"\r")
        if self._cr:
            chunk = chunk[:-1]
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._parts:
            # An event ends in this read only if "\n\n" is in it, or straddles the previous read and this one.
            straddles = self._parts[-1].endswith(b"\n") and chunk.startswith(b"\n")
            if not straddles and b"\n\n" not in chunk:
                self._keep(chunk)
                return []
            buf = b"".join(self._parts) + chunk
            self._parts.clear()
            self._size = 0
        else:
            buf = chunk
            # A read of whole events that are each one `data: ` line (OpenAI's streams; a fast upstream's answer
            # in one read): their data split out at once. No newline in any data proves the shape (looked for in
            # them joined: one memchr, where counting the read's newlines is a byte-by-byte loop, 6x slower).
            if buf[:6] == b"data: " and buf[-2:] == b"\n\n":
                datas = buf[6:-2].split(b"\n\ndata: ")
                if b"\n" not in b"".join(datas):
                    self.whole = buf
                    return [Event(None, d) for d in datas]
        blocks = buf.split(b"\n\n")
        rest = blocks.pop()  # what follows the last complete event: the start of the next one, or nothing
        events: list[Event] = []
        for block in blocks:
            # Nearly every event is one `data: ` line (OpenAI): made here, without a call per event.
            if block[:6] == b"data: " and b"\n" not in block:
                events.append(Event(None, block[6:]))
            else:
                ev = parse_block(block)
                if ev is not None:
                    events.append(ev)
        if rest:
            self._keep(rest)
        return events

    def _keep(self, part: bytes) -> None:
        if not part:
            return
        self._parts.append(part)
        self._size += len(part)
        if self._size > self.max_event_bytes:
            raise ValueError(f"SSE event larger than {self.max_event_bytes} bytes")

    def pending(self) -> bytes:
        """Bytes received that do not yet form a complete event."""
        return b"".join(self._parts) + (b"\r" if self._cr else b"")


def parse_block(block: bytes) -> Event | None:
    if block[:7] == b"event: ":  # Anthropic's shape, `event: name` then one `data: ` line, without a loop
        nl = block.find(b"\n")
        if nl > 0 and block[nl + 1 : nl + 7] == b"data: " and block.find(b"\n", nl + 1) < 0:
            return Event(block[7:nl].decode("utf-8", "replace"), block[nl + 7 :])
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
    return Event(event=event, data=b"\n".join(data_lines))


def written_data(block: bytes) -> bytes:
    """The data of one event as the gateway writes them (`data: ` lines only, without the blank line after)."""
    data = block[6:]
    return data.replace(b"\ndata: ", b"\n") if b"\n" in data else data


def encode(data: bytes, event: str | None = None) -> bytes:
    """One SSE event. Multi-line data becomes several `data:` lines."""
    head = f"event: {event}\n".encode() if event else b""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + ln + b"\n" for ln in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"

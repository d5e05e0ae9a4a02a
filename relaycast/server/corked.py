"""One write per response: a transport that holds what is written until the end of the event loop's current step,
then writes it all at once.

The HTTP protocol (`server/http1.py`) writes a response's head when the app sends `http.response.start` and its
body when the app sends `http.response.body`: written at once, two `send()` system calls (and often two TCP
segments) for every answer, where one would do, as the app sends both in the same step. Held until the step ends
(one `call_soon`), they leave in one write. A stream's chunks each leave at the end of the step that wrote them;
nothing is delayed past the step.
Closing, shutting the write side and asking for the write buffer's size write what is held first; aborting drops
it, as aborting drops the transport's own buffer. More than HOLD_BYTES written in one step goes to the transport at
once, so that its flow control (pausing the writer when the client reads slowly) still bounds what is buffered.
"""

from __future__ import annotations

import asyncio
from typing import Any

HOLD_BYTES = 64 * 1024  # held at most, per connection; more is written at once
JOIN_BYTES = 16 * 1024  # held writes up to this size are joined into one; larger ones go as one writev


class CorkedTransport:
    """Wraps a connection's transport for the protocol that owns it; every other call goes to the transport."""

    __slots__ = ("_transport", "_loop", "_held", "_size", "_eof")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._size = 0
        self._eof = False

    def write(self, data: bytes) -> None:
        if self._eof:  # as the transport would, to the writer (not later, in the flush)
            raise RuntimeError("Cannot call write() after write_eof()")
        held = self._held
        if held is None:
            self._held = held = [data]
            self._size = len(data)
            self._loop.call_soon(self.flush)
        else:
            held.append(data)
            self._size += len(data)
        if self._size > HOLD_BYTES:
            self.flush()  # the call_soon already made finds nothing held

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if not held or self._transport.is_closing():
            return
        if len(held) == 1:
            self._transport.write(held[0])
        elif self._size <= JOIN_BYTES:
            self._transport.write(b"".join(held))
        else:
            self._transport.writelines(held)  # one writev, without copying a large body

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._eof = True
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:  # asked several times per request: not through __getattr__
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        self.flush()
        return self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, can_write_eof, ...
        return getattr(self._transport, name)

"""The wire between serving processes and the telemetry process: length-prefixed frames over a Unix socket.

A frame is a 4-byte big-endian payload length, one kind byte and a MessagePack payload (msgspec). Records travel
as `RequestRecord` itself (a msgspec Struct encoded as an array of its fields, `relaycast.records`: about 0.6 µs
to encode and 2.5 µs to decode the production benchmark's request), everything else as plain lists.

A worker opens two connections: one for its records, and a control connection for everything else, which must
not wait behind records the telemetry process has yet to read. Its hello says which.

From a worker: `H` hello [worker id, pid, RECORDS or CONTROL, session] (the session counts the worker's
connections, so a question finds the records' connection made with its own); on the records' connection
`R` a record; on the control connection `Q` a query [id, op, arg] or [id, op, arg, records] (answered
once that many records of this worker were taken, or RECORDS_WAIT_S later), `G` its gauges, `S` a limit
settlement [reservation id, tokens, nano-dollars], `L` a lease's report (`relaycast.limits.lease`). From the
telemetry process: `K` the count of records it has taken from the records' connection; `A` an answer [id, ok,
result or error] and `D` the monitors' demotions [[route, target, reason], ...] on the control connection.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from relaycast.records import RequestRecord

HEADER = struct.Struct(">IB")
MAX_FRAME = 64 << 20  # a record bigger than this (a 20 MiB body's messages, escaped) is dropped, counted

HELLO, RECORD, QUERY, GAUGES, SETTLE, LEASE = b"H"[0], b"R"[0], b"Q"[0], b"G"[0], b"S"[0], b"L"[0]
ANSWER, ACK, DEMOTIONS = b"A"[0], b"K"[0], b"D"[0]
RECORDS, CONTROL = 0, 1  # which connection a hello opens


class FrameTooLarge(Exception):
    pass


class Codec:
    """Encoders and decoders, made once per process (msgspec's are reusable and not thread-bound)."""

    def __init__(self) -> None:
        self._enc = msgspec.msgpack.Encoder()
        self._record = msgspec.msgpack.Decoder(RequestRecord)
        self._any = msgspec.msgpack.Decoder()

    def frame(self, kind: int, payload: Any) -> bytes:
        body = self._enc.encode(payload)
        if len(body) > MAX_FRAME:
            raise FrameTooLarge(len(body))
        return HEADER.pack(len(body), kind) + body

    def record(self, payload: bytes | memoryview) -> RequestRecord:
        return self._record.decode(payload)

    def data(self, payload: bytes | memoryview) -> Any:
        return self._any.decode(payload)


class FrameParser:
    """Bytes in, whole frames out: (kind, payload) pairs, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= HEADER.size:
            size, kind = HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise FrameTooLarge(size)
            start = pos + HEADER.size
            if end - start < size:
                break
            out.append((kind, bytes(buf[start : start + size])))
            pos = start + size
        if pos:
            del buf[:pos]
        return out

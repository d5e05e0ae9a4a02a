"""What both fake wire formats share: the server's state, paced and faulty stream sending, and header helpers."""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from relaycast.asgi import Send
from relaycast.fake.behaviour import Behaviour

SECRET_HEADERS = (b"authorization", b"x-api-key", b"api-key")  # never kept in the request log
WORDS = (
    "the quick brown fox jumps over a lazy dog while relaycast measures every token it forwards "
    "with care and low overhead so that site reliability engineers sleep well at night"
).split()  # the fake's vocabulary: answers are these words in order


@dataclass
class FakeState:
    """Per-server state: the default behaviour, the key it expects, a seeded RNG and the request log."""

    defaults: Behaviour = Behaviour()
    api_key: str | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    log: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=200))
    ids: itertools.count[int] = field(default_factory=itertools.count)
    active_streams: int = 0  # streams being sent right now (tests check that a cancelled stream ends)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):08d}"


async def send_chunks(send: Send, chunks: list[bytes], b: Behaviour, state: FakeState | None = None) -> None:
    """Send stream chunks with the behaviour's pacing and faults, counted in `state.active_streams` when given."""
    if state is None:
        await send_paced(send, chunks, b)
        return
    state.active_streams += 1
    try:
        await send_paced(send, chunks, b)
    finally:
        state.active_streams -= 1


async def send_paced(send: Send, chunks: list[bytes], b: Behaviour) -> None:
    """The chunks at `b.tps` per second, then the body's end - or the behaviour's fault where it says."""
    limit = min(x for x in (b.cut_after, b.stall_after, b.malformed_after, len(chunks)) if x is not None)
    if not b.tps and limit == len(chunks):
        await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": False})
        return
    gap = 1.0 / b.tps if b.tps else 0.0
    for i, c in enumerate(chunks[:limit]):
        if i and gap:
            await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": c, "more_body": True})
    if limit == len(chunks):
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif limit == b.malformed_after:
        await send(
            {"type": "http.response.body", "body": b'data: {"id": "broken", "choices": [\n\n', "more_body": True}
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif limit == b.stall_after:
        await asyncio.sleep(b.stall_ms / 1000)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:
        # cut: end the response with the chunked body unfinished, as a dropped connection would.
        raise ConnectionAbortedError("fake upstream cut the stream")


async def sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def bearer(headers: dict[bytes, bytes]) -> str | None:
    """The token of an `Authorization: Bearer ...` header."""
    v = headers.get(b"authorization")
    if v and v.lower().startswith(b"bearer "):
        return v[7:].decode("latin-1")
    return None


def text(v: bytes | None) -> str | None:
    """A header value as text (latin-1, as HTTP has it), None when absent or empty."""
    return v.decode("latin-1") if v else None


def num(x: float) -> bytes:
    """A number for a header: `2`, not `2.0`."""
    return str(int(x) if float(x).is_integer() else x).encode()

"""What an OpenAI stream forwards does not depend on how the upstream's bytes were cut into reads.

A read of whole one-line `data:` events goes out as the bytes it came in, less the events left out (a usage chunk
the client did not ask for, an empty `data:`); a read cut anywhere else has its events written again. Both must
forward the same bytes and learn the same things. The reads are handed out by a stand-in for the upstream
client's answer, the only way to choose where they are cut; tests/unit/test_upstream_answers.py runs the same
stream class against a real server on loopback."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import orjson
import pytest

from relaycast import errors
from relaycast.providers.exchange import Answer
from relaycast.providers.openai_compat import OpenAIStream


class Reads:
    """The upstream's body, handed out in the given reads (what `OpenAIStream` uses of an `Answer`)."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = iter(reads)
        self.released = self.closed = False

    async def read(self) -> bytes:
        return next(self._reads, b"")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


def event(doc: Any) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def first() -> bytes:
    return event({"id": "chatcmpl-r", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})


def delta(text: str, finish: str | None = None) -> bytes:
    return event({"id": "chatcmpl-r", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})


USAGE = event({"id": "chatcmpl-r", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}})
EMPTY = b"data: \n\n"
DONE = b"data: [DONE]\n\n"
ERROR = event({"error": {"message": "overloaded", "code": 529}})


def cut(body: bytes, how: str, rng: random.Random) -> list[bytes]:
    if how == "one read":
        return [body]
    if how == "per event":
        return [b + b"\n\n" for b in body.split(b"\n\n")[:-1]]
    points = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, 12)))  # anywhere, mid-event too
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


async def forward(reads: list[bytes], client_usage: bool) -> tuple[list[bytes], Any, Exception | None]:
    answer = Reads(reads)
    stream = OpenAIStream(cast(Answer, answer), "oai/m", client_usage, 30.0)
    out: list[bytes] = []
    failed: Exception | None = None
    try:
        async for chunk in stream:
            out.append(chunk)
    except errors.ProviderError as e:
        failed = e
    s = stream.state
    learned = (s.response_id, "".join(s.text), s.finish_reason, s.usage, s.done, answer.released)
    return out, learned, failed


def test_a_read_of_whole_events_goes_out_as_it_came_less_what_is_left_out() -> None:
    body = first() + delta("hel") + EMPTY + delta("lo", "stop") + USAGE + DONE

    async def main() -> None:
        out, learned, failed = await forward([body], client_usage=False)
        assert failed is None
        assert out == [first() + delta("hel") + delta("lo", "stop") + DONE]  # one write, without the two left out
        assert learned[:3] == ("chatcmpl-r", "hello", "stop") and learned[3].completion_tokens == 3
        assert learned[4:] == (True, True)  # done, and the connection goes back to the pool
        kept, _, _ = await forward([body], client_usage=True)
        assert kept == [first() + delta("hel") + delta("lo", "stop") + USAGE + DONE]
        everything = first() + delta("a") + DONE
        (same,), _, _ = await forward([everything], client_usage=False)
        assert same is everything  # forwarded as the very bytes that came

    asyncio.run(main())


@pytest.mark.parametrize("client_usage", [False, True])
def test_the_same_bytes_go_out_however_the_reads_are_cut(client_usage: bool) -> None:
    rng = random.Random(7)
    parts = [delta(f"w{i} ") for i in range(6)] + [EMPTY, EMPTY, USAGE]

    async def main() -> None:
        for _ in range(40):
            middle = rng.sample(parts, rng.randint(1, len(parts)))
            body = first() + b"".join(middle) + delta("end", "stop") + DONE
            results = {
                how: await forward(cut(body, how, rng), client_usage) for how in ("one read", "per event", "cut")
            }
            outs = {how: b"".join(r[0]) for how, r in results.items()}
            assert len(set(outs.values())) == 1, outs
            expected = body.replace(EMPTY, b"") if client_usage else body.replace(EMPTY, b"").replace(USAGE, b"")
            assert outs["one read"] == expected
            assert len({str(r[1]) for r in results.values()}) == 1  # the same learned, whatever the reads

    asyncio.run(main())


def test_an_error_mid_read_forwards_what_came_before_it_then_fails() -> None:
    body = first() + delta("partial") + EMPTY + delta(" answer") + ERROR + delta("never") + DONE

    async def main() -> None:
        for reads in ([body], cut(body, "per event", random.Random(1)), cut(body, "cut", random.Random(2))):
            out, learned, failed = await forward(reads, client_usage=False)
            assert b"".join(out) == first() + delta("partial") + delta(" answer")
            assert isinstance(failed, errors.ProviderError) and b"never" not in b"".join(out)
            assert learned[1] == "partial answer" and not learned[4] and not learned[5]  # not done, not pooled

    asyncio.run(main())

"""CPU per stream of the gateway's stream path, in process: splitting the upstream's bytes into events and
inspecting (OpenAI) or translating (Anthropic) each one, as `OpenAIStream` and `AnthropicStream` do for a real
request, over a stand-in for the upstream client's answer (`providers.exchange.Answer`) that hands out prepared
reads.

    python bench/stream_path.py            # the table
    python bench/stream_path.py --rounds 9

Streams: the fake upstream's OpenAI answer of 20 tokens (22 chunks with the role and finish chunks, then the usage
chunk and [DONE]) and its Anthropic answer of 20 tokens (26 events, with `event:` lines). Each is read two ways: all
of it in one read (a fast upstream on loopback), and one event per read (a real upstream, token by token). Then
what the other client APIs add: the OpenAI stream translated for an Anthropic Messages client and for a Responses
client (`server/shapes.py`'s relays), and the Anthropic stream forwarded natively to a Messages client. Prints the
median of interleaved rounds. No network.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from relaycast.fake import anthropic_wire, openai_wire
from relaycast.fake.behaviour import Behaviour
from relaycast.providers.anthropic import AnthropicStream, StreamTranslator
from relaycast.providers.openai_compat import OpenAIStream
from relaycast.server.shapes import MessagesRelay, Relay, ResponsesRelay
from relaycast.sse import EventSplitter

TOKENS = 20


def openai_events() -> list[bytes]:
    w = openai_wire.ChunkWriter("chatcmpl-bench0000", "gpt-4o-mini", True)
    chunks = [w.chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [w.chunk({"content": t}) for t in openai_wire.tokens(TOKENS)]
    chunks.append(w.chunk({}, "stop"))
    chunks.append(w.usage_chunk({"prompt_tokens": 30, "completion_tokens": TOKENS, "total_tokens": 30 + TOKENS}))
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def anthropic_events() -> list[bytes]:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    return anthropic_wire.stream_events("msg_bench", "claude-3-5-haiku", Behaviour(tokens=TOKENS), body, 30)


class _Response:
    """What the streams use of the upstream client's Answer."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = iter(reads)

    async def read(self) -> bytes:
        return next(self._reads, b"")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _drain(stream: AsyncIterator[bytes]) -> int:
    n = 0
    async for chunk in stream:
        n += len(chunk)
    return n


def openai_stream(reads: list[bytes]) -> AsyncIterator[bytes]:
    return OpenAIStream(_Response(reads), "fake/gpt-4o-mini", True, 60.0).__aiter__()  # type: ignore[arg-type]


def anthropic_stream(reads: list[bytes]) -> AsyncIterator[bytes]:
    translator = StreamTranslator("claude-3-5-haiku", True, "anthropic/claude-3-5-haiku", 1_700_000_000)
    return AnthropicStream(_Response(reads), translator, 60.0).__aiter__()  # type: ignore[arg-type]


def native_anthropic_stream(reads: list[bytes]) -> AsyncIterator[bytes]:
    translator = StreamTranslator("claude-3-5-haiku", True, "anthropic/claude-3-5-haiku", 1_700_000_000)
    return AnthropicStream(_Response(reads), translator, 60.0, native=True).__aiter__()  # type: ignore[arg-type]


async def _relayed(stream: AsyncIterator[bytes], relay: Relay) -> int:
    n = len(relay.head())
    async for chunk in stream:
        n += len(relay.chunk(chunk))
    return n + len(relay.end())


def split_only(reads: list[bytes]) -> int:
    s = EventSplitter()
    return sum(len(s.feed(r)) for r in reads)


def per_stream_us(run: Callable[[], Any], n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        run()
    return (time.process_time() - t0) / n * 1e6


def cases() -> dict[str, Callable[[int], float]]:
    loop = asyncio.new_event_loop()
    out: dict[str, Callable[[int], float]] = {}
    for wire, events, make in (
        ("openai", openai_events(), openai_stream),
        ("anthropic", anthropic_events(), anthropic_stream),
    ):
        for how, reads in (("1 read", [b"".join(events)]), (f"{len(events)} reads", events)):

            def full(n: int, reads: list[bytes] = reads, make: Any = make) -> float:
                return per_stream_us(lambda: loop.run_until_complete(_drain(make(reads))), n)

            def split(n: int, reads: list[bytes] = reads) -> float:
                return per_stream_us(lambda: split_only(reads), n)

            out[f"{wire}, {len(events)} events, {how}: split"] = split
            out[f"{wire}, {len(events)} events, {how}: split + inspect"] = full
    oa, an = [b"".join(openai_events())], [b"".join(anthropic_events())]
    relays: dict[str, Callable[[], Relay]] = {
        "for a Messages client": lambda: MessagesRelay("msg_bench", "gpt-4o-mini"),
        "for a Responses client": lambda: ResponsesRelay({"model": "gpt-4o-mini", "input": "hi"}, "resp_bench", 0),
    }
    for name, relay in relays.items():

        def translated(n: int, relay: Callable[[], Relay] = relay) -> float:
            return per_stream_us(lambda: loop.run_until_complete(_relayed(openai_stream(oa), relay())), n)

        out[f"openai, 1 read, translated {name}"] = translated

    def native(n: int) -> float:
        return per_stream_us(lambda: loop.run_until_complete(_drain(native_anthropic_stream(an))), n)

    out["anthropic, 1 read, forwarded natively to a Messages client"] = native
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--streams", type=int, default=2000, help="streams per case per round")
    args = ap.parse_args()
    all_cases = cases()
    results: dict[str, list[float]] = {k: [] for k in all_cases}
    for fn in all_cases.values():
        fn(200)  # warm-up
    for _ in range(args.rounds):
        for name, fn in all_cases.items():
            results[name].append(fn(args.streams))
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
        f", median of {args.rounds} interleaved rounds of {args.streams} streams"
    )
    print("| stream | CPU µs per stream |")
    print("|---|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()

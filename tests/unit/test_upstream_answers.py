"""Reading a whole upstream answer (`providers.http.read_answer`): an answer that arrived with its head is taken at
once (no wait), and still within the provider's cap and the process's upstream buffer, like one read as it comes.
A real aiohttp server on 127.0.0.1 answers relaycast's upstream client."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from relaycast import errors
from relaycast.deadlines import Deadlines
from relaycast.providers.client import UpstreamClient
from relaycast.providers.http import UpstreamBuffer, read_answer
from relaycast.providers.openai_compat import OpenAICompatProvider
from relaycast.providers.settings import ProviderConfig, Timeouts
from relaycast.schema import chat_request
from relaycast.server.openrouter import usage_chunk
from relaycast.server.shapes import chat_events
from relaycast.sse import EventSplitter

SMALL = b'{"id":"chatcmpl-1","choices":[]}'
LARGE = b"[" + b"1," * 400_000 + b"1]"  # 800 KB: more than the client holds before the gateway reads


async def small(_: web.Request) -> web.Response:
    return web.Response(body=SMALL, content_type="application/json")


async def large(_: web.Request) -> web.Response:
    return web.Response(body=LARGE, content_type="application/json")


async def gzipped(_: web.Request) -> web.Response:
    return web.Response(
        body=gzip.compress(SMALL), content_type="application/json", headers={"Content-Encoding": "gzip"}
    )


async def slow(_: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(_)
    await resp.write(SMALL[:10])
    await asyncio.sleep(0.05)
    await resp.write(SMALL[10:])
    await resp.write_eof()
    return resp


@asynccontextmanager
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/small", small)
    app.router.add_post("/large", large)
    app.router.add_post("/gzip", gzipped)
    app.router.add_post("/slow", slow)
    app.router.add_post("/v1/chat/completions", odd_stream)
    app.router.add_post("/lines/v1/chat/completions", multiline_stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


Read = Callable[[str, int, UpstreamBuffer], Awaitable[bytes]]


def run(test: Callable[[Read], Awaitable[None]]) -> None:
    async def main() -> None:
        async with upstream() as url:
            deadlines, client = Deadlines(), UpstreamClient()

            async def read(path: str, limit: int, buffer: UpstreamBuffer) -> bytes:
                resp = await client.post(url + path, b"{}", {"content-type": "application/json"}, 2.0)
                await asyncio.sleep(0.01)  # a small answer has all arrived by now
                return await read_answer(resp, Timeouts(), "t/m", limit, buffer, "the cap", deadlines)

            try:
                await test(read)
            finally:
                await client.close()

    asyncio.run(main())


def test_answers_arrived_or_not_compressed_or_not_are_read_whole_and_give_their_room_back() -> None:
    async def test(read: Read) -> None:
        buffer = UpstreamBuffer(10 * 1024 * 1024)
        for path, body in (("/small", SMALL), ("/gzip", SMALL), ("/slow", SMALL), ("/large", LARGE)):
            assert await read(path, 1024 * 1024, buffer) == body, path
            assert buffer.held == 0, path
        assert buffer.peak >= len(LARGE)

    run(test)


def test_an_answer_that_arrived_whole_is_still_held_to_the_cap_and_to_the_buffer() -> None:
    async def test(read: Read) -> None:
        with pytest.raises(errors.ResponseTooLarge, match="the cap"):
            await read("/small", 8, UpstreamBuffer())
        full = UpstreamBuffer(8)
        with pytest.raises(errors.UpstreamBufferFull):
            await read("/small", 1024, full)
        assert full.held == 0 and full.refused == 1

    run(test)


def _native_answer(answer: dict) -> str | None:
    cfg = ProviderConfig(name="oai", kind="openai_compatible", adapter="openai", base_url="http://127.0.0.1:9/v1")
    provider = OpenAICompatProvider(cfg, None)  # type: ignore[arg-type]  # no request is made
    return provider._response(orjson.dumps(answer), answer, "oai/m").output_text


@pytest.mark.parametrize("answer", [{"status": "completed", "output": 5}, {"output": []}, {"status": "completed"}])
def test_a_native_responses_answer_of_the_wrong_shape_is_malformed_and_fails_over(answer: dict) -> None:
    with pytest.raises(errors.MalformedResponse) as e:
        _native_answer(answer)
    assert e.value.fails_over


def test_a_native_responses_answer_with_odd_items_still_reads_what_it_can() -> None:
    text = {"type": "output_text", "text": "hi", "annotations": []}
    odd = [{"type": "message", "content": 7}, 3, {"type": "message", "content": [text, 5]}]
    assert _native_answer({"status": "completed", "output": odd}) == "hi"


ODD_CHUNKS = [
    {"id": "chatcmpl-odd", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": 5}}]},
    {"id": "chatcmpl-odd", "choices": {"0": {"delta": {"content": "not a list"}}}},
    {"id": "chatcmpl-odd", "choices": ["not an object"]},
    {"id": "chatcmpl-odd", "choices": [{"index": 0, "delta": "not an object", "text": 7}]},
    {"id": "chatcmpl-odd", "choices": [{"index": 0, "delta": {"content": "hello"}}]},
    {"id": "chatcmpl-odd", "choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": " there"}]}}]},
    {"id": "chatcmpl-odd", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
]


async def odd_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for chunk in ODD_CHUNKS:
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def streamed(path: str, extra: dict[str, Any]) -> tuple[bytes, Any]:
    """What the OpenAI provider forwards of a stream from the upstream's `path`, and the stream (its state)."""
    async with upstream() as url:
        client = UpstreamClient()
        try:
            cfg = ProviderConfig(name="oai", kind="openai_compatible", adapter="openai", base_url=url + path)
            body = {"model": "oai/m", "messages": [{"role": "user", "content": "hi"}], "stream": True, **extra}
            stream = await OpenAICompatProvider(cfg, client).chat_stream(chat_request(body, {}), "m")
            return b"".join([chunk async for chunk in stream]), stream
        finally:
            await client.close()


def test_stream_chunks_of_odd_shapes_are_forwarded_and_only_text_is_kept_as_output() -> None:
    """An OpenAI-compatible server's chunks with `choices` that is no list, a choice or delta that is no object, or
    content that is no string: forwarded as they came, never an error mid-stream; the output keeps the text (of a
    list of parts too)."""

    async def main() -> None:
        out, stream = await streamed("/v1", {})
        sent = [b"data: " + orjson.dumps(c) for c in ODD_CHUNKS] + [b"data: [DONE]"]
        assert out == b"\n\n".join(sent) + b"\n\n"
        state = stream.state
        assert state.done and state.finish_reason == "stop"
        assert "".join(state.text) == "hello there"  # text parts too
        assert state.first_token_ns is not None and state.response_id == "chatcmpl-odd"

    asyncio.run(main())


MULTILINE = [
    {"id": "chatcmpl-ml", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"id": "chatcmpl-ml", "choices": [{"index": 0, "delta": {"content": "pretty"}, "finish_reason": None}]},
    {"id": "chatcmpl-ml", "choices": [{"index": 0, "delta": {"content": " printed"}, "finish_reason": "stop"}]},
    {"id": "chatcmpl-ml", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
]


async def multiline_stream(request: web.Request) -> web.StreamResponse:
    """Each chunk as indented JSON over several `data:` lines (legal SSE: the lines join with line breaks)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for chunk in MULTILINE:
        lines = orjson.dumps(chunk, option=orjson.OPT_INDENT_2).split(b"\n")
        await resp.write(b"".join(b"data: " + ln + b"\n" for ln in lines) + b"\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def test_stream_events_of_several_data_lines_reach_the_client_as_valid_sse() -> None:
    """An event whose data spans several `data:` lines is forwarded as several `data:` lines, never as one line
    followed by bare JSON a client would drop."""

    async def main() -> None:
        out, stream = await streamed("/lines/v1", {"stream_options": {"include_usage": True}})
        events = EventSplitter().feed(out)
        assert [orjson.loads(e.data) for e in events[:-1]] == MULTILINE and events[-1].data == b"[DONE]"
        assert all(line.startswith(b"data: ") for line in out.split(b"\n") if line)
        assert "".join(stream.state.text) == "pretty printed" and stream.state.finish_reason == "stop"
        assert stream.state.usage is not None and stream.state.usage.total_tokens == 5
        # what the relays to the other client APIs and OpenRouter's usage fields read from the same output
        assert chat_events(out) == MULTILINE
        priced = chat_events(usage_chunk(out, "openai", 1_500_000))
        assert priced[:-1] == MULTILINE[:-1] and priced[-1]["usage"]["cost"] == 1.5e-06

    asyncio.run(main())

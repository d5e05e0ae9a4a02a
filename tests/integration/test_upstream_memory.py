"""Hostile upstream answers cannot exhaust the gateway's memory, alone or together: 1 GiB bodies (declared, or
chunked without a length), gzip and deflate bombs (1 GiB inflated from about 1 MiB on the wire) and an encoding it
does not decode, twelve at once, each end in a clean 5xx in OpenAI's format, the gateway's peak RSS stays within
100 MB of where it was, and it answers normally afterwards. Large valid answers still pass whole, each giving its
room in the process's upstream buffer back once read.

The hostile upstream is a real HTTP server on loopback that generates its bodies as it sends them (one constant
1 MiB piece, compressed on the fly for the bombs) and stops when the gateway hangs up: it never holds 1 GiB."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from relaycast.asgi import ClientGone, Receive, Scope, Send, read_body, run_until_disconnect, send_bytes
from relaycast.server.runner import ThreadedServer
from tests.conftest import ADMIN_KEY, GatewayProcess

MiB = 1024 * 1024
GiB = 1024 * MiB
PIECE = b" " * MiB  # JSON whitespace: what a hostile body is made of after its opening
OPENING = b'{"id":"chatcmpl-hostile","object":"chat.completion","choices":[{"index":0,"message":{"content":"'
EMBED_INPUTS, EMBED_DIMS = 2048, 3072


def completion(content: str = "hello") -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    return orjson.dumps({"id": "chatcmpl-ok", "object": "chat.completion", "choices": [choice], "usage": usage})


def embeddings() -> bytes:
    """The largest base64 embeddings answer OpenAI gives (2,048 inputs of 3,072 dimensions, about 34 MB), usage
    last as OpenAI puts it: 7 prompt tokens per input."""
    vector = base64.b64encode(bytes(range(256)) * (EMBED_DIMS * 4 // 256)).decode()
    data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(EMBED_INPUTS)]
    usage = {"prompt_tokens": 7 * EMBED_INPUTS, "total_tokens": 7 * EMBED_INPUTS}
    return orjson.dumps({"object": "list", "data": data, "model": "big-embed", "usage": usage})


BIG_CHAT = completion("x" * (4 * MiB))
BIG_EMBED = embeddings()


def pieces(total: int, compress: Any) -> Iterator[bytes]:
    """OPENING then whitespace up to `total` bytes, compressed when asked: never more than 1 MiB at a time."""
    sent = len(OPENING)
    yield compress.compress(OPENING) if compress else OPENING
    while sent < total:
        sent += MiB
        out = compress.compress(PIECE) if compress else PIECE
        if out:
            yield out
    if compress:
        yield compress.flush()


class Hostile:
    """The upstream: the model name chooses the answer. `ok`, `big-chat` and `big-embed` are valid; the rest are
    attacks: `declared` (1 GiB, with its Content-Length), `chunked` (1 GiB, no length), `gzip` and `deflate`
    (bombs: 1 GiB inflated), `br` (an encoding the gateway neither asks for nor decodes)."""

    def __init__(self) -> None:
        self.hung_up = 0  # attacks the gateway stopped reading before their end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        model = orjson.loads(await read_body(receive, MiB)).get("model", "")
        if model == "ok":
            await send_bytes(send, 200, completion(), [])
        elif model == "big-chat":
            await send_bytes(send, 200, BIG_CHAT, [])
        elif model == "big-embed":
            await send_bytes(send, 200, BIG_EMBED, [])
        else:
            try:
                await run_until_disconnect(receive, self._attack(model, send))
            except ClientGone:
                self.hung_up += 1

    async def _attack(self, model: str, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        compress = None
        if model == "declared":
            headers.append((b"content-length", str(GiB).encode()))
        elif model in ("gzip", "deflate"):
            headers.append((b"content-encoding", model.encode()))
            compress = zlib.compressobj(9, zlib.DEFLATED, 31 if model == "gzip" else 15)
        elif model == "br":
            headers.append((b"content-encoding", b"br"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for body in pieces(GiB, compress):
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await asyncio.sleep(0)  # a send that fits the socket's buffer does not yield: let the hang-up be seen
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[Hostile, str]]:
    app = Hostile()
    server = ThreadedServer(app).start()
    yield app, server.url + "/v1"
    server.stop()


def start_gateway(url: str) -> GatewayProcess:
    """Default limits for `hostile`; `tight` is the same upstream with caps of 1 MiB."""
    return GatewayProcess(f"""
admin_key: {ADMIN_KEY}
routing:
  circuit: {{failures: 1000}}
providers:
  - name: hostile
    kind: openai_compatible
    base_url: {url}
    timeouts: {{idle: 20, first_token: 20, total: 30}}
  - name: tight
    kind: openai_compatible
    base_url: {url}
    max_response_bytes: 1048576
    max_embeddings_bytes: 1048576
models:
  - name: tight-first
    targets: [tight/big-chat, hostile/big-chat]
""").wait_ready()


def rss_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")


def admin_stats(gw: GatewayProcess) -> dict:
    req = urllib.request.Request(gw.url + "/admin/stats", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return orjson.loads(r.read())


Answer = tuple[int, CIMultiDict[str], bytes]


async def post(s: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]) -> Answer:
    async with s.post(url + path, data=orjson.dumps(body), headers={"content-type": "application/json"}) as r:
        return r.status, r.headers.copy(), await r.read()


async def chat(s: aiohttp.ClientSession, url: str, model: str) -> Answer:
    return await post(s, url, "/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})


async def embed(s: aiohttp.ClientSession, url: str, model: str) -> Answer:
    return await post(s, url, "/embeddings", {"model": model, "input": "hi"})


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))


async def one(url: str, model: str) -> Answer:
    async with client() as s:
        return await chat(s, url, model)


ATTACKS = [
    ("chat", "declared"),
    ("chat", "chunked"),
    ("chat", "gzip"),
    ("chat", "deflate"),
    ("chat", "br"),
    ("embed", "chunked"),
    ("embed", "gzip"),
    ("chat", "gzip"),
    ("chat", "chunked"),
    ("chat", "deflate"),
    ("embed", "deflate"),
    ("embed", "declared"),
]


def test_twelve_hostile_answers_at_once_leave_memory_within_100_mb_and_the_gateway_answering(hostile):
    app, upstream = hostile
    gw = start_gateway(upstream)
    pid = gw.worker_pid()  # the serving process: it reads the answers
    try:

        async def attack() -> tuple[list[Answer], Answer]:
            async with client() as s:
                url = gw.base_url
                answers = await asyncio.gather(
                    *(
                        (chat(s, url, "hostile/" + m) if kind == "chat" else embed(s, url, "hostile/" + m))
                        for kind, m in ATTACKS
                    )
                )
                return answers, await chat(s, url, "hostile/ok")

        assert asyncio.run(one(gw.base_url, "hostile/ok"))[0] == 200  # warm
        before = rss_kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM counts from here: start-up's peak is not ours
        hung_up = app.hung_up
        answers, after = asyncio.run(attack())
        peak = rss_kib(pid, "VmHWM")
        codes: dict[str, int] = {}
        for (kind, model), (status, headers, raw) in zip(ATTACKS, answers, strict=True):
            where = f"{kind} {model}: {status} {raw[:300]!r}"
            err = orjson.loads(raw)["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["type"] == "server_error", where
            assert headers["x-relaycast-error-class"] == err["code"], where
            codes[err["code"]] = codes.get(err["code"], 0) + 1
            if err["code"] == "upstream_buffer_full":  # the process's buffer was full: says so, and when to retry
                assert status == 503 and headers["retry-after"] == "1", where
                assert "server.max_upstream_buffer_bytes" in err["message"], where
            elif model == "br":
                assert status == 502 and err["code"] == "malformed" and "content-encoding" in err["message"], where
            else:  # stopped at the provider's cap, which the message names
                setting = "max_response_bytes" if kind == "chat" else "max_embeddings_bytes"
                assert status == 502 and err["code"] == "response_too_large", where
                cap = 16 if kind == "chat" else 48
                assert f"larger than {cap} MiB (the provider's {setting})" in err["message"], where
        assert after[0] == 200 and orjson.loads(after[2]) == orjson.loads(completion()), after
        # Counted where an operator looks, and every attack was cut off, not read to its end.
        assert {k: admin_stats(gw)["errors_by_class"].get(k) for k in codes} == codes
        deadline = time.monotonic() + 10
        while app.hung_up < hung_up + len(ATTACKS) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.hung_up == hung_up + len(ATTACKS)
        grown = (peak - before) * 1024
        print(f"gateway RSS {before // 1024} MiB before, peak {peak // 1024} MiB; answers by class {codes}")
        assert grown < 100_000_000, f"RSS peaked {grown / 1e6:.0f} MB above where it started"
    finally:
        gw.stop()


def test_large_valid_answers_pass_whole_and_give_their_room_back(hostile):
    _, upstream = hostile
    gw = start_gateway(upstream)
    try:

        async def main() -> tuple[list[Answer], list[Answer]]:
            async with client() as s:
                url = gw.base_url
                # One after another: three of them (about 34 MB each) hold more than the whole 64 MiB buffer.
                embeds = [await embed(s, url, "hostile/big-embed") for _ in range(3)]
                # At once: eight 4 MiB answers fit together.
                chats = await asyncio.gather(*(chat(s, url, "hostile/big-chat") for _ in range(8)))
                return embeds, chats

        embeds, chats = asyncio.run(main())
        for status, _, raw in embeds:
            assert status == 200 and raw == BIG_EMBED, (status, raw[:300])
        for status, _, raw in chats:
            assert status == 200 and raw == BIG_CHAT, (status, raw[:300])
        # The usage of an answer too large to parse whole was still read (from its end), not estimated.
        tokens = admin_stats(gw)["targets"]["hostile/big-embed"]["tokens"]
        assert tokens["prompt"] == 3 * 7 * EMBED_INPUTS, tokens
    finally:
        gw.stop()


def test_an_answer_above_a_providers_cap_fails_over_without_a_retry(hostile):
    _, upstream = hostile
    gw = start_gateway(upstream)
    try:

        async def main() -> tuple[Answer, Answer]:
            async with client() as s:
                url = gw.base_url
                return await chat(s, url, "tight-first"), await embed(s, url, "tight/big-embed")

        (status, headers, raw), (e_status, _, e_raw) = asyncio.run(main())
        assert status == 200 and raw == BIG_CHAT
        assert headers["x-relaycast-target"] == "hostile/big-chat" and headers["x-relaycast-attempts"] == "2"
        err = orjson.loads(e_raw)["error"]
        assert e_status == 502 and err["code"] == "response_too_large", err
        assert "larger than 1 MiB (the provider's max_embeddings_bytes)" in err["message"], err
        attempts = admin_stats(gw)["targets"]["tight/big-chat"]["attempts"]
        assert attempts == {"response_too_large": 1}, attempts  # not asked again: it would be paid for twice
        assert admin_stats(gw)["targets"]["tight/big-chat"].get("state", "ok") == "ok"  # not a health failure
    finally:
        gw.stop()

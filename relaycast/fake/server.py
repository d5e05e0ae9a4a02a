"""A fake LLM provider: a real HTTP server speaking OpenAI's and Anthropic's wire formats.

Routes (each also without the /v1 prefix):
  POST /v1/chat/completions   OpenAI chat completions, streaming or not
  POST /v1/embeddings         OpenAI embeddings
  GET  /v1/models             OpenAI model list
  POST /v1/messages           Anthropic Messages API, streaming or not
  GET  /_fake/requests        the last requests received (bodies and non-secret headers), for tests
  GET  /_fake/stats           {"active_streams": N}
  POST /_fake/reset           forget them

Behaviour per request: see `relaycast.fake.behaviour`.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from relaycast.asgi import (
    SSE_HEADERS,
    ClientGone,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    run_until_disconnect,
    send_bytes,
)
from relaycast.fake import anthropic_wire, openai_wire
from relaycast.fake.behaviour import BadBehaviour, Behaviour, for_request
from relaycast.fake.common import SECRET_HEADERS, FakeState, bearer, num, send_chunks, sleep_ms, text


class FakeUpstream:
    def __init__(self, defaults: Behaviour = Behaviour(), api_key: str | None = None, seed: int = 7) -> None:
        self.state = FakeState(defaults=defaults, api_key=api_key, rng=random.Random(seed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.startswith("/v1/"):
            path = path[3:]
        method = scope["method"]
        headers = header_map(scope)
        if method == "GET" and path == "/models":
            await send_bytes(send, 200, _models(), [])
            return
        if method == "GET" and path == "/_fake/requests":
            await send_bytes(send, 200, orjson.dumps(list(self.state.log)), [])
            return
        if method == "GET" and path == "/_fake/stats":
            await send_bytes(send, 200, orjson.dumps({"active_streams": self.state.active_streams}), [])
            return
        if method == "POST" and path == "/_fake/reset":
            self.state.log.clear()
            await send_bytes(send, 200, b"{}", [])
            return
        if method != "POST" or path not in ("/chat/completions", "/embeddings", "/messages"):
            await send_bytes(send, 404, b'{"error":{"message":"Not found","type":"invalid_request_error"}}', [])
            return
        raw = await read_body(receive, 64 * 1024 * 1024)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            await send_bytes(
                send,
                400,
                b'{"error":{"message":"We could not parse the JSON body of your request.","type":"invalid_request_error","param":null,"code":null}}',
                [],
            )
            return
        self.state.log.append(
            {
                "path": path,
                "body": body,
                "headers": {k.decode(): v.decode("latin-1") for k, v in headers.items() if k not in SECRET_HEADERS},
            }
        )
        if path == "/messages":
            work = anthropic_wire.messages(self.state, body, headers, send)
        else:
            work = self._openai(path, body, headers, send)
        if body.get("stream"):
            # Stop sending the moment the client goes away, as a real provider does.
            try:
                await run_until_disconnect(receive, work)
            except ClientGone:
                pass
        else:
            await work

    async def _openai(self, path: str, body: dict[str, Any], headers: dict[bytes, bytes], send: Send) -> None:
        presented = bearer(headers)
        model = str(body.get("model", ""))
        try:
            name, b = for_request(model, text(headers.get(b"x-fake-behaviour")), self.state.defaults)
        except BadBehaviour as e:
            await send_bytes(
                send,
                400,
                orjson.dumps(
                    {"error": {"message": str(e), "type": "invalid_request_error", "param": "model", "code": None}}
                ),
                [],
            )
            return
        if self.state.api_key is not None and presented != self.state.api_key:
            err, _ = openai_wire.error_body(401, name, presented)
            await send_bytes(send, 401, err, [])
            return
        if path == "/embeddings":
            await sleep_ms(b.latency_ms)
            await send_bytes(send, 200, openai_wire.embeddings(name, body.get("input")), [])
            return
        await self._chat(name, b, body, send)

    async def _chat(self, model: str, b: Behaviour, body: dict[str, Any], send: Send) -> None:
        status = b.error
        if status is None and b.fail_rate and self.state.rng.random() < b.fail_rate:
            status = 503
        if status is not None:
            await sleep_ms(b.latency_ms)
            err, _ = openai_wire.error_body(status, model)
            extra = []
            if b.retry_after is not None:
                extra.append((b"retry-after", num(b.retry_after)))
            await send_bytes(send, status, err, extra)
            return
        if b.context_length:
            await send_bytes(send, 400, openai_wire.CONTEXT_LENGTH, [])
            return
        if b.content_policy:
            await send_bytes(send, 400, openai_wire.CONTENT_POLICY, [])
            return
        rid = self.state.next_id("chatcmpl-fake")
        if not body.get("stream"):
            await sleep_ms(b.latency_ms)
            await send_bytes(send, 200, openai_wire.completion(rid, model, b, body), [(b"x-request-id", rid.encode())])
            return
        await self._stream(rid, model, b, body, send)

    async def _stream(self, rid: str, model: str, b: Behaviour, body: dict[str, Any], send: Send) -> None:
        so = body.get("stream_options") or {}
        with_usage = bool(so.get("include_usage"))
        w = openai_wire.ChunkWriter(rid, model, with_usage)
        call = openai_wire.tool_call(body) if b.tool_call else None
        chunks = [w.chunk({"role": "assistant", "content": "", "refusal": None})]
        if call:
            chunks.append(w.chunk({"tool_calls": [{"index": 0, **call}]}))
        else:
            chunks.extend(w.chunk({"content": t}) for t in openai_wire.tokens(b.tokens))
        chunks.append(w.chunk({}, "tool_calls" if call else "stop"))
        if with_usage:
            chunks.append(w.usage_chunk(openai_wire.usage(b, openai_wire.count_prompt_tokens(body.get("messages")))))
        chunks.append(b"data: [DONE]\n\n")
        await sleep_ms(b.first_token_ms)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, (b"x-request-id", rid.encode())]}
        )
        await send_chunks(send, chunks, b, self.state)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _models() -> bytes:
    names = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-3-5-haiku-latest")
    return orjson.dumps(
        {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 1700000000, "owned_by": "fake"} for n in names],
        }
    )


__all__ = ["FakeUpstream"]

"""A fake LLM provider: a real HTTP server speaking OpenAI's and Anthropic's wire formats.

Routes (each also without the /v1 prefix):
  POST /v1/chat/completions   OpenAI chat completions, streaming or not; `n` choices; `response_format`
                              json_schema / json_object answers JSON (see `relaycast.fake.json_schema`)
  POST /v1/responses          OpenAI Responses API, streaming or not; `text.format` as response_format
  POST /v1/completions        OpenAI legacy completions (`text_completion`), streaming or not
  POST /v1/embeddings         OpenAI embeddings; `encoding_format` float (default) or base64
  GET  /v1/models             OpenAI model list
  POST /v1/messages           Anthropic Messages API, streaming or not; `output_config.format` (or the beta's
                              top-level `output_format`) json_schema answers JSON
  POST /v1/messages/count_tokens  Anthropic token counting: {"input_tokens": N}, as /v1/messages counts
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
from relaycast.fake import anthropic_wire, completions_wire, json_schema, openai_wire, responses_wire
from relaycast.fake.behaviour import HEADER, BadBehaviour, Behaviour, for_request
from relaycast.fake.common import SECRET_HEADERS, FakeState, bearer, num, send_chunks, sleep_ms, text

ROUTES = ("/chat/completions", "/responses", "/completions", "/embeddings", "/messages", "/messages/count_tokens")


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
        if method != "POST" or path not in ROUTES:
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
        elif path == "/messages/count_tokens":
            work = anthropic_wire.count_tokens(self.state, body, headers, send)
        else:
            work = self._openai(path, body, headers, send)
        if body.get("stream"):
            # Stop sending the moment the client goes away, as a real provider does.
            try:
                await run_until_disconnect(receive, work, scope)
            except ClientGone:
                pass
        else:
            await work

    async def _openai(self, path: str, body: dict[str, Any], headers: dict[bytes, bytes], send: Send) -> None:
        presented = bearer(headers)
        model = str(body.get("model", ""))
        try:
            name, b = for_request(model, text(headers.get(HEADER)), self.state.defaults)
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
            fmt = body.get("encoding_format") or "float"
            if fmt not in openai_wire.EMBEDDING_FORMATS:
                msg = (
                    f"Invalid value for 'encoding_format': expected one of {', '.join(openai_wire.EMBEDDING_FORMATS)}."
                )
                await send_bytes(send, 400, openai_wire.invalid(msg, "encoding_format"), [])
                return
            await sleep_ms(b.latency_ms)
            await send_bytes(send, 200, openai_wire.embeddings(name, body.get("input"), encoding_format=fmt), [])
            return
        if await self._refused(name, b, send, "input" if path == "/responses" else "messages"):
            return
        try:
            if path == "/responses":
                await self._responses(name, b, body, send)
            elif path == "/completions":
                await self._completions(name, b, body, send)
            else:
                await self._chat(name, b, body, send)
        except json_schema.SchemaError as e:
            param = "text.format.schema" if path == "/responses" else "response_format"
            await send_bytes(send, 400, openai_wire.invalid(f"Invalid schema: {e}.", param), [])
        except ValueError as e:  # a malformed `n` or `prompt`, found before anything was sent
            await send_bytes(send, 400, openai_wire.invalid(str(e), _bad_param(str(e))), [])

    async def _refused(self, model: str, b: Behaviour, send: Send, prompt_param: str) -> bool:
        """Answer the behaviour's error or refusal, if it asks for one."""
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
            return True
        if b.context_length:
            await send_bytes(send, 400, openai_wire.context_length(prompt_param), [])
            return True
        if b.content_policy:
            await send_bytes(send, 400, openai_wire.CONTENT_POLICY, [])
            return True
        return False

    async def _chat(self, model: str, b: Behaviour, body: dict[str, Any], send: Send) -> None:
        rid = self.state.next_id("chatcmpl-fake")
        if not body.get("stream"):
            answer = openai_wire.completion(rid, model, b, body)
            await sleep_ms(b.latency_ms)
            await send_bytes(send, 200, answer, [(b"x-request-id", rid.encode())])
            return
        so = body.get("stream_options") or {}
        with_usage = bool(so.get("include_usage"))
        w = openai_wire.ChunkWriter(rid, model, with_usage, openai_wire.service_tier(b))
        chunks = openai_wire.stream_chunks(w, b, body, with_usage)
        chunks.append(b"data: [DONE]\n\n")
        await self._send_stream(rid, b, chunks, send)

    async def _responses(self, model: str, b: Behaviour, body: dict[str, Any], send: Send) -> None:
        rid = self.state.next_id("resp_fake")
        a = responses_wire.answer(rid, model, b, body)
        if not body.get("stream"):
            await sleep_ms(b.latency_ms)
            answer = orjson.dumps(responses_wire.response_object(a))
            await send_bytes(send, 200, answer, [(b"x-request-id", rid.encode())])
            return
        await self._send_stream(rid, b, responses_wire.events(a), send)

    async def _completions(self, model: str, b: Behaviour, body: dict[str, Any], send: Send) -> None:
        rid = self.state.next_id("cmpl-fake")
        if not body.get("stream"):
            answer = completions_wire.completion(rid, model, b, body)
            await sleep_ms(b.latency_ms)
            await send_bytes(send, 200, answer, [(b"x-request-id", rid.encode())])
            return
        await self._send_stream(rid, b, completions_wire.stream_chunks(rid, model, b, body), send)

    async def _send_stream(self, rid: str, b: Behaviour, chunks: list[bytes], send: Send) -> None:
        await sleep_ms(b.first_token_ms)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, (b"x-request-id", rid.encode())]}
        )
        await send_chunks(send, chunks, b, self.state)


def _bad_param(message: str) -> str:
    return "n" if "'n'" in message else "prompt"


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

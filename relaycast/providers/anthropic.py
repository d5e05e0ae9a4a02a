"""Anthropic's native Messages API, offered to clients as OpenAI chat completions.

`AnthropicProvider` posts to `{base_url}/messages` and maps both ways (the pure mapping is in `anthropic_map`).
Streams are translated event by event into OpenAI `chat.completion.chunk` events by `StreamTranslator`;
each upstream read becomes at most one yield, so tokens reach the client as soon as they arrive.
Errors are classified once, here, by `classify`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any

import orjson

from relaycast import errors
from relaycast.deadlines import Deadlines
from relaycast.providers.anthropic_map import (
    ANSWER_TOOL,
    chat_result,
    finish_reason,
    openai_usage,
    request_body,
    usage_of,
)
from relaycast.providers.base import ChatResult, StreamState
from relaycast.providers.client import UpstreamClient
from relaycast.providers.exchange import Answer
from relaycast.providers.forward import forward_table, merged
from relaycast.providers.http import (
    ERROR_BODY_BYTES,
    UpstreamBuffer,
    UpstreamEvents,
    post_upstream,
    read_answer,
)
from relaycast.providers.settings import ProviderConfig, Timeouts
from relaycast.records import Usage
from relaycast.retry import retry_after_seconds
from relaycast.schema import ChatRequest
from relaycast.sse import DONE_EVENT, encode

API_VERSION = "2023-06-01"
# A text chunk's bytes around its JSON string: what `StreamTranslator._chunk({"content": text})` makes, without
# encoding the dicts around the text for every token.
_TEXT_OPEN = b'[{"index":0,"delta":{"content":'
_TEXT_CLOSE = b'},"logprobs":null,"finish_reason":null}]}\n\n'


class AnthropicProvider:
    def __init__(self, config: ProviderConfig, client: UpstreamClient, buffer: UpstreamBuffer | None = None) -> None:
        self.config = config
        self._client = client
        self._buffer = buffer if buffer is not None else UpstreamBuffer()
        self._deadlines = Deadlines()
        headers = {"content-type": "application/json", "accept": "application/json", "anthropic-version": API_VERSION}
        headers.update((k.lower(), v) for k, v in config.headers)  # e.g. anthropic-beta, or another version
        if config.api_key:
            headers["x-api-key"] = config.api_key
        self._headers = headers
        self._forward = forward_table(config.forward_headers)  # empty: nothing is looked up per request
        self._url = config.base_url + "/messages"

    async def _post(self, body: dict[str, Any], target: str, t: Timeouts, req: ChatRequest, native: bool) -> Answer:
        key = self.config.api_key
        headers = self._headers
        if native and req.native_headers:  # a Messages client's own anthropic-beta / anthropic-version
            headers = {**headers, **dict(req.native_headers)}
        if self._forward:  # the client's headers this provider is configured to get
            headers = merged(headers, self._forward, req.client_headers)
        return await post_upstream(
            self._client,
            self._url,
            orjson.dumps(body),
            headers,
            t,
            target,
            lambda status, raw, headers: classify(status, raw, headers, target, key),
            self._buffer,
            self._deadlines,
        )

    def _body(self, req: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
        """The client's own Messages body (a `/v1/messages` request: nothing is lost), else the chat body mapped."""
        if req.dialect == "messages" and req.native is not None:
            body = dict(req.native)
            body["model"] = model
            if stream:
                body["stream"] = True
            else:
                body.pop("stream", None)
            return body
        if req.untranslatable:
            raise errors.NotSupported(f"Anthropic targets cannot serve this request: {req.untranslatable}")
        return request_body(req.body, model, stream=stream)

    async def chat(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> ChatResult:
        target = f"{self.config.name}/{model}"
        t = timeouts or self.config.timeouts
        native = req.dialect == "messages" and req.native is not None
        resp = await self._post(self._body(req, model, False), target, t, req, native)
        raw = await read_answer(
            resp,
            t,
            target,
            self.config.max_response_bytes,
            self._buffer,
            "the provider's max_response_bytes",
            self._deadlines,
        )
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            del raw  # not kept alive by the error's traceback
            raise errors.MalformedResponse("upstream response is not JSON", target=target) from None
        del raw  # the answer is made anew from `parsed`: the upstream's bytes are given back now
        if isinstance(parsed, dict) and parsed.get("type") == "error":
            raise classify(0, parsed, resp.headers, target, self.config.api_key)
        result = chat_result(parsed, model, int(time.time()), target)
        if native:  # the client gets Anthropic's message as it is; what the gateway records is read from it
            result.body, result.dialect = orjson.dumps(parsed), "messages"
        result.native_finish_reason = parsed.get("stop_reason") if isinstance(parsed.get("stop_reason"), str) else None
        return result

    async def chat_stream(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> AnthropicStream:
        target = f"{self.config.name}/{model}"
        t = timeouts or self.config.timeouts
        native = req.dialect == "messages" and req.native is not None
        resp = await self._post(self._body(req, model, True), target, t, req, native)
        if "text/event-stream" not in resp.headers.get("content-type", ""):
            # A JSON answer to a stream request: an error in disguise, or a server that ignored `stream`.
            raw = await read_answer(resp, t, target, ERROR_BODY_BYTES, self._buffer, "", self._deadlines)
            if (_error_of(raw) or {}).get("type") is None:
                raise errors.MalformedResponse("upstream answered a stream request without streaming", target=target)
            raise classify(0, raw, resp.headers, target, self.config.api_key)
        translator = StreamTranslator(model, req.include_usage, target, int(time.time()), self.config.api_key)
        return AnthropicStream(resp, translator, t.idle_s, native)

    async def embeddings(self, body: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
        raise errors.NotSupported(f"provider '{self.config.name}' (anthropic) does not offer embeddings", param="model")


class AnthropicStream:
    """An open Anthropic stream, read as OpenAI SSE events, or forwarded as Anthropic's own events (`native`: a
    `/v1/messages` client). `state` fills in as events arrive either way."""

    def __init__(self, resp: Answer, translator: StreamTranslator, idle_s: float, native: bool = False) -> None:
        self._resp = resp
        self._translator = translator
        self._idle_s = idle_s
        self._native = native
        self.dialect = "messages" if native else "chat"
        self.state = translator.state

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream must not go back to the pool.
        self._resp.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        translator = self._translator
        target = translator.target
        reads = UpstreamEvents(self._resp, self._idle_s, target)
        try:
            while (events := await reads.next()) is not None:
                parts: list[bytes] = []
                try:
                    for ev in events:
                        chat = translator.feed(ev.event, ev.data)  # raises on an error event
                        parts.append(encode(ev.data, ev.event) if self._native else chat)
                except errors.ProviderError:
                    if parts:  # what came before the failure in the same read still reaches the client
                        yield b"".join(parts)
                    raise
                out = b"".join(parts)
                if out:
                    yield out
                if self.state.done:
                    return
        finally:
            reads.close()
            self._resp.release() if self.state.done else self._resp.close()
        raise errors.StreamCut("upstream ended the stream before message_stop", target=target)


class StreamTranslator:
    """Turns Anthropic stream events into OpenAI chunk events and records what it learns in `state`. No I/O."""

    def __init__(self, model: str, include_usage: bool, target: str, created: int, secret: str | None = None) -> None:
        self.state = StreamState()
        self.target = target
        self._include_usage = include_usage
        self._created = created
        self._secret = secret
        self._model = model
        self._head = self._make_head("chatcmpl-anthropic", model)
        self._tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool_calls index
        self._answer: int | None = None  # the block index of a structured answer (anthropic_map.ANSWER_TOOL)
        self._usage: dict[str, Any] = {}

    def feed(self, event: str | None, data: bytes) -> bytes:
        """One upstream event in; zero or more OpenAI SSE events out (joined). Raises on error events."""
        if not data:
            return b""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise errors.MalformedResponse("upstream stream event is not JSON", target=self.target) from None
        if not isinstance(obj, dict):
            raise errors.MalformedResponse("upstream sent a stream event that is not an object", target=self.target)
        kind = obj.get("type") or event
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "message_start":
            return self._message_start(obj)
        if kind == "content_block_start":
            return self._block_start(obj)
        if kind == "message_delta":
            return self._message_delta(obj)
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            raise classify(0, obj, {}, self.target, self._secret)
        return b""  # ping, content_block_stop, and event types added later

    def _make_head(self, mid: str, model: str) -> bytes:
        return (
            b'{"id":'
            + orjson.dumps(mid)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"choices":'
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + self._head + orjson.dumps([choice]) + b"}\n\n"

    def _message_start(self, obj: dict[str, Any]) -> bytes:
        msg = obj.get("message")
        if not isinstance(msg, dict):
            raise errors.MalformedResponse("message_start without a message", target=self.target)
        mid, model = msg.get("id"), msg.get("model")
        self.state.response_id = mid if isinstance(mid, str) else None
        self.state.response_model = model if isinstance(model, str) else None
        if isinstance(mid, str):
            self._head = self._make_head(mid, model if isinstance(model, str) and model else self._model)
        self._add_usage(msg.get("usage"))
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, obj: dict[str, Any]) -> bytes:
        block = obj.get("content_block")
        if not isinstance(block, dict):
            return b""
        kind = block.get("type")
        if kind == "tool_use" and block.get("name") == ANSWER_TOOL:
            self._answer = obj.get("index")  # a structured answer: its input streams as the answer's text
            return b""
        if kind == "tool_use":
            index = len(self._tools)
            self._tools[obj.get("index", index)] = index
            self.state.saw_token()
            self.state.tool_call(index, block.get("id"), block.get("name"))
            call = {
                "index": index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "text" and block.get("text"):
            return self._text(block["text"])
        if kind == "thinking" and block.get("thinking"):
            self.state.saw_token()
            return self._chunk({"reasoning_content": block["thinking"]})
        return b""

    def _delta(self, obj: dict[str, Any]) -> bytes:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return b""
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return self._text(text) if isinstance(text, str) and text else b""
        if kind == "input_json_delta":
            part = delta.get("partial_json")
            if self._answer is not None and obj.get("index") == self._answer:
                return self._text(part) if isinstance(part, str) and part else b""
            index = self._tools.get(obj.get("index"))  # type: ignore[arg-type]
            if not part or index is None:
                return b""
            self.state.saw_token()
            self.state.tool_call(index, arguments=part)
            return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        if kind == "thinking_delta" and delta.get("thinking"):
            self.state.saw_token()
            return self._chunk({"reasoning_content": delta["thinking"]})
        return b""  # signature_delta, citations_delta, ...

    def _text(self, text: str) -> bytes:
        state = self.state
        state.saw_token()
        state.text.append(text)
        return b"".join((b"data: ", self._head, _TEXT_OPEN, orjson.dumps(text), _TEXT_CLOSE))

    def _message_delta(self, obj: dict[str, Any]) -> bytes:
        self._add_usage(obj.get("usage"))
        delta = obj.get("delta")
        finish = finish_reason(delta.get("stop_reason")) if isinstance(delta, dict) else None
        if finish is None:
            return b""
        if finish == "tool_calls" and not self._tools:
            finish = "stop"  # the structured answer's forced tool
        self.state.finish_reason = finish
        return self._chunk({}, finish)

    def _message_stop(self) -> bytes:
        state = self.state
        out = []
        if state.finish_reason is None:  # message_delta never said why: it ended normally
            state.finish_reason = "stop"
            out.append(self._chunk({}, "stop"))
        if self._include_usage:
            u = state.usage or Usage()
            tier = b"" if u.service_tier is None else b',"service_tier":' + orjson.dumps(u.service_tier)
            out.append(b"data: " + self._head + b'[],"usage":' + orjson.dumps(openai_usage(u)) + tier + b"}\n\n")
        out.append(DONE_EVENT)
        state.done = True
        return b"".join(out)

    def _add_usage(self, u: Any) -> None:
        # message_start carries input (and cache) counts, the cache writes by TTL and the service tier;
        # message_delta carries the cumulative output count and server tool use, and on newer API versions the
        # final input counts too. Each key keeps its latest value.
        if isinstance(u, dict):
            self._usage.update((k, v) for k, v in u.items() if v is not None)
            self.state.usage = usage_of(self._usage)


# --- error classification -----------------------------------------------------------------------

STATUS_OF_TYPE = MappingProxyType(
    {
        "invalid_request_error": 400,
        "authentication_error": 401,
        "billing_error": 402,
        "permission_error": 403,
        "not_found_error": 404,
        "request_too_large": 413,
        "rate_limit_error": 429,
        "api_error": 500,
        "timeout_error": 504,
        "overloaded_error": 529,
    }
)
CONTEXT_WORDS = ("prompt is too long", "context window", "context limit", "context length")
BILLING_WORDS = ("credit balance", "billing", "spend limit", "purchase credits")


def _error_of(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    return err if isinstance(err, dict) else None


def classify(status: int, body: Any, headers: Any, target: str, secret: str | None = None) -> errors.ProviderError:
    """Classify an Anthropic error once: by error type first, then by HTTP status; words only refine a 400.

    `body` is the raw answer or the parsed error object. `status` is 0 when unknown (a stream `error` event
    arrives after a 200): the error type's usual status is reported then. `secret` is scrubbed from messages.
    """
    if isinstance(body, (bytes, bytearray)):
        try:
            body = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            body = {"error": {"message": bytes(body[:300]).decode("utf-8", "replace").strip()}}
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    etype = str(err.get("type") or "")
    status = status or STATUS_OF_TYPE.get(etype, 502)
    message = str(err.get("message") or "") or f"upstream returned HTTP {status}"
    if secret:
        message = message.replace(secret, "[redacted]")
    lower = message.lower()
    kw: dict[str, Any] = {"target": target, "upstream_status": status}
    billing = any(w in lower for w in BILLING_WORDS)
    if etype == "overloaded_error" or status == 529:
        return errors.Overloaded(message, retry_after=retry_after_seconds(headers), **kw)
    if etype == "rate_limit_error" or status == 429:
        return errors.RateLimited(message, retry_after=retry_after_seconds(headers), quota=billing, **kw)
    if etype == "billing_error" or status == 402:
        return errors.RateLimited(message, quota=True, **kw)
    if etype in ("authentication_error", "permission_error") or status in (401, 403):
        return errors.UpstreamAuth(f"upstream rejected the gateway's credentials: {message}", **kw)
    if etype == "not_found_error" or status == 404:
        return errors.UpstreamNotFound(message, **kw)
    if etype == "request_too_large" or status == 413:
        return errors.ContextLength(message, **kw)
    if etype == "timeout_error" or status in (408, 504):
        return errors.Timeout(message, phase="total", **kw)
    if etype == "api_error" or status >= 500:
        return errors.Upstream5xx(message, **kw)
    if any(w in lower for w in CONTEXT_WORDS):
        return errors.ContextLength(message, **kw)
    if "policy" in lower and ("blocked" in lower or "violat" in lower):
        return errors.ContentPolicy(message, **kw)
    if billing:  # "Your credit balance is too low ..." arrives as a 400: our account's problem, not the request's
        return errors.RateLimited(message, quota=True, **kw)
    return errors.UpstreamBadRequest(message, **kw)

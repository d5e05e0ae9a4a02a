"""OpenAI-compatible wire format: OpenAI, OpenRouter, Groq, Together, Fireworks, DeepSeek, Mistral, vLLM, Ollama.

Non-streaming bodies are forwarded as the upstream sent them. Stream events keep their data as sent (written as
`data: ` lines with `\n` line endings); each is parsed only to learn text, usage, finish reason and errors (a plain
delta through `openai_chunks`), and the usage-only chunk is dropped when the client did not ask for it. A large
embeddings answer is not parsed whole: only its usage is read, from its end.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from relaycast import errors
from relaycast.deadlines import Deadlines
from relaycast.dialects.responses import NativeLearner
from relaycast.providers.base import ChatResult, StreamState, tool_calls_of
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
from relaycast.providers.openai_chunks import learn_deltas
from relaycast.providers.presets import PRESETS
from relaycast.providers.settings import ProviderConfig, Timeouts
from relaycast.records import Usage, content_text
from relaycast.retry import retry_after_seconds
from relaycast.schema import OPENROUTER_EXTENSIONS, ChatRequest, upstream_body
from relaycast.sse import DONE, DONE_EVENT, Event, encode

CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter", "invalid_prompt", "moderation_blocked"})
CONTEXT_LENGTH_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
# OpenAI-compatible servers that give no code (vLLM, Ollama, ...) still say it in words.
CONTEXT_LENGTH_WORDS = (
    "maximum context length",
    "context length",
    "context_length",
    "too many tokens",
    "prompt is too long",
)
CONTENT_POLICY_WORDS = ("content management policy", "content policy", "usage policy", "flagged")
# Embeddings answers up to this size are parsed whole (and refused when they are not JSON); larger ones are
# forwarded after a cheap check, since millions of floats as Python objects take several times the answer's size
# and hold the event loop while they are made.
EMBEDDINGS_PARSE_BYTES = 1024 * 1024
USAGE_KEY = re.compile(rb'"usage"\s*:\s*\{')


class OpenAICompatProvider:
    def __init__(self, config: ProviderConfig, client: UpstreamClient, buffer: UpstreamBuffer | None = None) -> None:
        self.config = config
        self._client = client
        self._buffer = buffer if buffer is not None else UpstreamBuffer()
        self._deadlines = Deadlines()
        preset = PRESETS[config.kind]
        self._preset = preset
        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update(dict(config.headers))
        if config.api_key:
            headers[preset.auth_header] = preset.auth_scheme + config.api_key
        self._headers = headers
        self._forward = forward_table(config.forward_headers)  # empty: nothing is looked up per request

    # --- chat ---------------------------------------------------------------------------------

    def _chat_body(self, req: ChatRequest, model: str, stream: bool) -> bytes:
        body = upstream_body(req, model, keep_openrouter=self._preset.openrouter_extensions)
        cap = self._preset.output_cap
        if cap != "max_tokens" and "max_tokens" in body:
            given = body.pop("max_tokens")
            body.setdefault(cap, given)
        if stream and self._preset.stream_usage:
            so = dict(body.get("stream_options") or {})
            so["include_usage"] = True
            body["stream_options"] = so
        return orjson.dumps(body)

    async def _post(self, path: str, data: bytes, target: str, t: Timeouts, req: ChatRequest | None = None) -> Answer:
        key = self.config.api_key
        headers = self._headers
        if self._forward and req is not None:  # the client's headers this provider is configured to get
            headers = merged(headers, self._forward, req.client_headers)
        return await post_upstream(
            self._client,
            self.config.base_url + path,
            data,
            headers,
            t,
            target,
            lambda status, raw, headers: classify(status, raw, headers, target, key),
            self._buffer,
            self._deadlines,
        )

    def _request(self, req: ChatRequest, model: str, stream: bool) -> tuple[str, bytes]:
        """The path and body for `req`: chat completions, or the client's own API where this provider speaks it
        (the Responses API when `responses_api` is on; legacy completions always)."""
        native = req.native is not None and not req.continued
        if req.native is not None and (
            req.dialect == "completions" or (req.dialect == "responses" and self.config.responses_api and native)
        ):
            body = {k: v for k, v in req.native.items() if k not in OPENROUTER_EXTENSIONS}
            body["model"] = model
            cap = req.body.get("max_tokens")  # the client's, or the cap admission set for a token limit or budget
            if (
                req.dialect == "responses"
                and isinstance(cap, int)
                and not isinstance(body.get("max_output_tokens"), int)
            ):
                body["max_output_tokens"] = cap
            if stream:
                body["stream"] = True
                if req.dialect == "completions" and self._preset.stream_usage:
                    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            else:
                body.pop("stream", None)
            return ("/completions" if req.dialect == "completions" else "/responses"), orjson.dumps(body)
        if req.untranslatable:
            raise errors.NotSupported(
                f"provider '{self.config.name}' is reached through chat completions, which cannot serve this "
                f"request: {req.untranslatable}"
            )
        return "/chat/completions", self._chat_body(req, model, stream)

    async def chat(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> ChatResult:
        target = f"{self.config.name}/{model}"
        t = timeouts or self.config.timeouts
        path, data = self._request(req, model, False)
        resp = await self._post(path, data, target, t, req)
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
        if not isinstance(parsed, dict):
            raise errors.MalformedResponse("upstream response is not a JSON object", target=target)
        if path == "/responses":
            return self._response(raw, parsed, target)
        if "error" in parsed and not parsed.get("choices"):
            # Some OpenAI-compatible servers answer 200 with an error body.
            raise classify(_status_of(parsed["error"]), raw, {}, target, self.config.api_key)
        choices = parsed.get("choices")
        if not isinstance(choices, list):
            raise errors.MalformedResponse("upstream response has no 'choices'", target=target)
        usage = parsed.get("usage")
        first = choices[0] if choices and isinstance(choices[0], dict) else {}
        msg = first.get("message")
        text = msg.get("content") if isinstance(msg, dict) else first.get("text")  # a legacy completion's text
        finish = first.get("finish_reason")
        native_finish = first.get("native_finish_reason", finish)
        model_seen, rid = parsed.get("model"), parsed.get("id")
        return ChatResult(
            body=raw,
            usage=Usage.from_openai(usage, parsed.get("service_tier")) if isinstance(usage, dict) else None,
            tool_calls=tool_calls_of(msg.get("tool_calls")) if isinstance(msg, dict) else [],
            finish_reason=finish,
            output_text=text if isinstance(text, str) else None,
            dialect="completions" if path == "/completions" else "chat",
            native_finish_reason=native_finish if isinstance(native_finish, str) else None,
            response_model=model_seen if isinstance(model_seen, str) else None,
            response_id=rid if isinstance(rid, str) else None,
        )

    def _response(self, raw: bytes, parsed: dict[str, Any], target: str) -> ChatResult:
        """A native Responses API answer: forwarded as it is; usage, finish and text read from it."""
        output = parsed.get("output")
        status = parsed.get("status")
        if not isinstance(output, list) or not isinstance(status, str):
            raise errors.MalformedResponse("upstream response is not a Responses API response", target=target)
        state = StreamState()
        failed = NativeLearner(state).feed({"type": f"response.{status}", "response": parsed})
        if failed is not None or (parsed.get("error") and status != "completed"):
            err = failed or parsed["error"]
            raise classify(_status_of(err) or 502, orjson.dumps({"error": err}), {}, target, self.config.api_key)
        texts: list[str] = [
            part["text"]
            for item in output
            if isinstance(item, dict) and item.get("type") == "message" and isinstance(item.get("content"), list)
            for part in item["content"]
            if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str)
        ]
        return ChatResult(
            body=raw,
            usage=state.usage,
            finish_reason=state.finish_reason,
            output_text="".join(texts) if texts else None,
            tool_calls=tool_calls_of(function_calls(output)),
            dialect="responses",
            native_finish_reason=parsed.get("status") if isinstance(parsed.get("status"), str) else None,
            response_model=parsed.get("model") if isinstance(parsed.get("model"), str) else None,
            response_id=parsed.get("id") if isinstance(parsed.get("id"), str) else None,
        )

    async def chat_stream(
        self, req: ChatRequest, model: str, timeouts: Timeouts | None = None
    ) -> OpenAIStream | ResponsesStream:
        target = f"{self.config.name}/{model}"
        t = timeouts or self.config.timeouts
        path, data = self._request(req, model, True)
        resp = await self._post(path, data, target, t, req)
        ctype = resp.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            # A JSON answer to a stream request: an error in disguise, or a server that ignored `stream`.
            raw = await read_answer(resp, t, target, ERROR_BODY_BYTES, self._buffer, "", self._deadlines)
            raise classify(_status_of(_error_of(raw)) or 502, raw, resp.headers, target, self.config.api_key)
        if path == "/responses":
            return ResponsesStream(resp, target, t.idle_s, self.config.api_key)
        stream = OpenAIStream(resp, target, req.include_usage, t.idle_s, self.config.api_key)
        if path == "/completions":
            stream.dialect = "completions"
        return stream

    # --- embeddings -----------------------------------------------------------------------------

    async def embeddings(self, body: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
        target = f"{self.config.name}/{model}"
        out = {k: v for k, v in body.items() if k not in ("models", "provider", "session_id", "trace")}
        out["model"] = model
        t = self.config.timeouts
        resp = await self._post("/embeddings", orjson.dumps(out), target, t)
        raw = await read_answer(
            resp,
            t,
            target,
            self.config.max_embeddings_bytes,
            self._buffer,
            "the provider's max_embeddings_bytes",
            self._deadlines,
        )
        try:
            usage = embeddings_usage(raw)
        except ValueError as e:
            del raw  # not kept alive by the error's traceback
            raise errors.MalformedResponse(str(e), target=target) from None
        return raw, usage


class OpenAIStream:
    """Forwards an upstream OpenAI SSE stream (chat completions, or legacy completions) event by event, learning
    what the gateway needs on the way."""

    dialect = "chat"

    def __init__(self, resp: Answer, target: str, client_usage: bool, idle_s: float, secret: str | None = None) -> None:
        self._resp = resp
        self._secret = secret
        self._target = target
        self._client_usage = client_usage
        self._idle_s = idle_s
        self.state = StreamState()
        self._tier: Any = None  # the first chunk's service_tier (every chunk repeats it), for a usage chunk without

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream must not go back to the pool, and the upstream
        # must see the cancellation at once.
        self._resp.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        state = self.state
        reads = UpstreamEvents(self._resp, self._idle_s, self._target)
        try:
            while (events := await reads.next()) is not None:
                # A read of whole one-line events (`reads.splitter.whole`) goes out as the bytes it came in, less the
                # events left out: no event is written again. `kept` is where the run of kept events began, and
                # `pos` where event `at_i` begins (found only when an event is left out).
                whole = reads.splitter.whole
                out: list[bytes] = []
                kept = pos = at_i = i = 0
                n = len(events)
                while i < n:
                    if state.response_id is not None:  # past the first chunk: a run of plain deltas at once
                        j = learn_deltas(state, events, i)
                        if whole is None:
                            out += [encode(ev.data) for ev in events[i:j]]
                        if j == n:
                            break
                        i = j
                    data = events[i].data
                    try:
                        keep = self._learn(data)
                    except errors.ProviderError:
                        # what came before the failure in the same read still reaches the client
                        if whole is not None:
                            out.append(whole[kept : _start(events, pos, at_i, i, len(whole))])
                        if before := b"".join(out):
                            yield before
                        raise
                    if whole is None:
                        if keep:  # data of several lines goes out as several `data:` lines
                            out.append(DONE_EVENT if data == DONE else encode(data))
                    elif not keep:
                        pos, at_i = _start(events, pos, at_i, i, len(whole)), i
                        out.append(whole[kept:pos])
                        kept = pos + len(data) + 8
                    i += 1
                if whole is not None:
                    out.append(whole[kept:])
                chunk = out[0] if len(out) == 1 else b"".join(out)
                if chunk:
                    yield chunk
                if state.done:
                    return
        finally:
            reads.close()
            self._resp.release() if state.done else self._resp.close()
        if state.finish_reason is not None:
            # Ended without [DONE] but complete: finish it properly for the client.
            state.done = True
            yield DONE_EVENT
            return
        raise errors.StreamCut("upstream ended the stream before it finished", target=self._target)

    def _learn(self, data: bytes) -> bool:
        """Learn from one event's data that `learn_deltas` did not take; return whether to forward it."""
        if data == DONE:
            self.state.done = True
            return True
        if not data:
            return False
        return self._inspect(data)

    def _inspect(self, data: bytes) -> bool:
        """Learn from one event; return whether to forward it."""
        obj = event_object(data, self._target)
        err = obj.get("error")
        if err is not None:
            raise classify(_status_of(err) or 502, data, {}, self._target, self._secret)
        state = self.state
        if state.response_id is None:  # the first chunk: every chunk repeats them
            rid, model = obj.get("id"), obj.get("model")
            state.response_id = rid if isinstance(rid, str) else ""
            state.response_model = model if isinstance(model, str) else None
            self._tier = obj.get("service_tier")
        choices = obj.get("choices")
        usage = obj.get("usage")
        if isinstance(usage, dict):
            state.usage = Usage.from_openai(usage, obj.get("service_tier") or self._tier)
        if choices:
            c0 = choices[0] if isinstance(choices, list) else None  # a server's odd shapes are forwarded as they are
            if isinstance(c0, dict):
                delta = c0.get("delta")
                if isinstance(delta, dict):
                    text = delta.get("content")
                    if text:
                        state.saw_token()
                        # some servers send a list of parts instead of a string
                        part = text if isinstance(text, str) else content_text(text)
                        if part:
                            state.text.append(part)
                    elif delta.get("tool_calls") or delta.get("reasoning") or delta.get("reasoning_content"):
                        state.saw_token()
                    calls = delta.get("tool_calls")
                    if calls and isinstance(calls, list):
                        for tc in calls:
                            fn = tc.get("function") if isinstance(tc, dict) else None
                            if isinstance(fn, dict) and isinstance(tc.get("index", 0), int):
                                state.tool_call(tc.get("index", 0), tc.get("id"), fn.get("name"), fn.get("arguments"))
                elif isinstance(c0.get("text"), str) and c0["text"]:  # a legacy completion's chunk
                    state.saw_token()
                    state.text.append(c0["text"])
                fr = c0.get("finish_reason")
                if fr:
                    state.finish_reason = fr
            return True
        # A chunk without choices: the usage chunk (forwarded only if the client asked for it).
        return usage is None or self._client_usage


class ResponsesStream:
    """Forwards a native Responses API stream event by event (as `event:` + `data:` lines), learning usage, the
    first token and the end from it (`dialects.responses.NativeLearner`)."""

    dialect = "responses"

    def __init__(self, resp: Answer, target: str, idle_s: float, secret: str | None) -> None:
        self._resp = resp
        self._target = target
        self._idle_s = idle_s
        self._secret = secret
        self.state = StreamState()
        self._learner = NativeLearner(self.state)
        self.final: dict[str, Any] | None = None

    async def aclose(self) -> None:
        self._resp.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        state = self.state
        reads = UpstreamEvents(self._resp, self._idle_s, self._target)
        try:
            while (events := await reads.next()) is not None:
                out: list[bytes] = []
                for ev in events:
                    if not ev.data or ev.data == DONE:
                        continue
                    try:
                        self._learn(ev.data)
                    except errors.ProviderError:
                        if out:
                            yield b"".join(out)
                        raise
                    out.append(encode(ev.data, ev.event))
                if out:
                    yield b"".join(out)
                if state.done:
                    return
        finally:
            reads.close()
            self._resp.release() if state.done else self._resp.close()
        raise errors.StreamCut("upstream ended the stream before response.completed", target=self._target)

    def _learn(self, data: bytes) -> None:
        obj = event_object(data, self._target)
        kind = obj.get("type")
        resp = obj.get("response")
        if kind in ("response.completed", "response.incomplete") and isinstance(resp, dict):
            self.final = resp  # what a stored response keeps
            output = resp.get("output")
            for i, call in enumerate(function_calls(output if isinstance(output, list) else [])):
                fn = call["function"]
                self.state.tool_call(i, call["id"], fn["name"], fn["arguments"])
        if kind == "response.created" and isinstance(resp, dict):
            rid, model = resp.get("id"), resp.get("model")
            self.state.response_id = rid if isinstance(rid, str) else None
            self.state.response_model = model if isinstance(model, str) else None
        failed = self._learner.feed(obj)
        if failed is not None:
            raise classify(_status_of(failed) or 502, orjson.dumps({"error": failed}), {}, self._target, self._secret)


def function_calls(output: list[Any]) -> list[dict[str, Any]]:
    """A Responses answer's `function_call` items, as chat tool calls."""
    return [
        {"id": item.get("call_id"), "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
        for item in output
        if isinstance(item, dict) and item.get("type") == "function_call"
    ]


def _start(events: list[Event], pos: int, at: int, i: int, size: int) -> int:
    """Where event `i` begins in its read of whole one-line events (`size` bytes), each `data: `, its data and a
    blank line: counted on from `pos`, where event `at` (<= i) begins, or back from the read's end, whichever
    passes fewer events (a usage chunk left out is one of the last)."""
    n = len(events)
    if i - at <= n - i:
        for k in range(at, i):
            pos += len(events[k].data) + 8
        return pos
    for k in range(i, n):
        size -= len(events[k].data) + 8
    return size


def event_object(data: bytes, target: str) -> dict[str, Any]:
    """A stream event's JSON object; MalformedResponse when it is not one."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise errors.MalformedResponse("upstream sent a stream event that is not JSON", target=target) from None
    if not isinstance(obj, dict):
        raise errors.MalformedResponse("upstream sent a stream event that is not an object", target=target)
    return obj


def embeddings_usage(raw: bytes) -> Usage | None:
    """The usage of an embeddings answer; ValueError when the answer is not a JSON object. An answer above
    EMBEDDINGS_PARSE_BYTES is checked only at its ends, and its usage object read from the last `"usage"` key
    (where OpenAI-compatible servers put it): the rest is numbers or base64 text, which cannot hold that key."""
    view = memoryview(raw)
    if len(raw) <= EMBEDDINGS_PARSE_BYTES:
        try:
            parsed = orjson.loads(view)
        except orjson.JSONDecodeError:
            raise ValueError("upstream response is not JSON") from None
        if not isinstance(parsed, dict):
            raise ValueError("upstream response is not a JSON object")
        usage = parsed.get("usage")
        return Usage.from_openai(usage) if isinstance(usage, dict) else None
    if raw[:64].lstrip()[:1] != b"{" or raw[-64:].rstrip()[-1:] != b"}":
        raise ValueError("upstream response is not a JSON object")
    tail = max(0, len(raw) - 64 * 1024)
    found = [m.end() - 1 for m in USAGE_KEY.finditer(view[tail:])]  # where each `"usage": {` opens its object
    if not found:
        return None
    start = tail + found[-1]
    depth = 0
    for end in range(start, min(len(raw), start + 4096)):
        c = raw[end]
        depth += (c == 0x7B) - (c == 0x7D)  # { and }; usage holds numbers and nested objects, no strings of braces
        if depth == 0:
            try:
                usage = orjson.loads(view[start : end + 1])
            except orjson.JSONDecodeError:
                return None
            return Usage.from_openai(usage) if isinstance(usage, dict) else None
    return None


# --- error classification -----------------------------------------------------------------------


def _error_of(raw: bytes) -> Any:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return parsed.get("error") if isinstance(parsed, dict) else None


def _status_of(err: Any) -> int:
    if isinstance(err, dict):
        code = err.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            return code
        if isinstance(code, str) and code.isdigit() and 400 <= int(code) < 600:
            return int(code)
        if code in CONTEXT_LENGTH_CODES or code in CONTENT_POLICY_CODES:
            return 400
    return 0


def classify(status: int, raw: bytes, headers: Any, target: str, secret: str | None = None) -> errors.ProviderError:
    """Turn an OpenAI-compatible error answer into the error tree. Codes first; words only as a fallback.

    `secret` (the provider key) is scrubbed from the message: some upstreams echo the key they were given.
    """
    err = _error_of(raw) if raw else None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        code = str(err.get("code") or "")
        etype = str(err.get("type") or "")
    else:
        message = raw[:300].decode("utf-8", "replace").strip() if raw else ""
        code = etype = ""
    message = message or f"upstream returned HTTP {status}"
    if secret:
        message = message.replace(secret, "[REDACTED]")
    kw: dict[str, Any] = {"target": target, "upstream_status": status or None}
    lower = message.lower()
    if status == 429:
        quota = code in QUOTA_CODES or etype in QUOTA_CODES
        return errors.RateLimited(message, retry_after=retry_after_seconds(headers), quota=quota, **kw)
    if status == 529:
        return errors.Overloaded(message, retry_after=retry_after_seconds(headers), **kw)
    if status in (401, 403):
        return errors.UpstreamAuth(f"upstream rejected the gateway's credentials: {message}", **kw)
    if status == 404:
        return errors.UpstreamNotFound(message, **kw)
    if status == 408:
        return errors.Timeout(message, phase="total", **kw)
    if 400 <= status < 500:
        if code in CONTEXT_LENGTH_CODES or any(w in lower for w in CONTEXT_LENGTH_WORDS):
            return errors.ContextLength(message, **kw)
        if code in CONTENT_POLICY_CODES or any(w in lower for w in CONTENT_POLICY_WORDS):
            return errors.ContentPolicy(message, **kw)
        if status == 413:
            return errors.ContextLength(message, **kw)
        return errors.UpstreamBadRequest(message, param=err.get("param") if isinstance(err, dict) else None, **kw)
    return errors.Upstream5xx(message, **kw)

"""Anthropic's Messages API as a client dialect, the answer's side: pure translation from OpenAI chat completions,
no I/O. The request's side (`chat_body`) is `dialects.messages_request`.

- `message`: an OpenAI `chat.completion` -> an Anthropic `message` object.
- `MessagesStream`: OpenAI `chat.completion.chunk` objects -> Anthropic SSE events.
- `error_type` / `error_body`: errors in Anthropic's format.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson

from relaycast.dialects.messages_request import is_int
from relaycast.records import Usage

STOP_REASONS = MappingProxyType(
    {
        "stop": "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "function_call": "tool_use",
        "content_filter": "refusal",
    }
)
ERROR_TYPES = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        504: "timeout_error",
        529: "overloaded_error",
    }
)


# --- response -----------------------------------------------------------------------------------


def stop_reason(finish_reason: str | None) -> str:
    """OpenAI finish_reason -> Anthropic stop_reason: stop->end_turn, length->max_tokens,
    tool_calls/function_call->tool_use, content_filter->refusal, None (and anything else)->end_turn."""
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def anthropic_usage(usage: Usage | None, input_tokens: int = 0) -> dict[str, Any]:
    """`Usage` (OpenAI's meaning) -> Anthropic's counts, whose input_tokens leave out cache reads and writes.
    Without a usage: `input_tokens` as given, nothing else. The cache writes by TTL (`cache_creation`) and the web
    searches (`server_tool_use`) when there are some, and the service tier when the upstream named one."""
    if usage is None:
        return {
            "input_tokens": input_tokens,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    out: dict[str, Any] = {
        "input_tokens": max(0, uncached),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }
    if usage.cache_write_1h_tokens:
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens - usage.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        }
    if usage.web_searches:
        out["server_tool_use"] = {"web_search_requests": usage.web_searches}
    if usage.service_tier is not None:
        out["service_tier"] = usage.service_tier
    return out


def _usage_of(raw: Any, service_tier: Any = None) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Usage.from_openai(raw, service_tier)
    except (TypeError, ValueError, AttributeError):
        return None  # an upstream's odd usage object is not worth failing the answer for


def _reasoning_text(msg: dict[str, Any]) -> str:
    for name in ("reasoning_content", "reasoning"):
        v = msg.get(name)
        if isinstance(v, str) and v:
            return v
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with parts
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tool_id(call_id: Any, message_id: str, index: int) -> str:
    return call_id if isinstance(call_id, str) and call_id else f"toolu_{message_id}_{index}"


def message(chat: dict[str, Any], message_id: str, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion object (choices[0]) -> an Anthropic `message` object (id=message_id, model=model)."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    content: list[dict[str, Any]] = []
    if reasoning := _reasoning_text(msg):
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := _content_text(msg.get("content")):
        content.append({"type": "text", "text": text})
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = msg.get("tool_calls")
    for k, call in enumerate(calls if isinstance(calls, list) else []):
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            name = fn.get("name") if isinstance(fn.get("name"), str) else ""
            call_id = _tool_id(call.get("id"), message_id, k)
            content.append({"type": "tool_use", "id": call_id, "name": name, "input": _tool_input(fn.get("arguments"))})
    legacy = msg.get("function_call")
    if not isinstance(calls, list) and isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        args = _tool_input(legacy.get("arguments"))
        content.append({"type": "tool_use", "id": _tool_id(None, message_id, 0), "name": legacy["name"], "input": args})
    finish = choice.get("finish_reason")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish if isinstance(finish, str) else None),
        "stop_sequence": None,
        "usage": anthropic_usage(_usage_of(chat.get("usage"), chat.get("service_tier"))),
    }


# --- stream -------------------------------------------------------------------------------------


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesStream:
    """OpenAI chat.completion.chunk objects in, Anthropic SSE events out (bytes: `event: X\ndata: {json}\n\n`).

    Only choice 0 is read. Blocks open as their kind changes (thinking, text, one per tool call) and close when
    the next opens; OpenAI tool call deltas are matched to their block by `index`. A late delta of a tool call
    whose block was already closed (calls streamed interleaved) is still sent to that block's index.
    `message_delta` (stop reason, usage) waits for `finish()`: finish_reason and usage come in the last chunks.
    """

    def __init__(self, message_id: str, model: str, input_tokens: int = 0) -> None:
        self.message_id = message_id
        self.model = model
        self.input_tokens = input_tokens
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._tier: Any = None  # the chunks' service_tier
        self._started = False
        self._ended = False
        self._blocks = 0  # blocks opened so far: the next block's index
        self._open: str | None = None  # the open block's kind: "text", "thinking" or "tool_use"
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> block index

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """One chat chunk in; the Anthropic events it makes out (the first call also emits message_start)."""
        if self._ended:
            return b""
        out = [self._start()]
        if self._tier is None:
            self._tier = chunk.get("service_tier")
        usage = _usage_of(chunk.get("usage"), chunk.get("service_tier") or self._tier)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out.append(self._choice(choice))
        return b"".join(out)

    def finish(self) -> bytes:
        """Close the open block; message_delta (stop_reason, usage); message_stop."""
        if self._ended:
            return b""
        out = [self._start(), self._close()]
        self._ended = True
        usage = anthropic_usage(self.usage, self.input_tokens)
        delta = {"stop_reason": stop_reason(self.finish_reason), "stop_sequence": None}
        out.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, error_type: str, message: str) -> bytes:
        """An `error` event (after whatever was sent); never message_stop. The stream is over after it."""
        if self._ended:
            return b""
        self._ended = True
        return _event("error", {"type": "error", "error": {"type": error_type, "message": message}})

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        msg: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return _event("message_start", {"type": "message_start", "message": msg})

    def _choice(self, choice: dict[str, Any]) -> bytes:
        out = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if reasoning := _reasoning_text(delta):
                out.append(self._delta("thinking", {"type": "thinking_delta", "thinking": reasoning}))
            for name in ("content", "refusal"):
                text = delta.get(name)
                if isinstance(text, str) and text:
                    out.append(self._delta("text", {"type": "text_delta", "text": text}))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out.append(self._tool_delta(call))
            legacy = delta.get("function_call")
            if isinstance(legacy, dict):
                out.append(self._tool_delta({"index": 0, "function": legacy}))
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self.finish_reason = finish
        return b"".join(out)

    def _delta(self, kind: str, delta: dict[str, Any]) -> bytes:
        opened = b""
        if self._open != kind:
            block: dict[str, Any] = {"type": kind, kind: ""}
            if kind == "thinking":
                block["signature"] = ""
            opened = self._open_block(kind, block)
        return opened + self._block_delta(self._blocks - 1, delta)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        k = call.get("index", 0)
        k = k if is_int(k) else 0
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        opened = b""
        index = self._tools.get(k)
        if index is None:
            name = fn.get("name") if isinstance(fn.get("name"), str) else ""
            call_id = _tool_id(call.get("id"), self.message_id, len(self._tools))
            block: dict[str, Any] = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
            opened = self._open_block("tool_use", block)
            index = self._tools[k] = self._blocks - 1
        args = fn.get("arguments")
        if not isinstance(args, str) or not args:
            return opened
        return opened + self._block_delta(index, {"type": "input_json_delta", "partial_json": args})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        closed = self._close()
        self._open = kind
        index = self._blocks
        self._blocks += 1
        return closed + _event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})


# --- errors -------------------------------------------------------------------------------------


def error_type(status: int) -> str:
    """HTTP status -> Anthropic error type: 400 invalid_request_error, 401 authentication_error, 402 billing_error,
    403 permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error,
    504 timeout_error, 529 overloaded_error; other 5xx api_error; other 4xx invalid_request_error."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str, request_id: str | None = None) -> bytes:
    """Anthropic's error body: {"type":"error","error":{"type":...,"message":...},"request_id":...}."""
    body = {"type": "error", "error": {"type": error_type(status), "message": message}, "request_id": request_id}
    return orjson.dumps(body)

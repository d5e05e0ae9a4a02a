"""OpenAI's Responses API (`POST /v1/responses`, inbound): the answer's side, chat completions -> Responses. Pure,
no I/O. The request's side is `dialects.responses_request`.

- `response`: a `chat.completion` object -> a Responses `response` object.
- `ResponsesStream`: chat chunk objects -> Responses SSE events (`event: <type>` + `data: {json}`).
- `output_messages`: a response's `output` as chat messages, for `previous_response_id` history.
- `usage_of` / `response_usage`: a Responses `usage` object (and the response around it) -> `Usage`.
- `NativeLearner`: what the gateway records from a native Responses stream it forwards unchanged.

Item ids are derived from the response id (`resp_X` -> `msg_X`, `rs_X`, `fc_X_0`, ...), so a response rendered
twice has the same ids. Reasoning text (`reasoning_content` / `reasoning` of a chat message) becomes a reasoning
item with one `summary_text` part, which is what Responses clients read.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson

from relaycast.providers.base import StreamState
from relaycast.records import Usage

DELTA_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
# The gateway's error classes as a Responses `error.code` (the API allows only its own codes there).
RESPONSE_ERROR_CODES = MappingProxyType(
    {
        "rate_limit": "rate_limit_exceeded",
        "rate_limit_exceeded": "rate_limit_exceeded",
        "invalid_prompt": "invalid_prompt",
    }
)


# --- response: chat -> Responses -----------------------------------------------------------------


def response(chat: dict[str, Any], body: dict[str, Any], response_id: str, created_at: int) -> dict[str, Any]:
    """An OpenAI chat.completion object -> a Responses `response` object for the request `body`."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    ids = _Ids(response_id)
    output: list[dict[str, Any]] = []
    reasoning = _reasoning_text(msg)
    if reasoning:
        output.append(_reasoning_item(ids.reasoning(), reasoning, "completed"))
    content = msg.get("content")
    text = content if isinstance(content, str) else _content_text(content)
    refusal = msg.get("refusal")
    parts: list[dict[str, Any]] = []
    if text:
        parts.append(_text_part(text))
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        output.append(_message_item(ids.message(), parts, "completed"))
    calls = msg.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            output.append(
                _call_item(ids.call(), str(call.get("id") or ""), str(fn.get("name") or ""), _args(fn), "completed")
            )
    usage = chat.get("usage")
    resp = _envelope(body, response_id, created_at, str(chat.get("model") or body.get("model") or ""))
    resp["output"] = output
    tier = chat.get("service_tier")
    resp["usage"] = responses_usage(Usage.from_openai(usage, tier)) if isinstance(usage, dict) else None
    if isinstance(tier, str) and tier:
        resp["service_tier"] = tier
    _set_status(resp, choice.get("finish_reason"))
    return resp


def _envelope(body: dict[str, Any], response_id: str, created_at: int, model: str) -> dict[str, Any]:
    """The response object's fields that come from the request, with no output yet (status in_progress)."""
    reasoning = _obj(body.get("reasoning"))
    text = _obj(body.get("text"))
    fmt = _obj(text.get("format")) or {"type": "text"}
    metadata = body.get("metadata")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions") if isinstance(body.get("instructions"), str) else None,
        "max_output_tokens": _int_or_none(body.get("max_output_tokens")),
        "max_tool_calls": _int_or_none(body.get("max_tool_calls")),
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": _str_or_none(body.get("previous_response_id")),
        "prompt_cache_key": _str_or_none(body.get("prompt_cache_key")),
        "reasoning": {"effort": _str_or_none(reasoning.get("effort")), "summary": None},
        "safety_identifier": _str_or_none(body.get("safety_identifier")),
        "service_tier": "default",
        "store": body.get("store") is not False,
        "temperature": _num(body.get("temperature"), 1.0),
        "text": {
            "format": fmt,
            "verbosity": text.get("verbosity") if isinstance(text.get("verbosity"), str) else "medium",
        },
        "tool_choice": body.get("tool_choice") if isinstance(body.get("tool_choice"), (str, dict)) else "auto",
        "tools": body.get("tools") if isinstance(body.get("tools"), list) else [],
        "top_logprobs": _int_or_none(body.get("top_logprobs")) or 0,
        "top_p": _num(body.get("top_p"), 1.0),
        "truncation": body.get("truncation") if body.get("truncation") in ("auto", "disabled") else "disabled",
        "usage": None,
        "user": _str_or_none(body.get("user")),
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


def _set_status(resp: dict[str, Any], finish_reason: Any) -> None:
    if finish_reason == "length":
        resp["status"] = "incomplete"
        resp["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        resp["status"] = "incomplete"
        resp["incomplete_details"] = {"reason": "content_filter"}
    else:
        resp["status"] = "completed"


def responses_usage(u: Usage) -> dict[str, Any]:
    """A `Usage` as the Responses API's usage object. What it has no field for travels under Anthropic's own names,
    only when there is some, as in chat answers (`providers.anthropic_map.openai_usage`): `cache_creation` (cache
    writes by TTL) and `server_tool_use` (web searches, which a native answer shows as `web_search_call` items).
    The service tier is the response's own field."""
    out: dict[str, Any] = {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }
    out.update(u.anthropic_extras())
    return out


class _Ids:
    """Output item ids derived from the response id: msg_X, rs_X (then msg_X_1, ...), fc_X_0, fc_X_1, ..."""

    __slots__ = ("suffix", "counts")

    def __init__(self, response_id: str) -> None:
        self.suffix = response_id[5:] if response_id.startswith("resp_") else response_id
        self.counts = {"msg": 0, "rs": 0, "fc": 0}

    def _next(self, prefix: str, always_numbered: bool) -> str:
        n = self.counts[prefix]
        self.counts[prefix] = n + 1
        return f"{prefix}_{self.suffix}_{n}" if n or always_numbered else f"{prefix}_{self.suffix}"

    def message(self) -> str:
        return self._next("msg", False)

    def reasoning(self) -> str:
        return self._next("rs", False)

    def call(self) -> str:
        return self._next("fc", True)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    summary = [] if text is None else [{"type": "summary_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": summary, "status": status}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _reasoning_text(msg: dict[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        v = msg.get(key)
        if isinstance(v, str) and v:
            return v
    return ""


def _args(fn: dict[str, Any]) -> str:
    a = fn.get("arguments")
    if isinstance(a, str):
        return a
    return "" if a is None else orjson.dumps(a).decode()


def _content_text(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _num(v: Any, default: float) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


# --- stream: chat chunks -> Responses events -----------------------------------------------------


class _Open:
    """An output item being streamed: its index in `output`, and the text gathered so far."""

    __slots__ = ("index", "kind", "parts", "part_kind", "key")

    def __init__(self, index: int, kind: str, key: int = -1) -> None:
        self.index = index
        self.kind = kind  # "message" | "reasoning" | "function_call"
        self.parts: list[str] = []  # the open part's text (message, reasoning) or the arguments (call)
        self.part_kind = ""  # message: "output_text" | "refusal" (the open content part), "" when none
        self.key = key  # function_call: the chat tool call index


class ResponsesStream:
    """Chat chunk objects in, Responses SSE events out (bytes: `event: <type>\\ndata: {json}\\n\\n`, each with
    `type` and an increasing `sequence_number`).

    Message and reasoning items are closed when another item starts; function calls stay open while only tool
    call deltas arrive (chat keys them by `index`, and a provider may interleave them), and are closed together
    when text follows them or in `finish()`."""

    def __init__(self, body: dict[str, Any], response_id: str, created_at: int) -> None:
        self._resp = _envelope(body, response_id, created_at, str(body.get("model") or ""))
        self._ids = _Ids(response_id)
        self._seq = 0
        self._output: list[dict[str, Any]] = self._resp["output"]
        self._open: list[_Open] = []  # a message or reasoning item, or the function calls
        self._calls: dict[int, _Open] = {}  # open function calls by chat tool call index
        self._finish_reason: str | None = None
        self._model_seen = False
        self._tier: Any = None  # the chunks' service_tier
        self.usage: Usage | None = None

    # - public

    def start(self) -> bytes:
        return self._emit("response.created", response=self._snapshot()) + self._emit(
            "response.in_progress", response=self._snapshot()
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        model = chunk.get("model")
        if isinstance(model, str) and model and not self._model_seen:
            self._resp["model"] = model
            self._model_seen = True
        if self._tier is None:
            self._tier = chunk.get("service_tier")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage.from_openai(usage, chunk.get("service_tier") or self._tier)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            if isinstance(choice.get("finish_reason"), str):
                self._finish_reason = choice["finish_reason"]
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        self._close_all(out)
        self._resp["usage"] = responses_usage(self.usage) if self.usage is not None else None
        if isinstance(self._tier, str) and self._tier:
            self._resp["service_tier"] = self._tier
        _set_status(self._resp, self._finish_reason)
        kind = "response.completed" if self._resp["status"] == "completed" else "response.incomplete"
        out.append(self._emit(kind, response=self._snapshot()))
        return b"".join(out)

    def error(self, code: str, message: str) -> bytes:
        self._resp["status"] = "failed"
        self._resp["error"] = {
            "code": RESPONSE_ERROR_CODES.get(code, "server_error"),
            "message": message,
        }
        return self._emit("error", code=code, message=message, param=None)

    def final(self) -> dict[str, Any]:
        return self._snapshot()

    # - items

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        reasoning = _reasoning_text(delta)
        if reasoning:
            self._reasoning_delta(reasoning, out)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._message_delta("output_text", content, out)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._message_delta("refusal", refusal, out)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                self._call_delta(call, out)

    def _current(self, kind: str, out: list[bytes]) -> _Open | None:
        """The open item of `kind` (message or reasoning); other open items are closed."""
        if self._open and self._open[-1].kind == kind:
            return self._open[-1]
        self._close_all(out)
        return None

    def _add(self, item: dict[str, Any], kind: str, out: list[bytes], key: int = -1) -> _Open:
        item_open = _Open(len(self._output), kind, key)
        self._output.append(item)
        self._open.append(item_open)
        out.append(self._emit("response.output_item.added", output_index=item_open.index, item=item))
        return item_open

    def _reasoning_delta(self, text: str, out: list[bytes]) -> None:
        it = self._current("reasoning", out)
        if it is None:
            it = self._add(_reasoning_item(self._ids.reasoning(), None, "in_progress"), "reasoning", out)
            item = self._output[it.index]
            out.append(
                self._emit(
                    "response.reasoning_summary_part.added",
                    item_id=item["id"],
                    output_index=it.index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        it.parts.append(text)
        out.append(
            self._emit(
                "response.reasoning_summary_text.delta",
                item_id=self._output[it.index]["id"],
                output_index=it.index,
                summary_index=0,
                delta=text,
            )
        )

    def _message_delta(self, part_kind: str, text: str, out: list[bytes]) -> None:
        it = self._current("message", out)
        if it is None:
            it = self._add(_message_item(self._ids.message(), [], "in_progress"), "message", out)
        item = self._output[it.index]
        if it.part_kind != part_kind:
            if it.part_kind:
                self._close_part(it, out)
            it.part_kind = part_kind
            part = _text_part("") if part_kind == "output_text" else {"type": "refusal", "refusal": ""}
            item["content"].append(part)
            out.append(
                self._emit(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=it.index,
                    content_index=len(item["content"]) - 1,
                    part=dict(part),
                )
            )
        it.parts.append(text)
        fields: dict[str, Any] = {
            "item_id": item["id"],
            "output_index": it.index,
            "content_index": len(item["content"]) - 1,
            "delta": text,
        }
        if part_kind == "output_text":
            out.append(self._emit("response.output_text.delta", **fields, logprobs=[]))
        else:
            out.append(self._emit("response.refusal.delta", **fields))

    def _call_delta(self, call: dict[str, Any], out: list[bytes]) -> None:
        key = call.get("index", 0)
        key = key if isinstance(key, int) else 0
        fn = _obj(call.get("function"))
        it = self._calls.get(key)
        if it is None:
            if self._open and self._open[-1].kind != "function_call":
                self._close_all(out)
            item = _call_item(self._ids.call(), str(call.get("id") or ""), str(fn.get("name") or ""), "", "in_progress")
            it = self._add(item, "function_call", out, key)
            self._calls[key] = it
        item = self._output[it.index]
        if not item["call_id"] and isinstance(call.get("id"), str):
            item["call_id"] = call["id"]
        if not item["name"] and isinstance(fn.get("name"), str):
            item["name"] = fn["name"]
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            it.parts.append(args)
            out.append(
                self._emit(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=it.index, delta=args
                )
            )

    def _close_all(self, out: list[bytes]) -> None:
        for it in self._open:
            self._close(it, out)
        self._open.clear()
        self._calls.clear()

    def _close(self, it: _Open, out: list[bytes]) -> None:
        item = self._output[it.index]
        if it.kind == "message":
            self._close_part(it, out)
        elif it.kind == "reasoning":
            text = "".join(it.parts)
            item["summary"] = [{"type": "summary_text", "text": text}]
            common = {"item_id": item["id"], "output_index": it.index, "summary_index": 0}
            out.append(self._emit("response.reasoning_summary_text.done", **common, text=text))
            out.append(
                self._emit(
                    "response.reasoning_summary_part.done", **common, part={"type": "summary_text", "text": text}
                )
            )
        else:
            item["arguments"] = "".join(it.parts)
            out.append(
                self._emit(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=it.index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        item["status"] = "completed"
        out.append(self._emit("response.output_item.done", output_index=it.index, item=item))

    def _close_part(self, it: _Open, out: list[bytes]) -> None:
        item = self._output[it.index]
        if not it.part_kind:
            return
        text = "".join(it.parts)
        it.parts = []
        index = len(item["content"]) - 1
        part = item["content"][index]
        common = {"item_id": item["id"], "output_index": it.index, "content_index": index}
        if it.part_kind == "output_text":
            part["text"] = text
            out.append(self._emit("response.output_text.done", **common, text=text, logprobs=[]))
        else:
            part["refusal"] = text
            out.append(self._emit("response.refusal.done", **common, refusal=text))
        out.append(self._emit("response.content_part.done", **common, part=part))
        it.part_kind = ""

    # - encoding

    def _snapshot(self) -> dict[str, Any]:
        """The response as of now; open items show the text gathered so far."""
        resp = dict(self._resp)
        output = [dict(item) for item in self._output]
        for it in self._open:
            item = output[it.index]
            if it.kind == "function_call":
                item["arguments"] = "".join(it.parts)
            elif it.kind == "reasoning":
                item["summary"] = [{"type": "summary_text", "text": "".join(it.parts)}]
            elif it.part_kind:
                content = [dict(p) for p in item["content"]]
                content[-1]["text" if it.part_kind == "output_text" else "refusal"] = "".join(it.parts)
                item["content"] = content
        resp["output"] = output
        return resp

    def _emit(self, kind: str, **fields: Any) -> bytes:
        seq = self._seq
        self._seq += 1
        data = orjson.dumps({"type": kind, **fields, "sequence_number": seq})
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


# --- history, usage, native streams --------------------------------------------------------------


def output_messages(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """A response object's `output` as chat messages: one assistant message with the text and/or tool calls
    (reasoning and built-in tool items skipped). Works on native OpenAI responses too."""
    output = resp.get("output")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            content = item.get("content")
            for part in content if isinstance(content, list) else ():
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part.get("refusal"), str):
                    texts.append(part["refusal"])
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": str(item.get("call_id") or ""),
                    "type": "function",
                    "function": {"name": str(item.get("name") or ""), "arguments": str(item.get("arguments") or "")},
                }
            )
    if not texts and not calls:
        return []
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return [msg]


def usage_of(u: dict[str, Any], service_tier: Any = None, web_search_calls: int = 0) -> Usage:
    """A Responses `usage` object as `Usage` (prompt_tokens = input_tokens, which include cached ones).
    `service_tier` and `web_search_calls` come from the response around it (`response_usage`); the extension
    objects `responses_usage` writes (`cache_creation`, `server_tool_use`) are read back."""
    inp = u.get("input_tokens_details")
    inp = inp if isinstance(inp, dict) else {}
    outp = u.get("output_tokens_details")
    outp = outp if isinstance(outp, dict) else {}
    by_ttl = u.get("cache_creation")
    write_1h = _count(by_ttl.get("ephemeral_1h_input_tokens")) if isinstance(by_ttl, dict) else 0
    tools = u.get("server_tool_use")
    searches = _count(tools.get("web_search_requests")) if isinstance(tools, dict) else 0
    return Usage(
        prompt_tokens=_count(u.get("input_tokens")),
        completion_tokens=_count(u.get("output_tokens")),
        cached_tokens=_count(inp.get("cached_tokens")),
        cache_write_tokens=max(write_1h, _count(inp.get("cache_write_tokens"))),
        reasoning_tokens=_count(outp.get("reasoning_tokens")),
        cache_write_1h_tokens=write_1h,
        web_searches=max(searches, web_search_calls),
        service_tier=service_tier[:64] if isinstance(service_tier, str) and service_tier else None,
    )


def response_usage(resp: dict[str, Any]) -> Usage | None:
    """A Responses `response` object's usage, with what the response says beside it: its `service_tier`, and its
    `web_search_call` output items (the Responses API bills web search per call and reports no count)."""
    u = resp.get("usage")
    if not isinstance(u, dict):
        return None
    output = resp.get("output")
    calls = sum(
        1
        for item in (output if isinstance(output, list) else ())
        if isinstance(item, dict) and item.get("type") == "web_search_call"
    )
    return usage_of(u, resp.get("service_tier"), calls)


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


class NativeLearner:
    """Learns from a native Responses stream (events forwarded unchanged to the client) what the gateway records."""

    __slots__ = ("state",)

    def __init__(self, state: StreamState) -> None:
        self.state = state

    def feed(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """One parsed event. Returns the error object of an `error` or `response.failed` event, else None."""
        kind = obj.get("type")
        if kind in DELTA_EVENTS:
            self.state.saw_token()
            if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
                self.state.text.append(obj["delta"])
        elif kind in ("response.completed", "response.incomplete"):
            resp = obj.get("response")
            resp = resp if isinstance(resp, dict) else {}
            usage = response_usage(resp)
            if usage is not None:
                self.state.usage = usage
            self.state.finish_reason = _finish_reason(kind, resp)
            self.state.done = True
        elif kind == "error":
            return obj
        elif kind == "response.failed":
            resp = obj.get("response")
            err = resp.get("error") if isinstance(resp, dict) else None
            return err if isinstance(err, dict) else {"code": None, "message": "the response failed"}
        return None


def _finish_reason(kind: str, resp: dict[str, Any]) -> str:
    if kind == "response.incomplete":
        details = resp.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    output = resp.get("output")
    for item in output if isinstance(output, list) else ():
        if isinstance(item, dict) and item.get("type") == "function_call":
            return "tool_calls"
    return "stop"

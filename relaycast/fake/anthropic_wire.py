"""Anthropic's Messages API wire format, as the real API sends it: message objects, stream events, error bodies.

Usage follows Anthropic's meaning: `input_tokens` excludes cached tokens, so for a behaviour with
`prompt_tokens=P, cached=C, cache_write=W, cache_write_1h=H` the fake reports input_tokens = P - C - W - H (never
below 0), cache_read_input_tokens = C, cache_creation_input_tokens = W + H and cache_creation = {5m: W, 1h: H};
the gateway's prompt_tokens is then P again. `web_search=N` is usage.server_tool_use.web_search_requests (in a
stream, in message_delta's cumulative usage); `service_tier` is usage.service_tier (default "standard").
`/v1/messages/count_tokens` answers P for the same messages (and system).

Structured outputs: `output_config.format` {type: json_schema, schema} (or the beta's top-level `output_format`)
makes the text block JSON for the schema (`relaycast.fake.json_schema`), streamed and counted in small pieces.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson

from relaycast.asgi import SSE_HEADERS, Send, send_bytes
from relaycast.fake import json_schema, openai_wire
from relaycast.fake.behaviour import HEADER, BadBehaviour, Behaviour, for_request
from relaycast.fake.common import FakeState, bearer, num, send_chunks, sleep_ms, text

MAX_CONTEXT = 200_000
ERRORS = MappingProxyType(
    {
        400: ("invalid_request_error", "temperature: range: 0..1"),
        401: ("authentication_error", "invalid x-api-key"),
        403: ("permission_error", "Your API key does not have permission to use the specified resource."),
        404: ("not_found_error", "model: {model}"),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: (
            "rate_limit_error",
            "This request would exceed your organization's rate limit of 50 requests per minute.",
        ),
        500: ("api_error", "Internal server error"),
        529: ("overloaded_error", "Overloaded"),
    }
)


async def _admit(
    state: FakeState, rid: str, body: dict[str, Any], headers: dict[bytes, bytes], send: Send, *, counting: bool
) -> tuple[str, Behaviour] | None:
    """Check the version header, the key, the behaviour and the body as Anthropic does; answer the error if any."""
    if not headers.get(b"anthropic-version"):
        await _error(send, rid, 400, "invalid_request_error", "anthropic-version: header is required")
        return None
    presented = text(headers.get(b"x-api-key")) or bearer(headers)  # SDKs send the key either way
    if state.api_key is not None and presented != state.api_key:
        await _error(send, rid, 401, *ERRORS[401])
        return None
    try:
        model, b = for_request(str(body.get("model", "")), text(headers.get(HEADER)), state.defaults)
    except BadBehaviour as e:
        await _error(send, rid, 400, "invalid_request_error", f"model: {e}")
        return None
    problem = _invalid(body, counting=counting)
    if problem:
        await _error(send, rid, 400, "invalid_request_error", problem)
        return None
    return model, b


async def count_tokens(state: FakeState, body: dict[str, Any], headers: dict[bytes, bytes], send: Send) -> None:
    """POST /v1/messages/count_tokens: the prompt tokens /v1/messages reports for the same request (before
    cached tokens are taken out of input_tokens)."""
    rid = state.next_id("req_fake")
    admitted = await _admit(state, rid, body, headers, send, counting=True)
    if admitted is None:
        return
    _, b = admitted
    if b.error is not None:
        etype, message = ERRORS.get(b.error, ("api_error" if b.error >= 500 else "invalid_request_error", "Error"))
        await _error(send, rid, b.error, etype, message.format(model=admitted[0]), b.retry_after)
        return
    answer = orjson.dumps({"input_tokens": _prompt_tokens(b, body)})
    await send_bytes(send, 200, answer, [(b"request-id", rid.encode())])


async def messages(state: FakeState, body: dict[str, Any], headers: dict[bytes, bytes], send: Send) -> None:
    """POST /v1/messages."""
    rid = state.next_id("req_fake")
    admitted = await _admit(state, rid, body, headers, send, counting=False)
    if admitted is None:
        return
    model, b = admitted
    try:
        structured = _structured_text(body, b)
    except json_schema.SchemaError as e:
        await _error(send, rid, 400, "invalid_request_error", f"output_config.format.schema: {e}")
        return
    status = b.error
    if status is None and b.fail_rate and state.rng.random() < b.fail_rate:
        status = 529
    if status is not None:
        await sleep_ms(b.latency_ms)
        etype, message = ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error", "Error"))
        retry = b.retry_after if b.retry_after is not None else (1 if status == 429 else None)
        await _error(send, rid, status, etype, message.format(model=model), retry)
        return
    prompt = _prompt_tokens(b, body)
    if b.context_length:
        message = f"prompt is too long: {MAX_CONTEXT + prompt} tokens > {MAX_CONTEXT} maximum"
        await _error(send, rid, 400, "invalid_request_error", message)
        return
    mid = state.next_id("msg_fake")
    if body.get("stream"):
        await _stream(send, rid, mid, model, b, body, prompt, structured)
        return
    await sleep_ms(b.latency_ms)
    answer = orjson.dumps(message_object(mid, model, b, body, prompt, structured))
    await send_bytes(send, 200, answer, [(b"request-id", rid.encode())])


def _invalid(body: dict[str, Any], *, counting: bool) -> str | None:
    mt = body.get("max_tokens")
    if mt is None and not counting:
        return "max_tokens: Field required"
    if not counting and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        return "max_tokens: Input should be a valid positive integer"
    msgs = body.get("messages")
    if msgs is None:
        return "messages: Field required"
    if not isinstance(msgs, list) or not msgs:
        return "messages: at least one message is required"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    return None


def _prompt_tokens(b: Behaviour, body: dict[str, Any]) -> int:
    if b.prompt_tokens is not None:
        return b.prompt_tokens
    n = openai_wire.count_prompt_tokens(body.get("messages"))
    system = body.get("system")
    if isinstance(system, str):
        n += len(system) // 4
    elif isinstance(system, list):
        n += sum(len(s.get("text") or "") for s in system if isinstance(s, dict)) // 4
    return n


def usage(b: Behaviour, prompt: int, output: int, *, searches: bool = True) -> dict[str, Any]:
    """Anthropic's usage object; `searches=False` leaves out server tool use (a stream's message_start)."""
    u: dict[str, Any] = {
        "input_tokens": max(0, prompt - b.cached - b.cache_writes),
        "cache_creation_input_tokens": b.cache_writes,
        "cache_read_input_tokens": b.cached,
        "cache_creation": {"ephemeral_5m_input_tokens": b.cache_write, "ephemeral_1h_input_tokens": b.cache_write_1h},
        "output_tokens": output,
        "service_tier": b.service_tier or "standard",
    }
    if searches and b.web_search:
        u["server_tool_use"] = {"web_search_requests": b.web_search, "web_fetch_requests": 0}
    return u


def _forced(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool `tool_choice: {type: tool, name}` forces, answered as Anthropic does: a call with input valid for
    its input_schema."""
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    for t in body.get("tools") or ():
        if isinstance(t, dict) and t.get("name") == choice.get("name"):
            schema = t.get("input_schema") if isinstance(t.get("input_schema"), dict) else {"type": "object"}
            return {
                "type": "tool_use",
                "id": "toolu_fake0002",
                "name": t["name"],
                "input": json_schema.generate(schema),
            }
    return None


def _tool_use(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    return {"type": "tool_use", "id": "toolu_fake0001", "name": tools[0].get("name", "tool"), "input": {"query": "fox"}}


def _structured_text(body: dict[str, Any], b: Behaviour) -> str | None:
    """The JSON answer for `output_config.format` (or the beta's top-level `output_format`), if one is asked."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    fmt = fmt if fmt is not None else body.get("output_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    return json_schema.format_text(fmt, b.tokens)


def _outcome(
    b: Behaviour, body: dict[str, Any], structured: str | None
) -> tuple[list[str], dict[str, Any] | None, str]:
    """The text tokens, the tool_use block (if any) and the stop_reason of an answer (JSON text when structured)."""
    if b.content_policy:
        return [], None, "refusal"
    call = _forced(body) or (_tool_use(body) if b.tool_call else None)
    if call:
        return [], call, "tool_use"
    limit = body["max_tokens"]
    if structured is not None:
        pieces = json_schema.pieces(structured)
        return pieces[:limit], None, "max_tokens" if limit < len(pieces) else "end_turn"
    return openai_wire.tokens(min(b.tokens, limit)), None, "max_tokens" if limit <= b.tokens else "end_turn"


def message_object(
    mid: str, model: str, b: Behaviour, body: dict[str, Any], prompt: int, structured: str | None = None
) -> dict[str, Any]:
    toks, call, stop = _outcome(b, body, structured)
    content: list[dict[str, Any]] = [{"type": "text", "text": "".join(toks)}] if toks else []
    if call:
        content.append(call)
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage(b, prompt, len(toks) + (12 if call else 0)),
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def stream_events(
    mid: str, model: str, b: Behaviour, body: dict[str, Any], prompt: int, structured: str | None = None
) -> list[bytes]:
    """The events of a streamed answer, in Anthropic's order."""
    toks, call, stop = _outcome(b, body, structured)
    start = message_object(mid, model, b, body, prompt, structured)
    start.update(content=[], stop_reason=None, usage=usage(b, prompt, 1, searches=False))
    events = [_event("message_start", {"message": start})]
    if call:
        block = {**call, "input": {}}
        pieces = ["", '{"query": ', '"fox"}']
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": t} for t in toks]
    events.append(_event("content_block_start", {"index": 0, "content_block": block}))
    events.append(_event("ping", {}))
    events.extend(_event("content_block_delta", {"index": 0, "delta": d}) for d in deltas)
    events.append(_event("content_block_stop", {"index": 0}))
    output = len(toks) + (12 if call else 0)
    delta = {"stop_reason": stop, "stop_sequence": None}
    final: dict[str, Any] = {"output_tokens": output}
    if b.web_search:
        final["server_tool_use"] = {"web_search_requests": b.web_search, "web_fetch_requests": 0}
    events.append(_event("message_delta", {"delta": delta, "usage": final}))
    events.append(_event("message_stop", {}))
    return events


async def _stream(
    send: Send, rid: str, mid: str, model: str, b: Behaviour, body: dict[str, Any], prompt: int, structured: str | None
) -> None:
    events = stream_events(mid, model, b, body, prompt, structured)
    await sleep_ms(b.first_token_ms)
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, (b"request-id", rid.encode())]})
    await send_chunks(send, events, b)


def error_body(etype: str, message: str, rid: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": etype, "message": message}, "request_id": rid})


async def _error(send: Send, rid: str, status: int, etype: str, message: str, retry_after: float | None = None) -> None:
    headers = [(b"request-id", rid.encode())]
    if retry_after is not None:
        headers.append((b"retry-after", num(retry_after)))
    if status == 529:
        headers.append((b"x-should-retry", b"true"))
    await send_bytes(send, status, error_body(etype, message, rid), headers)

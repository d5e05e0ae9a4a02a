"""A request record as OpenTelemetry GenAI semantic-convention attributes (`gen_ai.*`), for the OTLP exporter.

Attempt spans carry the operation, provider, models, request parameters, usage, cost, finish reasons and time
to first token; every span carries the attribution and tags (`common_attrs`). Input and output messages follow
the GenAI message schemas (role and parts), as JSON strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import orjson

from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.otlp_wire import (
    FLAG_HAS_IS_REMOTE,
    FLAG_IS_REMOTE,
    FLAG_SAMPLED,
    Content,
    Value,
    clean,
)

# OpenAI request parameters -> (GenAI attribute, type). Others go to `relaycast.request.<name>`.
PARAMS: MappingProxyType[str, tuple[str, type]] = MappingProxyType(
    {
        "temperature": ("gen_ai.request.temperature", float),
        "top_p": ("gen_ai.request.top_p", float),
        "top_k": ("gen_ai.request.top_k", float),
        "max_tokens": ("gen_ai.request.max_tokens", int),
        "max_completion_tokens": ("gen_ai.request.max_tokens", int),
        "n": ("gen_ai.request.choice.count", int),
        "seed": ("gen_ai.request.seed", int),
        "presence_penalty": ("gen_ai.request.presence_penalty", float),
        "frequency_penalty": ("gen_ai.request.frequency_penalty", float),
        "stop": ("gen_ai.request.stop_sequences", list),
    }
)

# OpenAI finish reasons the GenAI output-message schema names differently.
_FINISH_REASONS = MappingProxyType({"tool_calls": "tool_call", "function_call": "tool_call"})


def operation(record: RequestRecord) -> str:
    return "embeddings" if record.endpoint == "embeddings" else "chat"


def attempt_name(record: RequestRecord, op: str, a: Attempt) -> str:
    t = record.attribution.trace or {}
    return spans.attempt_name(record, a.provider) if t.get("generation_name") else f"{op} {a.model}"


def common_attrs(record: RequestRecord, tags: tuple[tuple[str, str], ...]) -> dict[str, Value]:
    """Attribution, trace metadata and destination tags: on every span."""
    out: dict[str, Value] = {str(k): str(v) for k, v in tags}
    for key, value in spans.trace_metadata(record).items():
        v = attr_value(value)
        if v is not None:
            out[f"relaycast.trace.{key}"] = v
    a = record.attribution
    for key, value in (
        ("user.id", a.user),
        ("session.id", a.session_id),
        ("gen_ai.conversation.id", a.session_id),
        ("relaycast.feature", a.feature),
        ("relaycast.app_url", a.app_url),
        ("relaycast.key_name", a.key_name),
    ):
        if value:
            out[key] = value
    for key, value in record.attribution.tags:
        out[f"relaycast.tag.{key}"] = value
    out["relaycast.request_id"] = record.request_id
    return out


def attempt_attrs(
    record: RequestRecord, i: int, a: Attempt, op: str, server: tuple[str, int] | None = None
) -> dict[str, Value]:
    out: dict[str, Value] = {
        "gen_ai.operation.name": op,
        "gen_ai.provider.name": a.vendor or a.provider,  # the vendor, by the conventions' well-known names
        "gen_ai.request.model": a.model,
        "relaycast.provider": a.provider,  # the configured provider
        "relaycast.target": a.target,
        "relaycast.attempt": i,
    }
    if op == "chat":
        out["gen_ai.request.stream"] = record.stream
    out.update(_param_attrs(record.params))
    if server is not None:
        out["server.address"], out["server.port"] = server
    if a.response_model or a.ok:
        out["gen_ai.response.model"] = a.response_model or a.model  # the upstream's word, else the one asked for
    if a.response_id:
        out["gen_ai.response.id"] = a.response_id
    if a.finish_reason:
        out["gen_ai.response.finish_reasons"] = [a.finish_reason]
    elif a.ttft_ns is not None and a.error_class:
        out["gen_ai.response.finish_reasons"] = ["error"]  # a stream cut (or abandoned) after it started
    u = a.usage
    if u is not None:
        out["gen_ai.usage.input_tokens"] = u.prompt_tokens
        out["gen_ai.usage.output_tokens"] = u.completion_tokens
        if u.cached_tokens:
            out["gen_ai.usage.cache_read.input_tokens"] = u.cached_tokens
        if u.cache_write_tokens:
            # The released conventions' name, and the one the GenAI conventions repository renamed it to (and
            # OpenTelemetry's own GenAI instrumentations already send): both, until the rename is released.
            out["gen_ai.usage.cache_creation.input_tokens"] = u.cache_write_tokens
            out["gen_ai.usage.cache_write.input_tokens"] = u.cache_write_tokens
        if u.reasoning_tokens:
            out["gen_ai.usage.reasoning.output_tokens"] = u.reasoning_tokens
    if a.cost_pusd is not None and a.cost_source != "none":
        # Not in the GenAI conventions: relaycast's own attribute, in US dollars.
        out["relaycast.cost.usd"] = usd_float(a.cost_pusd)
        if a.cost_input_pusd is not None:
            out["relaycast.cost.input_usd"] = usd_float(a.cost_input_pusd)
            out["relaycast.cost.output_usd"] = usd_float(a.cost_pusd - a.cost_input_pusd)
        out["relaycast.cost.source"] = a.cost_source
    elif a.cost_source == "unpriced":
        out["relaycast.cost.source"] = "unpriced"
    if a.cost_note:
        out["relaycast.cost.note"] = a.cost_note  # why the cost is estimated, or unpriced
    if a.ttft_ns is not None:
        out["gen_ai.response.time_to_first_chunk"] = a.ttft_ns / 1e9
    if a.upstream_status:
        out["http.response.status_code"] = a.upstream_status
    if a.error_class:
        out["error.type"] = a.error_class
    return out


def _param_attrs(params: dict[str, Any]) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for key, value in params.items():
        known = PARAMS.get(key)
        if known is not None:
            name, kind = known
            v: Value | None = None
            if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                v = _finite(float(value))
            elif kind is int and isinstance(value, int) and not isinstance(value, bool):
                v = value
            elif kind is list and isinstance(value, (str, list)):
                items = [value] if isinstance(value, str) else value
                v = [str(s) for s in items]
            if v is not None:
                out[name] = v
                continue
        if key == "response_format" and isinstance(value, dict):
            fmt = value.get("type")
            if fmt in ("json_object", "json_schema"):
                out["gen_ai.output.type"] = "json"
            elif fmt == "text":
                out["gen_ai.output.type"] = "text"
        v = attr_value(value)
        if v is not None:
            out[f"relaycast.request.{key}"] = v
    return out


def attr_value(value: Any) -> Value | None:
    """An attribute value: scalars as they are, lists of strings as arrays, anything else as JSON text."""
    if value is None:
        return None
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    return json_text(value)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # e.g. a lone surrogate in a string
        return orjson.dumps(clean(value), default=str).decode()


def input_messages(record: RequestRecord) -> list[dict[str, Any]]:
    """The GenAI input-messages schema: role and parts (text, an assistant turn's tool calls, a tool message's
    `tool_call_response`)."""
    out = []
    for m, flat in zip(record.input_messages, spans.input_messages(record), strict=True):
        if m.get("role") == "tool":
            part = {"type": "tool_call_response", "id": str(m.get("tool_call_id") or ""), "response": flat["content"]}
            out.append({"role": "tool", "parts": [part]})
            continue
        calls = spans.message_tool_calls(m)
        parts: list[dict[str, Any]] = (
            [{"type": "text", "content": flat["content"]}] if flat["content"] or not calls else []
        )
        parts.extend(_tool_call_part(c) for c in calls)
        out.append({"role": flat["role"], "parts": parts})
    return out


def output_messages(
    text: str | None, finish_reason: str | None, calls: tuple[dict[str, str], ...] = ()
) -> list[dict[str, Any]]:
    reason = _FINISH_REASONS.get(finish_reason or "", finish_reason or "stop")
    parts: list[dict[str, Any]] = [{"type": "text", "content": text or ""}] if text or not calls else []
    parts.extend(_tool_call_part(c) for c in calls)
    return [{"role": "assistant", "parts": parts, "finish_reason": reason}]


def _tool_call_part(c: dict[str, str]) -> dict[str, Any]:
    return {"type": "tool_call", "id": c["id"], "name": c["name"], "arguments": spans.call_arguments(c["arguments"])}


def dropped(
    content: Content, keep: int | None = None, shrink: Callable[[dict[str, str]], dict[str, str] | None] | None = None
) -> Content:
    """Content replaced by a short marker (an item too large to send), valid against the message schemas; a
    backend's own content attribute becomes the marker text, JSON-encoded where the attribute held JSON (a backend
    that parses it still can), unless the backend's `shrink` says otherwise. The span `keep` (the attempt that
    answered) keeps its content."""
    marker = {"type": "text", "content": spans.DROPPED_IO}
    texts = {
        "gen_ai.input.messages": json_text([{"role": "user", "parts": [marker]}]),
        "gen_ai.output.messages": json_text([{"role": "assistant", "parts": [marker], "finish_reason": "stop"}]),
    }
    quoted = json_text(spans.DROPPED_IO)

    def mark(key: str, text: str) -> str:
        if key in texts:
            return texts[key]
        return quoted if text[:1] in ("[", "{") else spans.DROPPED_IO

    def drop(t: dict[str, str]) -> dict[str, str]:
        own = shrink(t) if shrink is not None else None
        kept = own if own is not None else {k: mark(k, v) for k, v in t.items()}
        return kept | {"relaycast.collection_errors": "dropped_io"}

    return Content({sid: t if sid == keep else drop(t) for sid, t in content.by_span.items()})


def remote_parent(record: RequestRecord, ids: spans.TraceIds) -> tuple[bytes, int]:
    """The client's `trace.parent_span_id` (16 hex) becomes the root's remote parent, when its trace id was given.
    Returns (parent span id, span flags)."""
    t = record.attribution.trace or {}
    parent = t.get("parent_span_id")
    given = t.get("trace_id")
    if (
        isinstance(parent, str)
        and len(parent) == 16
        and isinstance(given, str)
        and given.lower() == ids.trace_id
        and all(c in "0123456789abcdef" for c in parent.lower())
        and int(parent, 16)
    ):
        return bytes.fromhex(parent), FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
    return b"", FLAG_SAMPLED | FLAG_HAS_IS_REMOTE

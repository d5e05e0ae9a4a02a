"""The one JSON shape of a request record, shared by the webhook and file exporters.

    {"schema": "relaycast.request.v1", "request_id": ..., "client_request_id": ... | null, "trace_id": <32 hex>,
     "endpoint": ..., "model_requested": ..., "stream": ..., "started_at": "2025-10-09T08:53:20.123456Z",
     "started_unix_ns": ..., "duration_ms": 805.0, "status_code": 200, "error_class": null, "error_message": null,
     "attribution": {"user", "session_id", "feature", "app_url", "key_name", "trace", "tags"},
     "params": {...}, "attempts": [{"target", "provider", "model", "started_offset_ms", "duration_ms", "ttft_ms",
     "finish_reason", "error_class", "error_message", "upstream_status",
     "usage": {"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cache_write_tokens",
               "reasoning_tokens", "cache_write_1h_tokens", "input_audio_tokens", "output_audio_tokens",
               "web_searches", "service_tier", "reported_cost_usd"} | null, "cost_usd", "cost_source",
     "cost_input_usd", "cost_note", "vendor", "response_model", "response_id"}],
     "cost_usd": "0.00000105" | null, "cost_source": "computed", "privacy_mode": false, "input_messages": [...],
     "output_text": ..., "output_tool_calls": [{"id", "name", "arguments"}], "client_cancelled": false,
     "tags": {...}}

Keys always come in this order, and every key is always present, except that with privacy mode on
`input_messages`, `output_text` and `output_tool_calls` are left out entirely (and `privacy_mode` is true). A record whose JSON would
pass `max_bytes` keeps everything but its prompt and completion, which become `spans.DROPPED_IO`, and gains
`"collection_errors": ["dropped_io"]` (the record is marked, not lost). Times are milliseconds as floats, offsets
from the request's start; `usage` is null when the upstream reported none; `reported_cost_usd` is the upstream's
own figure as text (never a float, so no precision is lost). `cost_usd` is exact decimal text, null when the model
has no price (`cost_source` "unpriced"); see relaycast.costs. `request_id` is the gateway's own id, unique per
request (deduplicate on it); `client_request_id` is the `x-request-id` the client sent, if any, as an attribute.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import orjson

from relaycast.costs.money import format_usd
from relaycast.records import Attempt, RequestRecord, Usage
from relaycast.telemetry import spans

SCHEMA = "relaycast.request.v1"
_OPTS = orjson.OPT_NON_STR_KEYS
_NS_PER_MS = 1_000_000


def record_json(
    record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...] = (), *, max_bytes: int | None = None
) -> bytes:
    """The record as one JSON object (no trailing newline)."""
    doc = _document(record, privacy, tags)
    out = _dumps(doc)
    if max_bytes is not None and len(out) > max_bytes and not privacy:
        doc["input_messages"] = [{"role": "user", "content": spans.DROPPED_IO}] if record.input_messages else []
        doc["output_text"] = spans.DROPPED_IO if record.output_text is not None else None
        doc["output_tool_calls"] = []
        doc["collection_errors"] = ["dropped_io"]
        out = _dumps(doc)
    return out


def rfc3339(unix_ns: int) -> str:
    """`2025-10-09T08:53:20.123456Z`: UTC, always six fractional digits (truncated, never rounded up)."""
    seconds, ns = divmod(unix_ns, 1_000_000_000)
    return f"{_utc_second(seconds)}.{ns // 1000:06d}Z"


@functools.lru_cache(maxsize=64)
def _utc_second(seconds: int) -> str:
    """A whole second as text: a batch's records share a few (a pure function's memo, bounded)."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _document(record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    a = record.attribution
    cost, cost_source = record.cost
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "request_id": record.request_id,
        "client_request_id": record.client_request_id,
        "trace_id": spans.trace_ids(record).trace_id,
        "endpoint": record.endpoint,
        "model_requested": record.model_requested,
        "stream": record.stream,
        "started_at": rfc3339(record.started_unix_ns),
        "started_unix_ns": record.started_unix_ns,
        "duration_ms": record.duration_ns / _NS_PER_MS,
        "status_code": record.status_code,
        "error_class": record.error_class,
        "error_message": record.error_message,
        "attribution": {
            "user": a.user,
            "session_id": a.session_id,
            "feature": a.feature,
            "app_url": a.app_url,
            "key_name": a.key_name,
            "trace": a.trace,
            "tags": dict(a.tags),
        },
        "params": record.params,
        "attempts": [_attempt(x) for x in record.attempts],
        "cost_usd": format_usd(cost),
        "cost_source": cost_source,
        "privacy_mode": bool(privacy),
    }
    if not privacy:
        doc["input_messages"] = record.input_messages  # a tuple is the JSON array a list would be
        doc["output_text"] = record.output_text
        doc["output_tool_calls"] = record.output_tool_calls
    doc["client_cancelled"] = record.client_cancelled
    doc["tags"] = dict(tags)
    return doc


def _attempt(x: Attempt) -> dict[str, Any]:
    return {
        "target": x.target,
        "provider": x.provider,
        "model": x.model,
        "started_offset_ms": x.started_ns / _NS_PER_MS,
        "duration_ms": x.duration_ns / _NS_PER_MS,
        "ttft_ms": None if x.ttft_ns is None else x.ttft_ns / _NS_PER_MS,
        "finish_reason": x.finish_reason,
        "error_class": x.error_class,
        "error_message": x.error_message,
        "upstream_status": x.upstream_status,
        "usage": None if x.usage is None else _usage(x.usage),
        "cost_usd": format_usd(x.cost_pusd) if x.cost_source != "none" else "0",
        "cost_source": x.cost_source,
        "cost_input_usd": format_usd(x.cost_input_pusd),
        "cost_note": x.cost_note,
        "vendor": x.vendor or None,
        "response_model": x.response_model,
        "response_id": x.response_id,
    }


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "cached_tokens": u.cached_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "input_audio_tokens": u.input_audio_tokens,
        "output_audio_tokens": u.output_audio_tokens,
        "web_searches": u.web_searches,
        "service_tier": u.service_tier,
        "reported_cost_usd": u.reported_cost_usd,
    }


def _dumps(doc: dict[str, Any]) -> bytes:
    """Client-supplied values (params, trace metadata, messages) may hold what orjson refuses: keys that are not
    strings become strings, integers beyond 64 bits strings, anything else unknown its `str()`; the record is never
    lost to an odd value. Nearly every record has string keys only, encoded without the option that allows others
    (it costs about 40% of the encoding)."""
    try:
        return orjson.dumps(doc, default=str)
    except orjson.JSONEncodeError:
        pass
    try:
        return orjson.dumps(doc, default=str, option=_OPTS)
    except orjson.JSONEncodeError:
        return orjson.dumps(_plain(doc), default=str, option=_OPTS)


def _plain(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**64 else str(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (str, float)):
        return v
    return str(v)

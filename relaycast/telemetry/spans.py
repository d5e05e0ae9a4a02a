"""A request record seen as a trace: one root span for the request and one LLM span per provider attempt.

Exporters (Datadog, OTLP, ...) turn these into their wire formats. Ids are derived from the request id (the
gateway's own, never the client's), so a record exported twice (a retry, a replay from the spool) carries the
same ids, two requests never share one, and tests can predict them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec
import orjson

from relaycast.records import TRACE_ID_KEYS, Attempt, RequestRecord, content_text

DROPPED_IO = "[relaycast: dropped because of size]"


class TraceIds(msgspec.Struct, frozen=True, gc=False):
    trace_id: str  # 32 lowercase hex
    root_span_id: int  # unsigned 64-bit, never 0

    def attempt_span_id(self, index: int) -> int:
        """The attempt's span id: the root's, mixed with the index by an odd multiplier (distinct for every index,
        and never the root's own)."""
        return ((self.root_span_id ^ ((index + 1) * _GOLDEN)) & _U64) or 1


_GOLDEN = 0x9E3779B97F4A7C15  # odd: (i + 1) * _GOLDEN differs for every i below 2**64, and is never 0
_U64 = (1 << 64) - 1
_GATEWAY_ID = re.compile(r"req_[0-9a-f]{12}([0-9a-f]{16})[0-9a-f]{8}")  # asgi.RequestIds: time, then 96 random bits


def trace_ids(record: RequestRecord) -> TraceIds:
    """The record's trace id: the client's `trace.trace_id` if it is 32 hex digits, else one derived from the
    request id, with the start time in its top 32 bits (as Datadog's tracers make them).

    A request id the gateway made (`req_`, 12 hex digits of time, 24 of random bits) gives its random bits
    directly: the first 64 are the trace id's low half, the last 64 the root span's id. Any other (a record
    written by an older version, say) is hashed."""
    rid = record.request_id
    m = _GATEWAY_ID.fullmatch(rid)
    if m is not None:
        low = m.group(1)
        root = int(rid[-16:], 16) or 1
    else:
        low = f"{_u64(rid):016x}"
        root = _u64("root:" + rid)
    t = record.attribution.trace
    given = t.get("trace_id") if t else None
    if (
        isinstance(given, str)
        and len(given) == 32
        and all(c in "0123456789abcdef" for c in given.lower())
        and given.strip("0")
    ):
        tid = given.lower()
    else:
        seconds = (record.started_unix_ns // 1_000_000_000) & 0xFFFFFFFF
        tid = f"{seconds:08x}00000000{low}"
    return TraceIds(trace_id=tid, root_span_id=root)


def _u64(text: str) -> int:
    v = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    return v or 1


def root_name(record: RequestRecord) -> str:
    t = record.attribution.trace or {}
    name = t.get("trace_name") or t.get("span_name")
    return str(name) if name else f"relaycast.{record.endpoint}"


def attempt_name(record: RequestRecord, provider: str) -> str:
    """`trace.generation_name` if the client gave one, else `<provider>.chat` (or `.embeddings`)."""
    name = (record.attribution.trace or {}).get("generation_name")
    if name:
        return str(name)
    return f"{provider}.{'embeddings' if record.endpoint == 'embeddings' else 'chat'}"


def last_user_text(record: RequestRecord) -> str:
    for m in reversed(record.input_messages):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def input_messages(record: RequestRecord) -> list[dict[str, str]]:
    return [{"role": str(m.get("role", "")), "content": content_text(m.get("content"))} for m in record.input_messages]


def trace_metadata(record: RequestRecord) -> dict[str, Any]:
    """`trace` keys without special meaning go to span metadata, and the client's `x-request-id` as
    `client_request_id` (an attribute to search by, never an id)."""
    t = record.attribution.trace
    out = {k: v for k, v in t.items() if k not in TRACE_ID_KEYS} if t else {}
    if record.client_request_id is not None:
        out["client_request_id"] = record.client_request_id
    return out


def attempt_output_text(record: RequestRecord, index: int, attempt: Attempt) -> str | None:
    """The output of an attempt: only the attempt that served the request has one."""
    if attempt.ok and index == len(record.attempts) - 1:
        return record.output_text
    return None


def attempt_tool_calls(record: RequestRecord, index: int, attempt: Attempt) -> tuple[dict[str, str], ...]:
    """The tool calls an attempt answered with: only the attempt that served the request has them."""
    if attempt.ok and index == len(record.attempts) - 1:
        return record.output_tool_calls
    return ()


def call_arguments(text: str) -> Any:
    """A tool call's arguments as the JSON object they hold; the text itself when they are not one."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, dict) else text


def message_tool_calls(m: dict[str, Any]) -> list[dict[str, str]]:
    """The tool calls of an input message (an assistant turn), as the record keeps an answer's."""
    out = []
    calls = m.get("tool_calls")
    for c in calls if isinstance(calls, list) else ():
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict):
            args = fn.get("arguments")
            out.append(
                {
                    "id": str(c.get("id") or ""),
                    "name": str(fn.get("name") or ""),
                    "arguments": args if isinstance(args, str) else "",
                }
            )
    return out

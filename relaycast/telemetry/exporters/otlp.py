"""OpenTelemetry (OTLP/HTTP) traces, with the OpenTelemetry GenAI semantic conventions.

One record is one item: a `ResourceSpans` message holding a SERVER root span for the request and one CLIENT span
per provider attempt (`chat gpt-4o-mini`). A batch is an `ExportTraceServiceRequest` made by framing the items as
its repeated field 1, so items are never parsed again; with `protocol: json` the items are OTLP/JSON objects
(hex ids, lowerCamelCase keys, integer enums, 64-bit integers as strings) joined into `{"resourceSpans":[...]}`.

The protobuf wire format is written here by hand (a few dozen lines; the message layout is fixed by
opentelemetry-proto's `trace.proto`), so the gateway needs no protobuf runtime. Tests decode our bytes with the
official generated classes.

Attributes: `gen_ai.*` as the GenAI conventions name them (usage, request parameters, finish reasons, input and
output messages as JSON strings, `error.type`); time to first token in seconds; cost only as an upstream reported
it (`gen_ai.usage.total_cost`, US dollars, as OpenRouter's broadcast names it: there is no standard cost
attribute); attribution (`user.id`, `session.id`, `relaycast.*`) and the destination's tags on every span.
Tokens and cost live on attempt spans only, so a backend that sums them does not count them twice.

Responses follow the OTLP/HTTP spec: only 429, 502, 503 and 504 (and connection errors) are worth retrying; a
200 with a `partial_success` is a success whose rejected spans are counted and logged, never retried.
"""

from __future__ import annotations

import functools
import logging
import math
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from relaycast import __version__
from relaycast.costs.money import usd_float
from relaycast.records import Attempt, Attribution, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.base import ExportError, TestResult, display_url, post
from relaycast.telemetry.settings import DestinationConfig, OtlpOptions

MiB = 1024 * 1024
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})  # the OTLP/HTTP spec: every other 4xx/5xx MUST NOT be retried

KIND_SERVER = 2
KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_ERROR = 2
FLAG_SAMPLED = 0x01
FLAG_HAS_IS_REMOTE = 0x100  # SpanFlags: the span says whether its parent is remote
FLAG_IS_REMOTE = 0x200

# OpenAI request parameters -> (GenAI attribute, type). Others go to `relaycast.request.<name>`.
PARAMS: dict[str, tuple[str, type]] = {
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

log = logging.getLogger("relaycast.telemetry.otlp")

Value = str | bool | int | float | list[str]


@dataclass(slots=True)
class _Span:
    span_id: int
    parent_id: bytes  # b"" for a root without a remote parent
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attrs: dict[str, Value]  # this span's own attributes
    common: dict[str, Value]  # attribution and tags: the same dict for every span of a record
    error: str | None = None  # status message; the status is ERROR when set
    flags: int = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE


@dataclass(slots=True)
class _Content:
    """Prompt and completion attributes, set apart so an oversized item can drop them and keep everything else."""

    by_span: dict[int, dict[str, str]] = field(default_factory=dict)


class OtlpExporter:
    kind = "otlp"
    max_batch_bytes = 4 * MiB - 64 * 1024  # room for the request framing; collectors accept 4 MiB and more
    max_age_s = None

    def __init__(self, dest: DestinationConfig, session: aiohttp.ClientSession) -> None:
        assert isinstance(dest.options, OtlpOptions)
        self.dest = dest
        self.o: OtlpOptions = dest.options
        self._session = session
        self._json = self.o.protocol == "json"
        content_type = "application/json" if self._json else "application/x-protobuf"
        self._headers = {k: v for k, v in self.o.headers if k.lower() not in ("content-type", "content-length")}
        self._headers["content-type"] = content_type
        self._what = f"OTLP endpoint {display_url(self.o.endpoint)}"
        self._resource: dict[str, Value] = {
            "service.name": self.o.service,
            "telemetry.sdk.name": "relaycast",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
        }
        self._pb_resource = _pb_attrs(b"\x0a", self._resource.items())
        self.rejected_spans = 0  # counted from partial-success answers
        self.last_partial_success: str | None = None

    # --- encoding -------------------------------------------------------------------------------

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        ids = spans.trace_ids(record)
        span_list, content = self._spans(record, ids, privacy, tags)
        item = self._item(ids.trace_id, span_list, content)
        if len(item) > self.max_batch_bytes and content.by_span:
            item = self._item(ids.trace_id, span_list, _dropped(content))
        return [item]

    def _item(self, trace_id: str, span_list: list[_Span], content: _Content) -> bytes:
        if self._json:
            return _json_resource_spans(self._resource, trace_id, span_list, content)
        return _pb_resource_spans(self._pb_resource, bytes.fromhex(trace_id), span_list, content)

    def _spans(
        self, record: RequestRecord, ids: spans.TraceIds, privacy: bool, tags: tuple[tuple[str, str], ...]
    ) -> tuple[list[_Span], _Content]:
        common = _common_attrs(record, tags)  # shared by every span, encoded once
        root = self._root(record, ids, common)
        out = [root]
        content = _Content()
        op = _operation(record)
        inputs = None
        for i, a in enumerate(record.attempts):
            start = record.started_unix_ns + a.started_ns
            span = _Span(
                span_id=ids.attempt_span_id(i),
                parent_id=ids.root_span_id.to_bytes(8, "big"),
                name=_attempt_name(record, op, a),
                kind=KIND_CLIENT,
                start_ns=start,
                end_ns=start + max(0, a.duration_ns),
                attrs=_attempt_attrs(record, i, a, op),
                common=common,
                error=(a.error_message or a.error_class) if a.error_class else None,
            )
            out.append(span)
            if privacy or op == "embeddings":
                continue
            texts: dict[str, str] = {}
            if record.input_messages:
                if inputs is None:
                    inputs = _json_text(_input_messages(record))
                texts["gen_ai.input.messages"] = inputs
            output = spans.attempt_output_text(record, i, a)
            if output is not None:
                texts["gen_ai.output.messages"] = _json_text(_output_messages(output, a.finish_reason))
            if texts:
                content.by_span[span.span_id] = texts
        return out, content

    def _root(self, record: RequestRecord, ids: spans.TraceIds, common: dict[str, Value]) -> _Span:
        attrs: dict[str, Value] = {}
        attrs["relaycast.endpoint"] = record.endpoint
        attrs["relaycast.model_requested"] = record.model_requested
        attrs["relaycast.stream"] = record.stream
        attrs["relaycast.attempts"] = len(record.attempts)
        attrs["http.response.status_code"] = record.status_code
        final = record.final_attempt
        if final is not None and final.ok:
            attrs["relaycast.served_by"] = final.target
        if record.client_cancelled:
            attrs["relaycast.client_cancelled"] = True
        if record.error_class:
            attrs["error.type"] = record.error_class
        parent, flags = _remote_parent(record, ids)
        return _Span(
            span_id=ids.root_span_id,
            parent_id=parent,
            name=spans.root_name(record),
            kind=KIND_SERVER,
            start_ns=record.started_unix_ns,
            end_ns=record.started_unix_ns + max(0, record.duration_ns),
            attrs=attrs,
            common=common,
            error=(record.error_message or record.error_class) if record.error_class else None,
            flags=flags,
        )

    # --- sending --------------------------------------------------------------------------------

    def body(self, items: list[bytes]) -> bytes:
        """The request body for a batch of items: framed, never parsed again."""
        if self._json:
            return b'{"resourceSpans":[' + b",".join(items) + b"]}"
        return b"".join(b"\x0a" + _varint(len(it)) + it for it in items)

    async def send(self, items: list[bytes]) -> None:
        _, raw = await self._post(self.body(items))
        self._note_partial_success(raw)

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        try:
            return await post(self._session, self.o.endpoint, body, self._headers, self.dest.timeout_s, self._what)
        except ExportError as e:
            if e.status is not None:
                e.retryable = e.status in RETRYABLE_STATUS
            raise

    def _note_partial_success(self, raw: bytes) -> tuple[int, str] | None:
        partial = _partial_success(raw, self._json)
        if partial is None:
            return None
        rejected, message = partial
        self.rejected_spans += rejected
        self.last_partial_success = message[:500] or None
        log.warning(
            "export_partial_success destination=%s rejected_spans=%d error=%s",
            self.dest.name,
            rejected,
            orjson.dumps(message[:500]).decode(),
        )
        return partial

    async def test(self) -> TestResult:
        now = time.time_ns()
        rec = RequestRecord(
            request_id=f"relaycast-test-{now}",
            endpoint="test",
            model_requested="test",
            stream=False,
            started_unix_ns=now,
            duration_ns=1_000_000,
            status_code=200,
            attribution=Attribution(),
        )
        ids = spans.trace_ids(rec)
        span_list, content = self._spans(rec, ids, True, self.dest.tags)
        span_list[0].name = "relaycast.test_connection"
        span_list[0].attrs["relaycast.test"] = True
        try:
            _, raw = await self._post(self.body([self._item(ids.trace_id, span_list, content)]))
        except ExportError as e:
            return TestResult(False, self._verdict(e))
        partial = _partial_success(raw, self._json)
        if partial is not None and partial[0]:
            return TestResult(False, f"the endpoint rejected the test span: {partial[1] or 'no reason given'}")
        return TestResult(True, f"ok: {display_url(self.o.endpoint)} accepted a test span (service {self.o.service})")

    def _verdict(self, e: ExportError) -> str:
        where = display_url(self.o.endpoint)
        if e.status == 404:
            return f"endpoint answered HTTP 404 (is the path /v1/traces?): {where}"
        if e.status in (401, 403):
            return f"rejected the credentials (HTTP {e.status}): check the headers for {where}"
        if e.status is None:
            reason = e.message.removeprefix(self._what).strip()
            reason = reason.removeprefix("unreachable:").strip()
            return f"unreachable: {where} ({reason})"
        return f"test span not accepted: endpoint answered HTTP {e.status}: {where}"

    async def close(self) -> None:
        return None  # the session belongs to the caller


# --- attributes ---------------------------------------------------------------------------------


def _operation(record: RequestRecord) -> str:
    return "embeddings" if record.endpoint == "embeddings" else "chat"


def _attempt_name(record: RequestRecord, op: str, a: Attempt) -> str:
    t = record.attribution.trace or {}
    return spans.attempt_name(record, a.provider) if t.get("generation_name") else f"{op} {a.model}"


def _common_attrs(record: RequestRecord, tags: tuple[tuple[str, str], ...]) -> dict[str, Value]:
    """Attribution, trace metadata and destination tags: on every span."""
    out: dict[str, Value] = {str(k): str(v) for k, v in tags}
    for key, value in spans.trace_metadata(record).items():
        v = _value(value)
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


def _attempt_attrs(record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
    out: dict[str, Value] = {
        "gen_ai.operation.name": op,
        "gen_ai.provider.name": a.provider,
        "gen_ai.request.model": a.model,
        "relaycast.target": a.target,
        "relaycast.attempt": i,
    }
    if op == "chat":
        out["gen_ai.request.stream"] = record.stream
    out.update(_param_attrs(record.params))
    if a.ok:
        out["gen_ai.response.model"] = a.model
    if a.finish_reason:
        out["gen_ai.response.finish_reasons"] = [a.finish_reason]
    u = a.usage
    if u is not None:
        out["gen_ai.usage.input_tokens"] = u.prompt_tokens
        out["gen_ai.usage.output_tokens"] = u.completion_tokens
        if u.cached_tokens:
            out["gen_ai.usage.cache_read.input_tokens"] = u.cached_tokens
        if u.cache_write_tokens:
            out["gen_ai.usage.cache_creation.input_tokens"] = u.cache_write_tokens
        if u.reasoning_tokens:
            out["gen_ai.usage.reasoning.output_tokens"] = u.reasoning_tokens
    if a.cost_pusd is not None and a.cost_source != "none":
        out["gen_ai.usage.total_cost"] = usd_float(a.cost_pusd)  # US dollars, as OpenRouter's broadcast names it
        out["relaycast.cost.source"] = a.cost_source
    elif a.cost_source == "unpriced":
        out["relaycast.cost.source"] = "unpriced"
    if a.ttft_ns is not None:
        out["gen_ai.server.time_to_first_token"] = a.ttft_ns / 1e9
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
        v = _value(value)
        if v is not None:
            out[f"relaycast.request.{key}"] = v
    return out


def _value(value: Any) -> Value | None:
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
    return _json_text(value)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return _finite(float(text))
    except ValueError:
        return None


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # e.g. a lone surrogate in a string
        return orjson.dumps(_clean(value), default=str).decode()


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _input_messages(record: RequestRecord) -> list[dict[str, Any]]:
    """The GenAI input-messages schema: role and text parts."""
    msgs = spans.input_messages(record)
    return [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in msgs]


def _output_messages(text: str, finish_reason: str | None) -> list[dict[str, Any]]:
    reason = {"tool_calls": "tool_call", "function_call": "tool_call"}.get(finish_reason or "", finish_reason or "stop")
    return [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": reason}]


def _dropped(content: _Content) -> _Content:
    """Content replaced by a short marker (an item too large to send), valid against the message schemas."""
    marker = {"type": "text", "content": spans.DROPPED_IO}
    texts = {
        "gen_ai.input.messages": _json_text([{"role": "user", "parts": [marker]}]),
        "gen_ai.output.messages": _json_text([{"role": "assistant", "parts": [marker], "finish_reason": "stop"}]),
    }
    return _Content(
        {
            sid: {k: texts[k] for k in t} | {"relaycast.collection_errors": "dropped_io"}
            for sid, t in content.by_span.items()
        }
    )


def _remote_parent(record: RequestRecord, ids: spans.TraceIds) -> tuple[bytes, int]:
    """The client's `trace.parent_span_id` (16 hex) becomes the root's remote parent, when its trace id was given."""
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


# --- protobuf (binary) --------------------------------------------------------------------------


_SMALL = tuple(bytes((i,)) for i in range(0x80))


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    n &= 0xFFFFFFFFFFFFFFFF  # int64 as two's complement: negatives take ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field; `tag` is the encoded key (field number << 3 | 2)."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _utf8(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: protobuf strings must be valid UTF-8
        return s.encode("utf-8", "replace")


def _pb_any(v: Value) -> bytes:
    if isinstance(v, str):
        return _ld(b"\x0a", _utf8(v))  # string_value = 1
    if isinstance(v, bool):
        return b"\x10" + (b"\x01" if v else b"\x00")  # bool_value = 2
    if isinstance(v, int):
        return b"\x18" + _varint(v)  # int_value = 3 (int64, two's complement)
    if isinstance(v, float):
        return b"\x21" + struct.pack("<d", v)  # double_value = 4
    return _ld(b"\x2a", b"".join(_ld(b"\x0a", _pb_any(x)) for x in v))  # array_value = 5 { repeated values = 1 }


def _pb_attrs(tag: bytes, attrs: Iterable[tuple[str, Value]]) -> bytes:
    """Repeated KeyValue {key = 1, value = 2}."""
    return b"".join(_ld(tag, _pb_key(k) + _ld(b"\x12", _pb_any(v))) for k, v in attrs)


@functools.lru_cache(maxsize=2048)
def _pb_key(key: str) -> bytes:
    return _ld(b"\x0a", _utf8(key))


def _pb_span(trace_id: bytes, s: _Span, attributes: bytes) -> bytes:
    parts = [
        _ld(b"\x0a", trace_id),  # trace_id = 1
        _ld(b"\x12", s.span_id.to_bytes(8, "big")),  # span_id = 2
    ]
    if s.parent_id:
        parts.append(_ld(b"\x22", s.parent_id))  # parent_span_id = 4
    parts.append(_ld(b"\x2a", _utf8(s.name)))  # name = 5
    parts.append(b"\x30" + _varint(s.kind))  # kind = 6
    parts.append(b"\x39" + struct.pack("<Q", s.start_ns))  # start_time_unix_nano = 7 (fixed64)
    parts.append(b"\x41" + struct.pack("<Q", s.end_ns))  # end_time_unix_nano = 8 (fixed64)
    parts.append(attributes)  # attributes = 9, already framed
    if s.error is not None:
        parts.append(_ld(b"\x7a", _ld(b"\x12", _utf8(s.error)) + b"\x18" + _varint(STATUS_ERROR)))  # status = 15
    parts.append(b"\x85\x01" + struct.pack("<I", s.flags))  # flags = 16 (fixed32)
    return b"".join(parts)


_PB_SCOPE = _ld(b"\x0a", _ld(b"\x0a", b"relaycast") + _ld(b"\x12", __version__.encode()))  # scope = 1 {name, version}


def _pb_resource_spans(resource: bytes, trace_id: bytes, span_list: list[_Span], content: _Content) -> bytes:
    shared: dict[int, bytes] = {}
    body = []
    for s in span_list:
        own, common = _split(s, content)
        if common is None:
            attributes = _pb_attrs(b"\x4a", own.items())
        else:
            cached = shared.get(id(common))
            if cached is None:
                cached = shared[id(common)] = _pb_attrs(b"\x4a", common.items())
            attributes = cached + _pb_attrs(b"\x4a", own.items())
        body.append(_ld(b"\x12", _pb_span(trace_id, s, attributes)))
    return _ld(b"\x0a", resource) + _ld(b"\x12", _PB_SCOPE + b"".join(body))  # resource = 1, scope_spans = 2


def _split(s: _Span, content: _Content) -> tuple[dict[str, Value], dict[str, Value] | None]:
    """(own attributes, shared ones to encode once) - or everything as own when a key would appear twice."""
    extra = content.by_span.get(s.span_id)
    own: dict[str, Value] = {**s.attrs, **extra} if extra else s.attrs
    if s.common.keys().isdisjoint(own):
        return own, s.common
    return {**s.common, **own}, None


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _pb_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message; unknown wire types end the walk."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
            yield num, value
        elif wire == 2:
            size, i = _read_varint(buf, i)
            if i + size > len(buf):
                raise ValueError("truncated")
            yield num, buf[i : i + size]
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("unsupported wire type")


def _partial_success(raw: bytes, json_first: bool) -> tuple[int, str] | None:
    """(rejected spans, message) from an ExportTraceServiceResponse, or None when it reports nothing."""
    if not raw:
        return None
    rejected, message = 0, ""
    try:
        if json_first or raw[:1] == b"{":
            p = orjson.loads(raw).get("partialSuccess") or {}
            rejected, message = int(p.get("rejectedSpans") or 0), str(p.get("errorMessage") or "")
        else:
            for num, value in _pb_fields(raw):
                if num == 1 and isinstance(value, bytes):
                    for n2, v2 in _pb_fields(value):
                        if n2 == 1 and isinstance(v2, int):
                            rejected = v2 - (1 << 64) if v2 >= 1 << 63 else v2
                        elif n2 == 2 and isinstance(v2, bytes):
                            message = v2.decode("utf-8", "replace")
    except (ValueError, TypeError, AttributeError, IndexError, orjson.JSONDecodeError):
        return None
    if rejected <= 0 and not message:
        return None
    return max(0, rejected), message


# --- OTLP/JSON ----------------------------------------------------------------------------------


def _json_any(v: Value) -> dict[str, Any]:
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}  # int64 as a decimal string
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"arrayValue": {"values": [_json_any(x) for x in v]}}


def _json_attrs(attrs: Iterable[tuple[str, Value]]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _json_any(v)} for k, v in attrs]


def _json_span(trace_id: str, s: _Span, attributes: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": trace_id, "spanId": f"{s.span_id:016x}"}
    if s.parent_id:
        out["parentSpanId"] = s.parent_id.hex()
    out.update(
        flags=s.flags,
        name=s.name,
        kind=s.kind,
        startTimeUnixNano=str(s.start_ns),
        endTimeUnixNano=str(s.end_ns),
        attributes=attributes,
    )
    if s.error is not None:
        out["status"] = {"message": s.error, "code": STATUS_ERROR}
    return out


def _json_resource_spans(resource: dict[str, Value], trace_id: str, span_list: list[_Span], content: _Content) -> bytes:
    shared: dict[int, list[dict[str, Any]]] = {}
    out = []
    for s in span_list:
        own, common = _split(s, content)
        if common is None:
            attributes = _json_attrs(own.items())
        else:
            cached = shared.get(id(common))
            if cached is None:
                cached = shared[id(common)] = _json_attrs(common.items())
            attributes = cached + _json_attrs(own.items())
        out.append(_json_span(trace_id, s, attributes))
    doc = {
        "resource": {"attributes": _json_attrs(resource.items())},
        "scopeSpans": [{"scope": {"name": "relaycast", "version": __version__}, "spans": out}],
    }
    try:
        return orjson.dumps(doc)
    except TypeError:  # a lone surrogate somewhere: replace it rather than lose the record
        return orjson.dumps(_clean(doc))

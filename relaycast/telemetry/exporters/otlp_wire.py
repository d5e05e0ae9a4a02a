"""OTLP trace encoding: protobuf (written by hand) and OTLP/JSON, for one `ResourceSpans` at a time.

The protobuf message layout is fixed by opentelemetry-proto's `trace.proto`; writing it here takes a few dozen
lines and spares the gateway a protobuf runtime. Tests decode these bytes with the official generated classes.
OTLP/JSON follows the spec's mapping: hex ids, lowerCamelCase keys, integer enums, 64-bit integers as strings.

A span's attributes are its own plus a `common` dict shared by every span of a record; the shared part is
encoded once per record and reused.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from relaycast.version import __version__

KIND_SERVER = 2
KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_ERROR = 2
FLAG_SAMPLED = 0x01
FLAG_HAS_IS_REMOTE = 0x100  # SpanFlags: the span says whether its parent is remote
FLAG_IS_REMOTE = 0x200

Value = str | bool | int | float | list[str]


@dataclass(slots=True)
class Span:
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
class Content:
    """Prompt and completion attributes, set apart so an oversized item can drop them and keep everything else."""

    by_span: dict[int, dict[str, str]] = field(default_factory=dict)


def clean(value: Any) -> Any:
    """`value` with every string made valid UTF-8 (a lone surrogate replaced), for JSON encoders that refuse it."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {clean(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def _split(s: Span, content: Content) -> tuple[dict[str, Value], dict[str, Value] | None]:
    """(own attributes, shared ones to encode once) - or everything as own when a key would appear twice."""
    extra = content.by_span.get(s.span_id)
    own: dict[str, Value] = {**s.attrs, **extra} if extra else s.attrs
    if s.common.keys().isdisjoint(own):
        return own, s.common
    return {**s.common, **own}, None


# --- protobuf (binary) --------------------------------------------------------------------------


_SMALL = tuple(bytes((i,)) for i in range(0x80))


def varint(n: int) -> bytes:
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
    return tag + (_SMALL[n] if n < 0x80 else varint(n)) + payload


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
        return b"\x18" + varint(v)  # int_value = 3 (int64, two's complement)
    if isinstance(v, float):
        return b"\x21" + struct.pack("<d", v)  # double_value = 4
    return _ld(b"\x2a", b"".join(_ld(b"\x0a", _pb_any(x)) for x in v))  # array_value = 5 { repeated values = 1 }


def pb_attrs(tag: bytes, attrs: Iterable[tuple[str, Value]]) -> bytes:
    """Repeated KeyValue {key = 1, value = 2}."""
    return b"".join(_ld(tag, _pb_key(k) + _ld(b"\x12", _pb_any(v))) for k, v in attrs)


@functools.lru_cache(maxsize=2048)
def _pb_key(key: str) -> bytes:
    return _ld(b"\x0a", _utf8(key))


def _pb_span(trace_id: bytes, s: Span, attributes: bytes) -> bytes:
    parts = [
        _ld(b"\x0a", trace_id),  # trace_id = 1
        _ld(b"\x12", s.span_id.to_bytes(8, "big")),  # span_id = 2
    ]
    if s.parent_id:
        parts.append(_ld(b"\x22", s.parent_id))  # parent_span_id = 4
    parts.append(_ld(b"\x2a", _utf8(s.name)))  # name = 5
    parts.append(b"\x30" + varint(s.kind))  # kind = 6
    parts.append(b"\x39" + struct.pack("<Q", s.start_ns))  # start_time_unix_nano = 7 (fixed64)
    parts.append(b"\x41" + struct.pack("<Q", s.end_ns))  # end_time_unix_nano = 8 (fixed64)
    parts.append(attributes)  # attributes = 9, already framed
    if s.error is not None:
        parts.append(_ld(b"\x7a", _ld(b"\x12", _utf8(s.error)) + b"\x18" + varint(STATUS_ERROR)))  # status = 15
    parts.append(b"\x85\x01" + struct.pack("<I", s.flags))  # flags = 16 (fixed32)
    return b"".join(parts)


_PB_SCOPE = _ld(b"\x0a", _ld(b"\x0a", b"relaycast") + _ld(b"\x12", __version__.encode()))  # scope = 1 {name, version}


def pb_resource_spans(resource: bytes, trace_id: bytes, span_list: list[Span], content: Content) -> bytes:
    """One `ResourceSpans`; `resource` is the Resource's attributes, already framed by `pb_attrs`."""
    shared: dict[int, bytes] = {}
    body = []
    for s in span_list:
        own, common = _split(s, content)
        if common is None:
            attributes = pb_attrs(b"\x4a", own.items())
        else:
            cached = shared.get(id(common))
            if cached is None:
                cached = shared[id(common)] = pb_attrs(b"\x4a", common.items())
            attributes = cached + pb_attrs(b"\x4a", own.items())
        body.append(_ld(b"\x12", _pb_span(trace_id, s, attributes)))
    return _ld(b"\x0a", resource) + _ld(b"\x12", _PB_SCOPE + b"".join(body))  # resource = 1, scope_spans = 2


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


def partial_success(raw: bytes, json_first: bool) -> tuple[int, str] | None:
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


def _json_span(trace_id: str, s: Span, attributes: list[dict[str, Any]]) -> dict[str, Any]:
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


def json_resource_spans(resource: dict[str, Value], trace_id: str, span_list: list[Span], content: Content) -> bytes:
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
        return orjson.dumps(clean(doc))

"""Structured output for the fake upstream: a small deterministic JSON generator for a JSON Schema, and the pieces
(stream chunks, each counted as an output token) that an answer's text is sent in.

The value validates against the schemas clients send (pydantic's, strict mode with `additionalProperties: false`
and `$defs`): an object gets every property in `properties` (so `required` is met); a string is a word (enum: its
first value; a few common `format`s get a valid sample); integer / number 1 / 1.5 moved into
`minimum`/`maximum`; boolean true; an array `max(1, minItems)` items; anyOf / oneOf their first branch;
`$ref` to `#/$defs/...` or `#/definitions/...` is resolved; null is null. Bounds that Anthropic's SDK moves into
a description (`{minimum: 3}`, as it asks the model to honour them) are honoured too.

Bounded for any schema a client sends: past `SOFT_DEPTH` levels recursion is cut (null branches preferred,
arrays at `minItems`), past `MAX_DEPTH` levels or `MAX_NODES` generated values the schema is refused with
`SchemaError`.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import orjson

from relaycast.fake.common import WORDS

SOFT_DEPTH = 12  # past this, take the shortest way out of recursive schemas
MAX_DEPTH = 64
MAX_NODES = 10_000
MAX_STRING = 4096
HINTS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minLength", "maxLength"}
)
CHARS_PER_TOKEN = 4  # a structured answer is streamed (and counted) in pieces of this many characters
FORMATS = MappingProxyType(
    {
        "date-time": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
        "time": "00:00:00Z",
        "email": "fox@example.com",
        "uri": "https://example.com/fox",
        "url": "https://example.com/fox",
        "uuid": "00000000-0000-4000-8000-000000000000",
        "ipv4": "127.0.0.1",
        "hostname": "example.com",
    }
)


class SchemaError(ValueError):
    """The schema cannot be answered (too deep, too large or malformed)."""


def generate(schema: Any) -> Any:
    """A value that validates against `schema`. Raises SchemaError for schemas past the bounds."""
    if not isinstance(schema, dict):
        raise SchemaError("schema must be an object")
    return _Generator(schema).value(schema, 0)


def pieces(text: str) -> list[str]:
    """The text in stream-sized pieces; their number is the answer's output tokens."""
    if not text:
        return []
    return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def json_answer(schema: Any) -> str:
    """The JSON text of a generated value for `schema`."""
    return orjson.dumps(generate(schema)).decode()


def format_text(fmt: Any, words: int) -> str | None:
    """The answer's text for a requested output format, None for plain text.

    `fmt` is chat's `response_format` ({type: json_schema, json_schema: {schema}}), the Responses API's
    `text.format` or Anthropic's output format ({type: json_schema, schema}), or {type: json_object}, which
    answers `{"answer": "<words>"}`.
    """
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return orjson.dumps({"answer": " ".join(WORDS[i % len(WORDS)] for i in range(words))}).decode()
    if kind != "json_schema":
        return None
    inner = fmt.get("json_schema")
    schema = inner.get("schema", {}) if isinstance(inner, dict) else fmt.get("schema", {})
    return json_answer(schema)


class _Generator:
    """One generation: the root (for `$ref`) and the budget of values left."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.nodes = 0

    def value(self, schema: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise SchemaError(f"schema nests deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SchemaError(f"schema asks for more than {MAX_NODES} values")
        if schema is True or schema is None:
            return self._word()
        if not isinstance(schema, dict):
            raise SchemaError("every subschema must be an object")
        schema = _with_hints(schema)
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return self.value(self._branch(branches, depth), depth + 1)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            return self._all_of(all_of, depth)
        return self._typed(schema, _type_of(schema, depth), depth)

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            props = schema.get("properties")
            if not isinstance(props, dict):
                return {}
            return {str(k): self.value(v, depth + 1) for k, v in props.items()}
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return _number(schema, 1, integer=True)
        if kind == "number":
            return _number(schema, 1.5, integer=False)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._word()

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        lo = schema.get("minItems")
        lo = lo if isinstance(lo, int) and lo > 0 else 0
        if lo > MAX_NODES:
            raise SchemaError(f"minItems above {MAX_NODES}")
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-4 tuples
            prefix, items = items, schema.get("additionalItems", {})
        out = [self.value(s, depth + 1) for s in prefix] if isinstance(prefix, list) else []
        want = lo if depth >= SOFT_DEPTH else max(1, lo)
        hi = schema.get("maxItems")
        if isinstance(hi, int) and hi >= 0:
            want = min(want, hi)
        if items is False:
            return out
        out.extend(self.value(items, depth + 1) for _ in range(max(0, want - len(out))))
        return out

    def _string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        s = FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
        s = s or self._word()
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if isinstance(lo, int) and lo > len(s):
            if lo > MAX_STRING:
                raise SchemaError(f"minLength above {MAX_STRING}")
            s = (s * (lo // len(s) + 1))[:lo]
        if isinstance(hi, int) and 0 <= hi < len(s):
            s = s[:hi]
        return s

    def _branch(self, branches: list[Any], depth: int) -> Any:
        if depth >= SOFT_DEPTH:
            for b in branches:
                if isinstance(b, dict) and b.get("type") == "null":
                    return b
        return branches[0]

    def _all_of(self, parts: list[Any], depth: int) -> Any:
        values = [self.value(p, depth + 1) for p in parts]
        if all(isinstance(v, dict) for v in values):
            merged: dict[str, Any] = {}
            for v in values:
                merged.update(v)
            return merged
        return values[0]

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str):
            raise SchemaError("$ref must be a string")
        if ref == "#":
            return self.root
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                defs = self.root.get(prefix[2:-1])
                name = ref[len(prefix) :].replace("~1", "/").replace("~0", "~")
                if isinstance(defs, dict) and name in defs:
                    return defs[name]
        raise SchemaError(f"cannot resolve $ref '{ref[:100]}'")

    def _word(self) -> str:
        return WORDS[self.nodes % len(WORDS)]


def _with_hints(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema plus the constraints that Anthropic's SDK moves into the description (`...\\n\\n{minimum: 3}`)
    for a model to read, as the model would honour them."""
    d = schema.get("description")
    if not isinstance(d, str) or not d.endswith("}") or len(d) > 2000:
        return schema
    start = d.rfind("{")
    if start < 0:
        return schema
    hints: dict[str, Any] = {}
    for item in d[start + 1 : -1].split(","):
        key, sep, value = item.partition(":")
        key = key.strip()
        if sep and key in HINTS and key not in schema:
            try:
                hints[key] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
            except ValueError:
                continue
    return {**schema, **hints} if hints else schema


def _type_of(schema: dict[str, Any], depth: int) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        kinds = [k for k in t if isinstance(k, str)]
        if depth >= SOFT_DEPTH and "null" in kinds:
            return "null"
        t = next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    if isinstance(t, str):
        return t
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _number(schema: dict[str, Any], default: float, *, integer: bool) -> float:
    x = default
    lo, xlo = _bound(schema, "minimum"), _bound(schema, "exclusiveMinimum")
    hi, xhi = _bound(schema, "maximum"), _bound(schema, "exclusiveMaximum")
    if lo is not None and x < lo:
        x = lo
    if xlo is not None and x <= xlo:
        x = math.floor(xlo) + 1 if integer else xlo + 1
    if hi is not None and x > hi:
        x = hi
    if xhi is not None and x >= xhi:
        x = math.ceil(xhi) - 1 if integer else xhi - 0.5
    return math.ceil(x) if integer else x


def _bound(schema: dict[str, Any], key: str) -> float | None:
    v = schema.get(key)
    return v if _is_num(v) else None


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)

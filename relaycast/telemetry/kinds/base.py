"""What a destination kind module offers: its settings (`KindSpec.parse`) and, for an OTLP backend, its `Dialect`:
the attributes that backend renders, added to the OpenTelemetry GenAI ones the OTLP exporter always sends."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from relaycast.config_reader import ConfigError, Reader
from relaycast.records import Attempt, RequestRecord

if TYPE_CHECKING:
    from relaycast.telemetry.exporters.otlp_wire import Value


class KindOptions(Protocol):
    """A kind's own options (a frozen dataclass): it names its secrets for the redactor."""

    def secrets(self) -> tuple[str, ...]: ...


# (reader, the destination's mapping, where it is in the config, the environment, the config file's folder)
Parse = Callable[[Reader, dict[str, Any], str, Mapping[str, str], Path], Any]


class Dialect:
    """A backend's own attributes, added to the GenAI ones. The default adds nothing (a plain collector).

    `content` texts (prompts and completions) are kept apart from the rest, so that privacy mode leaves them out
    and an oversized record drops them first; everything else is metadata."""

    # Whether the GenAI content attributes (`gen_ai.input.messages`, `gen_ai.output.messages`) are sent beside
    # the dialect's own content. False for a backend that renders only its own: a prompt is then sent once per
    # span, not twice (a long prompt would otherwise pass the size limit twice as soon).
    genai_content: bool = True

    def root(self, record: RequestRecord) -> dict[str, Value]:
        """On the request's root span."""
        return {}

    def attempt(self, record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
        """On attempt `i`'s span (`op`: "chat" or "embeddings")."""
        return {}

    def shrink(self, texts: dict[str, str]) -> dict[str, str] | None:
        """A span's content when it is dropped for size; None: each attribute becomes a short marker (JSON where
        it held JSON). A dialect whose content is many small attributes (flattened messages) returns fewer."""
        return None

    def root_content(self, record: RequestRecord) -> dict[str, str]:
        """Prompt and completion attributes for the request's root span (a backend that shows a trace's input
        and output from its root observation)."""
        return {}

    def content(self, record: RequestRecord, i: int, a: Attempt, op: str, genai: dict[str, str]) -> dict[str, str]:
        """Prompt and completion attributes for attempt `i`'s span, beside the GenAI ones (`genai`: the
        `gen_ai.input.messages` / `gen_ai.output.messages` JSON texts already made, possibly empty)."""
        return {}


GENAI_ONLY = Dialect()


@dataclass(frozen=True, slots=True)
class Check:
    """Test Connection's call: the backend's cheapest authenticated endpoint. Without one, the OTLP exporter
    posts an empty export request (no spans) to the traces endpoint, which checks the address and the key."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: str
    title: str  # "Langfuse", as the backend names itself
    keys: frozenset[str]  # settings beyond the common ones
    parse: Parse  # -> the options (OtlpOptions for an OTLP backend)
    exporter: str = "relaycast.telemetry.exporters.otlp:OtlpExporter"  # "module:Class"
    dialect: Dialect = GENAI_ONLY  # OTLP backends only
    auth_hint: str = "check the credentials"  # Test Connection's advice on a 401/403
    # common settings this kind defaults otherwise (`flush_interval`, `timeout`): e.g. S3 bills every PUT
    defaults: Mapping[str, float] = field(default_factory=dict)


def env_or(m: Mapping[str, Any], key: str, env: Mapping[str, str], *names: str, default: str | None = None) -> Any:
    """The configured value, else the first of the backend's own environment variables that is set, else
    `default`."""
    if m.get(key) is not None:
        return m[key]
    for n in names:
        v = env.get(n)
        if v:
            return v
    return default


def need(r: Reader, value: Any, at: str, what: str) -> str:
    """A required string setting, with a plain message naming what the backend calls it."""
    if value is None or value == "":
        raise ConfigError(at, f"required: {what}")
    return r.string(value, at)


def metadata(record: RequestRecord, ours: Mapping[str, Any]) -> dict[str, Any]:
    """The client's trace metadata (`trace` object) with relaycast's own fields over it: a client never sets or
    forges `key_name`, `request_id`, `user_id`, ... (one relaycast has no value for is left out, not the client's).
    None values are dropped."""
    from relaycast.telemetry import spans  # the spans module imports the records; kept out of import time

    out = {k: v for k, v in spans.trace_metadata(record).items() if k not in ours and v is not None}
    out.update((k, v) for k, v in ours.items() if v is not None)
    return out


def assistant_message(text: str | None, calls: tuple[dict[str, str], ...] = ()) -> dict[str, Any]:
    """An answer as an OpenAI chat assistant message (its text, and its tool calls when it made some): the shape
    Langfuse, LangSmith, Braintrust and OpenInference render."""
    out: dict[str, Any] = {"role": "assistant", "content": text or ""}
    if calls:
        out["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls
        ]
    return out


def openai_choice(text: str | None, calls: tuple[dict[str, str], ...], finish_reason: str | None) -> dict[str, Any]:
    """An answer as one choice of an OpenAI chat completion (the shape LangSmith and Braintrust render)."""
    return {"index": 0, "message": assistant_message(text, calls), "finish_reason": finish_reason or "stop"}


def basic(user: str, password: str) -> str:
    """An `Authorization: Basic` value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

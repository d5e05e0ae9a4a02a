"""What the tests of the OTLP backend kinds (Langfuse, LangSmith, Braintrust) share: a kind's settings parsed as the
config would, its exporter, the spans it encodes (decoded with the official opentelemetry-proto classes), and two
records: a chat request that failed over to a priced stream, and an embeddings request."""

from __future__ import annotations

from typing import Any

import aiohttp
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from relaycast.config_reader import Reader
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.otlp import OtlpExporter
from relaycast.telemetry.settings import DestinationConfig, OtlpOptions, parse_broadcast

T0 = 1_760_000_000_000_000_000
MS = 1_000_000
PROMPT = "Where is the Eiffel Tower? (prompt-marker-51)"
ANSWER = "In Paris. (answer-marker-77)"


class KindUnderTest:
    """One kind, named `name`, with `keys` (its credentials) in every config unless a test says otherwise."""

    def __init__(self, kind: str, name: str, keys: dict[str, Any]) -> None:
        self.kind, self.name, self.keys = kind, name, keys

    def config(self, extra: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> DestinationConfig:
        raw = {"destinations": [{"name": self.name, "kind": self.kind, **(extra or {})}]}
        (d,) = parse_broadcast(Reader(env or {}), raw, env or {}, None).destinations
        return d

    def options(self, extra: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> OtlpOptions:
        o = self.config(extra, env).options
        assert isinstance(o, OtlpOptions)
        return o

    def exporter(
        self, extra: dict[str, Any] | None = None, session: aiohttp.ClientSession | None = None
    ) -> OtlpExporter:
        ex = build(self.config({**self.keys, **(extra or {})}), session)  # type: ignore[arg-type] # encoding needs none
        assert isinstance(ex, OtlpExporter)
        return ex

    def spans_of(self, record: RequestRecord, privacy: bool = False) -> tuple[ResourceSpans, list[Span]]:
        (item,) = self.exporter().encode(record, privacy, ())
        rs = ResourceSpans.FromString(item)
        return rs, list(rs.scope_spans[0].spans)


def chat_record() -> RequestRecord:
    """A chat request that failed over: the first attempt a 503, the second a stream with cached and reasoning
    tokens, time to first token and a priced cost split into input and output."""
    failed = Attempt(
        target="openai/gpt-4o",
        provider="openai",
        model="gpt-4o",
        started_ns=1 * MS,
        duration_ns=40 * MS,
        error_class="upstream_5xx",
        error_message="upstream answered 503",
        upstream_status=503,
        vendor="openai",
    )
    served = Attempt(
        target="anthropic/claude-sonnet-4",
        provider="anthropic",
        model="claude-sonnet-4",
        started_ns=50 * MS,
        duration_ns=900 * MS,
        ttft_ns=250 * MS,
        usage=Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=1000, reasoning_tokens=100),
        finish_reason="stop",
        upstream_status=200,
        cost_pusd=4_500_000_000,  # $0.0045
        cost_input_pusd=1_500_000_000,  # $0.0015
        cost_source="computed",
        vendor="anthropic",
        response_model="claude-sonnet-4-20250514",
    )
    return RequestRecord(
        request_id="req-lf-1",
        endpoint="chat.completions",
        model_requested="fast",
        stream=True,
        started_unix_ns=T0,
        duration_ns=960 * MS,
        status_code=200,
        attribution=Attribution(
            user="alice",
            session_id="conv-7",
            feature="Support Bot",
            key_name="web",
            trace={"trace_name": "support-turn", "ticket": 42},
            tags=(("team", "care"),),
        ),
        attempts=(failed, served),
        input_messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}),
        output_text=ANSWER,
    )


def embeddings_record() -> RequestRecord:
    a = Attempt(
        target="openai/text-embedding-3-small",
        provider="openai",
        model="text-embedding-3-small",
        started_ns=0,
        duration_ns=30 * MS,
        usage=Usage(prompt_tokens=8),
        cost_pusd=160_000,
        cost_source="computed",
        vendor="openai",
    )
    return RequestRecord(
        request_id="req-lf-emb",
        endpoint="embeddings",
        model_requested="text-embedding-3-small",
        stream=False,
        started_unix_ns=T0,
        duration_ns=31 * MS,
        status_code=200,
        attribution=Attribution(user="bob"),
        attempts=(a,),
    )


def attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, which)
    return out

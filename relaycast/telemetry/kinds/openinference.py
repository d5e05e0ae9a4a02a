"""The OpenInference semantic conventions: the span attributes Arize AX and Arize Phoenix render natively (span
kinds, model, provider, token counts, costs, messages, tool calls, user, session, metadata, tags).

Names from github.com/Arize-ai/openinference, spec/semantic_conventions.md and the Python package
`openinference-semantic-conventions` (src/openinference/semconv/trace/__init__.py); this module does not import
it, the tests check our names against it. Lists (messages, tool calls) are flattened with indexes, as the spec
says: `llm.input_messages.0.message.role`, `llm.output_messages.0.message.tool_calls.0.tool_call.function.name`.

The request's root span is a CHAIN, each provider attempt an LLM span (an EMBEDDING span for embeddings). Costs
are `llm.cost.*` in US dollars, on attempt spans only, like the tokens, so a backend that rolls them up to the
trace counts each once. Prompts and completions (`input.value`, `output.value`, the flattened messages) are
content: privacy mode leaves them out and an oversized record drops them.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord, content_text
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.otlp_semconv import json_text
from relaycast.telemetry.exporters.otlp_wire import Value
from relaycast.telemetry.kinds.base import Dialect, assistant_message, metadata

# GenAI provider names (`gen_ai.provider.name`, as `Attempt.vendor` holds them) -> OpenInference's
# `llm.provider` values (OpenInferenceLLMProviderValues: openai, anthropic, mistralai, google, azure, aws, xai, ...).
# Names the two agree on (openai, anthropic, cohere, groq, deepseek, perplexity, ...) pass as they are.
PROVIDERS: MappingProxyType[str, str] = MappingProxyType(
    {
        "mistral_ai": "mistralai",
        "x_ai": "xai",
        "gcp.gemini": "google",
        "gcp.vertex_ai": "google",
        "gcp.gen_ai": "google",
        "aws.bedrock": "aws",
        "azure.ai.openai": "azure",
        "azure.ai.inference": "azure",
    }
)
# `llm.system` is the AI product (OpenInferenceLLMSystemValues): Vertex AI is one of its own.
SYSTEMS: MappingProxyType[str, str] = MappingProxyType({"gcp.vertex_ai": "vertexai"})

JSON = "application/json"
TEXT = "text/plain"
LLM_SYSTEMS = frozenset({"openai", "anthropic", "cohere", "mistralai", "vertexai"})
MAX_JSON = 16 * 1024


def provider(a: Attempt) -> str:
    v = a.vendor or a.provider
    return PROVIDERS.get(v, v)


def system(a: Attempt) -> str | None:
    """`llm.system`, only where OpenInference names the product (OpenInferenceLLMSystemValues)."""
    v = a.vendor or a.provider
    out = SYSTEMS.get(v) or PROVIDERS.get(v, v)
    return out if out in LLM_SYSTEMS else None


def bounded_json(value: Any) -> str:
    """JSON text for a metadata attribute whose size the client controls (request parameters such as a JSON
    schema, trace metadata): replaced by a short note past `MAX_JSON`, so a large one cannot push the record
    past the backend's size limit (the full value is in `relaycast.request.*` / `relaycast.trace.*`)."""
    text = json_text(value)
    return text if len(text) <= MAX_JSON else json_text({"relaycast": f"left out: larger than {MAX_JSON} bytes"})


class OpenInferenceDialect(Dialect):
    """OpenInference attributes beside the GenAI ones (Arize and Phoenix read only these)."""

    genai_content = False  # the backend renders its own content attributes

    def root(self, record: RequestRecord) -> dict[str, Value]:
        out: dict[str, Value] = {"openinference.span.kind": "CHAIN"}
        if record.input_messages:
            out["input.mime_type"] = JSON
        if record.output_tool_calls:
            out["output.mime_type"] = JSON
        elif record.output_text is not None:
            out["output.mime_type"] = TEXT
        out.update(_labels(record))
        return out

    def attempt(self, record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
        embeddings = op == "embeddings"
        out: dict[str, Value] = {"openinference.span.kind": "EMBEDDING" if embeddings else "LLM"}
        model = a.response_model or a.model
        if embeddings:
            out["embedding.model_name"] = model
            out["embedding.invocation_parameters"] = bounded_json({"model": a.model, **record.params})
        else:
            out["llm.model_name"] = model  # what Phoenix prices by, with the provider
            out["llm.request.model_name"] = a.model
            if a.response_model:
                out["llm.response.model_name"] = a.response_model
            out["llm.invocation_parameters"] = bounded_json({"model": a.model, **record.params})
        out["llm.provider"] = provider(a)
        llm_system = system(a)
        if llm_system is not None:
            out["llm.system"] = llm_system
        if a.finish_reason:
            out["llm.finish_reason"] = a.finish_reason
        u = a.usage
        if u is not None:
            out["llm.token_count.prompt"] = u.prompt_tokens
            out["llm.token_count.completion"] = u.completion_tokens
            out["llm.token_count.total"] = u.total_tokens
            if u.cached_tokens:
                out["llm.token_count.prompt_details.cache_read"] = u.cached_tokens
            if u.cache_write_tokens:
                out["llm.token_count.prompt_details.cache_write"] = u.cache_write_tokens
            if u.reasoning_tokens:
                out["llm.token_count.completion_details.reasoning"] = u.reasoning_tokens
        if a.cost_pusd is not None and a.cost_source != "none":
            out["llm.cost.total"] = usd_float(a.cost_pusd)
            if a.cost_input_pusd is not None:
                out["llm.cost.prompt"] = usd_float(a.cost_input_pusd)
                out["llm.cost.completion"] = usd_float(a.cost_pusd - a.cost_input_pusd)
        if not embeddings:
            if record.input_messages:
                out["input.mime_type"] = JSON
            if spans.attempt_output_text(record, i, a) is not None or spans.attempt_tool_calls(record, i, a):
                out["output.mime_type"] = JSON if spans.attempt_tool_calls(record, i, a) else TEXT
        out.update(_labels(record))
        return out

    def root_content(self, record: RequestRecord) -> dict[str, str]:
        """The request's input and the answer the client got, which Phoenix's and Arize's trace lists show from the
        root span."""
        out: dict[str, str] = {}
        if record.input_messages:
            out["input.value"] = input_value(record)
        calls = record.output_tool_calls
        if calls:
            out["output.value"] = json_text(assistant_message(record.output_text, calls))
        elif record.output_text is not None:
            out["output.value"] = record.output_text
        return out

    def shrink(self, texts: dict[str, str]) -> dict[str, str]:
        """Dropped for size: the flattened messages go (each key would stay, holding a marker longer than many
        a role), `input.value` / `output.value` say why."""
        quoted = json_text(spans.DROPPED_IO)  # still JSON where the mime type says JSON
        return {
            k: quoted if texts[k][:1] == "{" else spans.DROPPED_IO
            for k in ("input.value", "output.value")
            if k in texts
        }

    def content(self, record: RequestRecord, i: int, a: Attempt, op: str, genai: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if record.input_messages:
            out["input.value"] = input_value(record)
            for n, m in enumerate(record.input_messages):
                out.update(_message(f"llm.input_messages.{n}.", m))
        text = spans.attempt_output_text(record, i, a)
        calls = spans.attempt_tool_calls(record, i, a)
        if text is not None or calls:
            answer = assistant_message(text, calls)
            out["output.value"] = json_text(answer) if calls else text or ""
            out.update(_message("llm.output_messages.0.", answer))
        return out


def input_value(record: RequestRecord) -> str:
    """The request's messages as JSON, their content as text (an image as `[image_url]`, as every destination
    gets it: never its base64 bytes)."""
    return json_text({"messages": spans.input_messages(record)})


def _message(prefix: str, m: dict[str, Any]) -> dict[str, str]:
    """One chat message as flattened `message.*` attributes: role, text, the tool calls an assistant turn made, the
    call a tool message answers."""
    out = {f"{prefix}message.role": str(m.get("role") or "")}
    text = content_text(m.get("content"))
    if text:
        out[f"{prefix}message.content"] = text
    if m.get("name"):
        out[f"{prefix}message.name"] = str(m["name"])
    if m.get("tool_call_id"):
        out[f"{prefix}message.tool_call_id"] = str(m["tool_call_id"])
    for k, c in enumerate(spans.message_tool_calls(m)):
        p = f"{prefix}message.tool_calls.{k}.tool_call."
        if c["id"]:
            out[p + "id"] = c["id"]
        out[p + "function.name"] = c["name"]
        out[p + "function.arguments"] = c["arguments"]
    return out


def _labels(record: RequestRecord) -> dict[str, Value]:
    """`metadata` (a JSON object: the client's trace metadata and what relaycast knows of the request) and
    `tag.tags` (the request's tags as `key:value`), as Arize and Phoenix filter by them."""
    a = record.attribution
    meta = metadata(
        record,
        {"feature": a.feature, "app_url": a.app_url, "key_name": a.key_name, "request_id": record.request_id},
    )
    out: dict[str, Value] = {"metadata": bounded_json(meta)}
    if a.tags:
        out["tag.tags"] = [f"{k}:{v}" for k, v in a.tags]
    return out


OPENINFERENCE = OpenInferenceDialect()

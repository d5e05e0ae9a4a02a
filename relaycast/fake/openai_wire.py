"""OpenAI's chat-completions wire format, as the real API sends it: bodies, stream chunks, error bodies."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import orjson

from relaycast.fake import json_schema
from relaycast.fake.behaviour import Behaviour
from relaycast.fake.common import WORDS

MAX_CHOICES = 128


def tokens(n: int) -> list[str]:
    """n output tokens: one word each, with a leading space after the first."""
    return [(" " if i else "") + WORDS[i % len(WORDS)] for i in range(n)]


def count_prompt_tokens(messages: Any) -> int:
    """A rough, deterministic token count: ~4 characters a token plus 4 per message."""
    if not isinstance(messages, list):
        return 1
    chars = 0
    for m in messages:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            chars += len(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    chars += len(p["text"])
    return max(1, chars // 4 + 4 * len(messages))


def usage(b: Behaviour, prompt: int, completion: int | None = None) -> dict[str, Any]:
    """Chat usage; `completion` tokens default to the behaviour's `tokens`.

    Cache writes are reported as OpenRouter does (`prompt_tokens_details.cache_write_tokens`), and what OpenAI's
    chat usage has no field for under Anthropic's names, as relaycast's own chat answers carry them:
    `cache_creation` for one-hour cache writes, `server_tool_use` for web searches."""
    prompt = b.prompt_tokens if b.prompt_tokens is not None else prompt
    out = b.tokens if completion is None else completion
    details: dict[str, Any] = {"cached_tokens": b.cached, "audio_tokens": b.audio_in}
    if b.cache_writes:
        details["cache_write_tokens"] = b.cache_writes
    u: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": details,
        "completion_tokens_details": {
            "reasoning_tokens": b.reasoning,
            "audio_tokens": b.audio_out,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if b.cache_write_1h:
        u["cache_creation"] = {
            "ephemeral_5m_input_tokens": b.cache_write,
            "ephemeral_1h_input_tokens": b.cache_write_1h,
        }
    if b.web_search:
        u["server_tool_use"] = {"web_search_requests": b.web_search}
    if b.cost is not None:
        u["cost"] = b.cost
    return u


def service_tier(b: Behaviour) -> str:
    """The tier an OpenAI answer says served it."""
    return b.service_tier or "default"


def tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    fn = (tools[0] or {}).get("function") or {}
    return {
        "id": "call_fake0001",
        "type": "function",
        "function": {"name": fn.get("name", "tool"), "arguments": orjson.dumps({"query": "fox"}).decode()},
    }


def choice_count(body: dict[str, Any]) -> int:
    """The request's `n` (1 when absent). Raises ValueError with OpenAI's message when it is not 1..128."""
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"Invalid type for 'n': expected an integer, but got {type(n).__name__} instead.")
    if not 1 <= n <= MAX_CHOICES:
        raise ValueError(f"Invalid 'n': integer {'below minimum' if n < 1 else 'above maximum'} value.")
    return n


def answer_pieces(b: Behaviour, body: dict[str, Any]) -> list[str]:
    """The content of a chat answer in stream pieces, one output token each: `tokens` words, or JSON for a
    `response_format` (raises json_schema.SchemaError for a schema it cannot answer)."""
    structured = json_schema.format_text(body.get("response_format"), b.tokens)
    return tokens(b.tokens) if structured is None else json_schema.pieces(structured)


def completion(rid: str, model: str, b: Behaviour, body: dict[str, Any]) -> bytes:
    call = tool_call(body) if b.tool_call else None
    n = choice_count(body)
    pieces = [] if call else answer_pieces(b, body)
    message: dict[str, Any] = {"role": "assistant", "content": None if call else "".join(pieces), "refusal": None}
    if call:
        message["tool_calls"] = [call]
    finish = "tool_calls" if call else ("length" if body.get("max_tokens") == b.tokens else "stop")
    choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": finish} for i in range(n)]
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": usage(b, count_prompt_tokens(body.get("messages")), n * (b.tokens if call else len(pieces))),
            "service_tier": service_tier(b),
            "system_fingerprint": "fp_fake",
        }
    )


def stream_chunks(w: ChunkWriter, b: Behaviour, body: dict[str, Any], with_usage: bool) -> list[bytes]:
    """The `data:` chunks of a streamed chat answer (without `[DONE]`): for each of the `n` choices a role
    chunk, content chunks choice after choice at each position, finish chunks, then the usage chunk if asked."""
    n = choice_count(body)
    call = tool_call(body) if b.tool_call else None
    pieces = [] if call else answer_pieces(b, body)
    chunks = [w.chunk({"role": "assistant", "content": "", "refusal": None}, index=i) for i in range(n)]
    if call:
        chunks.extend(w.chunk({"tool_calls": [{"index": 0, **call}]}, index=i) for i in range(n))
    for p in pieces:
        chunks.extend(w.chunk({"content": p}, index=i) for i in range(n))
    chunks.extend(w.chunk({}, "tool_calls" if call else "stop", index=i) for i in range(n))
    if with_usage:
        per_choice = b.tokens if call else len(pieces)
        chunks.append(w.usage_chunk(usage(b, count_prompt_tokens(body.get("messages")), n * per_choice)))
    return chunks


class ChunkWriter:
    """Builds `data: {...}\\n\\n` chunks of one stream; every chunk carries the same id, created, model and
    service tier, as OpenAI's do."""

    def __init__(self, rid: str, model: str, with_usage: bool, tier: str = "default") -> None:
        self._head = (
            b'{"id":"'
            + rid.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"service_tier":'
            + orjson.dumps(tier)
            + b',"system_fingerprint":"fp_fake","choices":'
        )
        self._tail = b',"usage":null}' if with_usage else b"}"

    def chunk(self, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + self._head + orjson.dumps([choice]) + self._tail + b"\n\n"

    def usage_chunk(self, u: dict[str, Any]) -> bytes:
        return b"data: " + self._head + b'[],"usage":' + orjson.dumps(u) + b"}\n\n"


def invalid(message: str, param: str | None) -> bytes:
    """OpenAI's body for a 400 invalid_request_error."""
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}})


def error_body(status: int, model: str, presented_key: str | None = None) -> tuple[bytes, str]:
    """The real OpenAI error body for a status, and its type."""
    if status == 401:
        msg = f"Incorrect API key provided: {presented_key or ''}. You can find your API key at https://platform.openai.com/account/api-keys."
        err = {"message": msg, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    elif status == 404:
        err = {
            "message": f"The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    elif status == 429:
        err = {
            "message": f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    elif status == 400:
        err = {
            "message": "Invalid value for 'temperature'.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    else:
        err = {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    return orjson.dumps({"error": err}), str(err["type"])


def context_length(param: str = "messages") -> bytes:
    """OpenAI's context-length error body; `param` names the field holding the prompt."""
    return orjson.dumps(
        {
            "error": {
                "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": param,
                "code": "context_length_exceeded",
            }
        }
    )


CONTEXT_LENGTH = context_length()

CONTENT_POLICY = orjson.dumps(
    {
        "error": {
            "message": "Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_prompt",
        }
    }
)


EMBEDDING_FORMATS = ("float", "base64")


def embeddings(model: str, inputs: Any, dims: int = 8, encoding_format: str = "float") -> bytes:
    """The embeddings answer; with `encoding_format="base64"` each vector is base64 of little-endian float32s."""
    items = inputs if isinstance(inputs, list) else [inputs]
    data = []
    total = 0
    for i, text in enumerate(items):
        s = str(text)
        total += max(1, len(s) // 4)
        seed = sum(s.encode()) or 1
        vec = [((seed * (j + 1) * 2654435761) % 1000) / 1000 - 0.5 for j in range(dims)]
        value: list[float] | str = vec if encoding_format == "float" else float32_base64(vec)
        data.append({"object": "embedding", "index": i, "embedding": value})
    return orjson.dumps(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": total, "total_tokens": total}}
    )


def float32_base64(vec: list[float]) -> str:
    """A vector as OpenAI's base64 encoding: little-endian IEEE float32 values, base64 (standard alphabet)."""
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()

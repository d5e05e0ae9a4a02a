"""OpenAI's chat-completions wire format, as the real API sends it: bodies, stream chunks, error bodies."""

from __future__ import annotations

import time
from typing import Any

import orjson

from relaycast.fake.behaviour import Behaviour

WORDS = (
    "the quick brown fox jumps over a lazy dog while relaycast measures every token it forwards "
    "with care and low overhead so that site reliability engineers sleep well at night"
).split()


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


def usage(b: Behaviour, prompt: int) -> dict[str, Any]:
    prompt = b.prompt_tokens if b.prompt_tokens is not None else prompt
    u: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": b.tokens,
        "total_tokens": prompt + b.tokens,
        "prompt_tokens_details": {"cached_tokens": b.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": b.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if b.cost is not None:
        u["cost"] = b.cost
    return u


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


def completion(rid: str, model: str, b: Behaviour, body: dict[str, Any]) -> bytes:
    call = tool_call(body) if b.tool_call else None
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if call else "".join(tokens(b.tokens)),
        "refusal": None,
    }
    if call:
        message["tool_calls"] = [call]
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls"
                    if call
                    else ("length" if body.get("max_tokens") == b.tokens else "stop"),
                }
            ],
            "usage": usage(b, count_prompt_tokens(body.get("messages"))),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
    )


class ChunkWriter:
    """Builds `data: {...}\\n\\n` chunks of one stream; every chunk carries the same id, created and model."""

    def __init__(self, rid: str, model: str, with_usage: bool) -> None:
        self._head = (
            b'{"id":"'
            + rid.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"system_fingerprint":"fp_fake","choices":'
        )
        self._tail = b',"usage":null}' if with_usage else b"}"

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + self._head + orjson.dumps([choice]) + self._tail + b"\n\n"

    def usage_chunk(self, u: dict[str, Any]) -> bytes:
        return b"data: " + self._head + b'[],"usage":' + orjson.dumps(u) + b"}\n\n"


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


CONTEXT_LENGTH = orjson.dumps(
    {
        "error": {
            "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
)

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


def embeddings(model: str, inputs: Any, dims: int = 8) -> bytes:
    items = inputs if isinstance(inputs, list) else [inputs]
    data = []
    total = 0
    for i, text in enumerate(items):
        s = str(text)
        total += max(1, len(s) // 4)
        seed = sum(s.encode()) or 1
        vec = [((seed * (j + 1) * 2654435761) % 1000) / 1000 - 0.5 for j in range(dims)]
        data.append({"object": "embedding", "index": i, "embedding": vec})
    return orjson.dumps(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": total, "total_tokens": total}}
    )

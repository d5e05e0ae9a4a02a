"""OpenAI's legacy completions wire format (`POST /v1/completions`): `text_completion` objects and stream chunks.

`prompt` is a string, a list of strings, a list of token ids or a list of such lists; each prompt gets `n`
choices (index = prompt * n + choice). The text is `tokens` words; a `max_tokens` at or below that cuts it
with finish_reason "length".
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from relaycast.fake import openai_wire
from relaycast.fake.behaviour import Behaviour

MAX_PROMPTS = 2048


def prompts(body: dict[str, Any]) -> list[Any]:
    """The request's prompts. Raises ValueError with OpenAI's message when `prompt` is missing or malformed."""
    p = body.get("prompt")
    if p is None:
        raise ValueError("you must provide a prompt parameter")
    if isinstance(p, str) or (isinstance(p, list) and p and all(isinstance(t, int) for t in p)):
        return [p]
    if isinstance(p, list) and p and len(p) <= MAX_PROMPTS and all(isinstance(x, str | list) for x in p):
        return list(p)
    raise ValueError("'prompt' must be a string, an array of strings or an array of token arrays")


def _prompt_tokens(ps: list[Any]) -> int:
    return sum(max(1, len(p) // 4) if isinstance(p, str) else len(p) for p in ps)


def _text(b: Behaviour, body: dict[str, Any]) -> tuple[list[str], str]:
    limit = body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit <= b.tokens:
        return openai_wire.tokens(limit), "length"
    return openai_wire.tokens(b.tokens), "stop"


def _usage(b: Behaviour, ps: list[Any], completion: int) -> dict[str, Any]:
    prompt = b.prompt_tokens if b.prompt_tokens is not None else _prompt_tokens(ps)
    u: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if b.cost is not None:
        u["cost"] = b.cost
    return u


def completion(rid: str, model: str, b: Behaviour, body: dict[str, Any]) -> bytes:
    """The `text_completion` object."""
    ps = prompts(body)
    n = openai_wire.choice_count(body)
    toks, finish = _text(b, body)
    text = "".join(toks)
    count = len(ps) * n
    choices = [{"text": text, "index": i, "logprobs": None, "finish_reason": finish} for i in range(count)]
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": _usage(b, ps, count * len(toks)),
        }
    )


def stream_chunks(rid: str, model: str, b: Behaviour, body: dict[str, Any]) -> list[bytes]:
    """The stream's `data:` chunks, ending with `[DONE]`; a usage chunk first when stream_options.include_usage."""
    ps = prompts(body)
    count = len(ps) * openai_wire.choice_count(body)
    toks, finish = _text(b, body)
    so = body.get("stream_options")
    with_usage = isinstance(so, dict) and bool(so.get("include_usage"))
    head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model}
    tail = {"system_fingerprint": "fp_fake", **({"usage": None} if with_usage else {})}

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": choices, **tail, **extra}) + b"\n\n"

    out: list[bytes] = []
    for t in toks:
        out.extend(chunk([{"text": t, "index": i, "logprobs": None, "finish_reason": None}]) for i in range(count))
    out.extend(chunk([{"text": "", "index": i, "logprobs": None, "finish_reason": finish}]) for i in range(count))
    if with_usage:
        out.append(chunk([], usage=_usage(b, ps, count * len(toks))))
    out.append(b"data: [DONE]\n\n")
    return out

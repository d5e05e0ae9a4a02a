"""OpenRouter's response contract, for a client that asks for it with `usage: {include: true}`: the answer's
`usage` carries `cost` (what relaycast computed for the whole request, every attempt included, in USD) and the
token details (`prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`); the answer
names the `provider` (the vendor) and each choice its `native_finish_reason`. In a stream, the final usage chunk
carries them (and is sent whether or not `stream_options.include_usage` asked for it). Without the request
extension the upstream's answer is forwarded as it is.
"""

from __future__ import annotations

from typing import Any

import orjson

from relaycast import errors
from relaycast.costs.money import usd_decimal
from relaycast.providers.base import ChatResult
from relaycast.sse import written_data


def usd(pico: int) -> float:
    """Pico-dollars as a JSON number in USD; exact for any sum below a billion dollars (15 significant digits)."""
    return float(usd_decimal(pico))


def usage_fields(usage: dict[str, Any], pico: int) -> dict[str, Any]:
    out = dict(usage)
    out["cost"] = usd(pico)
    pd = dict(out.get("prompt_tokens_details") or {})
    pd.setdefault("cached_tokens", 0)
    cd = dict(out.get("completion_tokens_details") or {})
    cd.setdefault("reasoning_tokens", 0)
    out["prompt_tokens_details"], out["completion_tokens_details"] = pd, cd
    return out


def openrouter_answer(result: ChatResult, vendor: str, pico: int) -> bytes:
    """A chat completion with OpenRouter's fields added (`vendor`: `providers.presets.vendor`)."""
    body = orjson.loads(result.body)
    if not isinstance(body, dict):
        return result.body
    body.setdefault("provider", vendor)  # an OpenRouter upstream names the one it used
    for c in body.get("choices") or ():
        if isinstance(c, dict):
            c.setdefault("native_finish_reason", result.native_finish_reason or c.get("finish_reason"))
    usage = body.get("usage")
    body["usage"] = usage_fields(usage if isinstance(usage, dict) else {}, pico)
    return orjson.dumps(body)


def usage_chunk(data: bytes, vendor: str, pico: int) -> bytes:
    """A stream's events with the usage chunk (`choices: []` and a usage object) given OpenRouter's fields. Only the
    events with a `"usage"` key not null are parsed (OpenAI's chunks carry `"usage":null` when usage is asked for);
    the rest of the bytes are copied as they are."""
    out: list[bytes] = []
    done = 0  # the bytes before this are in `out`
    i = data.find(b'"usage"')
    while i != -1:
        if data.startswith(b'"usage":null', i):
            i = data.find(b'"usage"', i + 12)
            continue
        start = data.rfind(b"\n\n", done, i)
        start = done if start == -1 else start + 2
        end = data.find(b"\n\n", i)
        end = len(data) if end == -1 else end
        block = data[start:end]
        if block.startswith(b"data: {"):
            try:
                obj = orjson.loads(written_data(block))
            except orjson.JSONDecodeError:  # as `shapes.chat_events`: a malformed answer, not a crash mid-stream
                raise errors.MalformedResponse("upstream sent a stream event that is not JSON") from None
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict) and not obj.get("choices"):
                obj.setdefault("provider", vendor)
                obj["usage"] = usage_fields(obj["usage"], pico)
                out += (data[done:start], b"data: ", orjson.dumps(obj))
                done = end
        i = data.find(b'"usage"', end)
    if not out:
        return data
    out.append(data[done:])
    return b"".join(out)

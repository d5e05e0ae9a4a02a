"""How the fake upstream behaves for one request, chosen by the model name and/or a header.

Model name:  `gpt-4o-mini@ttft_ms=200,tps=50,tokens=40`   (everything after '@')
Header:      `x-fake-behaviour: error=429;retry_after=2`   (',' or ';' between settings; wins over the name)

The header keeps model names real (a gateway in front, configured with `forward_headers: [x-fake-behaviour]`,
passes it on, and stores and shows the plain model name), so `relaycast demo` uses it; the suffix needs no gateway
setting.

Settings
  latency_ms=N        delay before a non-streaming answer (and the default time to first token)
  ttft_ms=N           delay before the first stream chunk
  tps=N               stream tokens per second (0: as fast as possible)
  tokens=N            output tokens (default 16); a JSON answer (structured outputs) counts its 4-character pieces
  prompt_tokens=N     report this many prompt tokens (default: counted from the messages)
  cached=N            cached prompt tokens in usage (OpenAI cached_tokens / Anthropic cache_read_input_tokens)
  cache_write=N       cache-write tokens, written for 5 minutes (Anthropic cache_creation_input_tokens)
  cache_write_1h=N    cache-write tokens written for one hour (Anthropic cache_creation.ephemeral_1h_input_tokens);
                      cache_creation_input_tokens is then cache_write + cache_write_1h
  reasoning=N         reasoning tokens in usage (part of the output tokens)
  audio_in=N          audio prompt tokens (chat: prompt_tokens_details.audio_tokens; part of the prompt tokens)
  audio_out=N         audio output tokens (chat: completion_tokens_details.audio_tokens; part of the output tokens)
  web_search=N        server-side web searches (Anthropic server_tool_use.web_search_requests; Responses: N
                      web_search_call items; chat: usage.server_tool_use)
  service_tier=NAME   the tier the answer says served it (default: OpenAI "default", Anthropic "standard")
  cost=X              report an upstream cost in usage.cost (as OpenRouter does)
  error=CODE          answer with that HTTP error in the provider's real error body (400 401 404 429 500 503 529)
  retry_after=S       Retry-After header on 429/529
  fail_rate=P         answer 503 (OpenAI) / 529 (Anthropic) with probability P
  content_policy      refuse for content policy
  context_length      refuse for context length
  cut_after=N         stream: drop the connection after N chunks
  stall_after=N       stream: stop sending (connection open) after N chunks, for stall_ms (default 1 hour)
  malformed_after=N   stream: send a chunk that is not JSON after N chunks
  tool_call           answer with a call to the first tool given
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any

FLAGS = ("content_policy", "context_length", "tool_call")
HEADER = b"x-fake-behaviour"  # the request header that sets the behaviour (a gateway passes it on with forward_headers)


@dataclass(frozen=True, slots=True)
class Behaviour:
    latency_ms: float = 0
    ttft_ms: float | None = None
    tps: float = 0
    tokens: int = 16
    prompt_tokens: int | None = None
    cached: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    audio_in: int = 0
    audio_out: int = 0
    web_search: int = 0
    service_tier: str | None = None
    cost: float | None = None
    error: int | None = None
    retry_after: float | None = None
    fail_rate: float = 0
    content_policy: bool = False
    context_length: bool = False
    cut_after: int | None = None
    stall_after: int | None = None
    stall_ms: float = 3_600_000
    malformed_after: int | None = None
    tool_call: bool = False

    @property
    def first_token_ms(self) -> float:
        return self.latency_ms if self.ttft_ms is None else self.ttft_ms

    @property
    def cache_writes(self) -> int:
        """Every cache-write token, both TTLs."""
        return self.cache_write + self.cache_write_1h


_TYPES = MappingProxyType({f.name: f.type for f in fields(Behaviour)})
NAME = re.compile(r"[a-z0-9_-]{1,32}")  # a text setting's value (service_tier)


class BadBehaviour(ValueError):
    pass


def parse(spec: str, base: Behaviour = Behaviour()) -> Behaviour:
    """Apply `k=v` settings from spec (separated by ',' or ';') on top of base."""
    changes: dict[str, Any] = {}  # values typed by _TYPES
    for item in spec.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in _TYPES:
            raise BadBehaviour(f"unknown fake behaviour '{key}'")
        if key in FLAGS:
            changes[key] = value.strip().lower() not in ("0", "false", "no") if sep else True
            continue
        if not sep:
            raise BadBehaviour(f"fake behaviour '{key}' needs a value")
        t = str(_TYPES[key])
        if "str" in t:
            if not NAME.fullmatch(value.strip()):
                raise BadBehaviour(f"fake behaviour '{key}' has a bad value '{value}'")
            changes[key] = value.strip()
            continue
        try:
            changes[key] = int(value) if "int" in t and "float" not in t else float(value)
        except ValueError:
            raise BadBehaviour(f"fake behaviour '{key}' has a bad value '{value}'") from None
    return replace(base, **changes) if changes else base


def for_request(model: str, header: str | None, base: Behaviour) -> tuple[str, Behaviour]:
    """The model name the fake reports, and the behaviour asked for."""
    name, _, spec = model.partition("@")
    b = parse(spec, base) if spec else base
    if header:
        b = parse(header, b)
    return name, b

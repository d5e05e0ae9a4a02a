"""Frozen records of what happened to one request. Built after the response; exporters turn them into wire formats.

They are msgspec Structs: made on every request (four objects), encoded once to reach the telemetry process and
decoded there. Measured against frozen dataclasses of the same fields: 0.55 against 8.2 µs to make, 1.0 against
2.0 µs to encode, 1.5 against 4.4 µs to decode. `msgspec.structs.replace` makes a changed copy.

`array_like`: encoded as arrays of their fields' values, in the order declared here, without the fields' names. A
record shaped like bench/load.py's production request is 557 bytes on the wire instead of 1,210, and encodes in
0.55 µs instead of 2.0 (in the serving process; decoding, 2.5 against 2.8 µs): the workers' backlog to the
telemetry process holds twice the records. The order is the wire format between a worker and its telemetry
process, which always run the same code: a new field goes last, with a default.

`gc=False`: the cycle collector never tracks them. They hold plain data (strings, numbers, JSON-like dicts and
lists, other records), which cannot form a reference cycle. A telemetry process holds tens of thousands of
records in its queues; with them tracked, it spent about 10% of its CPU in collections at saturation (a full
collection took ~70 ms), about 4% without.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Usage(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Token counts as the upstream reported them, normalised to OpenAI's meaning.

    `prompt_tokens` includes cached and cache-write tokens; `completion_tokens` includes reasoning tokens.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    reported_cost_usd: str | None = None  # an upstream's own figure (OpenRouter's usage.cost), as text
    # What changes the price beyond the counts above, when the upstream reports it (costs price each apart):
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens written for one hour (Anthropic's 1h TTL)
    input_audio_tokens: int = 0  # the audio part of prompt_tokens
    output_audio_tokens: int = 0  # the audio part of completion_tokens
    web_searches: int = 0  # server-side web searches the answer made (billed per search)
    service_tier: str | None = None  # the tier that served it (OpenAI: default, flex, priority; Anthropic: ...)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def anthropic_extras(self) -> dict[str, Any]:
        """What OpenAI's usage has no field for, as Anthropic names it, for an OpenAI-shaped usage object (chat,
        Responses) that describes an Anthropic answer: one-hour cache writes and web searches, only when non-zero.
        `from_openai` reads them back."""
        out: dict[str, Any] = {}
        if self.cache_write_1h_tokens:
            out["cache_creation"] = {
                "ephemeral_5m_input_tokens": self.cache_write_tokens - self.cache_write_1h_tokens,
                "ephemeral_1h_input_tokens": self.cache_write_1h_tokens,
            }
        if self.web_searches:
            out["server_tool_use"] = {"web_search_requests": self.web_searches}
        return out

    @classmethod
    def from_openai(cls, u: dict[str, Any], service_tier: Any = None) -> Usage:
        """An OpenAI-shaped usage object (chat and legacy completions, embeddings: OpenAI, OpenRouter and the other
        OpenAI-compatible servers) as `Usage`. `service_tier` is the answer's top-level field: OpenAI reports the tier
        beside usage, not in it.

        Read besides OpenAI's own fields: `prompt_tokens_details.cache_write_tokens` (OpenRouter's), and the two
        Anthropic objects an OpenAI-shaped usage carries when it describes an Anthropic answer (relaycast's own
        translation does): `cache_creation.ephemeral_1h_input_tokens`, `server_tool_use.web_search_requests`.
        """
        pd = u.get("prompt_tokens_details") or {}
        cd = u.get("completion_tokens_details") or {}
        cc = u.get("cache_creation")
        st = u.get("server_tool_use")
        cost = u.get("cost")
        write_1h = int(cc.get("ephemeral_1h_input_tokens") or 0) if isinstance(cc, dict) else 0
        return cls(
            prompt_tokens=int(u.get("prompt_tokens") or 0),
            completion_tokens=int(u.get("completion_tokens") or 0),
            cached_tokens=int(pd.get("cached_tokens") or 0),
            # the 1h part is never more than the whole, whatever an upstream says
            cache_write_tokens=max(write_1h, int(pd.get("cache_write_tokens") or pd.get("cache_creation_tokens") or 0)),
            reasoning_tokens=int(cd.get("reasoning_tokens") or 0),
            reported_cost_usd=None if cost is None else str(cost),
            cache_write_1h_tokens=write_1h,
            input_audio_tokens=int(pd.get("audio_tokens") or 0),
            output_audio_tokens=int(cd.get("audio_tokens") or 0),
            web_searches=int(st.get("web_search_requests") or 0) if isinstance(st, dict) else 0,
            service_tier=service_tier[:64] if isinstance(service_tier, str) and service_tier else None,
        )


class Attribution(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Who and what a request is for. Travels on every record and span."""

    user: str | None = None
    session_id: str | None = None
    feature: str | None = None  # X-Title, or a relaycast header
    app_url: str | None = None  # HTTP-Referer
    key_name: str | None = None
    trace: dict[str, Any] | None = None
    tags: tuple[
        tuple[str, str], ...
    ] = ()  # free-form, from the X-Relaycast-Tags header  # OpenRouter-style `trace` metadata, as the client sent it


class Attempt(msgspec.Struct, frozen=True, gc=False, array_like=True):
    target: str  # "openai/gpt-4o-mini"
    provider: str
    model: str
    started_ns: int  # monotonic offset from the request's start
    duration_ns: int
    ttft_ns: int | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    upstream_status: int | None = None
    cost_pusd: int | None = None  # pico-dollars; None when unpriced (see relaycast.costs)
    cost_source: str = "none"  # computed | reported | estimated | unpriced | none (not billed)
    vendor: str = ""  # who made the model, by the GenAI conventions' names (providers.presets.vendor)
    cost_input_pusd: int | None = None  # the input part of cost_pusd (the output part is the rest); see costs
    response_model: str | None = None  # the model the upstream says answered (it may name a dated version)
    response_id: str | None = None  # the upstream's id of its answer
    cost_note: str | None = None  # why the cost is not exact: what was estimated, or why it is unpriced

    @property
    def ok(self) -> bool:
        return self.error_class is None


class RequestRecord(msgspec.Struct, frozen=True, gc=False, array_like=True):
    request_id: str  # made by the gateway, unique: the record's key in the store and every export
    endpoint: str  # "chat.completions" | "embeddings" | "models" | "unknown" (another /v1 path)
    model_requested: str
    stream: bool
    started_unix_ns: int
    duration_ns: int
    status_code: int
    attribution: Attribution
    attempts: tuple[Attempt, ...] = ()
    error_class: str | None = None
    error_message: str | None = None
    params: dict[str, Any] = {}  # request parameters, as metadata (an empty dict per record)
    input_messages: tuple[dict[str, Any], ...] = ()
    output_text: str | None = None
    client_cancelled: bool = False
    client_request_id: str | None = None  # the client's x-request-id: an attribute only; `request_id` is ours
    # The serving attempt's tool calls: {"id", "name", "arguments" (JSON text)}, at most 128, arguments bounded.
    output_tool_calls: tuple[dict[str, str], ...] = ()

    @property
    def final_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def cost(self) -> tuple[int | None, str]:
        """(pico-dollars, source) of the whole request: the sum of its attempts; None if any billed attempt is
        unpriced (an unknown cost is never shown as a smaller known one). The source is the least certain one:
        unpriced > estimated > reported > computed > none."""
        source = "none"
        total = 0
        for a in self.attempts:
            if COST_RANK[a.cost_source] > COST_RANK[source]:
                source = a.cost_source
            if a.cost_pusd is not None:
                total += a.cost_pusd
        return (None if source == "unpriced" else total), source

    def all_tags(self) -> dict[str, str]:
        """Free-form tags: scalar `trace` metadata (ids and names excluded), then the header's tags, which win."""
        out: dict[str, str] = {}
        for k, v in (self.attribution.trace or {}).items():
            if k in TRACE_ID_KEYS or v is None or not isinstance(v, (str, int, float, bool)):
                continue
            out[str(k)[:100]] = ("true" if v else "false") if isinstance(v, bool) else str(v)[:200]
        out.update(self.attribution.tags)
        return out


COST_RANK = {"unpriced": 4, "estimated": 3, "reported": 2, "computed": 1, "none": 0}
TRACE_ID_KEYS = frozenset({"trace_id", "trace_name", "span_name", "generation_name", "parent_span_id"})


def content_text(content: Any) -> str:
    """Message content as text: strings as they are, text parts joined, other parts named."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                if isinstance(p.get("text"), str):
                    parts.append(p["text"])
                elif p.get("type"):
                    parts.append(f"[{p['type']}]")
        return "\n".join(parts)
    return ""

"""The columns of the provider contract matrix: for each adapter, one recorded reply per capability and what the
adapter must make of it. Adding an adapter is adding a column here and its fixtures under tests/fixtures/<name>/.

The capabilities (the rows) and their checks are in test_provider_matrix.py; every column covers all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relaycast import errors
from relaycast.records import Usage
from tests.contract.replay import Reply


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """A completion as the client must see it (OpenAI's format), and what the gateway must learn from it."""

    text: str | None
    finish_reason: str
    usage: Usage
    reasoning: str | None = None  # reasoning_content, for upstreams that send their thinking
    calls: tuple[Call, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """The classified error the adapter must raise."""

    error: type[errors.RelaycastError]
    upstream_status: int | None
    retry_after: float | None = None
    partial_text: str = ""  # streams: the text handed out before the failure


@dataclass(frozen=True, slots=True)
class Embedded:
    vectors: int
    usage: Usage


@dataclass(frozen=True, slots=True)
class Cell:
    reply: Reply | None  # None: the adapter must answer without calling the upstream
    expect: Answer | Failure | Embedded
    xfail: str | None = None  # a known adapter bug: the cell fails until it is fixed


@dataclass(frozen=True, slots=True)
class Column:
    name: str  # the fixture directory
    kind: str  # the provider preset the adapter is configured with
    chat_path: str
    auth_header: str
    auth_value: str
    model: str
    cells: Mapping[str, Cell] = field(default_factory=dict)


KEY = "sk-test-contract-0123456789abcdef"

# --- OpenAI-compatible ----------------------------------------------------------------------------

OPENAI_STREAM_USAGE = Usage(prompt_tokens=1117, completion_tokens=31, cached_tokens=1024, service_tier="default")
WEATHER_LISBON = Call("call_RCfixtureLisbon", "get_weather", {"city": "Lisbon", "unit": "celsius"})
WEATHER_PORTO = Call("call_RCfixturePorto", "get_weather", {"city": "Porto", "unit": "celsius"})

OPENAI = Column(
    name="openai",
    kind="openai",
    chat_path="/v1/chat/completions",
    auth_header="authorization",
    auth_value=f"Bearer {KEY}",
    model="gpt-4o-mini",
    cells={
        "chat_text": Cell(
            Reply("chat_text_reasoning_cached.json", headers=(("x-request-id", "req_RCfixture"),)),
            Answer(
                "Lisbon: 21C and sunny. Porto: 18C and cloudy.",
                "stop",
                Usage(
                    prompt_tokens=1117,
                    completion_tokens=212,
                    cached_tokens=1024,
                    reasoning_tokens=192,
                    service_tier="default",
                ),
            ),
        ),
        "chat_tool_calls": Cell(
            Reply("chat_tool_calls.json"),
            Answer(
                None,
                "tool_calls",
                Usage(prompt_tokens=82, completion_tokens=51, service_tier="default"),
                calls=(WEATHER_LISBON, WEATHER_PORTO),
            ),
        ),
        "stream_text": Cell(Reply("stream_text.sse"), Answer("Checking the weather.", "stop", OPENAI_STREAM_USAGE)),
        "stream_tool_calls": Cell(
            Reply("stream_tool_calls.sse"),
            Answer(
                None,
                "tool_calls",
                Usage(prompt_tokens=64, completion_tokens=17, service_tier="default"),
                calls=(Call("call_RCfixtureStreamTool", "get_weather", {"city": "Lisbon"}),),
            ),
        ),
        "error_auth_401": Cell(Reply("error_invalid_api_key_401.json", 401), Failure(errors.UpstreamAuth, 401)),
        "error_auth_403": Cell(Reply("error_unsupported_region_403.json", 403), Failure(errors.UpstreamAuth, 403)),
        "error_bad_request": Cell(Reply("error_invalid_type_400.json", 400), Failure(errors.UpstreamBadRequest, 400)),
        "error_context_length": Cell(Reply("error_context_length_400.json", 400), Failure(errors.ContextLength, 400)),
        "error_content_policy": Cell(Reply("error_invalid_prompt_400.json", 400), Failure(errors.ContentPolicy, 400)),
        "error_not_found": Cell(Reply("error_model_not_found_404.json", 404), Failure(errors.UpstreamNotFound, 404)),
        "error_rate_limit": Cell(
            Reply(
                "error_rate_limit_429.json",
                429,
                (
                    ("retry-after", "20"),
                    ("x-ratelimit-limit-tokens", "200000"),
                    ("x-ratelimit-remaining-tokens", "979"),
                    ("x-ratelimit-reset-tokens", "375ms"),
                ),
            ),
            Failure(errors.RateLimited, 429, retry_after=20.0),
        ),
        # OpenAI's overload answer is a plain 503: an upstream 5xx (retried with backoff), not Anthropic's 529.
        "error_overloaded": Cell(Reply("error_overloaded_503.json", 503), Failure(errors.Upstream5xx, 503)),
        "error_upstream_5xx": Cell(Reply("error_server_500.json", 500), Failure(errors.Upstream5xx, 500)),
        "stream_error_event": Cell(
            Reply("stream_error_server.sse", one_write=True),
            Failure(errors.Upstream5xx, 502, partial_text="Checking"),
        ),
        "stream_cut": Cell(
            Reply("stream_text.sse", cut_after=3), Failure(errors.StreamCut, None, partial_text="Checking the")
        ),
        "malformed_body": Cell(Reply("chat_truncated.json"), Failure(errors.MalformedResponse, None)),
        "malformed_stream": Cell(
            Reply("stream_malformed.sse", one_write=True),
            Failure(errors.MalformedResponse, None, partial_text="Checking"),
        ),
        "embeddings": Cell(Reply("embeddings.json"), Embedded(2, Usage(prompt_tokens=9))),
    },
)


# --- Anthropic Messages API -----------------------------------------------------------------------

ANTHROPIC_REQUEST_ID = (("request-id", "req_01RCfixture"),)

ANTHROPIC = Column(
    name="anthropic",
    kind="anthropic",
    chat_path="/v1/messages",
    auth_header="x-api-key",
    auth_value=KEY,
    model="claude-sonnet-4-20250514",
    cells={
        "chat_text": Cell(
            Reply("message_text_thinking.json", headers=ANTHROPIC_REQUEST_ID),
            Answer(
                "Lisbon: 21C and sunny. Porto: 18C and cloudy.",
                "stop",
                Usage(prompt_tokens=1117, completion_tokens=212, cached_tokens=1024, service_tier="standard"),
                reasoning="Both cities are on the Atlantic coast; Lisbon is warmer.",
            ),
        ),
        "chat_tool_calls": Cell(
            Reply("message_text_tool_cache.json"),
            Answer(
                "I'll check the forecast for Lisbon. One moment.",
                "tool_calls",
                Usage(
                    prompt_tokens=1542,
                    completion_tokens=57,
                    cached_tokens=1200,
                    cache_write_tokens=300,
                    service_tier="standard",
                ),
                calls=(Call("toolu_01RCfixtureWeather", "get_weather", {"city": "Lisbon", "unit": "celsius"}),),
            ),
        ),
        "stream_text": Cell(
            Reply("stream_text_thinking.sse"),
            Answer(
                "Checking the weather.",
                "stop",
                Usage(prompt_tokens=1117, completion_tokens=31, cached_tokens=1024),
                reasoning="Lisbon is on the coast.",
            ),
        ),
        "stream_tool_calls": Cell(
            Reply("stream_text_tool.sse"),
            Answer(
                "Checking the weather.",
                "tool_calls",
                Usage(prompt_tokens=125, completion_tokens=31, cached_tokens=100),
                calls=(Call("toolu_01RCfixtureStreamTool", "get_weather", {"city": "Lisbon"}),),
            ),
        ),
        "error_auth_401": Cell(Reply("error_authentication_401.json", 401), Failure(errors.UpstreamAuth, 401)),
        "error_auth_403": Cell(Reply("error_permission_403.json", 403), Failure(errors.UpstreamAuth, 403)),
        "error_bad_request": Cell(
            Reply("error_invalid_request_400.json", 400), Failure(errors.UpstreamBadRequest, 400)
        ),
        "error_context_length": Cell(Reply("error_prompt_too_long_400.json", 400), Failure(errors.ContextLength, 400)),
        "error_content_policy": Cell(Reply("error_content_filter_400.json", 400), Failure(errors.ContentPolicy, 400)),
        "error_not_found": Cell(Reply("error_not_found_404.json", 404), Failure(errors.UpstreamNotFound, 404)),
        "error_rate_limit": Cell(
            Reply(
                "error_rate_limit_429.json",
                429,
                (
                    ("retry-after", "12"),
                    ("anthropic-ratelimit-input-tokens-limit", "40000"),
                    ("anthropic-ratelimit-input-tokens-remaining", "0"),
                    *ANTHROPIC_REQUEST_ID,
                ),
            ),
            Failure(errors.RateLimited, 429, retry_after=12.0),
        ),
        "error_overloaded": Cell(
            Reply("error_overloaded_529.json", 529, ANTHROPIC_REQUEST_ID), Failure(errors.Overloaded, 529)
        ),
        "error_upstream_5xx": Cell(Reply("error_api_500.json", 500), Failure(errors.Upstream5xx, 500)),
        "stream_error_event": Cell(
            Reply("stream_error_overloaded.sse", one_write=True),
            Failure(errors.Overloaded, 529, partial_text="Checking"),
        ),
        "stream_cut": Cell(
            Reply("stream_text_thinking.sse", cut_after=9), Failure(errors.StreamCut, None, partial_text="Checking the")
        ),
        "malformed_body": Cell(Reply("message_truncated.json"), Failure(errors.MalformedResponse, None)),
        "malformed_stream": Cell(
            Reply("stream_malformed.sse", one_write=True),
            Failure(errors.MalformedResponse, None, partial_text="Checking"),
        ),
        "embeddings": Cell(None, Failure(errors.NotSupported, None)),
    },
)

COLUMNS = (OPENAI, ANTHROPIC)

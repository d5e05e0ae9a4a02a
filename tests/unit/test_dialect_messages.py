"""The Anthropic Messages dialect: requests to chat bodies, chat answers and chunks back to Anthropic's wire format,
checked field by field and parsed with the official `anthropic` SDK."""

from __future__ import annotations

import importlib
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from relaycast.dialects.messages import MessagesStream, error_body, error_type, message, stop_reason
from relaycast.dialects.messages_request import chat_body
from relaycast.errors import InvalidRequest
from relaycast.records import Usage

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
PNG = "iVBORw0KGgo="
PDF = "JVBERi0xLjQK"


def base(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return body


# --- request ------------------------------------------------------------------------------------


def test_minimal_request() -> None:
    chat, reason = chat_body(base())
    assert reason is None
    assert chat == {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def test_system_string_and_blocks() -> None:
    chat, _ = chat_body(base(system="be brief"))
    assert chat["messages"][0] == {"role": "system", "content": "be brief"}
    chat, _ = chat_body(base(system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]))
    assert chat["messages"][0] == {"role": "system", "content": "a\n\nb"}
    cc = {"type": "ephemeral"}
    chat, _ = chat_body(
        base(system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": cc}])
    )
    assert chat["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": cc}],
    }
    assert chat["messages"][1] == {"role": "user", "content": "hi"}


def test_user_media_blocks() -> None:
    content = [
        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
        {
            "type": "document",
            "title": "r.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
    ]
    chat, reason = chat_body(base(messages=[{"role": "user", "content": content}]))
    assert reason is None
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                {"type": "file", "file": {"filename": "r.pdf", "file_data": f"data:application/pdf;base64,{PDF}"}},
                {"type": "text", "text": "plain doc"},
            ],
        }
    ]


def test_tool_round_trip_conversation() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xx"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and hurry"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "noon"}]},
            ],
        },
    ]
    chat, reason = chat_body(base(messages=messages))
    assert reason is None
    assert chat["messages"] == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "noon"},
        {"role": "user", "content": [{"type": "text", "text": "and hurry"}]},
    ]


def test_tool_results_alone_make_no_user_message_and_tool_use_only_has_null_content() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
    ]
    chat, _ = chat_body(base(messages=messages))
    assert chat["messages"][1]["content"] is None
    assert chat["messages"][2:] == [{"role": "tool", "tool_call_id": "t", "content": ""}]


def test_parameters() -> None:
    chat, reason = chat_body(
        base(
            stop_sequences=["END"],
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stream=True,
            metadata={"user_id": "u-1"},
            thinking={"type": "enabled", "budget_tokens": 8000},
            service_tier="auto",
        )
    )
    assert reason is None
    assert chat["stop"] == ["END"]
    assert (chat["temperature"], chat["top_p"], chat["top_k"]) == (0.5, 0.9, 40)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["user"] == "u-1"
    assert chat["reasoning_effort"] == "medium"
    assert "service_tier" not in chat


@pytest.mark.parametrize(("budget", "effort"), [(1024, "low"), (4095, "low"), (4096, "medium"), (16384, "high")])
def test_thinking_budget_to_effort(budget: int, effort: str) -> None:
    chat, _ = chat_body(base(thinking={"type": "enabled", "budget_tokens": budget}))
    assert chat["reasoning_effort"] == effort


def test_thinking_disabled_adds_nothing() -> None:
    chat, _ = chat_body(base(thinking={"type": "disabled"}))
    assert "reasoning_effort" not in chat


def test_tools_and_tool_choice() -> None:
    tools = [
        {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}},
        {"type": "custom", "name": "f", "input_schema": {"type": "object"}},
    ]
    chat, reason = chat_body(base(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}))
    assert reason is None
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {}},
            },
        },
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
    ]
    assert chat["tool_choice"] == "required"
    assert chat["parallel_tool_calls"] is False
    for choice, expected in [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ]:
        chat, _ = chat_body(base(tools=tools, tool_choice=choice))
        assert chat["tool_choice"] == expected
        assert "parallel_tool_calls" not in chat


def test_output_format_to_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    expected = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    chat, _ = chat_body(base(output_format={"type": "json_schema", "schema": schema}))
    assert chat["response_format"] == expected
    chat, _ = chat_body(base(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "max"}))
    assert chat["response_format"] == expected
    assert chat["reasoning_effort"] == "high"


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search_20250305"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "bash_20250124"),
        ({"mcp_servers": [{"type": "url", "url": "https://m.test", "name": "m"}]}, "mcp_servers"),
        ({"container": "c-1"}, "container"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "document", "source": {"type": "file", "file_id": "f"}}]}
                ]
            },
            "file id",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
                ]
            },
            "file id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}}
                                ],
                            }
                        ],
                    }
                ]
            },
            "image",
        ),
    ],
)
def test_untranslatable_requests_say_why(kw: dict[str, Any], word: str) -> None:
    _, reason = chat_body(base(**kw))
    assert reason is not None and word in reason


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"model": None}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "bogus"}]}]}, "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": 1}]}
                ]
            },
            "messages[0].content[0].input",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0].source",
        ),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"system": [{"type": "image"}]}, "system[0]"),
        ({"output_format": {"type": "json_schema"}}, "output_format.schema"),
    ],
)
def test_invalid_requests_name_the_field(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        chat_body(base(**kw))
    assert exc.value.param == param


def test_count_tokens_body() -> None:
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    chat, reason = chat_body(body, for_count=True)
    assert reason is None
    assert chat == {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(InvalidRequest):
        chat_body({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]})


def test_a_request_made_by_the_sdk() -> None:
    """What `anthropic.messages.create` really sends is accepted and mapped."""
    sent: list[dict[str, Any]] = []
    answer = message(_chat_completion("ok"), "msg_1", "claude-x")

    def handler(request: Any) -> Any:
        sent.append(orjson.loads(request.content))
        return _http().Response(200, json=answer)

    client = _client(handler)
    got = client.messages.create(
        model="claude-x",
        max_tokens=50,
        system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        tools=[{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "tool", "name": "f"},
    )
    assert got.content[0].type == "text" and got.content[0].text == "ok"
    chat, reason = chat_body(sent[0])
    assert reason is None
    assert chat["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}


# --- response -----------------------------------------------------------------------------------


def _chat_completion(content: str | None, **message_extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, **message_extra},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def test_message_text() -> None:
    msg = message(_chat_completion("Hello"), "msg_1", "claude-x")
    parsed = Message.model_validate(msg)
    assert parsed.id == "msg_1" and parsed.model == "claude-x" and parsed.role == "assistant"
    assert [b.type for b in parsed.content] == ["text"]
    assert msg["content"][0] == {"type": "text", "text": "Hello"}
    assert parsed.stop_reason == "end_turn" and parsed.stop_sequence is None
    assert msg["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_message_reasoning_tools_and_cache_usage() -> None:
    chat = _chat_completion(
        "",
        reasoning_content="thinking hard",
        tool_calls=[
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"q": "fox"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{not json"}},
        ],
    )
    chat["choices"][0]["finish_reason"] = "tool_calls"
    chat["usage"] = {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
    }
    msg = message(chat, "msg_2", "claude-x")
    parsed = Message.model_validate(msg)
    assert msg["content"] == [
        {"type": "thinking", "thinking": "thinking hard", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"q": "fox"}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
    ]
    assert parsed.stop_reason == "tool_use"
    assert msg["usage"] == {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 60,
    }


def test_message_reasoning_field_and_refusal() -> None:
    chat = _chat_completion(None, reasoning="why", refusal="I can't")
    chat["choices"][0]["finish_reason"] = "content_filter"
    msg = message(chat, "m", "claude-x")
    Message.model_validate(msg)
    assert msg["content"] == [
        {"type": "thinking", "thinking": "why", "signature": ""},
        {"type": "text", "text": "I can't"},
    ]
    assert msg["stop_reason"] == "refusal"


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stop_reason(finish: str | None, reason: str) -> None:
    assert stop_reason(finish) == reason


# --- stream -------------------------------------------------------------------------------------


def _chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    chunk: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}
    chunk["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in raw.split(b"\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        data = orjson.loads(data_line[6:])
        assert data["type"] == event_line[7:].decode()
        out.append((data["type"], data))
    return out


USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 12,
    "total_tokens": 62,
    "prompt_tokens_details": {"cached_tokens": 20},
}


def _tool_stream() -> list[dict[str, Any]]:
    return [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"reasoning_content": "Plan: "}),
        _chunk({"reasoning_content": "call f."}),
        _chunk({"content": "Calling "}),
        _chunk({"content": "tools."}),
        _chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "fox"}'}}]}),
        _chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                ]
            }
        ),
        _chunk({}, finish="tool_calls"),
        _chunk(None, usage=USAGE),
    ]


def test_stream_event_order_and_shapes() -> None:
    s = MessagesStream("msg_s", "claude-x", input_tokens=42)
    raw = b"".join(s.feed(c) for c in _tool_stream()) + s.finish()
    events = _events(raw)
    for _, data in events:
        EVENTS.validate_python(data)
    kinds = [k for k, _ in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["id"] == "msg_s" and start["model"] == "claude-x" and start["content"] == []
    assert start["usage"]["input_tokens"] == 42
    starts = [d for k, d in events if k == "content_block_start"]
    stops = [d["index"] for k, d in events if k == "content_block_stop"]
    assert [(d["index"], d["content_block"]["type"]) for d in starts] == [
        (0, "thinking"),
        (1, "text"),
        (2, "tool_use"),
        (3, "tool_use"),
    ]
    assert stops == [0, 1, 2, 3]
    assert starts[2]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "f", "input": {}}
    # every delta goes to the block opened last, between its start and stop
    open_index = None
    for k, d in events:
        if k == "content_block_start":
            open_index = d["index"]
        elif k == "content_block_delta":
            assert d["index"] == open_index
        elif k == "content_block_stop":
            assert d["index"] == open_index
            open_index = None
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == {
        "output_tokens": 12,
        "input_tokens": 30,
        "cache_read_input_tokens": 20,
        "cache_creation_input_tokens": 0,
    }
    assert s.usage == Usage(prompt_tokens=50, completion_tokens=12, cached_tokens=20)


def test_stream_through_the_sdk() -> None:
    s = MessagesStream("msg_s", "claude-x", input_tokens=42)
    raw = b"".join(s.feed(c) for c in _tool_stream()) + s.finish()
    client = _client(lambda request: _sse(raw))
    with client.messages.stream(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as st:
        final = st.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[0].type == "thinking" and final.content[0].thinking == "Plan: call f."
    assert final.content[1].type == "text" and final.content[1].text == "Calling tools."
    assert final.content[2].type == "tool_use" and final.content[2].input == {"q": "fox"}
    assert final.content[2].id == "call_a" and final.content[2].name == "f"
    assert final.content[3].type == "tool_use" and final.content[3].input == {} and final.content[3].name == "g"
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 12 and final.usage.input_tokens == 30
    assert final.usage.cache_read_input_tokens == 20


def test_stream_text_after_tool_call_opens_a_new_block() -> None:
    s = MessagesStream("m", "claude-x")
    raw = s.feed(_chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}))
    raw += s.feed(_chunk({"content": "done"}, finish="stop"))
    raw += s.finish()
    events = _events(raw)
    starts = [(d["index"], d["content_block"]["type"]) for k, d in events if k == "content_block_start"]
    assert starts == [(0, "tool_use"), (1, "text")]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == 0  # no usage seen
    assert s.usage is None


def test_stream_empty_answer_still_well_formed() -> None:
    s = MessagesStream("m", "claude-x", input_tokens=3)
    raw = s.finish()
    assert [k for k, _ in _events(raw)] == ["message_start", "message_delta", "message_stop"]
    assert s.finish() == b""


def test_stream_length_and_usage_in_the_last_choice_chunk() -> None:
    s = MessagesStream("m", "claude-x")
    raw = s.feed(_chunk({"content": "abc"}))
    last = _chunk({}, finish="length")
    last["usage"] = {"prompt_tokens": 4, "completion_tokens": 9}
    raw += s.feed(last) + s.finish()
    delta = _events(raw)[-2][1]
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"]["output_tokens"] == 9 and delta["usage"]["input_tokens"] == 4


def test_stream_error_event_and_no_message_stop() -> None:
    s = MessagesStream("m", "claude-x")
    raw = s.feed(_chunk({"content": "partial"})) + s.error("overloaded_error", "Overloaded")
    events = _events(raw)
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert "message_stop" not in [k for k, _ in events]
    assert s.finish() == b"" and s.feed(_chunk({"content": "more"})) == b""
    client = _client(lambda request: _sse(raw))
    with pytest.raises(anthropic.APIStatusError) as exc:
        with client.messages.stream(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as st:
            st.get_final_message()
    assert "Overloaded" in str(exc.value)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (422, "invalid_request_error"),
    ],
)
def test_error_type(status: int, kind: str) -> None:
    assert error_type(status) == kind


def test_error_body_parses_with_the_sdk() -> None:
    raw = error_body(429, "slow down", "req_1")
    assert orjson.loads(raw) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
        "request_id": "req_1",
    }
    parsed = ErrorResponse.model_validate_json(raw)
    assert parsed.error.type == "rate_limit_error" and parsed.request_id == "req_1"
    client = _client(lambda request: _http().Response(429, content=raw, headers={"content-type": "application/json"}))
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body == orjson.loads(raw)


# --- helpers: the SDK over an in-process transport --------------------------------------------------


def _http() -> Any:
    """The HTTP library the installed `anthropic` SDK is built on (httpx, or its successor)."""
    client_base = anthropic.DefaultHttpxClient.__mro__[1]
    return importlib.import_module(client_base.__module__.split(".")[0])


def _client(handler: Any) -> anthropic.Anthropic:
    http = _http()
    return anthropic.Anthropic(
        api_key="sk-test",
        base_url="http://relaycast.test",
        max_retries=0,
        http_client=http.Client(transport=http.MockTransport(handler)),
    )


def _sse(raw: bytes) -> Any:
    return _http().Response(200, content=raw, headers={"content-type": "text/event-stream"})

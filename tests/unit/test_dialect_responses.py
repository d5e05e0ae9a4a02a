"""The Responses API dialect: requests to chat, chat answers and streams back, checked against the official SDK."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import orjson
import pytest
from openai import omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from relaycast import errors
from relaycast.dialects import responses as rd
from relaycast.dialects import responses_request as rq
from relaycast.providers.base import StreamState
from relaycast.records import Usage
from relaycast.schema import chat_request
from relaycast.sse import EventSplitter

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
RID = "resp_abc123"


def events_of(raw: bytes) -> list[dict[str, Any]]:
    """Split SSE bytes; check each event's `event:` name matches its `type` and that the SDK parses it."""
    out = []
    for ev in EventSplitter().feed(raw):
        obj = orjson.loads(ev.data)
        assert ev.event == obj["type"]
        EVENTS.validate_python(obj)
        out.append(obj)
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m-1", "choices": choices, **extra}


USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 7,
    "total_tokens": 19,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 3},
}


# --- request ---------------------------------------------------------------------------------------


def test_string_input_with_instructions_and_history() -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    body = {"model": "gpt-x", "instructions": "Be brief.", "input": "and now?"}
    chat, why = rq.chat_body(body, history)
    assert why is None
    assert chat == {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and now?"},
        ],
    }
    chat_request(chat, {})  # the gateway's own chat validation accepts it


def test_items_map_to_chat_messages() -> None:
    body = {
        "model": "gpt-x",
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/img.png", "detail": "high"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,AAA", "filename": "a.pdf"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'},
            {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "one"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "two"}]},
            {"type": "function_call", "call_id": "call_3", "name": "f", "arguments": "{}"},
        ],
    }
    chat, why = rq.chat_body(body)
    assert why is None
    assert chat["messages"] == [
        {"role": "developer", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/img.png", "detail": "high"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAA", "filename": "a.pdf"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_3", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
    ]
    chat_request(chat, {})


def test_parameters_tools_and_formats() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
    body = {
        "model": "gpt-x",
        "input": "q",
        "tools": [
            {"type": "function", "name": "f", "description": "does f", "parameters": schema, "strict": True},
            {"type": "function", "name": "g"},
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True},
            "verbosity": "low",
        },
        "reasoning": {"effort": "low", "summary": "auto"},
        "max_output_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "safety_identifier": "u-1",
        "top_logprobs": 2,
        "stream": True,
        "store": True,
        "previous_response_id": "resp_old",
        "metadata": {"k": "v"},
        "truncation": "auto",
        "include": ["reasoning.encrypted_content"],
        "service_tier": "auto",
        "prompt_cache_key": "k",
    }
    chat, why = rq.chat_body(body)
    assert why is None
    assert chat == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "q"}],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "description": "does f", "parameters": schema, "strict": True},
            },
            {"type": "function", "function": {"name": "g"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
        "reasoning_effort": "low",
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "logprobs": True,
        "top_logprobs": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    req = chat_request(chat, {})
    assert req.stream and req.include_usage


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [({"type": "text"}, None), ({"type": "json_object"}, {"type": "json_object"})],
)
def test_text_formats(fmt: dict[str, Any], expected: dict[str, Any] | None) -> None:
    chat, _ = rq.chat_body({"model": "m", "input": "q", "text": {"format": fmt}})
    assert chat.get("response_format") == expected


def test_user_wins_over_safety_identifier() -> None:
    chat, _ = rq.chat_body({"model": "m", "input": "q", "user": "a", "safety_identifier": "b"})
    assert chat["user"] == "a"


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "file_search"),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "allowed_tools"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "web_search_call"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, "file_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]}, "file"),
    ],
)
def test_untranslatable(patch: dict[str, Any], words: str) -> None:
    chat, why = rq.chat_body({"model": "m", "input": "q", **patch})
    assert why is not None and words in why
    assert chat["model"] == "m"


@pytest.mark.parametrize(
    ("patch", "param"), [({"background": True}, "background"), ({"conversation": "c"}, "conversation")]
)
def test_refused_outright(patch: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.NotSupported) as e:
        rq.chat_body({"model": "m", "input": "q", **patch})
    assert e.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "q"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": ["x"]}, "input[0]"),
        (
            {"model": "m", "input": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]},
            "input[1].role",
        ),
        ({"model": "m", "input": [{"role": "user", "content": [{"text": "a"}]}]}, "input[0].content[0]"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0]"),
        ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"model": "m", "input": "q", "instructions": ["x"]}, "instructions"),
        ({"model": "m", "input": "q", "tools": {}}, "tools"),
        ({"model": "m", "input": "q", "tools": [{"type": "function"}]}, "tools[0].name"),
        (
            {"model": "m", "input": "q", "tools": [{"type": "function", "name": "f", "parameters": "x"}]},
            "tools[0].parameters",
        ),
        ({"model": "m", "input": "q", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "q", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
        ({"model": "m", "input": "q", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "m", "input": "q", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "q", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "q", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "q", "reasoning": {"effort": 3}}, "reasoning.effort"),
    ],
)
def test_invalid_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.InvalidRequest) as e:
        rq.chat_body(body)
    assert e.value.param == param


def test_a_long_run_of_calls_joins_one_assistant_message() -> None:
    n = 20_000
    items: list[dict[str, Any]] = []
    for i in range(n):
        items.append({"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"})
    chat, _ = rq.chat_body({"model": "m", "input": items})
    assert len(chat["messages"]) == 1 and len(chat["messages"][0]["tool_calls"]) == n


# --- response --------------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or USAGE,
    }


def test_response_with_text_reasoning_and_usage() -> None:
    body = {"model": "m", "input": "q", "instructions": "sys", "max_output_tokens": 50, "metadata": {"a": "b"}}
    chat = completion({"content": "The answer.", "reasoning_content": "thinking..."})
    out = rd.response(chat, body, RID, 1700000000)
    r = Response.model_validate(out)
    assert r.output_text == "The answer."
    assert r.id == RID and r.model == "m-2024" and r.status == "completed" and r.created_at == 1700000000
    assert r.instructions == "sys" and r.max_output_tokens == 50 and r.metadata == {"a": "b"}
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert out["output"][0] == {
        "id": "rs_abc123",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "thinking..."}],
        "status": "completed",
    }
    assert out["output"][1]["id"] == "msg_abc123"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (12, 7, 19)
    assert r.usage.input_tokens_details.cached_tokens == 4
    assert r.usage.output_tokens_details.reasoning_tokens == 3
    assert rd.usage_of(out["usage"]) == Usage(
        prompt_tokens=12, completion_tokens=7, cached_tokens=4, reasoning_tokens=3
    )


def test_response_with_tool_calls() -> None:
    tools = [{"type": "function", "name": "get", "parameters": {"type": "object"}, "strict": False}]
    body = {"model": "m", "input": "q", "tools": tools, "tool_choice": "required"}
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": '{"x":1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get", "arguments": '{"x":2}'}},
    ]
    out = rd.response(completion({"content": None, "tool_calls": calls}, "tool_calls"), body, RID, 1)
    r = Response.model_validate(out)
    assert r.output_text == ""
    assert out["output"] == [
        {
            "id": "fc_abc123_0",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_a",
            "name": "get",
            "arguments": '{"x":1}',
        },
        {
            "id": "fc_abc123_1",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_b",
            "name": "get",
            "arguments": '{"x":2}',
        },
    ]
    assert out["tools"] == tools and out["tool_choice"] == "required" and r.status == "completed"


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_response_incomplete(finish: str, reason: str) -> None:
    r = Response.model_validate(rd.response(completion({"content": "cut"}, finish), {"model": "m"}, RID, 1))
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == reason
    assert r.output_text == "cut"


def test_response_refusal_and_json_schema_format() -> None:
    fmt = {"type": "json_schema", "name": "o", "schema": {"type": "object"}, "strict": True}
    body = {"model": "m", "input": "q", "text": {"format": fmt}}
    out = rd.response(completion({"content": None, "refusal": "I can't."}), body, RID, 1)
    r = Response.model_validate(out)
    assert out["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]
    assert out["text"]["format"] == fmt and r.text is not None


def test_output_messages_round_trip_into_history() -> None:
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get", "arguments": "{}"}}]
    out = rd.response(
        completion({"content": "Checking.", "reasoning": "hmm", "tool_calls": calls}), {"model": "m"}, RID, 1
    )
    msgs = rd.output_messages(out)
    assert msgs == [{"role": "assistant", "content": "Checking.", "tool_calls": calls}]
    chat, why = rq.chat_body(
        {"model": "m", "input": [{"type": "function_call_output", "call_id": "call_a", "output": "ok"}]}, msgs
    )
    assert why is None
    chat_request(chat, {})
    assert chat["messages"][-1] == {"role": "tool", "tool_call_id": "call_a", "content": "ok"}


def test_output_messages_of_a_native_response() -> None:
    native = {
        "output": [
            {"id": "rs_1", "type": "reasoning", "summary": []},
            {"id": "ws_1", "type": "web_search_call", "status": "completed"},
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Hi ", "annotations": []},
                    {"type": "output_text", "text": "there"},
                ],
            },
        ]
    }
    assert rd.output_messages(native) == [{"role": "assistant", "content": "Hi there"}]
    assert rd.output_messages({"output": [{"type": "reasoning", "summary": []}]}) == []


# --- stream ----------------------------------------------------------------------------------------


def run_stream(
    chunks: list[dict[str, Any]], body: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], rd.ResponsesStream]:
    s = rd.ResponsesStream(body or {"model": "m", "input": "q", "stream": True}, RID, 1700000000)
    raw = s.start() + b"".join(s.feed(c) for c in chunks) + s.finish()
    evs = events_of(raw)
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    return evs, s


def sdk_final(evs: list[dict[str, Any]]) -> Any:
    """Feed the events to the SDK's own stream accumulator (what `responses.stream` does); its final response."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    last = None
    for e in evs:
        for out in state.handle_event(EVENTS.validate_python(e)):
            last = out
    return last


def test_stream_text_with_usage() -> None:
    evs, s = run_stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(None, usage=USAGE),
        ]
    )
    types = [e["type"] for e in evs]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert evs[0]["response"]["status"] == "in_progress" and evs[0]["response"]["output"] == []
    assert evs[4]["item_id"] == "msg_abc123" and evs[4]["delta"] == "Hel" and evs[4]["logprobs"] == []
    assert evs[6]["text"] == "Hello"
    final = Response.model_validate(evs[-1]["response"])
    assert final.output_text == "Hello" and final.status == "completed" and final.model == "m-1"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (12, 7)
    assert s.usage == Usage.from_openai(USAGE)
    assert s.final() == evs[-1]["response"]
    done = sdk_final(evs)
    assert done.type == "response.completed" and done.response.output_text == "Hello"


def test_stream_reasoning_then_text_then_tool_calls() -> None:
    evs, s = run_stream(
        [
            chunk({"role": "assistant", "reasoning_content": "Let me"}),
            chunk({"reasoning_content": " think."}),
            chunk({"content": "Calling."}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({}, "tool_calls"),
            chunk(None, usage=USAGE),
        ]
    )
    types = [e["type"] for e in evs]
    assert "response.reasoning_summary_text.delta" in types
    assert types.index("response.reasoning_summary_text.done") < types.index("response.content_part.added")
    arg_done = [e for e in evs if e["type"] == "response.function_call_arguments.done"]
    assert [(e["name"], e["arguments"]) for e in arg_done] == [("f", '{"x":1}'), ("g", "{}")]
    final = s.final()
    r = Response.model_validate(final)
    assert [o.type for o in r.output] == ["reasoning", "message", "function_call", "function_call"]
    assert r.output_text == "Calling."
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert [(o["call_id"], o["arguments"]) for o in final["output"][2:]] == [("call_a", '{"x":1}'), ("call_b", "{}")]
    added = [e["item"]["id"] for e in evs if e["type"] == "response.output_item.added"]
    finished = [e["item"]["id"] for e in evs if e["type"] == "response.output_item.done"]
    assert sorted(added) == sorted(finished) == sorted(o["id"] for o in final["output"])
    done = sdk_final(evs)
    assert done.response.output[2].arguments == '{"x":1}'


def test_stream_length_is_incomplete() -> None:
    evs, s = run_stream([chunk({"content": "cut"}), chunk({}, "length"), chunk(None, usage=USAGE)])
    assert evs[-1]["type"] == "response.incomplete"
    assert evs[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert s.final()["status"] == "incomplete"


def test_stream_refusal() -> None:
    evs, s = run_stream([chunk({"refusal": "No"}), chunk({"refusal": "pe."}), chunk({}, "stop")])
    types = [e["type"] for e in evs]
    assert "response.refusal.delta" in types
    assert [e["refusal"] for e in evs if e["type"] == "response.refusal.done"] == ["Nope."]
    assert s.final()["output"][0]["content"] == [{"type": "refusal", "refusal": "Nope."}]
    assert s.final()["usage"] is None


def test_stream_final_mid_stream_and_error() -> None:
    s = rd.ResponsesStream({"model": "m", "input": "q"}, RID, 1)
    events_of(s.start() + s.feed(chunk({"content": "partial"})))
    mid = s.final()
    assert mid["status"] == "in_progress"
    assert mid["output"][0]["content"][0]["text"] == "partial"
    Response.model_validate(mid)
    (err,) = events_of(s.error("stream_cut", "the upstream stream ended early"))
    assert err == {
        "type": "error",
        "code": "stream_cut",
        "message": "the upstream stream ended early",
        "param": None,
        "sequence_number": 5,
    }
    after = Response.model_validate(s.final())
    assert after.status == "failed" and after.error is not None and after.error.message.startswith("the upstream")


# --- native streams --------------------------------------------------------------------------------


def test_native_learner() -> None:
    state = StreamState()
    learn = rd.NativeLearner(state)
    assert learn.feed({"type": "response.created", "response": {}}) is None
    assert state.first_token_ns is None
    learn.feed({"type": "response.output_text.delta", "delta": "Hi", "item_id": "m", "output_index": 0})
    first = state.first_token_ns
    assert first is not None
    learn.feed({"type": "response.output_text.delta", "delta": " you"})
    assert state.first_token_ns == first and state.text == ["Hi", " you"]
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }
    out = [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]
    assert learn.feed({"type": "response.completed", "response": {"output": out, "usage": usage}}) is None
    assert state.done and state.finish_reason == "tool_calls"
    assert state.usage == Usage(prompt_tokens=10, completion_tokens=5, cached_tokens=6, reasoning_tokens=2)


@pytest.mark.parametrize(("reason", "finish"), [("max_output_tokens", "length"), ("content_filter", "content_filter")])
def test_native_learner_incomplete(reason: str, finish: str) -> None:
    state = StreamState()
    rd.NativeLearner(state).feed(
        {"type": "response.incomplete", "response": {"incomplete_details": {"reason": reason}}}
    )
    assert state.finish_reason == finish and state.done


def test_native_learner_errors() -> None:
    state = StreamState()
    learn = rd.NativeLearner(state)
    learn.feed({"type": "response.function_call_arguments.delta", "delta": "{"})
    assert state.first_token_ns is not None and state.text == []
    err = {"type": "error", "code": "server_error", "message": "boom", "param": None, "sequence_number": 3}
    assert learn.feed(err) == err
    failed = {"type": "response.failed", "response": {"error": {"code": "rate_limit_exceeded", "message": "slow"}}}
    assert learn.feed(failed) == {"code": "rate_limit_exceeded", "message": "slow"}
    assert not state.done


# --- the official client, end to end over a mock transport ------------------------------------------


def sdk_client(answer: Any) -> Any:
    """An OpenAI client whose `/responses` requests are answered by `answer(request body)` (a dict or SSE bytes)."""
    from openai import OpenAI

    # The client's HTTP library: httpx, or its fork httpx2 in recent SDKs.
    httpx = importlib.import_module("httpx2" if importlib.util.find_spec("httpx2") else "httpx")

    def handle(request: Any) -> Any:
        out = answer(orjson.loads(request.content))
        if isinstance(out, bytes):
            return httpx.Response(200, content=out, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=out)

    return OpenAI(
        api_key="k", base_url="http://gw.test/v1", http_client=httpx.Client(transport=httpx.MockTransport(handle))
    )


def test_sdk_parse_reads_a_translated_answer() -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        chat, why = rq.chat_body(body)
        assert why is None and chat["response_format"]["type"] == "json_schema"
        return rd.response(completion({"content": '{"name":"Oslo","population":700000}'}), body, RID, 1)

    parsed = sdk_client(answer).responses.parse(model="m", input="Oslo?", text_format=City)
    assert parsed.output_parsed == City(name="Oslo", population=700000)


def test_sdk_stream_reads_translated_events() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}, "strict": False}

    def answer(body: dict[str, Any]) -> bytes:
        chat, why = rq.chat_body(body)
        assert why is None and chat["stream"] is True
        s = rd.ResponsesStream(body, RID, 1)
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        chunks = [
            chunk({"content": "Hi"}),
            chunk({"tool_calls": [call]}),
            chunk({}, "tool_calls"),
            chunk(None, usage=USAGE),
        ]
        return s.start() + b"".join(s.feed(c) for c in chunks) + s.finish()

    with sdk_client(answer).responses.stream(model="m", input="q", tools=[tool]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hi"]
    assert final.output_text == "Hi"
    assert final.output[1].type == "function_call" and final.output[1].call_id == "call_1"
    assert final.usage is not None and final.usage.total_tokens == 19

"""The fake upstream's newer wire formats, checked with the official SDKs: the Responses API, chat `n` and
structured outputs, base64 embeddings, legacy completions and Anthropic's count_tokens / structured outputs."""

from __future__ import annotations

import base64
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Literal

import openai

try:
    import anthropic
except ImportError:  # not in the test extra yet: only these tests need it
    anthropic = None
import orjson
import pydantic
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response, ResponseStreamEvent

from relaycast.fake import json_schema, openai_wire
from relaycast.fake.server import FakeUpstream
from relaycast.server.runner import ThreadedServer

KEY = "sk-fake-wire-test-key-0123456789"
EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    s = ThreadedServer(FakeUpstream(api_key=KEY)).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def post(server: ThreadedServer, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(
        server.url + path,
        data=orjson.dumps(body),
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(req) as r:
        return bytes(r.read())


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


def words(n: int) -> str:
    return "".join(openai_wire.tokens(n))


# --- pydantic models for structured outputs ------------------------------------------------------------------------


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Part(pydantic.BaseModel):
    name: str
    count: int = pydantic.Field(ge=3)
    weight: float
    colour: Colour


class Order(pydantic.BaseModel):
    id: int
    customer: str
    paid: bool
    parts: list[Part] = pydantic.Field(min_length=2)
    note: str | None
    kind: Literal["retail", "wholesale"]
    tags: list[str]
    main: Part


class Tree(pydantic.BaseModel):
    label: str
    children: list[Tree]
    parent: Tree | None


# --- Responses API -------------------------------------------------------------------------------------------------


def test_responses_create_is_a_real_response(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-4o-mini@tokens=5", input="Hello there, fox!", instructions="Be brief.")
    assert isinstance(r, Response)
    Response.model_validate(r.model_dump())
    assert r.status == "completed" and r.object == "response" and r.model == "gpt-4o-mini"
    assert r.id.startswith("resp_")
    assert r.output_text == words(5)
    msg = r.output[0]
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed"
    assert r.instructions == "Be brief."
    assert r.usage is not None
    # counted as chat counts: one message of 17 chars -> 17 // 4 + 4, plus instructions 9 // 4
    assert r.usage.input_tokens == 17 // 4 + 4 + 9 // 4
    assert r.usage.output_tokens == 5 and r.usage.total_tokens == r.usage.input_tokens + 5


def test_responses_input_items_and_usage_details(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "user", "content": "abcdefgh"},
            {"role": "user", "content": [{"type": "input_text", "text": "abcd"}]},
        ],
        extra_headers={"x-fake-behaviour": "tokens=7;cached=3;reasoning=2;cost=0.25"},
    )
    assert r.usage is not None
    assert r.usage.input_tokens == 12 // 4 + 8
    assert r.usage.input_tokens_details.cached_tokens == 3
    assert r.usage.output_tokens_details.reasoning_tokens == 2
    assert r.usage.output_tokens == 7
    assert r.usage.model_dump()["cost"] == 0.25


def test_responses_tool_call(client: openai.OpenAI) -> None:
    tools: Any = [
        {"type": "web_search"},
        {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}, "strict": False},
    ]
    r = client.responses.create(model="gpt-4o-mini@tool_call", input="find it", tools=tools)
    call = r.output[0]
    assert call.type == "function_call"
    assert call.name == "lookup" and orjson.loads(call.arguments) == {"query": "fox"}
    assert call.call_id.startswith("call_") and call.id and call.id.startswith("fc_")
    assert r.tools[1].type == "function"


def test_responses_stream_events(client: openai.OpenAI) -> None:
    with client.responses.create(model="gpt-4o-mini@tokens=4,cached=1", input="hi", stream=True) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == words(4)
    created, done = events[0], events[-1]
    assert created.type == "response.created" and created.response.status == "in_progress"
    assert created.response.usage is None and created.response.output == []
    assert done.type == "response.completed" and done.response.output_text == words(4)
    assert done.response.usage is not None and done.response.usage.input_tokens_details.cached_tokens == 1
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {done.response.output[0].id}


def test_responses_stream_has_event_lines_matching_types(server: ThreadedServer) -> None:
    raw = post(server, "/v1/responses", {"model": "gpt-4o-mini@tokens=2", "input": "x", "stream": True})
    events = sse_events(raw)
    for name, data in events:
        assert name == data["type"]
        EVENTS.validate_python(data)
    assert events[-1][0] == "response.completed"


def test_raw_bodies_validate_against_the_sdk_types(server: ThreadedServer) -> None:
    """The SDK builds its objects without validation; validate the raw JSON strictly."""
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]
    text = Response.model_validate(orjson.loads(post(server, "/v1/responses", {"model": "m", "input": "x"})))
    assert text.output[0].type == "message" and text.output_text == words(16)
    body = {"model": "m@tool_call", "input": "x", "tools": tools}
    call = Response.model_validate(orjson.loads(post(server, "/v1/responses", body)))
    assert call.output[0].type == "function_call"
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}
    cc = ChatCompletion.model_validate(orjson.loads(post(server, "/v1/chat/completions", chat)))
    assert len(cc.choices) == 2
    legacy = Completion.model_validate(orjson.loads(post(server, "/v1/completions", {"model": "m", "prompt": "x"})))
    assert legacy.choices[0].text == words(16)
    emb = CreateEmbeddingResponse.model_validate(
        orjson.loads(post(server, "/v1/embeddings", {"model": "e", "input": "x"}))
    )
    assert len(emb.data[0].embedding) == 8  # (the SDK types base64 embeddings as lists too: checked below instead)


def test_responses_stream_helper_and_tool_call(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "name": "search", "parameters": {"type": "object", "properties": {}}}]
    with client.responses.stream(model="gpt-4o-mini@tool_call", input="q", tools=tools) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert orjson.loads(done.arguments) == {"query": "fox"}
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == done.arguments
    assert final.output[0].type == "function_call" and final.output[0].name == "search"


def test_responses_parse_with_pydantic_model(client: openai.OpenAI) -> None:
    r = client.responses.parse(model="gpt-4o-mini", input="an order", text_format=Order)
    order = r.output_parsed
    assert isinstance(order, Order)
    assert len(order.parts) >= 2 and order.parts[0].count >= 3 and order.kind == "retail"


def test_responses_stream_structured_output(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o-mini", input="an order", text_format=Order) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 1
    assert isinstance(final.output_parsed, Order)
    assert final.usage is not None and final.usage.output_tokens == len(deltas)


def test_responses_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-4o-mini@tokens=10", input="x", max_output_tokens=3)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == words(3)
    with client.responses.create(model="gpt-4o-mini@tokens=10", input="x", max_output_tokens=3, stream=True) as s:
        last = list(s)[-1]
    assert last.type == "response.incomplete"


def test_responses_errors_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        client.responses.create(model="gpt-4o-mini@error=429,retry_after=2", input="x")
    assert e.value.code == "rate_limit_exceeded"
    assert e.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="gpt-4o-mini@context_length", input="x", stream=True)
    assert bad.value.code == "context_length_exceeded" and bad.value.param == "input"
    wrong = openai.OpenAI(base_url=client.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="gpt-4o-mini", input="x")


def test_responses_stream_cut_and_malformed(server: ThreadedServer) -> None:
    body = {"model": "gpt-4o-mini@tokens=6,cut_after=3", "input": "x", "stream": True}
    with pytest.raises(Exception) as e:
        post(server, "/v1/responses", body)
    assert not isinstance(e.value, urllib.error.HTTPError)
    raw = post(server, "/v1/responses", {**body, "model": "gpt-4o-mini@tokens=6,malformed_after=2"})
    blocks = [b for b in raw.split(b"\n\n") if b]
    assert len(blocks) == 3 and b"response.in_progress" in blocks[1]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(blocks[2].removeprefix(b"data: "))


def test_responses_request_is_logged(server: ThreadedServer, client: openai.OpenAI) -> None:
    client.responses.create(model="gpt-4o-mini", input="logged input")
    with urllib.request.urlopen(server.url + "/_fake/requests") as r:
        last = orjson.loads(r.read())[-1]
    assert last["path"] == "/responses" and last["body"]["input"] == "logged input"
    assert "authorization" not in last["headers"]


# --- chat completions: n and response_format ------------------------------------------------------------------------


def test_chat_n_choices(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini@tokens=3", messages=[{"role": "user", "content": "hi"}], n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content == words(3) for c in r.choices)
    assert r.usage is not None and r.usage.completion_tokens == 9


def test_chat_n_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini@tokens=4",
        messages=[{"role": "user", "content": "hi"}],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    usage = None
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
        usage = chunk.usage or usage
    assert texts == {0: words(4), 1: words(4)}
    assert finishes == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 8


def test_chat_bad_n_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], n=0)
    assert e.value.param == "n"


def test_chat_parse_with_pydantic_model(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "order"}], response_format=Order
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Order)
    assert parsed.main.colour == Colour.RED


def test_chat_stream_structured_output(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "order"}], response_format=Order
    ) as stream:
        pieces = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(pieces) > 1
    assert isinstance(final.choices[0].message.parsed, Order)


def test_chat_json_object(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o-mini@tokens=3",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert orjson.loads(r.choices[0].message.content or "") == {"answer": words(3)}


def test_chat_unanswerable_schema_is_400(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/Missing"}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], response_format=fmt
        )
    assert e.value.param == "response_format"


# --- the JSON Schema generator --------------------------------------------------------------------------------------


def test_generated_values_validate_against_pydantic_schemas() -> None:
    for model in (Order, Part, Tree):
        value = json_schema.generate(model.model_json_schema())
        model.model_validate(value)


def test_generated_values_follow_the_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 5},
            "x": {"type": "number", "exclusiveMinimum": 2},
            "small": {"type": "integer", "maximum": -3},
            "e": {"enum": ["b", "a"]},
            "arr": {"type": "array", "items": {"type": "boolean"}, "minItems": 3},
            "nothing": {"type": "null"},
            "either": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "s": {"type": "string", "minLength": 10},
            "old": {"$ref": "#/definitions/Old"},
        },
        "definitions": {"Old": {"type": "string", "const": "legacy"}},
    }
    v = json_schema.generate(schema)
    assert v["n"] == 5 and v["x"] == 3 and v["small"] == -3 and v["e"] == "b"
    assert v["arr"] == [True, True, True] and v["nothing"] is None and v["either"] == 1
    assert len(v["s"]) >= 10 and v["old"] == "legacy"


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},  # recursion with no way out
        {"type": "array", "items": {"type": "string"}, "minItems": 10**9},
        {"type": "string", "minLength": 10**9},
        {"$ref": "#/$defs/Nope"},
    ],
)
def test_generator_refuses_schemas_past_its_bounds(schema: dict[str, Any]) -> None:
    with pytest.raises(json_schema.SchemaError):
        json_schema.generate(schema)


# --- embeddings base64 -----------------------------------------------------------------------------------------------


def test_embeddings_base64_is_little_endian_float32(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model="text-embedding-3-small", input=["a fox", "a dog"])
    b64 = client.embeddings.create(model="text-embedding-3-small", input=["a fox", "a dog"], encoding_format="base64")
    for f, b in zip(floats.data, b64.data, strict=True):
        assert isinstance(b.embedding, str)
        raw = base64.b64decode(b.embedding)
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert decoded == pytest.approx(f.embedding, abs=1e-6)
        assert decoded == struct.unpack(f"<{len(f.embedding)}f", struct.pack(f"<{len(f.embedding)}f", *f.embedding))


def test_embeddings_bad_encoding_format(server: ThreadedServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as e:
        post(server, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"})
    assert e.value.code == 400
    assert orjson.loads(e.value.read())["error"]["param"] == "encoding_format"


# --- legacy completions --------------------------------------------------------------------------------------------


def test_completions_create(client: openai.OpenAI) -> None:
    r = client.completions.create(model="gpt-3.5-turbo-instruct@tokens=4", prompt="Say something nice")
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text == words(4) and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 18 // 4 and r.usage.completion_tokens == 4
    many = client.completions.create(model="gpt-3.5-turbo-instruct@tokens=4", prompt=["a", "b"], max_tokens=2, n=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert all(c.text == words(2) and c.finish_reason == "length" for c in many.choices)
    assert many.usage is not None and many.usage.completion_tokens == 8


def test_completions_stream(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model="gpt-3.5-turbo-instruct@tokens=3",
        prompt="hi",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == words(3)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_completions_need_a_prompt(server: ThreadedServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as e:
        post(server, "/v1/completions", {"model": "gpt-3.5-turbo-instruct"})
    assert e.value.code == 400 and orjson.loads(e.value.read())["error"]["param"] == "prompt"


# --- Anthropic: count_tokens and structured outputs ------------------------------------------------------------------

needs_anthropic = pytest.mark.skipif(anthropic is None, reason="the anthropic SDK is not installed")


@pytest.fixture(scope="module")
def claude(server: ThreadedServer) -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)


@needs_anthropic
def test_count_tokens_matches_messages_usage(claude: Any) -> None:
    messages = [
        {"role": "user", "content": "How many tokens is this sentence?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Some."}]},
        {"role": "user", "content": "Really?"},
    ]
    system = "You count tokens for a living."
    counted = claude.messages.count_tokens(model="claude-3-5-haiku-latest", messages=messages, system=system)
    assert isinstance(counted, anthropic.types.MessageTokensCount)
    answered = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, messages=messages, system=system)
    assert counted.input_tokens == answered.usage.input_tokens
    assert counted.input_tokens == (33 + 5 + 7) // 4 + 12 + len(system) // 4


@needs_anthropic
def test_count_tokens_errors(claude: Any, server: ThreadedServer) -> None:
    wrong = anthropic.Anthropic(base_url=server.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        wrong.messages.count_tokens(model="claude-3-5-haiku-latest", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.count_tokens(model="claude-3-5-haiku-latest", messages=[])
    assert bad.value.body["type"] == "error"
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.count_tokens(
            model="claude-3-5-haiku-latest@error=429", messages=[{"role": "user", "content": "x"}]
        )


@needs_anthropic
def test_anthropic_structured_output(claude: Any) -> None:
    r = claude.messages.parse(
        model="claude-3-5-haiku-latest",
        max_tokens=1000,
        messages=[{"role": "user", "content": "an order"}],
        output_format=Order,
    )
    assert isinstance(r.parsed_output, Order)
    assert r.stop_reason == "end_turn"


@needs_anthropic
def test_anthropic_structured_output_beta_field_and_stream(server: ThreadedServer, claude: Any) -> None:
    schema = Part.model_json_schema()
    raw = post(
        server,
        "/v1/messages",
        {
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 500,
            "messages": [{"role": "user", "content": "x"}],
            "output_format": {"type": "json_schema", "schema": schema},
        },
        {"anthropic-version": "2023-06-01", "x-api-key": KEY},
    )
    msg = anthropic.types.Message.model_validate(orjson.loads(raw))
    Part.model_validate_json(msg.content[0].text)
    with claude.messages.stream(
        model="claude-3-5-haiku-latest",
        max_tokens=500,
        messages=[{"role": "user", "content": "x"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    ) as stream:
        deltas = [e.delta.text for e in stream if e.type == "content_block_delta" and e.delta.type == "text_delta"]
        final = stream.get_final_message()
    assert len(deltas) > 1 and Part.model_validate_json("".join(deltas))
    assert final.usage.output_tokens == len(deltas)


# --- behaviour by header ----------------------------------------------------------------------------------------------


def test_behaviour_header_sets_the_answer_and_wins_over_the_suffix(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o-mini@tokens=9",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-behaviour": "tokens=2,cached=1"},
    )
    assert r.model == "gpt-4o-mini"  # the name without its suffix
    assert r.usage is not None and r.usage.completion_tokens == 2  # the header's, not the suffix's 9
    assert r.usage.prompt_tokens_details is not None and r.usage.prompt_tokens_details.cached_tokens == 1
    plain = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-behaviour": "tokens=3"},
    )
    assert plain.choices[0].message.content == "the quick brown"


def test_behaviour_header_faults(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-behaviour": "error=429;retry_after=2"},
        )
    assert limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-behaviour": "content_policy"},
        )
    assert refused.value.code == "invalid_prompt"  # what OpenAI answers a flagged prompt
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-behaviour": "nonsense=1"},
        )
    assert "unknown fake behaviour 'nonsense'" in bad.value.message


@needs_anthropic
def test_behaviour_header_on_the_messages_api(claude: Any) -> None:
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        claude.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-behaviour": "error=529"},
        )
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    r = claude.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=10,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-fake-behaviour": "tokens=4"},
    )
    assert r.model == "claude-3-5-haiku-latest" and r.usage.output_tokens == 4

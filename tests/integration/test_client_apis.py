"""Every client API relaycast serves, driven by the official SDKs against the fake upstream: Anthropic's Messages
(`anthropic`), OpenAI's Responses and legacy completions (`openai`), OpenRouter's response contract, and the
retry hints; across targets of both kinds, natively and translated, with failover mid-route."""

from __future__ import annotations

import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaycast.config import parse
from relaycast.records import RequestRecord
from relaycast.server.app import Gateway
from relaycast.server.runner import ThreadedServer, free_port
from tests.capture import Sink
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake

KEY = "rc-client-apis-key-01"
OTHER_KEY = "rc-client-apis-key-02"
CAPPED_KEY = "rc-client-apis-key-03"
HAIKU = "claude/claude-3-5-haiku-latest"


def _config(fake_url: str, data_dir: str) -> str:
    return f"""
admin_key: {ADMIN_KEY}
routing:
  circuit: {{failures: 1000}}
store: {{path: {data_dir}/requests.db}}
broadcast:
  destinations:
    - {{name: file, kind: file, path: {data_dir}/records.jsonl, flush_interval: 0.1}}
limits:
  default_max_tokens: 50
keys:
  - name: app
    secret: {KEY}
  - name: other
    secret: {OTHER_KEY}
  - name: capped
    secret: {CAPPED_KEY}
    tpm: 1000000
providers:
  - name: fakeai
    kind: openai_compatible
    base_url: {fake_url}
    api_key: {UPSTREAM_KEY}
    models: [gpt-4o-mini, gpt-4o]
  - name: oai
    kind: openai_compatible
    base_url: {fake_url}
    api_key: {UPSTREAM_KEY}
    responses_api: true
  - name: claude
    kind: anthropic
    base_url: {fake_url}
    api_key: {UPSTREAM_KEY}
  - name: down
    kind: openai_compatible
    base_url: http://127.0.0.1:{free_port()}/v1
    timeouts: {{connect: 1}}
prices:
  fakeai/gpt-4o-mini: {{input: 0.15, output: 0.60}}
  claude/claude-3-5-haiku-latest: {{input: 0.80, output: 4.00}}
  oai/gpt-4o-mini: {{input: 0.15, output: 0.60}}
models:
  - name: claude-then-openai
    targets: [claude/claude-3-5-haiku-latest@error=529, fakeai/gpt-4o-mini]
  - name: openai-then-claude
    targets: [fakeai/gpt-4o-mini@error=503, claude/claude-3-5-haiku-latest]
  - name: native-then-chat
    targets: [oai/gpt-4o-mini@error=500, fakeai/gpt-4o-mini]
"""


class Gw:
    def __init__(self, url: str, sink: Sink, data_dir: str) -> None:
        self.url = url
        self.sink = sink
        self.data_dir = data_dir
        self.oai = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=15)
        self.claude = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0, timeout=15)


@pytest.fixture(scope="module")
def gw(fake: Fake) -> Iterator[Gw]:
    with tempfile.TemporaryDirectory(prefix="relaycast-apis-") as d:
        cfg = parse(_config(fake.url, d), env={})
        sink = Sink()
        with ThreadedServer(Gateway(cfg, sinks=[sink])) as srv:
            yield Gw(srv.url, sink, d)


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one plain HTTP request."""
    data = orjson.dumps(body) if body is not None else None
    h = {"content-type": "application/json", **(headers or {})} if data else dict(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _record(gw: Gw, headers: Any) -> RequestRecord:
    return gw.sink.wait_for(headers["x-relaycast-request-id"])


# --- Anthropic Messages ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", [HAIKU + "@tokens=6", "fakeai/gpt-4o-mini@tokens=6"])
def test_messages_create_answers_an_anthropic_message_from_either_kind_of_target(gw: Gw, model: str) -> None:
    raw = gw.claude.messages.with_raw_response.create(
        model=model, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Say something."}]
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text.split() == "the quick brown fox jumps over".split()
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 6 and msg.usage.input_tokens > 0
    rec = _record(gw, raw.headers)
    assert rec.endpoint == "messages" and rec.status_code == 200
    assert rec.attempts[-1].usage is not None and rec.attempts[-1].usage.completion_tokens == 6
    assert rec.attempts[-1].cost_pusd and rec.attempts[-1].cost_source == "computed"


def test_messages_native_pass_through_keeps_what_anthropic_alone_knows(gw: Gw, fake: Fake) -> None:
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    msg = gw.claude.messages.create(
        model=HAIKU,
        max_tokens=64,
        system=system,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert msg.content
    sent = [r for r in fake.requests() if r["path"].endswith("/messages")][-1]
    assert sent["body"]["system"] == system
    assert sent["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["headers"].get("anthropic-beta") == "prompt-caching-2024-07-31"


@pytest.mark.parametrize("model", [HAIKU + "@tokens=5", "fakeai/gpt-4o-mini@tokens=5"])
def test_messages_stream_gives_anthropic_events_and_a_final_message(gw: Gw, model: str) -> None:
    with gw.claude.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "the quick brown fox jumps"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


@pytest.mark.parametrize("model", [HAIKU + "@tool_call", "fakeai/gpt-4o-mini@tool_call"])
def test_messages_tools_round_trip(gw: Gw, model: str, fake: Fake) -> None:
    tools = [
        {
            "name": "search",
            "description": "Search the web",
            "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        }
    ]
    first = gw.claude.messages.create(
        model=model, max_tokens=100, tools=tools, messages=[{"role": "user", "content": "find the fox"}]
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "search" and call.input == {"query": "fox"}
    second = gw.claude.messages.create(
        model=model.split("@")[0] + "@tokens=3",
        max_tokens=100,
        tools=tools,
        messages=[
            {"role": "user", "content": "find the fox"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "a fox"}]},
        ],
    )
    assert second.content[0].type == "text"
    sent = fake.last_body()
    if model.startswith("fakeai"):  # translated: the tool result became a tool message for that call
        assert {"role": "tool", "tool_call_id": call.id, "content": "a fox"} in sent["messages"]
    else:
        assert sent["messages"][-1]["content"][0]["tool_use_id"] == call.id


@pytest.mark.parametrize("model", ["claude-then-openai", "openai-then-claude"])
def test_messages_fail_over_across_kinds_mid_route(gw: Gw, model: str) -> None:
    raw = gw.claude.messages.with_raw_response.create(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().content[0].text
    assert raw.headers["x-relaycast-attempts"] == "2"
    with gw.claude.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream)
        assert s.get_final_message().stop_reason == "end_turn"
    rec = _record(gw, raw.headers)
    assert [a.error_class for a in rec.attempts] == [rec.attempts[0].error_class, None]
    assert rec.attempts[0].error_class == "rate_limit" if model == "claude-then-openai" else "upstream_5xx"


def test_messages_errors_come_in_anthropic_format(gw: Gw) -> None:
    with pytest.raises(anthropic.NotFoundError) as e:
        gw.claude.messages.create(model="nosuch/model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e2:
        gw.claude.messages.create(model=HAIKU, max_tokens=5, messages=[])
    assert e2.value.body["error"]["type"] == "invalid_request_error"
    bad = anthropic.Anthropic(base_url=gw.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e3:
        bad.messages.create(model=HAIKU, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e3.value.body["error"]["type"] == "authentication_error"
    assert e3.value.response.headers["x-should-retry"] == "false"


def test_an_upstream_overload_reaches_anthropic_clients_as_overloaded_error(gw: Gw) -> None:
    with pytest.raises(anthropic.APIStatusError) as e:
        gw.claude.messages.create(model=HAIKU + "@error=529", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "overloaded_error"
    assert e.value.response.headers["x-should-retry"] == "true"


def test_messages_accept_the_key_as_a_bearer_token(gw: Gw) -> None:
    c = anthropic.Anthropic(base_url=gw.url, auth_token=KEY, max_retries=0)  # Claude Code's ANTHROPIC_AUTH_TOKEN
    assert c.messages.create(model=HAIKU, max_tokens=5, messages=[{"role": "user", "content": "x"}]).content


def test_a_mid_stream_failure_ends_with_an_anthropic_error_event(gw: Gw) -> None:
    for model in (HAIKU + "@tokens=30,cut_after=5", "fakeai/gpt-4o-mini@tokens=30,cut_after=5"):
        _, _, raw = _http(
            "POST",
            gw.url + "/v1/messages",
            {"model": model, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "x"}]},
            {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
        body = raw.decode()
        assert "event: error" in body and '"type":"error"' in body
        assert "message_stop" not in body


def test_count_tokens_answers_an_estimate(gw: Gw) -> None:
    small = gw.claude.messages.count_tokens(model=HAIKU, messages=[{"role": "user", "content": "hi"}])
    large = gw.claude.messages.count_tokens(model=HAIKU, messages=[{"role": "user", "content": "hi " * 2000}])
    assert 0 < small.input_tokens < large.input_tokens


def test_the_openrouter_base_url_serves_the_anthropic_api_too(gw: Gw) -> None:
    c = anthropic.Anthropic(base_url=gw.url + "/api", api_key=KEY, max_retries=0)
    assert c.messages.create(model=HAIKU, max_tokens=5, messages=[{"role": "user", "content": "x"}]).content


# --- OpenAI Responses -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["oai/gpt-4o-mini@tokens=4", "fakeai/gpt-4o-mini@tokens=4", HAIKU + "@tokens=4"])
def test_responses_create_from_every_kind_of_target(gw: Gw, model: str, fake: Fake) -> None:
    raw = gw.oai.responses.with_raw_response.create(model=model, instructions="Be brief.", input="Say something.")
    resp = raw.parse()
    assert resp.status == "completed"
    assert resp.output_text == "the quick brown fox"
    assert resp.usage is not None and resp.usage.output_tokens == 4
    path = fake.requests()[-1]["path"]
    assert path.endswith("/responses") if model.startswith("oai") else not path.endswith("/responses")
    rec = _record(gw, raw.headers)
    assert rec.endpoint == "responses" and rec.output_text == "the quick brown fox"
    assert rec.attempts[-1].usage is not None and rec.attempts[-1].usage.completion_tokens == 4


@pytest.mark.parametrize("model", ["oai/gpt-4o-mini@tokens=5", "fakeai/gpt-4o-mini@tokens=5", HAIKU + "@tokens=5"])
def test_responses_stream_events(gw: Gw, model: str) -> None:
    with gw.oai.responses.stream(model=model, input="hello") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "the quick brown fox jumps"
    assert final.status == "completed" and final.usage is not None and final.usage.output_tokens == 5


@pytest.mark.parametrize("model", ["oai/gpt-4o-mini", "fakeai/gpt-4o-mini"])
def test_responses_tools_round_trip_and_previous_response_id(gw: Gw, model: str) -> None:
    tools = [
        {
            "type": "function",
            "name": "search",
            "description": "Search",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        }
    ]
    first = gw.oai.responses.create(model=model + "@tool_call", input="find the fox", tools=tools)
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "search" and call.arguments == '{"query":"fox"}'
    # The whole conversation sent again, as items.
    second = gw.oai.responses.create(
        model=model + "@tokens=3",
        tools=tools,
        input=[
            {"role": "user", "content": "find the fox"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "a fox"},
        ],
    )
    assert second.output_text == "the quick brown"
    # Or continued from the stored response.
    third = gw.oai.responses.create(
        model="fakeai/gpt-4o-mini@tokens=2",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "a fox"}],
    )
    assert third.output_text == "the quick"


@pytest.mark.parametrize("instructions", ["Be brief.", ""])
def test_previous_response_id_sends_the_stored_conversation(gw: Gw, fake: Fake, instructions: str) -> None:
    first = gw.oai.responses.create(model="fakeai/gpt-4o-mini@tokens=3", instructions=instructions, input="one")
    gw.oai.responses.create(model="fakeai/gpt-4o-mini@tokens=2", previous_response_id=first.id, input="two")
    sent = fake.last_body()["messages"]
    assert sent == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "the quick brown"},
        {"role": "user", "content": "two"},
    ]


def test_stored_responses_are_read_and_deleted_by_their_key_only(gw: Gw) -> None:
    made = gw.oai.responses.create(model="fakeai/gpt-4o-mini@tokens=3", input="hello")
    got = gw.oai.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    admin = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError):
        admin.responses.retrieve(made.id)  # not a gateway key: refused
    other = openai.OpenAI(base_url=gw.url + "/v1", api_key=OTHER_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)  # another key's: as if it did not exist
    for model in ("oai/gpt-4o-mini", "fakeai/gpt-4o-mini"):  # nor can it be continued, natively or not
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model=model, previous_response_id=made.id, input="more")
    gw.oai.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        gw.oai.responses.retrieve(made.id)
    unstored = gw.oai.responses.create(model="fakeai/gpt-4o-mini@tokens=3", input="hello", store=False)
    with pytest.raises(openai.NotFoundError):
        gw.oai.responses.retrieve(unstored.id)


class Answer(pydantic.BaseModel):
    city: str
    population: int
    tags: list[str]


@pytest.mark.parametrize("model", ["oai/gpt-4o-mini", "fakeai/gpt-4o-mini", HAIKU])
def test_responses_parse_with_a_pydantic_model(gw: Gw, model: str) -> None:
    parsed = gw.oai.responses.parse(model=model, input="a city", text_format=Answer)
    assert isinstance(parsed.output_parsed, Answer)


def test_responses_fail_over_from_a_native_target_to_a_translated_one(gw: Gw) -> None:
    raw = gw.oai.responses.with_raw_response.create(model="native-then-chat", input="hello")
    assert raw.parse().output_text
    assert raw.headers["x-relaycast-attempts"] == "2"
    with gw.oai.responses.stream(model="native-then-chat", input="hello") as s:
        assert s.get_final_response().status == "completed"


# --- legacy completions, OpenRouter's contract, retry hints --------------------------------------------------


def test_legacy_completions_pass_through(gw: Gw) -> None:
    raw = gw.oai.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@tokens=3", prompt="Once upon", max_tokens=10
    )
    done = raw.parse()
    assert done.choices[0].text.split() == ["the", "quick", "brown"]
    rec = _record(gw, raw.headers)
    assert rec.endpoint == "completions" and rec.output_text == done.choices[0].text
    chunks = list(gw.oai.completions.create(model="fakeai/gpt-4o-mini@tokens=3", prompt="Once", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices).split() == ["the", "quick", "brown"]
    with pytest.raises(openai.BadRequestError):
        gw.oai.completions.create(model=HAIKU, prompt="x")


def test_openrouter_usage_include_reports_the_exact_cost(gw: Gw) -> None:
    body = {"usage": {"include": True}}
    raw = gw.oai.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@tokens=10,cached=2,reasoning=3",
        messages=[{"role": "user", "content": "hello"}],
        extra_body=body,
    )
    done = raw.parse()
    rec = _record(gw, raw.headers)
    cost = sum(a.cost_pusd or 0 for a in rec.attempts)
    usage = done.usage.model_dump()
    assert usage["cost"] == cost / 1e12 and cost > 0
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 3
    assert done.model_dump()["provider"] == "fakeai"
    assert done.model_dump()["choices"][0]["native_finish_reason"] == "stop"
    chunks = list(
        gw.oai.chat.completions.create(
            model="fakeai/gpt-4o-mini@tokens=4",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_body=body,
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.model_dump()["cost"] > 0


def test_generation_stats_come_from_the_store(gw: Gw) -> None:
    raw = gw.oai.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@tokens=7", messages=[{"role": "user", "content": "x"}]
    )
    rid = raw.headers["x-relaycast-request-id"]
    rec = _record(gw, raw.headers)
    deadline = time.monotonic() + 10
    while True:
        status, _, raw = _http(
            "GET", f"{gw.url}/api/v1/generation?id={rid}", headers={"authorization": f"Bearer {KEY}"}
        )
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200, raw
    data = orjson.loads(raw)["data"]
    assert data["tokens_completion"] == 7 and data["provider_name"] == "fakeai"
    assert round(data["total_cost"] * 1e12) == sum(a.cost_pusd or 0 for a in rec.attempts)


def test_retry_hints_tell_sdks_what_a_retry_can_fix(gw: Gw) -> None:
    cases = {
        "fakeai/gpt-4o-mini@error=503": "true",  # an upstream outage: a retry may land elsewhere
        "fakeai/gpt-4o-mini@error=429": "true",
        "fakeai/gpt-4o-mini@error=401": "false",  # our provider key is wrong: no retry fixes it
    }
    for model, hint in cases.items():
        status, headers, _ = _http(
            "POST",
            gw.url + "/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": "x"}]},
            {"authorization": f"Bearer {KEY}"},
        )
        assert status >= 400 and headers["x-should-retry"] == hint, (model, status)
    status, headers, _ = _http(
        "POST",
        gw.url + "/v1/chat/completions",
        {"model": "fakeai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "provider": {"only": ["x"]}},
        {"authorization": f"Bearer {KEY}"},
    )
    assert status == 503 and headers["x-should-retry"] == "false"


def test_the_whole_api_is_served_under_api_v1(gw: Gw) -> None:
    c = openai.OpenAI(base_url=gw.url + "/api/v1", api_key=KEY, max_retries=0)
    assert c.chat.completions.create(model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}]).choices
    assert c.responses.create(model="fakeai/gpt-4o-mini", input="x").output_text
    assert [m.id for m in c.models.list()]


# --- hostile bodies ----------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
MESSAGES_BODY = {
    "model": "fakeai/gpt-4o-mini",
    "max_tokens": 20,
    "system": "s",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "tools": [{"name": "t", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stop_sequences": ["x"],
    "metadata": {"user_id": "u"},
    "temperature": 0.5,
}
RESPONSES_BODY = {
    "model": "fakeai/gpt-4o-mini",
    "instructions": "i",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
    "tools": [{"type": "function", "name": "t", "parameters": {"type": "object"}}],
    "tool_choice": "auto",
    "text": {"format": {"type": "text"}},
    "reasoning": {"effort": "low"},
    "max_output_tokens": 20,
    "temperature": 0.5,
}
PATHS = {
    "/v1/messages": (MESSAGES_BODY, ["messages.0", "messages.0.content", "messages.0.content.0", "tools.0"]),
    "/v1/responses": (RESPONSES_BODY, ["input", "input.0", "input.0.content", "input.0.content.0", "tools.0"]),
}


def _replace(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = orjson.loads(orjson.dumps(body))
    *parents, last = path.split(".")
    node: Any = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


@pytest.mark.parametrize("path", sorted(PATHS))
def test_hostile_bodies_get_a_clear_4xx_in_the_apis_own_format_never_a_crash(gw: Gw, path: str) -> None:
    valid, deep = PATHS[path]
    fields = sorted(valid) + deep

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(field=st.sampled_from(fields), value=JSON_VALUES, stream=st.booleans())
    def check(field: str, value: Any, stream: bool) -> None:
        body = {**_replace(valid, field, value), "stream": stream}
        status, headers, raw = _http("POST", gw.url + path, body, {"authorization": f"Bearer {KEY}"})
        assert status < 500, (body, status, raw[:500])
        if status >= 400:
            err = orjson.loads(raw)
            if path == "/v1/messages":
                assert err["type"] == "error" and err["error"]["type"] and err["error"]["message"], err
            else:
                assert err["error"]["message"] and err["error"]["code"], err

    check()


def test_both_sdks_list_the_models(gw: Gw) -> None:
    openai_ids = [m.id for m in gw.oai.models.list()]
    anthropic_ids = [m.id for m in gw.claude.models.list()]
    assert "claude-then-openai" in openai_ids and anthropic_ids == openai_ids


def _broadcast(gw: Gw, request_id: str) -> dict[str, Any]:
    """The record the file destination wrote for a request."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"{gw.data_dir}/records.jsonl", "rb") as f:
                for line in f:
                    rec = orjson.loads(line)
                    if rec["request_id"] == request_id:
                        return rec  # type: ignore[no-any-return]
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no broadcast record for {request_id}")


@pytest.mark.parametrize("target", ["fakeai/gpt-4o-mini", HAIKU])
def test_every_api_yields_the_same_record_and_broadcast_as_chat(gw: Gw, target: str) -> None:
    model = target + "@tokens=9,ttft_ms=30"
    ids = {}
    raw = gw.oai.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}], stream=True
    )
    list(raw.parse())
    ids["chat.completions"] = raw.headers["x-relaycast-request-id"]
    with gw.claude.messages.with_streaming_response.create(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "hello"}], stream=True
    ) as r:
        list(r.iter_lines())
        ids["messages"] = r.headers["x-relaycast-request-id"]
    with gw.oai.responses.with_streaming_response.create(model=model, input="hello", stream=True) as r2:
        list(r2.iter_lines())
        ids["responses"] = r2.headers["x-relaycast-request-id"]
    sent = {endpoint: _broadcast(gw, rid) for endpoint, rid in ids.items()}
    for endpoint, rec in sent.items():
        assert rec["endpoint"] == endpoint and rec["status_code"] == 200 and rec["stream"] is True
        [attempt] = rec["attempts"]
        assert attempt["usage"]["completion_tokens"] == 9
        assert attempt["ttft_ms"] is not None and attempt["ttft_ms"] >= 30
        assert attempt["finish_reason"] == "stop"
        assert rec["cost_usd"] == sent["chat.completions"]["cost_usd"] and rec["cost_source"] == "computed"
        assert rec["output_text"] == sent["chat.completions"]["output_text"]
    # A stream cut mid-way: the same error class whichever API the client called.
    cut = target + "@tokens=30,cut_after=5"
    classes = set()
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/messages", {"max_tokens": 50, "messages": [{"role": "user", "content": "x"}]}),
        ("/v1/responses", {"input": "x"}),
    ):
        _, headers, _ = _http(
            "POST", gw.url + path, {"model": cut, "stream": True, **body}, {"authorization": f"Bearer {KEY}"}
        )
        classes.add(_broadcast(gw, headers["x-relaycast-request-id"])["error_class"])
    assert classes == {"stream_cut"}


def test_the_output_cap_a_token_limit_sets_reaches_native_providers_too(gw: Gw, fake: Fake) -> None:
    capped = openai.OpenAI(base_url=gw.url + "/v1", api_key=CAPPED_KEY, max_retries=0)
    capped.responses.create(model="oai/gpt-4o-mini@tokens=3", input="hello")
    assert fake.requests()[-1]["path"].endswith("/responses") and fake.last_body()["max_output_tokens"] == 50
    capped.responses.create(model="fakeai/gpt-4o-mini@tokens=3", input="hello")
    assert fake.last_body()["max_tokens"] == 50


def test_what_anthropic_targets_cannot_do_is_refused_clearly(gw: Gw) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        gw.oai.chat.completions.create(model=HAIKU, n=2, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "not_supported" and "'n' must be 1" in e.value.body["message"]
    assert e.value.response.headers["x-should-retry"] == "false"
    # n=2 on a route with an OpenAI-compatible target after the Anthropic one: the next target serves it.
    done = gw.oai.chat.completions.create(model="claude-then-openai", n=2, messages=[{"role": "user", "content": "x"}])
    assert len(done.choices) == 2


def test_chat_completions_parse_works_on_claude(gw: Gw) -> None:
    parsed = gw.oai.chat.completions.parse(
        model=HAIKU, messages=[{"role": "user", "content": "a city"}], response_format=Answer
    )
    assert isinstance(parsed.choices[0].message.parsed, Answer)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["fakeai/gpt-4o-mini", HAIKU, "oai/gpt-4o-mini"])
def test_attempts_keep_the_upstreams_own_model_and_answer_id(gw: Gw, model: str, stream: bool) -> None:
    if model.startswith("oai"):
        with gw.oai.responses.with_streaming_response.create(model=model, input="x", stream=stream) as r:
            r.read()
            rid = r.headers["x-relaycast-request-id"]
    else:
        with gw.oai.chat.completions.with_streaming_response.create(
            model=model, messages=[{"role": "user", "content": "x"}], stream=stream
        ) as r:
            r.read()
            rid = r.headers["x-relaycast-request-id"]
    [a] = gw.sink.wait_for(rid).attempts
    assert a.response_model == model.split("/", 1)[1] and a.response_id
    assert a.vendor == {"fakeai": "fakeai", "claude": "anthropic", "oai": "oai"}[a.provider]

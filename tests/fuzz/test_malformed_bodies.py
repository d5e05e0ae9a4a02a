"""Hand-made hostile bodies against a real gateway: each gets the answer it should (a 4xx in OpenAI's format naming
the problem, or a 200 for what is valid), never a 5xx; /healthz keeps answering within the bound meanwhile; and
the gateway's memory comes back down after megabytes of them."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import jsonschema_rs
import orjson
import pytest

from relaycast.server.openapi import build
from tests.conftest import GatewayProcess
from tests.fuzz.conftest import (
    BURST_HEALTH_BOUND_MS,
    HealthWatch,
    assert_acceptable,
    health_bound_ms,
    post,
    records_written,
    rss_kib,
    wait_written,
)

MiB = 1 << 20
MODEL = "fakeai/gpt-4o-mini"
CLAUDE = "claude/claude-3-5-haiku-latest"
HI = [{"role": "user", "content": "hi"}]
ABSENT = object()  # a field left out of the body


def chat(**fields: object) -> bytes:
    body: dict[str, object] = {"model": MODEL, "messages": HI}
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not ABSENT})


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def raw_chat(field: bytes) -> bytes:
    """A chat body with one more field given as raw JSON text (which may not be valid)."""
    return b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":"hi"}],' + field + b"}"


# (name, body, the status it gets, words its error message holds).
CASES: list[tuple[str, Callable[[], bytes], int, str]] = [
    # invalid JSON
    ("truncated JSON", lambda: b'{"model":', 400, "not valid JSON"),
    ("trailing comma", lambda: b'{"model":"x","messages":[],}', 400, "not valid JSON"),
    ("NaN", lambda: raw_chat(b'"temperature":NaN'), 400, "not valid JSON"),
    ("Infinity", lambda: raw_chat(b'"temperature":Infinity'), 400, "not valid JSON"),
    ("a number too large for a double", lambda: raw_chat(b'"temperature":1e400'), 400, "not valid JSON"),
    ("trailing garbage", lambda: chat() + b" {}", 400, "not valid JSON"),
    ("single quotes", lambda: b"{'model': 'x'}", 400, "not valid JSON"),
    ("a bare string", lambda: b'"hello"', 400, "JSON object"),
    ("null", lambda: b"null", 400, "JSON object"),
    ("whitespace only", lambda: b"   \n\t ", 400, "not valid JSON"),
    ("empty body", lambda: b"", 400, "empty"),
    ("a lone surrogate escape", lambda: raw_chat(b'"user":"\\ud800"'), 400, "not valid JSON"),
    ("a byte order mark", lambda: b"\xef\xbb\xbf" + chat(), 400, "not valid JSON"),
    # invalid UTF-8
    ("invalid UTF-8 in content", lambda: chat().replace(b'"hi"', b'"\xff\xfe"'), 400, "not valid JSON"),
    ("an overlong UTF-8 encoding", lambda: chat().replace(b'"hi"', b'"\xc0\xaf"'), 400, "not valid JSON"),
    ("a UTF-8 encoded surrogate", lambda: chat().replace(b'"hi"', b'"\xed\xa0\x80"'), 400, "not valid JSON"),
    ("truncated UTF-8 in a key", lambda: raw_chat(b'"\xe2\x82":1'), 400, "not valid JSON"),
    # NUL bytes
    ("a raw NUL in a string", lambda: chat().replace(b'"hi"', b'"h\x00i"'), 400, "not valid JSON"),
    ("a raw NUL between tokens", lambda: chat().replace(b",", b",\x00", 1), 400, "not valid JSON"),
    ("an escaped NUL in content", lambda: chat(messages=[{"role": "user", "content": "a\x00b"}]), 200, ""),
    ("an escaped NUL in the model", lambda: chat(model="fakeai/gpt\x00"), 400, "visible ASCII"),
    ("an escaped NUL in a fallback", lambda: chat(models=["fakeai/gpt-4o\x00"]), 400, "visible ASCII"),
    ("an escaped NUL in user", lambda: chat(user="al\x00ice"), 200, ""),
    ("an escaped NUL in trace", lambda: chat(trace={"trace_id": "t\x00", "k\x00": "v\x00"}), 200, ""),
    ("an escaped NUL in a key", lambda: chat(**{"x\x00y": 1}), 200, ""),
    # nesting
    ("10,000 levels of arrays as the body", lambda: nested(10_000), 400, ""),
    ("10,000 levels under trace", lambda: raw_chat(b'"trace":{"x":' + nested(10_000) + b"}"), 400, ""),
    (
        "10,000 levels of objects in content",
        lambda: raw_chat(b'"extra":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
        400,
        "",
    ),
    ("10,000 levels in tools", lambda: raw_chat(b'"tools":' + nested(10_000)), 400, ""),
    ("1,000 levels in an unknown field", lambda: raw_chat(b'"extra":' + nested(1_000)), 400, "nested deeper than 64"),
    ("65 levels (one past the limit)", lambda: raw_chat(b'"extra":' + nested(64)), 400, "nested deeper than 64"),
    ("64 levels (the limit)", lambda: raw_chat(b'"extra":' + nested(63)), 200, ""),
    ("10,000 opening brackets inside a string", lambda: chat(user="[" * 200, stop="[{" * 10_000), 200, ""),
    # huge strings
    ("4 MiB of content", lambda: chat(messages=[{"role": "user", "content": "x" * (4 * MiB)}]), 200, ""),
    (
        "4 MiB of content to Anthropic",
        lambda: chat(model=CLAUDE, messages=[{"role": "user", "content": "y" * (4 * MiB)}]),
        200,
        "",
    ),
    ("4 MiB of non-ASCII content", lambda: chat(messages=[{"role": "user", "content": "é€😀" * MiB}]), 200, ""),
    ("a 4 MiB model name", lambda: chat(model="fakeai/" + "m" * (4 * MiB)), 400, "at most 256"),
    ("a 4 MiB fallback name", lambda: chat(models=["fakeai/" + "m" * (4 * MiB)]), 400, "at most 256"),
    ("a 4 MiB user", lambda: chat(user="u" * (4 * MiB)), 400, "longer than 256"),
    ("a 4 MiB session id", lambda: chat(session_id="s" * (4 * MiB)), 400, "longer than 256"),
    ("a 4 MiB field name", lambda: chat(**{"k" * (4 * MiB): 1}), 200, ""),
    ("a 4 MiB stop sequence", lambda: chat(stop="s" * (4 * MiB)), 200, ""),
    ("a 1 MiB integer", lambda: raw_chat(b'"max_tokens":' + b"9" * MiB), 400, ""),
    ("a 4 MiB trace value", lambda: chat(trace={"trace_name": "t" * (4 * MiB)}), 200, ""),
    # n
    ("n=1000", lambda: chat(n=1000), 400, "'n'"),
    ("n=1000 to Anthropic", lambda: chat(model=CLAUDE, n=1000), 400, "'n'"),
    ("n=2 to Anthropic", lambda: chat(model=CLAUDE, n=2), 400, "'n' must be 1"),
    ("n=0", lambda: chat(n=0), 400, "'n'"),
    ("n=-1", lambda: chat(n=-1), 400, "'n'"),
    # max_tokens
    ("max_tokens absent", lambda: chat(), 200, ""),
    ("max_tokens absent to Anthropic", lambda: chat(model=CLAUDE), 200, ""),
    ("max_tokens null", lambda: chat(max_tokens=None), 200, ""),
    ("max_tokens=-1", lambda: chat(max_tokens=-1), 400, "max_tokens"),
    ("max_tokens=0", lambda: chat(max_tokens=0), 400, "max_tokens"),
    ("max_tokens=-2**63", lambda: chat(max_tokens=-(2**63)), 400, "max_tokens"),
    ("max_tokens=2**64-1", lambda: chat(max_tokens=2**64 - 1), 400, "max_tokens"),
    ("max_tokens=2**64", lambda: raw_chat(b'"max_tokens":18446744073709551616'), 400, "max_tokens"),
    ("max_tokens=1.5", lambda: chat(max_tokens=1.5), 400, "max_tokens"),
    ("max_tokens=16.0", lambda: raw_chat(b'"max_tokens":16.0'), 400, "max_tokens"),
    ("max_tokens as a string", lambda: chat(max_tokens="16"), 400, "max_tokens"),
    ("max_tokens true", lambda: chat(max_tokens=True), 400, "max_tokens"),
    ("max_completion_tokens=-5", lambda: chat(max_completion_tokens=-5), 400, "max_completion_tokens"),
    ("max_tokens=1", lambda: chat(max_tokens=1), 200, ""),
    # unknown fields
    ("an unknown field", lambda: chat(frobnicate={"a": [1, 2, {"b": None}]}), 200, ""),
    ("__proto__ and constructor", lambda: chat(__proto__={"admin": True}, constructor=1), 200, ""),
    ("1,000 unknown fields", lambda: chat(**{f"f{i}": i for i in range(1000)}), 200, ""),
    ("a duplicated key", lambda: raw_chat(b'"model":"nope/x","model":"' + MODEL.encode() + b'"'), 200, ""),
    ("unknown fields in a message", lambda: chat(messages=[{"role": "user", "content": "x", "zz": [1]}]), 200, ""),
    # many messages
    ("10,000 messages", lambda: chat(messages=[{"role": "user", "content": "m"}] * 10_000), 200, ""),
    (
        "10,000 alternating messages to Anthropic",
        lambda: chat(
            model=CLAUDE,
            messages=[{"role": "user" if i % 2 == 0 else "assistant", "content": "m"} for i in range(10_001)],
        ),
        200,
        "",
    ),
    ("10,000 system messages", lambda: chat(messages=[{"role": "system", "content": "s"}] * 10_000 + HI), 200, ""),
    (
        "10,000 content parts",
        lambda: chat(messages=[{"role": "user", "content": [{"type": "text", "text": "p"}] * 10_000}]),
        200,
        "",
    ),
    ("10,000 messages, one bad", lambda: chat(messages=[*HI * 9_999, {"role": "nobody"}]), 400, "messages[9999].role"),
    # tools
    ("tools as a string", lambda: chat(tools="search"), 400, "'tools'"),
    ("tools as an object", lambda: chat(tools={"type": "function"}), 400, "'tools'"),
    ("tools of scalars", lambda: chat(tools=[1, None, "x", True]), 200, ""),
    ("tools of scalars to Anthropic", lambda: chat(model=CLAUDE, tools=[1, None]), 400, "tools[0]"),
    (
        "a tool without a name to Anthropic",
        lambda: chat(model=CLAUDE, tools=[{"type": "function", "function": {}}]),
        400,
        "name",
    ),
    (
        "a tool whose parameters are a list, to Anthropic",
        lambda: chat(model=CLAUDE, tools=[{"type": "function", "function": {"name": "f", "parameters": [1]}}]),
        400,
        "parameters",
    ),
    (
        "10,000 tools",
        lambda: chat(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(10_000)]),
        200,
        "",
    ),
    (
        "10,000 tools to Anthropic",
        lambda: chat(model=CLAUDE, tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(10_000)]),
        200,
        "",
    ),
    (
        "tool_choice of the wrong type to Anthropic",
        lambda: chat(model=CLAUDE, tools=[{"type": "function", "function": {"name": "f"}}], tool_choice=[1]),
        400,
        "tool_choice",
    ),
    (
        "tool_calls of scalars to Anthropic",
        lambda: chat(model=CLAUDE, messages=[*HI, {"role": "assistant", "tool_calls": [1, "x"]}]),
        400,
        "tool_calls[0]",
    ),
    (
        "tool arguments that are not JSON, to Anthropic",
        lambda: chat(
            model=CLAUDE,
            messages=[
                *HI,
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{nope"}}]},
            ],
        ),
        400,
        "arguments",
    ),
    (
        "a tool result without an id, to Anthropic",
        lambda: chat(model=CLAUDE, messages=[*HI, {"role": "tool", "content": "r"}]),
        400,
        "tool_call_id",
    ),
    (
        "an image part without a URL, to Anthropic",
        lambda: chat(model=CLAUDE, messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        400,
        "image_url",
    ),
    (
        "a data URL that is not base64, to Anthropic",
        lambda: chat(
            model=CLAUDE,
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,AAAA"}}]}
            ],
        ),
        400,
        "base64",
    ),
    # models and provider preferences
    ("10,000 fallbacks", lambda: chat(models=[f"fakeai/m{i}" for i in range(10_000)]), 400, "'models'"),
    ("models without model", lambda: chat(model=ABSENT, models=[MODEL, CLAUDE]), 200, ""),
    ("models empty without model", lambda: chat(model=ABSENT, models=[]), 400, "'model' is required"),
    ("10,000 provider names", lambda: chat(provider={"order": [f"p{i}" for i in range(10_000)]}), 200, ""),
    (
        "a provider sort object of the wrong type",
        lambda: chat(provider={"sort": {"by": ["price"]}}),
        400,
        "provider.sort",
    ),
    ("a negative price cap", lambda: chat(provider={"max_price": {"prompt": -1}}), 400, "max_price"),
    ("a tags header with 25 tags", lambda: chat(), 400, "X-Relaycast-Tags"),
    ("a tags header that is not UTF-8", lambda: chat(), 400, "X-Relaycast-Tags"),
]
HEADERS: dict[str, dict[str, str]] = {
    "a tags header with 25 tags": {"x-relaycast-tags": ",".join(f"t{i}=v" for i in range(25))},
    "a tags header that is not UTF-8": {"x-relaycast-tags": "team=\xff\xfe"},
}


@pytest.mark.parametrize(("name", "make", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_hostile_chat_body(
    fuzz_gateway: GatewayProcess, health: HealthWatch, name: str, make: Callable[[], bytes], status: int, words: str
) -> None:
    body = make()
    written = records_written(fuzz_gateway)
    with health.window() as w:
        a = post(fuzz_gateway.url, body, HEADERS.get(name))
        if a.status == 200:  # the store's work on the record is part of what this request costs
            wait_written(fuzz_gateway, written + 1)
    assert_acceptable(a, name)
    assert a.status == status, f"{name}: {a.status} {a.body[:500]!r}"
    if a.status >= 400:
        assert words in a.error()["error"]["message"], a.error()
    w.assert_responsive(health_bound_ms(body))


# Every field the gateway checks (and a few it passes on), with values of every JSON type: the document decides
# which are valid, and the gateway must agree: a 400 naming the field for an invalid one, a 200 for a valid one.
FIELDS = (
    "model",
    "models",
    "messages",
    "messages.0",
    "messages.0.role",
    "messages.0.content",
    "messages.0.content.0",
    "stream",
    "stream_options",
    "stream_options.include_usage",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "user",
    "session_id",
    "trace",
    "provider",
    "provider.order",
    "provider.only",
    "provider.ignore",
    "provider.allow_fallbacks",
    "provider.sort",
    "provider.max_price",
    "provider.max_price.prompt",
    "tool_choice",
    "response_format",
    "stop",
    "seed",
)
VALUES: tuple[object, ...] = (None, True, False, 0, -1, 2, 1.5, "", "x", [], [1], ["x"], {}, {"a": 1})
SCHEMA = jsonschema_rs.validator_for(
    {**build()["components"]["schemas"]["ChatCompletionRequest"], "components": build()["components"]},
)


def _with(path: str, value: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream_options": {"include_usage": True},
        "provider": {"max_price": {"prompt": 1000}},
    }
    *parents, last = path.split(".")
    node: object = body
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]  # type: ignore[index]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]
    if path.startswith("stream_options"):
        body["stream"] = True
    return body


@pytest.mark.parametrize("path", FIELDS)
def test_every_type_in_every_field(fuzz_gateway: GatewayProcess, health: HealthWatch, path: str) -> None:
    with health.window() as w:
        for value in VALUES:
            body = _with(path, value)
            a = post(fuzz_gateway.url, orjson.dumps(body))
            what = f"{path}={value!r}"
            assert_acceptable(a, what)
            if SCHEMA.is_valid(body):
                # A well-formed name of a model this gateway does not have is a 404.
                unknown = a.status == 404 and a.error()["error"]["code"] == "model_not_found"
                assert a.status in (200, 503) or unknown, (
                    f"{what}: the document says valid, the gateway {a.status} {a.body[:300]!r}"
                )
            else:
                assert a.status == 400, f"{what}: the document says invalid, the gateway {a.status} {a.body[:300]!r}"
                param = a.error()["error"]["param"] or ""
                top = path.split(".")[0]
                assert param.startswith(top) or (top == "messages" and param.startswith("messages")), (what, param)
    w.assert_responsive()


EMBEDDINGS: list[tuple[str, bytes, int]] = [
    ("input absent", orjson.dumps({"model": "embed"}), 400),
    ("input null", orjson.dumps({"model": "embed", "input": None}), 400),
    ("input empty array", orjson.dumps({"model": "embed", "input": []}), 400),
    ("input mixed", orjson.dumps({"model": "embed", "input": ["a", 1]}), 400),
    ("input an object", orjson.dumps({"model": "embed", "input": {"a": 1}}), 400),
    ("input a number", orjson.dumps({"model": "embed", "input": 5}), 400),
    ("input 10,000 strings", orjson.dumps({"model": "embed", "input": ["w"] * 10_000}), 200),
    ("input 4 MiB", orjson.dumps({"model": "embed", "input": "z" * (4 * MiB)}), 200),
    ("input token arrays", orjson.dumps({"model": "embed", "input": [[1, 2], [3]]}), 200),
    ("input huge token ids", orjson.dumps({"model": "embed", "input": [2**63 - 1, -(2**63)]}), 200),
    ("input nested 10,000 deep", b'{"model":"embed","input":' + nested(10_000) + b"}", 400),
    ("input with invalid UTF-8", b'{"model":"embed","input":"\xff"}', 400),
    ("embeddings on Anthropic", orjson.dumps({"model": CLAUDE, "input": "x"}), 400),
    ("a 4 MiB model", orjson.dumps({"model": "m" * (4 * MiB), "input": "x"}), 400),
    ("user of the wrong type", orjson.dumps({"model": "embed", "input": "x", "user": 5}), 400),
]


@pytest.mark.parametrize(("name", "body", "status"), EMBEDDINGS, ids=[c[0] for c in EMBEDDINGS])
def test_hostile_embeddings_body(
    fuzz_gateway: GatewayProcess, health: HealthWatch, name: str, body: bytes, status: int
) -> None:
    with health.window() as w:
        a = post(fuzz_gateway.url, body, path="/v1/embeddings")
    assert_acceptable(a, name)
    assert a.status == status, f"{name}: {a.status} {a.body[:300]!r}"
    w.assert_responsive()


def test_megabytes_of_hostile_bodies_at_once_leave_memory_bounded(
    fuzz_gateway: GatewayProcess, health: HealthWatch
) -> None:
    """Eight clients sending 4 MiB prompts, 10,000-message bodies and 10,000-level nesting at the same time: the
    gateway answers each, /healthz stays fast, and its memory comes back to within a bound of where it started."""
    pid = fuzz_gateway.worker_pid()  # the serving process, not the supervisor
    bodies = [
        chat(messages=[{"role": "user", "content": "x" * (4 * MiB)}]),
        chat(model=CLAUDE, messages=[{"role": "user", "content": "y" * (4 * MiB)}]),
        chat(messages=[{"role": "user", "content": "m"}] * 10_000),
        raw_chat(b'"trace":' + nested(10_000)),
        chat(model="fakeai/" + "m" * (4 * MiB)),
    ]
    post(fuzz_gateway.url, chat())  # warm
    before = rss_kib(pid)
    written = records_written(fuzz_gateway)
    with health.window() as w, concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(fuzz_gateway.url, bodies[i % len(bodies)]), range(40)))
        wait_written(fuzz_gateway, written + sum(a.status == 200 for a in answers))
    for i, a in enumerate(answers):
        assert_acceptable(a, f"body {i % len(bodies)}")
    after = rss_kib(pid)
    peak = rss_kib(pid, "VmHWM")
    assert after - before < 256 * 1024, f"RSS grew from {before // 1024} to {after // 1024} MiB"
    assert peak < 1536 * 1024, f"RSS peaked at {peak // 1024} MiB"
    w.assert_responsive(BURST_HEALTH_BOUND_MS)

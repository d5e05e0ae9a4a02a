"""Bad input gets a 4xx JSON error in OpenAI's format naming the problem; never a 500, a hang or a crash."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config


def _post(url: str, data: bytes, ctype: str | None = "application/json", method: str = "POST") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


CASES = [
    ("not json", b"{'model':", 400, "not valid JSON", None),
    ("empty", b"", 400, "empty", None),
    ("array", b"[1,2]", 400, "JSON object", None),
    ("no model", b'{"messages":[{"role":"user","content":"x"}]}', 400, "'model' is required", "model"),
    ("model wrong type", b'{"model":5,"messages":[{"role":"user","content":"x"}]}', 400, "'model' must be", "model"),
    ("no messages", b'{"model":"fakeai/gpt-4o"}', 400, "'messages' is required", "messages"),
    ("messages empty", b'{"model":"fakeai/gpt-4o","messages":[]}', 400, "non-empty", "messages"),
    (
        "bad role",
        b'{"model":"fakeai/gpt-4o","messages":[{"role":"wizard","content":"x"}]}',
        400,
        "role",
        "messages[0].role",
    ),
    (
        "content wrong type",
        b'{"model":"fakeai/gpt-4o","messages":[{"role":"user","content":5}]}',
        400,
        "content",
        "messages[0].content",
    ),
    (
        "stream wrong type",
        b'{"model":"fakeai/gpt-4o","stream":"yes","messages":[{"role":"user","content":"x"}]}',
        400,
        "'stream'",
        "stream",
    ),
    (
        "max_tokens negative",
        b'{"model":"fakeai/gpt-4o","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}',
        400,
        "max_tokens",
        "max_tokens",
    ),
    (
        "max_tokens 2^63 (once answered as 'Redis is down' by a limiter)",
        b'{"model":"fakeai/gpt-4o","max_tokens":9223372036854775808,"messages":[{"role":"user","content":"x"}]}',
        400,
        "at most 2147483647",
        "max_tokens",
    ),
    (
        "max_tokens just past 32 bits",
        b'{"model":"fakeai/gpt-4o","max_tokens":2147483648,"messages":[{"role":"user","content":"x"}]}',
        400,
        "at most 2147483647",
        "max_tokens",
    ),
    (
        "n 1000",
        b'{"model":"fakeai/gpt-4o","n":1000,"messages":[{"role":"user","content":"x"}]}',
        400,
        "at most 128",
        "n",
    ),
    (
        "unknown model",
        b'{"model":"nope/gpt-4o","messages":[{"role":"user","content":"x"}]}',
        404,
        "does not exist",
        "model",
    ),
    (
        "unknown bare model",
        b'{"model":"gpt-17","messages":[{"role":"user","content":"x"}]}',
        404,
        "does not exist",
        "model",
    ),
    (
        "a misspelt alias",
        b'{"model":"fsat","messages":[{"role":"user","content":"x"}]}',
        404,
        "does not exist. Did you mean 'fast'?",
        "model",
    ),
    (
        "a misspelt provider",
        b'{"model":"fkaeai/gpt-4o","messages":[{"role":"user","content":"x"}]}',
        404,
        "does not exist. Did you mean 'fakeai/gpt-4o'?",
        "model",
    ),
    ("models wrong type", b'{"models":"a","messages":[{"role":"user","content":"x"}]}', 400, "'models'", "models"),
    (
        "4,000 fallbacks (planning them froze the gateway)",
        b'{"model":"fakeai/gpt-4o","models":['
        + b",".join(b'"fakeai/m%d"' % i for i in range(4000))
        + b'],"messages":[{"role":"user","content":"x"}]}',
        400,
        "at most 9 models",
        "models",
    ),
    (
        "9 fallbacks besides the model",
        b'{"model":"fakeai/gpt-4o","models":['
        + b",".join(b'"fakeai/m%d"' % i for i in range(9))
        + b'],"messages":[{"role":"user","content":"x"}]}',
        400,
        "at most 8 fallbacks",
        "models",
    ),
    (
        "a 1 MiB model name (it became a metric label and a header)",
        b'{"model":"fakeai/' + b"x" * (1 << 20) + b'","messages":[{"role":"user","content":"x"}]}',
        400,
        "at most 256 visible ASCII characters",
        "model",
    ),
    (
        "a model name with a newline",
        b'{"model":"fakeai/gpt-4o\\nx-evil: 1","messages":[{"role":"user","content":"x"}]}',
        400,
        "visible ASCII",
        "model",
    ),
    (
        "a role that is an object",
        b'{"model":"fakeai/gpt-4o","messages":[{"role":{"a":1},"content":"x"}]}',
        400,
        "must be one of",
        "messages[0].role",
    ),
    (
        "a role that is an array",
        b'{"model":"fakeai/gpt-4o","messages":[{"role":["user"],"content":"x"}]}',
        400,
        "must be one of",
        "messages[0].role",
    ),
    (
        "JSON nested 1,000 levels deep (it failed when re-encoded for the upstream)",
        b'{"model":"fakeai/gpt-4o","trace":{"x":'
        + b"[" * 1000
        + b"]" * 1000
        + b'},"messages":[{"role":"user","content":"x"}]}',
        400,
        "nested deeper than 64 levels",
        None,
    ),
    (
        "a fallback name with a space",
        b'{"model":"fakeai/gpt-4o","models":["fakeai/gpt 4o"],"messages":[{"role":"user","content":"x"}]}',
        400,
        "visible ASCII",
        "models[0]",
    ),
    (
        "trace wrong type",
        b'{"model":"fakeai/gpt-4o","trace":"t","messages":[{"role":"user","content":"x"}]}',
        400,
        "'trace'",
        "trace",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "words", "param"), CASES, ids=[c[0] for c in CASES])
def test_bad_chat_request_gets_a_4xx_in_openai_format(
    gateway: GatewayProcess, name: str, body: bytes, status: int, words: str, param: str | None
) -> None:
    code, err = _post(gateway.base_url + "/chat/completions", body)
    assert code == status
    assert set(err["error"]) == {"message", "type", "param", "code"}
    assert words in err["error"]["message"]
    assert err["error"]["param"] == param


def test_wrong_content_type_is_415(gateway: GatewayProcess) -> None:
    code, err = _post(gateway.base_url + "/chat/completions", b"model=x", ctype="application/x-www-form-urlencoded")
    assert code == 415 and err["error"]["code"] == "unsupported_media_type"


def test_unknown_route_is_404_and_wrong_method_is_405(gateway: GatewayProcess) -> None:
    code, err = _post(gateway.base_url + "/completions/legacy", b"{}")
    assert code == 404 and "Unknown request URL" in err["error"]["message"]
    code, err = _post(gateway.base_url + "/chat/completions", None, ctype=None, method="GET")  # type: ignore[arg-type]
    assert code == 405


def test_bad_embeddings_input_is_400(gateway: GatewayProcess) -> None:
    code, err = _post(gateway.base_url + "/embeddings", b'{"model":"fakeai/text-embedding-3-small","input":{"a":1}}')
    assert code == 400 and err["error"]["param"] == "input"


@pytest.fixture(scope="module")
def small_gateway(fake: Fake) -> Iterator[GatewayProcess]:
    cfg = standard_config(fake.url).replace("admin_key:", "server:\n  max_body_bytes: 2048\nadmin_key:", 1)
    gw = GatewayProcess(cfg, env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield gw
    gw.stop()


def test_an_oversized_body_is_413_and_the_gateway_keeps_serving(small_gateway: GatewayProcess) -> None:
    big = orjson.dumps({"model": "fakeai/gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]})
    code, err = _post(small_gateway.base_url + "/chat/completions", big)
    assert code == 413 and "2048" in err["error"]["message"]
    ok = orjson.dumps({"model": "fakeai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert _post(small_gateway.base_url + "/chat/completions", ok)[0] == 200

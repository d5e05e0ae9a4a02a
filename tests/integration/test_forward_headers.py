"""`forward_headers:` on a real gateway in front of the fake upstream: a listed client header reaches the provider
that lists it, an unlisted one never does, nor does a listed one reach another provider; credential and
hop-by-hop headers are refused when the config loads."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess

SENT = {
    "OpenAI-Organization": "org-forwarded",
    "anthropic-beta": "beta-forwarded",
    "x-not-listed": "never-forwarded",
    "x-fake-behaviour": "tokens=3",
}


def _config(fake_url: str) -> str:
    return f"""
admin_key: {ADMIN_KEY}
providers:
  - name: fwd
    kind: openai_compatible
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    forward_headers: [OpenAI-Organization, x-fake-behaviour]
    models: [gpt-4o-mini]
  - name: plain
    kind: openai_compatible
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    models: [gpt-4o-mini]
  - name: claudefwd
    kind: anthropic
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    headers: {{anthropic-beta: beta-of-the-config}}
    forward_headers: [anthropic-beta, x-fake-behaviour]
    models: [claude-3-5-haiku-latest]
"""


@pytest.fixture(scope="module")
def gw(fake: Fake) -> Iterator[GatewayProcess]:
    g = GatewayProcess(_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield g
    g.stop()


def _client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)


def _arrived(fake: Fake) -> dict[str, str]:
    headers: dict[str, str] = fake.requests()[-1]["headers"]
    return headers


@pytest.mark.parametrize("stream", [False, True])
def test_listed_headers_reach_the_provider_that_lists_them(gw: GatewayProcess, fake: Fake, stream: bool) -> None:
    fake.reset()
    r = _client(gw).chat.completions.create(
        model="fwd/gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=stream,
        extra_headers=SENT,
    )
    text = "".join(c.choices[0].delta.content or "" for c in r if c.choices) if stream else r.choices[0].message.content
    assert text == "the quick brown"  # the fake read the forwarded x-fake-behaviour: tokens=3
    got = _arrived(fake)
    assert got["openai-organization"] == "org-forwarded"
    assert got["x-fake-behaviour"] == "tokens=3"
    assert "x-not-listed" not in got
    assert "anthropic-beta" not in got  # listed for another provider only


def test_a_provider_without_the_list_gets_none(gw: GatewayProcess, fake: Fake) -> None:
    fake.reset()
    r = _client(gw).chat.completions.create(
        model="plain/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers=SENT
    )
    assert r.usage is not None and r.usage.completion_tokens == 16  # the fake's default: no header reached it
    got = _arrived(fake)
    assert not {"openai-organization", "x-not-listed", "x-fake-behaviour", "anthropic-beta"} & set(got)


def test_forwarded_header_wins_over_the_configured_one_on_anthropic(gw: GatewayProcess, fake: Fake) -> None:
    fake.reset()
    claude = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    r = claude.messages.create(
        model="claudefwd/claude-3-5-haiku-latest",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=SENT,
    )
    assert r.usage.output_tokens == 3
    got = _arrived(fake)
    assert got["anthropic-beta"] == "beta-forwarded"
    assert "x-not-listed" not in got and "openai-organization" not in got
    # Without the client's header, the provider's own configured value is sent.
    fake.reset()
    _client(gw).chat.completions.create(
        model="claudefwd/claude-3-5-haiku-latest", messages=[{"role": "user", "content": "hi"}]
    )
    assert _arrived(fake)["anthropic-beta"] == "beta-of-the-config"


def test_a_forwarded_value_past_1_kib_is_refused(gw: GatewayProcess, fake: Fake) -> None:
    # Refused before any attempt, whichever provider the request would reach: the answer does not depend on
    # whether a route's first target failed over to one that forwards the header.
    fake.reset()
    for model in ("fwd/gpt-4o-mini", "plain/gpt-4o-mini"):
        with pytest.raises(openai.BadRequestError) as e:
            _client(gw).chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"OpenAI-Organization": "o" * 1025},
            )
        assert e.value.body["param"] == "openai-organization"
        assert "at most 1024 bytes" in e.value.message
    assert not fake.requests()  # no upstream was asked


@pytest.mark.parametrize(
    ("listed", "said"),
    [
        ("[authorization]", "'authorization' cannot be forwarded: it is a credential header"),
        ("[X-Api-Key]", "'x-api-key' cannot be forwarded: it is a credential header"),
        ("[cookie]", "'cookie' cannot be forwarded: it is a credential header"),
        ("[host]", "'host' cannot be forwarded: the gateway sets it itself"),
        ("[content-length]", "'content-length' cannot be forwarded: the gateway sets it itself"),
        ("[transfer-encoding]", "'transfer-encoding' cannot be forwarded"),
        ("[x-a, x-a]", "'x-a' is listed twice"),
        ("['bad name']", "is not a header name"),
        ("[" + ", ".join(f"x-h{i}" for i in range(17)) + "]", "lists 17 headers; at most 16 may be forwarded"),
    ],
)
def test_config_refuses_headers_that_must_not_be_forwarded(tmp_path: Path, listed: str, said: str) -> None:
    cfg = tmp_path / "relaycast.yaml"
    cfg.write_text(
        f"""
providers:
  - name: openai
    kind: openai_compatible
    base_url: http://127.0.0.1:9/v1
    forward_headers: {listed}
"""
    )
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "serve", "--config", str(cfg), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "providers[0].forward_headers" in r.stderr
    assert said in r.stderr

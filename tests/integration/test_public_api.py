"""The package's public surface: `relaycast.load_config` and `relaycast.create_app`, served by uvicorn."""

from __future__ import annotations

import openai
import pytest

import relaycast
from relaycast.config import ConfigError
from relaycast.server.runner import ThreadedServer
from tests.conftest import UPSTREAM_KEY, Fake


def test_an_app_made_by_create_app_from_load_config_serves_chat_completions(fake: Fake, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PUBLIC_API_UPSTREAM_KEY", UPSTREAM_KEY)
    path = tmp_path / "relaycast.yaml"
    path.write_text(
        f"""
providers:
  - name: fakeai
    kind: openai_compatible
    base_url: {fake.url}
    api_key: ${{PUBLIC_API_UPSTREAM_KEY}}
models:
  - name: fast
    targets: [fakeai/gpt-4o-mini]
"""
    )
    app = relaycast.create_app(relaycast.load_config(str(path)))
    with ThreadedServer(app) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
        assert answer.model


def test_load_config_names_the_place_of_a_problem(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("providers:\n  - name: x\n    kind: opnai\n")
    with pytest.raises(ConfigError) as e:
        relaycast.load_config(str(path))
    assert "providers[0].kind: unknown kind 'opnai'" in str(e.value)


def test_a_request_before_startup_gets_a_503_in_openai_format() -> None:
    import asyncio

    from relaycast.config import parse

    app = relaycast.create_app(
        parse("providers: [{name: p, kind: openai_compatible, base_url: 'http://127.0.0.1:9/v1'}]\nmodels: []", env={})
    )
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 503
    assert b'"type":"server_error"' in sent[1]["body"]

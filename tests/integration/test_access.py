"""Gateway keys, the admin key, and refusing to listen openly without keys."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import orjson
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess, standard_config

APP_KEY = "rc-app-key-0123456789"
MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def keyed(fake: Fake) -> Iterator[GatewayProcess]:
    keys = "keys:\n  - name: web-app\n    secret: ${APP_KEY}\n  - name: batch\n    sha256: " + "ab" * 32 + "\n"
    gw = GatewayProcess(
        standard_config(fake.url, keys), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "APP_KEY": APP_KEY}
    ).wait_ready()
    yield gw
    gw.stop()


def test_with_keys_configured_a_request_without_a_key_is_401(keyed: GatewayProcess) -> None:
    req = urllib.request.Request(
        keyed.base_url + "/chat/completions",
        data=orjson.dumps({"model": "fakeai/gpt-4o", "messages": MSGS}),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401
    body = orjson.loads(e.value.read())
    assert body["error"]["type"] == "authentication_error" and "Missing API key" in body["error"]["message"]


def test_an_unknown_key_is_401_and_a_known_key_is_served(keyed: GatewayProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.base_url, api_key="rc-wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=keyed.base_url, api_key=APP_KEY, max_retries=0)
    assert good.chat.completions.create(model="fakeai/gpt-4o", messages=MSGS).choices
    assert APP_KEY not in keyed.log()


def _admin(url: str, key: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/admin/stats")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def test_admin_endpoints_need_the_admin_key_not_a_client_key(keyed: GatewayProcess) -> None:
    assert _admin(keyed.url, None)[0] == 401
    assert _admin(keyed.url, APP_KEY)[0] == 401
    status, stats = _admin(keyed.url, ADMIN_KEY)
    assert status == 200 and stats["requests"] >= 1


def test_admin_stats_count_attempts_by_target_and_class(gateway: GatewayProcess) -> None:
    c = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    c.chat.completions.create(model="fast", messages=MSGS)
    status, stats = _admin(gateway.url, ADMIN_KEY)
    assert status == 200
    assert stats["targets"]["fakeai/gpt-4o-mini@error=503"]["attempts"]["upstream_5xx"] >= 1
    assert stats["targets"]["fakeai/gpt-4o-mini"]["attempts"]["ok"] >= 1


def test_serve_refuses_a_non_loopback_address_without_keys(fake: Fake, tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(standard_config(fake.url))
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "serve", "--config", str(cfg), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"TEST_UPSTREAM_KEY": "k", "PATH": ""},
    )
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0" in r.stderr and "--insecure" in r.stderr

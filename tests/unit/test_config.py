"""Config is YAML with ${ENV} references, validated at load; every problem names its exact place."""

from __future__ import annotations

import subprocess
import sys

import pytest

from relaycast.config import ConfigError, load, parse
from relaycast.keys.settings import hash_secret

GOOD = """
server: {host: 127.0.0.1, port: 9000}
providers:
  - name: openai
    kind: openai
    api_key: ${OPENAI_API_KEY}
    models: [gpt-4o-mini]
  - name: local
    kind: vllm
    base_url: http://127.0.0.1:8000/v1/
    headers: {x-team: ml}
  - name: anthropic
    api_key: ${ANTHROPIC_API_KEY:-sk-ant-default-1234}
models:
  - name: fast
    targets: [openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest]
keys:
  - name: app
    secret: ${APP_KEY}
"""


def test_a_good_config_loads_with_presets_env_references_and_defaults() -> None:
    cfg = parse(GOOD, env={"OPENAI_API_KEY": "sk-live-1", "APP_KEY": "app-secret-1"})
    assert cfg.server.port == 9000
    assert (cfg.server.drain_timeout, cfg.server.flush_timeout) == (30.0, 10.0)  # on SIGTERM
    assert cfg.server.telemetry_priority == "auto"
    assert cfg.providers["openai"].base_url == "https://api.openai.com/v1"
    assert cfg.providers["openai"].api_key == "sk-live-1"
    assert cfg.providers["local"].base_url == "http://127.0.0.1:8000/v1"
    assert cfg.providers["local"].headers == (("x-team", "ml"),)
    assert cfg.providers["anthropic"].adapter == "anthropic"
    assert cfg.providers["anthropic"].api_key == "sk-ant-default-1234"
    assert cfg.models["fast"].targets == ("openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest")
    assert cfg.keys[0].sha256 == hash_secret("app-secret-1")
    assert "sk-live-1" in cfg.secrets() and "sk-live-1" not in repr(cfg)


def test_a_loaded_config_is_frozen() -> None:
    cfg = parse(GOOD, env={"OPENAI_API_KEY": "k", "APP_KEY": "app-secret-1"})
    with pytest.raises(AttributeError):
        cfg.server.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.providers["x"] = cfg.providers["openai"]  # type: ignore[index]


BAD = [
    ("providers:\n  - name: a\n    kind: opnai\n", "providers[0].kind: unknown kind 'opnai'"),
    (
        "providers:\n  - {name: a, kind: openai, api_key: k}\nmodels:\n  - {name: m, targets: [a/x]}\n  - {name: n, targets: [a/x]}\n"
        "  - {name: o, targets: [opnai/gpt-4o]}\n",
        "models[2].targets[0]: unknown provider 'opnai'",
    ),
    (
        "providers:\n  - {name: a, kind: openai, api_key: '${NOPE_KEY}'}\n",
        "providers[0].api_key: environment variable NOPE_KEY is not set",
    ),
    ("providers:\n  - {name: a, kind: vllm}\n", "providers[0].base_url: required for kind 'vllm'"),
    ("providers:\n  - {name: a, kind: openai, apikey: k}\n", "providers[0].apikey: unknown setting"),
    (
        "providers:\n  - {name: a, kind: openai}\n  - {name: a, kind: groq}\n",
        "providers[1].name: duplicate provider name 'a'",
    ),
    (
        "providers:\n  - {name: a, kind: openai}\nmodels:\n  - {name: m, targets: [gpt-4o]}\n",
        "models[0].targets[0]: 'gpt-4o' is not of the form provider/model",
    ),
    ("providers:\n  - {name: a, kind: openai}\nserver: {port: http}\n", "server.port: expected an integer"),
    (
        "providers:\n  - {name: a, kind: openai}\nserver: {drain_timeout: 0}\n",
        "server.drain_timeout: expected a positive number of seconds",
    ),
    (
        "providers:\n  - {name: a, kind: openai}\nserver: {flush_timeout: 7200}\n",
        "server.flush_timeout: 7200 is out of range (0, 3600] seconds",
    ),
    (
        "providers:\n  - {name: a, kind: openai}\nserver: {telemetry_priority: low}\n",
        "server.telemetry_priority: expected 'auto', 'idle' or a nice increment from 0 to 19, got 'low'",
    ),
    (
        "providers:\n  - {name: a, kind: openai}\nserver: {telemetry_priority: 20}\n",
        "server.telemetry_priority: 20 is out of range [0, 19]",
    ),
    (
        "providers:\n  - {name: a, kind: openai, timeouts: {total: -1}}\n",
        "providers[0].timeouts.total: expected a positive number",
    ),
    ("providers: [\n", "invalid YAML"),
    ("server: {}\n", "providers: at least one provider is required"),
    (
        "providers:\n  - {name: a, kind: openai}\nkeys:\n  - {name: k, secret: short}\n",
        "keys[0].secret: must be at least 8 characters",
    ),
    (
        "providers:\n  - {name: a, kind: openai}\nmodels:\n  - {name: m, targets: [{target: a/x, price: {input: -1}}]}\n",
        "models[0].targets[0].price.input: must be a price in USD per million tokens, got -1",
    ),
    (
        "providers:\n  - {name: a, kind: openai}\nmodels:\n"
        "  - {name: m, targets: [a/y, {target: a/x, price: {output: 0.0000001}}]}\n",
        "models[0].targets[1].price.output: 1e-07 has more than six decimals per million tokens",
    ),
    (
        "providers:\n  - {name: a, kind: openai}\nmodels:\n  - {name: m, targets: [{target: a/x, price: {inptu: 1}}]}\n",
        "models[0].targets[0].price.inptu: unknown setting",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_an_invalid_config_names_the_exact_place_and_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, env={})
    assert message in str(e.value)


def test_invalid_yaml_points_at_the_line(tmp_path) -> None:
    p = tmp_path / "relaycast.yaml"
    p.write_text("providers:\n  - name: a\n    kind: [openai\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    assert str(p) in str(e.value) and "line" in str(e.value)


def test_serve_with_an_invalid_config_stops_with_the_message_and_exit_2(tmp_path) -> None:
    p = tmp_path / "relaycast.yaml"
    p.write_text("providers:\n  - {name: a, kind: openai}\nmodels:\n  - {name: m, targets: [opnai/x]}\n")
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "serve", "--config", str(p)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert "models[0].targets[0]: unknown provider 'opnai'" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_providers_server_is_its_base_urls_host_and_port_and_none_for_a_bad_port() -> None:
    from relaycast.providers.settings import ProviderConfig

    def server(url: str) -> object:
        return ProviderConfig(name="p", kind="openai_compatible", adapter="openai", base_url=url).server

    assert server("https://api.openai.com/v1") == ("api.openai.com", 443)
    assert server("http://127.0.0.1:8000/v1") == ("127.0.0.1", 8000)
    assert server("http://127.0.0.1:99999/v1") is None


def test_the_telemetry_priority_is_auto_idle_or_a_nice_increment() -> None:
    base = "providers:\n  - {name: a, kind: openai}\nserver: {telemetry_priority: %s}\n"
    assert parse(base % "auto").server.telemetry_priority == "auto"
    assert parse(base % "idle").server.telemetry_priority == "idle"
    assert parse(base % "0").server.telemetry_priority == 0
    assert parse(base % "'${PRIO}'", env={"PRIO": "7"}).server.telemetry_priority == 7

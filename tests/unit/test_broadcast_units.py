"""Pure pieces of broadcast: settings and the standard environment variables, Datadog span encoding limits,
the age limit, and the broadcast families /metrics reads."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import msgspec
import pytest
from yarl import URL

from relaycast.config import ConfigError, parse
from relaycast.log import EventLog
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.telemetry.exporters.base import EnvProxies
from relaycast.telemetry.exporters.datadog import DatadogExporter
from relaycast.telemetry.pipeline import Destination
from relaycast.telemetry.settings import DatadogOptions, DestinationConfig, OtlpOptions, parse_site
from relaycast.telemetry.spool import Spool

BASE = "providers: [{name: a, kind: openai, api_key: k}]\n"


@pytest.mark.parametrize(
    ("given", "site"),
    [
        ("us5.datadoghq.com", "us5.datadoghq.com"),
        ("https://api.us5.datadoghq.com", "us5.datadoghq.com"),
        ("https://api.datadoghq.com/", "datadoghq.com"),
        ("app.datadoghq.eu", "datadoghq.eu"),
        ("AP1.datadoghq.com", "ap1.datadoghq.com"),
    ],
)
def test_a_site_is_accepted_as_a_name_or_a_url(given: str, site: str) -> None:
    assert parse_site(given, "site") == site


def test_a_gov_or_unknown_site_is_refused_with_the_list() -> None:
    with pytest.raises(ConfigError) as e:
        parse_site("ddog-gov.com", "broadcast.destinations[0].site")
    assert "broadcast.destinations[0].site" in str(e.value) and "us5.datadoghq.com" in str(e.value)


def test_dd_variables_alone_create_an_agentless_datadog_destination_defaulting_to_us5() -> None:
    cfg = parse(BASE, env={"DD_API_KEY": "k" * 32, "DD_LLMOBS_ML_APP": "shop", "DD_ENV": "prod", "DD_SERVICE": "gw"})
    (d,) = cfg.broadcast.destinations
    o = d.options
    assert isinstance(o, DatadogOptions) and o.agentless
    assert (o.site, o.ml_app, o.env, o.service) == ("us5.datadoghq.com", "shop", "prod", "gw")
    assert o.intake_url == "https://llmobs-intake.us5.datadoghq.com/api/v2/llmobs"
    assert o.api_url == "https://api.us5.datadoghq.com"
    assert "k" * 32 in cfg.secrets() and "k" * 32 not in repr(cfg)


def test_dd_agent_host_and_port_mean_agent_mode() -> None:
    cfg = parse(BASE, env={"DD_AGENT_HOST": "127.0.0.1", "DD_TRACE_AGENT_PORT": "8136", "DD_API_KEY": "x" * 32})
    o = cfg.broadcast.destinations[0].options
    assert o.agent_url == "http://127.0.0.1:8136" and o.api_key is None
    assert o.intake_url == "http://127.0.0.1:8136/evp_proxy/v2/api/v2/llmobs"


def test_agentless_enabled_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        parse(BASE, env={"DD_LLMOBS_AGENTLESS_ENABLED": "true"})
    assert "DD_API_KEY" in str(e.value)


def test_dd_llmobs_enabled_off_makes_no_destination_from_the_environment_and_leaves_a_configured_one() -> None:
    env = {"DD_API_KEY": "k" * 32}
    assert len(parse(BASE, env=env).broadcast.destinations) == 1
    for off in ("0", "false", "FALSE", " no ", "off"):
        assert parse(BASE, env={**env, "DD_LLMOBS_ENABLED": off}).broadcast.destinations == ()
    for on in ("1", "true", ""):
        assert len(parse(BASE, env={**env, "DD_LLMOBS_ENABLED": on}).broadcast.destinations) == 1
    text = BASE + "broadcast:\n  destinations:\n    - {kind: datadog}\n"  # the config names it: the config wins
    [d] = parse(text, env={**env, "DD_LLMOBS_ENABLED": "false"}).broadcast.destinations
    assert d.kind == "datadog" and d.options.api_key == "k" * 32


def test_config_values_win_over_the_environment() -> None:
    text = (
        BASE + "broadcast:\n  destinations:\n    - {name: dd, kind: datadog, ml_app: from-yaml, site: datadoghq.eu}\n"
    )
    cfg = parse(
        text,
        env={"DD_API_KEY": "k" * 32, "DD_LLMOBS_ML_APP": "from-env", "DD_SITE": "us3.datadoghq.com", "DD_ENV": "e"},
    )
    (d,) = cfg.broadcast.destinations
    assert (d.name, d.options.ml_app, d.options.site, d.options.env, d.options.api_key) == (
        "dd",
        "from-yaml",
        "datadoghq.eu",
        "e",
        "k" * 32,
    )


def test_otel_variables_create_an_otlp_destination() -> None:
    cfg = parse(
        BASE,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "dd-api-key=abc%3D,x=y",
        },
    )
    (d,) = cfg.broadcast.destinations
    assert isinstance(d.options, OtlpOptions)
    assert d.options.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert d.options.headers == (("dd-api-key", "abc="), ("x", "y"))


def test_a_bad_destination_names_the_place() -> None:
    with pytest.raises(ConfigError) as e:
        parse(
            BASE + "broadcast:\n  destinations:\n    - {name: x, kind: datadog, api_key: k, sample_rate: 2}\n", env={}
        )
    assert "broadcast.destinations[0].sample_rate" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse(BASE + "broadcast:\n  destinations:\n    - {name: x, kind: splunk}\n", env={})
    assert "broadcast.destinations[0].kind: unknown kind 'splunk'" in str(e.value)


def _dd(**over: object) -> DatadogExporter:
    opts = DatadogOptions(
        site="us5.datadoghq.com", ml_app="app", service="svc", env="test", api_key="k", agent_url=None
    )
    return DatadogExporter(DestinationConfig(name="dd", kind="datadog", options=opts, **over), None)  # type: ignore[arg-type]


def _record(output: str = "4", started: int | None = None) -> RequestRecord:
    return RequestRecord(
        request_id="req-1",
        endpoint="chat.completions",
        model_requested="m",
        stream=True,
        started_unix_ns=started or time.time_ns(),
        duration_ns=5_000_000,
        status_code=200,
        attribution=Attribution(user="u"),
        input_messages=({"role": "user", "content": "2+2?"},),
        output_text=output,
        attempts=(
            Attempt(
                target="openai/gpt-4o-mini",
                provider="openai",
                model="gpt-4o-mini",
                started_ns=1000,
                duration_ns=4_000_000,
                ttft_ns=1_500_000,
                usage=Usage(
                    prompt_tokens=10,
                    completion_tokens=3,
                    cached_tokens=4,
                    reasoning_tokens=1,
                    reported_cost_usd="0.00012",
                ),
                finish_reason="stop",
                cost_pusd=120_000_000,
                cost_source="reported",
            ),
        ),
    )


def test_datadog_units_are_seconds_for_ttft_and_dollars_for_cost() -> None:
    root, llm = (json.loads(x)["spans"][0] for x in _dd().encode(_record(), False, ()))
    assert llm["metrics"]["time_to_first_token"] == 0.0015
    assert llm["metrics"]["total_cost"] == 0.00012
    assert (llm["metrics"]["cache_read_input_tokens"], llm["metrics"]["reasoning_output_tokens"]) == (4, 1)
    assert root["metrics"] == {}, "tokens are counted once, on the llm span"


def test_an_oversized_span_keeps_everything_but_its_input_and_output() -> None:
    root, llm = (json.loads(x)["spans"][0] for x in _dd().encode(_record(output="x" * 5_100_000), False, ()))
    for span in (root, llm):
        assert span["collection_errors"] == ["dropped_io"]
        assert "dropped because of size" in json.dumps(span["meta"]["output"])
        assert span["tags"] and span["trace_id"]
    assert llm["metrics"]["output_tokens"] == 3


def test_a_failover_spans_each_carry_the_prompt_and_an_oversized_one_loses_only_its_own() -> None:
    served = _record()
    huge = "e" * 5_100_000  # an oversized span keeps everything but its input and output: this one stays large
    failed = Attempt("backup/m", "backup", "m", 0, 1000, error_class="upstream_5xx", error_message=huge)
    rec = msgspec.structs.replace(served, attempts=(failed, *served.attempts))
    _, first, second = (json.loads(x)["spans"][0] for x in _dd().encode(rec, False, ()))
    assert first["collection_errors"] == ["dropped_io"] and "dropped because of size" in json.dumps(first["meta"])
    assert first["tags"][-2:] == ["error:1", "error_type:upstream_5xx"] and "target:backup/m" in first["tags"]
    assert second["meta"]["input"] == {"messages": [{"role": "user", "content": "2+2?"}]}
    assert second["meta"]["output"] == {"messages": [{"role": "assistant", "content": "4"}]}
    assert "collection_errors" not in second and second["tags"][-1] == "error:0"
    assert "target:openai/gpt-4o-mini" in second["tags"] and "target:backup/m" not in second["tags"]


def test_spooled_spans_older_than_24_hours_are_discarded_and_counted(tmp_path) -> None:
    now = time.time_ns()

    async def run() -> dict:
        session = aiohttp.ClientSession()
        dest = DestinationConfig(
            name="dd",
            kind="datadog",
            options=DatadogOptions(
                site="us5.datadoghq.com",
                ml_app="a",
                service="s",
                env=None,
                api_key="k",
                agent_url=None,
                intake_url_override="http://127.0.0.1:9",
            ),
        )
        spool = Spool(tmp_path, 10**6)
        spool.put([b"{}"] * 3, now - 25 * 3600 * 10**9, records=2)
        red = Redactor()
        d = Destination(dest, DatadogExporter(dest, session), spool, red, EventLog(red), clock=lambda: now)
        await d._replay()
        await session.close()
        return d.status()

    status = asyncio.run(run())
    assert status["dropped"] == {"too_old": 2} and status["spooled_batches"] == 0, "counted in records"


def test_attribution_tags_reach_datadog_and_otlp_spans():
    """Free-form tags (the X-Relaycast-Tags header, scalar `trace` metadata) go to destinations as tags."""

    from relaycast.telemetry.exporters.otlp_semconv import common_attrs

    rec = msgspec.structs.replace(
        _record(),
        attribution=Attribution(
            user="u",
            feature="search",
            key_name="web",
            trace={"trace_name": "t", "order_id": 7},
            tags=(("team", "payments"), ("env", "prod"), ("ml_app", "someone-else"), ("ML_App", "x"), ("env:stg", "")),
        ),
    )
    root, llm = (json.loads(x)["spans"][0] for x in _dd().encode(rec, False, ()))
    for span in (root, llm):
        assert {"team:payments", "order_id:7", "feature:search", "gateway_key:web", "user_id:u"} <= set(span["tags"])
        # A client's tag never passes for one relaycast sets: a reserved key is sent as client.<key>.
        assert {"client.env:prod", "client.ml_app:someone-else", "client.ml_app:x", "env_stg:"} <= set(span["tags"])
        assert "env:prod" not in span["tags"]
        assert [t for t in span["tags"] if t.startswith("ml_app:")] == [f"ml_app:{_dd().o.ml_app}"]
    attrs = common_attrs(rec, ())
    assert attrs["relaycast.tag.team"] == "payments" and attrs["relaycast.feature"] == "search"


def test_overflow_is_one_policy_per_destination_drop_oldest_by_default() -> None:
    text = BASE + "broadcast:\n  destinations:\n    - {name: a, kind: webhook, url: 'http://127.0.0.1:9/x'}\n"
    text += "    - {name: b, kind: webhook, url: 'http://127.0.0.1:9/x', overflow: drop_newest}\n"
    a, b = parse(text, env={}).broadcast.destinations
    assert (a.overflow, b.overflow) == ("drop_oldest", "drop_newest")
    with pytest.raises(ConfigError) as e:
        parse(BASE + "broadcast:\n  destinations:\n    - {kind: file, path: x, overflow: block}\n", env={})
    assert "broadcast.destinations[0].overflow" in str(e.value) and "drop_newest" in str(e.value)


def test_metrics_show_every_drop_reason_per_destination_from_the_first_scrape(tmp_path) -> None:
    from relaycast.server.metrics_gauges import telemetry_gauges
    from relaycast.telemetry.pipeline import DROP_REASONS, Broadcaster

    text = BASE + f"broadcast:\n  spool_dir: {tmp_path}\n  destinations:\n"
    text += "    - {name: hook, kind: webhook, url: 'http://127.0.0.1:9/x', queue_size: 1}\n"
    cfg = parse(text, env={})

    async def scrape() -> dict[str, dict[tuple[str, ...], float]]:
        redactor = Redactor(cfg.secrets())
        async with aiohttp.ClientSession() as session:
            broadcaster = Broadcaster(cfg.broadcast, session, redactor, EventLog(redactor))
            broadcaster(_record())
            broadcaster(_record())  # a queue of one: the first is dropped
            return {name: dict(series) for name, _, _, _, series in telemetry_gauges(broadcaster, None, None)}

    families = asyncio.run(scrape())
    dropped = families["relaycast_broadcast_dropped_total"]
    assert set(dropped) == {("hook", r) for r in DROP_REASONS}
    assert dropped[("hook", "queue_full")] == 1 and dropped[("hook", "disk_full")] == 0
    assert families["relaycast_broadcast_healthy"] == {("hook",): 1.0}
    assert families["relaycast_broadcast_spooled_records"] == {("hook",): 0}


def test_every_datadog_site_with_llm_observability_is_accepted() -> None:
    for site in ("datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "datadoghq.eu", "uk1.datadoghq.com"):
        text = BASE + f"broadcast:\n  destinations:\n    - {{kind: datadog, api_key: k0123456789, site: {site}}}\n"
        [d] = parse(text, env={}).broadcast.destinations
        assert d.options.intake_url == f"https://llmobs-intake.{site}/api/v2/llmobs"


def test_datadog_gets_input_and_output_cost_that_add_up_and_where_the_cost_came_from() -> None:

    rec = _record()
    a = msgspec.structs.replace(rec.attempts[0], cost_pusd=1_234_567, cost_input_pusd=234_567, cost_source="estimated")
    rec = msgspec.structs.replace(rec, attempts=(a,))
    _, llm = (json.loads(x)["spans"][0] for x in _dd().encode(rec, False, ()))
    m = llm["metrics"]
    assert (m["input_cost"], m["output_cost"], m["total_cost"]) == (234_567e-12, 1_000_000e-12, 1_234_567e-12)
    assert "cost_source:estimated" in llm["tags"]


def test_ddtrace_override_origin_points_the_agentless_intake_elsewhere() -> None:
    from relaycast.telemetry.settings import datadog_from_env

    env = {
        "DD_API_KEY": "k0123456789",
        "DD_LLMOBS_AGENTLESS_ENABLED": "1",
        "DD_LLMOBS_OVERRIDE_ORIGIN": "http://dd-proxy:8080/",
    }
    d = datadog_from_env(env)
    assert d is not None and d.options.intake_url == "http://dd-proxy:8080/api/v2/llmobs"
    text = BASE + "broadcast:\n  destinations:\n    - {kind: datadog, api_key: k0123456789}\n"
    [cfg] = parse(text, env={"DD_LLMOBS_OVERRIDE_ORIGIN": "https://intake.example"}).broadcast.destinations
    assert cfg.options.intake_url == "https://intake.example/api/v2/llmobs"
    with pytest.raises(ConfigError):
        datadog_from_env({**env, "DD_LLMOBS_OVERRIDE_ORIGIN": "not a url"})


def test_odd_tool_calls_in_a_clients_messages_never_stop_a_record_reaching_its_destinations() -> None:

    from relaycast.telemetry.exporters.otlp import OtlpExporter
    from relaycast.telemetry.settings import OtlpOptions

    odd = (
        {"role": "assistant", "content": None, "tool_calls": 5},
        {"role": "assistant", "content": "x", "tool_calls": [7, {"function": "f"}, {"function": {"name": 3}}]},
        {"role": "tool", "content": ["a", {"text": "b"}], "tool_call_id": None},
    )
    rec = msgspec.structs.replace(_record(), input_messages=odd)
    assert _dd().encode(rec, False, ())
    otlp = OtlpExporter(
        DestinationConfig(
            name="o", kind="otlp", options=OtlpOptions(endpoint="http://127.0.0.1:9/v1/traces", headers=())
        ),
        None,  # type: ignore[arg-type]
    )
    assert otlp.encode(rec, False, ())


def test_a_streamed_tool_calls_arguments_gather_in_linear_time_and_stay_bounded() -> None:
    from relaycast.providers.base import MAX_TOOL_ARGUMENTS, StreamState

    state = StreamState()
    state.tool_call(0, "call_1", "write")
    for _ in range(600_000):  # 2.4 MB in 4-byte deltas: quadratic gathering would take minutes
        state.tool_call(0, arguments="abcd")
    state.tool_call(1, "call_2", "read", '{"p":1}')
    [first, second] = state.calls()
    assert (first["id"], first["name"]) == ("call_1", "write") and len(first["arguments"]) == MAX_TOOL_ARGUMENTS
    assert second == {"id": "call_2", "name": "read", "arguments": ""}  # no room left for more arguments


def test_the_proxy_variables_are_read_once_per_origin_and_no_proxy_exempts_a_host(monkeypatch) -> None:
    """Exporters reach destinations through HTTP_PROXY / HTTPS_PROXY unless NO_PROXY names the host; the variables
    are read once per origin (aiohttp's own `trust_env` read them on a thread for every request)."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ALL_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://user:pw@127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "intake.internal")
    proxies = EnvProxies()
    proxy, auth = proxies(URL("http://127.0.0.1:9/api/v2/llmobs"))
    assert proxy == URL("http://127.0.0.1:3128") and auth is not None and (auth.login, auth.password) == ("user", "pw")
    assert proxies(URL("http://intake.internal/v1/traces")) == (None, None)
    assert proxies(URL("https://127.0.0.1:9/")) == (None, None)  # no HTTPS_PROXY
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9999")
    assert proxies(URL("http://127.0.0.1:9/other"))[0] == URL("http://127.0.0.1:3128")  # the origin's, as read
    assert EnvProxies()(URL("http://127.0.0.1:9/other"))[0] == URL("http://127.0.0.1:9999")  # a new session reads again

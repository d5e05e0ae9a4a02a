"""The `posthog` kind: its settings, the LLM analytics events a record becomes (as PostHog documents
`$ai_generation` / `$ai_trace` and posthog-python sends them), and the capture and flags calls, against a capture
server answering as PostHog does."""

from __future__ import annotations

import gzip
import json
import threading

import aiohttp
import pytest

from relaycast.config_reader import ConfigError, Reader
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.server.runner import free_port
from relaycast.telemetry.exporters import posthog
from relaycast.telemetry.exporters.base import ExportError
from relaycast.telemetry.exporters.posthog import GZIP_IN_THREAD, MAX_EVENT_BYTES, PostHogExporter
from relaycast.telemetry.kinds.posthog import EU_HOST, US_HOST, PostHogOptions, parse
from relaycast.telemetry.settings import DestinationConfig, parse_broadcast
from tests.capture import AsyncCapture
from tests.capture import run_with_capture as run

KEY = "phc_test0123456789abcdefghijklmnopqrstuv"
T0 = 1_760_000_000_123_456_789


def _parse(m: dict, env: dict[str, str] | None = None) -> PostHogOptions:
    return parse(Reader(env or {}), m, "broadcast.destinations[0]", env or {}, None)  # type: ignore[arg-type]


def record(user: str | None = "alice", trace: dict | None = None, endpoint: str = "chat.completions") -> RequestRecord:
    """A streamed request that failed over once: a 503 (nothing billed), then an answer with a tool call."""
    return RequestRecord(
        request_id="req-ph-1",
        endpoint=endpoint,
        model_requested="fast",
        stream=True,
        started_unix_ns=T0,
        duration_ns=805_000_000,
        status_code=200,
        attribution=Attribution(user=user, session_id="conv-9", tags=(("team", "search"), ("$set", "x")), trace=trace),
        attempts=(
            Attempt(
                "fakeai/gpt-4o-mini",
                "fakeai",
                "gpt-4o-mini",
                0,
                10_000_000,
                error_class="upstream_5xx",
                error_message="HTTP 503 from fakeai",
                upstream_status=503,
            ),
            Attempt(
                "fakeai/gpt-4o-mini",
                "fakeai",
                "gpt-4o-mini",
                20_000_000,
                700_000_000,
                ttft_ns=150_000_000,
                usage=Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=4, reasoning_tokens=2),
                finish_reason="tool_calls",
                cost_pusd=1_050_000_000,
                cost_source="computed",
                vendor="openai",
                cost_input_pusd=50_000_000,
            ),
        ),
        params={"temperature": 0.2, "max_tokens": 64},
        input_messages=({"role": "user", "content": "what is in the secret box"},),
        output_text="let me look",
        output_tool_calls=({"id": "call_1", "name": "open_box", "arguments": '{"box": "secret"}'},),
    )


def dest(host: str = US_HOST) -> DestinationConfig:
    return DestinationConfig(name="ph", kind="posthog", options=PostHogOptions(api_key=KEY, host=host), timeout_s=2.0)


def events(rec: RequestRecord, privacy: bool = False, tags: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    return [json.loads(b) for b in PostHogExporter(dest(), None).encode(rec, privacy, tags)]  # type: ignore[arg-type]


# --- settings ---------------------------------------------------------------------------------------------------


def test_the_host_defaults_to_us_cloud_and_takes_the_regions_and_app_addresses() -> None:
    assert _parse({"api_key": KEY}).host == US_HOST
    assert _parse({"api_key": KEY, "host": "eu"}).host == EU_HOST
    assert _parse({"api_key": KEY, "host": "https://eu.posthog.com/"}).host == EU_HOST
    assert _parse({"api_key": KEY, "host": "https://app.posthog.com"}).host == US_HOST
    assert _parse({"api_key": KEY, "host": "https://posthog.example.com/"}).host == "https://posthog.example.com"


def test_key_and_host_come_from_posthogs_variables() -> None:
    env = {"POSTHOG_API_KEY": "phc_other", "POSTHOG_PROJECT_API_KEY": KEY, "POSTHOG_HOST": "https://eu.i.posthog.com"}
    o = _parse({}, env)
    assert (o.api_key, o.host) == (KEY, EU_HOST)
    assert _parse({}, {"POSTHOG_API_KEY": "phc_other"}).api_key == "phc_other"


def test_a_missing_key_says_where_to_find_it() -> None:
    with pytest.raises(ConfigError) as e:
        _parse({})
    assert "api_key" in str(e.value) and "Project settings" in str(e.value)


def test_a_personal_api_key_is_refused_plainly() -> None:
    with pytest.raises(ConfigError) as e:
        _parse({"api_key": "phx_personal0123456789"})
    assert "personal API key" in str(e.value)


def test_the_key_is_a_secret() -> None:
    raw = {"destinations": [{"kind": "posthog", "api_key": KEY}]}
    (d,) = parse_broadcast(Reader({}), raw, {}, None).destinations
    assert d.name == "posthog" and KEY in d.secrets() and KEY not in repr(d)


# --- events -------------------------------------------------------------------------------------------------------


def test_a_request_is_a_trace_with_a_generation_per_attempt() -> None:
    trace, failed, served = events(record(), tags=(("env", "prod"),))
    assert [trace["event"], failed["event"], served["event"]] == ["$ai_trace", "$ai_generation", "$ai_generation"]
    tid = trace["properties"]["$ai_trace_id"]
    assert len(tid) == 32 and {e["properties"]["$ai_trace_id"] for e in (failed, served)} == {tid}
    assert {e["distinct_id"] for e in (trace, failed, served)} == {"alice"}
    assert trace["properties"]["$ai_span_name"] == "relaycast.chat.completions"
    assert failed["properties"]["$ai_span_id"] != served["properties"]["$ai_span_id"]
    assert len({e["uuid"] for e in (trace, failed, served)}) == 3
    assert served["timestamp"] == "2025-10-09T08:53:20.143456Z"  # the attempt's own start

    p = served["properties"]
    assert (p["$ai_model"], p["$ai_provider"]) == ("gpt-4o-mini", "openai")
    assert (p["$ai_input_tokens"], p["$ai_output_tokens"]) == (11, 7)
    assert (p["$ai_cache_read_input_tokens"], p["$ai_reasoning_tokens"]) == (4, 2)
    assert p["$ai_cache_reporting_exclusive"] is False
    assert p["$ai_total_cost_usd"] == pytest.approx(0.00105) and p["$ai_input_cost_usd"] == pytest.approx(0.00005)
    assert p["$ai_output_cost_usd"] == pytest.approx(0.001)
    assert (p["$ai_latency"], p["$ai_time_to_first_token"], p["$ai_stream"]) == (0.7, 0.15, True)
    assert (p["$ai_http_status"], p["$ai_is_error"]) == (200, False)
    assert p["$ai_input"] == [{"role": "user", "content": "what is in the secret box"}]
    assert p["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "let me look"},
                {"type": "function", "id": "call_1", "function": {"name": "open_box", "arguments": {"box": "secret"}}},
            ],
        }
    ]
    assert (p["$ai_temperature"], p["$ai_max_tokens"]) == (0.2, 64)
    assert p["$ai_session_id"] == "conv-9" and p["relaycast_request_id"] == "req-ph-1"
    assert (p["team"], p["env"], p["tag_$set"]) == ("search", "prod", "x")  # a `$` tag never sets a person
    assert "$set" not in p and "$process_person_profile" not in p

    f = failed["properties"]
    assert (f["$ai_is_error"], f["$ai_http_status"], f["$ai_error"]) == (True, 503, "HTTP 503 from fakeai")
    assert f["$ai_total_cost_usd"] == 0.0 and "$ai_output_choices" not in f

    t = trace["properties"]
    assert t["$ai_latency"] == 0.805 and t["$ai_is_error"] is False
    assert t["$ai_input_state"] == p["$ai_input"] and t["$ai_output_state"] == p["$ai_output_choices"]


def test_an_anonymous_request_makes_no_person_profile() -> None:
    evs = events(record(user=None))
    tid = evs[0]["properties"]["$ai_trace_id"]
    assert {e["distinct_id"] for e in evs} == {tid}
    assert all(e["properties"]["$process_person_profile"] is False for e in evs)


def test_privacy_mode_sends_no_prompt_or_completion() -> None:
    raw = PostHogExporter(dest(), None).encode(record(), True, ())  # type: ignore[arg-type]
    assert not any(b"secret" in b or b"let me look" in b for b in raw)
    for e in map(json.loads, raw):
        assert not {"$ai_input", "$ai_output_choices", "$ai_input_state", "$ai_output_state"} & set(e["properties"])
    assert json.loads(raw[2])["properties"]["$ai_output_tokens"] == 7  # the metadata stays


def test_a_client_trace_id_groups_the_generations_and_no_trace_event_is_sent() -> None:
    evs = events(record(trace={"trace_id": "conv-42:turn-3", "parent_span_id": "agent-step-1"}))
    assert [e["event"] for e in evs] == ["$ai_generation", "$ai_generation"]
    assert {e["properties"]["$ai_trace_id"] for e in evs} == {"conv-42:turn-3"}
    assert {e["properties"]["$ai_parent_id"] for e in evs} == {"agent-step-1"}
    # One PostHog does not accept as a trace id (a space) is not used.
    assert events(record(trace={"trace_id": "has a space"}))[0]["event"] == "$ai_trace"


def test_client_metadata_never_takes_the_place_of_the_gateways_own_properties() -> None:
    """Tags and trace metadata come from the client: whatever their names, the request id, key name, feature,
    user and trace PostHog receives are relaycast's, and no tag becomes a property PostHog's capture reads."""
    forged = {
        "relaycast_request_id": "forged",
        "relaycast_key_name": "admin",
        "$ai_trace_id": "forged",
        "token": "phc_someone_elses_project",
        "distinct_id": "mallory",
        "team": "client",
    }
    rec = record(trace={"relaycast_feature": "forged", "distinct_id": "mallory-too"})
    fields = {f: getattr(rec, f) for f in rec.__struct_fields__}
    a = rec.attribution
    attribution = type(a)(
        user="alice",
        session_id=a.session_id,
        feature="search",
        key_name="web",
        trace=a.trace,
        tags=tuple(forged.items()),
    )
    evs = events(RequestRecord(**{**fields, "attribution": attribution}), tags=(("team", "operator"),))
    tid = evs[0]["properties"]["$ai_trace_id"]
    assert tid != "forged" and len(tid) == 32
    for e in evs:
        p = e["properties"]
        assert e["distinct_id"] == "alice"
        assert (p["relaycast_request_id"], p["relaycast_key_name"], p["relaycast_feature"]) == (
            "req-ph-1",
            "web",
            "search",
        )
        assert p["$ai_trace_id"] == tid
        assert "token" not in p and "distinct_id" not in p  # PostHog's capture reads these from properties
        assert (
            p["tag_token"] == "phc_someone_elses_project" and p["tag_distinct_id"] == "mallory"
        )  # the header tag wins over trace metadata
        assert p["team"] == "operator"  # the destination's own tag wins over the client's


def test_an_unpriced_attempt_leaves_the_cost_to_posthog() -> None:
    rec = record()
    a = rec.attempts[1]
    unpriced = Attempt(
        a.target, a.provider, a.model, a.started_ns, a.duration_ns, usage=a.usage, cost_source="unpriced"
    )
    fields = {f: getattr(rec, f) for f in rec.__struct_fields__}
    (_, gen) = events(RequestRecord(**{**fields, "attempts": (unpriced,)}))
    assert not {k for k in gen["properties"] if k.endswith("_cost_usd")}


def test_embeddings_are_embedding_events() -> None:
    evs = events(record(endpoint="embeddings"))
    assert [e["event"] for e in evs[1:]] == ["$ai_embedding", "$ai_embedding"]
    assert evs[2]["properties"]["$ai_input"] == ["what is in the secret box"]


def test_an_oversized_event_keeps_its_metadata_and_says_it_dropped_the_content() -> None:
    rec = record()
    fields = {f: getattr(rec, f) for f in rec.__struct_fields__}
    big = RequestRecord(**{**fields, "input_messages": ({"role": "user", "content": "x" * MAX_EVENT_BYTES},)})
    raw = PostHogExporter(dest(), None).encode(big, False, ())  # type: ignore[arg-type]
    assert all(len(b) <= MAX_EVENT_BYTES for b in raw)
    p = json.loads(raw[2])["properties"]
    assert p["relaycast_collection_errors"] == ["dropped_io"] and p["$ai_output_tokens"] == 7


# --- capture and Test Connection -----------------------------------------------------------------------------------


def test_a_batch_goes_to_the_batch_endpoint_gzipped_with_the_project_key() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> tuple[str, dict, dict]:
        exp = PostHogExporter(dest(cap.url), session)
        await exp.send(exp.encode(record(), False, ()))
        path, headers, data = cap.requests[0]
        # aiohttp's server inflates a gzip body as it reads it (a body that is not gzip would fail to read)
        return path, headers, json.loads(data if data[:1] == b"{" else gzip.decompress(data))

    path, headers, doc = run(body)
    assert path == "/batch/"
    assert headers["content-encoding"] == "gzip" and headers["content-type"] == "application/json"
    assert doc["api_key"] == KEY and doc["sentAt"].endswith("Z")
    assert [e["event"] for e in doc["batch"]] == ["$ai_trace", "$ai_generation", "$ai_generation"]


def test_a_large_batch_is_compressed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """gzip of a 5 MiB batch takes a good part of a second's CPU: above GZIP_IN_THREAD it runs in a worker thread,
    so the gateway's event loop keeps serving; a small batch is compressed in place."""
    threads: list[int] = []
    compress = gzip.compress

    def spy(data: bytes, compresslevel: int = 9, **kw: object) -> bytes:
        threads.append(threading.get_ident())
        return compress(data, compresslevel)

    monkeypatch.setattr(posthog.gzip, "compress", spy)
    rec = record()
    fields = {f: getattr(rec, f) for f in rec.__struct_fields__}
    big = RequestRecord(**{**fields, "input_messages": ({"role": "user", "content": "y" * (GZIP_IN_THREAD * 2)},)})

    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> tuple[int, list[int]]:
        exp = PostHogExporter(dest(cap.url), session)
        await exp.send(exp.encode(rec, False, ()))
        await exp.send(exp.encode(big, False, ()))
        sent = [len(data) for _, _, data in cap.requests]
        assert sent[1] > GZIP_IN_THREAD * 2  # (inflated by the capture server as it reads)
        return threading.get_ident(), sent

    loop_thread, _ = run(body)
    assert threads[0] == loop_thread and threads[1] != loop_thread


@pytest.mark.parametrize(
    ("status", "retryable", "says"), [(401, False, "refused the project API key"), (503, True, "503")]
)
def test_capture_errors_are_classified(status: int, retryable: bool, says: str) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> ExportError:
        cap.answers = [status]
        exp = PostHogExporter(dest(cap.url), session)
        with pytest.raises(ExportError) as e:
            await exp.send(exp.encode(record(), False, ()))
        return e.value

    err = run(body)
    assert err.retryable is retryable and says in err.message and KEY not in err.message


@pytest.mark.parametrize(
    ("answer", "ok", "says"),
    [
        ((200, {}, b'{"flags": {}, "errorsWhileComputingFlags": false}'), True, "accepted the project API key"),
        (
            (401, {}, b'{"type":"authentication_error","code":"invalid_api_key","detail":"Project API key invalid."}'),
            False,
            "invalid project API key",
        ),
        ((404, {}, b"Not Found"), False, "wrong host"),
    ],
)
def test_test_connection_checks_the_key_on_the_flags_endpoint(answer: tuple, ok: bool, says: str) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> tuple:
        cap.answers = [answer]
        r = await PostHogExporter(dest(cap.url), session).test()
        return r, cap.requests[0]

    result, (path, headers, data) = run(body)
    assert result.ok is ok and says in result.message and KEY not in result.message
    assert path == "/flags/" and json.loads(data) == {"api_key": KEY, "distinct_id": "relaycast-connection-test"}
    if not ok and answer[0] == 401:
        assert "Project API key invalid." in result.message


def test_test_connection_says_unreachable() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> str:
        return (await PostHogExporter(dest(f"http://127.0.0.1:{free_port()}"), session).test()).message

    assert run(body).startswith("unreachable: cannot reach http://127.0.0.1:")

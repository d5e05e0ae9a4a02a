"""PostHog LLM analytics, through PostHog's capture API as PostHog's own SDKs send it.

    POST <host>/batch/                      Content-Type: application/json, Content-Encoding: gzip
    {"api_key": "<project API key>", "sentAt": "<now>", "batch": [<event>, ...]}

(PostHog/posthog-python, posthog/request.py `batch_post`; https://posthog.com/docs/api/capture). Each event is
`{"event", "distinct_id", "properties", "timestamp", "uuid"}`; the uuid is derived from the request id, so an event
sent twice (a retry, a replay from the spool) is the same event.

A request becomes, in the LLM analytics event hierarchy (https://posthog.com/docs/llm-analytics/traces):

- one `$ai_generation` per provider attempt (`$ai_embedding` for an embeddings request), with the properties
  PostHog documents for it (posthog.com repo, contents/docs/llm-analytics/_snippets/generation-event.mdx):
  `$ai_trace_id`, `$ai_span_id`, `$ai_span_name`, `$ai_model`, `$ai_provider`, `$ai_input`, `$ai_output_choices`,
  `$ai_input_tokens`, `$ai_output_tokens`, cache and reasoning tokens, `$ai_latency` and `$ai_time_to_first_token`
  in seconds, `$ai_stream`, `$ai_http_status`, `$ai_is_error`, `$ai_error`, the model parameters, and relaycast's
  own cost as `$ai_input_cost_usd` / `$ai_output_cost_usd` / `$ai_total_cost_usd`, which PostHog keeps instead of
  pricing the tokens itself (PostHog/posthog, nodejs/src/ingestion/ai/costs/index.ts). An unpriced attempt sends no
  cost, and PostHog prices it from its own tables. A failed-over attempt is an error generation in the same trace.
- one `$ai_trace` per request naming the trace (`trace_name`, else `relaycast.<endpoint>`), with its whole input and
  output and its latency (docs: _snippets/trace-event.mdx). When the client sent its own `trace.trace_id` (a trace
  its application owns, shared by several requests), relaycast sends no `$ai_trace` and the generations join that
  trace.

`distinct_id` is the request's user; without one it is the trace id with `$process_person_profile: false`, exactly
as posthog-python's LLM wrappers do (posthog/ai/utils.py), so anonymous traffic makes no person profiles. Tokens are
sent as OpenAI counts them (cached tokens inside the input tokens), marked `$ai_cache_reporting_exclusive: false`
(PostHog/posthog, nodejs/src/ingestion/ai/costs/input-costs.ts). Privacy mode leaves out `$ai_input`,
`$ai_output_choices`, `$ai_input_state` and `$ai_output_state` entirely, as PostHog's own privacy mode does.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import time
import uuid
from typing import Any

import aiohttp
import orjson

from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.base import ExportError, TestResult, display_url, post
from relaycast.telemetry.exporters.jsonrecord import rfc3339
from relaycast.telemetry.kinds.posthog import PostHogOptions
from relaycast.telemetry.settings import DestinationConfig
from relaycast.version import __version__

MiB = 1024 * 1024
# posthog-python's consumer: 900 KiB per event, 5 MiB per batch (the server takes 20 MiB).
MAX_EVENT_BYTES = 900 * 1024
MAX_BATCH_BYTES = 5 * MiB - 64 * 1024
# What PostHog allows in a trace id (generation-event.mdx); another client trace id is not used as one.
TRACE_ID = re.compile(r"^[A-Za-z0-9\-_~.@()!':|]{1,200}$")
NAMESPACE = uuid.UUID("6f1c7a52-3b0e-5d8a-9c1e-2a4b6d8f0e13")  # relaycast's: event uuids from request ids
TEST_DISTINCT_ID = "relaycast-connection-test"
OURS = "relaycast_"  # relaycast's own properties; a client tag never takes one of these names, nor a `$` name
# Plain names PostHog's capture reads from `properties` when the event itself lacks them (PostHog/posthog,
# rust/common/types/src/event.rs, RawEvent::extract_token and extract_distinct_id): never a tag's name either.
RESERVED = frozenset({"token", "distinct_id"})
GZIP_IN_THREAD = 64 * 1024  # as otlp.py: a larger body is compressed off the event loop (5 MiB takes ~150 ms)


def trace_id(record: RequestRecord) -> tuple[str, bool]:
    """(the `$ai_trace_id`, whether the client gave it): the client's `trace.trace_id` when PostHog accepts it as
    one, else relaycast's own trace id for the request."""
    given = (record.attribution.trace or {}).get("trace_id")
    if isinstance(given, str) and TRACE_ID.match(given):
        return given, True
    return spans.trace_ids(record).trace_id, False


def event_uuid(record: RequestRecord, part: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{record.request_id}:{part}"))


def output_choices(record: RequestRecord, i: int, a: Attempt) -> list[dict[str, Any]] | None:
    """The serving attempt's answer in the content-part shape PostHog documents (text, then function calls)."""
    text = spans.attempt_output_text(record, i, a)
    serving = a.ok and i == len(record.attempts) - 1
    calls = record.output_tool_calls if serving else ()
    if text is None and not calls:
        return None
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for c in calls:
        content.append(
            {
                "type": "function",
                "id": c.get("id", ""),
                "function": {"name": c.get("name", ""), "arguments": spans.call_arguments(c.get("arguments", ""))},
            }
        )
    return [{"role": "assistant", "content": content}]


class PostHogExporter:
    kind = "posthog"
    max_batch_bytes = MAX_BATCH_BYTES
    max_age_s = None

    def __init__(self, dest: DestinationConfig, session: aiohttp.ClientSession) -> None:
        assert isinstance(dest.options, PostHogOptions)
        self.dest = dest
        self.o: PostHogOptions = dest.options
        self._session = session
        self._where = display_url(self.o.host, with_path=False)
        self._headers = {
            "content-type": "application/json",
            "content-encoding": "gzip",
            "user-agent": f"relaycast/{__version__}",
        }

    # --- encoding -------------------------------------------------------------------------------

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        tid, given = trace_id(record)
        common = self._common(record, tid, tags)
        out = [self._generation(record, i, a, tid, common, privacy) for i, a in enumerate(record.attempts)]
        if not given:
            out.insert(0, self._trace(record, tid, common, privacy))
        return out

    def _common(self, record: RequestRecord, tid: str, tags: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        """On every event: the trace, the session, who and what the request was for, and the tags. Tags (the
        client's, then the destination's, which win) come first and never under a name relaycast or PostHog
        gives a meaning (`$...`, `relaycast_...`, `token`, `distinct_id`): those are renamed `tag_<name>`, so the
        gateway's own values (request id, key name, feature, user) are always the ones PostHog receives."""
        a = record.attribution
        props: dict[str, Any] = {}
        for k, v in {**record.all_tags(), **dict(tags)}.items():
            props[f"tag_{k}" if k.startswith(("$", OURS)) or k in RESERVED else k] = v
        props["$ai_trace_id"] = tid
        if a.session_id:
            props["$ai_session_id"] = a.session_id
        for key, value in (
            ("relaycast_request_id", record.request_id),
            ("relaycast_client_request_id", record.client_request_id),
            ("relaycast_feature", a.feature),
            ("relaycast_app_url", a.app_url),
            ("relaycast_key_name", a.key_name),
        ):
            if value:
                props[key] = value
        if not a.user:
            props["$process_person_profile"] = False
        props["$lib"] = "relaycast"
        props["$lib_version"] = __version__
        return props

    def _event(
        self, name: str, record: RequestRecord, tid: str, props: dict[str, Any], start_ns: int, part: str
    ) -> bytes:
        doc = {
            "event": name,
            "distinct_id": record.attribution.user or tid,
            "properties": props,
            "timestamp": rfc3339(start_ns),
            "uuid": event_uuid(record, part),
        }
        data = orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)
        if len(data) <= MAX_EVENT_BYTES:
            return data
        # Too large for one event: the prompt and completion go, the rest stays, and the event says so.
        for key in ("$ai_input", "$ai_output_choices", "$ai_input_state", "$ai_output_state"):
            if key in props:
                props[key] = spans.DROPPED_IO
        props["relaycast_collection_errors"] = ["dropped_io"]
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)

    def _trace(self, record: RequestRecord, tid: str, common: dict[str, Any], privacy: bool) -> bytes:
        props = dict(common)
        props["$ai_span_name"] = spans.root_name(record)
        props["$ai_latency"] = record.duration_ns / 1e9
        props["$ai_is_error"] = record.error_class is not None
        if record.error_class:
            props["$ai_error"] = record.error_message or record.error_class
        if not privacy:
            props["$ai_input_state"] = list(record.input_messages)
            if record.output_text is not None or record.output_tool_calls:
                last = len(record.attempts) - 1
                choices = output_choices(record, last, record.attempts[last]) if record.attempts else None
                props["$ai_output_state"] = choices or [{"role": "assistant", "content": record.output_text}]
        props["relaycast_model_requested"] = record.model_requested
        props["relaycast_status_code"] = record.status_code
        props["relaycast_attempts"] = len(record.attempts)
        return self._event("$ai_trace", record, tid, props, record.started_unix_ns, "trace")

    def _generation(
        self, record: RequestRecord, i: int, a: Attempt, tid: str, common: dict[str, Any], privacy: bool
    ) -> bytes:
        embeddings = record.endpoint == "embeddings"
        props = dict(common)
        props["$ai_span_id"] = f"{spans.trace_ids(record).attempt_span_id(i):016x}"
        props["$ai_span_name"] = spans.attempt_name(record, a.provider)
        parent = (record.attribution.trace or {}).get("parent_span_id")
        if isinstance(parent, str) and parent:
            props["$ai_parent_id"] = parent
        props["$ai_model"] = a.model
        props["$ai_provider"] = a.vendor or a.provider.lower()
        if not privacy:
            if embeddings:
                props["$ai_input"] = [m["content"] for m in spans.input_messages(record)]
            else:
                props["$ai_input"] = list(record.input_messages)
                choices = output_choices(record, i, a)
                if choices is not None:
                    props["$ai_output_choices"] = choices
        u = a.usage
        props["$ai_input_tokens"] = u.prompt_tokens if u else 0
        if not embeddings:
            props["$ai_output_tokens"] = u.completion_tokens if u else 0
        if u is not None:
            if u.cached_tokens:
                props["$ai_cache_read_input_tokens"] = u.cached_tokens
            if u.cache_write_tokens:
                props["$ai_cache_creation_input_tokens"] = u.cache_write_tokens
            if u.reasoning_tokens:
                props["$ai_reasoning_tokens"] = u.reasoning_tokens
            props["$ai_cache_reporting_exclusive"] = False  # prompt_tokens includes the cache tokens
        props.update(_costs(a))
        props["$ai_latency"] = a.duration_ns / 1e9
        if a.ttft_ns is not None:
            props["$ai_time_to_first_token"] = a.ttft_ns / 1e9
        props["$ai_stream"] = record.stream
        if a.upstream_status is not None:
            props["$ai_http_status"] = a.upstream_status
        elif a.ok:
            props["$ai_http_status"] = 200
        props["$ai_is_error"] = not a.ok
        if not a.ok:
            props["$ai_error"] = a.error_message or a.error_class
        if record.params:
            props["$ai_model_parameters"] = record.params
            for param, prop in (("temperature", "$ai_temperature"), ("max_tokens", "$ai_max_tokens")):
                if isinstance(record.params.get(param), (int, float)):
                    props[prop] = record.params[param]
            if "$ai_max_tokens" not in props and isinstance(record.params.get("max_completion_tokens"), int):
                props["$ai_max_tokens"] = record.params["max_completion_tokens"]
        props["relaycast_provider"] = a.provider
        props["relaycast_target"] = a.target
        props["relaycast_attempt"] = i
        props["relaycast_cost_source"] = a.cost_source
        if a.finish_reason:
            props["relaycast_finish_reason"] = a.finish_reason
        if a.response_model:
            props["relaycast_response_model"] = a.response_model
        name = "$ai_embedding" if embeddings else "$ai_generation"
        return self._event(name, record, tid, props, record.started_unix_ns + a.started_ns, str(i))

    # --- sending --------------------------------------------------------------------------------

    def body(self, items: list[bytes], now_ns: int | None = None) -> bytes:
        """The batch request's JSON (before gzip): the key is added here, never inside a spooled item."""
        sent_at = rfc3339(time.time_ns() if now_ns is None else now_ns)
        return (
            b'{"api_key":'
            + orjson.dumps(self.o.api_key)
            + b',"sentAt":"'
            + sent_at.encode()
            + b'","batch":['
            + b",".join(items)
            + b"]}"
        )

    async def send(self, items: list[bytes]) -> None:
        if not items:
            return
        body = self.body(items)
        data = await asyncio.to_thread(gzip.compress, body, 5) if len(body) > GZIP_IN_THREAD else gzip.compress(body, 5)
        try:
            await post(
                self._session,
                self.o.host + "/batch/",
                data,
                self._headers,
                self.dest.timeout_s,
                f"PostHog {self._where}",
            )
        except ExportError as e:
            if e.status in (401, 403):
                raise ExportError(
                    f"PostHog {self._where} refused the project API key (HTTP {e.status})",
                    retryable=False,
                    status=e.status,
                ) from None
            raise

    async def test(self) -> TestResult:
        """The flags endpoint: the cheapest call that checks the project API key (`/flags/?v=2`, as PostHog's SDKs
        call it; a key it does not know answers 401 `invalid_api_key`). Nothing is captured."""
        body = orjson.dumps({"api_key": self.o.api_key, "distinct_id": TEST_DISTINCT_ID})
        headers = {"content-type": "application/json", "user-agent": f"relaycast/{__version__}"}
        try:
            async with self._session.post(
                self.o.host + "/flags/?v=2",
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.dest.timeout_s),
                allow_redirects=False,
            ) as r:
                raw = await r.read()
                status = r.status
        except TimeoutError:
            return TestResult(False, f"unreachable: {self._where} did not answer in {self.dest.timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as e:
            return TestResult(False, f"unreachable: cannot reach {self._where} ({type(e).__name__}); check host")
        if status == 200:
            return TestResult(True, f"ok: PostHog at {self._where} accepted the project API key")
        if status in (401, 403):
            return TestResult(
                False,
                f"invalid project API key: PostHog at {self._where} refused it (HTTP {status}{_detail(raw)}); use the "
                "project API key (phc_...) from Project settings, for a project on this host (US or EU)",
            )
        if status == 404:
            return TestResult(False, f"wrong host: {self._where} has no PostHog API (HTTP 404); check host")
        return TestResult(False, f"PostHog at {self._where} answered HTTP {status}{_detail(raw)}")

    async def close(self) -> None:
        return None  # the session belongs to the caller


def _costs(a: Attempt) -> dict[str, float]:
    """relaycast's cost of the attempt, in dollars. Nothing when it is unpriced (PostHog then prices the tokens);
    zero when nothing was billed (a failed attempt), so PostHog does not price it either."""
    if a.cost_source == "none":
        return {"$ai_input_cost_usd": 0.0, "$ai_output_cost_usd": 0.0, "$ai_total_cost_usd": 0.0}
    if a.cost_pusd is None or a.cost_source == "unpriced":
        return {}
    out = {"$ai_total_cost_usd": usd_float(a.cost_pusd)}
    if a.cost_input_pusd is not None:
        out["$ai_input_cost_usd"] = usd_float(a.cost_input_pusd)
        out["$ai_output_cost_usd"] = usd_float(a.cost_pusd - a.cost_input_pusd)
    return out


def _detail(raw: bytes) -> str:
    """PostHog's own words from an error answer (`{"detail": ...}`), short."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    detail = doc.get("detail") if isinstance(doc, dict) else None
    return f": {str(detail)[:200]}" if detail else ""

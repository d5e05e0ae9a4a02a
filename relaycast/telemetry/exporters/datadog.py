"""Datadog LLM Observability, in the wire format Datadog's own `ddtrace` library sends.

Agentless: `POST https://llmobs-intake.<site>/api/v2/llmobs` with `DD-API-KEY`. Through an Agent:
`POST <agent>/evp_proxy/v2/api/v2/llmobs` with `X-Datadog-EVP-Subdomain: llmobs-intake` (the agent adds the
key). The body is a JSON array of envelopes, one span each: a `workflow` root span for the request and one `llm`
span per provider attempt. Units as Datadog wants them: durations in ns, time to first token in seconds, cost
in dollars. A span of 5,000,000 bytes or more loses its input and output and is marked `dropped_io`.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.base import ExportError, TestResult, join_json_array, post
from relaycast.telemetry.settings import DatadogOptions, DestinationConfig
from relaycast.version import __version__

MAX_BODY = 5 * 1024 * 1024
MAX_SPAN = 5_000_000
TRACER_VERSION = f"relaycast-{__version__}"
# Tags relaycast sets (and Datadog reads): a client's tag of the same key is sent as `client.<key>`.
RESERVED_TAGS = frozenset(
    {
        "ml_app",
        "service",
        "env",
        "version",
        "source",
        "error",
        "error_type",
        "session_id",
        "user_id",
        "feature",
        "app_url",
        "gateway_key",
        "target",
        "provider",
        "cost_source",
        "host",
        "language",
        "model_name",
        "model_provider",
        "span_kind",
        "runtime-id",
        "ddtrace.version",
    }
)
CLIENT_PREFIX = "client."


def _client_tag(key: str, value: str) -> str:
    """A client's tag as Datadog reads it (a key lower-cased, up to its first colon): one whose key is reserved
    goes as `client.<key>`; a colon in a key becomes `_`, so the key cannot end early."""
    k = key.strip().lower().replace(":", "_").replace(" ", "_")
    return f"{CLIENT_PREFIX}{k}:{value}" if k in RESERVED_TAGS else f"{k}:{value}"


class DatadogExporter:
    kind = "datadog"
    max_batch_bytes = MAX_BODY - 64 * 1024  # room for the array's brackets and commas
    max_age_s = 24 * 3600.0  # Datadog refuses older spans

    def __init__(self, dest: DestinationConfig, session: aiohttp.ClientSession) -> None:
        assert isinstance(dest.options, DatadogOptions)
        self.dest = dest
        self.o: DatadogOptions = dest.options
        self._session = session
        if self.o.agentless:
            self._headers = {"content-type": "application/json", "dd-api-key": self.o.api_key or ""}
            self._what = f"Datadog intake ({self.o.site})"
        else:
            self._headers = {"content-type": "application/json", "x-datadog-evp-subdomain": "llmobs-intake"}
            self._what = f"Datadog Agent at {self.o.agent_url}"
        base = [f"ml_app:{self.o.ml_app}", f"service:{self.o.service}", "source:relaycast", f"version:{__version__}"]
        if self.o.env:
            base.append(f"env:{self.o.env}")
        self._base_tags = base

    # --- encoding -------------------------------------------------------------------------------

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        ids = spans.trace_ids(record)
        common = self._tags(record, tags)
        out = [self._envelope(self._root(record, ids, common, privacy))]
        if record.attempts:
            # Every llm span carries the same input messages: made once, read by each span's encoding in turn.
            msgs = None if privacy or record.endpoint == "embeddings" else _messages(record)
            for i, a in enumerate(record.attempts):
                out.append(self._envelope(self._attempt(record, i, a, ids, common, privacy, msgs)))
        return out

    def _envelope(self, span: dict[str, Any]) -> bytes:
        env = {"_dd.stage": "raw", "_dd.tracer_version": TRACER_VERSION, "event_type": "span", "spans": [span]}
        data = orjson.dumps(env)
        if len(data) < MAX_SPAN:
            return data
        span["meta"]["input"] = {"value": spans.DROPPED_IO}
        span["meta"]["output"] = {"value": spans.DROPPED_IO}
        span["collection_errors"] = ["dropped_io"]
        return orjson.dumps(env)

    def _tags(self, record: RequestRecord, extra: tuple[tuple[str, str], ...]) -> list[str]:
        a = record.attribution
        t = self._base_tags.copy()
        if a.user:
            t.append(f"user_id:{a.user}")
        if a.session_id:
            t.append(f"session_id:{a.session_id}")
        if a.feature:
            t.append(f"feature:{a.feature}")
        if a.app_url:
            t.append(f"app_url:{a.app_url}")
        if a.key_name:
            t.append(f"gateway_key:{a.key_name}")
        # A client's tags (`X-Relaycast-Tags`, `trace`) never pass for one relaycast sets: a reserved key is sent
        # as `client.<key>`. The destination's own `tags` (the operator's) are sent as they are.
        if a.trace or a.tags:
            t.extend(_client_tag(k, v) for k, v in record.all_tags().items())
        if extra:
            t.extend(f"{k}:{v}" for k, v in extra)
        return t

    def _span(
        self,
        record: RequestRecord,
        ids: spans.TraceIds,
        span_id: int,
        parent: str,
        name: str,
        start_ns: int,
        duration_ns: int,
        error: tuple[str, str] | None,
        tags: list[str],
    ) -> dict[str, Any]:
        """A span; `tags` becomes its tags, with its error tags added (the list is the span's own)."""
        sid = str(span_id)
        if error:
            tags.append("error:1")
            tags.append(f"error_type:{error[0]}")
        else:
            tags.append("error:0")
        span: dict[str, Any] = {
            "trace_id": ids.trace_id,
            "span_id": sid,
            "parent_id": parent,
            "name": name,
            "start_ns": start_ns,
            "duration": max(0, duration_ns),
            "status": "error" if error else "ok",
            "meta": {"error": {"type": error[0], "message": error[1]}} if error else {},
            "metrics": {},
            "tags": tags,
            # No `apm_trace_id`: ddtrace sends one to link an APM trace, and relaycast makes none.
            "_dd": {"span_id": sid, "trace_id": ids.trace_id},
        }
        if record.attribution.session_id:
            span["session_id"] = record.attribution.session_id
        return span

    def _root(self, record: RequestRecord, ids: spans.TraceIds, tags: list[str], privacy: bool) -> dict[str, Any]:
        error = (record.error_class, record.error_message or record.error_class) if record.error_class else None
        span = self._span(
            record,
            ids,
            ids.root_span_id,
            "undefined",
            spans.root_name(record),
            record.started_unix_ns,
            record.duration_ns,
            error,
            tags.copy(),
        )
        meta = span["meta"]
        meta["span"] = {"kind": "workflow"}
        if not privacy:
            meta["input"] = {"value": spans.last_user_text(record)}
            if record.output_text is not None:
                meta["output"] = {"value": record.output_text}
        metadata = spans.trace_metadata(record)
        metadata["request_id"] = record.request_id
        metadata["model_requested"] = record.model_requested
        metadata["stream"] = record.stream
        metadata["status_code"] = record.status_code
        metadata["attempts"] = len(record.attempts)
        if record.client_cancelled:
            metadata["client_cancelled"] = True
        meta["metadata"] = metadata
        return span  # tokens and cost live on the llm spans only, so Datadog does not count them twice

    def _attempt(
        self,
        record: RequestRecord,
        i: int,
        a: Attempt,
        ids: spans.TraceIds,
        tags: list[str],
        privacy: bool,
        msgs: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """An attempt's llm span; `msgs`: the record's input messages as `_messages` gives them (None with
        privacy, or for embeddings)."""
        error = (a.error_class, a.error_message or a.error_class) if a.error_class else None
        own = tags.copy()
        own.append(f"target:{a.target}")
        own.append(f"provider:{a.provider}")
        own.append(f"cost_source:{a.cost_source}")
        span = self._span(
            record,
            ids,
            ids.attempt_span_id(i),
            str(ids.root_span_id),
            spans.attempt_name(record, a.provider),
            record.started_unix_ns + a.started_ns,
            a.duration_ns,
            error,
            own,
        )
        meta = span["meta"]
        meta["span"] = {"kind": "embedding" if record.endpoint == "embeddings" else "llm"}
        meta["model_name"] = a.model
        # The vendor (Datadog groups and prices by it); the configured provider is the `provider` tag.
        meta["model_provider"] = a.vendor or a.provider.lower()
        if not privacy and record.endpoint == "embeddings":
            meta["input"] = {"documents": [{"text": m["content"]} for m in spans.input_messages(record)]}
            if a.ok:
                meta["output"] = {"value": f"[{len(record.input_messages)} embedding(s) returned]"}
        elif not privacy:
            meta["input"] = {"messages": msgs}
            text = spans.attempt_output_text(record, i, a)
            serving = a.ok and i == len(record.attempts) - 1
            if text is not None or (serving and record.output_tool_calls):
                out: dict[str, Any] = {"role": "assistant", "content": text or ""}
                if serving and record.output_tool_calls:
                    out["tool_calls"] = [_tool_call(c) for c in record.output_tool_calls]
                meta["output"] = {"messages": [out]}
        metadata = dict(record.params)
        if a.finish_reason:
            metadata["finish_reason"] = a.finish_reason
        if a.upstream_status:
            metadata["upstream_status"] = a.upstream_status
        meta["metadata"] = metadata
        span["metrics"] = _usage_metrics(a)
        return span

    # --- sending --------------------------------------------------------------------------------

    async def send(self, items: list[bytes]) -> None:
        # A batch holds whole records; one record's spans can pass a POST's limit together (a long prompt on every
        # span of a failover): then they go in several POSTs, in order. Retried whole: a POST that already went may
        # go again (the same span ids).
        for part in split_bodies(items, self.max_batch_bytes):
            await post(
                self._session, self.o.intake_url, join_json_array(part), self._headers, self.dest.timeout_s, self._what
            )

    async def test(self) -> TestResult:
        if self.o.agentless:
            verdict = await self._validate_key()
            if verdict is not None:
                return verdict
        else:
            verdict = await self._check_agent()
            if verdict is not None:
                return verdict
        try:
            await self.send([self._envelope(self._test_span())])
        except ExportError as e:
            if e.status == 403:
                return TestResult(False, "invalid API key: the intake refused it (HTTP 403)")
            return TestResult(False, f"test span not accepted: {e.message}")
        if self.o.agentless:
            return TestResult(
                True, f"ok: API key valid for site {self.o.site}; a test span was accepted (ml_app {self.o.ml_app})"
            )
        return TestResult(
            True, f"ok: agent found at {self.o.agent_url}; a test span was accepted (ml_app {self.o.ml_app})"
        )

    async def _validate_key(self) -> TestResult | None:
        url = f"{self.o.api_url}/api/v1/validate"
        try:
            async with self._session.get(
                url,
                headers={"dd-api-key": self.o.api_key or ""},
                timeout=aiohttp.ClientTimeout(total=self.dest.timeout_s),
                allow_redirects=False,  # it would carry dd-api-key to wherever the answer points
            ) as r:
                body = await r.read()
                status = r.status
        except TimeoutError:
            return TestResult(False, f"unreachable: {self.o.api_url} did not answer in {self.dest.timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as e:
            return TestResult(False, f"unreachable: cannot reach {self.o.api_url} ({type(e).__name__}); check the site")
        if status == 403:
            return TestResult(
                False, f"invalid API key for site {self.o.site} (HTTP 403); if the key is right, check the site"
            )
        if status != 200:
            return TestResult(False, f"key check failed: {self.o.api_url} answered HTTP {status}")
        try:
            valid = orjson.loads(body).get("valid") is True
        except (orjson.JSONDecodeError, AttributeError):
            valid = False
        return None if valid else TestResult(False, f"invalid API key for site {self.o.site}")

    async def _check_agent(self) -> TestResult | None:
        url = f"{(self.o.agent_url or '').rstrip('/')}/info"
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=self.dest.timeout_s), allow_redirects=False
            ) as r:
                info = await r.read()
                status = r.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            return TestResult(False, f"agent not found at {self.o.agent_url}")
        if status != 200:
            return TestResult(False, f"agent at {self.o.agent_url} answered /info with HTTP {status}")
        try:
            endpoints = orjson.loads(info).get("endpoints") or []
        except (orjson.JSONDecodeError, AttributeError):
            endpoints = []
        if endpoints and not any(str(e).startswith("/evp_proxy/v2") for e in endpoints):
            return TestResult(
                False, f"the agent at {self.o.agent_url} has no EVP proxy (v2); upgrade the Datadog Agent"
            )
        return None

    def _test_span(self) -> dict[str, Any]:
        import time

        from relaycast.records import Attribution

        now = time.time_ns()
        rec = RequestRecord(
            request_id=f"relaycast-test-{now}",
            endpoint="test",
            model_requested="test",
            stream=False,
            started_unix_ns=now,
            duration_ns=1_000_000,
            status_code=200,
            attribution=Attribution(),
        )
        span = self._root(rec, spans.trace_ids(rec), [*self._base_tags, "relaycast_test:true"], privacy=True)
        span["name"] = "relaycast.test_connection"
        return span

    async def close(self) -> None:
        return None


def split_bodies(items: list[bytes], limit: int) -> list[list[bytes]]:
    """Items (each within `limit` bytes: a larger span loses its I/O) in runs of at most `limit` bytes, in order."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for it in items:
        if parts[-1] and size + len(it) > limit:
            parts.append([])
            size = 0
        parts[-1].append(it)
        size += len(it)
    return parts


def _tool_call(c: dict[str, str]) -> dict[str, Any]:
    return {
        "name": c["name"],
        "arguments": spans.call_arguments(c["arguments"]),
        "tool_id": c["id"],
        "type": "function",
    }


def _messages(record: RequestRecord) -> list[dict[str, Any]]:
    """The input messages as ddtrace sends them: text content, an assistant turn's `tool_calls`, and a tool
    message's `tool_results`."""
    out: list[dict[str, Any]] = []
    for m, flat in zip(record.input_messages, spans.input_messages(record), strict=True):
        msg: dict[str, Any] = flat  # a new dict per message: its role and content, added to here
        calls = spans.message_tool_calls(m)
        if calls:
            msg["tool_calls"] = [_tool_call(c) for c in calls]
        if m.get("role") == "tool":
            result = {"result": msg["content"], "tool_id": str(m.get("tool_call_id") or ""), "type": "function"}
            msg["tool_results"] = [result]
            msg["content"] = ""
        out.append(msg)
    return out


def _usage_metrics(a: Attempt) -> dict[str, float]:
    m: dict[str, float] = {}
    u = a.usage
    if u is not None:
        m["input_tokens"] = u.prompt_tokens
        m["output_tokens"] = u.completion_tokens
        m["total_tokens"] = u.total_tokens
        m["cache_read_input_tokens"] = u.cached_tokens
        if u.cache_write_tokens:
            m["cache_write_input_tokens"] = u.cache_write_tokens
        if u.reasoning_tokens:
            m["reasoning_output_tokens"] = u.reasoning_tokens
    if a.cost_pusd is not None and a.cost_source != "none":
        m["total_cost"] = usd_float(a.cost_pusd)  # ours (computed, estimated) or the upstream's (reported)
        if a.cost_input_pusd is not None:  # both parts, so Datadog does not split the total with its own prices
            m["input_cost"] = usd_float(a.cost_input_pusd)
            m["output_cost"] = usd_float(a.cost_pusd - a.cost_input_pusd)
    if a.ttft_ns is not None:
        m["time_to_first_token"] = a.ttft_ns / 1e9
    return m

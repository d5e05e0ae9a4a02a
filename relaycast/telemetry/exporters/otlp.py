"""OpenTelemetry (OTLP/HTTP) traces, with the OpenTelemetry GenAI semantic conventions.

One record is one item: a `ResourceSpans` message holding a SERVER root span for the request and one CLIENT span
per provider attempt (`chat gpt-4o-mini`). A batch is an `ExportTraceServiceRequest` made by framing the items as
its repeated field 1, so items are never parsed again; with `protocol: json` the items are OTLP/JSON objects
(hex ids, lowerCamelCase keys, integer enums, 64-bit integers as strings) joined into `{"resourceSpans":[...]}`.

The protobuf wire format is written by hand in `otlp_wire` (the message layout is fixed by opentelemetry-proto's
`trace.proto`), so the gateway needs no protobuf runtime. Tests decode our bytes with the official generated
classes.

Attributes (`otlp_semconv`): `gen_ai.*` as the GenAI conventions name them (usage, request parameters, finish
reasons, input and output messages as JSON strings, `error.type`); time to first token in seconds; the cost of
every priced attempt as `relaycast.cost.usd` (US dollars: the GenAI conventions have no cost attribute), whether
computed from a price, reported by the upstream or estimated, with
`relaycast.cost.source` saying which (`unpriced`, and no cost, for a model with no known price); attribution
(`user.id`, `session.id`, `relaycast.*`) and the destination's tags on every span. Tokens and cost live on
attempt spans only, so a backend that sums them does not count them twice.

A backend that speaks OTLP (Langfuse, Arize, ...: `relaycast.telemetry.kinds`) is this exporter with its options
made from the backend's own settings, plus its `Dialect`: the attributes that backend renders, added to the GenAI
ones (content attributes among the droppable content), and its own Test Connection call.

Responses follow the OTLP/HTTP spec: only 429, 502, 503 and 504 (and connection errors) are worth retrying; a
200 with a `partial_success` is a success whose rejected spans are counted and logged, never retried.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Mapping

import aiohttp

from relaycast.log import EventLog
from relaycast.records import Attribution, RequestRecord
from relaycast.redact import Redactor
from relaycast.retry import OTLP_RETRYABLE_STATUS
from relaycast.telemetry import kinds, spans
from relaycast.telemetry.exporters.base import ExportError, TestResult, display_url, post
from relaycast.telemetry.exporters.otlp_semconv import (
    attempt_attrs,
    attempt_name,
    common_attrs,
    dropped,
    input_messages,
    json_text,
    operation,
    output_messages,
    remote_parent,
)
from relaycast.telemetry.exporters.otlp_wire import (
    KIND_CLIENT,
    KIND_SERVER,
    Content,
    Span,
    Value,
    json_resource_spans,
    partial_success,
    pb_attrs,
    pb_resource_spans,
    varint,
)
from relaycast.telemetry.kinds.base import GENAI_ONLY, Check, KindSpec
from relaycast.telemetry.settings import DestinationConfig, OtlpOptions
from relaycast.version import __version__

MiB = 1024 * 1024


GZIP_IN_THREAD = 64 * 1024  # bodies larger than this are compressed off the event loop


class OtlpExporter:
    kind = "otlp"
    max_age_s = None

    def __init__(
        self,
        dest: DestinationConfig,
        session: aiohttp.ClientSession,
        log: EventLog | None = None,
        servers: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """`log` receives the partial-success events; by default one of its own, scrubbing key-shaped secrets.
        `servers`: each configured provider's host and port (`server.address`, `server.port`)."""
        assert isinstance(dest.options, OtlpOptions)
        self.dest = dest
        self._servers = servers or {}
        self._log = log if log is not None else EventLog(Redactor(), "relaycast.telemetry.otlp")
        self.o: OtlpOptions = dest.options
        self.kind = dest.kind
        self.max_batch_bytes = self.o.max_body_bytes  # collectors accept 4 MiB and more; some backends less
        self._spec: KindSpec | None = kinds.spec(self.o.backend) if self.o.backend in kinds.KINDS else None
        self._dialect = self._spec.dialect if self._spec is not None else GENAI_ONLY
        self._title = self._spec.title if self._spec is not None else "OTLP endpoint"
        self._session = session
        self._json = self.o.protocol == "json"
        content_type = "application/json" if self._json else "application/x-protobuf"
        self._headers = {k: v for k, v in self.o.headers if k.lower() not in ("content-type", "content-length")}
        self._headers["content-type"] = content_type
        if self.o.compression == "gzip":
            self._headers["content-encoding"] = "gzip"
        self._what = f"{self._title} {display_url(self.o.endpoint)}"
        self._resource: dict[str, Value] = {
            "service.name": self.o.service,
            "telemetry.sdk.name": "relaycast",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
            **dict(self.o.resource),
        }
        self._pb_resource = pb_attrs(b"\x0a", self._resource.items())
        self.rejected_spans = 0  # counted from partial-success answers
        self.last_partial_success: str | None = None

    # --- encoding -------------------------------------------------------------------------------

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        ids = spans.trace_ids(record)
        span_list, content = self._spans(record, ids, privacy, tags)
        item = self._item(ids.trace_id, span_list, content)
        if len(item) > self.max_batch_bytes and content.by_span:
            # Too large: first the content of the other spans goes (the root's, failed attempts'), keeping the
            # answer's; then all of it. Everything else (tokens, cost, timing) is always sent.
            served = span_list[-1].span_id if record.attempts and record.attempts[-1].ok else None
            shrink = self._dialect.shrink
            if served in content.by_span and len(content.by_span) > 1:
                item = self._item(ids.trace_id, span_list, dropped(content, served, shrink))
            if len(item) > self.max_batch_bytes:
                item = self._item(ids.trace_id, span_list, dropped(content, None, shrink))
            if len(item) > self.max_batch_bytes:  # the markers themselves (thousands of messages): no content
                item = self._item(ids.trace_id, span_list, Content())
        return [item]

    def _item(self, trace_id: str, span_list: list[Span], content: Content) -> bytes:
        if self._json:
            return json_resource_spans(self._resource, trace_id, span_list, content)
        return pb_resource_spans(self._pb_resource, bytes.fromhex(trace_id), span_list, content)

    def _spans(
        self, record: RequestRecord, ids: spans.TraceIds, privacy: bool, tags: tuple[tuple[str, str], ...]
    ) -> tuple[list[Span], Content]:
        common = common_attrs(record, tags)  # shared by every span, encoded once
        root = self._root(record, ids, common)
        out = [root]
        content = Content()
        op = operation(record)
        dialect = self._dialect
        inputs = None
        for i, a in enumerate(record.attempts):
            start = record.started_unix_ns + a.started_ns
            span = Span(
                span_id=ids.attempt_span_id(i),
                parent_id=ids.root_span_id.to_bytes(8, "big"),
                name=attempt_name(record, op, a),
                kind=KIND_CLIENT,
                start_ns=start,
                end_ns=start + max(0, a.duration_ns),
                attrs=attempt_attrs(record, i, a, op, self._servers.get(a.provider))
                | dialect.attempt(record, i, a, op),
                common=common,
                error=(a.error_message or a.error_class) if a.error_class else None,
            )
            out.append(span)
            if privacy or op == "embeddings":
                continue
            texts: dict[str, str] = {}
            if record.input_messages:
                if inputs is None:
                    inputs = json_text(input_messages(record))
                texts["gen_ai.input.messages"] = inputs
            output = spans.attempt_output_text(record, i, a)
            calls = spans.attempt_tool_calls(record, i, a)
            if output is not None or calls:
                texts["gen_ai.output.messages"] = json_text(output_messages(output, a.finish_reason, calls))
            own = dialect.content(record, i, a, op, texts)
            if own and not dialect.genai_content:
                texts = own  # the backend reads its own: one copy of the prompt per span, not two
            else:
                texts.update(own)
            if texts:
                content.by_span[span.span_id] = texts
        if not privacy and op != "embeddings":
            root_texts = dialect.root_content(record)
            if root_texts:
                content.by_span[root.span_id] = root_texts
        return out, content

    def _root(self, record: RequestRecord, ids: spans.TraceIds, common: dict[str, Value]) -> Span:
        attrs: dict[str, Value] = {}
        attrs["relaycast.endpoint"] = record.endpoint
        attrs["relaycast.model_requested"] = record.model_requested
        attrs["relaycast.stream"] = record.stream
        attrs["relaycast.attempts"] = len(record.attempts)
        attrs["http.response.status_code"] = record.status_code
        final = record.final_attempt
        if final is not None and final.ok:
            attrs["relaycast.served_by"] = final.target
        if record.client_cancelled:
            attrs["relaycast.client_cancelled"] = True
        if record.error_class:
            attrs["error.type"] = record.error_class
        attrs.update(self._dialect.root(record))
        parent, flags = remote_parent(record, ids)
        return Span(
            span_id=ids.root_span_id,
            parent_id=parent,
            name=spans.root_name(record),
            kind=KIND_SERVER,
            start_ns=record.started_unix_ns,
            end_ns=record.started_unix_ns + max(0, record.duration_ns),
            attrs=attrs,
            common=common,
            error=(record.error_message or record.error_class) if record.error_class else None,
            flags=flags,
        )

    # --- sending --------------------------------------------------------------------------------

    def body(self, items: list[bytes]) -> bytes:
        """The request body for a batch of items: framed, never parsed again."""
        if self._json:
            return b'{"resourceSpans":[' + b",".join(items) + b"]}"
        return b"".join(b"\x0a" + varint(len(it)) + it for it in items)

    async def send(self, items: list[bytes]) -> None:
        _, raw = await self._post(self.body(items))
        self._note_partial_success(raw)

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        if self.o.compression == "gzip":
            body = (
                await asyncio.to_thread(gzip.compress, body, 6)
                if len(body) > GZIP_IN_THREAD
                else gzip.compress(body, 6)
            )
        try:
            return await post(self._session, self.o.endpoint, body, self._headers, self.dest.timeout_s, self._what)
        except ExportError as e:
            if e.status is not None:
                e.retryable = e.status in OTLP_RETRYABLE_STATUS  # the OTLP/HTTP spec narrows the rules
            raise

    def _note_partial_success(self, raw: bytes) -> tuple[int, str] | None:
        partial = partial_success(raw, self._json)
        if partial is None:
            return None
        rejected, message = partial
        self.rejected_spans += rejected
        self.last_partial_success = message[:500] or None
        self._log.warning(
            "export_partial_success",
            destination=self.dest.name,
            rejected_spans=rejected,
            error=message[:500].replace("\r", "\\r").replace("\n", "\\n"),  # the collector's text: one line
        )
        return partial

    async def test(self) -> TestResult:
        """The backend's own check when it has one (`Check`), else: a backend preset posts an empty export (no
        spans: nothing shows up in the backend) and the generic `otlp` kind a test span."""
        if self.o.check is not None:
            return await self._check(self.o.check)
        if self._spec is not None:
            try:
                await self._post(b"{}" if self._json else b"")
            except ExportError as e:
                return TestResult(False, self._verdict(e))
            return TestResult(True, f"ok: {self._title} at {display_url(self.o.endpoint)} accepted the credentials")
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
        ids = spans.trace_ids(rec)
        span_list, content = self._spans(rec, ids, True, self.dest.tags)
        span_list[0].name = "relaycast.test_connection"
        span_list[0].attrs["relaycast.test"] = True
        try:
            _, raw = await self._post(self.body([self._item(ids.trace_id, span_list, content)]))
        except ExportError as e:
            return TestResult(False, self._verdict(e))
        partial = partial_success(raw, self._json)
        if partial is not None and partial[0]:
            return TestResult(False, f"the endpoint rejected the test span: {partial[1] or 'no reason given'}")
        return TestResult(True, f"ok: {display_url(self.o.endpoint)} accepted a test span (service {self.o.service})")

    async def _check(self, check: Check) -> TestResult:
        where = display_url(check.url)
        what = f"{self._title} {where}"
        try:
            async with self._session.request(
                check.method,
                check.url,
                data=check.body,
                headers=dict(check.headers),
                timeout=aiohttp.ClientTimeout(total=self.dest.timeout_s),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                status = resp.status
        except TimeoutError:
            return TestResult(False, f"unreachable: {what} did not answer within {self.dest.timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as e:
            return TestResult(False, f"unreachable: {what} ({type(e).__name__})")
        if status < 300:
            return TestResult(True, f"ok: {self._title} at {where} accepted the credentials")
        return TestResult(False, self._verdict(ExportError("", retryable=False, status=status), check.url))

    def _verdict(self, e: ExportError, url: str | None = None) -> str:
        where = display_url(url or self.o.endpoint)
        hint = self._spec.auth_hint if self._spec is not None else "check the headers"
        if e.status == 404:
            path = "" if self._spec is not None else " (is the path /v1/traces?)"
            return f"{self._title} answered HTTP 404{path}: is the address (or region) right? {where}"
        if e.status in (401, 403):
            return f"{self._title} rejected the credentials (HTTP {e.status}): {hint} ({where})"
        if e.status is None:
            reason = e.message.removeprefix(self._what).strip()
            reason = reason.removeprefix("unreachable:").strip()
            return f"unreachable: {where} ({reason})"
        if e.status is not None and 300 <= e.status < 400:
            return (
                f"{self._title} answered with a redirect (HTTP {e.status}), not followed: is the address right? {where}"
            )
        return f"test not accepted: {self._title} answered HTTP {e.status}: {where}"

    async def close(self) -> None:
        return None  # the session belongs to the caller

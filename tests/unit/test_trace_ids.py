"""The trace and span ids every exporter gives a record (`telemetry.spans.trace_ids`): stable for a record, unique
across requests, and never shared by two spans of one trace, whatever the client put in `trace.trace_id`."""

from __future__ import annotations

import msgspec

from relaycast.asgi import RequestIds
from relaycast.records import Attempt, Attribution, RequestRecord
from relaycast.telemetry import spans
from tests.sample_records import sample_record

T0 = 1_760_000_000_123_456_789


def record(request_id: str, trace: dict[str, str] | None = None, attempts: int = 3) -> RequestRecord:
    tried = tuple(
        Attempt(target=f"p{i}/m", provider=f"p{i}", model="m", started_ns=i, duration_ns=1) for i in range(attempts)
    )
    return msgspec.structs.replace(
        sample_record(0),
        request_id=request_id,
        started_unix_ns=T0,
        attribution=Attribution(trace=trace),
        attempts=tried,
    )


def span_ids(rec: RequestRecord) -> list[int]:
    ids = spans.trace_ids(rec)
    return [ids.root_span_id, *(ids.attempt_span_id(i) for i in range(len(rec.attempts)))]


def test_a_gateway_request_id_gives_the_same_ids_every_time_and_unique_ones_across_requests() -> None:
    make = RequestIds()
    rids = [make() for _ in range(2000)]
    first = [spans.trace_ids(record(r)) for r in rids]
    assert first == [spans.trace_ids(record(r)) for r in rids]  # a retry or a replay carries the same ids
    assert len({i.trace_id for i in first}) == len(rids)
    assert len({i.root_span_id for i in first}) == len(rids)
    for i in first:
        assert len(i.trace_id) == 32 and int(i.trace_id, 16)
        assert int(i.trace_id[:8], 16) == T0 // 1_000_000_000  # the start time in the top 32 bits, as Datadog's
        assert 0 < i.root_span_id < 2**64


def test_the_spans_of_one_trace_never_share_an_id() -> None:
    for rid in (RequestIds()(), "req_0123456789abcdef", "an-older-id"):  # the gateway's, and ids it hashes
        ids = span_ids(record(rid, attempts=8))
        assert len(set(ids)) == len(ids) and all(0 < i < 2**64 for i in ids)


def test_requests_in_one_client_trace_share_its_id_but_not_their_span_ids() -> None:
    trace = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    make = RequestIds()
    recs = [record(make(), trace) for _ in range(50)]
    assert {spans.trace_ids(r).trace_id for r in recs} == {trace["trace_id"]}
    every = [i for r in recs for i in span_ids(r)]
    assert len(set(every)) == len(every)


def test_a_request_id_of_another_shape_is_hashed_into_the_same_form() -> None:
    a, b = spans.trace_ids(record("req-0001")), spans.trace_ids(record("req-0002"))
    assert a.trace_id != b.trace_id and a.root_span_id != b.root_span_id
    assert a == spans.trace_ids(record("req-0001"))
    assert len(a.trace_id) == 32 and int(a.trace_id[:8], 16) == T0 // 1_000_000_000
    # 40 characters shaped like the gateway's but not hex: hashed, not read as random bits
    odd = spans.trace_ids(record("req_" + "g" * 36))
    assert len(odd.trace_id) == 32 and int(odd.trace_id, 16) and 0 < odd.root_span_id < 2**64

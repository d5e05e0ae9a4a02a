"""A request record as database rows: the request, its attempts, and its share of the hourly rollups.

Prompts and completions are kept unless privacy mode is on, with every known secret masked. Nothing here does
I/O: the writer turns a batch into rows and runs them in one transaction.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Iterable
from typing import Any

import orjson

from relaycast.records import RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store.histogram import bucket_of

_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")
TOTAL, TTFT = 0, 1  # latency_hourly.kind


class Batch:
    """Rows for one transaction, with rollups summed in memory first (one upsert per key per batch)."""

    def __init__(self) -> None:
        self.requests: list[tuple[Any, ...]] = []
        self.attempts: list[tuple[Any, ...]] = []
        self.usage: dict[tuple[Any, ...], list[int]] = {}  # (dim, hour, value) -> sums
        self.outcomes: collections.Counter[tuple[Any, ...]] = collections.Counter()
        self.latency: collections.Counter[tuple[Any, ...]] = collections.Counter()

    def __len__(self) -> int:
        return len(self.requests)

    def usage_rows(self) -> list[tuple[Any, ...]]:
        return [(*k, *v) for k, v in sorted(self.usage.items())]  # sorted: replicas upsert in one order, no deadlock

    def outcome_rows(self) -> list[tuple[Any, ...]]:
        return [(*k, n) for k, n in sorted(self.outcomes.items())]

    def latency_rows(self) -> list[tuple[Any, ...]]:
        return [(*k, n) for k, n in sorted(self.latency.items())]


def _json(v: Any, redactor: Redactor) -> str | None:
    if v is None:
        return None
    text = orjson.dumps(v, default=str).decode()  # NUL is escaped as \u0000 in JSON text
    return redactor.scrub(text)


def _text(v: str | None, redactor: Redactor | None = None) -> str | None:
    """Free text as the database takes it: Postgres refuses NUL characters in TEXT."""
    if v is None:
        return None
    if "\x00" in v:
        v = v.replace("\x00", "")
    return redactor.scrub(v) if redactor is not None else v


def _tokens(u: Usage | None) -> tuple[int, int, int, int, int]:
    if u is None:
        return (0, 0, 0, 0, 0)
    return (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens, u.reasoning_tokens)


EPOCH_MS = 1_577_836_800_000  # 2020-01-01: row ids hold 41 bits of milliseconds from it (until 2089)


def row_id(ts_ms: int) -> int:
    """A 63-bit row id that grows with time (inserts append to the index) with 22 random bits, so replicas
    writing to one Postgres store do not collide."""
    return (max(ts_ms - EPOCH_MS, 0) << 22) | secrets.randbits(22)


def add(batch: Batch, rec: RequestRecord, redactor: Redactor, privacy: bool) -> None:
    ts_ms = rec.started_unix_ns // 1_000_000
    row_id_ = row_id(ts_ms)
    hour = ts_ms // 3_600_000 * 3600
    final = rec.final_attempt
    if final is not None:
        model, provider, target = final.model, final.provider, final.target
    else:
        model, provider, target = rec.model_requested, "", ""
    a = rec.attribution
    key, user, feature = a.key_name or "", _text(a.user) or "", _text(a.feature) or ""
    tokens = [0, 0, 0, 0, 0]
    for i, at in enumerate(rec.attempts):
        t = _tokens(at.usage)
        for j in range(5):
            tokens[j] += t[j]
        batch.attempts.append(
            (
                row_id_,
                i,
                ts_ms,
                at.model,
                at.provider,
                at.target,
                at.started_ns // 1000,
                at.duration_ns // 1000,
                None if at.ttft_ns is None else at.ttft_ns // 1000,
                at.upstream_status,
                at.error_class,
                _text(at.error_message, redactor),
                at.finish_reason,
                *t,
                at.cost_pusd,
                at.cost_source,
            )
        )
        outcome = at.error_class or "ok"
        batch.outcomes[(hour, at.provider, at.model, at.target, outcome)] += 1
        if at.ok:
            batch.latency[(hour, at.provider, at.model, at.target, TOTAL, bucket_of(at.duration_ns / 1e6))] += 1
            if at.ttft_ns is not None:
                batch.latency[(hour, at.provider, at.model, at.target, TTFT, bucket_of(at.ttft_ns / 1e6))] += 1
    cost, source = rec.cost
    ttft_us = None
    if final is not None and final.ttft_ns is not None:
        ttft_us = (final.started_ns + final.ttft_ns) // 1000  # from the request's start
    tags = rec.all_tags()
    batch.requests.append(
        (
            row_id_,
            rec.request_id,
            ts_ms,
            rec.endpoint,
            rec.model_requested,
            model,
            provider,
            target,
            key,
            user,
            feature,
            _text(a.app_url),
            _text(a.session_id),
            _json(tags, redactor) if tags else None,
            rec.status_code,
            rec.error_class,
            _text(rec.error_message),
            1 if rec.stream else 0,
            rec.duration_ns // 1000,
            ttft_us,
            len(rec.attempts),
            *tokens,
            cost,
            source,
            _json(rec.params, redactor) if rec.params else None,
            None if privacy or not rec.input_messages else _json(list(rec.input_messages), redactor),
            None if privacy else _text(rec.output_text, redactor),
        )
    )
    error = 1 if (rec.status_code >= 400 or rec.error_class) and not rec.client_cancelled else 0
    delta = (
        1,
        error,
        *tokens,
        cost or 0,
        int(source == "unpriced"),
        int(source == "estimated"),
        int(source == "reported"),
    )
    usage = batch.usage
    for dim, value in (
        ("all", ""),
        ("model", model),
        ("provider", provider),
        ("target", target),
        ("key", key),
        ("user", user),
        ("feature", feature),
        ("route", rec.model_requested),
    ):
        ukey = (dim, hour, value)
        sums = usage.get(ukey)
        if sums is None:
            usage[ukey] = list(delta)
        else:
            for j in range(11):
                sums[j] += delta[j]


def build(records: Iterable[RequestRecord], redactor: Redactor, privacy: bool) -> Batch:
    batch = Batch()
    for rec in records:
        add(batch, rec, redactor, privacy)
    return batch

"""A request record as database rows: the request, its attempts, and its share of the per-minute and hourly
rollups.

Prompts and completions are kept unless privacy mode is on, with every known secret masked. Nothing here does
I/O: the writer turns a batch into rows and runs them in one transaction.

Encoding is total, so one odd record never costs a batch: text columns get U+FFFD for NUL (Postgres TEXT cannot
hold it) and for lone surrogates (neither driver can encode them); JSON columns nested deeper than
`MAX_JSON_DEPTH` keep a marker string in place of the deeper parts (orjson refuses more than 254 levels); token
counts and costs are clamped into what BIGINT rollups can sum. `add(..., minimal=True)` builds the least of a record
(ids, status, tokens, cost and its rollups) for the writer's last resort.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from relaycast.records import COST_RANK, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store.histogram import bucket_of

_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")
TOTAL, TTFT = 0, 1  # latency_hourly.kind
MAX_JSON_DEPTH = 128  # deeper parts of a JSON column are stored as a marker string
MAX_TOKENS = 2**40  # per record: hourly sums of 2**23 such records still fit a BIGINT
MAX_COST_PUSD = 2**53  # per record, about $9,007: the same margin for the cost rollups


class Batch:
    """Rows for one transaction, with rollups summed in memory first (one upsert per key per batch). The rollups
    are kept per minute (each key's first field is the minute, unix seconds) and folded into hours when the
    hourly rows are asked for: a record costs one update per key whatever the number of rollup tables."""

    def __init__(self) -> None:
        self.requests: list[tuple[Any, ...]] = []
        self.attempts: list[tuple[Any, ...]] = []
        self.usage: dict[tuple[Any, ...], list[int]] = {}  # (dim, minute, value) -> sums
        # A record's sums go once into the cell of its whole combination (minute, key, user, feature, route, and
        # model, provider, target when its one attempt decides them, else None), spread over the dimensions when
        # the rows are asked for: a batch holds a few combinations, and a record costs one sum, not eight.
        self.combos: dict[tuple[Any, ...], list[int]] = {}
        self.outcomes: collections.Counter[tuple[Any, ...]] = collections.Counter()  # (minute, provider, ...) -> n
        self.latency: collections.Counter[tuple[Any, ...]] = collections.Counter()  # (minute, provider, ...) -> n
        self.ids: set[int] = set()  # the request rows' ids: one drawn twice is drawn again

    def __len__(self) -> int:
        return len(self.requests)

    def _spread(self) -> None:
        usage = self.usage
        for (minute, key, user, feature, route, model, provider, target), sums in self.combos.items():
            for dim, value in (("all", ""), ("key", key), ("user", user), ("feature", feature), ("route", route)):
                _sum_into(usage, (dim, minute, value), sums)
            if model is not None:
                for dim, value in (("model", model), ("provider", provider), ("target", target)):
                    _sum_into(usage, (dim, minute, value), sums)
        self.combos.clear()

    # sorted: replicas upsert in one order, no deadlock
    def usage_minute_rows(self) -> list[tuple[Any, ...]]:
        self._spread()
        return [(*k, *v) for k, v in sorted(self.usage.items())]

    def usage_rows(self) -> list[tuple[Any, ...]]:
        self._spread()
        hourly: dict[tuple[Any, ...], list[int]] = {}
        for (dim, minute, value), sums in self.usage.items():
            _sum_into(hourly, (dim, _hour(minute), value), sums)
        return [(*k, *v) for k, v in sorted(hourly.items())]

    def outcome_minute_rows(self) -> list[tuple[Any, ...]]:
        return [(*k, n) for k, n in sorted(self.outcomes.items())]

    def outcome_rows(self) -> list[tuple[Any, ...]]:
        return _hourly_counts(self.outcomes)

    def latency_minute_rows(self) -> list[tuple[Any, ...]]:
        return [(*k, n) for k, n in sorted(self.latency.items())]

    def latency_rows(self) -> list[tuple[Any, ...]]:
        return _hourly_counts(self.latency)


def _hour(minute: int) -> int:
    return minute - minute % 3600


def _hourly_counts(counts: collections.Counter[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    hourly: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for k, n in counts.items():
        hourly[(_hour(k[0]), *k[1:])] += n
    return [(*k, n) for k, n in sorted(hourly.items())]


def _json(v: Any, redactor: Redactor) -> str | None:
    if v is None:
        return None
    try:
        raw = orjson.dumps(v, default=str, option=orjson.OPT_NON_STR_KEYS)  # NUL is escaped as \u0000 in JSON text
    except Exception:  # noqa: BLE001 - too deep, a lone surrogate, an int past 64 bits, an object str() refuses
        raw = orjson.dumps(_tame(v, 0), option=orjson.OPT_NON_STR_KEYS)
    return redactor.scrub(raw.decode())


def _tame(v: Any, depth: int) -> Any:
    """A copy of `v` that orjson always encodes: bounded depth, valid UTF-8, 64-bit integers, plain types."""
    if v is None or isinstance(v, (bool, float)):
        return v
    if isinstance(v, str):
        return _utf8(v)
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**64 else str(v)
    if isinstance(v, (dict, list, tuple)):
        if depth >= MAX_JSON_DEPTH:
            return f"[{type(v).__name__} nested deeper than {MAX_JSON_DEPTH} levels: not stored]"
        if isinstance(v, dict):
            return {_key(k): _tame(x, depth + 1) for k, x in v.items()}
        return [_tame(x, depth + 1) for x in v]
    try:
        return _utf8(str(v))
    except Exception:  # noqa: BLE001 - any object may reach a record's params: its type name is all that is kept
        return f"<{type(v).__name__}>"


def _key(k: Any) -> str:
    try:
        return _utf8(k if isinstance(k, str) else str(k))
    except Exception:  # noqa: BLE001 - as in _tame
        return f"<{type(k).__name__}>"


def _utf8(v: str) -> str:
    """`v` with lone surrogates (which no encoder takes) replaced by U+FFFD."""
    if v.isascii():
        return v
    try:
        v.encode()
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in v)
    return v


def _text(v: str | None, redactor: Redactor | None = None) -> str | None:
    """Text as the database takes it: Postgres refuses NUL characters in TEXT, no driver encodes a lone surrogate."""
    if v is None:
        return None
    if "\x00" in v:
        v = v.replace("\x00", "\ufffd")
    v = _utf8(v)
    return redactor.scrub(v) if redactor is not None else v


def _dim(v: str | None) -> str:
    if v is None:
        return ""
    if v.isascii() and "\x00" not in v:  # nearly always: nothing to replace (as `_text` would find)
        return v
    return _text(v) or ""


def _clamp(n: int, most: int) -> int:
    return n if 0 <= n <= most else (0 if n < 0 else most)


def _cost(n: int | None) -> int | None:
    return None if n is None else max(-MAX_COST_PUSD, min(n, MAX_COST_PUSD))


def _tokens(u: Usage | None) -> tuple[int, int, int, int, int]:
    if u is None:
        return (0, 0, 0, 0, 0)
    c = MAX_TOKENS
    return (
        _clamp(u.prompt_tokens, c),
        _clamp(u.completion_tokens, c),
        _clamp(u.cached_tokens, c),
        _clamp(u.cache_write_tokens, c),
        _clamp(u.reasoning_tokens, c),
    )


EPOCH_MS = 1_577_836_800_000  # 2020-01-01: row ids hold 41 bits of milliseconds from it (until 2089)


def row_id(ts_ms: int, randbits: Callable[[int], int] = secrets.randbits) -> int:
    """A 63-bit row id that grows with time (inserts append to the index) with 22 random bits, so replicas
    writing to one Postgres store do not collide. The writer passes its own generator (seeded from the OS):
    `secrets` makes a system call per id."""
    return (max(ts_ms - EPOCH_MS, 0) << 22) | randbits(22)


def add(
    batch: Batch,
    rec: RequestRecord,
    redactor: Redactor,
    privacy: bool,
    minimal: bool = False,
    randbits: Callable[[int], int] = secrets.randbits,
) -> None:
    """The record's rows into `batch`. `minimal`: only its request row without free text or JSON, and its usage
    rollups (spend and budgets stay right), for a record the database refused whole."""
    ts_ms = rec.started_unix_ns // 1_000_000
    row_id_ = row_id(ts_ms, randbits)
    # 22 random bits per millisecond: at a few thousand records a second, requests that start in the same
    # millisecond draw the same id now and then (the whole batch would be refused, then written one by one).
    while row_id_ in batch.ids:
        row_id_ = row_id(ts_ms, randbits)
    batch.ids.add(row_id_)
    minute = ts_ms // 60_000 * 60  # the rollups' key: hours are folded from minutes (Batch.usage_rows)
    final = rec.final_attempt
    if final is not None:
        model, provider, target = _dim(final.model), _dim(final.provider), _dim(final.target)
    else:
        model, provider, target = _dim(rec.model_requested), "", ""
    route = _dim(rec.model_requested)
    a = rec.attribution
    key, user, feature = _dim(a.key_name), _dim(a.user), _dim(a.feature)
    tokens = [0, 0, 0, 0, 0]
    for i, at in enumerate(rec.attempts):
        t = _tokens(at.usage)
        for j in range(5):
            tokens[j] += t[j]
        if minimal:
            continue
        at_model, at_provider, at_target = _dim(at.model), _dim(at.provider), _dim(at.target)
        error_class = _text(at.error_class)
        batch.attempts.append(
            (
                row_id_,
                i,
                ts_ms,
                at_model,
                at_provider,
                at_target,
                at.started_ns // 1000,
                at.duration_ns // 1000,
                None if at.ttft_ns is None else at.ttft_ns // 1000,
                at.upstream_status,
                error_class,
                _text(at.error_message, redactor),
                _text(at.finish_reason),
                *t,
                _cost(at.cost_pusd),
                _dim(at.cost_source),
            )
        )
        outcome = error_class or "ok"
        batch.outcomes[(minute, at_provider, at_model, at_target, outcome)] += 1
        if at.ok:
            batch.latency[(minute, at_provider, at_model, at_target, TOTAL, bucket_of(at.duration_ns / 1e6))] += 1
            if at.ttft_ns is not None:
                batch.latency[(minute, at_provider, at_model, at_target, TTFT, bucket_of(at.ttft_ns / 1e6))] += 1
    tokens = [min(n, MAX_TOKENS) for n in tokens]
    cost, source = rec.cost
    cost = _cost(cost)
    source = _dim(source)
    ttft_us = None
    if final is not None and final.ttft_ns is not None:
        ttft_us = (final.started_ns + final.ttft_ns) // 1000  # from the request's start
    tags = None if minimal else rec.all_tags()
    full = not minimal
    # 1 when an attempt before the final one was billed: its share is not the request row's model, provider, target.
    # A minimal row has no attempt rows to read the shares from: 0, so its raw row counts whole for its final model.
    split = int(not minimal and any(at.usage is not None or at.cost_pusd for at in rec.attempts[:-1]))
    batch.requests.append(
        (
            row_id_,
            _dim(rec.request_id),
            ts_ms,
            _dim(rec.endpoint),
            route,
            model,
            provider,
            target,
            key,
            user,
            feature,
            _text(a.app_url) if full else None,
            _text(a.session_id) if full else None,
            _json(tags, redactor) if tags else None,
            rec.status_code,
            _text(rec.error_class),
            _text(rec.error_message) if full else None,
            1 if rec.stream else 0,
            rec.duration_ns // 1000,
            ttft_us,
            len(rec.attempts),
            *tokens,
            cost,
            source,
            _json(rec.params, redactor) if rec.params and full else None,
            None if privacy or minimal or not rec.input_messages else _json(list(rec.input_messages), redactor),
            None if privacy or minimal else _text(rec.output_text, redactor),
            split,
        )
    )
    error = 1 if (rec.status_code >= 400 or rec.error_class) and not rec.client_cancelled else 0
    delta = [1, error, *tokens, cost or 0, *_SOURCE_FLAGS.get(source, _NO_FLAGS)]
    if len(rec.attempts) <= 1:  # the common case: the one attempt's share is the whole request's
        _sum_into(batch.combos, (minute, key, user, feature, route, model, provider, target), delta)
    else:
        _sum_into(batch.combos, (minute, key, user, feature, route, None, None, None), delta)
        for dim, share in _attempt_shares(rec, error).items():
            for value, sums in share.items():
                _sum_into(batch.usage, (dim, minute, value), sums)


_SOURCE_FLAGS = {"unpriced": (1, 0, 0), "estimated": (0, 1, 0), "reported": (0, 0, 1)}  # usage_hourly's last three
_NO_FLAGS = (0, 0, 0)
ATTEMPT_DIMS = ("model", "provider", "target")  # the rollups' dimensions an attempt, not a request, decides


def _sum_into(usage: dict[tuple[Any, ...], list[int]], ukey: tuple[Any, ...], delta: list[int]) -> None:
    sums = usage.get(ukey)
    if sums is None:
        usage[ukey] = list(delta)
    else:
        for j in range(11):
            sums[j] += delta[j]


def _attempt_shares(rec: RequestRecord, error: int) -> dict[str, dict[str, list[int]]]:
    """A request with several attempts, split over the model, provider and target rollups: each attempt's tokens
    and cost go to its own model, provider and target (an attempt's cost belongs to whoever billed it); the request
    itself (its count and whether it failed) to its final attempt's, so each grouping still sums to the totals.
    The source flags of a group are the least certain source among its attempts (unpriced > estimated > reported).
    """
    out: dict[str, dict[str, list[int]]] = {dim: {} for dim in ATTEMPT_DIMS}
    ranks: dict[tuple[str, str], int] = {}
    last = len(rec.attempts) - 1
    for i, at in enumerate(rec.attempts):
        t = _tokens(at.usage)
        cost = _cost(at.cost_pusd) or 0
        rank = COST_RANK.get(at.cost_source, 0)
        for dim, value in (("model", _dim(at.model)), ("provider", _dim(at.provider)), ("target", _dim(at.target))):
            sums = out[dim].get(value)
            if sums is None:
                sums = out[dim][value] = [0] * 11
            if i == last:
                sums[0] += 1
                sums[1] += error
            for j in range(5):
                sums[2 + j] += t[j]
            sums[7] += cost
            if rank > ranks.get((dim, value), 0):
                ranks[(dim, value)] = rank
    for (dim, value), rank in ranks.items():
        flags = _SOURCE_FLAGS.get(_SOURCE_OF_RANK[rank], _NO_FLAGS)
        out[dim][value][8:11] = flags
    for share in out.values():
        for sums in share.values():
            for j in range(2, 7):
                sums[j] = min(sums[j], MAX_TOKENS)
    return out


_SOURCE_OF_RANK = {rank: source for source, rank in COST_RANK.items()}


def build(
    records: Iterable[RequestRecord],
    redactor: Redactor,
    privacy: bool,
    randbits: Callable[[int], int] = secrets.randbits,
) -> Batch:
    """The records' rows in one batch. `randbits` draws the row ids' random bits, as in `add`."""
    batch = Batch()
    for rec in records:
        add(batch, rec, redactor, privacy, randbits=randbits)
    return batch

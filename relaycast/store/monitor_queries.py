"""The reads monitor rules evaluate: spend per window, attempt latencies, attempt outcomes, and a scope's usage
in a period. Each function takes a blocking `Connection` and returns small frozen rows; the rules that judge
them (`relaycast.monitors.rules`) do no I/O.

Windows are half-open the other way round, `(start, end]`: a request stamped at the very moment of evaluation
counts in the current one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relaycast.store.db import Connection
from relaycast.store.queries import ATTEMPT_DIMENSIONS, DIMENSIONS


@dataclass(frozen=True, slots=True)
class Window:
    k: int  # 0 is the current window, 1..N the baseline
    start_ms: int  # exclusive
    end_ms: int  # inclusive


@dataclass(frozen=True, slots=True)
class SpendRow:
    window: int  # the window's k
    value: str  # the value of the dimension spend is split by ("" when it is not split)
    pico: int  # pico-dollars


@dataclass(frozen=True, slots=True)
class LatencySample:
    target: str
    duration_us: int
    ttft_us: int | None  # None: the attempt did not stream


@dataclass(frozen=True, slots=True)
class OutcomeCount:
    error_class: str | None  # None: the attempt succeeded
    count: int


@dataclass(frozen=True, slots=True)
class UsageTotal:
    pico: int
    unpriced: int  # requests with no price, not in `pico`


def first_request_ms(conn: Connection) -> int | None:
    """When the oldest stored request was made (None: the store has none)."""
    first = conn.query("SELECT min(ts_ms) FROM requests")[0][0]
    return None if first is None else int(first)


def spend_by_window(
    conn: Connection, windows: Sequence[Window], dim: str | None, where: Sequence[tuple[str, str]] = ()
) -> list[SpendRow]:
    """Pico-dollars per (window, value of `dim`) from the raw rows, filtered by `where` (dimension, value). Split
    by or filtered on model, provider or target, each attempt's cost counts for its own (the rollups' rule).

    Windows of one width laid back to back from the current one are read in a single grouped query; others (the
    same hour on earlier days) one query each."""
    if not windows:
        return []
    now_ms = windows[0].end_ms
    width = now_ms - windows[0].start_ms
    if _back_to_back(windows, now_ms, width):
        src, args = _spent(dim, where, windows[-1].start_ms, now_ms)
        rows = conn.query(
            f"SELECT (? - ts) / ? AS k, v, sum(pico) FROM ({src}) t GROUP BY k, v", [now_ms, width, *args]
        )
        return _sum_rows((int(k), v, int(pico or 0)) for k, v, pico in rows)
    out: list[tuple[int, Any, int]] = []
    for w in windows:
        src, args = _spent(dim, where, w.start_ms, w.end_ms)
        for v, pico in conn.query(f"SELECT v, sum(pico) FROM ({src}) t GROUP BY v", args):
            out.append((w.k, v, int(pico or 0)))
    return _sum_rows(out)


def _spent(dim: str | None, where: Sequence[tuple[str, str]], after_ms: int, until_ms: int) -> tuple[str, list[Any]]:
    """Rows (ts, v, pico) of the spend in `(after_ms, until_ms]`: a request's own when nothing asks for a model,
    provider or target or when its cost is all its final attempt's (`split` 0); else one per attempt (through the
    `requests_split` index)."""
    per_attempt = dim in ATTEMPT_DIMENSIONS or any(d in ATTEMPT_DIMENSIONS for d, _ in where)
    r_cond = a_cond = "r.ts_ms > ? AND r.ts_ms <= ?"
    r_args: list[Any] = [after_ms, until_ms]
    for d, v in where:
        r_cond += f" AND r.{DIMENSIONS[d]} = ?"
        a_cond += f" AND {'a' if d in ATTEMPT_DIMENSIONS else 'r'}.{DIMENSIONS[d]} = ?"
        r_args.append(v)
    r_col = f"r.{DIMENSIONS[dim]}" if dim else "''"
    own = f"SELECT r.ts_ms AS ts, {r_col} AS v, coalesce(r.cost_pusd, 0) AS pico FROM requests r WHERE {r_cond}"
    if not per_attempt:
        return own, r_args
    a_col = f"{'a' if dim in ATTEMPT_DIMENSIONS else 'r'}.{DIMENSIONS[dim]}" if dim else "''"
    return (
        f"{own} AND r.split = 0 UNION ALL SELECT r.ts_ms, {a_col}, coalesce(a.cost_pusd, 0) FROM requests r "
        f"JOIN attempts a ON a.request_row = r.id WHERE r.split = 1 AND {a_cond}",
        r_args * 2,
    )


def _back_to_back(windows: Sequence[Window], now_ms: int, width: int) -> bool:
    return width > 0 and all(
        w.k == i and w.end_ms == now_ms - i * width and w.start_ms == w.end_ms - width for i, w in enumerate(windows)
    )


def _sum_rows(rows: Any) -> list[SpendRow]:
    total: dict[tuple[int, str], int] = {}
    for k, v, pico in rows:
        total[(k, v)] = total.get((k, v), 0) + pico
    return [SpendRow(k, v, pico) for (k, v), pico in total.items()]


def attempt_latencies(
    conn: Connection,
    since_ms: int,
    until_ms: int,
    *,
    route: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    target: str | None = None,
) -> list[LatencySample]:
    """The successful attempts in `(since_ms, until_ms]`: of requests for `route` when given, else of the model,
    provider and target given."""
    sql = "SELECT a.target, a.duration_us, a.ttft_us FROM attempts a"
    args: list[Any] = []
    if route is not None:
        sql += " JOIN requests r ON r.id = a.request_row WHERE r.model_requested = ? AND"
        args.append(route)
    else:
        sql += " WHERE"
        for col, v in (("model", model), ("provider", provider), ("target", target)):
            if v is not None:
                sql += f" a.{col} = ? AND"
                args.append(v)
    sql += " a.ts_ms > ? AND a.ts_ms <= ? AND a.error_class IS NULL"
    return [LatencySample(t, dur, tt) for t, dur, tt in conn.query(sql, [*args, since_ms, until_ms])]


def attempt_outcomes(conn: Connection, provider: str, since_ms: int, until_ms: int) -> list[OutcomeCount]:
    """How many of the provider's attempts in `(since_ms, until_ms]` ended in each error class (None: success)."""
    rows = conn.query(
        "SELECT error_class, count(*) FROM attempts WHERE provider = ? AND ts_ms > ? AND ts_ms <= ? GROUP BY error_class",
        (provider, since_ms, until_ms),
    )
    return [OutcomeCount(cls, int(n)) for cls, n in rows]


def usage_total(conn: Connection, dim: str, value: str, start_s: int, until_s: int) -> UsageTotal:
    """A scope's spend in the hourly rollups whose hour starts in `[start_s, until_s]`."""
    row = conn.query(
        "SELECT sum(cost_pusd), sum(unpriced) FROM usage_hourly WHERE dim = ? AND value = ? AND hour >= ? AND hour <= ?",
        (dim, value, start_s, until_s),
    )[0]
    return UsageTotal(int(row[0] or 0), int(row[1] or 0))

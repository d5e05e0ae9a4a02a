"""Incidents in the store: opened when a rule starts firing for a scope, resolved when it stops.

The database allows one open incident per (rule, scope) (a unique partial index), so when several replicas share
a store and evaluate the same rule, exactly one opens the incident (and notifies) and exactly one resolves it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from relaycast.store.db import Connection

_COLS = (
    "id",
    "rule",
    "scope",
    "kind",
    "opened_ms",
    "resolved_ms",
    "value",
    "threshold",
    "message",
    "resolve_message",
    "details",
)


@dataclass(frozen=True, slots=True)
class NewIncident:
    """What a rule found when it started firing for a scope."""

    rule: str
    kind: str
    scope: str  # "" for the whole rule, else "user=alice", "target=openai/gpt-4o", ...
    value: float | None
    threshold: float
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


def open_map(conn: Connection) -> dict[tuple[str, str], str]:
    """(rule, scope) -> incident id, for every open incident."""
    return {(r, s): i for i, r, s in conn.query("SELECT id, rule, scope FROM incidents WHERE resolved_ms IS NULL")}


def open_incident(conn: Connection, new: NewIncident, now_ms: int) -> dict[str, Any] | None:
    """Open it; None when another replica already has (the unique index refused this one)."""
    iid = "inc_" + secrets.token_hex(8)
    row = (
        iid,
        new.rule,
        new.scope,
        new.kind,
        now_ms,
        None,
        new.value,
        new.threshold,
        new.message,
        None,
        orjson.dumps(dict(new.details), default=str).decode(),
    )
    if not conn.insert_unique("incidents", _COLS, row):
        return None  # an open incident for (rule, scope) exists already: another replica opened it
    return dict(zip(_COLS, row, strict=False))


def resolve_incident(conn: Connection, rule: str, scope: str, message: str, now_ms: int) -> dict[str, Any] | None:
    """Resolve the open incident; None when there was none left (another replica resolved it)."""
    with conn.transaction():
        found = conn.query_in_tx(
            f"SELECT {', '.join(_COLS)} FROM incidents WHERE rule = ? AND scope = ? AND resolved_ms IS NULL",
            (rule, scope),
        )
        if not found:
            return None
        n = conn.execute(
            "UPDATE incidents SET resolved_ms = ?, resolve_message = ? WHERE id = ? AND resolved_ms IS NULL",
            (now_ms, message, found[0][0]),
        )
    if n != 1:
        return None
    inc = dict(zip(_COLS, found[0], strict=False))
    inc.update(resolved_ms=now_ms, resolve_message=message)
    return inc


def recent(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.query(f"SELECT {', '.join(_COLS)} FROM incidents ORDER BY opened_ms DESC LIMIT ?", (limit,))
    out = []
    for r in rows:
        d = dict(zip(_COLS, r, strict=False))
        d["details"] = orjson.loads(d["details"]) if d["details"] else {}
        d["state"] = "open" if d["resolved_ms"] is None else "resolved"
        out.append(d)
    return out

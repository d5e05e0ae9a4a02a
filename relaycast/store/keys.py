"""Virtual keys in the store (SQLite or the Postgres all replicas share): create, list, revoke, rotate, delete, load.

A key's secret is generated here, returned once to the caller, and stored only as its SHA-256 hash (plus an
8-character prefix, to tell keys apart in lists). Every change bumps `updated_ms`, or the count of keys, which
replicas poll to reload.

Deleting a key also marks the store as one where keys were issued (`gateway_settings` row `keys.issued`): once
the last row is gone, that mark is what keeps the gateway from reopening to requests without a key.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from relaycast.keys.policy import KeyPolicy, Limits
from relaycast.keys.settings import hash_secret
from relaycast.store import marks
from relaycast.store.db import Connection

SECRET_PREFIX = "rk-"
ISSUED = "keys.issued"  # the gateway_settings row that says keys were issued in this store
CHANGED = "keys.changed"  # the gateway_settings row every key change rewrites (`version`)
_COLS = (
    "name",
    "sha256",
    "prefix",
    "owner",
    "models",
    "user_id",
    "feature",
    "tags",
    "limits",
    "created_ms",
    "expires_ms",
    "revoked_ms",
    "rotated_ms",
    "updated_ms",
)


class KeyExists(Exception):
    pass


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(30)


def create(conn: Connection, policy: KeyPolicy, now_ms: int) -> str:
    """Store a new key; returns its secret (the only time it exists anywhere)."""
    secret = new_secret()
    row = (
        policy.name,
        hash_secret(secret),
        secret[:8],
        policy.owner,
        _j(list(policy.models) if policy.models is not None else None),
        policy.user,
        policy.feature,
        _j(dict(policy.tags)) if policy.tags else None,
        _j({**policy.limits.doc(), "pin": True} if policy.pin else policy.limits.doc()),  # kept with the limits
        now_ms,
        policy.expires_ms,
        None,
        None,
        now_ms,
    )
    if not conn.insert_unique("gateway_keys", _COLS, row):
        raise KeyExists(policy.name)
    with conn.transaction():
        marks.touch(conn, CHANGED, now_ms)
    return secret


def revoke(conn: Connection, name: str, now_ms: int) -> bool:
    with conn.transaction():
        n = conn.execute(
            "UPDATE gateway_keys SET revoked_ms = ?, updated_ms = ? WHERE name = ? AND revoked_ms IS NULL",
            (now_ms, now_ms, name),
        )
        marks.touch(conn, CHANGED, now_ms)
    return n == 1


def rotate(conn: Connection, name: str, now_ms: int) -> str | None:
    """A new secret for the key; the old one stops working at once. None if there is no such live key."""
    secret = new_secret()
    with conn.transaction():
        n = conn.execute(
            "UPDATE gateway_keys SET sha256 = ?, prefix = ?, rotated_ms = ?, updated_ms = ? WHERE name = ? AND revoked_ms IS NULL",
            (hash_secret(secret), secret[:8], now_ms, now_ms, name),
        )
        marks.touch(conn, CHANGED, now_ms)
    return secret if n == 1 else None


def delete(conn: Connection, name: str, now_ms: int) -> bool:
    """Delete the key's row (revoked or not); False when there is no such key."""
    with conn.transaction():
        n = conn.execute("DELETE FROM gateway_keys WHERE name = ?", (name,))
        if n == 1:
            marks.put(conn, ISSUED, "true", now_ms, keep=True)
            marks.touch(conn, CHANGED, now_ms)
    return n == 1


def issued(conn: Connection) -> bool:
    """Were keys ever deleted from this store (so it had some)? Rows still there say so on their own."""
    return marks.get(conn, ISSUED) is not None


def version(conn: Connection) -> tuple[int, int, str]:
    """(count, last change, change marker): what replicas poll to know when to reload. The marker moves with every
    change whatever the clocks of the replicas that made them say (a delete and a create in the same millisecond, a
    replica whose clock is behind)."""
    n, last = conn.query("SELECT count(*), max(updated_ms) FROM gateway_keys")[0]
    return int(n or 0), int(last or 0), marks.get(conn, CHANGED) or ""


def load(conn: Connection) -> list[tuple[str, KeyPolicy]]:
    """(sha256, policy) for every key, revoked ones included (so their use gets a precise 401)."""
    out = []
    for r in conn.query(f"SELECT {', '.join(_COLS)} FROM gateway_keys"):
        d = dict(zip(_COLS, r, strict=False))
        out.append((d["sha256"], _policy(d)))
    return out


def listing(conn: Connection, now_ms: int | None = None) -> list[dict[str, Any]]:
    rows = conn.query(f"SELECT {', '.join(_COLS)} FROM gateway_keys ORDER BY created_ms")
    out = []
    for r in rows:
        d = dict(zip(_COLS, r, strict=False))
        p = _policy(d)
        out.append(
            {
                "name": p.name,
                "prefix": d["prefix"],
                "owner": p.owner,
                "models": list(p.models) if p.models is not None else None,
                "user": p.user,
                "feature": p.feature,
                "pin": p.pin,
                "tags": dict(p.tags),
                "limits": p.limits.doc(),
                "created_ms": d["created_ms"],
                "expires_ms": d["expires_ms"],
                "revoked_ms": d["revoked_ms"],
                "rotated_ms": d["rotated_ms"],
                "state": _state(d, now_ms),
            }
        )
    return out


def _state(d: dict[str, Any], now_ms: int | None) -> str:
    if d["revoked_ms"] is not None:
        return "revoked"
    if d["expires_ms"] is not None and now_ms is not None and now_ms >= d["expires_ms"]:
        return "expired"
    return "active"


def _policy(d: dict[str, Any]) -> KeyPolicy:
    models = orjson.loads(d["models"]) if d["models"] else None
    tags = orjson.loads(d["tags"]) if d["tags"] else {}
    lim = orjson.loads(d["limits"]) if d["limits"] else {}
    pin = bool(lim.pop("pin", False))
    return KeyPolicy(
        name=d["name"],
        source="store",
        owner=d["owner"],
        models=tuple(models) if models is not None else None,
        user=d["user_id"],
        feature=d["feature"],
        pin=pin,
        tags=tuple(tags.items()),
        limits=Limits(**{k: v for k, v in lim.items() if v is not None}),
        expires_ms=d["expires_ms"],
        revoked_ms=d["revoked_ms"],
    )


def _j(v: Any) -> str:
    return orjson.dumps(v).decode()

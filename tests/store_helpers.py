"""Helpers for tests of the store: a throwaway Postgres database, and the analytics API read as an admin."""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import ADMIN_KEY

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_database() -> Iterator[str]:
    """Create an empty database on this machine's Postgres server; drop it afterwards. Yields its URL."""
    import psycopg

    name = "relaycast_test_" + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrated_store(dialect: str, directory: Path) -> Iterator[Any]:
    """A migrated store's connection: a SQLite file in `directory`, or a new database on this machine's Postgres
    (dropped afterwards). For a fixture parametrized over both: `yield from migrated_store(request.param, tmp)`."""
    from relaycast.store.db import Connection
    from relaycast.store.settings import StoreConfig

    if dialect == "sqlite":
        c = Connection(StoreConfig(path=str(directory / "s.db")))
        c.migrate()
        yield c
        c.close()
        return
    gen = postgres_database()
    c = Connection(StoreConfig(url=next(gen)))
    c.migrate()
    yield c
    c.close()
    gen.close()


def admin_get(base: str, path: str, key: str | None = ADMIN_KEY) -> tuple[int, Any]:
    return admin_call(base, "GET", path, key=key)


def admin_call(
    base: str, method: str, path: str, body: Any = None, key: str | None = ADMIN_KEY, timeout: float = 30
) -> tuple[int, Any]:
    """An admin API call with the admin key (a JSON body when given): (status, the JSON answer)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        data = orjson.dumps(body)
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read() or b"null")


def wait_stored(base: str, request_ids: list[str], timeout: float = 15.0) -> dict[str, Any]:
    """Each request's stored detail, once the store has written them all."""
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for rid in request_ids:
            if rid not in found:
                status, body = admin_get(base, f"/admin/analytics/requests/{rid}")
                if status == 200:
                    found[rid] = body
        if len(found) == len(request_ids):
            return found
        time.sleep(0.1)
    raise AssertionError(f"not stored within {timeout}s: {sorted(set(request_ids) - set(found))}")

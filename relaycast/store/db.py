"""One small face over SQLite (stdlib `sqlite3`) and Postgres (`psycopg` 3): connect, migrate, run SQL.

psycopg is one of relaycast's dependencies (`psycopg[binary]` in pyproject.toml), imported only when a Postgres
store is configured.

SQL is written once with `?` placeholders and the subset both engines share (ON CONFLICT upserts, BIGINT, no
vendor functions); Postgres gets `%s`. Connections are blocking and used from the store's own threads only, never
from the event loop.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from relaycast.store.schema import ID_PRIMARY_KEY, MIGRATIONS
from relaycast.store.settings import StoreConfig

MIGRATION_LOCK = 0x72656C6179  # advisory lock id on Postgres ("relay")


class StoreUnavailable(Exception):
    """The database could not be reached or refused the operation; the message never holds a password."""


class Connection:
    """A blocking connection with the dialect's placeholders. Not thread-safe: one per thread."""

    def __init__(self, cfg: StoreConfig) -> None:
        self.dialect = cfg.dialect
        self._cfg = cfg
        if cfg.url:
            try:
                import psycopg
            except ImportError:
                raise StoreUnavailable(
                    "a Postgres store needs psycopg, a dependency of relaycast that cannot be imported here: "
                    "pip install 'psycopg[binary]>=3.1'"
                ) from None
            try:
                self._conn: Any = psycopg.connect(cfg.url, autocommit=False, connect_timeout=10)
            except psycopg.Error as e:
                raise StoreUnavailable(f"cannot connect to {cfg.display()}: {_first_line(e)}") from None
        else:
            assert cfg.path is not None
            try:
                create_private(Path(cfg.path))
                self._conn = sqlite3.connect(cfg.path, isolation_level=None, check_same_thread=False, timeout=10)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("PRAGMA temp_store=MEMORY")
            except sqlite3.Error as e:
                raise StoreUnavailable(f"cannot open {cfg.display()}: {e}") from None
            except OSError as e:
                raise StoreUnavailable(f"cannot create {cfg.display()}: {e.strerror or type(e).__name__}") from None

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(self._sql(sql), params)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        if self.dialect == "postgres":
            self._conn.rollback()  # end the read's transaction: no snapshot held between queries
        return rows

    def transaction(self) -> _Tx:
        return _Tx(self)

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass

    # --- used inside a transaction ------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._conn.execute(self._sql(sql), params)
        count: int = cur.rowcount
        return count

    def query_in_tx(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read inside a transaction (does not end it, unlike `query`)."""
        rows: list[tuple[Any, ...]] = self._conn.execute(self._sql(sql), params).fetchall()
        return rows

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.dialect == "postgres":
            with self._conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self._conn.executemany(sql, rows)

    def insert(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """Insert many rows: COPY on Postgres (several times faster than INSERTs), executemany on SQLite."""
        if not rows:
            return
        if self.dialect == "postgres":
            with self._conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
        else:
            self._conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", rows
            )

    def insert_unique(self, table: str, columns: tuple[str, ...], row: tuple[Any, ...]) -> bool:
        """Insert one row in its own transaction; False when a unique constraint refuses it."""
        try:
            with self.transaction():
                self.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", row
                )
        except Exception as e:
            if is_transient(e) or not is_db_error(e):
                raise
            return False
        return True

    def migrate(self) -> int:
        """Apply the migrations this database has not seen; returns the schema version."""
        with self.transaction():
            if self.dialect == "postgres":
                self.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for stmt in statements:
                    self.execute(stmt.replace("{ID_PRIMARY_KEY}", ID_PRIMARY_KEY[self.dialect]))
                self.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                current = version
        return current


class _Tx:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def __enter__(self) -> Connection:
        if self._c.dialect == "sqlite":
            self._c._conn.execute("BEGIN IMMEDIATE")
        return self._c

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._c._conn.commit() if self._c.dialect == "postgres" else self._c._conn.execute("COMMIT")
        else:
            try:
                self._c._conn.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the caller reconnects
                pass


def create_private(path: Path) -> None:
    """Create the SQLite file, if missing, readable by its owner only (0600; directories the gateway creates for
    it 0700): it holds prompts, completions and key hashes. SQLite gives its -wal and -shm files the database
    file's mode. An existing file keeps the mode it has."""
    missing = []
    d = path.parent
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        return None
    return psycopg


def is_db_error(e: BaseException) -> bool:
    pg = _psycopg()
    return isinstance(e, (sqlite3.Error, StoreUnavailable)) or (pg is not None and isinstance(e, pg.Error))


def is_transient(e: BaseException) -> bool:
    """The database is down, busy or the connection broke: the same write can succeed later."""
    pg = _psycopg()
    return isinstance(e, (sqlite3.OperationalError, StoreUnavailable)) or (
        pg is not None and isinstance(e, (pg.OperationalError, pg.InterfaceError))
    )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]

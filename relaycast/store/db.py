"""One small face over SQLite (stdlib `sqlite3`) and Postgres (`psycopg` 3): connect, migrate, run SQL, on the
store's own threads.

psycopg is one of relaycast's dependencies (`psycopg[binary]` in pyproject.toml), imported only when a Postgres
store is configured.

SQL is written once with `?` placeholders and the subset both engines share (ON CONFLICT upserts, BIGINT, no
vendor functions); Postgres gets `%s`. Connections are blocking and used from the store's own threads only, never
from the event loop: `StoreThreads` runs calls on daemon threads that each own a connection, and waits for each
at most its deadline.

Every wait on the database is bounded: Postgres connections have a connect timeout, TCP keepalives and a user
timeout, and a server-side `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout`; SQLite
has a busy timeout. A peer that stays up but stops answering (a black-holed proxy) is caught by the call's
deadline: the caller gets `StoreTimeout`, and the connection is aborted so its thread is free at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import queue
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from relaycast import errors
from relaycast.private_files import open_private, private_dirs
from relaycast.store.schema import ID_PRIMARY_KEY, MIGRATIONS
from relaycast.store.settings import StoreConfig

MIGRATION_LOCK = 0x72656C6179  # advisory lock id on Postgres ("relay")

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The database could not be reached or refused the operation; the message never holds a password."""


class StoreTimeout(StoreUnavailable):
    """The store did not answer within a call's deadline: the call was abandoned and its connection aborted."""


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def postgres_options(cfg: StoreConfig) -> dict[str, Any]:
    """libpq's connection parameters for the store's timeouts: they override the same ones in the URL."""
    keepalive = cfg.keepalive_idle_s + cfg.keepalive_interval_s * cfg.keepalive_count
    return {
        "connect_timeout": max(2, round(cfg.connect_timeout_s)),  # whole seconds; libpq treats 1 as 2
        "keepalives": 1,
        "keepalives_idle": cfg.keepalive_idle_s,
        "keepalives_interval": cfg.keepalive_interval_s,
        "keepalives_count": cfg.keepalive_count,
        # Data sent and not acknowledged for this long (a peer gone without a reset) ends the connection too.
        "tcp_user_timeout": keepalive * 1000,
    }


class Connection:
    """A blocking connection with the dialect's placeholders. Not thread-safe: one per thread, except `abort`.

    `statement_timeout_s` is the server's limit on each statement (Postgres; default the config's
    `write_timeout_s`); a transaction left idle that long is ended by the server too."""

    def __init__(self, cfg: StoreConfig, statement_timeout_s: float | None = None) -> None:
        self.dialect = cfg.dialect
        self._cfg = cfg
        self._guard = threading.Lock()  # close and abort, which another thread may call
        self._closed = False
        self._aborted = False
        self._sock: socket.socket | None = None
        statement_s = statement_timeout_s or cfg.write_timeout_s
        if cfg.url:
            try:
                import psycopg
            except ImportError:
                raise StoreUnavailable(
                    "a Postgres store needs psycopg, a dependency of relaycast that cannot be imported here: "
                    "pip install 'psycopg[binary]>=3.1'"
                ) from None
            try:
                self._conn: Any = psycopg.connect(cfg.url, autocommit=False, **postgres_options(cfg))
            except psycopg.Error as e:
                raise StoreUnavailable(f"cannot connect to {cfg.display()}: {_first_line(e)}") from None
            # Nothing else can reach this connection until it is set up: a watchdog aborts it if the server stops
            # answering in between (the connect timeout covers only the connection itself).
            watchdog = threading.Timer(cfg.connect_timeout_s, self.abort)
            watchdog.daemon = True
            try:
                # A second descriptor of the same socket, for `abort` from another thread: libpq may close its
                # own descriptor when the connection breaks, and its number could then name some other socket.
                self._sock = socket.socket(fileno=os.dup(self._conn.fileno()))
                watchdog.start()
                self._conn.execute(
                    "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false),"
                    " set_config('idle_in_transaction_session_timeout', %s, false)",
                    (_ms(statement_s), _ms(cfg.lock_timeout_s), _ms(statement_s)),
                )
                self._conn.commit()
            except (psycopg.Error, OSError) as e:
                self.close()
                raise StoreUnavailable(f"cannot set up {cfg.display()}: {_first_line(e)}") from None
            finally:
                watchdog.cancel()
            if self._aborted:  # the watchdog fired as the answer came
                self.close()
                raise StoreUnavailable(f"cannot set up {cfg.display()}: no answer within the connect timeout")
        else:
            assert cfg.path is not None
            try:
                create_private(Path(cfg.path))
                self._conn = sqlite3.connect(
                    cfg.path, isolation_level=None, check_same_thread=False, timeout=cfg.lock_timeout_s
                )
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
        if self.dialect == "sqlite":
            rows: list[tuple[Any, ...]] = self._conn.execute(sql, params).fetchall()
            return rows
        try:
            rows = self._conn.execute(self._sql(sql), params).fetchall()
        finally:
            # End the read's transaction, failed or not: no snapshot held between queries, and a statement the
            # server cancelled (a timeout) leaves the connection usable.
            with contextlib.suppress(Exception):
                self._conn.rollback()
        return rows

    def transaction(self, statement_timeout_s: float | None = None) -> _Tx:
        """A transaction; `statement_timeout_s` replaces the connection's statement timeout inside it (Postgres)."""
        return _Tx(self, statement_timeout_s)

    def abort(self) -> None:
        """Make the call running on this connection fail now; any thread may call it. Postgres: the socket is shut
        down, so psycopg's wait ends with an error at once whatever the peer does (the server ends the session when
        it sees the close, or at its statement timeout). SQLite: the statement is interrupted. The connection is
        not used again."""
        with self._guard:
            if self._closed:
                return
            self._aborted = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
            elif self.dialect == "sqlite":
                with contextlib.suppress(sqlite3.Error):
                    self._conn.interrupt()

    def settle(self) -> bool:
        """After a call: end any transaction it left open. False when the connection cannot be used again."""
        if self._aborted or self._closed:
            return False
        if self.dialect == "postgres":
            if self._conn.closed or self._conn.broken:
                return False
            if self._conn.info.transaction_status != 0:  # not idle: a call failed inside a transaction
                try:
                    self._conn.rollback()
                except Exception:  # noqa: BLE001 - broken after all
                    return False
        return True

    def close(self) -> None:
        with self._guard:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
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
    def __init__(self, conn: Connection, statement_timeout_s: float | None) -> None:
        self._c = conn
        self._statement_timeout_s = statement_timeout_s

    def __enter__(self) -> Connection:
        if self._c.dialect == "sqlite":
            self._c._conn.execute("BEGIN IMMEDIATE")
        elif self._statement_timeout_s is not None:
            self._c._conn.execute("SELECT set_config('statement_timeout', %s, true)", (_ms(self._statement_timeout_s),))
        return self._c

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._c._conn.commit() if self._c.dialect == "postgres" else self._c._conn.execute("COMMIT")
        else:
            try:
                self._c._conn.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the caller reconnects
                pass


class _State(enum.Enum):
    WAITING = 1
    RUNNING = 2
    DONE = 3
    ABANDONED = 4  # its caller stopped waiting before a thread took it


class _Job:
    __slots__ = ("fn", "args", "loop", "future", "state", "conn", "abort_asked")

    def __init__(self, fn: Callable[..., Any] | None, args: tuple[Any, ...], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn  # None: the thread ends (its connection closed), then settles this job
        self.args = args
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.state = _State.WAITING
        self.conn: Connection | None = None  # while it runs
        self.abort_asked = False

    def settle(self, result: Any, error: BaseException | None) -> None:
        """Hand the outcome to the waiting caller (from a store thread)."""
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future, result, error)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the caller timed out or was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class StoreThreads:
    """`threads` daemon threads, each owning one connection (opened by `opener` on first use, and again after one
    breaks; then `setup(conn)` runs as part of the call that opened it), running calls from one queue of at most
    `max_waiting`.

    `call(fn, *args, timeout_s=...)` runs `fn(conn, *args)` on a thread and waits at most `timeout_s`, queueing
    included: past it the caller gets `StoreTimeout`, and a call already running has its connection aborted, so
    the thread is free again at once. A full queue refuses at once (`StoreUnavailable`): callers never pile up
    behind a store that does not answer. The threads are daemons: one stuck where no timeout reaches (a
    connection attempt, within its connect timeout) never keeps the process from exiting."""

    def __init__(
        self,
        name: str,
        threads: int,
        opener: Callable[[], Connection],
        max_waiting: int = 64,
        setup: Callable[[Connection], None] | None = None,
    ) -> None:
        self._name = name
        self._count = threads
        self._open = opener
        self._setup = setup
        self._jobs: queue.Queue[_Job] = queue.Queue(max(max_waiting, threads))
        self._lock = threading.Lock()  # job states, the running set, closed
        self._running: set[_Job] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.timeouts = 0  # calls abandoned at their deadline

    async def call(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        job = _Job(fn, args, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the store is closed: the gateway is stopping")
            if not self._threads:
                self._start()
            try:
                self._jobs.put_nowait(job)
            except queue.Full:
                raise StoreUnavailable(
                    f"the store is not keeping up: {self._jobs.maxsize} calls are waiting for it"
                ) from None
        try:
            result: T = await asyncio.wait_for(job.future, timeout_s)
        except TimeoutError:
            self.timeouts += 1
            self._abandon(job, abort=True)
            raise StoreTimeout(f"the store did not answer within {timeout_s:g} s") from None
        except asyncio.CancelledError:
            self._abandon(job, abort=False)  # still bounded: by the server's statement timeout
            raise
        return result

    async def close(self, timeout_s: float) -> int:
        """Take no more calls, fail the waiting ones, abort the running ones, and give the threads `timeout_s` to
        close their connections and end. Returns how many had not (daemons: they never hold up the exit)."""
        with self._lock:
            if self._closed:
                return sum(t.is_alive() for t in self._threads)
            self._closed = True
            running = [j.conn for j in self._running if j.conn is not None]
            for j in self._running:
                j.abort_asked = True
        for conn in running:
            conn.abort()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                job.state = _State.ABANDONED
            job.settle(None, StoreUnavailable("the store is closed: the gateway is stopping"))
        loop = asyncio.get_running_loop()
        ends = [_Job(None, (), loop) for _ in self._threads]
        for end in ends:
            self._jobs.put_nowait(end)
        if not ends:
            return 0
        _, pending = await asyncio.wait([e.future for e in ends], timeout=timeout_s)
        return len(pending)

    def _start(self) -> None:
        for i in range(self._count):
            t = threading.Thread(target=self._serve, name=f"relaycast-store-{self._name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _abandon(self, job: _Job, *, abort: bool) -> None:
        with self._lock:
            if job.state is _State.WAITING:
                job.state = _State.ABANDONED  # a thread will skip it
                return
            if job.state is not _State.RUNNING or not abort:
                return
            job.abort_asked = True  # still connecting: the thread will not run it
            conn = job.conn
        if conn is not None:
            conn.abort()

    # --- on a store thread --------------------------------------------------------------------

    def _serve(self) -> None:
        conn: Connection | None = None
        ready = False  # `setup` ran on conn
        while True:
            job = self._jobs.get()
            fn = job.fn
            if fn is None:
                if conn is not None:
                    conn.close()
                job.settle(None, None)
                return
            with self._lock:
                if job.state is not _State.WAITING:
                    continue
                job.state = _State.RUNNING
                self._running.add(job)
            result: Any = None
            error: BaseException | None = None
            try:
                if conn is None:
                    conn, ready = self._open(), self._setup is None
                with self._lock:
                    job.conn = conn
                    abandoned = job.abort_asked
                if abandoned:
                    raise StoreTimeout("the call was abandoned while its connection opened")
                if not ready and self._setup is not None:
                    self._setup(conn)  # abortable like the call itself; a failure closes the connection below
                    ready = True
                result = fn(conn, *job.args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, whatever it is
                error = e
            # Still abortable here: a rollback on a peer that stopped answering must not hold the thread.
            if conn is not None and (not ready or not conn.settle()):
                conn.close()
                conn = None
            with self._lock:
                job.state = _State.DONE
                job.conn = None
                self._running.discard(job)
            job.settle(result, error)


def create_private(path: Path) -> None:
    """Create the SQLite file, if missing, readable by its owner only (0600; directories the gateway creates for
    it 0700): it holds prompts, completions and key hashes. SQLite gives its -wal and -shm files the database
    file's mode. An existing file keeps the mode it has."""
    private_dirs(path.parent)
    try:
        os.close(open_private(path, os.O_WRONLY | os.O_EXCL))
    except FileExistsError:
        pass


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        return None
    return psycopg


@contextlib.contextmanager
def store_errors(scrub: Callable[[str], str], what: str = "The store cannot be reached") -> Iterator[None]:
    """Inside: a database error becomes 503 `store_unavailable` saying `what` and the error's first line
    (through `scrub`: a Postgres error may quote a URL with its password)."""
    try:
        yield
    except Exception as e:
        if not is_db_error(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise errors.StoreNotReady(f"{what}: {scrub(first)[:200]}") from None


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

"""relaycast's Redis client (the limiter's hot path, and the routing health replicas share): one connection, RESP2
over asyncio, replies parsed by hiredis.

redis-py's asyncio client spends about 150 µs of CPU per command here (a connection pool, command objects,
generic parsing); the limiter sends one command per request, so that was most of what a Redis-backed limit cost.
This client writes commands straight to one socket and matches replies to waiting futures in order, so many
requests in flight share the connection (pipelined by construction). On any connection error, every waiting call
fails with ConnectionError and the next call reconnects.

URLs: `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS, verified against the system's CAs or
`?ssl_ca_certs=<file>`), `unix://[[user]:password@]/path/to/socket[?db=N]`. Each new connection authenticates
and selects its database before any command.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class RedisReplyError(Exception):
    """Redis answered with an error (e.g. NOSCRIPT, WRONGTYPE)."""


def _encode(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.reader = hiredis.Reader(replyError=RedisReplyError)
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            fut = self.waiting.popleft()
            if not fut.done():
                if isinstance(reply, RedisReplyError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError("connection to Redis lost"))


def _expire(fut: asyncio.Future[Any], proto: _Protocol) -> None:
    if not fut.done() and proto.transport is not None:
        proto.transport.abort()  # every waiter fails with ConnectionError; the next call reconnects


class RespClient:
    def __init__(self, url: str, timeout_s: float) -> None:
        u = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(u.query).items()}
        self._socket = u.path if u.scheme == "unix" else None
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or 6379
        db = query.get("db", "") if u.scheme == "unix" else u.path.lstrip("/")
        self._db = int(db) if db.isdigit() else 0
        self._ssl = ssl.create_default_context(cafile=query.get("ssl_ca_certs")) if u.scheme == "rediss" else None
        self._password = unquote(u.password) if u.password else None
        self._username = unquote(u.username) if u.username else None
        self._timeout = timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Protocol:
        p = self._proto
        if p is not None and not p.closed:
            return p
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and not self._proto.closed:
                return self._proto
            loop = asyncio.get_running_loop()
            if self._socket is not None:
                connect = loop.create_unix_connection(_Protocol, self._socket)
            else:
                connect = loop.create_connection(_Protocol, self._host, self._port, ssl=self._ssl)
            _, proto = await asyncio.wait_for(connect, self._timeout)
            setup: list[tuple[Any, ...]] = []
            if self._password:
                setup.append(("AUTH", self._username, self._password) if self._username else ("AUTH", self._password))
            if self._db:
                # Redis commands are case-blind: lower case keeps greps for SQL to store/.
                setup.append(("select", self._db))
            if setup:
                try:
                    await self._send(proto, setup)
                except BaseException:
                    if proto.transport is not None:
                        proto.transport.abort()  # refused (a wrong password, no such db): not a connection to keep
                    raise
            self._proto = proto
            return proto

    async def _send(
        self, proto: _Protocol, commands: list[tuple[Any, ...]], errors_as_values: bool = False
    ) -> list[Any]:
        """Write the commands at once and wait for their replies, in order (Redis errors raised, or returned)."""
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        proto.waiting.extend(futs)
        assert proto.transport is not None
        proto.transport.write(b"".join(_encode(c) for c in commands))
        try:
            return await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=errors_as_values), self._timeout)
        except TimeoutError:
            # The connection is out of step with its replies now: drop it, every waiter fails, the next call reconnects.
            if proto.transport is not None:
                proto.transport.abort()
            raise TimeoutError("Redis did not answer in time") from None

    async def call(self, *args: Any) -> Any:
        """One command (the hot path: no task, no gather; a timer aborts the connection if Redis is too slow)."""
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connection()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        proto.waiting.append(fut)
        assert proto.transport is not None
        proto.transport.write(_encode(args))
        timer = loop.call_later(self._timeout, _expire, fut, proto)
        try:
            return await fut
        finally:
            timer.cancel()

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several commands in one write; replies in order (a Redis error comes back as an exception object)."""
        if not commands:
            return []
        return await self._send(await self._connection(), commands, errors_as_values=True)

    async def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None

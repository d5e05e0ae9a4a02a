"""relaycast's HTTP/1.1 client for provider calls: POST a request, get its answer's head, read its body as it comes.

It does what a gateway needs and nothing more, which is why it costs a fraction of a general client per request:
keep-alive connections pooled per origin (most recently used first; an idle one is closed after 15 s, or a second
before the upstream's own `Keep-Alive: timeout=` when it sends one),
TLS with the system's trust store, a connect timeout, gzip and deflate, no redirects (an answer is an answer), no
proxies, no cookies. The request's other budgets (first token, idle) are the caller's (`providers.http`).

A request is never sent twice: once written, a connection that closes without an answer is the caller's error
(`Disconnected`), since the upstream may have read it, and routing decides whether to try again (a POST to a model
is paid for). Header names and values are checked for line breaks and for characters outside Latin-1, so no value
can add a header or a request. Bound to the event loop it is first used in (a new loop, once the old one closed,
starts a new pool).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from relaycast.providers.exchange import Answer, ClientError, ConnectFailed, Connection, ConnectTimeout, Disconnected

MAX_IDLE = 512  # idle connections kept per origin
MAX_ROUTES = 1024  # parsed URLs remembered (providers' base URLs times their few paths)

Origin = tuple[str, int, bool]  # host, port, TLS


class Route:
    """What a URL means to the client: where to connect, the Host header, the request target, and the Basic
    credentials its user:password part carries (sent unless the request has an Authorization header of its own)."""

    __slots__ = ("origin", "target", "host", "basic")

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("the provider's URL is not an http(s) URL with a host")  # not repeated: it may hold a key
        tls = u.scheme == "https"
        port = u.port or (443 if tls else 80)
        self.origin: Origin = (u.hostname, port, tls)
        host = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"  # an IPv6 address
        try:
            name = host.encode("ascii")
        except UnicodeEncodeError:
            name = host.encode("idna")
        self.host = name if port == (443 if tls else 80) else b"%s:%d" % (name, port)
        path = u.path or "/"
        self.target = (path + ("?" + u.query if u.query else "")).encode("ascii")
        self.basic = b""
        if u.username is not None:
            pair = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
            self.basic = b"authorization: Basic " + base64.b64encode(pair) + b"\r\n"


class UpstreamClient:
    """Connections to upstreams, kept alive and reused. One per process (every provider adapter shares it);
    bound to the event loop it is first used in."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._idle: dict[Origin, list[Connection]] = {}
        self._all: set[Connection] = set()
        self._routes: dict[str, Route] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.connects = 0  # connections opened, for the curious (tests, /admin/stats)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], connect_s: float) -> Answer:
        """Send a POST and wait for its answer's head. Raises the `ClientError` classes (and ValueError for a
        header that HTTP cannot carry, or a URL that is not http(s))."""
        if self._closed:
            raise Disconnected("the gateway is shutting down")
        route = self._routes.get(url)
        if route is None:
            route = Route(url)
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            self._routes[url] = route
        head = _head(route, headers, len(body))
        loop = self._loop
        if loop is not None and loop.is_closed():  # a new event loop: the old one's connections are gone
            self._idle.clear()
            self._all.clear()
            self._loop = None
        conn = self._checkout(route.origin) if self._loop is not None else None
        if conn is None:
            conn = await self._connect(route.origin, connect_s)
        return await self._exchange(conn, head, body)

    async def _exchange(self, conn: Connection, head: bytes, body: bytes) -> Answer:
        try:
            return await conn.send(head, body)
        except BaseException:
            conn.close()  # cancelled (a budget ran out, the client left) or failed: never reused
            raise

    def _checkout(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        assert self._loop is not None
        now = self._loop.time()
        while idle and (not idle[0].open or now - idle[0].idle_since > idle[0].keepalive_s):  # oldest: gone?
            idle.pop(0).close()
        while idle:
            conn = idle.pop()
            if conn.open and now - conn.idle_since <= conn.keepalive_s:
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, connect_s: float) -> Connection:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        host, port, tls = origin
        ctx = None
        if tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            ctx = self._tls
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop, origin, self),
                    host,
                    port,
                    ssl=ctx,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {connect_s:g}s") from None
        except OSError as e:  # refused, unreachable, unresolvable, a certificate not trusted
            raise ConnectFailed(e) from None
        if self._closed:  # closed while this one was connecting
            conn.close()
            raise Disconnected("the gateway is shutting down")
        self.connects += 1
        self._all.add(conn)
        return conn

    # --- called by connections --------------------------------------------------------------------

    def idled(self, conn: Connection) -> None:
        """`conn` may carry another request."""
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= MAX_IDLE:
            idle.pop(0).close()
        idle.append(conn)

    def gone(self, conn: Connection) -> None:
        """`conn` closed (an idle one is dropped from its pool when next looked at)."""
        self._all.discard(conn)

    @property
    def open_connections(self) -> int:
        return len(self._all)

    async def close(self) -> None:
        """Close every connection, idle or busy; no new one is opened after."""
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def _head(route: Route, headers: Mapping[str, str], length: int) -> bytes:
    lines = [b"POST ", route.target, b" HTTP/1.1\r\nhost: ", route.host, b"\r\n"]
    n = 0
    try:
        for name, value in headers.items():
            lines += (name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
            n += 1
    except UnicodeEncodeError:
        raise ValueError("a header name or value holds a character outside Latin-1") from None
    if route.basic and not any(name.lower() == "authorization" for name in headers):
        lines.append(route.basic)
        n += 1
    lines.append(b"accept-encoding: gzip, deflate\r\ncontent-length: %d\r\n\r\n" % length)
    head = b"".join(lines)
    # Exactly one line break per header line: none inside a name or a value.
    if head.count(b"\n") != n + 5 or head.count(b"\r") != n + 5:
        raise ValueError("a header name or value holds a line break")
    return head


__all__ = ["Answer", "ClientError", "UpstreamClient"]

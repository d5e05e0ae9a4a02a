"""The gateway as a pure ASGI app: the lifespan builds and closes the `Services`; requests are dispatched to the
handlers (chat, embeddings), the admin API, the keys API, analytics and the dashboard; errors render here.

Every request first passes the edge checks, which stop a web page in someone's browser from using the gateway
(cross-site requests, DNS rebinding): its `Host`, and its `Origin` when it has one, must name a host the gateway
serves (`server.allowed_hosts`, by default the names of the address it listens on), and a body must be
`application/json` (the dashboard's login and logout forms excepted). `/healthz` is exempt: probes call it by IP
address, and it answers nothing but `ok`.

Every request to the API (`/v1` and below) yields exactly one record: the handlers emit their own, and what is
refused here (the edge checks, an unknown path or method, a key refused on `/v1/models`, an internal error)
is recorded here, with the attribution its headers carry (`respond.unserved`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from relaycast import errors, schema
from relaycast.asgi import Receive, Request, RequestIds, Scope, Send, header_map, is_json, send_bytes
from relaycast.config import Config, ServerConfig
from relaycast.log import REQUEST_ID
from relaycast.redact import Redactor
from relaycast.server import openapi
from relaycast.server.admin import Admin
from relaycast.server.analytics import PREFIX as ANALYTICS_PREFIX
from relaycast.server.broadcast_api import PREFIX as BROADCAST_PREFIX
from relaycast.server.broadcast_api import BroadcastApi
from relaycast.server.generation import RESPONSES_PREFIX, Extras
from relaycast.server.handlers import Handlers
from relaycast.server.keys_api import PREFIX as KEYS_PREFIX
from relaycast.server.keys_api import KeysApi
from relaycast.server.metrics_gauges import worker_gauges
from relaycast.server.respond import api_endpoint, send_error, unserved
from relaycast.server.services import Services, Sink
from relaycast.server.shapes import anthropic_error

if TYPE_CHECKING:
    from relaycast.server.host import Link

Endpoint = Callable[[Request], Awaitable[None]]
_SAFE_ID = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
_FORMS = frozenset({"/dashboard/login", "/dashboard/logout"})  # HTML forms: the browser sends them form-encoded
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DASHBOARD_HEADER = b"x-relaycast-dashboard"
OPENROUTER_PREFIX = "/api/v1/"
ANTHROPIC_PATHS = ("/v1/messages",)  # answered in Anthropic's error format


class Gateway:
    """`Gateway(config)` is the ASGI application. Extra record sinks (telemetry destinations) may be given, and
    a wall clock (`clock`, seconds) to replace the system's: tests inject one. `connections` reads the server's
    connection counts (`ConnectionGuard.counts`) for `/metrics`. `link`: the app is a worker of a host, whose
    telemetry process keeps the records (`relaycast.server.host`)."""

    def __init__(
        self,
        config: Config,
        sinks: Iterable[Sink] = (),
        clock: Callable[[], float] | None = None,
        connections: Callable[[], Mapping[str, int]] | None = None,
        link: Link | None = None,
    ) -> None:
        self.config = config
        self._link = link
        self._connections = connections
        self._sinks = tuple(sinks)
        self._clock = clock
        self._redactor = Redactor(config.secrets())  # for a startup failure, before the services exist
        self._hosts = allowed_hosts(config.server)
        self._ids = RequestIds()
        self.services: Services | None = None
        self._routes: dict[tuple[str, str], Endpoint] = {}
        self._paths: frozenset[str] = frozenset()
        self._keys_api: KeysApi | None = None
        self._broadcast_api: BroadcastApi | None = None

    # --- lifespan -----------------------------------------------------------------------------

    async def startup(self) -> None:
        s = await Services.start(self.config, self._sinks, self._clock, self._link)
        assert s.executor is not None
        s.connections = self._connections
        if s.host is not None:
            s.host.gauges = lambda: worker_gauges(s)
        handlers = Handlers(s, s.executor)

        async def models(r: Request) -> None:
            t0, wall0 = time.monotonic_ns(), s.wall_ns()
            key = s.auth.client(r.headers)
            anthropic = b"anthropic-version" in r.headers
            await send_bytes(r.send, 200, s.anthropic_models_body if anthropic else s.models_body, r.id_headers)
            seen = schema.seen(None, r.headers)
            if key is not None:
                seen = schema.Seen(attribution=key.attribute(seen.attribution))
            r.recorded = True
            s.emit(unserved(r, "models", wall0, time.monotonic_ns() - t0, 200, None, seen, s.redactor))

        async def health(r: Request) -> None:
            await send_bytes(r.send, 200, b'{"status":"ok"}', r.id_headers)

        extras = Extras(s, handlers.stored)
        self._routes = {
            ("GET", "/openapi.json"): openapi.serve,
            ("POST", "/v1/chat/completions"): handlers.chat,
            ("POST", "/v1/messages"): handlers.messages,
            ("POST", "/v1/messages/count_tokens"): extras.count_tokens,
            ("POST", "/v1/responses"): handlers.responses,
            ("POST", "/v1/completions"): handlers.completions,
            ("POST", "/v1/embeddings"): handlers.embeddings,
            ("GET", "/v1/models"): models,
            ("GET", "/v1/generation"): extras.generation,
            ("GET", "/healthz"): health,
            **Admin(s).routes(),
        }
        self._stored_response = extras.stored_response
        self._paths = frozenset(p for _, p in self._routes)
        self._keys_api = KeysApi(s)
        self._broadcast_api = BroadcastApi(s)
        self.services = s

    async def shutdown(self, flush_timeout_s: float | None = None) -> None:
        """Stop: flush the broadcast queues within the deadline (`server.flush_timeout` unless given; spooling what
        could not be sent), then close."""
        if self.services is not None:
            s, self.services = self.services, None
            await s.close(self.config.server.flush_timeout if flush_timeout_s is None else flush_timeout_s)

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:  # noqa: BLE001 - reported to the server, which stops
                    await send({"type": "lifespan.startup.failed", "message": self._redactor.scrub(str(e))})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        r = Request(scope, receive, send, headers, self._ids(), _client_request_id(headers))
        if r.path.startswith(OPENROUTER_PREFIX):  # OpenRouter's base URL (`.../api/v1`), served as `/v1`
            r.path = r.path[4:]
        render = anthropic_error if r.path.startswith(ANTHROPIC_PATHS) else None
        REQUEST_ID.set(r.id)  # this request's task only: each ASGI request runs in its own context
        s = self.services
        redactor = s.redactor if s is not None else self._redactor
        try:
            self._check_edge(r)
            if s is None:
                raise errors.NotReady("The gateway is starting or stopping.")
            await self._dispatch(s, r)
        except errors.RelaycastError as e:
            try:
                await send_error(send, redactor, e, r.id_headers, render)
            finally:
                if s is not None and not r.recorded:
                    _record_refusal(s, r, e)
        except Exception as e:
            if s is not None:
                s.log.error("internal_error", request_id=r.id, error=type(e).__name__, message=str(e)[:300])
            logging.getLogger("relaycast").debug("internal error", exc_info=True)
            internal = errors.RelaycastError("Internal error in the gateway.")
            try:
                await send_error(send, redactor, internal, r.id_headers, render)
            finally:
                if s is not None and not r.recorded:
                    _record_refusal(s, r, internal)

    def _check_edge(self, r: Request) -> None:
        """Host, Origin and the body's media type (the module docstring says why)."""
        if r.path == "/healthz":
            return
        hosts = self._hosts
        if hosts is not None:
            host = r.headers.get(b"host")  # absent only from clients that are not browsers (ASGI in-process)
            if host is not None and host_name(host) not in hosts:
                raise errors.Forbidden(
                    f"This gateway does not serve the host '{host.decode('latin-1')[:100]}': list it in "
                    "'server.allowed_hosts' to allow it.",
                    param="host",
                )
            origin = r.headers.get(b"origin")
            if origin is not None and origin_host(origin) not in hosts:
                raise errors.Forbidden(
                    f"Requests from the web origin '{origin.decode('latin-1')[:100]}' are not allowed: list its host "
                    "in 'server.allowed_hosts' to allow it.",
                    param="origin",
                )
        if (
            r.method not in _NO_BODY_METHODS
            and r.path.startswith("/admin/")
            and b"authorization" not in r.headers
            and b"x-api-key" not in r.headers
            and r.headers.get(DASHBOARD_HEADER) != b"1"
        ):
            # A change through the admin API with a dashboard session comes from the dashboard's own script, which
            # sends this header: an HTML form from another page (another port of this host, a sibling subdomain:
            # same-site for the cookie) cannot, and a cross-origin script cannot without a preflight, which fails.
            raise errors.Unauthorized(
                f"Missing admin key: send 'Authorization: Bearer <admin key>' (a dashboard session changes things "
                f"only from the dashboard's pages, which send '{DASHBOARD_HEADER.decode()}: 1').",
            )
        if r.method not in _NO_BODY_METHODS and r.path not in _FORMS and _has_body(r.headers):
            ctype = r.headers.get(b"content-type")
            if not is_json(ctype):
                got = "none" if ctype is None else f"'{ctype.decode('latin-1')[:100]}'"
                raise errors.UnsupportedMediaType(f"Content-Type must be application/json, got {got}.")

    async def _dispatch(self, s: Services, r: Request) -> None:
        path = r.path
        handler = self._routes.get((r.method, path))
        if handler is not None:
            await handler(r)
        elif path.startswith(RESPONSES_PREFIX) and r.method in ("GET", "DELETE"):
            await self._stored_response(r)
        elif path.startswith(BROADCAST_PREFIX):
            assert self._broadcast_api is not None
            await self._broadcast_api.handle(r)
        elif path == KEYS_PREFIX or path.startswith(KEYS_PREFIX + "/"):
            s.auth.admin(r.headers)
            assert self._keys_api is not None
            await self._keys_api.handle(r)
        elif path.startswith(ANALYTICS_PREFIX):
            _admin_or_session(s, r.headers)
            await s.analytics.handle(r.scope, r.send, path, r.id_headers)
        elif path == "/dashboard" or path.startswith("/dashboard/"):
            await s.dashboard.handle(r.scope, r.receive, r.send, r.headers, path, r.id_headers)
        elif path in self._paths:
            raise errors.MethodNotAllowed(f"Method {r.method} is not allowed on {path}.")
        else:
            raise errors.NotFoundRoute(f"Unknown request URL: {r.method} {path[:200]}.")


def _record_refusal(s: Services, r: Request, e: errors.RelaycastError) -> None:
    """The record of an API request answered `e` before a handler recorded it; none for other paths. Refused
    before its body was read: its attribution is what its headers say (the key's name when the key is valid),
    and it took no measurable time."""
    endpoint = api_endpoint(r.path)
    if endpoint is None:
        return
    r.recorded = True
    seen = schema.seen(None, r.headers)
    try:
        key = s.auth.client(r.headers)
    except errors.RelaycastError:
        key = None
    if key is not None:
        seen = schema.Seen(attribution=key.attribute(seen.attribution))
    s.emit(unserved(r, endpoint, s.wall_ns(), 0, e.status_code, e, seen, s.redactor))


def _admin_or_session(s: Services, headers: dict[bytes, bytes]) -> None:
    """The admin key, or a dashboard session cookie."""
    if b"authorization" not in headers and b"x-api-key" not in headers and s.dashboard.valid(headers):
        return
    s.auth.admin(headers)


def _client_request_id(headers: dict[bytes, bytes]) -> str | None:
    """The client's `x-request-id` when it is safe to echo and record (at most 128 of `[A-Za-z0-9-_.:]`)."""
    given = headers.get(b"x-request-id")
    if given and len(given) <= 128 and all(c in _SAFE_ID for c in given):
        return given.decode()
    return None


def _has_body(headers: dict[bytes, bytes]) -> bool:
    clen = headers.get(b"content-length")
    return b"transfer-encoding" in headers or (clen is not None and clen.strip() != b"0")


def allowed_hosts(server: ServerConfig) -> frozenset[str] | None:
    """The host names a request's Host and Origin may name (lower case, IPv6 without brackets); None allows any.

    `server.allowed_hosts` when given (`*` allows any); else from the listen address: the loopback names when it
    is a loopback address, any when it is 0.0.0.0 or ::, else that address (or name) alone."""
    if server.allowed_hosts:
        given = frozenset(h.strip("[]").lower() for h in server.allowed_hosts)
        return None if "*" in given else given
    bound = server.host.strip("[]").lower()
    if bound in _ANY_ADDRESS:
        return None
    if bound in _LOOPBACK_NAMES or _is_loopback_ip(bound):
        return _LOOPBACK_NAMES | {bound}
    return frozenset({bound})


def host_name(value: bytes) -> str:
    """A Host header's name without its port: `[::1]:8080` -> `::1`, `Example.com:80` -> `example.com`."""
    v = value.decode("latin-1").strip().lower()
    if v.startswith("["):
        end = v.find("]")
        return v[1:end] if end > 0 else v
    if v.count(":") == 1:
        return v.partition(":")[0]
    return v


def origin_host(value: bytes) -> str | None:
    """An Origin header's host (`http://localhost:5173` -> `localhost`); None for `null` and anything unparsable."""
    _, sep, rest = value.partition(b"://")
    if not sep or not rest:
        return None
    return host_name(rest.partition(b"/")[0])


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["Gateway"]

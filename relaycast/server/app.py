"""The gateway as a pure ASGI app: the lifespan builds and closes the `Services`; requests are dispatched to the
handlers (chat, embeddings), the admin API, the keys API, analytics and the dashboard; errors render here."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable

from relaycast import errors
from relaycast.asgi import Receive, Request, Scope, Send, header_map, send_bytes
from relaycast.config import Config
from relaycast.log import REQUEST_ID
from relaycast.redact import Redactor
from relaycast.server.admin import Admin
from relaycast.server.analytics import PREFIX as ANALYTICS_PREFIX
from relaycast.server.handlers import Handlers
from relaycast.server.keys_api import PREFIX as KEYS_PREFIX
from relaycast.server.keys_api import KeysApi
from relaycast.server.respond import send_error
from relaycast.server.services import Services, Sink

Endpoint = Callable[[Request], Awaitable[None]]
_SAFE_ID = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


class Gateway:
    """`Gateway(config)` is the ASGI application. Extra record sinks (telemetry destinations) may be given, and
    a wall clock (`clock`, seconds) to replace the system's: tests inject one."""

    def __init__(self, config: Config, sinks: Iterable[Sink] = (), clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self._sinks = tuple(sinks)
        self._clock = clock
        self._redactor = Redactor(config.secrets())  # for a startup failure, before the services exist
        self.services: Services | None = None
        self._routes: dict[tuple[str, str], Endpoint] = {}
        self._paths: frozenset[str] = frozenset()
        self._keys_api: KeysApi | None = None

    # --- lifespan -----------------------------------------------------------------------------

    async def startup(self) -> None:
        s = await Services.start(self.config, self._sinks, self._clock)
        assert s.executor is not None
        handlers = Handlers(s, s.executor)

        async def models(r: Request) -> None:
            s.auth.client(r.headers)
            await send_bytes(r.send, 200, s.models_body, r.id_headers)

        async def health(r: Request) -> None:
            await send_bytes(r.send, 200, b'{"status":"ok"}', r.id_headers)

        self._routes = {
            ("POST", "/v1/chat/completions"): handlers.chat,
            ("POST", "/v1/embeddings"): handlers.embeddings,
            ("GET", "/v1/models"): models,
            ("GET", "/healthz"): health,
            **Admin(s).routes(),
        }
        self._paths = frozenset(p for _, p in self._routes)
        self._keys_api = KeysApi(s)
        self.services = s

    async def shutdown(self, flush_timeout_s: float = 10.0) -> None:
        """Stop: flush the broadcast queues within the deadline (spooling what could not be sent), then close."""
        if self.services is not None:
            s, self.services = self.services, None
            await s.close(flush_timeout_s)

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
        r = Request(scope, receive, send, headers, _request_id(headers))
        REQUEST_ID.set(r.id)  # this request's task only: each ASGI request runs in its own context
        s = self.services
        redactor = s.redactor if s is not None else self._redactor
        try:
            if s is None:
                raise errors.NotReady("The gateway is starting or stopping.")
            await self._dispatch(s, r)
        except errors.RelaycastError as e:
            await send_error(send, redactor, e, r.id_headers)
        except Exception as e:
            if s is not None:
                s.log.error("internal_error", request_id=r.id, error=type(e).__name__, message=str(e)[:300])
            logging.getLogger("relaycast").debug("internal error", exc_info=True)
            await send_error(send, redactor, errors.RelaycastError("Internal error in the gateway."), r.id_headers)

    async def _dispatch(self, s: Services, r: Request) -> None:
        path = r.path
        handler = self._routes.get((r.method, path))
        if handler is not None:
            await handler(r)
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
            raise errors.NotFoundRoute(f"Unknown request URL: {r.method} {path}.")


def _admin_or_session(s: Services, headers: dict[bytes, bytes]) -> None:
    """The admin key, or a dashboard session cookie."""
    if b"authorization" not in headers and b"x-api-key" not in headers and s.dashboard.valid(headers):
        return
    s.auth.admin(headers)


def _request_id(headers: dict[bytes, bytes]) -> str:
    given = headers.get(b"x-request-id")
    if given and len(given) <= 128 and all(c in _SAFE_ID for c in given):
        return given.decode()
    return "req_" + secrets.token_hex(12)


__all__ = ["Gateway"]

"""The gateway as a pure ASGI app: routing of paths, lifespan (one pooled HTTP client), small endpoints.

The chat and embeddings handlers live in `server.handlers`; this module only dispatches and renders errors.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import orjson

from relaycast import errors
from relaycast.asgi import Receive, Scope, Send, header_map, send_bytes
from relaycast.config import Config
from relaycast.costs.catalog import Catalog, ModelPrice, Pricer
from relaycast.costs.compute import Coster
from relaycast.keys.registry import KeyRegistry
from relaycast.limits.base import Limiter
from relaycast.log import EventLog
from relaycast.monitors.engine import MonitorEngine
from relaycast.monitors.notify import Notifier
from relaycast.providers.registry import build_providers
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.routing.executor import Executor
from relaycast.routing.health import HealthBoard
from relaycast.routing.plan import Planner
from relaycast.routing.replicas import SharedHealth
from relaycast.routing.settings import RoutingSettings
from relaycast.server.analytics import PREFIX as ANALYTICS_PREFIX
from relaycast.server.analytics import Analytics
from relaycast.server.auth import Authenticator
from relaycast.server.dashboard import Dashboard
from relaycast.server.handlers import Handlers
from relaycast.server.keys_api import PREFIX as KEYS_PREFIX
from relaycast.server.keys_api import KeysApi
from relaycast.server.limits import build_limiter
from relaycast.server.scrape import scrape_gauges
from relaycast.store.reader import StoreReader
from relaycast.store.writer import StoreWriter
from relaycast.telemetry.metrics import Metrics
from relaycast.telemetry.pipeline import Broadcaster
from relaycast.telemetry.stats import Stats

Sink = Callable[[RequestRecord], None]
_SAFE_ID = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


class Gateway:
    """`Gateway(config)` is the ASGI application. Extra record sinks (telemetry destinations) may be given."""

    def __init__(self, config: Config, sinks: Iterable[Sink] = (), clock: Callable[[], float] | None = None) -> None:
        """`clock` (wall-clock seconds) replaces the system's for record timestamps and monitors: tests inject one."""
        self.config = config
        self.clock: Callable[[], float] = clock or time.time
        self.wall_ns: Callable[[], int] = (lambda: int(self.clock() * 1e9)) if clock else time.time_ns
        self.redactor = Redactor(config.secrets())
        self.log = EventLog(self.redactor)
        self.keys = KeyRegistry(config, self.log)
        self.auth = Authenticator(config, self.keys)
        self.limiter: Limiter | None = None
        self.keys_api = KeysApi(self)
        self.shared_health: SharedHealth | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.board = HealthBoard(config.routing or RoutingSettings(), self.log)
        self.planner = Planner(config, self.board)
        self.stats = Stats()
        self.metrics = Metrics(config.metrics)
        self.monitors: MonitorEngine | None = None
        self._notifier: Notifier | None = None
        self.coster = Coster(_pricer(config))
        self.dashboard = Dashboard(config.admin_key_sha256, config.dashboard_secret)
        self.store: StoreWriter | None = None
        self._reader: StoreReader | None = None
        self.analytics = Analytics(None, self.redactor)
        self.sinks: tuple[Sink, ...] = (self.stats, self.metrics, *sinks)
        self.started = time.time()
        self._session: aiohttp.ClientSession | None = None
        self._telemetry_session: aiohttp.ClientSession | None = None
        self.broadcaster: Broadcaster | None = None
        self._handlers: Handlers | None = None
        self._models_body = _models_body(config)
        self._routes: dict[tuple[str, str], Callable[..., Any]] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("GET", "/healthz"): self._health,
            ("GET", "/admin/stats"): self._admin_stats,
            ("GET", "/admin/routes"): self._admin_routes,
            ("GET", "/admin/broadcast"): self._admin_broadcast,
            ("POST", "/admin/broadcast/test"): self._admin_broadcast_test,
            ("GET", "/admin/store"): self._admin_store,
            ("GET", "/admin/monitors"): self._admin_monitors,
            ("POST", "/admin/monitors/evaluate"): self._admin_monitors_evaluate,
            ("GET", "/metrics"): self._metrics,
        }
        self._paths = {p for _, p in self._routes}

    # --- lifespan -----------------------------------------------------------------------------

    async def startup(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda o: orjson.dumps(o).decode(),
            auto_decompress=True,
            trust_env=False,
        )
        try:
            providers = build_providers(self.config, self._session)
        except BaseException:
            await self.shutdown()
            raise
        self._handlers = Handlers(self, Executor(providers, self.board, self.log))
        if self.config.store is not None:
            self.store = StoreWriter(
                self.config.store, self.redactor, self.log, self.clock
            )  # retention on the same clock as the records
            await self.store.start()
            self._reader = StoreReader(self.config.store)
            self.analytics = Analytics(self._reader, self.redactor)
            self.sinks = (*self.sinks, self.store)
            await self.keys.start(self._reader)
            mon = self.config.monitors
            if mon is not None and mon.rules:
                if self._telemetry_session is None:
                    self._telemetry_session = aiohttp.ClientSession(trust_env=False)
                self._notifier = Notifier(mon.notify, self._telemetry_session, self.log, self.redactor)
                self._notifier.start()
                self.monitors = MonitorEngine(
                    mon, self._reader, self.store, self.board, self._notifier, self.log, self.clock
                )
                self.monitors.start()
        if self.config.broadcast and self.config.broadcast.destinations:
            # Its own client: the exporters' HTTP never shares a pool (or a slowdown) with the providers'.
            if self._telemetry_session is None:
                self._telemetry_session = aiohttp.ClientSession(trust_env=False)
            self.broadcaster = Broadcaster(self.config.broadcast, self._telemetry_session, self.redactor, self.log)
            self.broadcaster.start()
            self.sinks = (*self.sinks, self.broadcaster)
        self.limiter = build_limiter(self)
        if self.config.limits is not None and self.config.limits.redis_url:
            self.shared_health = SharedHealth(self.config.limits.redis_url, self.board, self.log)
            self.shared_health.start()
        self.log.info(
            "gateway_started",
            providers=",".join(self.config.providers),
            aliases=len(self.config.models),
            keys=len(self.config.keys),
        )

    async def shutdown(self, flush_timeout_s: float = 10.0) -> None:
        """Stop: flush the broadcast queues within the deadline (spooling what could not be sent), then close."""
        await self.keys.stop()
        if self.shared_health is not None:
            await self.shared_health.stop()
            self.shared_health = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self.limiter is not None and hasattr(self.limiter, "close"):
            await self.limiter.close()
        self.limiter = None
        if self.broadcaster is not None:
            await self.broadcaster.stop(flush_timeout_s)
            self.broadcaster = None
        if self.monitors is not None:
            await self.monitors.stop()
            self.monitors = None
        if self._notifier is not None:
            await self._notifier.stop()
            self._notifier = None
        if self.store is not None:
            await self.store.stop(flush_timeout_s)
            self.store = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._telemetry_session is not None:
            await self._telemetry_session.close()
            self._telemetry_session = None
        if self._session is not None:
            await self._session.close()
            self._session = None

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
                    await send({"type": "lifespan.startup.failed", "message": self.redactor.scrub(str(e))})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        rid = _request_id(headers)
        ids = [(b"x-request-id", rid.encode())]
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        handler = self._routes.get((scope["method"], path))
        try:
            if handler is None and (path == KEYS_PREFIX or path.startswith(KEYS_PREFIX + "/")):
                self.auth.admin(headers)
                await self.keys_api.handle(scope, receive, send, path, ids)
                return
            if handler is None and path.startswith(ANALYTICS_PREFIX):
                self.admin_or_session(headers)
                await self.analytics.handle(scope, send, path, ids)
                return
            if handler is None and (path == "/dashboard" or path.startswith("/dashboard/")):
                await self.dashboard.handle(scope, receive, send, headers, path, ids)
                return
            if handler is None:
                if path in self._paths:
                    raise errors.MethodNotAllowed(f"Method {scope['method']} is not allowed on {path}.")
                raise errors.NotFoundRoute(f"Unknown request URL: {scope['method']} {path}.")
            await handler(scope, receive, send, headers, rid, ids)
        except errors.RelaycastError as e:
            await self.send_error(send, e, ids)
        except Exception as e:
            self.log.error("internal_error", request_id=rid, error=type(e).__name__, message=str(e)[:300])
            logging.getLogger("relaycast").debug("internal error", exc_info=True)
            await self.send_error(send, errors.RelaycastError("Internal error in the gateway."), ids)

    async def send_error(self, send: Send, e: errors.RelaycastError, headers: list[tuple[bytes, bytes]]) -> None:
        body = self.redactor.scrub_bytes(e.body_bytes())
        await send_bytes(send, e.status_code, body, [*headers, *e.headers()])

    def emit(self, record: RequestRecord) -> None:
        """Hand a finished record to every sink. Never raises into the request."""
        for sink in self.sinks:
            try:
                sink(record)
            except Exception as e:  # noqa: BLE001
                self.log.error("sink_failed", sink=type(sink).__name__, error=type(e).__name__)

    def later(self, coro: Any) -> None:
        """Run `coro` after the response, keeping a reference until it ends (limit settlements)."""
        t = asyncio.ensure_future(coro)
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)

    def admin_or_session(self, headers: dict[bytes, bytes]) -> None:
        """The admin key, or a dashboard session cookie."""
        if b"authorization" not in headers and b"x-api-key" not in headers and self.dashboard.valid(headers):
            return
        self.auth.admin(headers)

    # --- endpoints ----------------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list) -> None:
        assert self._handlers is not None, "gateway not started"
        await self._handlers.chat(scope, receive, send, headers, rid, ids)

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list) -> None:
        assert self._handlers is not None, "gateway not started"
        await self._handlers.embeddings(scope, receive, send, headers, rid, ids)

    async def _models(self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list) -> None:
        self.auth.client(headers)
        await send_bytes(send, 200, self._models_body, ids)

    async def _health(self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list) -> None:
        await send_bytes(send, 200, b'{"status":"ok"}', ids)

    async def _admin_stats(
        self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list
    ) -> None:
        self.auth.admin(headers)
        body = self.stats.snapshot()
        body["uptime_s"] = round(time.time() - self.started, 3)
        body["limits"] = self.limiter.status() if self.limiter else None
        body["keys"] = {"required": self.keys.required, "reloads": self.keys.reloads}
        await send_bytes(send, 200, orjson.dumps(body), ids)

    async def _admin_routes(
        self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list
    ) -> None:
        self.auth.admin(headers)
        routes = {
            name: {
                "strategy": r.strategy,
                "targets": list(r.targets),
                "sla": {"p99_ms": r.sla_p99_ms, "ttft_p99_ms": r.sla_ttft_p99_ms},
            }
            for name, r in self.config.models.items()
        }
        await send_bytes(send, 200, orjson.dumps({"routes": routes, "targets": self.board.status()}), ids)

    async def _admin_broadcast(
        self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list
    ) -> None:
        self.auth.admin(headers)
        body = {"destinations": self.broadcaster.status() if self.broadcaster else []}
        await send_bytes(send, 200, self.redactor.scrub_bytes(orjson.dumps(body)), ids)

    async def _admin_broadcast_test(
        self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list
    ) -> None:
        self.auth.admin(headers)
        qs = dict(p.split("=", 1) for p in scope.get("query_string", b"").decode().split("&") if "=" in p)
        name = qs.get("name") or None
        if self.broadcaster is None or (name and name not in self.broadcaster.destinations):
            raise errors.NotFoundRoute(
                f"No broadcast destination named '{name}'." if name else "No broadcast destinations are configured."
            )
        results = await self.broadcaster.test(name)
        body = {"results": {n: {"ok": r.ok, "message": r.message} for n, r in results.items()}}
        await send_bytes(send, 200, self.redactor.scrub_bytes(orjson.dumps(body)), ids)

    async def _admin_store(
        self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list
    ) -> None:
        self.auth.admin(headers)
        body = {
            "store": self.store.status() if self.store else None,
            "prices_as_of": self.coster.pricer.catalog.as_of,
            "token_estimator": self.coster.estimator.method,
        }
        await send_bytes(send, 200, self.redactor.scrub_bytes(orjson.dumps(body)), ids)

    async def _admin_monitors(
        self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list
    ) -> None:
        self.auth.admin(headers)
        body: dict[str, Any] = {"monitors": self.monitors.status() if self.monitors else None, "incidents": []}
        if self._reader is not None and self.monitors is not None:
            from relaycast.monitors.incidents import recent

            body["incidents"] = await self._reader.run(recent, 50)
        await send_bytes(send, 200, self.redactor.scrub_bytes(orjson.dumps(body)), ids)

    async def _admin_monitors_evaluate(
        self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list
    ) -> None:
        self.auth.admin(headers)
        if self.monitors is None:
            raise errors.NotFoundRoute("No monitors are configured (monitors: rules: in the config).")
        events = await self.monitors.evaluate()
        body = {"notifications": events, "monitors": self.monitors.status()}
        await send_bytes(send, 200, self.redactor.scrub_bytes(orjson.dumps(body)), ids)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list) -> None:
        if not self.config.metrics.public:
            self.auth.admin(headers)
        body = self.metrics.render(scrape_gauges(self))
        await send_bytes(send, 200, body, ids, (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"))


def _pricer(config: Config) -> Pricer:
    kinds = {name: p.kind for name, p in config.providers.items()}
    route_prices: dict[str, ModelPrice] = {}
    for route in config.models.values():
        for target, price in zip(route.targets, route.prices or (), strict=False):
            if price is not None:
                route_prices[target] = ModelPrice.parse(
                    {"input": repr(price.input), "output": repr(price.output)}, "route", f"models.{route.name}"
                )
    return Pricer(Catalog.packaged(), kinds, config.prices, route_prices)


def _models_body(config: Config) -> bytes:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "relaycast"} for name in config.models]
    for p in config.providers.values():
        data.extend({"id": f"{p.name}/{m}", "object": "model", "created": 0, "owned_by": p.name} for m in p.models)
    return orjson.dumps({"object": "list", "data": data})


def _request_id(headers: dict[bytes, bytes]) -> str:
    given = headers.get(b"x-request-id")
    if given and len(given) <= 128 and all(c in _SAFE_ID for c in given):
        return given.decode()
    return "req_" + secrets.token_hex(12)


__all__ = ["Gateway"]

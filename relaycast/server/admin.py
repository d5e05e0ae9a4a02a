"""The admin endpoints (`/admin/*` but keys and analytics, which have their own modules) and `/metrics`.

Every one needs the admin key or a dashboard session (`/metrics` unless `metrics.public`); every body is scrubbed
of secrets.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from relaycast import errors
from relaycast.asgi import Request, send_bytes
from relaycast.errors import error_sources
from relaycast.limits.host import RemoteLimiter
from relaycast.server.metrics_gauges import view_age, worker_gauges
from relaycast.server.services import Services
from relaycast.store.db import store_errors
from relaycast.store.incidents import recent

Endpoint = Callable[[Request], Awaitable[None]]
PROMETHEUS_TEXT = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")


class Admin:
    def __init__(self, services: Services) -> None:
        self.s = services

    def routes(self) -> dict[tuple[str, str], Endpoint]:
        return {
            ("GET", "/admin/stats"): self.stats,
            ("GET", "/admin/routes"): self.routing,
            ("GET", "/admin/broadcast"): self.broadcast,
            ("POST", "/admin/broadcast/test"): self.broadcast_test,
            ("GET", "/admin/store"): self.store,
            ("GET", "/admin/monitors"): self.monitors,
            ("POST", "/admin/monitors/evaluate"): self.monitors_evaluate,
            ("GET", "/metrics"): self.metrics,
        }

    async def _json(self, r: Request, body: Any) -> None:
        await send_bytes(r.send, 200, self.s.redactor.scrub_bytes(orjson.dumps(body)), r.id_headers)

    async def _state_part(self, op: str) -> Any:
        """The state process's part of an admin view; None while it is away (restarting): the rest still answers."""
        try:
            return await self.s.telemetry(op)
        except errors.RelaycastError:
            return None

    async def stats(self, r: Request) -> None:
        self.s.auth.admin(r.headers)
        totals, age = await self.s.view("stats")
        body = {**totals, "view_age_s": age, "uptime_s": round(time.time() - self.s.started, 3)}
        body["limits"] = self.s.limiter.status() if self.s.limiter else None
        if isinstance(self.s.limiter, RemoteLimiter):  # the host's limits, kept by its state process
            body["limits"]["host"] = await self._state_part("limits")
        body["keys"] = {"required": self.s.keys.required, "reloads": self.s.keys.reloads}
        body["shared_health"] = self.s.replicas.status() if self.s.replicas is not None else None
        if self.s.host is not None:
            body["telemetry"] = self.s.host.status()
        if self.s.state is not None:
            st = self.s.state.status()
            body["state"] = {"connected": st["connected"], "connects": st["connects"]}
        await self._json(r, body)

    async def routing(self, r: Request) -> None:
        self.s.auth.admin(r.headers)
        routes = {
            name: {
                "strategy": route.strategy,
                "targets": list(route.targets),
                "sla": {"p99_ms": route.sla_p99_ms, "ttft_p99_ms": route.sla_ttft_p99_ms},
            }
            for name, route in self.s.config.models.items()
        }
        body = {
            "routes": routes,
            "window_s": self.s.board.settings.window_s,
            "error_sources": error_sources(),
            "targets": self.s.board.status(),
            "shared": self.s.board.shared_status(),
        }
        await self._json(r, body)

    async def broadcast(self, r: Request) -> None:
        self.s.auth.admin(r.headers)
        destinations, age = await self.s.view("broadcast")
        await self._json(r, {"destinations": destinations, "view_age_s": age})

    async def broadcast_test(self, r: Request) -> None:
        self.s.auth.admin(r.headers)
        name = r.query().get("name") or None
        results = await self.s.telemetry("broadcast_test", name)
        if results is None:
            raise errors.NotFoundRoute(
                f"No broadcast destination named '{name}'." if name else "No broadcast destinations are configured."
            )
        await self._json(r, {"results": results})

    async def store(self, r: Request) -> None:
        self.s.auth.admin(r.headers)
        store, age = await self.s.view("store")
        if store is not None and self.s.state is not None:  # the stored responses are the state process's
            store = {**store, "stored_responses": await self._state_part("responses_status")}
        body = {
            "store": store,
            "prices_as_of": self.s.coster.pricer.catalog.as_of,
            "token_estimator": self.s.coster.estimator.method,
            "view_age_s": age,
        }
        await self._json(r, body)

    async def monitors(self, r: Request) -> None:
        self.s.auth.admin(r.headers)
        status, age = await self.s.view("monitors")
        body: dict[str, Any] = {"monitors": status, "incidents": [], "view_age_s": age}
        if self.s.reader is not None and status is not None:
            with store_errors(self.s.redactor.scrub, "The store cannot be read now"):
                body["incidents"] = await self.s.reader.run(recent, 50)
        await self._json(r, body)

    async def monitors_evaluate(self, r: Request) -> None:
        self.s.auth.admin(r.headers)
        result = await self.s.telemetry("monitors_evaluate")
        if result is None:
            raise errors.NotFoundRoute("No monitors are configured (monitors: rules: in the config).")
        await self._json(r, result)

    async def metrics(self, r: Request) -> None:
        if not self.s.config.metrics.public:
            self.s.auth.admin(r.headers)
        body, age = await self.s.view("metrics", worker_gauges(self.s))
        await send_bytes(r.send, 200, body + view_age(age), r.id_headers, PROMETHEUS_TEXT)

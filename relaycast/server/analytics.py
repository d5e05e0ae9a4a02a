"""The analytics API: `/admin/analytics/*`, for the admin key or a dashboard session. Thin: it parses the query
string, runs a `store.queries` function on the store's reader threads, and renders errors in OpenAI's format.

    GET /admin/analytics/spend?by=model&since=24h&bucket=auto&limit=10   (filters: model, provider, key, user, ...)
    GET /admin/analytics/latency?by=model|provider|target&since=6h
    GET /admin/analytics/errors?since=15m
    GET /admin/analytics/requests?limit=50&before=<cursor>&status=error&user=alice&error_class=timeout
    GET /admin/analytics/requests/<request_id>

`bucket` is `minute`, `hour`, `day` or `auto` (minutes up to 6 hours, hours up to 3 days, else days); every
document says the buckets it used (`bucket`, `bucket_s`, `buckets`) and the range it covers (`range`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from relaycast import errors
from relaycast.asgi import Scope, Send, send_bytes
from relaycast.redact import Redactor
from relaycast.store import queries
from relaycast.store.db import store_errors
from relaycast.store.reader import StoreReader

PREFIX = "/admin/analytics/"


def query_params(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v for k, v in parse_qsl(raw, keep_blank_values=False)[:50]}


class Analytics:
    def __init__(self, reader: StoreReader | None, redactor: Redactor) -> None:
        self._reader = reader
        self._redactor = redactor
        self._views: dict[str, Callable[[dict[str, str]], Any]] = {
            "spend": lambda p: (queries.spend, queries.window(p), p.get("by", "model"), p.get("limit")),
            "latency": lambda p: (queries.latency, queries.window(p), p.get("by", "model")),
            "errors": lambda p: (queries.error_rates, queries.window(p)),
            "requests": lambda p: (queries.requests, p),
        }

    async def handle(self, scope: Scope, send: Send, path: str, ids: list[tuple[bytes, bytes]]) -> None:
        if scope["method"] != "GET":
            raise errors.MethodNotAllowed(f"Method {scope['method']} is not allowed on {path}.")
        view = path[len(PREFIX) :]
        params = query_params(scope)
        try:
            if view.startswith("requests/") and len(view) > len("requests/"):
                rid = view[len("requests/") :]
                body = await self._run(queries.request_detail, rid)
                if body is None:
                    raise errors.NotFoundRoute(f"No stored request with id '{rid[:128]}'.")
            else:
                make = self._views.get(view)
                if make is None:
                    raise errors.NotFoundRoute(
                        f"Unknown analytics view '{view[:64]}' (spend, latency, errors, requests)."
                    )
                fn, *args = make(params)
                body = await self._run(fn, *args)
        except queries.BadQuery as e:
            raise errors.InvalidRequest(str(e), param=e.param) from None
        await send_bytes(send, 200, orjson.dumps(body), [*ids, (b"cache-control", b"no-store")])

    async def request(self, request_id: str) -> dict[str, Any] | None:
        """One stored request and its attempts (`queries.request_detail`); None when not stored."""
        found: dict[str, Any] | None = await self._run(queries.request_detail, request_id)
        return found

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._reader is None:
            raise errors.StoreNotReady(
                "The store is disabled (store: enabled: false), so there is nothing to analyse.", disabled=True
            )
        with store_errors(self._redactor.scrub, "The store cannot be read"):
            return await self._reader.run(fn, *args)

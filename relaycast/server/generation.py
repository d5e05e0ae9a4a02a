"""Endpoints around the completions: OpenRouter's `GET /api/v1/generation?id=...` (a finished request's stats, from
the store), stored responses (`GET` / `DELETE /v1/responses/{id}`) and Anthropic's `POST /v1/messages/count_tokens`.

A generation is found by the gateway's request id (`x-relaycast-request-id`, `req_...`) or by the id of an answer
relaycast made itself (`msg_...`, `resp_...`); a gateway key sees only its own requests' stats.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from relaycast import errors, schema
from relaycast.asgi import Request, send_bytes
from relaycast.dialects.messages_request import chat_body as messages_chat_body
from relaycast.keys.policy import KeyPolicy
from relaycast.schema import read_json
from relaycast.server.respond import unserved
from relaycast.server.services import Services
from relaycast.server.stored_responses import MAX_ID, StoredResponses

MAX_COUNT_BODY = 32 * 1024 * 1024
RESPONSES_PREFIX = "/v1/responses/"


class Extras:
    def __init__(self, s: Services, stored: StoredResponses) -> None:
        self.s = s
        self.stored = stored

    async def generation(self, r: Request) -> None:
        t0, wall0 = time.monotonic_ns(), self.s.wall_ns()
        key = self.s.auth.client(r.headers)
        given = r.query().get("id", "")
        rid = "req_" + given.split("_", 1)[1] if given.startswith(("msg_", "resp_")) else given
        if not rid or len(rid) > MAX_ID:
            raise errors.InvalidRequest(
                "'id' (a request id, as x-relaycast-request-id gives it) is required", param="id"
            )
        found = await self.s.analytics.request(rid)
        doc = found["request"] if found is not None else None
        if doc is None or (key is not None and doc.get("key") != key.name):
            raise errors.NotFoundRoute(f"Generation '{given[:MAX_ID]}' not found.", param="id")
        attempts = found["attempts"] if found is not None else []
        final = attempts[-1] if attempts else {}
        data: dict[str, Any] = {
            "id": doc["request_id"],
            "created_at": doc["ts"],
            "model": doc["model_requested"],
            "upstream_model": doc["model"],
            "provider_name": doc["provider"],
            "target": doc["target"],
            "endpoint": doc["endpoint"],
            "streamed": doc["stream"],
            "status": doc["status"],
            "error_class": doc["error_class"],
            "cancelled": doc["status"] == 499,
            "finish_reason": final.get("finish_reason"),
            "latency": doc["ttft_ms"],
            "generation_time": doc["duration_ms"],
            "tokens_prompt": doc["prompt_tokens"],
            "tokens_completion": doc["completion_tokens"],
            "native_tokens_cached": doc.get("cached_tokens"),
            "native_tokens_reasoning": doc.get("reasoning_tokens"),
            "total_cost": float(doc["cost_usd"]) if doc["cost_usd"] is not None else None,
            "cost_source": doc["cost_source"],
            "attempts": doc["attempts"],
            "user": doc["user"],
            "session_id": doc["session_id"],
        }
        await send_bytes(r.send, 200, orjson.dumps({"data": data}), [*r.id_headers, (b"cache-control", b"no-store")])
        self._record(r, "generation", wall0, t0, key)

    async def stored_response(self, r: Request) -> None:
        t0, wall0 = time.monotonic_ns(), self.s.wall_ns()
        key = self.s.auth.client(r.headers)
        rid = r.path.removeprefix(RESPONSES_PREFIX)
        if "/" in rid:  # input_items, cancel, ...: stored responses are kept whole, read and deleted whole
            raise errors.NotFoundRoute(f"Unknown request URL: {r.method} {r.path[:200]}.")
        if r.method == "GET":
            body = await self.stored.read(rid, key)
        elif r.method == "DELETE":
            body = await self.stored.delete(rid, key)
        else:
            raise errors.MethodNotAllowed(f"Method {r.method} is not allowed on {r.path[:200]}.")
        await send_bytes(r.send, 200, orjson.dumps(body), r.id_headers)
        self._record(r, "responses", wall0, t0, key)

    async def count_tokens(self, r: Request) -> None:
        """An estimate (relaycast's token estimator, as limits use it) of a Messages request's input tokens."""
        t0, wall0 = time.monotonic_ns(), self.s.wall_ns()
        key = self.s.auth.client(r.headers)
        most = min(MAX_COUNT_BODY, self.s.config.server.max_body_bytes)
        body = await read_json(r.receive, most)
        chat, _ = messages_chat_body(body, for_count=True)
        if key is not None and not key.allows(str(chat.get("model"))):
            raise errors.Forbidden(f"The API key '{key.name}' may not use the model '{str(chat['model'])[:200]}'.")
        n = self.s.coster.estimator.prompt(chat["messages"])
        tools = chat.get("tools")
        if tools:
            n += self.s.coster.estimator.count(orjson.dumps(tools).decode())
        await send_bytes(r.send, 200, orjson.dumps({"input_tokens": n}), r.id_headers)
        self._record(r, "messages.count_tokens", wall0, t0, key)

    def _record(self, r: Request, endpoint: str, wall0: int, t0: int, key: KeyPolicy | None) -> None:
        seen = schema.seen(None, r.headers)
        if key is not None:
            seen = schema.Seen(attribution=key.attribute(seen.attribution))
        r.recorded = True
        self.s.emit(unserved(r, endpoint, wall0, time.monotonic_ns() - t0, 200, None, seen, self.s.redactor))

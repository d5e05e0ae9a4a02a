"""The chat-completions and embeddings endpoints: edge checks, the executor, the response, then the record."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import orjson

from relaycast import errors
from relaycast.asgi import (
    SSE_HEADERS,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
    run_until_disconnect,
    send_bytes,
)
from relaycast.keys.policy import KeyPolicy
from relaycast.limits.base import LimiterUnavailable, LimitExceeded, Reservation
from relaycast.records import Attempt, Attribution, RequestRecord
from relaycast.routing.executor import Executor, OpenStream
from relaycast.routing.plan import Plan
from relaycast.schema import ChatRequest, parse_chat, parse_embeddings
from relaycast.server import limits
from relaycast.sse import encode

if TYPE_CHECKING:
    from relaycast.server.app import Gateway

PARAM_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tool_choice",
    "reasoning_effort",
    "logprobs",
    "top_logprobs",
)


@dataclass(slots=True)
class Outcome:
    """What the client was told, filled in while the request runs; the record is built from it afterwards."""

    status: int = 200
    error: errors.RelaycastError | None = None
    text: str | None = None
    cancelled: bool = False


class Handlers:
    def __init__(self, gw: Gateway, executor: Executor) -> None:
        self.gw = gw
        self.executor = executor
        self.max_body = gw.config.server.max_body_bytes

    async def _read(self, scope: Scope, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        ctype = headers.get(b"content-type")
        if ctype is not None and b"json" not in ctype.lower():
            raise errors.UnsupportedMediaType(
                f"Content-Type must be application/json, got '{ctype.decode('latin-1')[:100]}'."
            )
        clen = headers.get(b"content-length")
        if clen is not None and clen.isdigit() and int(clen) > self.max_body:
            raise errors.PayloadTooLarge(f"Request body is larger than the limit of {self.max_body} bytes.")
        try:
            return await read_body(receive, self.max_body)
        except BodyTooLarge:
            raise errors.PayloadTooLarge(f"Request body is larger than the limit of {self.max_body} bytes.") from None

    # --- chat ---------------------------------------------------------------------------------

    async def chat(self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list) -> None:
        t0 = time.monotonic_ns()
        wall0 = self.gw.wall_ns()
        key = self.gw.auth.client(headers)
        try:
            raw = await self._read(scope, receive, headers)
        except ClientGone:
            return
        req = parse_chat(raw, headers)
        if key is not None:
            _check_models(key, (req.model, *req.fallbacks))
            req.attribution = _with_key(req.attribution, key)
        attempts: list[Attempt] = []
        outcome = Outcome()
        reservation = None
        try:
            plan = self.gw.planner.plan(req.model, req.fallbacks, req.prefs)
            reservation = await limits.admit(
                self.gw, key, req.attribution, plan, req.body, lambda: self.gw.coster.estimator.prompt(req.messages)
            )
        except (
            errors.NoRoute,
            LimitExceeded,
            LimiterUnavailable,
        ) as e:  # recorded: an outage or a refusal for this client
            outcome.status, outcome.error = e.status_code, e
            await self.gw.send_error(send, e, ids)
            self._emit_chat(rid, req, wall0, t0, attempts, outcome, None)
            return
        try:
            if req.stream:
                await run_until_disconnect(receive, self._stream(req, plan, t0, attempts, send, ids, outcome))
            else:
                await run_until_disconnect(receive, self._complete(req, plan, t0, attempts, send, ids, outcome))
        except ClientGone:
            outcome.cancelled = True
        finally:
            self._emit_chat(rid, req, wall0, t0, attempts, outcome, reservation)

    def _emit_chat(
        self,
        rid: str,
        req: ChatRequest,
        wall0: int,
        t0: int,
        attempts: list[Attempt],
        outcome: Outcome,
        reservation: Reservation | None,
    ) -> None:
        err = outcome.error
        rec = RequestRecord(
            request_id=rid,
            endpoint="chat.completions",
            model_requested=req.model,
            stream=req.stream,
            started_unix_ns=wall0,
            duration_ns=time.monotonic_ns() - t0,
            status_code=499 if outcome.cancelled else outcome.status,
            attribution=req.attribution,
            attempts=self.gw.coster.chat(attempts, req.messages, outcome.text),
            error_class=err.error_class if err else ("client_cancelled" if outcome.cancelled else None),
            error_message=self.gw.redactor.scrub(err.message) if err else None,
            params={k: req.body[k] for k in PARAM_KEYS if k in req.body},
            input_messages=tuple(req.messages),
            output_text=outcome.text,
            client_cancelled=outcome.cancelled,
        )
        self.gw.emit(rec)
        limits.settle(self.gw, reservation, rec)

    async def _complete(
        self, req: ChatRequest, plan: Plan, t0: int, attempts: list, send: Send, ids: list, outcome: Outcome
    ) -> None:
        try:
            result, target = await self.executor.complete(req, plan, t0, attempts)
        except errors.RelaycastError as e:
            outcome.status, outcome.error = e.status_code, e
            await self.gw.send_error(send, e, [*ids, *_served(None, len(attempts))])
            return
        outcome.text = result.output_text
        await send_bytes(send, 200, result.body, [*ids, *_served(target.name, len(attempts))])

    async def _stream(
        self, req: ChatRequest, plan: Plan, t0: int, attempts: list, send: Send, ids: list, outcome: Outcome
    ) -> None:
        try:
            opened = await self.executor.open_stream(req, plan, t0, attempts)
        except errors.RelaycastError as e:
            outcome.status, outcome.error = e.status_code, e
            await self.gw.send_error(send, e, [*ids, *_served(None, len(attempts))])
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, *ids, *_served(opened.target.name, len(attempts) + 1)],
            }
        )
        err = None
        try:
            err = await self._forward(opened, send)
        finally:
            state = opened.stream.state
            outcome.text = "".join(state.text) if state.text else None
            if err is not None:
                outcome.error = err  # the response started as 200; the error went as an event
            self.executor.stream_ended(opened, t0, attempts, err)

    async def _forward(self, opened: OpenStream, send: Send) -> errors.RelaycastError | None:
        """Send the stream to the client. A mid-stream failure ends it with an error event, never [DONE]."""
        try:
            async with asyncio.timeout_at(opened.deadline):
                await send({"type": "http.response.body", "body": opened.first, "more_body": True})
                async for chunk in opened.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except errors.ProviderError as e:
            err: errors.RelaycastError | None = e
        except TimeoutError:
            err = errors.Timeout(
                "stream did not finish within the request's deadline", phase="total", target=opened.target.name
            )
        except asyncio.CancelledError:
            await opened.stream.aclose()
            raise
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return None
        await opened.stream.aclose()
        self.gw.log.warning(
            "stream_failed", target=opened.target.name, error_class=err.error_class, message=err.message[:200]
        )
        event = self.gw.redactor.scrub_bytes(orjson.dumps(err.body()))
        await send({"type": "http.response.body", "body": encode(event), "more_body": False})
        return err

    # --- embeddings ---------------------------------------------------------------------------

    async def embeddings(self, scope: Scope, receive: Receive, send: Send, headers: dict, rid: str, ids: list) -> None:
        t0 = time.monotonic_ns()
        wall0 = self.gw.wall_ns()
        key = self.gw.auth.client(headers)
        try:
            raw = await self._read(scope, receive, headers)
        except ClientGone:
            return
        req = parse_embeddings(raw, headers)
        if key is not None:
            _check_models(key, (req.model,))
            req.attribution = _with_key(req.attribution, key)
        plan = self.gw.planner.plan(req.model)
        attempts: list[Attempt] = []
        status, err = 200, None
        reservation = None
        try:
            reservation = await limits.admit(
                self.gw,
                key,
                req.attribution,
                plan,
                {"max_tokens": 1},
                lambda: self.gw.coster.estimator.embedding_input(req.body.get("input")),
            )
            body, target = await self.executor.embed(req.body, plan, t0, attempts)
        except errors.RelaycastError as e:
            status, err = e.status_code, e
            await self.gw.send_error(send, e, [*ids, *_served(None, len(attempts))])
        else:
            await send_bytes(send, 200, body, [*ids, *_served(target.name, len(attempts))])
        attribution = req.attribution
        rec = RequestRecord(
            request_id=rid,
            endpoint="embeddings",
            model_requested=req.model,
            stream=False,
            started_unix_ns=wall0,
            duration_ns=time.monotonic_ns() - t0,
            status_code=status,
            attribution=attribution,
            attempts=self.gw.coster.embeddings(attempts, req.body.get("input")),
            error_class=err.error_class if err else None,
            error_message=self.gw.redactor.scrub(err.message) if err else None,
        )
        self.gw.emit(rec)
        limits.settle(self.gw, reservation, rec)


def _served(target: str | None, attempts: int) -> list[tuple[bytes, bytes]]:
    h = [(b"x-relaycast-attempts", str(attempts).encode())]
    if target:
        h.append((b"x-relaycast-target", target.encode()))
    return h


def _with_key(a: Attribution, key: KeyPolicy) -> Attribution:
    """The key's name, and its default user, feature and tags where the request gave none."""
    tags = a.tags
    if key.tags:
        given = dict(a.tags)
        tags = tuple({**dict(key.tags), **given}.items())
    return replace(a, key_name=key.name, user=a.user or key.user, feature=a.feature or key.feature, tags=tags)


def _check_models(key: KeyPolicy, models: tuple[str, ...]) -> None:
    for m in models:
        if not key.allows(m):
            raise errors.Forbidden(f"The API key '{key.name}' may not use the model '{m[:200]}'.", param="model")

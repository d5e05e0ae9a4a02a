"""The chat-completions and embeddings endpoints. Each reads: parse -> plan -> admit -> run -> respond -> emit."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from relaycast import errors
from relaycast.asgi import (
    SSE_HEADERS,
    BodyTooLarge,
    ClientGone,
    Request,
    is_json,
    read_body,
    run_until_disconnect,
    send_bytes,
)
from relaycast.errors import LimiterUnavailable, LimitExceeded
from relaycast.keys.policy import KeyPolicy
from relaycast.limits.base import Reservation
from relaycast.records import RequestRecord
from relaycast.routing.executor import Executor, Run
from relaycast.schema import ChatRequest, parse_chat, parse_embeddings
from relaycast.server.respond import send_error, served
from relaycast.server.services import Services
from relaycast.sse import encode

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
    def __init__(self, services: Services, executor: Executor) -> None:
        self.s = services
        self.executor = executor
        self.max_body = services.config.server.max_body_bytes

    async def _read(self, r: Request) -> bytes:
        # Exactly application/json: a browser can send text/plain, a form or no type at all cross-site without
        # asking first, but never JSON.
        ctype = r.headers.get(b"content-type")
        if not is_json(ctype):
            got = "none" if ctype is None else f"'{ctype.decode('latin-1')[:100]}'"
            raise errors.UnsupportedMediaType(f"Content-Type must be application/json, got {got}.")
        clen = r.headers.get(b"content-length")
        if clen is not None and clen.isdigit() and int(clen) > self.max_body:
            raise errors.PayloadTooLarge(f"Request body is larger than the limit of {self.max_body} bytes.")
        try:
            return await read_body(r.receive, self.max_body)
        except BodyTooLarge:
            raise errors.PayloadTooLarge(f"Request body is larger than the limit of {self.max_body} bytes.") from None

    # --- chat ---------------------------------------------------------------------------------

    async def chat(self, r: Request) -> None:
        t0 = time.monotonic_ns()
        wall0 = self.s.wall_ns()
        key = self.s.auth.client(r.headers)
        try:
            raw = await self._read(r)
        except ClientGone:
            return
        req = parse_chat(raw, r.headers)
        if key is not None:
            _check_models(key, (req.model, *req.fallbacks))
            req.attribution = key.attribute(req.attribution)
        outcome = Outcome()
        run: Run | None = None
        reservation = None
        try:
            plan = self.s.planner.plan(req.model, req.fallbacks, req.prefs)
            run = self.executor.run(plan, t0)
            reservation = await self.s.admission.admit(
                key, req.attribution, plan, req.body, lambda: self.s.coster.estimator.prompt(req.messages)
            )
        except (errors.NoRoute, errors.Forbidden, errors.InvalidRequest, LimitExceeded, LimiterUnavailable) as e:
            outcome.status, outcome.error = e.status_code, e
            await send_error(r.send, self.s.redactor, e, r.id_headers)
            self._emit_chat(r, req, wall0, t0, run, outcome, None)
            return
        try:
            respond = self._stream if req.stream else self._complete
            await run_until_disconnect(r.receive, respond(r, req, run, outcome))
        except ClientGone:
            outcome.cancelled = True
        finally:
            self._emit_chat(r, req, wall0, t0, run, outcome, reservation)

    async def _complete(self, r: Request, req: ChatRequest, run: Run, outcome: Outcome) -> None:
        try:
            result, target = await run.complete(req)
        except errors.RelaycastError as e:
            outcome.status, outcome.error = e.status_code, e
            await send_error(r.send, self.s.redactor, e, [*r.id_headers, *served(None, len(run.attempts))])
            return
        outcome.text = result.output_text
        await send_bytes(r.send, 200, result.body, [*r.id_headers, *served(target.name, len(run.attempts))])

    async def _stream(self, r: Request, req: ChatRequest, run: Run, outcome: Outcome) -> None:
        try:
            opened = await run.open_stream(req)
        except errors.RelaycastError as e:
            outcome.status, outcome.error = e.status_code, e
            await send_error(r.send, self.s.redactor, e, [*r.id_headers, *served(None, len(run.attempts))])
            return
        send = r.send
        headers = [*SSE_HEADERS, *r.id_headers, *served(opened.target.name, len(run.attempts) + 1)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def body(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        try:
            err = await opened.relay(body)
        finally:
            state = opened.stream.state
            outcome.text = "".join(state.text) if state.text else None
        if err is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # The response started as 200: a mid-stream failure ends it with an error event, never [DONE].
        outcome.error = err
        event = self.s.redactor.scrub_bytes(orjson.dumps(err.body()))
        await send({"type": "http.response.body", "body": encode(event), "more_body": False})

    def _emit_chat(
        self,
        r: Request,
        req: ChatRequest,
        wall0: int,
        t0: int,
        run: Run | None,
        outcome: Outcome,
        reservation: Reservation | None,
    ) -> None:
        err = outcome.error
        attempts = run.attempts if run is not None else ()
        rec = RequestRecord(
            request_id=r.id,
            endpoint="chat.completions",
            model_requested=req.model,
            stream=req.stream,
            started_unix_ns=wall0,
            duration_ns=time.monotonic_ns() - t0,
            status_code=499 if outcome.cancelled else outcome.status,
            attribution=req.attribution,
            attempts=self.s.coster.chat(list(attempts), req.messages, outcome.text),
            error_class=err.error_class if err else ("client_cancelled" if outcome.cancelled else None),
            error_message=self.s.redactor.scrub(err.message) if err else None,
            params={k: req.body[k] for k in PARAM_KEYS if k in req.body},
            input_messages=tuple(req.messages),
            output_text=outcome.text,
            client_cancelled=outcome.cancelled,
            client_request_id=r.client_id,
        )
        self.s.emit(rec)
        self.s.admission.settle(reservation, rec)

    # --- embeddings ---------------------------------------------------------------------------

    async def embeddings(self, r: Request) -> None:
        t0 = time.monotonic_ns()
        wall0 = self.s.wall_ns()
        key = self.s.auth.client(r.headers)
        try:
            raw = await self._read(r)
        except ClientGone:
            return
        req = parse_embeddings(raw, r.headers)
        if key is not None:
            _check_models(key, (req.model,))
            req.attribution = key.attribute(req.attribution)
        plan = self.s.planner.plan(req.model)
        run = self.executor.run(plan, t0)
        status, err = 200, None
        reservation = None
        try:
            reservation = await self.s.admission.admit(
                key,
                req.attribution,
                plan,
                {"max_tokens": 1},
                lambda: self.s.coster.estimator.embedding_input(req.body.get("input")),
            )
            body, target = await run.embed(req.body)
        except errors.RelaycastError as e:
            status, err = e.status_code, e
            await send_error(r.send, self.s.redactor, e, [*r.id_headers, *served(None, len(run.attempts))])
        else:
            await send_bytes(r.send, 200, body, [*r.id_headers, *served(target.name, len(run.attempts))])
        rec = RequestRecord(
            request_id=r.id,
            endpoint="embeddings",
            model_requested=req.model,
            stream=False,
            started_unix_ns=wall0,
            duration_ns=time.monotonic_ns() - t0,
            status_code=status,
            attribution=req.attribution,
            attempts=self.s.coster.embeddings(list(run.attempts), req.body.get("input")),
            error_class=err.error_class if err else None,
            error_message=self.s.redactor.scrub(err.message) if err else None,
            client_request_id=r.client_id,
        )
        self.s.emit(rec)
        self.s.admission.settle(reservation, rec)


def _check_models(key: KeyPolicy, models: tuple[str, ...]) -> None:
    for m in models:
        if not key.allows(m):
            raise errors.Forbidden(f"The API key '{key.name}' may not use the model '{m[:200]}'.", param="model")

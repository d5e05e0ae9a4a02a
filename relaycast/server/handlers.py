"""The completion endpoints (chat completions, Anthropic messages, responses, legacy completions: one path, each
API's formats in `shapes`) and embeddings. Each reads: parse -> plan -> admit -> run -> respond -> emit.

Each emits exactly one record however it ends: a request refused before any provider saw it (its key, its body,
its model, a limit, a client gone while the body was read) gets a bounded record of what was read by then
(`respond.unserved`); every other request, a full one after its response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from relaycast import errors, schema
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
from relaycast.keys.policy import KeyPolicy
from relaycast.limits.base import Reservation
from relaycast.providers import forward
from relaycast.providers.presets import vendor
from relaycast.records import Attempt, RequestRecord
from relaycast.routing.executor import Executor, Run, attempt_record
from relaycast.routing.target import Target
from relaycast.schema import ChatRequest, EmbeddingsRequest, embeddings_request, load_json
from relaycast.server.openrouter import openrouter_answer, usage_chunk
from relaycast.server.respond import send_error, served, unserved
from relaycast.server.services import Services
from relaycast.server.shapes import (
    ChatShape,
    CompletionsShape,
    MessagesShape,
    ResponsesRelay,
    ResponsesShape,
    Shape,
)
from relaycast.server.stored_responses import StoredResponses

CHAT, EMBEDDINGS = "chat.completions", "embeddings"  # the records' `endpoint`
INTERNAL = "Internal error in the gateway."
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


LARGE_BODY = 128 * 1024  # bytes: a body above this is parsed and checked in turn with other large ones

_NO_TURN: AbstractAsyncContextManager[Any] = nullcontext()


async def _pause(raw: bytes) -> None:
    """Let the event loop run other work between the steps of a large body (`Handlers._turn`)."""
    if len(raw) > LARGE_BODY:
        await asyncio.sleep(0)


@dataclass(slots=True)
class Outcome:
    """What the client was told, filled in while the request runs; the record is built from it afterwards."""

    status: int = 200
    error: errors.RelaycastError | None = None
    text: str | None = None
    cancelled: bool = False
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    wall0: int | None = None  # when the request ran: its attempts are priced at that time


class Shapes:
    """Each completion API's shape (`relaycast.server.shapes`)."""

    def __init__(self, now: Callable[[], int]) -> None:
        self.chat = ChatShape()
        self.messages = MessagesShape()
        self.responses = ResponsesShape(now)
        self.completions = CompletionsShape()


class Handlers:
    def __init__(self, services: Services, executor: Executor) -> None:
        self.s = services
        self.executor = executor
        self.shapes = Shapes(lambda: services.wall_ns() // 1_000_000_000)
        # A host's only worker keeps its own copies and never waits for the telemetry process to store one.
        alone = services.link is not None and services.link.workers == 1
        self.stored = StoredResponses(services.telemetry, services.log, alone)
        self.max_body = services.config.server.max_body_bytes
        # Large bodies take turns (see `_checked`).
        self._large = asyncio.Semaphore(1)

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

    def _turn(self, raw: bytes) -> AbstractAsyncContextManager[Any]:
        """Loading and checking a body costs about 10 ms per MiB (or per 3,000 messages) on the event loop, so
        bodies above LARGE_BODY take turns, one at a time, and let the loop run between steps (`_pause`): a burst
        of huge bodies delays other requests, and /healthz, by one step rather than by all of them. Smaller
        bodies, nearly all, pay nothing for this."""
        return self._large if len(raw) > LARGE_BODY else _NO_TURN

    # --- completions: chat, Anthropic messages, responses, legacy completions ----------------------

    async def chat(self, r: Request) -> None:
        await self.complete(r, self.shapes.chat)

    async def messages(self, r: Request) -> None:
        await self.complete(r, self.shapes.messages)

    async def responses(self, r: Request) -> None:
        await self.complete(r, self.shapes.responses)

    async def completions(self, r: Request) -> None:
        await self.complete(r, self.shapes.completions)

    async def complete(self, r: Request, shape: Shape) -> None:
        t0 = time.monotonic_ns()
        wall0 = self.s.wall_ns()
        key: KeyPolicy | None = None
        body: dict[str, Any] | None = None
        try:
            key = self.s.auth.client(r.headers)
            raw = await self._read(r)
            async with self._turn(raw):
                await _pause(raw)
                body = load_json(raw)
                await _pause(raw)
                if shape is self.shapes.responses:
                    history = await self.stored.history(body, key)
                    req = self.shapes.responses.parse_with(body, r.headers, history)
                else:
                    req = shape.parse(body, r.headers)
            if self.s.forwarded:
                forward.check(self.s.forwarded, r.headers)
            if key is not None:
                _check_models(key, (req.model, *req.fallbacks))
                req.attribution = key.attribute(req.attribution)
            plan = self.s.planner.plan(req.model, req.fallbacks, req.prefs)
            run = self.executor.run(plan, t0)
            reservation = await self.s.admission.admit(
                key, req.attribution, plan, req.body, lambda: self.s.coster.estimator.prompt(req.messages)
            )
        except Exception as e:  # noqa: BLE001 - recorded; `_refuse` re-raises what it does not answer
            await self._refuse(r, shape.endpoint, wall0, t0, e, key, body, shape.error_body)
            return
        outcome = Outcome(wall0=wall0)
        try:
            respond = self._stream if req.stream else self._complete
            await run_until_disconnect(r.receive, respond(r, shape, req, key, run, outcome), r.scope)
        except (ClientGone, asyncio.CancelledError) as e:  # the client left, or the server stopped waiting (shutdown)
            outcome.cancelled = True
            if isinstance(e, asyncio.CancelledError):
                raise
        except Exception:
            outcome.status, outcome.error = 500, errors.RelaycastError(INTERNAL)
            raise
        finally:
            self._emit_chat(r, shape.endpoint, req, wall0, t0, run, outcome, reservation)

    async def _complete(
        self, r: Request, shape: Shape, req: ChatRequest, key: KeyPolicy | None, run: Run, outcome: Outcome
    ) -> None:
        try:
            result, target = await run.complete(req)
        except errors.RelaycastError as e:
            outcome.status, outcome.error = e.status_code, e
            headers = [*r.id_headers, *served(None, len(run.attempts))]
            await send_error(r.send, self.s.redactor, e, headers, shape.error_body)
            return
        outcome.text = result.output_text
        outcome.tool_calls = result.tool_calls
        if req.usage_include and result.dialect == "chat":
            made_by = self._made_by(target)
            result.body = openrouter_answer(
                result, made_by, self._cost(run.attempts, req, result.output_text, outcome.wall0)
            )
        answer = shape.answer(req, result, r.id.removeprefix("req_"))
        if shape is self.shapes.responses:
            await self.stored.keep(req, key, answer)
        await send_bytes(r.send, 200, answer, [*r.id_headers, *served(target.name, len(run.attempts))])

    async def _stream(
        self, r: Request, shape: Shape, req: ChatRequest, key: KeyPolicy | None, run: Run, outcome: Outcome
    ) -> None:
        try:
            opened = await run.open_stream(req)
        except errors.RelaycastError as e:
            outcome.status, outcome.error = e.status_code, e
            headers = [*r.id_headers, *served(None, len(run.attempts))]
            await send_error(r.send, self.s.redactor, e, headers, shape.error_body)
            return
        send = r.send
        headers = [*SSE_HEADERS, *r.id_headers, *served(opened.target.name, len(run.attempts) + 1)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        relay = shape.relay(req, opened.stream.dialect, r.id.removeprefix("req_"))
        head = relay.head()
        if head:
            await send({"type": "http.response.body", "body": head, "more_body": True})

        with_cost = req.usage_include and opened.stream.dialect == "chat" and shape is self.shapes.chat
        made_by = self._made_by(opened.target) if with_cost else ""

        async def body(chunk: bytes) -> None:
            out = relay.chunk(chunk)
            if with_cost and b'"usage"' in out:
                state = opened.stream.state
                serving = attempt_record(opened.target, run.t0_ns, opened.started_ns, usage=state.usage, vendor=made_by)
                out = usage_chunk(out, made_by, self._cost((*run.attempts, serving), req, None, outcome.wall0))
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})

        try:
            err = await opened.relay(body)
        finally:
            state = opened.stream.state
            outcome.text = "".join(state.text) if state.text else None
            outcome.tool_calls = state.calls()
        if err is None:
            tail = relay.end()
            if shape is self.shapes.responses:
                made = relay.out.final() if isinstance(relay, ResponsesRelay) else getattr(opened.stream, "final", None)
                await self.stored.keep(req, key, made)
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            return
        outcome.error = err
        event = relay.fail(err, self.s.redactor.scrub_bytes)
        await send({"type": "http.response.body", "body": event, "more_body": False})

    def _made_by(self, target: Target) -> str:
        """The vendor as OpenRouter's answers name it (`openai`, `anthropic`, `google`, `mistral`, ...)."""
        p = self.s.config.providers[target.provider]
        return vendor(p.kind, p.name, target.model, semconv=False)

    def _cost(self, attempts: Sequence[Attempt], req: ChatRequest, text: str | None, when_ns: int | None) -> int:
        """The request's cost so far, in pico-dollars: its attempts priced as their records will be."""
        return sum(a.cost_pusd or 0 for a in self.s.coster.chat(attempts, req.messages, text, when_ns=when_ns))

    def _emit_chat(
        self,
        r: Request,
        endpoint: str,
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
            endpoint=endpoint,
            model_requested=req.model,
            stream=req.stream,
            started_unix_ns=wall0,
            duration_ns=time.monotonic_ns() - t0,
            status_code=499 if outcome.cancelled else outcome.status,
            attribution=req.attribution,
            attempts=self.s.coster.chat(list(attempts), req.messages, outcome.text, when_ns=wall0),
            error_class=err.error_class if err else ("client_cancelled" if outcome.cancelled else None),
            error_message=self.s.redactor.scrub(err.message) if err else None,
            params={k: req.body[k] for k in PARAM_KEYS if k in req.body},
            input_messages=tuple(req.messages),
            output_text=outcome.text,
            client_cancelled=outcome.cancelled,
            client_request_id=r.client_id,
            output_tool_calls=tuple(outcome.tool_calls),
        )
        r.recorded = True
        self.s.emit(rec)
        self.s.admission.settle(reservation, rec)

    # --- embeddings ---------------------------------------------------------------------------

    async def embeddings(self, r: Request) -> None:
        t0 = time.monotonic_ns()
        wall0 = self.s.wall_ns()
        key: KeyPolicy | None = None
        body: dict[str, Any] | None = None
        try:
            key = self.s.auth.client(r.headers)
            raw = await self._read(r)
            async with self._turn(raw):
                await _pause(raw)
                body = load_json(raw)
                await _pause(raw)
                req = embeddings_request(body, r.headers)
            if key is not None:
                _check_models(key, (req.model,))
                req.attribution = key.attribute(req.attribution)
            plan = self.s.planner.plan(req.model)
            run = self.executor.run(plan, t0)
            reservation = await self.s.admission.admit(
                key,
                req.attribution,
                plan,
                {"max_tokens": 1},
                lambda: self.s.coster.estimator.embedding_input(req.body.get("input")),
            )
        except Exception as e:  # noqa: BLE001 - recorded; `_refuse` re-raises what it does not answer
            await self._refuse(r, EMBEDDINGS, wall0, t0, e, key, body)
            return
        status, err = 200, None
        try:
            answer, target = await run.embed(req.body)
        except errors.RelaycastError as e:
            status, err = e.status_code, e
            await send_error(r.send, self.s.redactor, e, [*r.id_headers, *served(None, len(run.attempts))])
        except asyncio.CancelledError:  # the server stopped waiting for it (shutdown): recorded as cancelled
            self._emit_embeddings(r, req, wall0, t0, run, 499, None, reservation)
            raise
        except Exception:
            self._emit_embeddings(r, req, wall0, t0, run, 500, errors.RelaycastError(INTERNAL), reservation)
            raise
        else:
            await send_bytes(r.send, 200, answer, [*r.id_headers, *served(target.name, len(run.attempts))])
        self._emit_embeddings(r, req, wall0, t0, run, status, err, reservation)

    def _emit_embeddings(
        self,
        r: Request,
        req: EmbeddingsRequest,
        wall0: int,
        t0: int,
        run: Run,
        status: int,
        err: errors.RelaycastError | None,
        reservation: Reservation | None,
    ) -> None:
        rec = RequestRecord(
            request_id=r.id,
            endpoint=EMBEDDINGS,
            model_requested=req.model,
            stream=False,
            started_unix_ns=wall0,
            duration_ns=time.monotonic_ns() - t0,
            status_code=status,
            attribution=req.attribution,
            attempts=self.s.coster.embeddings(list(run.attempts), req.body.get("input"), when_ns=wall0),
            error_class=err.error_class if err else None,
            error_message=self.s.redactor.scrub(err.message) if err else None,
            client_request_id=r.client_id,
            input_messages=embedding_inputs(req.body.get("input")),
        )
        r.recorded = True
        self.s.emit(rec)
        self.s.admission.settle(reservation, rec)

    # --- requests no provider saw ---------------------------------------------------------------

    async def _refuse(
        self,
        r: Request,
        endpoint: str,
        wall0: int,
        t0: int,
        e: Exception,
        key: KeyPolicy | None,
        body: dict[str, Any] | None,
        render: Callable[[errors.RelaycastError], bytes] | None = None,
    ) -> None:
        """Answer a request refused before any provider saw it (the key, the body, the model, a limit), and emit
        its record with what was read before the refusal. A client that left while its body was read gets a 499
        record; an unexpected exception is recorded as `internal` and re-raised, for the app to log and answer."""
        known = isinstance(e, errors.RelaycastError)
        cancelled = isinstance(e, ClientGone)
        failure = e if isinstance(e, errors.RelaycastError) else errors.RelaycastError(INTERNAL)
        try:
            if known:
                await send_error(r.send, self.s.redactor, failure, r.id_headers, render)
        finally:
            seen = schema.seen(body, r.headers)
            if endpoint == EMBEDDINGS and seen.stream:
                seen = replace(seen, stream=False)
            if key is not None:
                seen = replace(seen, attribution=key.attribute(seen.attribution))
            rec = unserved(
                r,
                endpoint,
                wall0,
                time.monotonic_ns() - t0,
                failure.status_code,
                None if cancelled else failure,
                seen,
                self.s.redactor,
                params=_scalar_params(body),
                cancelled=cancelled,
            )
            r.recorded = True
            self.s.emit(rec)
        if not known and not cancelled:
            raise e


def _check_models(key: KeyPolicy, models: tuple[str, ...]) -> None:
    for m in models:
        if not key.allows(m):
            raise errors.Forbidden(f"The API key '{key.name}' may not use the model '{m[:200]}'.", param="model")


def _scalar_params(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """The request parameters a refusal's record keeps: numbers, booleans and short strings only."""
    if not body:
        return None
    out: dict[str, Any] = {}
    for k in PARAM_KEYS:
        v = body.get(k)
        if isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 200):
            out[k] = v
    return out


MAX_EMBEDDING_INPUTS = 256  # inputs of an embeddings request its record keeps (as documents)


def embedding_inputs(inp: Any) -> tuple[dict[str, Any], ...]:
    """An embeddings request's text inputs as the record's input (one `user` message each; token arrays are not
    text and are left out): destinations show them as the embedded documents."""
    texts = [inp] if isinstance(inp, str) else inp if isinstance(inp, list) else []
    return tuple({"role": "user", "content": t} for t in texts[:MAX_EMBEDDING_INPUTS] if isinstance(t, str))

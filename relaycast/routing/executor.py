"""Run a plan's attempts under one deadline, doing for each error class what that class calls for.

- rate_limit: the target cools down (Retry-After, or longer when quota is exhausted); next target at once.
- upstream_5xx, connection, timeout, stream_cut, malformed: next target; the same target again only with
  backoff, within the route's retry budget and the request's deadline.
- content_policy / context_length: the route's fallback for that class if it has one, else the answer stands.
- auth, bad_request, not_found, invalid_request: no retry.
- not_supported (this target cannot do the request): next target.

Streams fail over only before their first token is handed back (the bytes before it are held). With
`hedge_after_ms`, a stream that has no first token by then races a second target; the first to produce a
token wins and the other is cancelled (both are recorded).

`Executor.run(plan, t0_ns)` starts one request's `Run`, which owns its attempt log: every attempt is recorded
once, as it ends, and observed by the health board. A stream the run opens records its own serving attempt
when `OpenStream.relay` ends (finished, failed mid-way, or abandoned by the client).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from relaycast import errors
from relaycast.deadlines import Deadlines
from relaycast.log import EventLog
from relaycast.providers.base import ChatResult, ChatStream, Provider
from relaycast.providers.presets import vendor
from relaycast.providers.settings import Timeouts
from relaycast.records import Attempt, Usage
from relaycast.retry import backoff
from relaycast.routing.health import HealthBoard
from relaycast.routing.plan import Plan
from relaycast.routing.target import Target
from relaycast.schema import ChatRequest

# What one target can fail with: its upstream's errors, or a request this target's adapter cannot map.
RETRY_BASE_S, RETRY_CAP_S = 0.1, 2.0  # a target retried after a retryable failure: 0.1 s, doubling, at most 2 s

TARGET_ERRORS = (errors.ProviderError, errors.NotSupported, errors.InvalidRequest)
MAX_VENDORS = 4096  # targets whose vendor is remembered (a client names targets: bounded)


def attempt_record(
    target: Target,
    t0_ns: int,
    started_ns: int,
    *,
    ended_ns: int | None = None,
    ttft_ns: int | None = None,
    usage: Usage | None = None,
    finish_reason: str | None = None,
    error: errors.RelaycastError | None = None,
    error_class: str | None = None,
    vendor: str = "",
    response: tuple[str | None, str | None] = (None, None),
) -> Attempt:
    end = ended_ns if ended_ns is not None else time.monotonic_ns()
    return Attempt(
        target=target.name,
        provider=target.provider,
        model=target.model,
        started_ns=started_ns - t0_ns,
        duration_ns=end - started_ns,
        ttft_ns=None if ttft_ns is None else ttft_ns - started_ns,
        usage=usage,
        finish_reason=finish_reason,
        error_class=error_class or (error.error_class if error else None),
        error_message=error.message if error else None,
        upstream_status=getattr(error, "upstream_status", None),
        vendor=vendor,
        response_model=response[0] or None,
        response_id=response[1] or None,
    )


class Steps:
    """What to try next, for one request: the plan's targets, retries with backoff, fallbacks by class."""

    def __init__(
        self, plan: Plan, board: HealthBoard, deadline: float, rng: random.Random, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._loop = loop
        self.route = plan.route
        self._board = board
        self._deadline = deadline
        self._rng = rng
        self._queue: collections.deque[tuple[Target, float]] = collections.deque((t, 0.0) for t in plan.targets)
        self._retries_left = plan.route.retries
        self._retry_count = 0
        self._used_fallbacks: set[str] = set()
        self.failures: list[errors.RelaycastError] = []
        self.stopped = False  # a failure said: try nothing more

    async def next(self) -> Target | None:
        loop = self._loop
        while self._queue and not self.stopped:
            target, not_before = self._queue.popleft()
            if not self._board.admit(target.name):
                continue
            wait = not_before - loop.time()
            if wait > 0:
                if not_before >= self._deadline:
                    self._board.release(target.name)
                    continue
                await asyncio.sleep(wait)
            return target
        return None

    def failed(self, target: Target, err: errors.RelaycastError) -> bool:
        """Record a failure; False when nothing more should be tried."""
        self.failures.append(err)
        self.stopped = not self._decide(target, err)
        return not self.stopped

    def _decide(self, target: Target, err: errors.RelaycastError) -> bool:
        cls = err.error_class
        if cls in ("content_policy", "context_length"):
            fallback = (
                self.route.content_policy_fallback if cls == "content_policy" else self.route.context_length_fallback
            )
            if not fallback or cls in self._used_fallbacks:
                return False
            self._used_fallbacks.add(cls)
            self._queue = collections.deque(
                (Target.parse(t), 0.0) for t in fallback if Target.parse(t).model != target.model
            )
            return bool(self._queue)
        if not err.fails_over:
            return False
        if err.retryable and cls != "rate_limit" and self._retries_left > 0:
            self._retries_left -= 1
            self._retry_count += 1
            wait = backoff(self._retry_count, RETRY_BASE_S, RETRY_CAP_S, self._rng)
            self._queue.append((target, self._loop.time() + wait))
        return True

    def give_up(self) -> errors.RelaycastError:
        if self.failures:
            return errors.AllAttemptsFailed(self.failures)
        return errors.NoRoute(
            f"No target of '{self.route.name}' is available right now (circuits open or cooling down).",
            transient=True,
        )


class Executor:
    """Runs plans against the providers. One `Run` per request: `executor.run(plan, t0_ns)`."""

    def __init__(
        self, providers: Mapping[str, Provider], board: HealthBoard, log: EventLog, rng: random.Random | None = None
    ) -> None:
        self._providers = providers
        self.board = board
        self._log = log
        self._rng = rng or random.Random()
        self.deadlines = Deadlines()  # every run's deadlines, with no loop timer each (relaycast.deadlines)
        self._vendors: dict[Target, str] = {}

    def vendor(self, target: Target) -> str:
        """Who made the target's model (`providers.presets.vendor`), remembered per target (at most MAX_VENDORS)."""
        v = self._vendors.get(target)
        if v is None:
            p = self._providers[target.provider].config
            v = vendor(p.kind, p.name, target.model)
            if len(self._vendors) >= MAX_VENDORS:
                self._vendors.clear()
            self._vendors[target] = v
        return v

    def run(self, plan: Plan, t0_ns: int) -> Run:
        """A request's run of `plan`; `t0_ns` is when the request arrived (monotonic ns)."""
        return Run(self, plan, t0_ns)

    def timeouts(self, plan: Plan, target: Target) -> Timeouts:
        base = self._providers[target.provider].config.timeouts
        rt = plan.route.timeouts
        if rt.connect_s is None and rt.ttft_s is None and rt.idle_s is None and rt.total_s is None:
            return base
        return Timeouts(
            connect_s=rt.connect_s or base.connect_s,
            first_token_s=rt.ttft_s or base.first_token_s,
            idle_s=rt.idle_s or base.idle_s,
            total_s=rt.total_s or base.total_s,
        )

    def deadline(self, plan: Plan, t0_ns: int) -> float:
        """The request's deadline in loop time: the route's total timeout, else the first target's."""
        total = plan.route.timeouts.total_s or self._providers[plan.targets[0].provider].config.timeouts.total_s
        return self.deadlines.loop().time() - (time.monotonic_ns() - t0_ns) / 1e9 + total


class Run:
    """One request's attempts at a plan, under one deadline. Owns the attempt log (`attempts`)."""

    def __init__(self, ex: Executor, plan: Plan, t0_ns: int) -> None:
        self._ex = ex
        self._providers = ex._providers
        self._board = ex.board
        self._log = ex._log
        self.plan = plan
        self.t0_ns = t0_ns
        self._attempts: list[Attempt] = []

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """Every attempt recorded so far, in the order they ended."""
        return tuple(self._attempts)

    def _steps(self) -> tuple[Steps, float]:
        deadline = self._ex.deadline(self.plan, self.t0_ns)
        return Steps(self.plan, self._board, deadline, self._ex._rng, self._ex.deadlines.loop()), deadline

    # --- non-streaming ------------------------------------------------------------------------

    async def complete(self, req: ChatRequest) -> tuple[ChatResult, Target]:
        steps, deadline = self._steps()
        while (target := await steps.next()) is not None:
            provider = self._providers[target.provider]
            t = self._ex.timeouts(self.plan, target)
            started = time.monotonic_ns()
            try:
                with self._ex.deadlines.after(_remaining(deadline, t.total_s, self._ex.deadlines.loop())):
                    result = await provider.chat(req, target.model, t)
            except TimeoutError:
                err: errors.RelaycastError = errors.Timeout(
                    "upstream did not answer within the deadline", phase="total", target=target.name
                )
            except TARGET_ERRORS as e:
                err = e
            except asyncio.CancelledError:
                self._cancelled(target, started, "client_cancelled")
                raise
            else:
                ended = time.monotonic_ns()
                self._attempts.append(
                    attempt_record(
                        target,
                        self.t0_ns,
                        started,
                        ended_ns=ended,
                        usage=result.usage,
                        finish_reason=result.finish_reason,
                        vendor=self._ex.vendor(target),
                        response=(result.response_model, result.response_id),
                    )
                )
                out = result.usage.completion_tokens if result.usage else 0
                self._board.observe(target.name, (ended - started) / 1e6, None, None, out)
                return result, target
            self._failed(target, started, err)
            if not steps.failed(target, err):
                break
        raise steps.give_up()

    async def embed(self, body: dict[str, Any]) -> tuple[bytes, Target]:
        steps, deadline = self._steps()
        while (target := await steps.next()) is not None:
            provider = self._providers[target.provider]
            started = time.monotonic_ns()
            try:
                with self._ex.deadlines.after(
                    _remaining(deadline, provider.config.timeouts.total_s, self._ex.deadlines.loop())
                ):
                    raw, usage = await provider.embeddings(body, target.model)
            except TimeoutError:
                err: errors.RelaycastError = errors.Timeout(
                    "upstream did not answer within the deadline", phase="total", target=target.name
                )
            except TARGET_ERRORS as e:
                err = e
            except asyncio.CancelledError:
                self._cancelled(target, started, "client_cancelled")
                raise
            else:
                ended = time.monotonic_ns()
                self._attempts.append(
                    attempt_record(
                        target, self.t0_ns, started, ended_ns=ended, usage=usage, vendor=self._ex.vendor(target)
                    )
                )
                self._board.observe(target.name, (ended - started) / 1e6, None, None)
                return raw, target
            self._failed(target, started, err)
            if not steps.failed(target, err):
                break
        raise steps.give_up()

    # --- streaming ----------------------------------------------------------------------------

    async def open_stream(self, req: ChatRequest) -> OpenStream:
        steps, deadline = self._steps()
        hedge = self.plan.route.hedge_after_s
        while (target := await steps.next()) is not None:
            if hedge is None:
                try:
                    return await self._open_one(req, target, deadline)
                except TARGET_ERRORS as e:
                    if not steps.failed(target, e):
                        break
                continue
            won = await self._hedged(req, target, steps, hedge, deadline)
            if won is not None:
                return won
        raise steps.give_up()

    async def _hedged(
        self, req: ChatRequest, first: Target, steps: Steps, hedge_s: float, deadline: float
    ) -> OpenStream | None:
        """Race `first` against the next target if it has no first token after `hedge_s`. None: all failed."""
        reasons: dict[asyncio.Task[OpenStream], list[str]] = {}

        def start(t: Target) -> asyncio.Task[OpenStream]:
            why = ["client_cancelled"]
            task = asyncio.ensure_future(self._open_one(req, t, deadline, why))
            reasons[task] = why
            return task

        pending = {start(first)}
        targets = {next(iter(pending)): first}
        hedged = False
        try:
            while pending:
                timeout = None if hedged else hedge_s
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done and not hedged:
                    hedged = True
                    second = await steps.next()
                    if second is not None:
                        self._log.info(
                            "hedge_started", first=first.name, second=second.name, after_ms=int(hedge_s * 1000)
                        )
                        task = start(second)
                        targets[task] = second
                        pending.add(task)
                    continue
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        for other in pending:
                            reasons[other][0] = "hedge_lost"
                            other.cancel()
                        await asyncio.gather(*pending, return_exceptions=True)
                        return task.result()
                    if not isinstance(exc, TARGET_ERRORS):
                        raise exc
                    steps.failed(targets[task], exc)
            return None
        except asyncio.CancelledError:
            for task in reasons:
                task.cancel()
            await asyncio.gather(*reasons, return_exceptions=True)
            raise

    async def _open_one(
        self, req: ChatRequest, target: Target, deadline: float, cancel_class: list[str] | None = None
    ) -> OpenStream:
        """Open a stream and read it up to its first token, within the TTFT budget. Records a failed attempt."""
        provider = self._providers[target.provider]
        t = self._ex.timeouts(self.plan, target)
        started = time.monotonic_ns()
        stream: ChatStream | None = None
        held: list[bytes] = []
        budget = _remaining(deadline, t.first_token_s, self._ex.deadlines.loop())
        try:
            with self._ex.deadlines.after(budget):
                stream = await provider.chat_stream(req, target.model, t)
                chunks = stream.__aiter__()
                while stream.state.first_token_ns is None and not stream.state.done:
                    try:
                        held.append(await chunks.__anext__())
                    except StopAsyncIteration:
                        raise errors.StreamCut(
                            "upstream ended the stream before its first token", target=target.name
                        ) from None
        except TimeoutError:
            err: errors.RelaycastError = errors.Timeout(
                f"no first token within {budget:.3g}s", phase="first_token", target=target.name
            )
        except TARGET_ERRORS as e:
            err = e
        except asyncio.CancelledError:
            if stream is not None:
                await stream.aclose()
            self._cancelled(target, started, (cancel_class or ["client_cancelled"])[0])
            raise
        else:
            return OpenStream(self, target, stream, chunks, b"".join(held), started, deadline)
        if stream is not None:
            await stream.aclose()
        self._failed(target, started, err)
        raise err

    def stream_ended(self, opened: OpenStream, err: errors.RelaycastError | None) -> None:
        """Record the serving attempt of a stream once it ended (finished, failed mid-way, or abandoned)."""
        state = opened.stream.state
        cls = None if err or state.done else "client_cancelled"
        ended = time.monotonic_ns()
        self._attempts.append(
            attempt_record(
                opened.target,
                self.t0_ns,
                opened.started_ns,
                ended_ns=ended,
                ttft_ns=state.first_token_ns,
                usage=state.usage,
                finish_reason=state.finish_reason,
                error=err,
                error_class=cls,
                vendor=self._ex.vendor(opened.target),
                response=(state.response_model, state.response_id),
            )
        )
        if cls is not None:
            self._board.release(opened.target.name)
            return
        ttft_ms = None if state.first_token_ns is None else (state.first_token_ns - opened.started_ns) / 1e6
        out = state.usage.completion_tokens if state.usage else 0
        self._board.observe(
            opened.target.name, (ended - opened.started_ns) / 1e6, ttft_ms, err.error_class if err else None, out
        )
        if err is not None:
            self._log.warning(
                "stream_failed", target=opened.target.name, error_class=err.error_class, message=err.message[:200]
            )

    # --- bookkeeping --------------------------------------------------------------------------

    def _failed(self, target: Target, started: int, err: errors.RelaycastError) -> None:
        ended = time.monotonic_ns()
        self._attempts.append(
            attempt_record(target, self.t0_ns, started, ended_ns=ended, error=err, vendor=self._ex.vendor(target))
        )
        if err.error_class in ("not_supported", "invalid_request"):
            self._board.release(target.name)  # says nothing about the target's health
        else:
            self._board.observe(
                target.name,
                (ended - started) / 1e6,
                None,
                err.error_class,
                retry_after=getattr(err, "retry_after", None),
                quota=getattr(err, "quota", False),
            )
        self._log.warning(
            "upstream_error",
            target=target.name,
            error_class=err.error_class,
            status=getattr(err, "upstream_status", None),
            will_fail_over=err.fails_over,
            message=err.message[:200],
        )

    def _cancelled(self, target: Target, started: int, cls: str) -> None:
        self._attempts.append(
            attempt_record(target, self.t0_ns, started, error_class=cls, vendor=self._ex.vendor(target))
        )
        self._board.release(target.name)


class OpenStream:
    """A stream that produced its first token. `relay` forwards it and records the serving attempt at its end."""

    __slots__ = ("_run", "target", "stream", "_chunks", "first", "started_ns", "deadline", "_ended")

    def __init__(
        self,
        run: Run,
        target: Target,
        stream: ChatStream,
        chunks: AsyncIterator[bytes],
        first: bytes,
        started_ns: int,
        deadline: float,
    ) -> None:
        self._run = run
        self.target = target
        self.stream = stream
        self._chunks = chunks
        self.first = first  # everything up to and including the first token
        self.started_ns = started_ns  # monotonic
        self.deadline = deadline  # loop time by which the whole stream must end
        self._ended = False

    async def relay(self, send: Callable[[bytes], Awaitable[None]]) -> errors.RelaycastError | None:
        """Send the held bytes and every later chunk through `send`, within the request's deadline.

        Returns None when the stream finished, or the error that ended it mid-way (the upstream is closed; the
        caller tells the client). When the caller is cancelled (the client left), the attempt is recorded as
        `client_cancelled` and the cancellation propagates. Either way the serving attempt is recorded once."""
        err: errors.RelaycastError | None = None
        try:
            with self._run._ex.deadlines.at(self.deadline):
                await send(self.first)
                async for chunk in self._chunks:
                    await send(chunk)
        except errors.ProviderError as e:
            err = e
        except TimeoutError:
            err = errors.Timeout(
                "stream did not finish within the request's deadline", phase="total", target=self.target.name
            )
        except BaseException:
            await self.stream.aclose()
            self._end(None)
            raise
        else:
            self._end(None)
            return None
        await self.stream.aclose()
        self._end(err)
        return err

    def _end(self, err: errors.RelaycastError | None) -> None:
        if not self._ended:
            self._ended = True
            self._run.stream_ended(self, err)


def _remaining(deadline: float, cap: float, loop: asyncio.AbstractEventLoop) -> float:
    return max(0.001, min(cap, deadline - loop.time()))

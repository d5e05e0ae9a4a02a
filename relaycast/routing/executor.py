"""Run a plan's attempts: one target after another, failing over on errors whose class allows it.

Every attempt, failed or not, is appended to the caller's `attempts` list as it ends, so the trace has them
even when the request fails or the client goes away. Streams fail over only before their first bytes are
handed back; after that the caller owns the stream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

from relaycast import errors
from relaycast.log import EventLog
from relaycast.providers.base import ChatResult, ChatStream, Provider
from relaycast.routing.plan import Target
from relaycast.schema import ChatRequest
from relaycast.telemetry.records import Attempt, Usage


# What one target can fail with: its upstream's errors, or a request this target's adapter cannot map.
TARGET_ERRORS = (errors.ProviderError, errors.NotSupported, errors.InvalidRequest)


@dataclass(slots=True)
class OpenStream:
    target: Target
    stream: ChatStream
    chunks: AsyncIterator[bytes]
    first: bytes
    started_ns: int  # monotonic


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
    )


class Executor:
    def __init__(self, providers: Mapping[str, Provider], log: EventLog) -> None:
        self._providers = providers
        self._log = log

    async def complete(
        self, req: ChatRequest, plan: tuple[Target, ...], t0_ns: int, attempts: list[Attempt]
    ) -> tuple[ChatResult, Target]:
        failures: list[errors.RelaycastError] = []
        for target in plan:
            provider = self._providers[target.provider]
            started = time.monotonic_ns()
            try:
                async with asyncio.timeout(provider.config.timeouts.total_s):
                    result = await provider.chat(req, target.model)
            except TimeoutError:
                err: errors.RelaycastError = errors.Timeout(
                    f"upstream did not finish within {provider.config.timeouts.total_s:g}s", phase="total", target=target.name
                )
            except TARGET_ERRORS as e:
                err = e
            except asyncio.CancelledError:
                attempts.append(attempt_record(target, t0_ns, started, error_class="client_cancelled"))
                raise
            else:
                ended = time.monotonic_ns()
                attempts.append(
                    attempt_record(
                        target, t0_ns, started, ended_ns=ended, ttft_ns=ended, usage=result.usage, finish_reason=result.finish_reason
                    )
                )
                return result, target
            attempts.append(attempt_record(target, t0_ns, started, error=err))
            failures.append(err)
            self._failed(target, err)
            if not err.fails_over:
                break
        raise errors.AllAttemptsFailed(failures)

    async def open_stream(
        self, req: ChatRequest, plan: tuple[Target, ...], t0_ns: int, attempts: list[Attempt]
    ) -> OpenStream:
        failures: list[errors.RelaycastError] = []
        for target in plan:
            provider = self._providers[target.provider]
            started = time.monotonic_ns()
            stream: ChatStream | None = None
            try:
                stream = await provider.chat_stream(req, target.model)
                chunks = stream.__aiter__()
                try:
                    first = await chunks.__anext__()
                except StopAsyncIteration:
                    raise errors.StreamCut("upstream ended the stream before sending anything", target=target.name) from None
            except TARGET_ERRORS as e:
                if stream is not None:
                    await stream.aclose()
                attempts.append(attempt_record(target, t0_ns, started, error=e))
                failures.append(e)
                self._failed(target, e)
                if not e.fails_over:
                    break
                continue
            except BaseException:
                if stream is not None:
                    await stream.aclose()
                attempts.append(attempt_record(target, t0_ns, started, error_class="client_cancelled"))
                raise
            return OpenStream(target=target, stream=stream, chunks=chunks, first=first, started_ns=started)
        raise errors.AllAttemptsFailed(failures)

    async def embed(
        self, body: dict[str, Any], plan: tuple[Target, ...], t0_ns: int, attempts: list[Attempt]
    ) -> tuple[bytes, Target]:
        failures: list[errors.RelaycastError] = []
        for target in plan:
            provider = self._providers[target.provider]
            started = time.monotonic_ns()
            try:
                async with asyncio.timeout(provider.config.timeouts.total_s):
                    raw, usage = await provider.embeddings(body, target.model)
            except TimeoutError:
                err: errors.RelaycastError = errors.Timeout("upstream did not finish in time", phase="total", target=target.name)
            except TARGET_ERRORS as e:
                err = e
            else:
                attempts.append(attempt_record(target, t0_ns, started, usage=usage))
                return raw, target
            attempts.append(attempt_record(target, t0_ns, started, error=err))
            failures.append(err)
            self._failed(target, err)
            if not err.fails_over:
                break
        raise errors.AllAttemptsFailed(failures)

    def total_timeout(self, target: Target) -> float:
        return self._providers[target.provider].config.timeouts.total_s

    def _failed(self, target: Target, err: errors.RelaycastError) -> None:
        self._log.warning(
            "upstream_error",
            target=target.name,
            error_class=err.error_class,
            status=getattr(err, "upstream_status", None),
            will_fail_over=err.fails_over,
            message=err.message[:200],
        )

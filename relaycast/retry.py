"""Retrying, in one place: when to retry (status classes), how long to wait (jittered backoff), and what the
server asked for (Retry-After in seconds or HTTP-date form).

The rules are OpenTelemetry's HTTP exporter's: retry only 408, 429, 5xx and connection errors (a timeout, a
refused or reset connection); any other 4xx will never succeed. OTLP/HTTP narrows this for its own endpoints
(`OTLP_RETRYABLE_STATUS`: 429, 502, 503 and 504; every other status MUST NOT be retried).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import time
from collections.abc import Callable
from typing import Protocol

RETRYABLE_STATUS: frozenset[int] = frozenset({408, 429}) | frozenset(range(500, 600))
OTLP_RETRYABLE_STATUS: frozenset[int] = frozenset({429, 502, 503, 504})  # the OTLP/HTTP specification

_MAX_EXPONENT = 60  # 2**60 times any base passes every cap: no float overflow for a long outage


class Headers(Protocol):
    """What Retry-After is read from: aiohttp's and httpx's headers, or a plain dict with lower-case keys."""

    def get(self, key: str, /) -> str | None: ...


def backoff(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry): `base_s` doubled for each attempt
    after the first, capped at `cap_s`, then jittered to between half of that and all of it, so callers that
    failed together do not retry together. Always in [0.5 * min(base_s, cap_s), cap_s)."""
    step = min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), _MAX_EXPONENT))
    return step * (0.5 + rng.random() / 2)


def retry_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    rng: random.Random,
    retry_after: float | None = None,
    max_retry_after_s: float = 60.0,
) -> float:
    """The wait before retry number `attempt`: what the server asked for (Retry-After, at most
    `max_retry_after_s`), else `backoff`."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), max_retry_after_s)
    return backoff(attempt, base_s, cap_s, rng)


def is_retryable_status(status: int, retryable: frozenset[int] = RETRYABLE_STATUS) -> bool:
    """Whether an HTTP answer with this status may succeed if sent again (`retryable`: the set that applies)."""
    return status in retryable


def is_retryable(outcome: int | BaseException, retryable: frozenset[int] = RETRYABLE_STATUS) -> bool:
    """Whether a request that ended this way (a status, or the error raised) may succeed if sent again.

    An error that was classified where its wire format is known says so itself (a bool `retryable`, as
    relaycast's errors and `ExportError` do); one that carries an HTTP status (`aiohttp.ClientResponseError`) is
    judged by the status; otherwise only a timeout or a failed connection (refused, reset, closed mid-answer) is.
    """
    if isinstance(outcome, int):
        return outcome in retryable
    flag = getattr(outcome, "retryable", None)
    if isinstance(flag, bool):
        return flag
    status = getattr(outcome, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status in retryable
    import aiohttp  # the exporters' client, loaded where they run: not by a worker, which imports this module

    return isinstance(outcome, OSError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError)


def retry_after_seconds(headers: Headers, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date, which is read against `now`), or retry-after-ms.
    None if absent or unreadable; never negative."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    v = headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no source zone
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now())

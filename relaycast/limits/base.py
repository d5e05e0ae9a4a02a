"""What the limiters share: the checks a request must pass, its reservation, the refusal of a request larger
than a tokens-per-minute limit, and the UTC day and month budgets are counted in (`Periods`, computed once per
period). The 429 that names the limit (`LimitExceeded`) is in `relaycast.errors`."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from relaycast.errors import RequestTooLarge
from relaycast.keys.policy import Limits

NANO_PER_PICO = 1000  # budgets are kept in nano-dollars: exact in Redis' integers and Lua's doubles up to $9M


@dataclass(frozen=True, slots=True)
class Check:
    scope: str  # "key", "user" or "feature"
    name: str
    limits: Limits

    @property
    def label(self) -> str:
        return f"{self.scope} '{self.name}'"


@dataclass(slots=True)
class Reservation:
    checks: tuple[Check, ...]
    est_tokens: int
    est_nano: int
    now: float
    id: str = ""  # unique among the limiter's reservations: a count in memory, random in Redis (every replica's)
    minute: int = 0  # the minute window the tokens were counted in (Redis)
    settled: bool = False
    budgets: list[Any] = field(default_factory=list)  # what to settle: in-memory cells, or Redis hash names
    entries: list[Any] = field(default_factory=list)  # in memory: the token-window entries it added
    scopes: list[Any] = field(default_factory=list)  # in memory: the scopes it holds in flight
    local: bool = False  # admitted by this process's limits while Redis could not answer
    lease: Any = None  # a worker's: the lease it was admitted under (relaycast.limits.host), else None


class Limiter(Protocol):
    async def admit(self, checks: tuple[Check, ...], est_tokens: int, est_nano: int, now: float) -> Reservation: ...

    def settle(self, res: Reservation, tokens: int, nano: int) -> Awaitable[None] | None:
        """Replace the reservation by what the request really used: done at once (memory), or a coroutine to run
        after the response (Redis)."""
        ...

    def status(self) -> dict[str, Any]: ...

    async def close(self) -> None:
        """Release connections (Redis); nothing for the in-memory limiter."""
        ...


def too_large(checks: tuple[Check, ...], est_tokens: int) -> RequestTooLarge | None:
    """The refusal for a request whose estimate alone passes a tokens-per-minute limit, if it does."""
    for c in checks:
        if c.limits.tpm is not None and est_tokens > c.limits.tpm:
            return RequestTooLarge(
                f"Request too large for {c.label} on tokens per minute (TPM): Limit {c.limits.tpm}, Requested "
                f"{est_tokens}. The prompt or max_tokens must be reduced for it to run."
            )
    return None


def period_span(now: float, period: str) -> tuple[str, float, float]:
    """(period id, unix start, unix end) of the UTC day (`period="day"`) or month (`"month"`) holding `now`."""
    t = datetime.fromtimestamp(math.floor(now), UTC)  # periods begin on whole seconds; no rounding up into the next
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), start.timestamp(), start.timestamp() + 86400
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y-%m"), start.timestamp(), nxt.timestamp()


def period_bounds(now: float, period: str) -> tuple[str, float]:
    """(period id, seconds until it ends) for a UTC day or month."""
    pid, _, end = period_span(now, period)
    return pid, end - now


class Periods:
    """`period_bounds` for a limiter: the current day's and month's ids and ends are computed when a period
    begins and reused until it ends (`start <= now < end`, so a request at the first instant of a period counts
    in the new one). A clock that goes back is answered exactly too: the span is computed again."""

    __slots__ = ("_day", "_month")

    def __init__(self) -> None:
        self._day: tuple[str, float, float] = ("", 0.0, 0.0)
        self._month: tuple[str, float, float] = ("", 0.0, 0.0)

    def bounds(self, now: float, period: str) -> tuple[str, float]:
        """(period id, seconds until it ends), as `period_bounds(now, period)`."""
        span = self._day if period == "day" else self._month
        if not span[1] <= now < span[2]:
            span = period_span(now, period)
            if period == "day":
                self._day = span
            else:
                self._month = span
        return span[0], span[2] - now


def period_start(now: float, period: str) -> int:
    """The unix second a UTC day (`period="day"`) or month (`"month"`) began."""
    return int(period_span(now, period)[1])


def budget_message(c: Check, period: str, limit_usd: float) -> str:
    return f"Budget exceeded: {c.label} has spent its ${limit_usd:g} for this {period} (UTC)."

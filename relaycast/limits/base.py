"""What the limiters share: the checks a request must pass, its reservation, and the refusal of a request larger
than a tokens-per-minute limit. The 429 that names the limit (`LimitExceeded`) is in `relaycast.errors`."""

from __future__ import annotations

import secrets
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
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    minute: int = 0  # the minute window the tokens were counted in (Redis)
    settled: bool = False
    budgets: list[Any] = field(default_factory=list)  # what to settle: in-memory cells, or Redis hash names
    entries: list[Any] = field(default_factory=list)  # in memory: the token-window entries it added
    scopes: list[Any] = field(default_factory=list)  # in memory: the scopes it holds in flight
    local: bool = False  # admitted by this process's limits while Redis could not answer


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


def period_bounds(now: float, period: str) -> tuple[str, float]:
    """(period id, seconds until it ends) for a UTC day or month."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        nxt = datetime.fromtimestamp(start.timestamp() + 86400, UTC)
        return start.strftime("%Y-%m-%d"), nxt.timestamp() - now
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y-%m"), nxt.timestamp() - now


def period_start(now: float, period: str) -> int:
    """The unix second a UTC day (`period="day"`) or month (`"month"`) began."""
    t = datetime.fromtimestamp(now, UTC)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return int(start.timestamp())


def budget_message(c: Check, period: str, limit_usd: float) -> str:
    return f"Budget exceeded: {c.label} has spent its ${limit_usd:g} for this {period} (UTC)."

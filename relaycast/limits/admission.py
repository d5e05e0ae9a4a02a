"""Admission of a request against its key's, user's and feature's limits, and its settlement afterwards.

The limiter is in memory, or in Redis when `redis_url` is set. Checks and estimates are only computed for
requests that have a limit, so a gateway without limits pays nothing for this. A budget this replica has not
seen this period starts from what the store says the scope spent (`SpendSince`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from relaycast.costs.compute import usage_cost
from relaycast.costs.pricer import Pricer
from relaycast.keys.policy import KeyPolicy
from relaycast.limits.base import NANO_PER_PICO, Check, Limiter, Reservation, period_start
from relaycast.limits.memory import MemoryLimiter
from relaycast.limits.settings import LimitsConfig
from relaycast.log import EventLog
from relaycast.records import Attribution, RequestRecord, Usage
from relaycast.routing.plan import Plan

SpendSince = Callable[[str, str, int], Awaitable[int]]  # (scope, name, unix start) -> pico-dollars spent since


def build_limiter(
    cfg: LimitsConfig | None, log: EventLog, spend_since: SpendSince, clock: Callable[[], float]
) -> Limiter:
    """The in-memory limiter, or the Redis one when `redis_url` is set."""

    async def load_spend(scope: str, name: str, period: str) -> int:
        """Nano-dollars this scope spent in the current UTC day or month, rounded up."""
        pico = await spend_since(scope, name, period_start(clock(), period))
        return -(-pico // NANO_PER_PICO)

    if cfg is not None and cfg.redis_url:
        from relaycast.limits.redis_limiter import RedisLimiter

        return RedisLimiter(cfg, log, load_spend)
    return MemoryLimiter(load_spend)


def checks_for(cfg: LimitsConfig | None, key: KeyPolicy | None, a: Attribution) -> tuple[Check, ...]:
    out = []
    if key is not None and key.limits.any():
        out.append(Check("key", key.name, key.limits))
    if cfg is not None:
        if a.user and cfg.per_user.any():
            out.append(Check("user", a.user, cfg.per_user))
        if a.feature and cfg.per_feature.any():
            out.append(Check("feature", a.feature, cfg.per_feature))
    return tuple(out)


class Admission:
    """Reserves a request against its limits before it runs, and settles the reservation with its record."""

    def __init__(
        self,
        cfg: LimitsConfig | None,
        limiter: Limiter | None,
        pricer: Pricer,
        clock: Callable[[], float],
        later: Callable[[Awaitable[None]], None],
    ) -> None:
        self._cfg = cfg or LimitsConfig()
        self._given = cfg
        self._limiter = limiter
        self._pricer = pricer
        self._clock = clock
        self._later = later

    async def admit(
        self,
        key: KeyPolicy | None,
        attribution: Attribution,
        plan: Plan,
        body: dict[str, Any],
        count_prompt: Callable[[], int],
    ) -> Reservation | None:
        """Reserve the request against its limits (raises LimitExceeded with a 429), or None when it has none."""
        checks = checks_for(self._given, key, attribution)
        if not checks or self._limiter is None:
            return None
        prompt_tokens = count_prompt()
        out = body.get("max_completion_tokens") or body.get("max_tokens")
        out_tokens = out if isinstance(out, int) and out > 0 else self._cfg.estimate_output_tokens
        est_nano = 0
        if any(c.limits.budget_day_usd or c.limits.budget_month_usd for c in checks):
            t = plan.targets[0]
            price = self._pricer.price(t.provider, t.model)
            if price is not None:
                usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=out_tokens)
                est_nano = -(-usage_cost(usage, price) // NANO_PER_PICO)
        return await self._limiter.admit(checks, prompt_tokens + out_tokens, est_nano, self._clock())

    def settle(self, res: Reservation | None, rec: RequestRecord) -> None:
        """Replace the reservation by what the request used (after the response)."""
        if res is None or self._limiter is None:
            return
        tokens = sum(a.usage.total_tokens for a in rec.attempts if a.usage)
        pico, _ = rec.cost
        pending = self._limiter.settle(res, tokens, -(-(pico or 0) // NANO_PER_PICO))
        if pending is not None:
            self._later(pending)

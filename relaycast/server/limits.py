"""Admission of a request against its key's, user's and feature's limits, and its settlement afterwards.

The limiter is in memory, or in Redis when `limits.redis_url` is set. Checks and estimates are only computed for
requests that have a limit, so a gateway without limits pays nothing for this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relaycast.costs.compute import usage_cost
from relaycast.keys.policy import KeyPolicy
from relaycast.limits.base import NANO_PER_PICO, Check, Limiter, Reservation
from relaycast.limits.memory import MemoryLimiter
from relaycast.limits.settings import LimitsConfig
from relaycast.records import Attribution, RequestRecord, Usage
from relaycast.routing.plan import Plan
from relaycast.store.db import Connection

if TYPE_CHECKING:
    from relaycast.server.app import Gateway


def build_limiter(gw: Gateway) -> Limiter:
    cfg = gw.config.limits or LimitsConfig()

    async def load_spend(scope: str, name: str, period: str) -> int:
        """What the store says this scope spent in the period so far, in nano-dollars (0 without a store)."""
        if gw._reader is None:
            return 0
        from relaycast.monitors.rules import period_start

        start = period_start(gw.clock(), period)
        try:
            pico = await gw._reader.run(_spend_since, scope, name, start)
        except Exception as e:  # noqa: BLE001 - a store that is down: count from zero, and say so
            gw.log.error("limits_spend_unknown", scope=scope, scope_name=name, error=type(e).__name__)
            return 0
        return -(-pico // NANO_PER_PICO)

    if cfg.redis_url:
        from relaycast.limits.redis_limiter import RedisLimiter

        return RedisLimiter(cfg, gw.log, load_spend)
    return MemoryLimiter(load_spend)


def _spend_since(conn: Connection, scope: str, name: str, start: int) -> int:
    row = conn.query(
        "SELECT sum(cost_pusd) FROM usage_hourly WHERE dim = ? AND value = ? AND hour >= ?", (scope, name, start)
    )
    return int(row[0][0] or 0)


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


async def admit(
    gw: Gateway,
    key: KeyPolicy | None,
    attribution: Attribution,
    plan: Plan,
    body: dict[str, Any],
    count_prompt: Callable[[], int],
) -> Reservation | None:
    """Reserve the request against its limits (raises LimitExceeded with a 429), or None when it has none."""
    checks = checks_for(gw.config.limits, key, attribution)
    if not checks or gw.limiter is None:
        return None
    cfg = gw.config.limits or LimitsConfig()
    prompt_tokens = count_prompt()
    out = body.get("max_completion_tokens") or body.get("max_tokens")
    out_tokens = out if isinstance(out, int) and out > 0 else cfg.estimate_output_tokens
    est_nano = 0
    if any(c.limits.budget_day_usd or c.limits.budget_month_usd for c in checks):
        t = plan.targets[0]
        price = gw.coster.pricer.price(t.provider, t.model)
        if price is not None:
            est_nano = -(
                -usage_cost(Usage(prompt_tokens=prompt_tokens, completion_tokens=out_tokens), price) // NANO_PER_PICO
            )
    return await gw.limiter.admit(checks, prompt_tokens + out_tokens, est_nano, gw.clock())


def settle(gw: Gateway, res: Reservation | None, rec: RequestRecord) -> None:
    if res is None or gw.limiter is None:
        return
    tokens = sum(a.usage.total_tokens for a in rec.attempts if a.usage)
    pico, _ = rec.cost
    pending = gw.limiter.settle(res, tokens, -(-(pico or 0) // NANO_PER_PICO))
    if pending is not None:
        gw.later(pending)

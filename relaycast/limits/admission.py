"""Admission of a request against its key's, user's and feature's limits, and its settlement afterwards.

The limiter is in memory, or in Redis when `redis_url` is set. Checks and estimates are only computed for
requests that have a limit, so a gateway without limits pays nothing for this. A budget this replica has not
seen this period starts from what the store says the scope spent (`SpendSince`).

A reservation is what the request can cost at most: its prompt (estimated) plus `n` times its output cap, priced at
the dearest target it may be served by (reasoning and cache writes included). When a token or budget limit applies
and the client sent no `max_tokens` / `max_completion_tokens`, the cap is set on the request
(`limits.default_max_tokens`), so the upstream cannot produce more than was reserved. A budget refuses a model
that nothing prices: its spend could not be counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from relaycast.costs.catalog import ModelPrice
from relaycast.costs.compute import ESTIMATED, UNPRICED
from relaycast.costs.pricer import MAX_MEMO, Pricer
from relaycast.errors import Forbidden, InvalidRequest
from relaycast.keys.policy import KeyPolicy
from relaycast.limits.base import NANO_PER_PICO, Check, Limiter, Reservation, period_start
from relaycast.limits.memory import MemoryLimiter
from relaycast.limits.settings import LimitsConfig
from relaycast.log import EventLog
from relaycast.records import Attribution, RequestRecord
from relaycast.routing.plan import Plan
from relaycast.routing.target import Target

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
    return MemoryLimiter(load_spend, cfg.max_scopes if cfg is not None else LimitsConfig().max_scopes)


def checks_for(cfg: LimitsConfig | None, key: KeyPolicy | None, a: Attribution) -> tuple[Check, ...]:
    out = []
    if key is not None:
        if key.pin:  # the limits count the key's user and feature whatever the caller made of the attribution
            a = key.attribute(a)
        if key.limits.any():
            out.append(Check("key", key.name, key.limits))
    if cfg is not None:
        if cfg.require_user and not a.user:
            raise InvalidRequest(
                "This gateway requires a user: send the 'user' field (or the x-relaycast-user header).", param="user"
            )
        if a.user and cfg.per_user.any():
            out.append(Check("user", a.user, cfg.per_user))
        if a.feature and cfg.per_feature.any():
            out.append(Check("feature", a.feature, cfg.per_feature))
    return tuple(out)


def _dearest(pricer: Pricer, plan: Plan, checks: tuple[Check, ...], tier: str | None = None) -> ModelPrice:
    """The highest price per token of each kind over the targets the request may be served by. Raises Forbidden,
    naming the model, when one of them has no price: a budget cannot count what it does not know."""
    prices = []
    for t in plan.targets:
        p = pricer.ceiling(t.provider, t.model, tier)  # the dearest time of day, at the tier the request asks for
        if p is None:
            c = next(c for c in checks if c.limits.budget_day_usd or c.limits.budget_month_usd)
            raise Forbidden(
                f"The model '{t.model}' on provider '{t.provider}' has no known price, and {c.label} has a budget: "
                f"its spend could not be counted. Price it in the gateway's config (a `prices:` entry for "
                f"'{t.provider}/{t.model}', or a `price:` on the route's target), or use a priced model.",
                param="model",
            )
        prices.append(p)
    # every rate a request could be billed at: long-context tiers and one-hour cache writes included
    rates = [q for p in prices for q in (p, *(t for _, t in p.tiers))]
    return ModelPrice(
        input=max((max(q.input, q.cache_write, q.cache_write_1h or 0, q.input_audio or 0) for q in rates), default=0),
        # reasoning and audio are parts of the output
        output=max((max(q.output, q.reasoning, q.output_audio or 0) for q in rates), default=0),
        cached_input=0,
        cache_write=0,
        reasoning=0,
        request=max((p.request for p in prices), default=0),
    )


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
        # once per set of targets and service tier asked for (ceilings: the dearest time of day from today on)
        self._dearest: dict[tuple[tuple[Target, ...], str | None], ModelPrice] = {}

    async def admit(
        self,
        key: KeyPolicy | None,
        attribution: Attribution,
        plan: Plan,
        body: dict[str, Any],
        count_prompt: Callable[[], int],
    ) -> Reservation | None:
        """Reserve the request against its limits (raises LimitExceeded with a 429), or None when it has none.

        May set `max_tokens` in `body`, the request the providers send upstream."""
        checks = checks_for(self._given, key, attribution)
        if not checks or self._limiter is None:
            return None
        budgeted = counted = False
        for c in checks:
            budgeted = budgeted or c.limits.budgeted()
            counted = counted or c.limits.tpm is not None
        est_tokens = est_nano = 0
        if budgeted or counted:
            prompt_tokens = count_prompt()
            n = body.get("n")
            choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
            out = body.get("max_completion_tokens") or body.get("max_tokens")
            if not isinstance(out, int) or isinstance(out, bool) or out < 1:
                # The gateway's own cap: within the smallest tokens-per-minute limit, so a request that names no
                # cap is never refused as too large because of the cap the gateway chose.
                out = self._cfg.default_max_tokens
                tpms = [c.limits.tpm for c in checks if c.limits.tpm]
                if tpms:
                    out = max(1, min(out, (min(tpms) - prompt_tokens) // choices))
                body["max_tokens"] = out
            outputs = choices * out
            est_tokens = prompt_tokens + outputs
            if budgeted:
                tier = body.get("service_tier")
                tier = tier[:64] if isinstance(tier, str) else None
                p = self._dearest.get((plan.targets, tier)) or self._dearest_of(plan, checks, tier)
                est_nano = -(-(prompt_tokens * p.input + outputs * p.output + p.request) // NANO_PER_PICO)
        return await self._limiter.admit(checks, est_tokens, est_nano, self._clock())

    def _dearest_of(self, plan: Plan, checks: tuple[Check, ...], tier: str | None) -> ModelPrice:
        p = _dearest(self._pricer, plan, checks, tier)  # raises for an unpriced target: never kept
        if len(self._dearest) >= MAX_MEMO:
            self._dearest.clear()
        self._dearest[(plan.targets, tier)] = p
        return p

    def settle(self, res: Reservation | None, rec: RequestRecord) -> None:
        """Replace the reservation by what the request used (after the response).

        When the upstream never reported usage (a cut stream, estimated from its visible text: hidden reasoning
        is not in it), at least the reservation is charged; when only the price is unknown, the reported tokens
        count as they are and the spend is at least the reservation's."""
        if res is None or self._limiter is None:
            return
        tokens = sum(a.usage.total_tokens for a in rec.attempts if a.usage)
        pico, source = rec.cost
        nano = -(-(pico or 0) // NANO_PER_PICO)
        if source == ESTIMATED:
            tokens = max(tokens, res.est_tokens)
        if source in (ESTIMATED, UNPRICED):
            nano = max(nano, res.est_nano)
        pending = self._limiter.settle(res, tokens, nano)
        if pending is not None:
            self._later(pending)

"""Limits in this process: exact sliding windows for requests and tokens per minute, budgets with reservations.

Every check of a request is made before any is applied, on the event loop (no lock needed), so a request either
passes them all or changes nothing. Spend is reserved from an estimate at admission and replaced by the real cost
when the request ends, so concurrent requests cannot together overshoot a budget by more than one estimate.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Any

from relaycast.errors import LimitExceeded
from relaycast.limits.base import Check, Reservation, budget_message, period_bounds

WINDOW_S = 60.0
SpendLoader = Callable[[str, str, str], Awaitable[int]]  # (scope, name, period) -> nano-dollars spent so far


class MemoryLimiter:
    def __init__(self, load_spend: SpendLoader | None = None) -> None:
        self._load = load_spend
        self._requests: dict[tuple[str, str], collections.deque[float]] = {}
        self._tokens: dict[tuple[str, str], collections.deque[list[Any]]] = {}  # [ts, tokens, key]
        self._token_sums: dict[tuple[str, str], int] = {}
        self._budgets: dict[tuple[str, str, str], list[int]] = {}  # (scope, name, period id) -> [spent, reserved]
        self.rejected: collections.Counter[str] = collections.Counter()

    async def _budget(self, c: Check, period: str, now: float) -> tuple[list[int], float]:
        pid, left = period_bounds(now, period)
        key = (c.scope, c.name, pid)
        b = self._budgets.get(key)
        if b is None:
            spent = await self._load(c.scope, c.name, period) if self._load else 0
            b = self._budgets.setdefault(key, [spent, 0])
        return b, left

    async def admit(self, checks: tuple[Check, ...], est_tokens: int, est_nano: int, now: float) -> Reservation:
        budgets: list[list[int]] = []
        # Budgets first (their spend may need loading: an await), then the windows, with no await between
        # checking and applying.
        for c in checks:
            for period, limit in (("day", c.limits.budget_day_usd), ("month", c.limits.budget_month_usd)):
                if limit is None:
                    continue
                b, left = await self._budget(c, period, now)
                if b[0] + b[1] + est_nano > limit * 1e9:
                    self.rejected[f"budget_{period}"] += 1
                    raise LimitExceeded(budget_message(c, period, limit), limit=f"budget_{period}", retry_after_s=left)
                budgets.append(b)
        for c in checks:
            key = (c.scope, c.name)
            if c.limits.rpm is not None:
                q = self._requests.setdefault(key, collections.deque())
                while q and q[0] <= now - WINDOW_S:
                    q.popleft()
                if len(q) >= c.limits.rpm:
                    self.rejected["rpm"] += 1
                    raise LimitExceeded(
                        f"Rate limit reached for {c.label}: {c.limits.rpm} requests per minute.",
                        limit="rpm",
                        retry_after_s=q[0] + WINDOW_S - now,
                    )
            if c.limits.tpm is not None:
                q2 = self._tokens.setdefault(key, collections.deque())
                self._prune_tokens(key, q2, now)
                used = self._token_sums.get(key, 0)
                if used and used + est_tokens > c.limits.tpm:
                    self.rejected["tpm"] += 1
                    raise LimitExceeded(
                        f"Rate limit reached for {c.label}: {c.limits.tpm} tokens per minute "
                        f"({used} used, this request needs about {est_tokens}).",
                        limit="tpm",
                        retry_after_s=q2[0][0] + WINDOW_S - now,
                    )
        res = Reservation(checks=checks, est_tokens=est_tokens, est_nano=est_nano, now=now)
        for c in checks:
            key = (c.scope, c.name)
            if c.limits.rpm is not None:
                self._requests[key].append(now)
            if c.limits.tpm is not None:
                entry = [now, est_tokens, key]
                self._tokens[key].append(entry)
                self._token_sums[key] = self._token_sums.get(key, 0) + est_tokens
                res.entries.append(entry)  # settled in O(1), without searching the window
        for b in budgets:
            b[1] += est_nano
        res.budgets = budgets
        return res

    def _prune_tokens(self, key: tuple[str, str], q: collections.deque[list[Any]], now: float) -> None:
        while q and q[0][0] <= now - WINDOW_S:
            old = q.popleft()
            self._token_sums[key] -= old[1]
            old[2] = None

    def settle(self, res: Reservation, tokens: int, nano: int) -> None:
        """Synchronous: nothing to wait for in memory (no task per request)."""
        if res.settled:
            return
        res.settled = True
        for b in res.budgets:
            b[0] += nano
            b[1] -= res.est_nano
        for entry in res.entries:
            key = entry[2]
            if key is not None:  # still in the window (pruning clears it): the window's sum takes the real count
                self._token_sums[key] += tokens - entry[1]
                entry[1] = tokens

    def status(self) -> dict[str, Any]:
        return {"backend": "memory", "rejected": dict(self.rejected)}

    async def close(self) -> None:
        """Nothing to release: the counters live in this process."""

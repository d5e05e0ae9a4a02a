"""Limits in this process: sliding windows for requests and tokens per minute, budgets with reservations.

The windows are exact to SLOT_S: the requests admitted within SLOT_S of each other share one slot, which leaves the
window when the last of them is a minute old. A request may so count up to SLOT_S longer than a minute, never
shorter: with the clock given in order, more than the limit is never admitted in any minute. A scope holds at most
WINDOW_S / SLOT_S slots per window, whatever the rate (a log of every request held ~120 bytes per request for a
minute: 33 MB per limited key at 4,600 requests a second). Capacity lent to another process (`grant`, for the
workers of a host) counts as made at the grant's end, and so does the slot it shares with requests admitted here.

A request's budgets are loaded first (the spend so far comes from the store: an await); then every check is made
and, only if all pass, applied, with no await in between (no lock needed), so a request either passes them all
or changes nothing. Spend is reserved from an estimate at admission and replaced by the real cost when the request
ends, so concurrent requests cannot together overshoot a budget by more than one estimate.

State is kept per scope (a key, a user, a feature), for at most `max_scopes` of them: past that the least recently
used scope with nothing in flight is dropped (counted as `evicted`), and its budget is loaded from the store again
if it comes back. Client-chosen user names cannot grow it without bound.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from relaycast.errors import LimitExceeded
from relaycast.limits.base import Check, Periods, Reservation, budget_message, too_large

WINDOW_S = 60.0
SLOT_S = 0.1  # requests this close share a slot in a window (see above)
MAX_SCOPES = 10_000
MIN_GRANT = 4  # a grant for fewer requests is not made: such a scope is asked for every request
EVICT_TRIES = 16  # scopes in flight skipped at most, per eviction: past it the map grows by one (bounded by load)
SpendLoader = Callable[[str, str, str], Awaitable[int]]  # (scope, name, period) -> nano-dollars spent so far
Budget = tuple[str, str, float, float]  # (period, period id, seconds left, limit in USD)
NO_BUDGETS: tuple[Budget, ...] = ()


class _Scope:
    """One key's, user's or feature's windows and budgets."""

    __slots__ = ("requests", "request_count", "tokens", "token_sum", "budgets", "inflight")

    def __init__(self) -> None:
        # slots: [first ts, last ts, requests, scope or None once pruned]; grants point at theirs
        self.requests: collections.deque[list[Any]] | None = None
        self.request_count = 0  # the requests in the window
        # slots: [first ts, last ts, tokens, scope or None once pruned]; reservations point at theirs
        self.tokens: collections.deque[list[Any]] | None = None
        self.token_sum = 0
        self.budgets: dict[str, list[int]] = {}  # period id ("2025-11-01", "2025-11") -> [spent, reserved]
        self.inflight = 0  # reservations not yet settled: such a scope is never evicted

    def prune_requests(self, now: float) -> collections.deque[list[Any]]:
        q = self.requests
        if q is None:
            q = self.requests = collections.deque()
        while q and q[0][1] <= now - WINDOW_S:
            old = q.popleft()
            self.request_count -= old[2]
            old[3] = None
        return q

    def prune_tokens(self, now: float) -> collections.deque[list[Any]]:
        q = self.tokens
        if q is None:
            q = self.tokens = collections.deque()
        while q and q[0][1] <= now - WINDOW_S:
            old = q.popleft()
            self.token_sum -= old[2]
            old[3] = None
        return q

    def add_requests(self, now: float, count: int = 1, until: float = 0.0) -> list[Any]:
        """The slot that now holds `count` more requests, counted as made at `until` (a grant's end) if later."""
        q = self.requests
        assert q is not None
        self.request_count += count
        return _add(q, now, max(now, until), count, self)

    def add_tokens(self, now: float, tokens: int, until: float = 0.0) -> list[Any]:
        """The slot that now holds `tokens` more: a reservation settles its real count into it."""
        q = self.tokens
        assert q is not None
        self.token_sum += tokens
        return _add(q, now, max(now, until), tokens, self)

    def budget(self, pid: str, spent: int) -> list[int]:
        """The cell of a period, made from `spent` when new; a past period of the same kind is dropped."""
        b = self.budgets.get(pid)
        if b is None:
            for old in [p for p in self.budgets if len(p) == len(pid)]:
                del self.budgets[old]  # reservations still pointing at it settle into the detached cell
            b = self.budgets[pid] = [spent, 0]
        return b


class Grant:
    """Capacity lent to a worker for requests like one just admitted (`MemoryLimiter.grant`): what is still lent
    (`requests`, `tokens`, and `nano` reserved in its budgets), and the window slots and budget cells it is
    counted in."""

    __slots__ = ("requests", "tokens", "nano", "slots", "entries", "budgets", "scopes")

    def __init__(self, requests: int, tokens: int, nano: int) -> None:
        self.requests = requests
        self.tokens = tokens
        self.nano = nano
        self.slots: list[list[Any]] = []
        self.entries: list[list[Any]] = []
        self.budgets: list[list[int]] = []
        self.scopes: list[_Scope] = []


def _add(q: collections.deque[list[Any]], now: float, last_ts: float, n: int, s: _Scope) -> list[Any]:
    """Add `n` to the window `q` at `now`, in the last slot when it began within SLOT_S; it counts until `last_ts`
    is a minute old."""
    last = q[-1] if q else None
    if last is not None and now - last[0] < SLOT_S:
        if last_ts > last[1]:
            last[1] = last_ts
        last[2] += n
    else:
        last = [now, last_ts, n, s]
        q.append(last)
    return last


class MemoryLimiter:
    def __init__(self, load_spend: SpendLoader | None = None, max_scopes: int = MAX_SCOPES) -> None:
        self._load = load_spend
        self._max = max_scopes
        self._scopes: collections.OrderedDict[tuple[str, str], _Scope] = collections.OrderedDict()
        self.rejected: collections.Counter[str] = collections.Counter()
        self.evicted = 0
        self._periods = Periods()
        self._ids = itertools.count(1)  # reservation ids: unique in this limiter, which is all they need to be

    def _budgets_of(self, c: Check, now: float) -> Sequence[Budget]:
        """(period, period id, seconds left, limit in USD) for each budget of a check."""
        day, month = c.limits.budget_day_usd, c.limits.budget_month_usd
        if day is None and month is None:
            return NO_BUDGETS
        out = []
        if day is not None:
            pid, left = self._periods.bounds(now, "day")
            out.append(("day", pid, left, day))
        if month is not None:
            pid, left = self._periods.bounds(now, "month")
            out.append(("month", pid, left, month))
        return out

    async def _load_missing(
        self, checks: tuple[Check, ...], periods: list[Sequence[Budget]]
    ) -> dict[tuple[str, str, str], int]:
        """The store's spend for every budget cell not in memory. A cell may be evicted while another is loaded,
        so look again after loading: the second pass finds only cells dropped meanwhile, and a third finds none."""
        loaded: dict[tuple[str, str, str], int] = {}
        while True:
            missing = self._missing(checks, periods, loaded)
            if not missing:
                return loaded
            for c, period, k in missing:
                loaded[k] = await self._load(c.scope, c.name, period) if self._load else 0

    def _missing(
        self, checks: tuple[Check, ...], periods: list[Sequence[Budget]], loaded: dict[tuple[str, str, str], int]
    ) -> list[tuple[Check, str, tuple[str, str, str]]]:
        """The budget cells neither in memory nor in `loaded`: (check, period, (scope, name, period id))."""
        missing = []
        for c, of_c in zip(checks, periods, strict=True):
            s = self._scopes.get((c.scope, c.name))
            for period, pid, _, _ in of_c:
                k = (c.scope, c.name, pid)
                if (s is None or pid not in s.budgets) and k not in loaded:
                    missing.append((c, period, k))
        return missing

    def _scope(self, key: tuple[str, str]) -> _Scope:
        s = self._scopes.get(key)
        if s is not None:
            self._scopes.move_to_end(key)
            return s
        if len(self._scopes) >= self._max:
            self._evict()
        s = self._scopes[key] = _Scope()
        return s

    def _evict(self) -> None:
        for _ in range(min(EVICT_TRIES, len(self._scopes))):
            key, s = next(iter(self._scopes.items()))
            if s.inflight:
                self._scopes.move_to_end(key)  # its reservations must stay counted
                continue
            del self._scopes[key]
            for q in (s.requests, s.tokens):
                for entry in q or ():
                    entry[3] = None  # the slots point back at it: break the cycle so it is freed now
            self.evicted += 1
            return

    async def admit(self, checks: tuple[Check, ...], est_tokens: int, est_nano: int, now: float) -> Reservation:
        self._refuse_too_large(checks, est_tokens)
        periods = [self._budgets_of(c, now) for c in checks]
        loaded: dict[tuple[str, str, str], int] = {}
        if any(periods) and self._missing(checks, periods, loaded):  # usually all in memory: no await
            loaded = await self._load_missing(checks, periods)
        return self._decide(checks, periods, loaded, est_tokens, est_nano, now)

    def admit_now(self, checks: tuple[Check, ...], est_tokens: int, est_nano: int, now: float) -> Reservation | None:
        """`admit` without an await, when it needs none (every budget cell in memory, as nearly always): the
        reservation, or its refusal raised. None, having changed nothing, when a budget must be loaded first."""
        periods = [self._budgets_of(c, now) for c in checks]
        if any(periods) and self._missing(checks, periods, {}):
            return None
        self._refuse_too_large(checks, est_tokens)
        return self._decide(checks, periods, {}, est_tokens, est_nano, now)

    def _refuse_too_large(self, checks: tuple[Check, ...], est_tokens: int) -> None:
        big = too_large(checks, est_tokens)
        if big is not None:
            self.rejected["tpm_request_too_large"] += 1
            raise big

    def _decide(
        self,
        checks: tuple[Check, ...],
        periods: list[Sequence[Budget]],
        loaded: dict[tuple[str, str, str], int],
        est_tokens: int,
        est_nano: int,
        now: float,
    ) -> Reservation:
        """Every check first, then every change, with no await: a request passes them all or changes nothing."""
        if len(checks) > 1:  # this request's scopes are the most recent: making room for one never evicts another
            for c in checks:
                if (c.scope, c.name) in self._scopes:
                    self._scopes.move_to_end((c.scope, c.name))
        scopes = [self._scope((c.scope, c.name)) for c in checks]
        budgets: list[list[int]] = []
        for c, s, of_c in zip(checks, scopes, periods, strict=True):
            for period, pid, left, limit in of_c:
                b = s.budget(pid, loaded.get((c.scope, c.name, pid), 0))
                if b[0] + b[1] + est_nano > limit * 1e9:
                    self.rejected[f"budget_{period}"] += 1
                    raise LimitExceeded(budget_message(c, period, limit), limit=f"budget_{period}", retry_after_s=left)
                budgets.append(b)
            lim = c.limits
            if lim.rpm is not None:
                q = s.prune_requests(now)
                if s.request_count >= lim.rpm:
                    self.rejected["rpm"] += 1
                    raise LimitExceeded(
                        f"Rate limit reached for {c.label}: {lim.rpm} requests per minute.",
                        limit="rpm",
                        retry_after_s=q[0][1] + WINDOW_S - now,
                    )
            if lim.tpm is not None:
                q2 = s.prune_tokens(now)
                if s.token_sum + est_tokens > lim.tpm:
                    self.rejected["tpm"] += 1
                    raise LimitExceeded(
                        f"Rate limit reached for {c.label}: {lim.tpm} tokens per minute "
                        f"({s.token_sum} used, this request needs about {est_tokens}).",
                        limit="tpm",
                        retry_after_s=q2[0][1] + WINDOW_S - now if q2 else 1,
                    )
        entries = []
        for c, s in zip(checks, scopes, strict=True):
            if c.limits.rpm is not None:
                s.add_requests(now)
            if c.limits.tpm is not None:
                entries.append(s.add_tokens(now, est_tokens))  # settled in O(1), without searching the window
            s.inflight += 1
        for b in budgets:
            b[1] += est_nano
        return Reservation(
            checks,
            est_tokens,
            est_nano,
            now,
            id=f"{next(self._ids):x}",
            budgets=budgets,
            entries=entries,
            scopes=scopes,
        )

    def settle(self, res: Reservation, tokens: int, nano: int) -> None:
        """Synchronous: nothing to wait for in memory (no task per request)."""
        if res.settled:
            return
        res.settled = True
        for b in res.budgets:
            b[0] += nano
            b[1] -= res.est_nano
        for entry in res.entries:
            s = entry[3]
            if s is not None:  # still in the window (pruning clears it): the window's sum takes the real count
                entry[2] += tokens - res.est_tokens
                s.token_sum += tokens - res.est_tokens
        for s in res.scopes:
            s.inflight -= 1

    # --- grants: capacity lent to a worker of the host (relaycast.limits.host) -------------------------

    def grant(
        self,
        checks: tuple[Check, ...],
        count: int,
        est_tokens: int,
        est_nano: int,
        now: float,
        until: float,
        share: int,
    ) -> Grant | None:
        """Capacity for up to `count` more requests with these estimates, to be admitted elsewhere until `until`;
        only while every limit is far from reached: a grant takes at most 1/`share` of what each has left, and
        none is made for fewer than MIN_GRANT requests (near a limit, every request is decided here, exactly).
        It is counted at once as if all its requests were made at `until`, so none of them leaves a window sooner
        than it would have. None, changing nothing, when too little is left, a budget is not in memory, or a
        budget's period ends before `until` (its spend would count in the wrong period)."""
        k = count
        for c in checks:
            s = self._scopes.get((c.scope, c.name))
            if s is None:
                return None
            for _, pid, left, limit in self._budgets_of(c, now):
                b = s.budgets.get(pid)
                if b is None or left <= until - now:
                    return None
                if est_nano:
                    k = min(k, int((limit * 1e9 - b[0] - b[1]) // (share * est_nano)))
            lim = c.limits
            if lim.rpm is not None:
                s.prune_requests(now)
                k = min(k, (lim.rpm - s.request_count) // share)
            if lim.tpm is not None and est_tokens:
                s.prune_tokens(now)
                k = min(k, (lim.tpm - s.token_sum) // (share * est_tokens))
            if k < MIN_GRANT:
                return None
        g = Grant(k, k * est_tokens, k * est_nano)
        for c in checks:
            s = self._scopes[(c.scope, c.name)]
            if c.limits.rpm is not None:
                g.slots.append(s.add_requests(now, k, until))
            if c.limits.tpm is not None:
                g.entries.append(s.add_tokens(now, g.tokens, until))
            for _, pid, _, _ in self._budgets_of(c, now):
                b = s.budgets[pid]
                b[1] += g.nano
                g.budgets.append(b)
            s.inflight += 1
            g.scopes.append(s)
        return g

    def give_back(
        self, g: Grant, requests: int, tokens: int, nano: int, token_delta: int, spent: int, settled: int
    ) -> None:
        """What a grant's worker reports: the `requests`, `tokens` and `nano` it will not use (no longer counted),
        and for the requests it admitted under the grant that have ended: their tokens beyond their estimates
        (`token_delta`, negative when fewer), what they spent and what they had reserved (`settled`)."""
        requests = max(0, min(requests, g.requests))
        tokens = max(0, min(tokens, g.tokens))
        nano = max(0, min(nano + settled, g.nano))
        g.requests -= requests
        g.tokens -= tokens
        g.nano -= nano
        for slot in g.slots:
            s = slot[3]
            if s is not None:  # still in the window
                slot[2] -= requests
                s.request_count -= requests
        delta = token_delta - tokens
        for entry in g.entries:
            s = entry[3]
            if s is not None:
                entry[2] += delta
                s.token_sum += delta
        for b in g.budgets:
            b[0] += max(0, spent)
            b[1] -= nano

    def end_grant(self, g: Grant, charge: bool) -> None:
        """The grant is over: its scopes may be evicted again. `charge`: its worker is gone, so what is still
        reserved in its budgets is counted as spent (what its requests used is unknown)."""
        if charge:
            for b in g.budgets:
                b[0] += g.nano
                b[1] -= g.nano
            g.nano = 0
        for s in g.scopes:
            s.inflight -= 1
        g.scopes = []

    def status(self) -> dict[str, Any]:
        return {
            "backend": "memory",
            "rejected": dict(self.rejected),
            "scopes": len(self._scopes),
            "evicted": self.evicted,
        }

    async def close(self) -> None:
        """Nothing to release: the counters live in this process."""

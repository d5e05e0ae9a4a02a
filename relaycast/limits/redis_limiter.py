"""Limits in Redis, shared by every replica: one Lua script checks every limit of a request and, only if all
pass, records it, atomically; so N replicas together admit N requests per minute for a limit of N, and budget
reservations from all replicas add up in one place.

Keys (`relaycast:` prefix, each with an expiry so nothing is left behind):
  rl:{scope}:{name}:rpm              sorted set of request ids scored by time (exact sliding minute)
  rl:{scope}:{name}:tpm:{minute}     tokens counted in one clock minute (sliding-window counter over two)
  rl:{scope}:{name}:budget:{period}  hash {spent, reserved} in nano-dollars, seeded from the store's spend

Settlements (the real cost and tokens replacing the estimates) are summed per key and sent together every 50 ms,
so a request costs one round trip to Redis, not two.

When Redis cannot answer within `redis_timeout_ms`: a request with a budget is refused with 503 unless
`budgets_on_redis_error: open`; any other is refused with 503 under `on_redis_error: closed`, and under `open`
(the default) checked against this replica's own in-memory limits, as if it were alone, until Redis answers again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from relaycast.errors import LimiterUnavailable, LimitExceeded
from relaycast.limits.base import Check, Periods, Reservation, budget_message, too_large
from relaycast.limits.memory import MemoryLimiter
from relaycast.limits.settings import LimitsConfig
from relaycast.log import EventLog
from relaycast.redis import RedisReplyError, RespClient

PREFIX = "relaycast:rl:"
SETTLE_EVERY_S = 0.05  # settlements are summed and sent together this often: one round trip for many requests
SpendLoader = Callable[[str, str, str], Awaitable[int]]

# ARGV: now_ms, request id, est_tokens, est_nano, n, then per check: base, rpm, tpm, day_limit, day_id, day_ttl,
# day_seed, month_limit, month_id, month_ttl, month_seed (0 = no limit; seed -1 = not loaded, treated as 0).
ADMIT = """
local now = tonumber(ARGV[1]); local rid = ARGV[2]; local est_t = tonumber(ARGV[3]); local est_n = tonumber(ARGV[4])
local n = tonumber(ARGV[5]); local minute = math.floor(now / 60000); local frac = (now % 60000) / 60000
for i = 0, n - 1 do
  local o = 6 + i * 11; local base = ARGV[o]
  local rpm = tonumber(ARGV[o + 1]); local tpm = tonumber(ARGV[o + 2])
  if rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', base .. ':rpm', '-inf', now - 60000)
    if redis.call('ZCARD', base .. ':rpm') >= rpm then
      local oldest = redis.call('ZRANGE', base .. ':rpm', 0, 0, 'WITHSCORES')
      return {0, i, 'rpm', tonumber(oldest[2]) + 60000 - now}
    end
  end
  if tpm > 0 then
    local cur = tonumber(redis.call('GET', base .. ':tpm:' .. minute) or '0')
    local prev = tonumber(redis.call('GET', base .. ':tpm:' .. (minute - 1)) or '0')
    local used = cur + prev * (1 - frac)
    if used > 0 and used + est_t > tpm then return {0, i, 'tpm', 60000 - (now % 60000)} end
  end
  for p = 0, 1 do
    local limit = tonumber(ARGV[o + 3 + p * 4])
    if limit > 0 then
      local key = base .. ':budget:' .. ARGV[o + 4 + p * 4]
      if redis.call('EXISTS', key) == 0 then
        local seed = tonumber(ARGV[o + 6 + p * 4])
        if seed < 0 then return {-1, i, p == 0 and 'budget_day' or 'budget_month', 0} end
        redis.call('HSET', key, 'spent', seed, 'reserved', 0)
        redis.call('EXPIRE', key, tonumber(ARGV[o + 5 + p * 4]))
      end
      local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
      local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
      if spent + reserved + est_n > limit then return {0, i, p == 0 and 'budget_day' or 'budget_month', 0} end
    end
  end
end
for i = 0, n - 1 do
  local o = 6 + i * 11; local base = ARGV[o]
  if tonumber(ARGV[o + 1]) > 0 then
    redis.call('ZADD', base .. ':rpm', now, rid); redis.call('PEXPIRE', base .. ':rpm', 61000)
  end
  if tonumber(ARGV[o + 2]) > 0 then
    redis.call('INCRBY', base .. ':tpm:' .. minute, est_t); redis.call('PEXPIRE', base .. ':tpm:' .. minute, 125000)
  end
  for p = 0, 1 do
    if tonumber(ARGV[o + 3 + p * 4]) > 0 then
      redis.call('HINCRBY', base .. ':budget:' .. ARGV[o + 4 + p * 4], 'reserved', est_n)
    end
  end
end
return {1, minute}
"""


def _base(c: Check) -> str:
    return f"{PREFIX}{c.scope}:{c.name}"


class RedisLimiter:
    def __init__(self, cfg: LimitsConfig, log: EventLog, load_spend: SpendLoader | None = None) -> None:
        assert cfg.redis_url is not None
        self.cfg = cfg
        self._log = log
        self._load = load_spend
        self._redis = RespClient(cfg.redis_url, cfg.redis_timeout_s)
        self._sha = hashlib.sha1(ADMIT.encode()).hexdigest()
        self._local = MemoryLimiter(load_spend, cfg.max_scopes)  # while Redis cannot answer, with `open`
        self.rejected: collections.Counter[str] = collections.Counter()
        self.redis_errors = 0
        self.admitted_open = 0
        self._last_error_log = 0.0
        self._settlements: dict[tuple[str, str], int] = {}  # (key, hash field or "") -> delta, not yet sent
        self._flusher: asyncio.Task[None] | None = None
        self._periods = Periods()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()
        await self._redis.close()

    async def _run_admit(self, argv: list[Any]) -> Any:
        try:
            return await self._redis.call("EVALSHA", self._sha, 0, *argv)
        except RedisReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
            await self._redis.call("SCRIPT", "LOAD", ADMIT)  # a new or restarted Redis: load the script once
            return await self._redis.call("EVALSHA", self._sha, 0, *argv)

    def _argv(
        self, checks: tuple[Check, ...], res: Reservation, now: float, seeds: dict[tuple[int, str], int]
    ) -> list[Any]:
        argv: list[Any] = [int(now * 1000), res.id, res.est_tokens, res.est_nano, len(checks)]
        for i, c in enumerate(checks):
            argv += [_base(c), c.limits.rpm or 0, c.limits.tpm or 0]
            for period, limit in (("day", c.limits.budget_day_usd), ("month", c.limits.budget_month_usd)):
                pid, left = self._periods.bounds(now, period)
                argv += [int(limit * 1e9) if limit else 0, pid, int(left) + 86400, seeds.get((i, period), -1)]
        return argv

    async def admit(self, checks: tuple[Check, ...], est_tokens: int, est_nano: int, now: float) -> Reservation:
        big = too_large(checks, est_tokens)
        if big is not None:
            self.rejected["tpm_request_too_large"] += 1
            raise big
        res = Reservation(checks=checks, est_tokens=est_tokens, est_nano=est_nano, now=now, id=secrets.token_hex(8))
        seeds: dict[tuple[int, str], int] = {}
        try:
            for _attempt in range(2):
                out = await self._run_admit(self._argv(checks, res, now, seeds))
                if int(out[0]) != -1:
                    break
                # A budget this Redis has not seen this period: seed it from the store's spend, then ask again.
                # (Not remembered here: once seeded, Redis has it until the period ends.)
                for i, c in enumerate(checks):
                    for period, limit in (("day", c.limits.budget_day_usd), ("month", c.limits.budget_month_usd)):
                        if limit:
                            seeds[(i, period)] = await self._load(c.scope, c.name, period) if self._load else 0
        except Exception as e:
            if not _is_redis_error(e):
                raise
            return await self._unavailable(e, checks, res)
        if int(out[0]) == 1:
            res.minute = int(out[1])
            res.budgets = [
                (f"{_base(c)}:budget:{self._periods.bounds(now, p)[0]}")
                for c in checks
                for p, lim in (("day", c.limits.budget_day_usd), ("month", c.limits.budget_month_usd))
                if lim
            ]
            return res
        c = checks[int(out[1])]
        which = out[2].decode() if isinstance(out[2], bytes) else str(out[2])
        self.rejected[which] += 1
        if which == "rpm":
            raise LimitExceeded(
                f"Rate limit reached for {c.label}: {c.limits.rpm} requests per minute.",
                limit="rpm",
                retry_after_s=float(out[3]) / 1000,
            )
        if which == "tpm":
            raise LimitExceeded(
                f"Rate limit reached for {c.label}: {c.limits.tpm} tokens per minute.",
                limit="tpm",
                retry_after_s=float(out[3]) / 1000,
            )
        period = "day" if which == "budget_day" else "month"
        limit = c.limits.budget_day_usd if period == "day" else c.limits.budget_month_usd
        raise LimitExceeded(
            budget_message(c, period, limit or 0), limit=which, retry_after_s=self._periods.bounds(now, period)[1]
        )

    async def _unavailable(self, e: BaseException, checks: tuple[Check, ...], res: Reservation) -> Reservation:
        self.redis_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 5:
            self._last_error_log = now
            self._log.error(
                "limiter_redis_unavailable",
                mode=self.cfg.on_redis_error,
                error=type(e).__name__,
                errors_so_far=self.redis_errors,
            )
        if self.cfg.on_redis_error == "closed":
            raise LimiterUnavailable(
                "Rate limits cannot be checked (Redis is unreachable) and the gateway is set to fail closed."
            )
        budgeted = any(c.limits.budget_day_usd or c.limits.budget_month_usd for c in checks)
        if budgeted and self.cfg.budgets_on_redis_error == "closed":
            raise LimiterUnavailable(
                "Budgets cannot be checked (Redis is unreachable) and budgets fail closed "
                "(limits.budgets_on_redis_error)."
            )
        local = await self._local.admit(checks, res.est_tokens, res.est_nano, res.now)
        local.local = True
        self.admitted_open += 1
        return local

    def settle(self, res: Reservation, tokens: int, nano: int) -> None:
        """Queue the settlement; a background task sends the queued ones in one pipeline every SETTLE_EVERY_S.
        Until then the reservation (the estimate) stands in Redis, so the budget guarantee holds meanwhile."""
        if res.local:
            self._local.settle(res, tokens, nano)
            return
        if res.settled:
            return
        res.settled = True
        ops = self._settlements
        for key in res.budgets:
            ops[(key, "spent")] = ops.get((key, "spent"), 0) + nano
            ops[(key, "reserved")] = ops.get((key, "reserved"), 0) - res.est_nano
        if tokens != res.est_tokens:
            for c in res.checks:
                if c.limits.tpm:
                    k = (f"{_base(c)}:tpm:{res.minute}", "")
                    ops[k] = ops.get(k, 0) + tokens - res.est_tokens
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(SETTLE_EVERY_S)
        await self.flush()

    async def flush(self) -> None:
        ops, self._settlements = self._settlements, {}
        if not ops:
            return
        commands = [
            ("HINCRBY", key, field, delta) if field else ("INCRBY", key, delta)
            for (key, field), delta in ops.items()
            if delta
        ]
        try:
            await self._redis.pipeline(commands)
        except Exception as e:
            if not _is_redis_error(e):
                raise
            self.redis_errors += 1
            self._log.error("limiter_settle_failed", error=type(e).__name__, pending_settlements=len(ops))

    def status(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "on_redis_error": self.cfg.on_redis_error,
            "budgets_on_redis_error": self.cfg.budgets_on_redis_error,
            "rejected": dict(self.rejected),
            "redis_errors": self.redis_errors,
            "admitted_while_redis_down": self.admitted_open,
            "while_redis_down": self._local.status(),  # this replica's own limits, used only then
        }


def _is_redis_error(e: BaseException) -> bool:
    return isinstance(e, (RedisReplyError, OSError, TimeoutError))

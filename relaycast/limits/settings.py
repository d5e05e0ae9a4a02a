"""The `limits:` section of the config, and the Redis replicas share.

    redis_url: redis://127.0.0.1:6379/0     # top level: the one Redis, for limits and shared routing health
    limits:
      on_redis_error: open                   # open: this replica's own limits | closed: refuse with 503
      budgets_on_redis_error: closed         # closed: budgeted requests get 503 | open: this replica's budgets
      redis_timeout_ms: 200
      per_user: {rpm: 30, budget_day_usd: 5}  # the same limits for every user (the `user` field or header)
      per_feature: {tpm: 200000}
      require_user: false                    # true: a request that names no user (nor its key) gets 400
      default_max_tokens: 4096               # set upstream when a token or budget limit applies and none was sent
      max_scopes: 10000                      # users, features and keys whose limits a process keeps in memory

Without a Redis, limits are kept in this process and routing health is not shared. The URL may also be given as
$RELAYCAST_REDIS_URL, or as `limits.redis_url` (accepted, and taken first when both are set). Per-key limits live
on the key (config `keys:` entries or `relaycast keys create --rpm ...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.keys.policy import LIMIT_FIELDS, Limits

_FIELDS = {
    "redis_url",
    "on_redis_error",
    "budgets_on_redis_error",
    "redis_timeout_ms",
    "per_user",
    "per_feature",
    "require_user",
    "default_max_tokens",
    "max_scopes",
}


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    redis_url: str | None = field(default=None, repr=False)
    on_redis_error: str = "open"  # rpm and tpm while Redis cannot answer: "open" counts them in this process
    budgets_on_redis_error: str = "closed"  # budgets while Redis cannot answer: "open" keeps them in this process
    redis_timeout_s: float = 0.2
    per_user: Limits = field(default_factory=Limits)
    per_feature: Limits = field(default_factory=Limits)
    require_user: bool = False
    default_max_tokens: int = 4096  # Anthropic's mapping uses the same when a client sends none
    max_scopes: int = 10_000

    def secrets(self) -> tuple[str, ...]:
        from urllib.parse import urlsplit

        if self.redis_url:
            pw = urlsplit(self.redis_url).password
            if pw:
                return (pw,)
        return ()


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return scheme[:20] if sep else "(none)"


def _mode(r: Reader, raw: Any, where: str) -> str:
    mode = r.string(raw, where)
    if mode not in ("open", "closed"):
        raise ConfigError(where, f"must be 'open' or 'closed', got '{mode}'")
    return mode


def parse_limits(r: Reader, raw: Any, env: dict[str, str] | Any, root_redis_url: Any = None) -> LimitsConfig:
    """The limits, and the one Redis for limits and the routing health replicas share: `limits.redis_url`, else the
    top-level `redis_url` (`root_redis_url`), else $RELAYCAST_REDIS_URL."""
    m = r.mapping(raw or {}, "limits", _FIELDS)
    url = m.get("redis_url") or root_redis_url or env.get("RELAYCAST_REDIS_URL") or None
    where = "limits.redis_url" if m.get("redis_url") else "redis_url" if root_redis_url else "$RELAYCAST_REDIS_URL"
    if url is not None:
        url = r.string(url, where)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            # The scheme only: the rest of the URL may hold a password.
            raise ConfigError(where, f"must be a redis:// (or rediss://, unix://) URL, got scheme '{_scheme(url)}'")
    mode = _mode(r, m.get("on_redis_error", "open"), "limits.on_redis_error")
    budgets_mode = _mode(r, m.get("budgets_on_redis_error", "closed"), "limits.budgets_on_redis_error")
    if budgets_mode == "open" and mode == "closed":
        raise ConfigError(
            "limits.budgets_on_redis_error", "'open' needs on_redis_error: open (budgets cannot be kept alone)"
        )
    out: dict[str, Limits] = {}
    for k in ("per_user", "per_feature"):
        sub = r.mapping(m.get(k) or {}, f"limits.{k}", set(LIMIT_FIELDS))
        try:
            out[k] = Limits.parse(sub, f"limits.{k}")
        except ValueError as e:
            where, _, problem = str(e).partition(": ")
            raise ConfigError(where, problem) from None
    return LimitsConfig(
        redis_url=url,
        on_redis_error=mode,
        budgets_on_redis_error=budgets_mode,
        redis_timeout_s=r.integer(m.get("redis_timeout_ms", 200), "limits.redis_timeout_ms", 1, 60_000) / 1000,
        per_user=out["per_user"],
        per_feature=out["per_feature"],
        require_user=r.boolean(m.get("require_user", False), "limits.require_user"),
        default_max_tokens=r.integer(m.get("default_max_tokens", 4096), "limits.default_max_tokens", 1, 2**31 - 1),
        max_scopes=r.integer(m.get("max_scopes", 10_000), "limits.max_scopes", 100, 10_000_000),
    )

"""Gateway keys from the config (`keys:` and `admin_key:`): names, SHA-256 of the secret, and their policies."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.keys.policy import LIMIT_FIELDS, KeyPolicy, Limits


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class GatewayKey:
    name: str
    sha256: str = field(repr=False)
    policy: KeyPolicy = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.policy is None:
            object.__setattr__(self, "policy", KeyPolicy(name=self.name))


def parse_keys(r: Reader, raw: Any) -> tuple[GatewayKey, ...]:
    if raw is None:
        return ()
    out = []
    for i, item in enumerate(r.sequence(raw, "keys")):
        at = f"keys[{i}]"
        m = r.mapping(
            item, at, {"name", "secret", "sha256", "models", "user", "feature", "pin", "owner", *LIMIT_FIELDS}
        )
        name = r.string(r.required(m, "name", at), f"{at}.name")
        sha = secret_or_hash(r, {k: m[k] for k in ("secret", "sha256") if k in m}, at)
        models = None
        if m.get("models") is not None:
            models = tuple(r.string(x, f"{at}.models") for x in r.sequence(m["models"], f"{at}.models"))
        try:
            limits = Limits.parse(m, at)
        except ValueError as e:
            where, _, problem = str(e).partition(": ")
            raise ConfigError(where, problem) from None
        user = r.string(m["user"], f"{at}.user") if m.get("user") else None
        feature = r.string(m["feature"], f"{at}.feature") if m.get("feature") else None
        pin = r.boolean(m.get("pin", False), f"{at}.pin")
        if pin and user is None and feature is None:
            raise ConfigError(f"{at}.pin", "pins the key's user and feature: give 'user' or 'feature' (or both)")
        policy = KeyPolicy(
            name=name,
            source="config",
            owner=m.get("owner"),
            models=models,
            user=user,
            feature=feature,
            pin=pin,
            limits=limits,
        )
        out.append(GatewayKey(name=name, sha256=sha, policy=policy))
    names = [k.name for k in out]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"keys[{i}].name", f"duplicate key name '{n}'")
    return tuple(out)


def secret_or_hash(r: Reader, raw: Any, at: str, min_len: int = 8, why: str = "") -> str:
    if isinstance(raw, str):
        raw = {"secret": raw}
    m = r.mapping(raw, at, {"name", "secret", "sha256"})
    if ("secret" in m) == ("sha256" in m):
        raise ConfigError(at, "give exactly one of 'secret' (usually ${ENV_VAR}) or 'sha256'")
    if "sha256" in m:
        h = r.string(m["sha256"], f"{at}.sha256").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", h):
            raise ConfigError(f"{at}.sha256", "must be 64 hex digits")
        return h
    secret = r.string(m["secret"], f"{at}.secret")
    if len(secret) < min_len:
        raise ConfigError(f"{at}.secret", f"must be at least {min_len} characters{why}")
    return hash_secret(secret)

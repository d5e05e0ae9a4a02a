"""What a gateway key may do: its models, attribution and limits. Shared by config keys and virtual keys."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:  # only a type: this module imports nothing of relaycast at run time
    from relaycast.records import Attribution


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (prompt + completion)
    budget_day_usd: float | None = None  # spend per UTC day
    budget_month_usd: float | None = None  # spend per UTC month

    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.budgeted()

    def budgeted(self) -> bool:
        return self.budget_day_usd is not None or self.budget_month_usd is not None

    def doc(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget_day_usd": self.budget_day_usd,
            "budget_month_usd": self.budget_month_usd,
        }

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> Limits:
        out: dict[str, Any] = {}
        for k in ("rpm", "tpm"):
            v = raw.get(k)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"{where}.{k}: must be a whole number of at least 1, got {v!r}")
                out[k] = v
        for k in ("budget_day_usd", "budget_month_usd"):
            v = raw.get(k)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                    raise ValueError(f"{where}.{k}: must be an amount of US dollars above 0, got {v!r}")
                out[k] = float(v)
        return cls(**out)


LIMIT_FIELDS = ("rpm", "tpm", "budget_day_usd", "budget_month_usd")


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    name: str
    source: str = "config"  # config | store
    owner: str | None = None
    models: tuple[str, ...] | None = None  # allowed models / routes (shell patterns: "openai/*"); None: all
    user: str | None = None  # default attribution when the request names none
    feature: str | None = None
    pin: bool = False  # the key's user and feature (those it sets) replace whatever the request says
    tags: tuple[tuple[str, str], ...] = ()
    limits: Limits = field(default_factory=Limits)
    expires_ms: int | None = None
    revoked_ms: int | None = None

    def allows(self, model: str) -> bool:
        if self.models is None:
            return True
        return any(m == model or fnmatch.fnmatchcase(model, m) for m in self.models)

    def attribute(self, a: Attribution) -> Attribution:
        """The request's attribution under this key: the key's name; its user, feature and tags where the request
        gave none, or always for the user and feature a pinning key sets (per-user and per-feature limits then
        count what the key says, not what its client claims)."""
        tags = a.tags
        if self.tags:
            tags = tuple({**dict(self.tags), **dict(a.tags)}.items())
        if self.pin:
            user, feature = self.user or a.user, self.feature or a.feature
        else:
            user, feature = a.user or self.user, a.feature or self.feature
        return msgspec.structs.replace(a, key_name=self.name, user=user, feature=feature, tags=tags)

"""Reading raw YAML values into typed settings, with ${ENV} expansion and exact error places.

Every subsystem's `settings.py` imports only this module from the config root: `Reader` for typed access, and
`ConfigError` for a problem with its place, e.g. `models[2].targets[0]: unknown provider 'opnai'`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    def __init__(self, where: str, problem: str, source: str | None = None) -> None:
        self.where = where
        self.problem = problem
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{where}: {problem}" if where else f"{prefix}{problem}")


class Reader:
    """Typed access to raw YAML values, with ${ENV} expansion of strings and exact error places."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def expand(self, value: str, at: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            raise ConfigError(at, f"environment variable {name} is not set")

        return ENV_REF.sub(sub, value)

    def mapping(self, v: Any, at: str, allowed: set[str] | None) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise ConfigError(at, f"expected a mapping, got {kind(v)}")
        if allowed is not None:
            for k in v:
                if k not in allowed:
                    raise ConfigError(
                        f"{at}.{k}" if at else str(k),
                        f"unknown setting{did_you_mean(k, allowed)} (expected one of: {', '.join(sorted(allowed))})",
                    )
        return v

    def sequence(self, v: Any, at: str) -> list[Any]:
        if not isinstance(v, list):
            raise ConfigError(at, f"expected a list, got {kind(v)}")
        return v

    def required(self, m: dict[str, Any], key: str, at: str) -> Any:
        if m.get(key) is None:
            raise ConfigError(f"{at}.{key}", "is required")
        return m[key]

    def string(self, v: Any, at: str) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(at, f"expected a string, got {kind(v)}")
        return self.expand(str(v), at)

    def integer(self, v: Any, at: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(v, str):
            v = self.expand(v, at)
            try:
                v = int(v)
            except ValueError:
                raise ConfigError(at, f"expected an integer, got '{v}'") from None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(at, f"expected an integer, got {kind(v)}")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise ConfigError(at, f"{v} is out of range [{lo}, {hi if hi is not None else '∞'}]")
        return v

    def number(self, v: Any, at: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(at, f"expected a positive number of seconds, got {v!r}")
        return float(v)

    def boolean(self, v: Any, at: str) -> bool:
        if not isinstance(v, bool):
            raise ConfigError(at, f"expected true or false, got {kind(v)}")
        return v


def did_you_mean(given: object, choices: Iterable[str]) -> str:
    """`"; did you mean 'strategy'?"` when `given` is a near miss of one of `choices`, else "": for a message that
    refuses a name, e.g. `unknown strategy 'fallbak'; did you mean 'fallback'? (expected one of: ...)`."""
    guess = closest(given, choices)
    return f"; did you mean '{guess}'?" if guess else ""


def closest(given: object, choices: Iterable[str]) -> str | None:
    """The one of `choices` that `given` most likely misspells (difflib), or None when none is close."""
    if not isinstance(given, str) or not given:
        return None
    options = sorted(set(choices))
    close = difflib.get_close_matches(given, options, n=1, cutoff=0.6)
    if not close:  # a case slip: `OpenAI` for `openai`
        close = [c for c in options if c.lower() == given.lower()][:1]
    return close[0] if close else None


def kind(v: Any) -> str:
    if v is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"'{v}'", bool: str(v).lower()}.get(type(v), repr(v))

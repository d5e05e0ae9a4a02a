"""Provider settings: `providers:` in the config, parsed into frozen `ProviderConfig`s (with their timeouts)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.providers.presets import PRESETS
from relaycast.redact import header_secrets, url_secrets


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    first_token_s: float = 120.0  # until the response starts (headers, or the first stream event)
    idle_s: float = 120.0  # between two stream reads
    total_s: float = 600.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str  # a preset name
    adapter: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    models: tuple[str, ...] = ()
    timeouts: Timeouts = Timeouts()

    def secrets(self) -> tuple[str, ...]:
        """For the redactor: the API key, every credential header's value whatever its length (by name:
        authorization, api-key, cookie, ...; see `redact.secret_name`), and a password or token in `base_url`."""
        headers = (s for k, v in self.headers for s in header_secrets(k, v))
        return tuple(s for s in (self.api_key, *headers, *url_secrets(self.base_url)) if s)


def parse_providers(r: Reader, raw: Any) -> dict[str, ProviderConfig]:
    if raw is None:
        raise ConfigError("providers", "at least one provider is required")
    items = r.sequence(raw, "providers")
    out: dict[str, ProviderConfig] = {}
    allowed = {"name", "kind", "base_url", "api_key", "headers", "models", "timeouts"}
    for i, item in enumerate(items):
        at = f"providers[{i}]"
        m = r.mapping(item, at, allowed)
        name = r.string(r.required(m, "name", at), f"{at}.name")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"{at}.name", f"'{name}' may only hold letters, digits, '_', '.' and '-'")
        if name in out:
            raise ConfigError(f"{at}.name", f"duplicate provider name '{name}'")
        kind = r.string(m.get("kind", name), f"{at}.kind")
        preset = PRESETS.get(kind)
        if preset is None:
            raise ConfigError(f"{at}.kind", f"unknown kind '{kind}' (expected one of: {', '.join(PRESETS)})")
        base_url = m.get("base_url", preset.base_url)
        if base_url is None:
            raise ConfigError(f"{at}.base_url", f"required for kind '{kind}'")
        base_url = r.string(base_url, f"{at}.base_url").rstrip("/")
        if not re.match(r"https?://[^/]+", base_url):
            raise ConfigError(f"{at}.base_url", f"'{base_url}' is not an http(s) URL")
        api_key = m.get("api_key")
        if api_key is not None:
            api_key = r.string(api_key, f"{at}.api_key") or None
        headers: tuple[tuple[str, str], ...] = ()
        if m.get("headers") is not None:
            hm = r.mapping(m["headers"], f"{at}.headers", None)
            headers = tuple((str(k), r.string(v, f"{at}.headers.{k}")) for k, v in hm.items())
        models: tuple[str, ...] = ()
        if m.get("models") is not None:
            models = tuple(
                r.string(v, f"{at}.models[{j}]") for j, v in enumerate(r.sequence(m["models"], f"{at}.models"))
            )
        out[name] = ProviderConfig(
            name=name,
            kind=kind,
            adapter=preset.adapter,
            base_url=base_url,
            api_key=api_key,
            headers=headers,
            models=models,
            timeouts=parse_timeouts(r, m.get("timeouts"), f"{at}.timeouts"),
        )
    if not out:
        raise ConfigError("providers", "at least one provider is required")
    return out


def parse_timeouts(r: Reader, raw: Any, at: str) -> Timeouts:
    if raw is None:
        return Timeouts()
    m = r.mapping(raw, at, {"connect", "first_token", "idle", "total"})
    d = Timeouts()
    return Timeouts(
        connect_s=r.number(m.get("connect", d.connect_s), f"{at}.connect"),
        first_token_s=r.number(m.get("first_token", d.first_token_s), f"{at}.first_token"),
        idle_s=r.number(m.get("idle", d.idle_s), f"{at}.idle"),
        total_s=r.number(m.get("total", d.total_s), f"{at}.total"),
    )

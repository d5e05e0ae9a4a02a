"""Provider settings: `providers:` in the config, parsed into frozen `ProviderConfig`s (with their timeouts and the
caps on answers read whole), and the default size of the process's buffer for those answers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from relaycast.config_reader import ConfigError, Reader, did_you_mean
from relaycast.providers.forward import parse_forward_headers
from relaycast.providers.presets import PRESETS
from relaycast.redact import header_secrets, url_secrets

MIB = 1024 * 1024
# A non-streaming chat answer: the longest output of today's models (128K tokens: about 0.5 MB of text, a few MB
# as JSON at most) for several choices (`n`) stays well under it. Long answers with `top_logprobs` (about 1 KB per
# token) can pass it: raise it for those.
DEFAULT_MAX_RESPONSE = 16 * MIB
# An embeddings answer: every base64 one (the OpenAI SDK's default; 2,048 inputs x 3,072 dimensions is about
# 34 MB), and float ones (about 20 to 30 bytes per dimension) of some 1,000 inputs x 1,536 dimensions.
DEFAULT_MAX_EMBEDDINGS = 48 * MIB
# All upstream answers one process holds while it reads them (`server.max_upstream_buffer_bytes`): four chat answers
# at their cap, or one embeddings answer at its cap and a chat answer.
DEFAULT_UPSTREAM_BUFFER = 64 * MIB


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
    forward_headers: tuple[str, ...] = ()  # client headers passed on to this provider (lower case; forward.py)
    models: tuple[str, ...] = ()
    timeouts: Timeouts = Timeouts()
    max_response_bytes: int = DEFAULT_MAX_RESPONSE  # a non-streaming chat answer, decompressed
    max_embeddings_bytes: int = DEFAULT_MAX_EMBEDDINGS  # an embeddings answer, decompressed
    responses_api: bool = False  # `/v1/responses` requests go to it natively (presets.Preset.responses_api)

    @property
    def server(self) -> tuple[str, int] | None:
        """The host and port of `base_url` (the port its scheme implies when none is given)."""
        u = urlsplit(self.base_url)
        try:
            port = u.port
        except ValueError:  # a port out of range: the provider cannot be reached at all
            return None
        if not u.hostname:
            return None
        return u.hostname, port or (443 if u.scheme == "https" else 80)

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
    allowed = {
        "name",
        "kind",
        "base_url",
        "api_key",
        "headers",
        "forward_headers",
        "models",
        "timeouts",
        "max_response_bytes",
        "max_embeddings_bytes",
        "responses_api",
    }
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
            raise ConfigError(
                f"{at}.kind",
                f"unknown kind '{kind}'{did_you_mean(kind, PRESETS)} (expected one of: {', '.join(PRESETS)})",
            )
        base_url = m.get("base_url", preset.base_url)
        if base_url is None:
            raise ConfigError(f"{at}.base_url", f"required for kind '{kind}'")
        base_url = r.string(base_url, f"{at}.base_url").rstrip("/")
        if not re.match(r"https?://[^/]+", base_url):
            raise ConfigError(f"{at}.base_url", f"'{base_url}' is not an http(s) URL")
        api_key = m.get("api_key")
        if api_key is not None:
            api_key = _one_line(r.string(api_key, f"{at}.api_key"), f"{at}.api_key") or None
        headers: tuple[tuple[str, str], ...] = ()
        if m.get("headers") is not None:
            hm = r.mapping(m["headers"], f"{at}.headers", None)
            headers = tuple(
                (_one_line(str(k), f"{at}.headers"), _one_line(r.string(v, f"{at}.headers.{k}"), f"{at}.headers.{k}"))
                for k, v in hm.items()
            )
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
            forward_headers=parse_forward_headers(r, m.get("forward_headers"), f"{at}.forward_headers"),
            models=models,
            timeouts=parse_timeouts(r, m.get("timeouts"), f"{at}.timeouts"),
            max_response_bytes=r.integer(
                m.get("max_response_bytes", DEFAULT_MAX_RESPONSE), f"{at}.max_response_bytes", 1024
            ),
            max_embeddings_bytes=r.integer(
                m.get("max_embeddings_bytes", DEFAULT_MAX_EMBEDDINGS), f"{at}.max_embeddings_bytes", 1024
            ),
            responses_api=_responses_api(r, m.get("responses_api"), preset.responses_api, preset.adapter, at),
        )
    if not out:
        raise ConfigError("providers", "at least one provider is required")
    return out


def _responses_api(r: Reader, raw: Any, default: bool, adapter: str, at: str) -> bool:
    if raw is None:
        return default
    on = r.boolean(raw, f"{at}.responses_api")
    if on and adapter != "openai":
        raise ConfigError(f"{at}.responses_api", "only OpenAI-compatible providers can serve the Responses API")
    return on


def _one_line(value: str, at: str) -> str:
    """A header name or value: a line break in it would end the header (or the request) early, and HTTP carries
    Latin-1 only. The value itself is never repeated: it may be a key."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError(at, "holds a line break or NUL, which no HTTP header may hold (a trailing newline?)")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(at, "holds a character outside Latin-1, which an HTTP header cannot carry") from None
    return value


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

"""PostHog LLM analytics: each request as `$ai_generation` events (one per provider attempt) sent to PostHog's
capture API with the project API key.

What PostHog's setup asks for: the project API key (`phc_...`, Project settings) and the host, US Cloud
`https://us.i.posthog.com` by default, EU Cloud `https://eu.i.posthog.com`, or a self-hosted instance's address.
`us` and `eu` are accepted for the two clouds, and the app addresses (`https://us.posthog.com`,
`https://eu.posthog.com`, `https://app.posthog.com`) are mapped to their ingestion hosts as posthog-python does
(PostHog/posthog-python, posthog/request.py `determine_server_host`). Unset, they come from POSTHOG_PROJECT_API_KEY
(else POSTHOG_API_KEY) and POSTHOG_HOST, the names PostHog's own examples use (posthog-python, examples/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.redact import url_secrets
from relaycast.telemetry.kinds.base import KindSpec, env_or, need
from relaycast.telemetry.settings import url

US_HOST = "https://us.i.posthog.com"
EU_HOST = "https://eu.i.posthog.com"
# An app (UI) address as given -> its ingestion host (posthog-python, posthog/request.py).
APP_HOSTS = {
    "us": US_HOST,
    "eu": EU_HOST,
    "https://app.posthog.com": US_HOST,
    "https://us.posthog.com": US_HOST,
    "https://eu.posthog.com": EU_HOST,
}


@dataclass(frozen=True, slots=True)
class PostHogOptions:
    api_key: str = field(repr=False)  # the project API key (phc_...): a write-only key, a secret all the same
    host: str = US_HOST

    def secrets(self) -> tuple[str, ...]:
        return (self.api_key, *url_secrets(self.host))


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> PostHogOptions:
    key = need(
        r,
        env_or(m, "api_key", env, "POSTHOG_PROJECT_API_KEY", "POSTHOG_API_KEY"),
        f"{at}.api_key",
        "api_key (the project API key, phc_..., from PostHog's Project settings; or set POSTHOG_PROJECT_API_KEY)",
    )
    if key.startswith("phx_"):
        raise ConfigError(
            f"{at}.api_key", "this is a personal API key (phx_...); events need the project API key (phc_...)"
        )
    raw = r.string(env_or(m, "host", env, "POSTHOG_HOST", default=US_HOST), f"{at}.host").strip()
    host = APP_HOSTS.get(raw.lower().rstrip("/"), raw)
    host = url(r, host, f"{at}.host").rstrip("/")
    return PostHogOptions(api_key=key, host=host)


SPEC = KindSpec(
    kind="posthog",
    title="PostHog",
    keys=frozenset({"api_key", "host"}),
    parse=parse,
    exporter="relaycast.telemetry.exporters.posthog:PostHogExporter",
    auth_hint="use the project API key (phc_...) from Project settings, for the project on this host",
)

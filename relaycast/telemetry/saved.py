"""Destinations saved from the dashboard, the admin API or the CLI: how a form's values become a destination
(parsed by the same code as the config file's), and the sync that applies the store's saved destinations to a
running broadcaster within `POLL_S` seconds, on every replica, without a restart.

A saved destination's secret settings (its form's `secret` fields: API keys, tokens, passwords, headers) are
sealed (`relaycast.sealed`) before they reach the store, and opened only here, where the destination is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from relaycast.config_reader import ConfigError, Reader
from relaycast.log import EventLog
from relaycast.redact import Redactor, url_secrets
from relaycast.sealed import Sealer, SealError
from relaycast.store import destinations as table
from relaycast.store.reader import StoreReader
from relaycast.telemetry import forms
from relaycast.telemetry.settings import KINDS, DestinationConfig, destination

if TYPE_CHECKING:
    from relaycast.telemetry.pipeline import Broadcaster

SOURCE = "dashboard"
POLL_S = 2.0
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_VALUE_CHARS = 8 * 1024


class Invalid(Exception):
    """A form that does not make a destination: `field` names the setting, the message says why."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def split(kind: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A form's values as (settings, secrets); empty values are left out (the kind's default applies). A URL that
    holds a password or a credential-named query parameter is a secret too."""
    secret = forms.secret_names(kind)
    urls = forms.url_names(kind)
    settings: dict[str, Any] = {}
    hidden: dict[str, Any] = {}
    for k, v in values.items():
        if v is None or v == "" or v == {}:
            continue
        sealed = k in secret or (k in urls and isinstance(v, str) and bool(url_secrets(v)))
        (hidden if sealed else settings)[k] = v
    return settings, hidden


def masked_url(url: str) -> str:
    """A URL with its password and credential query values replaced by `****`: what a listing shows of it."""
    for secret in url_secrets(url):
        url = url.replace(secret, "****")
    return url


def shown(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """A destination's values as a listing shows them: no secret, URLs masked."""
    secret = forms.secret_names(kind)
    urls = forms.url_names(kind)
    return {k: masked_url(v) if k in urls and isinstance(v, str) else v for k, v in values.items() if k not in secret}


def merge_kept(kind: str, values: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """A form's values completed from the saved destination's (`kept`, secrets opened): a secret left empty keeps
    the saved one, and a URL shown masked keeps the saved URL. Saved secrets go only where they were saved for: if
    an address setting (a URL, the site, the region, ...) changed, they must be typed again."""
    out = dict(values)
    for k in forms.url_names(kind):
        saved_url = kept.get(k)
        if isinstance(saved_url, str) and out.get(k) == masked_url(saved_url):
            out[k] = saved_url
    reused = [
        k
        for k in sorted(forms.secret_names(kind))
        if out.get(k) in (None, "", {}) and kept.get(k) not in (None, "", {})
    ]
    if not reused:
        return out
    for k in sorted(forms.address_names(kind)):
        if (out.get(k) or None) != (kept.get(k) or None):
            raise Invalid(
                f"'{k}' changed, so the saved {', '.join(reused)} must be typed again (saved secrets go only to the "
                "address they were saved for)",
                reused[0],
            )
    for k in reused:
        out[k] = kept[k]
    return out


def check_values(kind: str, values: Any) -> dict[str, Any]:
    """A form's values, checked for shape and size: an object of the kind's fields and the common settings."""
    if kind not in KINDS:
        raise Invalid(f"unknown destination kind '{str(kind)[:40]}' (one of: {', '.join(KINDS)})", "kind")
    if not isinstance(values, dict):
        raise Invalid("'settings' must be an object of the destination's settings", "settings")
    if len(values) > 64:
        raise Invalid("too many settings (at most 64)", "settings")
    for k, v in values.items():
        if not isinstance(k, str) or len(k) > 64:
            raise Invalid("setting names are strings of at most 64 characters", "settings")
        if len(orjson.dumps(v)) > MAX_VALUE_CHARS:
            raise Invalid(f"'{k}' is longer than {MAX_VALUE_CHARS} characters", k)
    return values


def build(name: str, kind: str, values: dict[str, Any], base: Path) -> DestinationConfig:
    """The destination these values make, parsed as the config file's are (no environment variables: a saved
    destination says everything it uses)."""
    if not NAME.fullmatch(name):
        raise Invalid("the name must be 1-64 letters, digits, '_', '.' or '-'", "name")
    raw = {**values, "name": name, "kind": kind}
    try:
        cfg = destination(Reader({}), raw, "destination", {}, base)
    except ConfigError as e:
        where = str(e.where).removeprefix("destination").lstrip(".") or None
        raise Invalid(e.problem, where.split(".")[0] if where else None) from None
    except ValueError as e:  # a kind's parser on a value it could not read (an unparsable URL, ...)
        raise Invalid(f"invalid setting: {str(e)[:200]}", None) from None
    return replace(cfg, source=SOURCE)


def opened(row: table.Row, sealer: Sealer) -> dict[str, Any]:
    """A row's settings with its secrets opened."""
    hidden = orjson.loads(sealer.open(row.sealed, row.name)) if row.sealed else {}
    return {**row.settings, **hidden}


def seal(sealer: Sealer, name: str, hidden: dict[str, Any]) -> str | None:
    return sealer.seal(orjson.dumps(hidden).decode(), name) if hidden else None


class SavedSync:
    """Polls the store's change marker and applies the saved destinations to `broadcaster` when it moves."""

    def __init__(
        self,
        reader: StoreReader,
        sealer: Callable[[], Sealer],
        broadcaster: Broadcaster,
        redactor: Redactor,
        log: EventLog,
        base: Path,
        poll_s: float = POLL_S,
    ) -> None:
        self.reader = reader
        self._load_sealer = sealer  # called when a saved destination has secrets (it may create the key file)
        self._sealer: Sealer | None = None
        self.broadcaster = broadcaster
        self.redactor = redactor
        self.log = log
        self.base = base
        self.poll_s = poll_s
        self.enabled = True
        self.problems: dict[str, str] = {}  # saved destinations that could not be built, and why
        self.synced_at: float | None = None
        self.last_error: str | None = None
        self._marker: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="broadcast-saved-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as e:  # noqa: BLE001 - the store may be down; the next poll tries again
                message = self.redactor.scrub(f"{type(e).__name__}: {e}".splitlines()[0])[:200]
                if message != self.last_error:
                    self.log.error("broadcast_saved_sync_failed", error=message)
                self.last_error = message
            await asyncio.sleep(self.poll_s)

    async def sync(self, force: bool = False) -> None:
        """Apply the store's saved destinations if they changed since the last sync (or when `force`)."""
        async with self._lock:
            marker = await self.reader.run(table.marker)
            if self.last_error is not None:
                self.log.info("broadcast_saved_sync_recovered")
                self.last_error = None
            if marker == self._marker and not force:
                return
            enabled, rows = await self.reader.run(table.state)
            wanted: list[DestinationConfig] = []
            problems: dict[str, str] = {}
            for row in rows:
                try:
                    values = opened(row, self.sealer()) if row.sealed else dict(row.settings)
                    cfg = build(row.name, row.kind, values, self.base)
                except (SealError, Invalid, ValueError, OSError) as e:
                    problems[row.name] = f"cannot be built: {e}"
                    continue
                self.redactor.add(cfg.secrets())
                wanted.append(cfg)
            changes, failed = await self.broadcaster.apply(wanted if enabled else ())
            problems.update(failed)
            for name, why in problems.items():
                if self.problems.get(name) != why:
                    self.log.error("broadcast_saved_destination_broken", destination=name, error=why)
            self.problems, self.enabled, self._marker = problems, enabled, marker
            self.synced_at = time.time()
            if changes:
                self.log.info("broadcast_destinations_applied", changes=",".join(changes), enabled=enabled)

    def sealer(self) -> Sealer:
        if self._sealer is None:
            self._sealer = self._load_sealer()
        return self._sealer

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "problems": dict(self.problems),
            "synced_at": self.synced_at,
            "last_error": self.last_error,
            "poll_s": self.poll_s,
            "key": self._sealer.source if self._sealer else None,
        }

"""Structured log events: `event name key=value ...`, scrubbed of secrets, one line each."""

from __future__ import annotations

import logging
from typing import Any

from relaycast.redact import Redactor


class EventLog:
    """Logs named events with fields through one redactor. Owned by the app; no module-level state."""

    def __init__(self, redactor: Redactor, name: str = "relaycast") -> None:
        self._redact = redactor
        self._log = logging.getLogger(name)

    def event(self, level: int, name: str, **fields: Any) -> None:
        if not self._log.isEnabledFor(level):
            return
        parts = [name]
        for k, v in fields.items():
            if v is None:
                continue
            s = str(v)
            if " " in s or '"' in s:
                s = '"' + s.replace('"', '\\"') + '"'
            parts.append(f"{k}={s}")
        self._log.log(level, self._redact.scrub(" ".join(parts)))

    def info(self, name: str, **fields: Any) -> None:
        self.event(logging.INFO, name, **fields)

    def warning(self, name: str, **fields: Any) -> None:
        self.event(logging.WARNING, name, **fields)

    def error(self, name: str, **fields: Any) -> None:
        self.event(logging.ERROR, name, **fields)


def configure(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )

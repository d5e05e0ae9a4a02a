"""Structured log events: `event name key=value ...`, scrubbed of secrets, one line each."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from relaycast.redact import Redactor

# The id of the request being served, bound by the app for the request's task (and the tasks it starts): every
# event logged while it runs carries `request_id=` without each caller passing it.
REQUEST_ID: ContextVar[str | None] = ContextVar("relaycast_request_id", default=None)


class EventLog:
    """Logs named events with fields through one redactor. Owned by the app; no module-level state."""

    def __init__(self, redactor: Redactor, name: str = "relaycast") -> None:
        self._redact = redactor
        self._log = logging.getLogger(name)

    def event(self, level: int, name: str, **fields: Any) -> None:
        if not self._log.isEnabledFor(level):
            return
        parts = [name]
        rid = REQUEST_ID.get()
        if rid is not None and "request_id" not in fields:
            parts.append(f"request_id={rid}")
        for k, v in fields.items():
            if v is None:
                continue
            s = str(v)
            if "\n" in s or "\r" in s:  # one event, one line: a value cannot forge another
                s = s.replace("\r", "\\r").replace("\n", "\\n")
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

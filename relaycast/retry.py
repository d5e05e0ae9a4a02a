"""Retrying, in one place: when to retry (status classes), how long to wait (jittered backoff), and what the
server asked for (Retry-After in seconds or HTTP-date form)."""

from __future__ import annotations

import email.utils
import time
from typing import Any


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date), or retry-after-ms. None if absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    v = headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())

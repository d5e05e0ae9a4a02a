"""One step of a shutdown, bounded: what the serving process and the telemetry parts both close with."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from relaycast.log import EventLog
from relaycast.redact import Redactor


async def shutdown_step(
    log: EventLog, redactor: Redactor, step: str, work: Awaitable[object], timeout_s: float
) -> None:
    """Await one shutdown step for at most `timeout_s`; one that overruns or fails is logged and left."""
    try:
        await asyncio.wait_for(work, max(timeout_s, 0.001))
    except TimeoutError:
        log.error("shutdown_step_overran", step=step, timeout_s=round(timeout_s, 3))
    except Exception as e:  # noqa: BLE001 - the next parts must still close
        message = redactor.scrub(str(e))[:200]  # scrubbed whole: a cut secret would not match
        log.error("shutdown_step_failed", step=step, error=type(e).__name__, message=message)

"""Alert notifications: a generic JSON webhook (optionally HMAC-signed like the broadcast webhook), a
Slack-compatible incoming webhook, and always the log.

`Notifier.send` only queues: each target has its own worker that retries with backoff (2xx is success; 408, 429,
5xx and connection errors are retried up to `max_attempts`, other 4xx are not), so a target that is down never
delays an evaluation or another target. Outcomes are counted per target.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Any

import aiohttp
import orjson

from relaycast.log import EventLog
from relaycast.monitors.settings import NotifyTarget
from relaycast.redact import Redactor
from relaycast.telemetry.exporters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

MAX_QUEUE = 1000
MAX_BACKOFF_S = 60.0


def slack_body(event: dict[str, Any]) -> dict[str, Any]:
    icon = ":rotating_light:" if event["event"] == "alert" else ":white_check_mark:"
    head = f"{icon} *{'ALERT' if event['event'] == 'alert' else 'RESOLVED'}* relaycast monitor `{event['rule']}`"
    if event.get("scope"):
        head += f" ({event['scope']})"
    lines = [head, event["message"]]
    for c in (event.get("details") or {}).get("top_contributors", [])[:3]:
        lines.append(f"• {c['dimension']} `{c['value'] or '(none)'}`: +${c['growth_usd']:.2f}")
    return {"text": "\n".join(lines)}


class Notifier:
    def __init__(
        self, targets: tuple[NotifyTarget, ...], session: aiohttp.ClientSession, log: EventLog, redactor: Redactor
    ) -> None:
        self._targets = {t.name: t for t in targets}
        self._session = session
        self._log = log
        self._redactor = redactor
        self._queues: dict[str, collections.deque[dict[str, Any]]] = {t.name: collections.deque() for t in targets}
        self._wake = {t.name: asyncio.Event() for t in targets}
        self._tasks: list[asyncio.Task[None]] = []
        self.sent: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        self.retries: collections.Counter[str] = collections.Counter()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(n), name=f"relaycast-notify-{n}") for n in self._targets]

    async def stop(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while any(self._queues.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def send(self, event: dict[str, Any], only: tuple[str, ...] | None = None) -> None:
        """Queue an alert or resolution for each target (all, or `only` those named). Never blocks or raises."""
        level = self._log.warning if event["event"] == "alert" else self._log.info
        level(
            "monitor_" + event["event"],
            rule=event["rule"],
            scope=event.get("scope") or "-",
            message=event["message"][:300],
        )
        for name in only if only is not None else self._targets:
            q = self._queues.get(name)
            if q is None:
                continue
            if len(q) >= MAX_QUEUE:
                q.popleft()
                self.failed[name] += 1
            q.append(event)
            self._wake[name].set()

    def status(self) -> dict[str, Any]:
        return {
            n: {
                "kind": t.kind,
                "sent": self.sent[n],
                "failed": self.failed[n],
                "retries": self.retries[n],
                "queued": len(self._queues[n]),
            }
            for n, t in self._targets.items()
        }

    async def _worker(self, name: str) -> None:
        target = self._targets[name]
        q = self._queues[name]
        while True:
            if not q:
                self._wake[name].clear()
                await self._wake[name].wait()
                continue
            event = q[0]
            ok = await self._deliver(target, event)
            q.popleft()
            if ok:
                self.sent[name] += 1
            else:
                self.failed[name] += 1

    async def _deliver(self, t: NotifyTarget, event: dict[str, Any]) -> bool:
        body = orjson.dumps(slack_body(event) if t.kind == "slack" else event)
        body = self._redactor.scrub_bytes(body)
        delay = 1.0
        for attempt in range(1, t.max_attempts + 1):
            headers = {"content-type": "application/json", "user-agent": "relaycast"}
            if t.secret:
                ts = int(time.time())
                headers[TIMESTAMP_HEADER] = str(ts)
                headers[SIGNATURE_HEADER] = sign(t.secret, ts, body)
            retry_after = None
            try:
                async with self._session.post(
                    t.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=t.timeout_s)
                ) as r:
                    await r.read()
                    if r.status < 300:
                        return True
                    retryable = r.status in (408, 429) or r.status >= 500
                    problem = f"HTTP {r.status}"
                    ra = r.headers.get("retry-after")
                    retry_after = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                retryable, problem = True, type(e).__name__
            if not retryable or attempt == t.max_attempts:
                self._log.error(
                    "monitor_notification_failed", target=t.name, attempts=attempt, problem=problem, rule=event["rule"]
                )
                return False
            self.retries[t.name] += 1
            await asyncio.sleep(
                min(MAX_BACKOFF_S, retry_after if retry_after is not None else delay * (0.5 + random.random()))
            )
            delay = min(delay * 2, MAX_BACKOFF_S)
        return False

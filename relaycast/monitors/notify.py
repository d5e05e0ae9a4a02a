"""Alert notifications: a generic JSON webhook (optionally HMAC-signed like the broadcast webhook), a
Slack-compatible incoming webhook (text from records and the config escaped for mrkdwn), and always the log.

`Notifier.send` only queues: each target has its own `BatchWorker` (one event per export) that retries with
jittered backoff honouring Retry-After (2xx is success; `relaycast.retry`'s rules: 408, 429, 5xx and connection
errors are retried up to `max_attempts`, other 4xx are not, and a redirect is neither followed nor retried), so a
target that is down never delays an evaluation or another target. Outcomes are counted per target; what is still
queued at shutdown counts as failed.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from relaycast import retry
from relaycast.log import EventLog
from relaycast.monitors.settings import NotifyTarget
from relaycast.redact import Redactor
from relaycast.telemetry.exporters.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from relaycast.worker import BatchPolicy, BatchWorker, Sleep

MAX_QUEUE = 1000
BACKOFF_BASE_S = 1.0  # 1 s doubling, jittered, at most 60 s (Retry-After too)
MAX_BACKOFF_S = 60.0


class NotificationFailed(Exception):
    """A notification was not delivered after its attempts (already logged); the worker counts it as failed."""


def slack_text(value: Any, scrub: Callable[[str], str] | None = None) -> str:
    """Text from records or the config made inert in Slack mrkdwn: `&`, `<` and `>` escaped as Slack asks, so a
    user id like `<!channel>` or `<https://x|click>` is shown, never a mention or a link. `scrub` runs first,
    while a secret still reads as itself."""
    text = scrub(str(value)) if scrub is not None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_code(value: Any, scrub: Callable[[str], str] | None = None) -> str:
    """`slack_text` for inside a code span, which a backquote would end (mrkdwn cannot escape one)."""
    return slack_text(value, scrub).replace("`", "'")


def slack_body(event: dict[str, Any], scrub: Callable[[str], str] | None = None) -> dict[str, Any]:
    icon = ":rotating_light:" if event["event"] == "alert" else ":white_check_mark:"
    state = "ALERT" if event["event"] == "alert" else "RESOLVED"
    head = f"{icon} *{state}* relaycast monitor `{slack_code(event['rule'], scrub)}`"
    if event.get("scope"):
        head += f" ({slack_text(event['scope'], scrub)})"
    lines = [head, slack_text(event["message"], scrub)]
    for c in (event.get("details") or {}).get("top_contributors", [])[:3]:
        value = slack_code(c["value"] or "(none)", scrub)
        lines.append(f"• {slack_text(c['dimension'], scrub)} `{value}`: +${c['growth_usd']:.2f}")
    return {"text": "\n".join(lines)}


class Notifier:
    def __init__(
        self,
        targets: tuple[NotifyTarget, ...],
        session: aiohttp.ClientSession,
        log: EventLog,
        redactor: Redactor,
        *,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._targets = {t.name: t for t in targets}
        self._session = session
        self._log = log
        self._redactor = redactor
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._wall = wall  # signature timestamps
        self._workers: dict[str, BatchWorker[dict[str, Any]]] = {
            t.name: BatchWorker(
                f"notify-{t.name}",
                self._exporter(t),
                BatchPolicy(max_queue=MAX_QUEUE, max_batch=1, interval_s=1.0),
                on_error=lambda e: None,  # a failed delivery is logged where it fails
                sleep=sleep,
            )
            for t in targets
        }
        self.retries: collections.Counter[str] = collections.Counter()

    @property
    def sent(self) -> collections.Counter[str]:
        return collections.Counter({n: w.sent for n, w in self._workers.items()})

    @property
    def failed(self) -> collections.Counter[str]:
        """Events not delivered per target: failed deliveries, overflow drops, and shutdown leftovers."""
        return collections.Counter({n: w.failed + sum(w.dropped.values()) for n, w in self._workers.items()})

    def start(self) -> None:
        for w in self._workers.values():
            w.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued within `timeout_s`; what is left is counted as failed and logged."""
        names = list(self._workers)
        lefts = await asyncio.gather(*(w.stop(w.clock() + timeout_s) for w in self._workers.values()))
        for name, left in zip(names, lefts, strict=True):
            if left:
                self._workers[name].drop("shutdown", len(left))
                self._log.warning("monitor_notifications_lost_at_shutdown", target=name, count=len(left))

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
            w = self._workers.get(name)
            if w is not None:
                w.put(event)

    def status(self) -> dict[str, Any]:
        sent, failed = self.sent, self.failed
        return {
            n: {
                "kind": t.kind,
                "sent": sent[n],
                "failed": failed[n],
                "retries": self.retries[n],
                "queued": self._workers[n].queued + self._workers[n].in_flight,
            }
            for n, t in self._targets.items()
        }

    def _exporter(self, t: NotifyTarget) -> Callable[[list[dict[str, Any]]], Awaitable[None]]:
        async def export(events: list[dict[str, Any]]) -> None:
            for event in events:
                await self._deliver(t, event)

        return export

    async def _deliver(self, t: NotifyTarget, event: dict[str, Any]) -> None:
        """Deliver one event, retrying what may succeed; raise NotificationFailed when it was not delivered."""
        body = orjson.dumps(slack_body(event, self._redactor.scrub) if t.kind == "slack" else event)
        body = self._redactor.scrub_bytes(body)
        for attempt in range(1, t.max_attempts + 1):
            headers = {"content-type": "application/json", "user-agent": "relaycast"}
            if t.secret:
                ts = int(self._wall())
                headers[TIMESTAMP_HEADER] = str(ts)
                headers[SIGNATURE_HEADER] = sign(t.secret, ts, body)
            retry_after = None
            try:
                # A redirect is not followed: it would take the signed alert (and the URL's token) elsewhere.
                async with self._session.post(
                    t.url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=t.timeout_s),
                    allow_redirects=False,
                ) as r:
                    await r.read()
                    if r.status < 300:
                        return
                    retryable = retry.is_retryable_status(r.status)
                    problem = f"HTTP {r.status}" + (" (a redirect, not followed)" if r.status < 400 else "")
                    retry_after = retry.retry_after_seconds(r.headers)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                retryable, problem = retry.is_retryable(e), type(e).__name__
            if not retryable or attempt == t.max_attempts:
                self._log.error(
                    "monitor_notification_failed", target=t.name, attempts=attempt, problem=problem, rule=event["rule"]
                )
                raise NotificationFailed(problem)
            self.retries[t.name] += 1
            await self._sleep(retry.retry_delay(attempt, BACKOFF_BASE_S, MAX_BACKOFF_S, self._rng, retry_after))
        raise NotificationFailed("no attempts")

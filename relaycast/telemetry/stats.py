"""In-memory counters over request records: the gateway's own view, served at /admin/stats. O(1) per record."""

from __future__ import annotations

import collections
from typing import Any

from relaycast.records import RequestRecord

MAX_TARGETS = 1000  # distinct targets counted by name; the rest are counted as "(other)"


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.errors_by_class: collections.Counter[str] = collections.Counter()
        self.attempts: collections.Counter[tuple[str, str]] = collections.Counter()  # (target, "ok" | class)
        self.tokens: collections.Counter[tuple[str, str]] = collections.Counter()  # (target, prompt|completion)

    def __call__(self, rec: RequestRecord) -> None:
        self.requests += 1
        self.by_status[rec.status_code] += 1
        if rec.error_class:
            self.errors_by_class[rec.error_class] += 1
        for a in rec.attempts:
            target = a.target
            if (target, "prompt") not in self.tokens and len(self.tokens) >= 2 * MAX_TARGETS:
                target = "(other)"
            self.attempts[(target, a.error_class or "ok")] += 1
            self.tokens[(target, "prompt")] += a.usage.prompt_tokens if a.usage else 0
            self.tokens[(target, "completion")] += a.usage.completion_tokens if a.usage else 0

    def snapshot(self) -> dict[str, Any]:
        targets: dict[str, dict[str, Any]] = {}
        for (target, outcome), n in self.attempts.items():
            targets.setdefault(target, {"attempts": {}, "tokens": {}})["attempts"][outcome] = n
        for (target, kind), n in self.tokens.items():
            targets.setdefault(target, {"attempts": {}, "tokens": {}})["tokens"][kind] = n
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "errors_by_class": dict(self.errors_by_class),
            "targets": targets,
        }

"""Micro benchmark: the cost of routing one request (plan + health bookkeeping), by number of targets and by
amount of traffic already observed. Routing must stay flat with both: no lock, no I/O, no per-sample work.

    python bench/routing.py

Prints microseconds per request for: planning a route of N targets (N = 1, 4, 16, 64), and observing an
attempt after 0, 10^4 and 10^6 earlier observations. Stops by itself; touches no network.
"""

from __future__ import annotations

import logging
import platform
import random
import time

from relaycast.config import parse
from relaycast.costs.pricer import build_pricer
from relaycast.log import EventLog
from relaycast.redact import Redactor
from relaycast.routing.health import HealthBoard
from relaycast.routing.plan import Planner
from relaycast.routing.settings import RoutingSettings


def _config(n: int) -> str:
    targets = ", ".join(f"p/m{i}" for i in range(n))
    return f"providers: [{{name: p, kind: openai_compatible, base_url: 'http://127.0.0.1:9/v1'}}]\nmodels:\n  - {{name: r, targets: [{targets}], sla: {{p99_ms: 500}}}}\n"


def _per_call_us(fn, seconds: float = 0.5) -> float:  # type: ignore[no-untyped-def]
    n = 0
    start = time.perf_counter()
    while True:
        for _ in range(200):
            fn()
        n += 200
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n * 1e6


def main() -> None:
    logging.disable(logging.WARNING)  # demotions are expected here
    red = Redactor()
    rng = random.Random(1)
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("\nplan one request (route with N targets, each with traffic in its window)")
    print("| targets | µs per request |")
    print("|---:|---:|")
    for n in (1, 4, 16, 64):
        cfg = parse(_config(n), env={})
        board = HealthBoard(RoutingSettings(min_requests=1), EventLog(red))
        for i in range(n):
            for _ in range(50):
                board.observe(f"p/m{i}", rng.uniform(50, 900), rng.uniform(10, 200), None, 20)
        planner = Planner(cfg.models, cfg.providers, board, build_pricer(cfg.providers, cfg.models, cfg.prices), rng)
        print(f"| {n} | {_per_call_us(lambda planner=planner: planner.plan('r')):.1f} |")

    print("\nobserve one attempt, after K earlier observations of the same target")
    print("| earlier observations | µs per observation |")
    print("|---:|---:|")
    for k in (0, 10_000, 1_000_000):
        board = HealthBoard(RoutingSettings(), EventLog(red))
        for _ in range(k):
            board.observe("p/m0", 120.0, 40.0, None, 20)
        print(f"| {k:,} | {_per_call_us(lambda board=board: board.observe('p/m0', 120.0, 40.0, None, 20)):.2f} |")


if __name__ == "__main__":
    main()

"""Benchmark: how long the dashboard's pages take to render with 1 million stored requests, in headless Chromium.

    python bench/store.py --keep /tmp/store1m.db      # first: a store with 1,000,000 requests over 7 days
    python bench/dashboard.py --store /tmp/store1m.db

Starts `relaycast serve` on that SQLite store, logs in to /dashboard with Playwright driving Debian's Chromium,
and for each view (overview, latency, errors, requests, a request's waterfall) and each range (24 h, 7 d) measures
the time from navigation until the page has drawn its data (the page sets `data-loaded`). Five loads each, median
and worst printed. Writes bench/results/dashboard-latest.{json,md}. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import load

ADMIN = "bench-dashboard-admin-key-0001"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="a SQLite store (bench/store.py --keep FILE)")
    ap.add_argument("--loads", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="relaycast-bench-dash-"))
    port = load.free_port()
    (tmp / "relaycast.yaml").write_text(
        f"admin_key: {ADMIN}\nstore: {{path: '{Path(args.store).resolve()}'}}\n"
        "providers: [{name: fake, kind: openai_compatible, base_url: 'http://127.0.0.1:9/v1'}]\n"
    )
    gw = load.start(
        [
            sys.executable,
            "-m",
            "relaycast",
            "serve",
            "--config",
            str(tmp / "relaycast.yaml"),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        tmp / "gateway.log",
    )
    base = f"http://127.0.0.1:{port}"
    rows: list[dict] = []
    try:
        load.wait_http(base + "/healthz", gw, tmp / "gateway.log")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base + "/dashboard/login")
            page.fill("#login-key", ADMIN)
            page.click("#login-submit")
            page.wait_for_url(base + "/dashboard*")
            total = page.evaluate(
                "fetch('/admin/analytics/spend?since=30d').then(r => r.json()).then(d => d.totals.requests)"
            )
            print(f"store: {args.store}, {total:,} requests in the last 30 days", flush=True)
            for rng in ("24h", "7d"):
                for view in ("overview", "latency", "errors", "requests"):
                    times = []
                    for _ in range(args.loads):
                        page.goto("about:blank")
                        t0 = time.perf_counter()
                        page.goto(f"{base}/dashboard#{view}")
                        page.select_option("#range", rng) if rng != "24h" else None
                        page.wait_for_function(f"() => document.body.dataset.loaded === '{view}'", timeout=30_000)
                        if rng != "24h":  # the range change reloads the view: wait for that load, too
                            page.wait_for_function(
                                f"() => document.body.dataset.loaded === '{view}' && !document.body.classList.contains('is-loading')",
                                timeout=30_000,
                            )
                        times.append((time.perf_counter() - t0) * 1000)
                    rows.append(
                        {"view": view, "range": rng, "median_ms": statistics.median(times), "max_ms": max(times)}
                    )
                    print(
                        f"{view:<9} {rng:>4}: median {rows[-1]['median_ms']:.0f} ms, worst {rows[-1]['max_ms']:.0f} ms",
                        flush=True,
                    )
            # A request's waterfall, from the explorer.
            times = []
            for _ in range(args.loads):
                page.goto("about:blank")
                page.goto(f"{base}/dashboard#requests")
                page.wait_for_function("() => document.body.dataset.loaded === 'requests'", timeout=30_000)
                t0 = time.perf_counter()
                page.locator("#requests-table tr[data-request-id]").nth(3).click()
                page.wait_for_selector("#request-detail[data-request-id] #waterfall .wf-row", timeout=30_000)
                times.append((time.perf_counter() - t0) * 1000)
            rows.append(
                {"view": "waterfall", "range": "-", "median_ms": statistics.median(times), "max_ms": max(times)}
            )
            print(
                f"waterfall      : median {rows[-1]['median_ms']:.0f} ms, worst {rows[-1]['max_ms']:.0f} ms", flush=True
            )
            browser.close()
    finally:
        load.stop(gw)
    md = [
        f"# bench/dashboard.py: {total:,} stored requests, SQLite, headless Chromium, {args.loads} loads each",
        "",
        "| view | range | median ms | worst ms |",
        "|---|---|---:|---:|",
    ]
    md += [f"| {r['view']} | {r['range']} | {r['median_ms']:.0f} | {r['max_ms']:.0f} |" for r in rows]
    out = Path(__file__).parent / "results"
    (out / "dashboard-latest.json").write_text(json.dumps({"requests": total, "rows": rows}, indent=2))
    (out / "dashboard-latest.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

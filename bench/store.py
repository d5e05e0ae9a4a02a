"""Benchmark of the store: insert throughput, and the time of the analytics queries with 1 million requests stored.

    python bench/store.py                        # SQLite, 1,000,000 requests over 7 days
    python bench/store.py --postgres postgresql://postgres@127.0.0.1:5432/postgres   # also Postgres (a fresh database)
    python bench/store.py --requests 200000 --keep /tmp/store.db                       # keep the SQLite file

Records are synthetic but shaped like traffic: 12 models on 5 providers, 200 users, 20 features, 8 keys, 30%
streams, 6% with a failed first attempt, 2% errors; spread evenly over the last 7 days, in time order. Inserts go through the same
code as the gateway's store writer (rows.build + write_batch, batches of 2,000, one transaction each). Each query
is timed 5 times after one warm-up; the median is printed. Results go to bench/results/store-latest.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store import queries, rows
from relaycast.store.db import Connection
from relaycast.store.settings import StoreConfig
from relaycast.store.writer import write_batch

MODELS = (
    [("openai", m) for m in ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o4-mini")]
    + [("anthropic", m) for m in ("claude-3-5-haiku-latest", "claude-sonnet-4-0")]
    + [("groq", m) for m in ("llama-3.1-8b-instant", "llama-3.3-70b-versatile")]
    + [("openrouter", m) for m in ("google/gemini-2.5-flash", "deepseek/deepseek-chat")]
    + [("vllm", m) for m in ("llama-3-8b-finetune", "qwen-2.5-7b")]
)
BATCH = 2000


def synth(n: int, seed: int, span_s: float, now: float) -> Any:
    rng = random.Random(seed)
    users = [f"user-{i:03d}" for i in range(200)]
    features = [f"feature-{i:02d}" for i in range(20)]
    keys = [f"key-{i}" for i in range(8)]
    msgs = (
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Summarise this ticket in one line."},
    )
    for i in range(n):
        prov, model = MODELS[rng.randrange(len(MODELS))]
        start = now - span_s + (i + rng.random()) * span_s / n  # in time order, as a gateway writes them
        dur = int(rng.lognormvariate(6.0, 0.7) * 1e6)  # ~400 ms median
        stream = rng.random() < 0.3
        attempts = []
        t = 0
        if rng.random() < 0.06:
            attempts.append(
                Attempt(
                    target=f"{prov}/{model}",
                    provider=prov,
                    model=model,
                    started_ns=0,
                    duration_ns=20_000_000,
                    error_class=rng.choice(("upstream_5xx", "rate_limit", "timeout")),
                    upstream_status=503,
                )
            )
            t = 21_000_000
        ok = rng.random() > 0.02
        usage = Usage(
            prompt_tokens=rng.randint(50, 3000),
            completion_tokens=rng.randint(10, 800),
            cached_tokens=rng.choice((0, 0, 512)),
        )
        cost = None if prov == "vllm" else usage.prompt_tokens * 150_000 + usage.completion_tokens * 600_000
        attempts.append(
            Attempt(
                target=f"{prov}/{model}",
                provider=prov,
                model=model,
                started_ns=t,
                duration_ns=dur,
                ttft_ns=dur // 5 if stream else None,
                usage=usage if ok else None,
                error_class=None if ok else "timeout",
                cost_pusd=cost if ok else None,
                cost_source=("unpriced" if cost is None else "computed") if ok else "none",
            )
        )
        yield RequestRecord(
            request_id=f"req_{int(start * 1000):012x}{secrets.token_hex(12)}",  # as the gateway makes them
            endpoint="chat.completions",
            model_requested=model,
            stream=stream,
            started_unix_ns=int(start * 1e9),
            duration_ns=t + dur + 300_000,
            status_code=200 if ok else 504,
            attribution=Attribution(
                user=users[int(rng.paretovariate(1.2)) % 200],
                feature=rng.choice(features),
                key_name=rng.choice(keys),
                session_id=f"s{rng.randrange(10**6)}",
            ),
            attempts=tuple(attempts),
            error_class=None if ok else "timeout",
            params={"temperature": 0.2},
            input_messages=msgs,
            output_text="A short one-line summary of the ticket." if ok else None,
        )


def insert(cfg: StoreConfig, n: int, now: float) -> dict[str, float]:
    conn = Connection(cfg)
    conn.migrate()
    red = Redactor(("sk-bench-secret-0123456789",))
    randbits = random.Random().getrandbits  # as the store writer draws row ids (not a system call each)
    build_s = write_s = 0.0
    buf: list[RequestRecord] = []
    done = 0
    gen = synth(n, 1, 7 * 86400, now)
    while done < n:
        buf = [next(gen) for _ in range(min(BATCH, n - done))]
        t0 = time.perf_counter()
        batch = rows.build(buf, red, privacy=False, randbits=randbits)
        t1 = time.perf_counter()
        write_batch(conn, batch)
        t2 = time.perf_counter()
        build_s += t1 - t0
        write_s += t2 - t1
        done += len(buf)
        if done % 100_000 == 0:
            print(f"  {done:,} inserted ({done / (build_s + write_s):,.0f}/s)", flush=True)
    conn.close()
    return {
        "requests": n,
        "rows_per_s": n / (build_s + write_s),
        "build_us_per_request": build_s / n * 1e6,
        "write_us_per_request": write_s / n * 1e6,
    }


def time_queries(cfg: StoreConfig, now: float) -> dict[str, float]:
    conn = Connection(cfg)
    some_user = "user-001"
    q: dict[str, Callable[[], Any]] = {
        "spend by model, 24 h, hourly": lambda: queries.spend(conn, queries.window({"since": "24h"}, now), "model"),
        "spend by user, 7 d, daily": lambda: queries.spend(conn, queries.window({"since": "7d"}, now), "user"),
        "spend by feature, 7 d, one model": lambda: queries.spend(
            conn, queries.window({"since": "7d", "model": "gpt-4o"}, now), "feature"
        ),
        "latency by model, 24 h": lambda: queries.latency(conn, queries.window({"since": "24h"}, now), "model"),
        "latency by provider, 7 d": lambda: queries.latency(conn, queries.window({"since": "7d"}, now), "provider"),
        "errors by provider, 24 h": lambda: queries.error_rates(conn, queries.window({"since": "24h"}, now)),
        "explorer: newest 50": lambda: queries.requests(conn, {"since": "30d"}, now),
        "explorer: one user's newest 50": lambda: queries.requests(conn, {"since": "30d", "user": some_user}, now),
        "explorer: newest 50 errors": lambda: queries.requests(conn, {"since": "30d", "status": "error"}, now),
        "explorer: page 20 (cursor)": lambda: _page(conn, now, 20),
        "one request's waterfall": lambda: queries.request_detail(conn, _some_id(conn)),
    }
    out = {}
    for name, fn in q.items():
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times) * 1000
        print(f"  {name}: {out[name]:.1f} ms", flush=True)
    conn.close()
    return out


def _page(conn: Connection, now: float, pages: int) -> Any:
    params: dict[str, str] = {"since": "30d"}
    doc = None
    for _ in range(pages):
        doc = queries.requests(conn, params, now)
        params["before"] = doc["next_before"]
    return doc


_ID: list[str] = []


def _some_id(conn: Connection) -> str:
    if not _ID:
        _ID.append(conn.query("SELECT request_id FROM requests ORDER BY ts_ms DESC LIMIT 1 OFFSET 1000")[0][0])
    return _ID[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--postgres", help="also on this Postgres server (a database is created and dropped)")
    ap.add_argument("--keep", help="write the SQLite store to this file and keep it")
    args = ap.parse_args()
    now = time.time()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "requests": args.requests,
    }
    tmp = tempfile.TemporaryDirectory()
    path = args.keep or str(Path(tmp.name) / "bench.db")
    if args.keep and os.path.exists(path):
        os.remove(path)
    print(f"SQLite ({path}): inserting {args.requests:,} requests")
    cfg = StoreConfig(path=path)
    results["sqlite"] = {"insert": insert(cfg, args.requests, now)}
    results["sqlite"]["size_mb"] = round(os.path.getsize(path) / 1e6, 1)
    print("SQLite: queries")
    results["sqlite"]["queries_ms"] = time_queries(cfg, now)
    if args.postgres:
        import psycopg

        name = "relaycast_bench_" + secrets.token_hex(3)
        with psycopg.connect(args.postgres, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        url = args.postgres.rsplit("/", 1)[0] + "/" + name
        try:
            print(f"Postgres ({name}): inserting {args.requests:,} requests")
            pcfg = StoreConfig(url=url)
            results["postgres"] = {"insert": insert(pcfg, args.requests, now)}
            _ID.clear()
            print("Postgres: queries")
            results["postgres"]["queries_ms"] = time_queries(pcfg, now)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as c:
                c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "store-latest.json").write_text(json.dumps(results, indent=2))
    md = [f"# bench/store.py: {args.requests:,} requests", "", f"machine: {results['machine']}", ""]
    engines = [e for e in ("sqlite", "postgres") if e in results]
    md += ["| | " + " | ".join(engines) + " |", "|---|" + "---:|" * len(engines)]
    md.append(
        "| insert, requests/s | " + " | ".join(f"{results[e]['insert']['rows_per_s']:,.0f}" for e in engines) + " |"
    )
    for name in results["sqlite"]["queries_ms"]:
        md.append(f"| {name}, ms | " + " | ".join(f"{results[e]['queries_ms'][name]:.1f}" for e in engines) + " |")
    (out / "store-latest.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    tmp.cleanup()


if __name__ == "__main__":
    main()

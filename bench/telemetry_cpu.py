"""CPU per record of the telemetry process's steps, in process: what one record costs once a worker handed it over.

    python bench/telemetry_cpu.py            # medians of 5 interleaved rounds
    python bench/telemetry_cpu.py --rounds 9

Records shaped like bench/load.py's production request (the same two messages and `max_tokens`, the fake upstream's
twenty output tokens, one attempt with usage and a computed cost, the benchmark's gateway key), and the same request
served after a failover (two attempts). Steps, each timed alone over the same records: the frame a worker encodes
and the telemetry process decodes (`telemetry.frames`), the Prometheus metrics (`telemetry.metrics`), the Datadog
LLM Observability spans and the file exporter's JSON lines (`exporters.datadog`, `exporters.jsonrecord`, which
the webhook shares), each as its destination makes a batch's request bodies (`pipeline.Destination`: encoded, the
known secrets masked, split into bodies), and the store's rows (`store.rows.build`, in batches of 1,000, without
the database). The secrets known are the production target's (the Datadog API key, the admin key and the gateway
key). Not timed: the store's database writes, the destinations' HTTP and disk I/O, and the channel and queues
between the steps. No network. Prints the table and writes it to bench/results/telemetry_cpu-latest.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relaycast.fake import openai_wire
from relaycast.log import EventLog
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store import rows
from relaycast.telemetry.exporters.datadog import DatadogExporter
from relaycast.telemetry.exporters.file import FileExporter
from relaycast.telemetry.frames import RECORD, Codec
from relaycast.telemetry.metrics import Metrics
from relaycast.telemetry.pipeline import ENCODE_CHECK, ENCODE_TURN_S, Destination
from relaycast.telemetry.settings import DatadogOptions, DestinationConfig, FileOptions, MetricsConfig

MODEL = "gpt-4o-mini@latency_ms=0,tokens=20"
MESSAGES = (
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Say hello to the benchmark in one short sentence."},
)
BATCH = 1000
# The production target's secrets (bench/broadcast.py's Datadog API key and admin key, bench/load_targets.py's
# gateway key): every export is searched for them.
SECRETS = ("benchmark0000000000000000000000000", "bench-admin-key-0123", "rk-bench-load-key-0000000001")


def attempt(started_ns: int, error: str | None = None) -> Attempt:
    if error is not None:
        return Attempt(
            f"backup/{MODEL}", "backup", MODEL, started_ns, 2_000_000, error_class=error, upstream_status=503
        )
    return Attempt(
        target=f"fake/{MODEL}",
        provider="fake",
        model=MODEL,
        started_ns=started_ns,
        duration_ns=700_000,
        usage=Usage(prompt_tokens=30, completion_tokens=20),
        finish_reason="stop",
        cost_pusd=30 * 150_000 + 20 * 600_000,
        cost_source="computed",
        vendor="openai",
        cost_input_pusd=30 * 150_000,
        response_model="gpt-4o-mini",
        response_id="chatcmpl-bench0000",
    )


def records(n: int, failover: bool) -> list[RequestRecord]:
    now = time.time_ns()
    text = "".join(openai_wire.tokens(20))
    out = []
    for i in range(n):
        attempts = (attempt(50_000, "upstream_5xx"), attempt(2_100_000)) if failover else (attempt(100_000),)
        out.append(
            RequestRecord(
                request_id=f"req_{now // 1_000_000:012x}{i:024x}",
                endpoint="chat.completions",
                model_requested=f"fake/{MODEL}",
                stream=False,
                started_unix_ns=now + i * 200_000,
                duration_ns=900_000,
                status_code=200,
                attribution=Attribution(key_name="bench"),
                attempts=attempts,
                params={"max_tokens": 64},
                input_messages=MESSAGES,
                output_text=text,
            )
        )
    return out


def steps(recs: list[RequestRecord]) -> dict[str, Callable[[], Any]]:
    codec = Codec()
    frames = [codec.frame(RECORD, r) for r in recs]
    datadog = DatadogExporter(
        DestinationConfig(
            "datadog",
            "datadog",
            DatadogOptions("datadoghq.com", "bench", "relaycast", None, None, "http://127.0.0.1:1"),
        ),
        None,  # type: ignore[arg-type]  # encoding needs no session
    )
    file = FileExporter(DestinationConfig("file", "file", FileOptions("/nonexistent/records.jsonl")))
    metrics = Metrics(MetricsConfig())
    redactor = Redactor(SECRETS)
    log = EventLog(redactor)
    to_datadog = Destination(datadog.dest, datadog, None, redactor, log, time.time_ns)
    to_file = Destination(file.dest, file, None, redactor, log, time.time_ns)
    randbits = random.Random().getrandbits  # the store writer's generator: row ids without a system call each
    return {
        "frame encode (in the worker)": lambda: [codec.frame(RECORD, r) for r in recs],
        "frame decode": lambda: [codec.record(f[5:]) for f in frames],
        "metrics": lambda: [metrics(r) for r in recs],
        "Datadog spans": lambda: bodies(to_datadog, recs),
        "file line": lambda: bodies(to_file, recs),
        "store rows": lambda: [
            rows.build(recs[i : i + BATCH], redactor, False, randbits) for i in range(0, len(recs), BATCH)
        ],
    }


def bodies(d: Destination, recs: list[RequestRecord]) -> list[Any]:
    """The request bodies a destination makes of a batch, as its export does (before sending them)."""
    return [list(d._chunks(recs[i : i + BATCH], ENCODE_CHECK, ENCODE_TURN_S)) for i in range(0, len(recs), BATCH)]


def per_record_us(run: Callable[[], Any], n: int) -> float:
    t0 = time.process_time()
    run()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=20_000, help="records per step per round")
    args = ap.parse_args()
    shapes = {"one attempt": records(args.records, False), "failover (two attempts)": records(args.records, True)}
    cases = {(shape, step): fn for shape, recs in shapes.items() for step, fn in steps(recs).items()}
    results: dict[tuple[str, str], list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up (and the metrics' series made)
    for _ in range(args.rounds):
        for k, fn in cases.items():
            results[k].append(per_record_us(fn, args.records))
    lines = [
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
        f", CPU µs per record, median of {args.rounds} interleaved rounds of {args.records:,} records",
        "",
        f"| step | {' | '.join(shapes)} |",
        "|---|" + "---:|" * len(shapes),
    ]
    step_names = list(dict.fromkeys(step for _, step in cases))
    for step in step_names:
        lines.append(f"| {step} | " + " | ".join(f"{statistics.median(results[(s, step)]):.1f}" for s in shapes) + " |")
    in_telemetry = [
        sum(statistics.median(results[(s, step)]) for step in step_names if "worker" not in step) for s in shapes
    ]
    lines.append("| the telemetry process's steps together | " + " | ".join(f"{v:.1f}" for v in in_telemetry) + " |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = Path(__file__).resolve().parent / "results" / "telemetry_cpu-latest.md"
    out.write_text(text)
    print(f"written: {out}")


if __name__ == "__main__":
    main()

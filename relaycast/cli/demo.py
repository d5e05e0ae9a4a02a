"""`relaycast demo`: fake providers on loopback, the gateway in front of them, a realistic load through it.

The fake upstream runs as a subprocess; the gateway runs in this process on a background thread; the load is
sent with the official `openai` SDK, as an application would. The admin key is $RELAYCAST_ADMIN_KEY, else a new
random one each run, printed with the gateway's address.

Ports: the ones asked for (8080 and 8081 by default), bound with SO_REUSEADDR so that a demo run just after another
gets them back; if something listens there, a free port instead, and the demo says so. Ctrl-C: while it serves after
its summary (the way to stop it) it exits 0; during start-up or the load it exits 130. Either way without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from relaycast import config as config_mod
from relaycast.cli.report_format import fmt_money
from relaycast.private_files import open_private
from relaycast.server.runner import ThreadedServer, bind_port

CONFIG_TEMPLATE = """\
# relaycast config written by `relaycast demo`.
# The providers below all point at relaycast's fake upstream, each with its own simulated behaviour (latency,
# tokens, cache use, failures) in its x-fake-behaviour header. A client's own x-fake-behaviour header (a rate
# limit, a refusal, ...) replaces it for one request: forward_headers passes it on. To run this file on its own:
#   relaycast fake-upstream --port {upstream_port} --api-key demo-upstream-key &
#   relaycast serve --config {path}
# To use real providers, replace a provider with e.g.
#   - name: openai
#     kind: openai
#     api_key: ${{OPENAI_API_KEY}}
#     models: [gpt-4o-mini]
server:
  host: 127.0.0.1
  port: {port}
admin_key: ${{RELAYCAST_ADMIN_KEY:-{admin_key}}}
store:
  path: {store_path}        # SQLite; requests, costs and latencies for the dashboard and `relaycast report`
providers:
  - name: fakeai            # OpenAI wire format; priced as OpenAI's models (see docs/cost.md)
    kind: openai_compatible
    base_url: http://127.0.0.1:{upstream_port}/v1
    api_key: ${{FAKE_UPSTREAM_KEY:-demo-upstream-key}}
    headers:
      x-fake-behaviour: "latency_ms=90,ttft_ms=45,tps=400,tokens=40,cached=16"
    forward_headers: [x-fake-behaviour]
    models: [gpt-4o-mini, gpt-4o, text-embedding-3-small]
  - name: flaky             # the same fake, failing 30% of requests with 503
    kind: openai_compatible
    base_url: http://127.0.0.1:{upstream_port}/v1
    api_key: ${{FAKE_UPSTREAM_KEY:-demo-upstream-key}}
    headers:
      x-fake-behaviour: "fail_rate=0.3,latency_ms=60,ttft_ms=30,tokens=24"
    forward_headers: [x-fake-behaviour]
    models: [gpt-4o-mini]
  - name: fakeanthropic     # Anthropic Messages API wire format, with prompt caching
    kind: anthropic
    base_url: http://127.0.0.1:{upstream_port}/v1
    api_key: ${{FAKE_UPSTREAM_KEY:-demo-upstream-key}}
    headers:
      x-fake-behaviour: "latency_ms=160,ttft_ms=80,tps=250,tokens=48,cached=24,cache_write=8"
    forward_headers: [x-fake-behaviour]
    models: [claude-3-5-haiku-latest]
  - name: fastllama         # a fast open model; its price comes from `prices:` below
    kind: openai_compatible
    base_url: http://127.0.0.1:{upstream_port}/v1
    api_key: ${{FAKE_UPSTREAM_KEY:-demo-upstream-key}}
    headers:
      x-fake-behaviour: "latency_ms=25,ttft_ms=12,tps=900,tokens=32"
    forward_headers: [x-fake-behaviour]
    models: [llama-3.1-8b-instant]
  - name: selfhosted        # a vLLM server of your own: no list price, so its requests show as "unpriced"
    kind: vllm
    base_url: http://127.0.0.1:{upstream_port}/v1
    api_key: ${{FAKE_UPSTREAM_KEY:-demo-upstream-key}}
    headers:
      x-fake-behaviour: "latency_ms=200,ttft_ms=110,tps=120,tokens=36"
    forward_headers: [x-fake-behaviour]
    models: [my-finetune-7b]
prices:                     # USD per million tokens: extends and overrides the packaged catalog
  fastllama/llama-3.1-8b-instant: {{input: 0.05, output: 0.08}}
models:
  - name: fast              # fails over from the flaky provider to the healthy one
    targets: [flaky/gpt-4o-mini, fakeai/gpt-4o-mini]
  - name: smart
    targets: [fakeanthropic/claude-3-5-haiku-latest, fakeai/gpt-4o]
  - name: cheap
    targets: [fastllama/llama-3.1-8b-instant, fakeai/gpt-4o-mini]
"""

USERS = ("alice", "bob", "carol", "dave", "erin")
FEATURES = ("chat-ui", "summarizer", "search", "support-bot")
# (model, fault, share). A fault is a simulated failure of the fake upstream (a rate limit, a refusal, ...), sent in
# the x-fake-behaviour header, which the providers forward: model names stay real in the store and the dashboard.
MIX: tuple[tuple[str, str | None, int], ...] = (
    ("fast", None, 26),
    ("smart", None, 20),
    ("cheap", None, 14),
    ("fakeai/gpt-4o-mini", None, 10),
    ("fakeai/gpt-4o", None, 8),
    ("selfhosted/my-finetune-7b", None, 6),
    ("fakeai/gpt-4o-mini", "error=429,retry_after=1,latency_ms=30", 5),
    ("fakeai/gpt-4o", "content_policy", 4),
    ("fakeai/gpt-4o", "context_length", 3),
    ("fakeanthropic/claude-3-5-haiku-latest", "error=529,latency_ms=40", 4),
)
FAULT_HEADER = "x-fake-behaviour"


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    ok: int = 0
    streams: int = 0
    failovers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _bind(preferred: int, what: str, say: Any) -> socket.socket:
    """A socket bound to 127.0.0.1:`preferred`, else to a free port, saying so (0: any free port, silently)."""
    try:
        return bind_port(preferred)
    except OSError as e:
        s = bind_port(0)
        why = "something listens there already" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        say(f"port {preferred} is not free ({why}): the {what} is on port {s.getsockname()[1]} instead")
        return s


def _wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process serving {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout:g}s")


def run_demo(args: argparse.Namespace) -> int:
    # The demo's own output is the summary; the gateway's per-error log lines would drown it.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s %(message)s")
    out = sys.stderr if args.json else sys.stdout  # with --json, stdout carries only the summary

    def say(*parts: object) -> None:
        print(*parts, file=out, flush=True)

    if args.requests is not None and args.requests < 0:
        print("relaycast demo: --requests must be 0 or more", file=sys.stderr)
        return 2
    try:
        return _demo(args, say)
    except KeyboardInterrupt:  # Ctrl-C during start-up or the load (while serving, _wait_for_interrupt takes it)
        print("\nrelaycast demo: interrupted", file=sys.stderr, flush=True)
        return 130


def _demo(args: argparse.Namespace, say: Any) -> int:
    gateway_sock = _bind(args.port, "gateway", say)
    # The fake upstream binds in its own process: the port is released here and taken there at once.
    with _bind(args.upstream_port, "fake upstream", say) as s:
        upstream_port = s.getsockname()[1]
    port = gateway_sock.getsockname()[1]
    tmp = tempfile.TemporaryDirectory(prefix="relaycast-demo-")
    path = Path(args.write_config) if args.write_config else Path(tmp.name) / "relaycast.yaml"
    store_path = Path(args.write_config).with_suffix(".db").name if args.write_config else "relaycast-demo.db"
    admin_key = os.environ.get("RELAYCAST_ADMIN_KEY") or secrets.token_urlsafe(24)
    text = CONFIG_TEMPLATE.format(
        port=port, upstream_port=upstream_port, admin_key=admin_key, path=path, store_path=store_path
    )
    # The file holds the admin key: readable by its owner only.
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)  # an existing file keeps its mode through O_TRUNC
    if args.write_config:
        say(f"wrote the demo config to {path}")
    cfg = config_mod.load_or_say(path)  # e.g. a $RELAYCAST_ADMIN_KEY too short to be an admin key
    if cfg is None:
        gateway_sock.close()
        tmp.cleanup()
        return 2
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relaycast",
            "fake-upstream",
            "--port",
            str(upstream_port),
            "--api-key",
            os.environ.get("FAKE_UPSTREAM_KEY", "demo-upstream-key"),
            "--log-level",
            "critical",
        ],
        stdout=subprocess.DEVNULL,
    )
    gateway = None
    try:
        _wait_http(f"http://127.0.0.1:{upstream_port}/v1/models", proc=fake)
        from relaycast.server.app import Gateway

        gateway = ThreadedServer(Gateway(cfg), log_level="error", settings=cfg.server, sock=gateway_sock).start()
        base = f"http://127.0.0.1:{port}/v1"
        say(f"fake upstream on http://127.0.0.1:{upstream_port}/v1 (OpenAI and Anthropic wire formats)")
        say(f"relaycast gateway on {base}")
        say(f"dashboard on http://127.0.0.1:{port}/dashboard (admin key: {admin_key})")
        n = args.requests if args.requests is not None else 200
        t0 = time.monotonic()
        tally = asyncio.run(_load(base, n, max(1, args.concurrency), args.seed))
        elapsed = time.monotonic() - t0
        cost = _costs(port, admin_key, n)  # waits until the store has every request: all emitted by then
        summary = _summary(tally, n, elapsed, _admin(port, admin_key, "/admin/stats"))
        summary["cost"] = cost
        dests = (_admin(port, admin_key, "/admin/broadcast") or {}).get("destinations")
        deadline = time.monotonic() + 3
        while dests and any(d["queued"] for d in dests) and time.monotonic() < deadline:
            time.sleep(0.2)  # let the broadcast pipeline flush before reporting it
            dests = (_admin(port, admin_key, "/admin/broadcast") or {}).get("destinations")
        if dests:
            summary["broadcast"] = dests
        if args.json:
            print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        else:
            _print_summary(summary)
        if args.requests is None:
            say(f"\nDashboard: http://127.0.0.1:{port}/dashboard  (admin key: {admin_key})")
            say(
                f"relaycast keeps serving on {base} — try:\n"
                f"  curl {base}/chat/completions -H 'content-type: application/json' "
                '-d \'{"model":"fast","messages":[{"role":"user","content":"hello"}]}\'\n'
                f"  OpenAI SDKs: base_url={base} (chat, responses); Anthropic SDKs and Claude Code: "
                f"ANTHROPIC_BASE_URL={base.removesuffix('/v1')}\n"
                "Press Ctrl-C to stop."
            )
            _wait_for_interrupt()
        return 0
    except RuntimeError as e:
        print(f"relaycast demo: {e}", file=sys.stderr)
        return 1
    finally:
        # Stopping takes a moment (the gateway flushes its telemetry): a second Ctrl-C would only leave a traceback.
        before = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if gateway is not None:
                gateway.stop()
                _say_stopped(gateway.server.report)
            gateway_sock.close()
            fake.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                fake.wait(5)
            if fake.poll() is None:
                fake.kill()
            tmp.cleanup()
        finally:
            signal.signal(signal.SIGINT, before)


def _say_stopped(report: dict[str, object] | None) -> None:
    """The gateway's `shutdown_complete` (the demo logs errors only): what it drained, flushed and spooled."""
    if report:
        fields = " ".join(f"{k}={v}" for k, v in report.items())
        print(f"relaycast demo: gateway stopped: {fields}", file=sys.stderr, flush=True)


def _wait_for_interrupt() -> None:
    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nrelaycast demo: stopping", file=sys.stderr, flush=True)


async def _load(base: str, n: int, concurrency: int, seed: int) -> Tally:
    import openai

    rng = random.Random(seed)
    kinds = [(m, fault) for m, fault, _ in MIX]
    weights = [w for _, _, w in MIX]
    plan = [
        (*rng.choices(kinds, weights)[0], rng.choice(USERS), rng.choice(FEATURES), rng.random() < 0.5, i)
        for i in range(n)
    ]
    tally = Tally()
    client = openai.AsyncOpenAI(base_url=base, api_key="not-needed-for-the-demo", max_retries=0, timeout=30)
    queue: asyncio.Queue[tuple[str, str | None, str, str, bool, int]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            model, fault, user, feature, stream, i = queue.get_nowait()
            await _one(client, tally, model, fault, user, feature, stream, i)

    async with client:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, n)))))
    return tally


async def _one(
    client: Any, tally: Tally, model: str, fault: str | None, user: str, feature: str, stream: bool, i: int
) -> None:
    import openai

    messages = [
        {"role": "system", "content": f"You are the {feature} assistant."},
        {"role": "user", "content": f"Request {i}: summarise why gateways need observability."},
    ]
    headers = {"X-Title": feature, "x-session-id": f"{user}-session-{i % 3}"}
    if fault:
        headers[FAULT_HEADER] = fault
    tally.models[model] = tally.models.get(model, 0) + 1
    start = time.perf_counter()
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model,
            messages=messages,
            user=user,
            stream=stream,
            extra_headers=headers,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        if int(raw.headers.get("x-relaycast-attempts", "1")) > 1:
            tally.failovers += 1
        result = raw.parse()
        if stream:
            tally.streams += 1
            async for chunk in result:
                if chunk.usage:
                    tally.prompt_tokens += chunk.usage.prompt_tokens
                    tally.completion_tokens += chunk.usage.completion_tokens
        elif result.usage:
            tally.prompt_tokens += result.usage.prompt_tokens
            tally.completion_tokens += result.usage.completion_tokens
        tally.ok += 1
    except openai.APIError as e:
        body = e.body if isinstance(e.body, dict) else {}
        cls = body.get("code") or getattr(e, "code", None) or type(e).__name__
        tally.errors[str(cls)] = tally.errors.get(str(cls), 0) + 1
    tally.latencies_ms.append((time.perf_counter() - start) * 1000)


def _admin(port: int, admin_key: str, path: str) -> dict[str, Any] | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"authorization": f"Bearer {admin_key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            answer: dict[str, Any] | None = orjson.loads(r.read())
            return answer
    except Exception:  # noqa: BLE001 - the summary works without it
        return None


def _costs(port: int, admin_key: str, n: int) -> dict[str, Any] | None:
    """Spend by model from the store's analytics, once the store has written the demo's requests."""
    deadline = time.monotonic() + 5
    doc = None
    while time.monotonic() < deadline:
        doc = _admin(port, admin_key, "/admin/analytics/spend?by=model&since=1h&limit=20")
        if doc is None or doc["totals"]["requests"] >= n:
            break
        time.sleep(0.2)
    if doc is None:
        return None
    return {
        "total_usd": doc["totals"]["cost_usd"],
        "unpriced_requests": doc["totals"]["unpriced_requests"],
        "by_model": {g["key"]: g["cost_usd"] for g in doc["groups"] if g["cost_usd"] != "0"},
    }  # failed-only: $0


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))], 1)


def _summary(t: Tally, n: int, elapsed: float, gw: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "requests": n,
        "ok": t.ok,
        "errors": dict(sorted(t.errors.items())),
        "streams": t.streams,
        "failovers": t.failovers,
        "models": dict(sorted(t.models.items(), key=lambda kv: -kv[1])),
        "latency_ms": {"p50": _pct(t.latencies_ms, 50), "p99": _pct(t.latencies_ms, 99)},
        "tokens": {"prompt": t.prompt_tokens, "completion": t.completion_tokens},
        "elapsed_s": round(elapsed, 2),
        "gateway": gw,
    }


def _print_summary(s: dict[str, Any]) -> None:
    print(f"\nrelaycast demo: {s['requests']} requests in {s['elapsed_s']}s")
    print(f"  ok {s['ok']}   errors {sum(s['errors'].values())}   streams {s['streams']}   failovers {s['failovers']}")
    print(f"  latency p50 {s['latency_ms']['p50']} ms   p99 {s['latency_ms']['p99']} ms")
    print(f"  tokens: {s['tokens']['prompt']} prompt, {s['tokens']['completion']} completion")
    cost = s.get("cost")
    if cost:
        unpriced = f" (+{cost['unpriced_requests']} unpriced requests)" if cost["unpriced_requests"] else ""
        print(f"  cost: {fmt_money(cost['total_usd'])}{unpriced}")
        for model, usd in cost["by_model"].items():
            print(f"    {model:<58} {'unpriced' if usd is None else fmt_money(usd)}")
    if s["errors"]:
        print("  errors by class:")
        for cls, count in s["errors"].items():
            print(f"    {cls:<18} {count}")
    print("  requests by model:")
    for model, count in s["models"].items():
        print(f"    {model:<58} {count}")
    for d in s.get("broadcast") or ():
        print(
            f"  broadcast to {d['name']} ({d['kind']}): sent {d['sent']}, queued {d['queued']}, "
            f"dropped {sum(d['dropped'].values())}{'' if d['healthy'] else ', DOWN: ' + str(d['last_error'])}"
        )
    gw = s.get("gateway")
    if gw:
        print("  attempts by target (the gateway's view):")
        for target, info in sorted(gw["targets"].items()):
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(info["attempts"].items()))
            print(f"    {target:<58} {outcomes}")

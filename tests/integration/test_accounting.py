"""The accounting contract: one fixed workload through a real gateway, every sink read back, each agreeing to the
pico-dollar with a cost computed by hand in this file from the prices in its config.

The workload covers cached reads, Anthropic cache writes (5 minutes, and 1 hour), reasoning tokens, web searches,
audio tokens, a long-context tier (above and at its size) with a per-request fee, a service tier a config price
has no rates for (estimated), a stream, a stream cut before its usage (estimated), an OpenRouter-reported cost, an
unpriced model, a failover across two models and a 429. The sinks: the store (its SQLite file), the analytics API,
`relaycast report --json`, `/metrics`, Datadog (through Datadog's own `ddapm-test-agent`), OTLP (decoded with the official protobuf classes), a webhook
and a JSON-lines file. Each is checked per request (the request's cost and each attempt's) and per (provider,
model): the attribution rule every sink keeps is that an attempt's cost belongs to its own provider and model, and
a request's cost is the sum of its attempts'. (The gateway bills no failed attempt that produced nothing, so the
failover's first attempt costs nothing here; tests/unit/test_cost_attribution.py splits two billed attempts.)

Datadog and OTLP carry dollars as floats (their formats have no decimal type): a float is read back as the nearest
pico-dollar, which is exact for any cost below about $9,000. Every other sink carries exact decimal text or
integers. A failure lists every disagreement: which sink, which request or (provider, model), what it said, what
the hand computation says, and by how many pico-dollars they differ.

When this file grows (a provider, a price field, a sink), the expectation stays hand-computed here: never call the
gateway's own pricing code to compute it.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.capture import CaptureServer
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess
from tests.ddagent import DatadogTestAgent
from tests.store_helpers import admin_get, wait_stored

PICO = 10**12
MILLION = 10**6


def per_token(usd_per_million: str) -> int:
    """A config price (USD per million tokens) as pico-dollars per token: USD/1M x 10^12 / 10^6."""
    pico = Decimal(usd_per_million) * MILLION
    assert pico == pico.to_integral_value(), usd_per_million
    return int(pico)


# The prices in the gateway's config (USD per million tokens), and the same in pico-dollars per token.
MINI = {"input": "0.15", "output": "0.6", "cached_input": "0.075", "reasoning": "0.9"}
LARGE = {"input": "2.5", "output": "10"}
CLAUDE = {"input": "3", "output": "15", "cached_input": "0.3", "cache_write": "3.75", "cache_write_1h": "6"}
AUDIO = {"input": "0.6", "output": "2.4", "input_audio": "10", "output_audio": "20"}
# A long-context tier (the whole request at its rates once the prompt passes 200,000 tokens) and a per-request fee.
LONG = {"input": "1", "output": "2", "request": "0.0005"}
LONG_ABOVE = {"input": "2", "output": "3"}
WEB_SEARCH = "0.01"  # USD per search, on acct-claude


CLAUDE["web_search"] = WEB_SEARCH


# A cut stream is estimated from the text: with no tokenizer cached (TIKTOKEN_CACHE_DIR points at an empty
# directory) the heuristic counts letters in runs: (letters + 3 per run) // 4, a bound of one token per four letters.
CUT_PROMPT = "tell me a story"
CUT_PROMPT_TOKENS = 3 + 3 + (12 + 3 * 4) // 4  # reply priming, one message; 12 letters in 4 runs


@dataclass(frozen=True)
class Billed:
    """What one attempt should cost: pico-dollars (None: unpriced) and the source every sink must show."""

    provider: str
    model: str
    pico: int | None
    source: str


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # as the client sends it
    stream: bool = False
    status: int = 200


CASES = [
    Case("cached", "fakeai/acct-mini@prompt_tokens=1000,cached=400,tokens=200"),
    Case("reasoning", "fakeai/acct-mini@prompt_tokens=300,tokens=500,reasoning=350"),
    Case("cache-write-5m", "claude/acct-claude@prompt_tokens=3000,cached=1000,cache_write=1500,tokens=100"),
    Case("cache-write-1h", "claude/acct-claude@prompt_tokens=5000,cache_write=1000,cache_write_1h=2000,tokens=80"),
    Case("web-search", "claude/acct-claude@prompt_tokens=200,tokens=40,web_search=2"),
    Case("audio", "fakeai/acct-audio@prompt_tokens=400,audio_in=100,tokens=60,audio_out=20"),
    Case("long-context", "fakeai/acct-long@prompt_tokens=250000,tokens=100"),
    Case("short-context", "fakeai/acct-long@prompt_tokens=200000,tokens=100"),  # exactly the size: not above it
    # a tier the upstream reports that a config price has no rates for: standard rates, marked estimated
    Case("priority-tier", "fakeai/acct-mini@prompt_tokens=100,tokens=10,service_tier=priority"),
    Case("stream", "fakeai/acct-large@prompt_tokens=700,tokens=70", stream=True),
    Case("cut-stream", "fakeai/acct-large@cut_after=4,tokens=50", stream=True),
    Case("reported", "orouter/openai/acct-mini@cost=0.000123456789"),
    Case("unpriced", "private/acct-unpriced@prompt_tokens=50,tokens=10"),
    Case("failover", "acct-failover"),  # 503 from acct-mini, then served by acct-large: the same model as "stream"
    Case("rate-limited", "fakeai/acct-mini@error=429", status=429),
]


def expected(cut_text: str) -> dict[str, list[Billed]]:
    """Each case's attempts as the prices above bill them, computed by hand. `cut_text`: what the cut stream
    delivered before the cut, which its estimate counts."""
    mini = {k: per_token(v) for k, v in MINI.items()}
    audio = {k: per_token(v) for k, v in AUDIO.items()}
    large = {k: per_token(v) for k, v in LARGE.items()}
    claude = {k: per_token(v) for k, v in CLAUDE.items() if k != "web_search"}  # per search, not per token
    search = int(Decimal(WEB_SEARCH) * PICO)
    out = {
        # 600 plain input + 400 cached reads + 200 output
        "cached": [
            Billed(
                "fakeai",
                "acct-mini@prompt_tokens=1000,cached=400,tokens=200",
                600 * mini["input"] + 400 * mini["cached_input"] + 200 * mini["output"],
                "computed",
            )
        ],
        # 300 input + 150 visible output + 350 reasoning (part of the 500 output tokens, at the reasoning price)
        "reasoning": [
            Billed(
                "fakeai",
                "acct-mini@prompt_tokens=300,tokens=500,reasoning=350",
                300 * mini["input"] + 150 * mini["output"] + 350 * mini["reasoning"],
                "computed",
            )
        ],
        # 3000 prompt = 500 plain + 1000 cached reads + 1500 written for 5 minutes; 100 output
        "cache-write-5m": [
            Billed(
                "claude",
                "acct-claude@prompt_tokens=3000,cached=1000,cache_write=1500,tokens=100",
                500 * claude["input"]
                + 1000 * claude["cached_input"]
                + 1500 * claude["cache_write"]
                + 100 * claude["output"],
                "computed",
            )
        ],
        # 700 input + 70 output, from the stream's usage chunk
        "stream": [
            Billed(
                "fakeai",
                "acct-large@prompt_tokens=700,tokens=70",
                700 * large["input"] + 70 * large["output"],
                "computed",
            )
        ],
        "cut-stream": [
            Billed(
                "fakeai",
                "acct-large@cut_after=4,tokens=50",
                CUT_PROMPT_TOKENS * large["input"] + _letters_tokens(cut_text) * large["output"],
                "estimated",
            )
        ],
        # OpenRouter's own figure wins: $0.000123456789
        "reported": [Billed("orouter", "openai/acct-mini@cost=0.000123456789", 123_456_789, "reported")],
        "unpriced": [Billed("private", "acct-unpriced@prompt_tokens=50,tokens=10", None, "unpriced")],
        "failover": [
            Billed("fakeai", "acct-mini@error=503", 0, "none"),  # failed, produced nothing: not billed
            Billed(
                "fakeai",
                "acct-large@prompt_tokens=700,tokens=70",
                700 * large["input"] + 70 * large["output"],
                "computed",
            ),
        ],
        "rate-limited": [Billed("fakeai", "acct-mini@error=429", 0, "none")],
    }
    # 200 input + 40 output + 2 searches at $0.01
    out["web-search"] = [
        Billed(
            "claude",
            "acct-claude@prompt_tokens=200,tokens=40,web_search=2",
            200 * claude["input"] + 40 * claude["output"] + 2 * search,
            "computed",
        )
    ]
    # 400 prompt = 300 text + 100 audio; 60 output = 40 text + 20 audio
    out["audio"] = [
        Billed(
            "fakeai",
            "acct-audio@prompt_tokens=400,audio_in=100,tokens=60,audio_out=20",
            300 * audio["input"] + 100 * audio["input_audio"] + 40 * audio["output"] + 20 * audio["output_audio"],
            "computed",
        )
    ]
    long_ = {k: per_token(v) for k, v in LONG.items() if k != "request"}
    above = {k: per_token(v) for k, v in LONG_ABOVE.items()}
    fee = int(Decimal(LONG["request"]) * PICO)
    out["long-context"] = [
        Billed(
            "fakeai",
            "acct-long@prompt_tokens=250000,tokens=100",
            250000 * above["input"] + 100 * above["output"] + fee,
            "computed",
        )
    ]
    out["short-context"] = [
        Billed(
            "fakeai",
            "acct-long@prompt_tokens=200000,tokens=100",
            200000 * long_["input"] + 100 * long_["output"] + fee,
            "computed",
        )
    ]
    out["priority-tier"] = [
        Billed(
            "fakeai",
            "acct-mini@prompt_tokens=100,tokens=10,service_tier=priority",
            100 * mini["input"] + 10 * mini["output"],
            "estimated",
        )
    ]
    # 5000 prompt = 2000 plain + 1000 written for 5 minutes + 2000 written for 1 hour; 80 output
    out["cache-write-1h"] = [
        Billed(
            "claude",
            "acct-claude@prompt_tokens=5000,cache_write=1000,cache_write_1h=2000,tokens=80",
            2000 * claude["input"]
            + 1000 * claude["cache_write"]
            + 2000 * claude["cache_write_1h"]
            + 80 * claude["output"],
            "computed",
        )
    ]
    return out


def _letters_tokens(text: str) -> int:
    """The fake's words are lower-case letters separated by spaces: (letters + 3 per word) // 4 tokens."""
    assert re.fullmatch(r"[a-z ]*", text), text
    words = text.split()
    return (sum(map(len, words)) + 3 * len(words)) // 4


def request_total(attempts: list[Billed]) -> int | None:
    """A request's cost: the sum of its attempts'; unknown when one of them is unpriced."""
    if any(a.pico is None for a in attempts):
        return None
    return sum(a.pico or 0 for a in attempts)


def by_provider_model(exp: dict[str, list[Billed]]) -> dict[tuple[str, str], int | None]:
    """Per (provider, model): the sum of its attempts' costs (None: all it has is unpriced)."""
    out: dict[tuple[str, str], int | None] = {}
    for attempts in exp.values():
        for a in attempts:
            key = (a.provider, a.model)
            if a.pico is None:
                out.setdefault(key, None)
            else:
                out[key] = (out.get(key) or 0) + a.pico
    return out


# --- the gateway and its sinks ----------------------------------------------------------------------------------


def _config(fake_url: str, tmp: Path, agent_url: str, capture_url: str) -> str:
    def price(p: dict[str, str]) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in p.items()) + "}"

    return f"""
admin_key: {ADMIN_KEY}
routing:
  circuit: {{failures: 1000}}
providers:
  - {{name: fakeai, kind: openai_compatible, base_url: "{fake_url}", api_key: "${{TEST_UPSTREAM_KEY}}"}}
  - {{name: claude, kind: anthropic, base_url: "{fake_url}", api_key: "${{TEST_UPSTREAM_KEY}}"}}
  - {{name: orouter, kind: openrouter, base_url: "{fake_url}", api_key: "${{TEST_UPSTREAM_KEY}}"}}
  - {{name: private, kind: openai_compatible, base_url: "{fake_url}", api_key: "${{TEST_UPSTREAM_KEY}}"}}
models:
  - name: acct-failover
    targets: [fakeai/acct-mini@error=503, "fakeai/acct-large@prompt_tokens=700,tokens=70"]
prices:
  fakeai/acct-mini: {price(MINI)}
  fakeai/acct-large: {price(LARGE)}
  fakeai/acct-audio: {price(AUDIO)}
  fakeai/acct-long: {{{", ".join(f"{k}: {v}" for k, v in LONG.items())}, above_tokens: {{200000: {price(LONG_ABOVE)}}}}}
  claude/acct-claude: {price(CLAUDE)}
store: {{path: "{tmp / "store.db"}"}}
broadcast:
  spool_dir: "{tmp / "spool"}"
  destinations:
    - {{name: datadog, kind: datadog, agent_url: "{agent_url}", ml_app: accounting, flush_interval: 0.1}}
    - {{name: otel, kind: otlp, endpoint: "{capture_url}/v1/traces", flush_interval: 0.1}}
    - {{name: hook, kind: webhook, url: "{capture_url}/hook", flush_interval: 0.1}}
    - {{name: lines, kind: file, path: "{tmp / "records.jsonl"}", flush_interval: 0.1}}
"""


@dataclass
class Run:
    gw: GatewayProcess
    agent: DatadogTestAgent
    capture: CaptureServer
    tmp: Path
    ids: dict[str, str]  # case name -> the gateway's request id
    cut_text: str


def _send(gw: GatewayProcess) -> tuple[dict[str, str], str]:
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    ids: dict[str, str] = {}
    cut_text = ""
    for case in CASES:
        messages = [{"role": "user", "content": CUT_PROMPT if case.name == "cut-stream" else "hi"}]
        if case.status != 200:
            with pytest.raises(openai.APIStatusError) as e:
                client.chat.completions.create(model=case.model, messages=messages)  # type: ignore[arg-type]
            assert e.value.status_code == case.status, case.name
            ids[case.name] = e.value.response.headers["x-relaycast-request-id"]
        elif case.name == "cut-stream":
            raw = client.chat.completions.with_raw_response.create(
                model=case.model,
                messages=messages,
                stream=True,  # type: ignore[arg-type]
            )
            ids[case.name] = raw.headers["x-relaycast-request-id"]
            with pytest.raises(openai.APIError):
                for chunk in raw.parse():
                    if chunk.choices:
                        cut_text += chunk.choices[0].delta.content or ""
            assert cut_text, "the cut stream delivered some text before the cut"
        elif case.stream:
            raw = client.chat.completions.with_raw_response.create(
                model=case.model,
                messages=messages,
                stream=True,  # type: ignore[arg-type]
            )
            ids[case.name] = raw.headers["x-relaycast-request-id"]
            assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        else:
            raw = client.chat.completions.with_raw_response.create(model=case.model, messages=messages)  # type: ignore[arg-type]
            ids[case.name] = raw.headers["x-relaycast-request-id"]
    return ids, cut_text


@pytest.fixture(scope="module")
def run(fake: Fake, tmp_path_factory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("accounting")
    (tmp / "no-tokenizer").mkdir()
    agent = DatadogTestAgent()
    capture = CaptureServer().start()
    capture.script.default = 200
    gw = GatewayProcess(
        _config(fake.url, tmp, agent.url, capture.url),
        env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "TIKTOKEN_CACHE_DIR": str(tmp / "no-tokenizer")},
    )
    try:
        gw.wait_ready()
        ids, cut_text = _send(gw)
        wait_stored(gw.url, list(ids.values()))
        yield Run(gw, agent, capture, tmp, ids, cut_text)
    finally:
        gw.stop()
        capture.stop()
        agent.stop()


# --- reading each sink back -------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What one sink says: per request (its cost, and each attempt's (provider, model, pico, source)), and per
    (provider, model). A sink that cannot say something leaves it out."""

    requests: dict[str, tuple[int | None, list[tuple[str, str, int | None, str]]]]
    groups: dict[tuple[str, str], int | None]


def pico_text(v: str | None) -> int | None:
    """Decimal dollars as pico-dollars; a figure finer than a pico-dollar stays fractional, to show as a difference."""
    if v is None:
        return None
    d = Decimal(v) * PICO
    return int(d) if d == d.to_integral_value() else d  # type: ignore[return-value]


def pico_float(v: float | None) -> int | None:
    """A float dollar figure (Datadog, OTLP) as the nearest pico-dollar."""
    return None if v is None else int((Decimal(repr(v)) * PICO).to_integral_value())


def _groups_of(requests: dict[str, tuple[int | None, list[tuple[str, str, int | None, str]]]]) -> dict:
    out: dict[tuple[str, str], int | None] = {}
    for _, attempts in requests.values():
        for provider, model, pico, source in attempts:
            if source == "unpriced" or pico is None:
                out.setdefault((provider, model), None)
            else:
                out[(provider, model)] = (out.get((provider, model)) or 0) + pico
    return out


def read_store(r: Run) -> Seen:
    db = sqlite3.connect(f"file:{r.tmp / 'store.db'}?mode=ro", uri=True)
    try:
        reqs = {}
        for name, rid in r.ids.items():
            row_id, cost = db.execute("SELECT id, cost_pusd FROM requests WHERE request_id = ?", (rid,)).fetchone()
            attempts = db.execute(
                "SELECT provider, model, cost_pusd, cost_source FROM attempts WHERE request_row = ? ORDER BY idx",
                (row_id,),
            ).fetchall()
            reqs[name] = (cost, [(p, m, 0 if s == "none" else c, s) for p, m, c, s in attempts])
        groups: dict[tuple[str, str], int | None] = {}
        # The hourly rollups by target ("provider/model"): what the dashboard, budgets and monitors read.
        for value, cost, unpriced in db.execute(
            "SELECT value, sum(cost_pusd), sum(unpriced) FROM usage_hourly WHERE dim = 'target' GROUP BY value"
        ):
            provider, _, model = value.partition("/")
            groups[(provider, model)] = None if unpriced and not cost else int(cost)
        return Seen(reqs, groups)
    finally:
        db.close()


def read_analytics(r: Run) -> Seen:
    reqs = {}
    for name, rid in r.ids.items():
        status, doc = admin_get(r.gw.url, f"/admin/analytics/requests/{rid}")
        assert status == 200, doc
        reqs[name] = (
            pico_text(doc["request"]["cost_usd"]),
            [(a["provider"], a["model"], pico_text(a["cost_usd"]), a["cost_source"]) for a in doc["attempts"]],
        )
    status, spend = admin_get(r.gw.url, "/admin/analytics/spend?by=target&since=2h&limit=1000")
    assert status == 200, spend
    return Seen(reqs, _target_groups(spend))


def _target_groups(doc: dict[str, Any]) -> dict[tuple[str, str], int | None]:
    out: dict[tuple[str, str], int | None] = {}
    for g in doc["groups"]:
        provider, _, model = g["key"].partition("/")
        out[(provider, model)] = pico_text(g["cost_usd"])
    return out


def read_report(r: Run) -> Seen:
    done = subprocess.run(
        [sys.executable, "-m", "relaycast", "report", "--config", str(r.gw.config_path), "--by", "target",
         "--since", "2h", "--limit", "1000", "--format", "json"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TEST_UPSTREAM_KEY": UPSTREAM_KEY},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Seen({}, _target_groups(json.loads(done.stdout)))


_SAMPLE = re.compile(r"^relaycast_cost_usd_total\{(.*)\} (\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def read_metrics(r: Run) -> Seen:
    import urllib.request

    req = urllib.request.Request(r.gw.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    groups: dict[tuple[str, str], int | None] = {}
    for labels, value in _SAMPLE.findall(text):
        lab = dict(_LABEL.findall(labels))
        key = (lab["provider"], lab["model"])
        groups[key] = (groups.get(key) or 0) + pico_text(value)  # type: ignore[operator]
    for line in re.findall(r"^relaycast_unpriced_requests_total\{(.*)\} \S+$", text, re.M):
        lab = dict(_LABEL.findall(line))
        groups.setdefault((lab["provider"], lab["model"]), None)
    return Seen({}, groups)


def read_datadog(r: Run) -> Seen:
    deadline = time.monotonic() + 20
    while True:
        spans = r.agent.spans()
        roots = {s["meta"]["metadata"].get("request_id"): s for s in spans if s["parent_id"] == "undefined"}
        if all(rid in roots for rid in r.ids.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    reqs = {}
    for name, rid in r.ids.items():
        root = roots.get(rid)
        if root is None:
            continue
        llm = sorted(
            (s for s in spans if s["trace_id"] == root["trace_id"] and s["parent_id"] != "undefined"),
            key=lambda s: s["start_ns"],
        )
        attempts = []
        for s in llm:
            tags = dict(t.split(":", 1) for t in s["tags"])
            cost = pico_float(s["metrics"].get("total_cost"))
            source = tags.get("cost_source", "")
            attempts.append((tags["provider"], s["meta"]["model_name"], 0 if source == "none" else cost, source))
        total = None if any(a[3] == "unpriced" for a in attempts) else sum(a[2] or 0 for a in attempts)
        reqs[name] = (total, attempts)
    return Seen(reqs, _groups_of(reqs))


def read_otlp(r: Run) -> Seen:
    deadline = time.monotonic() + 20
    wanted = set(r.ids.values())
    while True:
        spans = [
            s
            for post in r.capture.posts("/v1/traces")
            for rs in ExportTraceServiceRequest.FromString(post.body).resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        attrs = [(s, {kv.key: kv.value for kv in s.attributes}) for s in spans]
        seen = {a["relaycast.request_id"].string_value for _, a in attrs if "relaycast.request_id" in a}
        if wanted <= seen or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    reqs = {}
    for name, rid in r.ids.items():
        mine = [
            (s, a)
            for s, a in attrs
            if a.get("relaycast.request_id") is not None
            and a["relaycast.request_id"].string_value == rid
            and "relaycast.attempt" in a
        ]
        if not mine:
            continue
        attempts = []
        for _, a in sorted(mine, key=lambda x: x[1]["relaycast.attempt"].int_value):
            source = a["relaycast.cost.source"].string_value if "relaycast.cost.source" in a else "none"
            cost = pico_float(a["relaycast.cost.usd"].double_value) if "relaycast.cost.usd" in a else None
            attempts.append(
                (a["relaycast.provider"].string_value, a["gen_ai.request.model"].string_value,
                 0 if source == "none" else cost, source)
            )  # fmt: skip
        total = None if any(x[3] == "unpriced" for x in attempts) else sum(x[2] or 0 for x in attempts)
        reqs[name] = (total, attempts)
    return Seen(reqs, _groups_of(reqs))


def _from_records(records: list[dict[str, Any]], r: Run) -> Seen:
    by_id = {rec["request_id"]: rec for rec in records}
    reqs = {}
    for name, rid in r.ids.items():
        rec = by_id.get(rid)
        if rec is None:
            continue
        reqs[name] = (
            pico_text(rec["cost_usd"]),
            [(a["provider"], a["model"], pico_text(a["cost_usd"]), a["cost_source"]) for a in rec["attempts"]],
        )
    return Seen(reqs, _groups_of(reqs))


def read_webhook(r: Run) -> Seen:
    r.capture.wait_for(
        lambda: (
            set(r.ids.values())
            <= {rec["request_id"] for p in r.capture.posts("/hook") for rec in json.loads(p.body)["records"]}
        ),
        timeout=20,
    )
    return _from_records([rec for p in r.capture.posts("/hook") for rec in json.loads(p.body)["records"]], r)


def read_file(r: Run) -> Seen:
    path = r.tmp / "records.jsonl"
    deadline = time.monotonic() + 20
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        if set(r.ids.values()) <= {x["request_id"] for x in lines} or time.monotonic() > deadline:
            return _from_records(lines, r)
        time.sleep(0.1)


# --- the comparison ---------------------------------------------------------------------------------------------


def _off(got: int | None, want: int | None) -> str:
    if got is None or want is None:
        return "one is unknown (unpriced), the other not"
    return f"off by {got - want:+d} pico-dollars"


def disagreements(sink: str, seen: Seen, exp: dict[str, list[Billed]], per_request: bool) -> list[str]:
    out = []
    if per_request:
        for name, attempts in exp.items():
            if name not in seen.requests:
                out.append(f"{sink}: request {name!r} is missing")
                continue
            total, got = seen.requests[name]
            want_total = request_total(attempts)
            if total != want_total:
                out.append(f"{sink}: request {name!r} costs {total}, expected {want_total}: {_off(total, want_total)}")
            want = [(a.provider, a.model, a.pico, a.source) for a in attempts]
            if len(got) != len(want):
                out.append(f"{sink}: request {name!r} has {len(got)} attempts, expected {len(want)}: {got}")
                continue
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                if g != w:
                    out.append(
                        f"{sink}: request {name!r} attempt {i} is {g}, expected {w}"
                        + (f": {_off(g[2], w[2])}" if g[2] != w[2] else "")
                    )
    want_groups = by_provider_model(exp)
    for key in sorted(set(want_groups) | set(seen.groups), key=str):
        got_g, want_g = seen.groups.get(key, "missing"), want_groups.get(key, "absent")
        if got_g == want_g or (want_g in (0, None) and got_g == "missing"):  # nothing to show is allowed to be absent
            continue
        off = _off(got_g, want_g) if not isinstance(got_g, str) and not isinstance(want_g, str) else ""  # type: ignore[arg-type]
        out.append(f"{sink}: (provider, model) {key} costs {got_g}, expected {want_g} {off}".rstrip())
    return out


def test_every_sink_agrees_with_the_hand_computed_costs(run: Run) -> None:
    exp = expected(run.cut_text)
    assert set(exp) == {c.name for c in CASES}
    problems: list[str] = []
    for sink, seen, per_request in (
        ("store", read_store(run), True),
        ("analytics API", read_analytics(run), True),
        ("relaycast report --json", read_report(run), False),
        ("/metrics", read_metrics(run), False),
        ("Datadog", read_datadog(run), True),
        ("OTLP", read_otlp(run), True),
        ("webhook", read_webhook(run), True),
        ("file", read_file(run), True),
    ):
        problems += disagreements(sink, seen, exp, per_request)
    assert not problems, "sinks disagree with the hand-computed costs:\n  " + "\n  ".join(problems)


def test_the_workload_is_what_it_claims(run: Run) -> None:
    """The cases exercise what they are named for: the stored tokens show the cache reads and writes, the reasoning,
    the estimate and the failover; and the request totals add up to the all-time total."""
    _, spend = admin_get(run.gw.url, "/admin/analytics/spend?by=model&since=2h&limit=1000")
    exp = expected(run.cut_text)
    known = sum(t for t in (request_total(a) for a in exp.values()) if t is not None)
    assert pico_text(spend["totals"]["cost_usd"]) == known, (spend["totals"], known)
    assert spend["totals"]["requests"] == len(CASES) and spend["totals"]["unpriced_requests"] == 1
    # estimated: the cut stream, and the tier a config price has no rates for
    assert spend["totals"]["estimated_requests"] == 2 and spend["totals"]["reported_requests"] == 1
    details = {n: admin_get(run.gw.url, f"/admin/analytics/requests/{rid}")[1] for n, rid in run.ids.items()}
    assert details["cached"]["request"]["cached_tokens"] == 400
    assert details["reasoning"]["request"]["reasoning_tokens"] == 350
    assert details["cache-write-5m"]["request"]["cache_write_tokens"] == 1500
    cut = details["cut-stream"]["attempts"][0]
    assert cut["error_class"] == "stream_cut" and cut["prompt_tokens"] == CUT_PROMPT_TOKENS
    assert [a["error_class"] for a in details["failover"]["attempts"]] == ["upstream_5xx", None]
    assert details["rate-limited"]["request"]["status"] == 429


def test_every_inexact_cost_says_why_on_the_record(run: Run) -> None:
    """An estimated or unpriced attempt carries the reason (`cost_note`); an exact one carries none."""
    read_file(run)  # waits until every record is in the file
    lines = [json.loads(x) for x in (run.tmp / "records.jsonl").read_text().splitlines()]
    notes = {a["cost_source"]: [] for x in lines for a in x["attempts"]}
    for x in lines:
        for a in x["attempts"]:
            notes[a["cost_source"]].append(a["cost_note"])
    assert all(n for n in notes["estimated"]) and len(notes["estimated"]) == 2, notes["estimated"]
    assert any("no usage reported" in n for n in notes["estimated"])
    assert any("'priority'" in n for n in notes["estimated"]), "the tier a config price has no rates for"
    assert notes["unpriced"] == ["no price for 'acct-unpriced@prompt_tokens=50,tokens=10' on provider 'private'"]
    assert set(notes["computed"]) == {None} and set(notes.get("reported", [None])) == {None}

"""What the HTTP layer costs a forwarder: the server (uvicorn with httptools, as relaycast serves, against granian's
RSGI, and relaycast's own server) crossed with the upstream client (aiohttp, a general-purpose client; relaycast's
own `UpstreamClient`, as it calls providers; and a minimal HTTP/1.1 client on an asyncio protocol and httptools'
response parser). Each of the six forwarders does what bench/forwarder.py does for a non-streaming answer and nothing
else; the minimal client is a measuring stick (keep-alive, no TLS, no streaming, no limits), not a client relaycast
could use as it is. `relaycast-server` is the server as relaycast runs it (`server.runner.uvicorn_config`: uvicorn's
server around relaycast's own HTTP/1.1 protocol, with its connection guards and one write per response).

Then the server alone, answering a fixed body without an upstream (`+fixed`): uvicorn with an ASGI app; relaycast's
server with the same app; and a bare asyncio protocol with httptools' request parser that writes the answer from
its parser callback (keep-alive only, no ASGI, no limits: the floor a server in Python on uvloop stands on, not one
relaycast could use as it is).

    python bench/http_layer.py [--rounds 3] [--duration 8]

Layout as in bench/load.py with one worker: the forwarder under test on core 0, the fake upstream and wrk on core
1; JSON with an instant upstream at 50 connections; the forwarders in an order rotating by round. Prints CPU µs per
request of the forwarder's whole process tree and requests per second, medians over rounds, and writes
bench/results/http_layer-latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load_procs import HOST, free_port, pinned, settle, start, stop, tree_cpu_seconds, wait_http, wait_port  # noqa: E402

VARIANTS = (
    "uvicorn+aiohttp",
    "uvicorn+relaycast",
    "relaycast-server+relaycast",
    "uvicorn+protocol",
    "granian-rsgi+aiohttp",
    "granian-rsgi+protocol",
    "uvicorn+fixed",
    "relaycast-server+fixed",
    "httptools+fixed",
)
FIXED = (  # about the size of the fake upstream's answer
    b'{"id":"chatcmpl-fixed","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":'
    b'0,"message":{"role":"assistant","content":"the quick brown fox jumps over the lazy dog and the quick brown fox'
    b' jumps"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":20,"total_tokens":40}}'
)
BODY = (
    '{"model":"gpt-4o-mini@latency_ms=0,tokens=20","messages":[{"role":"user","content":"Say hello to the '
    'benchmark in one short sentence."}],"max_tokens":64}'
)
JSON_HEADERS = {"content-type": "application/json"}
UPSTREAM_ENV = "BENCH_HTTP_LAYER_UPSTREAM"  # host:port of the fake upstream, for granian's worker processes


# --- the minimal client ------------------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    def __init__(self, idle: list[_Conn]) -> None:
        import httptools

        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed the connection"))

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.idle.append(self)


class ProtocolClient:
    """POST a JSON body, read the whole answer; one request per connection at a time, connections kept alive."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[_Conn] = []

    async def post(self, path: str, body: bytes, loop: asyncio.AbstractEventLoop) -> tuple[int, bytes]:
        conn = None
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                break
            conn = None
        if conn is None:
            _, conn = await loop.create_connection(lambda: _Conn(self.idle), self.host, self.port)
        assert conn.transport is not None
        conn.waiter = loop.create_future()
        conn.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), self.port, len(body), body)
        )
        return await conn.waiter


# --- the four forwarders (each run in its own process by `--serve VARIANT`) ---------------------------------------


def _upstream() -> tuple[str, int]:
    host, _, port = os.environ[UPSTREAM_ENV].rpartition(":")
    return host, int(port)


class _Asgi:
    def __init__(self, client: str) -> None:
        self.client = client
        self.session: Any = None
        self.proto: ProtocolClient | None = None
        self.relaycast: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        parts = []
        while True:
            msg = await receive()
            parts.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        status, data = await self._forward(scope["path"], b"".join(parts))
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": data})

    async def _forward(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.client == "fixed":
            return 200, FIXED
        host, port = _upstream()
        if self.client == "protocol":
            if self.proto is None:
                self.proto = ProtocolClient(host, port)
            return await self.proto.post(path, body, asyncio.get_running_loop())
        if self.client == "relaycast":
            from relaycast.providers.client import UpstreamClient

            if self.relaycast is None:
                self.relaycast = UpstreamClient()
            answer = await self.relaycast.post(f"http://{host}:{port}{path}", body, JSON_HEADERS, 10.0)
            data = answer.whole()
            if data is None:
                parts = []
                while part := await answer.read():
                    parts.append(part)
                data = b"".join(parts)
            answer.release()
            return answer.status, data
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(auto_decompress=False)
        headers = {"Content-Type": "application/json"}
        async with self.session.post(f"http://{host}:{port}{path}", data=body, headers=headers) as r:
            return r.status, await r.read()


class _Rsgi(_Asgi):
    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        status, data = await self._forward(scope.path, await proto())
        proto.response_bytes(status, [("content-type", "application/json")], data)


def rsgi_aiohttp() -> _Rsgi:
    return _Rsgi("aiohttp")


def rsgi_protocol() -> _Rsgi:
    return _Rsgi("protocol")


class _FixedAnswer(asyncio.Protocol):
    """`httptools+fixed`: the fixed answer written from the parser's callback, on a kept-alive connection."""

    ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(FIXED), FIXED)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import httptools

        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(self.ANSWER)


def serve(variant: str, port: int) -> None:
    server, client = variant.split("+")
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(_Asgi(client), host=HOST, port=port, loop="uvloop", http="httptools", log_level="warning")
        return
    if server == "relaycast-server":
        import uvicorn

        from relaycast.server.runner import uvicorn_config

        uvicorn.Server(uvicorn_config(_Asgi(client), HOST, port)).run()
        return
    if server == "httptools":
        import uvloop

        async def main() -> None:
            srv = await asyncio.get_running_loop().create_server(_FixedAnswer, HOST, port)
            await srv.serve_forever()

        uvloop.run(main())
        return
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    Granian(
        target=f"http_layer:rsgi_{client}",
        factory=True,
        working_dir=HERE,
        address=HOST,
        port=port,
        interface=Interfaces.RSGI,
        workers=1,
        log_level=LogLevels.warning,
    ).serve()


# --- the run -------------------------------------------------------------------------------------------------------


def wrk(url: str, seconds: int, script: Path) -> int:
    out = subprocess.run(
        pinned(["wrk", "-t1", "-c50", f"-d{seconds}s", "-s", str(script), url], "1"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors from {url}: {out}")
    return int(out.split(" requests in", 1)[0].rsplit(None, 1)[-1])


def run(rounds: int, duration: int) -> dict[str, list[tuple[float, float]]]:
    tmp = Path(tempfile.mkdtemp(prefix="relaycast-http-layer-"))
    script = tmp / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [==[{BODY}]==]\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    up = free_port()
    fake_cmd = [sys.executable, "-m", "relaycast", "fake-upstream", "--host", HOST, "--port", str(up)]
    fake = start(pinned(fake_cmd + ["--log-level", "critical"], "1"), tmp / "fake.log")
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    try:
        wait_http(f"http://{HOST}:{up}/v1/models", fake, tmp / "fake.log")
        env = {**os.environ, UPSTREAM_ENV: f"{HOST}:{up}"}
        for r in range(rounds):
            for variant in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:
                port = free_port()
                cmd = pinned([sys.executable, str(Path(__file__)), "--serve", variant, "--port", str(port)], "0")
                log = tmp / f"{variant}.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
                try:
                    url = f"http://{HOST}:{port}/v1/chat/completions"
                    wait_port(port, proc)
                    wrk(url, 2, script)  # warm-up
                    settle(proc.pid)
                    cpu0 = tree_cpu_seconds(proc.pid)
                    n = wrk(url, duration, script)
                    settle(proc.pid)
                    cpu = tree_cpu_seconds(proc.pid) - cpu0
                finally:
                    stop(proc)
                results[variant].append((cpu / n * 1e6, n / duration))
                print(f"round {r + 1} {variant}: {cpu / n * 1e6:.0f} µs/req, {n / duration:,.0f} req/s", flush=True)
    finally:
        stop(fake)
    return results


def report(results: dict[str, list[tuple[float, float]]], rounds: int, duration: int) -> str:
    base = statistics.median(c for c, _ in results["uvicorn+aiohttp"])
    from load import machine  # the same description of the machine as bench/load.py's

    m = machine()
    lines = [
        f"{time.strftime('%Y-%m-%d')}. Machine: {m.get('cpu', '?')}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}. `python bench/http_layer.py --rounds {rounds} --duration {duration}`;"
        " medians over rounds.",
        "",
        "| server + upstream client | CPU µs per request | against uvicorn + aiohttp | req/s |",
        "|---|---:|---:|---:|",
    ]
    forwarders = [v for v in VARIANTS if not v.endswith("+fixed")]
    for v in forwarders:
        cpu = statistics.median(c for c, _ in results[v])
        rps = statistics.median(r for _, r in results[v])
        lines.append(f"| {v} | {cpu:.1f} | {cpu / base:.2f}x | {rps:,.0f} |")
    fixed = statistics.median(c for c, _ in results["uvicorn+fixed"])
    lines += [
        "",
        "The server alone, a fixed answer (no upstream):",
        "",
        "| server | CPU µs per request | against uvicorn | req/s |",
        "|---|---:|---:|---:|",
    ]
    for v in VARIANTS:
        if v not in forwarders:
            cpu = statistics.median(c for c, _ in results[v])
            rps = statistics.median(r for _, r in results[v])
            lines.append(f"| {v.removesuffix('+fixed')} | {cpu:.1f} | {cpu / fixed:.2f}x | {rps:,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8, help="seconds per measured run (default 8)")
    p.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)  # one forwarder, in this process
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    results = run(args.rounds, args.duration)
    text = report(results, args.rounds, args.duration)
    print()
    print(text)
    out = HERE / "results" / "http_layer-latest.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

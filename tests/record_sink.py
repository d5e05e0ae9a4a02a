"""A webhook receiver that counts `relaycast.request.v1` records by request id, run as its own process, whose
behaviour can be switched while the gateway sends to it: `ok` (200, records counted), `503`, `hang` (reads the
POST and never answers) and `refuse` (stops listening and closes every connection, so the gateway's next
connection is refused). Used by the outage test and bench/broadcast.py.

    python -m tests.record_sink --port P --control-port C     # from the repository's root

The control port answers `GET /summary` (counts), `GET /delivered` (request id -> times delivered in a 2xx
answer), `POST /mode?set=ok|503|hang|refuse` and `POST /reset`. `RecordSink` starts the process and wraps these.
A record counts as delivered only when its POST was answered 2xx; a hung POST released later is aborted (the
gateway sees a connection error, never a success).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

MODES = ("ok", "503", "hang", "refuse")
ROOT = Path(__file__).resolve().parents[1]


class _Sink:
    """The receiver inside the sink process (one event loop)."""

    def __init__(self, port: int) -> None:
        from aiohttp import web

        self.port = port
        self.mode = "ok"
        self.delivered: Counter[str] = collections.Counter()
        self.posts: Counter[str] = collections.Counter()  # by the mode that answered them
        self.unparsed = 0  # 2xx POSTs whose body was not a records envelope
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def listen(self) -> None:
        from aiohttp import web

        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._runner = runner

    async def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        previous, self.mode = self.mode, mode
        if previous == "hang" and mode != "hang":
            self._release.set()  # hung POSTs are aborted, never answered
            self._release = asyncio.Event()
        if mode == "refuse" and self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()  # stops listening and closes the kept-alive connections too
        elif mode != "refuse":
            await self.listen()

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        mode = self.mode
        self.posts[mode] += 1
        if mode == "hang":
            await self._release.wait()
            if request.transport is not None:
                request.transport.abort()  # the gateway sees the connection drop: nothing is answered
            return web.Response(status=503)
        if mode != "ok":
            return web.Response(status=503, body=b"{}", content_type="application/json")
        try:
            records = json.loads(body)["records"]
            ids = [r["request_id"] for r in records]
        except (ValueError, KeyError, TypeError):
            self.unparsed += 1
        else:
            self.delivered.update(ids)
        return web.Response(status=200, body=b"{}", content_type="application/json")

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "posts": dict(self.posts),
            "unique": len(self.delivered),
            "records": sum(self.delivered.values()),
            "duplicates": sum(n - 1 for n in self.delivered.values()),
            "unparsed": self.unparsed,
        }


async def _serve(port: int, control_port: int) -> None:
    from aiohttp import web

    sink = _Sink(port)
    await sink.listen()

    async def summary(_: web.Request) -> web.Response:
        return web.json_response(sink.summary())

    async def delivered(_: web.Request) -> web.Response:
        return web.json_response(dict(sink.delivered))

    async def mode(request: web.Request) -> web.Response:
        await sink.set_mode(request.query.get("set", ""))
        return web.json_response(sink.summary())

    async def reset(_: web.Request) -> web.Response:
        await sink.set_mode("ok")
        sink.delivered.clear()
        sink.posts.clear()
        sink.unparsed = 0
        return web.json_response(sink.summary())

    control = web.Application()
    control.router.add_get("/summary", summary)
    control.router.add_get("/delivered", delivered)
    control.router.add_post("/mode", mode)
    control.router.add_post("/reset", reset)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    await asyncio.Event().wait()


class RecordSink:
    """The sink process, from a test or a benchmark: `RecordSink().start()`, then `url`, `set_mode`, ..."""

    def __init__(self, log_path: str | os.PathLike[str] | None = None) -> None:
        from relaycast.server.runner import free_port

        self.port = free_port()
        self.control_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/records"
        self._control = f"http://127.0.0.1:{self.control_port}"
        self._log = open(log_path or os.devnull, "wb")  # closed in stop()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> RecordSink:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.record_sink",
                "--port",
                str(self.port),
                "--control-port",
                str(self.control_port),
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.summary()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the record sink did not start") from None
                time.sleep(0.05)

    def _call(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(self._control + path, data=b"" if method == "POST" else None, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def summary(self) -> dict[str, Any]:
        """mode, posts by mode, unique ids delivered, records delivered, duplicates, unparsed."""
        result: dict[str, Any] = self._call("/summary")
        return result

    def delivered(self) -> Counter[str]:
        return collections.Counter(self._call("/delivered"))

    def set_mode(self, mode: str) -> None:
        self._call(f"/mode?set={mode}", "POST")

    def reset(self) -> None:
        self._call("/reset", "POST")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def main() -> None:
    p = argparse.ArgumentParser(description="a webhook receiver that counts records by request id")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(args.port, args.control_port))


if __name__ == "__main__":
    main()

"""A capture server for broadcast tests: records every request; its answers can be scripted (status, delay). And
`Sink`, a record sink for a gateway run in process (`Gateway(config, sinks=[sink])`) that tests wait on."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from relaycast.records import RequestRecord
from relaycast.server.runner import free_port


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int = 0  # what the server answered


@dataclass
class Script:
    """What the server answers: `statuses` are used first, one per request; then `default`."""

    statuses: list[int] = field(default_factory=list)
    default: int = 202
    delay_s: float = 0.0
    body: bytes = b"{}"
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # path -> fixed answer


class CaptureServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Captured] = []
        self.script = Script()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            fixed = self.script.routes.get(request.path)
            status = self.script.statuses.pop(0) if self.script.statuses and fixed is None else self.script.default
            if fixed is not None:
                status = fixed[0]
            delay = self.script.delay_s
            self.requests.append(
                Captured(request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body, status)
            )
        if fixed is not None:
            return web.Response(status=fixed[0], body=fixed[1], content_type="application/json")
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, body=self.script.body, content_type="application/json")

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        # Cancel scripted slow answers still pending, so no coroutine outlives this server's loop.
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert self._runner is not None
        await self._runner.cleanup()

    def start(self) -> CaptureServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def posts(self, path: str | None = None) -> list[Captured]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and (path is None or r.path == path)]

    def wait_for(self, predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out waiting on the capture server"
            time.sleep(0.02)


class AsyncCapture:
    """The same, inside a test's own event loop: `async with AsyncCapture() as cap`. `answers` are used in order,
    each a status or (status, headers, body); then 200 with an empty body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []  # (path, lower-case headers, body)
        self.answers: list[int | tuple[int, dict[str, str], bytes]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        answer = self.answers.pop(0) if self.answers else 200
        status, headers, out = (answer, {}, b"") if isinstance(answer, int) else answer
        return web.Response(status=status, headers=headers, body=out)

    async def __aenter__(self) -> AsyncCapture:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def run_with_capture(body: Callable[[AsyncCapture, aiohttp.ClientSession], Awaitable[Any]]) -> Any:
    """Run `body(capture, session)` in a fresh event loop with a capture server and a client session."""

    async def main() -> Any:
        async with AsyncCapture() as cap, aiohttp.ClientSession() as session:
            return await body(cap, session)

    return asyncio.run(main())


class Sink:
    """Every record the gateway emits, in order; `wait_for(request_id)` blocks until its record came."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.cond = threading.Condition()

    def __call__(self, rec: RequestRecord) -> None:
        with self.cond:
            self.records.append(rec)
            self.cond.notify_all()

    def wait_for(self, request_id: str, timeout: float = 5.0) -> RequestRecord:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.records:
                    if r.request_id == request_id:
                        return r
                left = deadline - time.monotonic()
                assert left > 0, f"no record for {request_id}"
                self.cond.wait(left)


class ForwardProxy(CaptureServer):
    """An HTTP forward proxy (what HTTP_PROXY names): takes absolute-form requests, records each one's absolute URL
    in `proxied`, and forwards it."""

    def __init__(self) -> None:
        super().__init__()
        self.proxied: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        target = request._message.url  # absolute-form: http://host:port/path
        body = await request.read()
        with self._lock:
            self.proxied.append(str(target))
        hop = {"host", "proxy-connection", "proxy-authorization", "content-length", "connection", "keep-alive"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        async with aiohttp.ClientSession() as s:
            async with s.request(request.method, str(target), data=body, headers=headers) as r:
                return web.Response(status=r.status, body=await r.read())

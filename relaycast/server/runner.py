"""Running an ASGI app on loopback: in the foreground (the CLI) or on a background thread (tests, the demo)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


def uvicorn_config(app: Any, host: str, port: int, log_level: str = "warning", **kw: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        server_header=False,
        date_header=False,
        timeout_keep_alive=75,
        **kw,
    )


def tune_gc() -> None:
    """Fewer, later garbage collections for a long-running server: objects made at start-up are frozen out of
    the collector, and the young generation is collected every 50,000 allocations instead of 700. Measured with
    wrk against the fake upstream (50 connections, 50 ms): the gateway's p99 fell from about 75 to 65 ms."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class ThreadedServer:
    """An ASGI app served by uvicorn on a daemon thread, with its own event loop."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "error") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(app, self.host, self.port, log_level=log_level))
        self._thread = threading.Thread(target=self._run, name=f"asgi-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

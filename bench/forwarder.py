"""A bare forwarder, the yardstick bench/load.py holds relaycast against: granian's RSGI interface and one aiohttp
ClientSession per worker, no features. It sends each request's method, path, query and body to the upstream and
writes the answer back; an event stream goes back chunk by chunk as it arrives.

    python bench/forwarder.py --upstream http://127.0.0.1:8081 --port 8090 [--workers 2]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import aiohttp
from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels
from granian.rsgi import ProtocolClosed  # type: ignore[attr-defined]  # re-exported without __all__

UPSTREAM_ENV = "BENCH_FORWARDER_UPSTREAM"  # how the workers learn the upstream (they import this module afresh)


class Forwarder:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None  # opened on the first request, inside the worker's loop

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        body = await proto()
        if self.session is None:
            self.session = aiohttp.ClientSession(auto_decompress=False)
        url = self.upstream + scope.path + (f"?{scope.query_string}" if scope.query_string else "")
        headers = {"Content-Type": scope.headers.get("content-type") or "application/json"}
        async with self.session.request(scope.method, url, data=body, headers=headers) as r:
            out = [("content-type", r.headers.get("Content-Type", "application/octet-stream"))]
            if not out[0][1].startswith("text/event-stream"):
                proto.response_bytes(r.status, out, await r.read())
                return
            transport = proto.response_stream(r.status, out)
            try:
                async for chunk in r.content.iter_any():
                    await transport.send_bytes(chunk)
            except ProtocolClosed:  # the client went away mid-stream
                return

    def __rsgi_del__(self, loop: Any) -> None:
        if self.session is not None:
            loop.run_until_complete(self.session.close())


def from_env() -> Forwarder:
    return Forwarder(os.environ[UPSTREAM_ENV])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="base URL of the upstream, e.g. http://127.0.0.1:8081")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    os.environ[UPSTREAM_ENV] = args.upstream
    Granian(
        target="forwarder:from_env",
        factory=True,
        working_dir=Path(__file__).resolve().parent,
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        workers=args.workers,
        log_level=LogLevels.warning,
    ).serve()


if __name__ == "__main__":
    main()

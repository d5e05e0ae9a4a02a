"""The limiter's small Redis client against this machine's Redis, and against a server that never answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from relaycast.redis import RedisReplyError, RespClient

URL = "redis://127.0.0.1:6379/7"


def test_commands_pipelines_errors_and_concurrency():
    async def main() -> None:
        c = RespClient(URL, 1.0)
        try:
            assert await c.call("SET", "relaycast:test:x", "1") == b"OK"
            assert await c.call("INCRBY", "relaycast:test:x", 41) == 42
            with pytest.raises(RedisReplyError, match="NOSCRIPT"):
                await c.call("EVALSHA", "0" * 40, 0)
            replies = await c.pipeline(
                [
                    ("INCRBY", "relaycast:test:x", 1),
                    ("HINCRBY", "relaycast:test:x", "f", 1),
                    ("GET", "relaycast:test:x"),
                ]
            )
            assert replies[0] == 43 and isinstance(replies[1], RedisReplyError) and replies[2] == b"43"
            # Many calls in flight on one connection get their own replies, in order.
            got = await asyncio.gather(*(c.call("ECHO", str(i)) for i in range(500)))
            assert got == [str(i).encode() for i in range(500)]
        finally:
            await c.call("DEL", "relaycast:test:x")
            await c.close()

    asyncio.run(main())


def test_a_server_that_never_answers_fails_the_call_within_the_timeout_and_the_next_call_reconnects():
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            await asyncio.sleep(10)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = RespClient(f"redis://127.0.0.1:{port}/0", 0.2)
        t0 = time.monotonic()
        with pytest.raises(ConnectionError):
            await c.call("PING")
        assert time.monotonic() - t0 < 1.0
        server.close()
        with pytest.raises(OSError):  # refused now: a fresh connection is tried, not the dead one
            await c.call("PING")
        await c.close()

    asyncio.run(main())

"""relaycast's Redis client against this machine's Redis, against Redis servers of its own (a password-protected
one on a unix socket, one speaking TLS), and against a server that never answers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relaycast.redis import RedisReplyError, RespClient
from tests.certs import loopback_certs

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


def test_the_hash_commands_shared_routing_health_uses_pipelined_in_one_round_trip():
    async def main() -> None:
        c = RespClient(URL, 1.0)
        key = "relaycast:test:health"
        try:
            replies = await c.pipeline(
                [
                    ("DEL", key),
                    ("HSET", key, "a|open|p/m", b'{"until":1}', "a|demoted|r|p/m", b"{}"),
                    ("HDEL", key, "a|demoted|r|p/m"),
                    ("HGETALL", key),
                ]
            )
            assert replies == [0, 2, 1, [b"a|open|p/m", b'{"until":1}']]
            assert await c.call("HGETALL", "relaycast:test:absent") == []
        finally:
            await c.call("DEL", key)
            await c.close()

    asyncio.run(main())


def _redis_server(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not at hand")
    return subprocess.Popen(
        ["redis-server", "--save", "", "--appendonly", "no", "--dir", str(tmp_path), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait(ready: Callable[[], None], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            ready()
            return
        except OSError:
            assert proc.poll() is None, "redis-server exited"
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "redis.sock")
    proc = _redis_server(tmp_path, "--port", "0", "--unixsocket", path, "--requirepass", "s3cret:pw")

    def ready() -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)

    try:
        _wait(ready, proc)
        yield path
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_unix_socket_with_a_password_and_a_database_and_a_wrong_password_refused(unix_redis):
    async def main() -> None:
        c = RespClient(f"unix://:s3cret%3Apw@{unix_redis}?db=3", 1.0)
        try:
            assert await c.call("SET", "k", "v") == b"OK"
            assert (await c.pipeline([("GET", "k"), ("PING",)])) == [b"v", b"PONG"]
            info = (await c.call("CLIENT", "INFO")).decode()
            assert " db=3 " in info and " user=default " in info
        finally:
            await c.close()
        wrong = RespClient(f"unix://:nope@{unix_redis}", 1.0)
        for _ in range(2):  # refused each time: a connection that failed AUTH is not kept for the next call
            with pytest.raises(RedisReplyError, match="WRONGPASS"):
                await wrong.call("PING")
        await wrong.close()
        anonymous = RespClient(f"unix://{unix_redis}", 1.0)
        with pytest.raises(RedisReplyError, match="NOAUTH"):
            await anonymous.call("GET", "k")
        await anonymous.close()

    asyncio.run(main())


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    loopback_certs(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _redis_server(
        tmp_path,
        *("--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port), "--tls-auth-clients", "no"),
        *("--tls-cert-file", "server.crt", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt"),
    )
    try:
        _wait(lambda: socket.create_connection(("127.0.0.1", port), 0.2).close(), proc)
        yield port, tmp_path / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(10)


def test_rediss_speaks_tls_verified_against_the_given_ca_and_refuses_an_unknown_one(tls_redis):
    port, ca = tls_redis

    async def main() -> None:
        c = RespClient(f"rediss://127.0.0.1:{port}/2?ssl_ca_certs={ca}", 1.0)
        try:
            assert await c.call("SET", "k", "tls") == b"OK"
            assert await c.call("GET", "k") == b"tls"
            assert " db=2 " in (await c.call("CLIENT", "INFO")).decode()
        finally:
            await c.close()
        untrusted = RespClient(f"rediss://127.0.0.1:{port}/0", 1.0)
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.call("PING")
        await untrusted.close()

    asyncio.run(main())

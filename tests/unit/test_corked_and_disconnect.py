"""The serving path's two per-connection helpers: a response's writes leave in one write at the end of the event
loop's step (`CorkedTransport`), and the connection's end cancels the request being served at once
(`Disconnect`, `run_until_disconnect`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from relaycast.asgi import DISCONNECT, ClientGone, Disconnect, run_until_disconnect
from relaycast.server.corked import CorkedTransport


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in an event loop of its own."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class Recorder(asyncio.Transport):
    """The transport under the wrapper: what reached it, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Any] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.calls.append(("writelines", [bytes(c) for c in chunks]))

    def write_eof(self) -> None:
        self.calls.append("eof")

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.calls.append("close")
        self.closing = True

    def abort(self) -> None:
        self.calls.append("abort")
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return sum(len(c) for c in self.calls if isinstance(c, bytes))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default


async def _step() -> None:
    await asyncio.sleep(0)


@in_loop
async def test_a_head_and_body_written_in_one_step_leave_in_one_write_in_order() -> None:
    raw = Recorder()
    t = CorkedTransport(raw, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(b"{}")
    assert raw.calls == [], "held until the step ends"
    await _step()
    assert raw.calls == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


@in_loop
async def test_writes_in_separate_steps_each_leave_at_the_end_of_their_own_step() -> None:
    raw = Recorder()
    t = CorkedTransport(raw, asyncio.get_running_loop())
    for chunk in (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"):
        t.write(chunk)
        await _step()
        assert raw.calls[-1] == chunk, "a stream's chunk is not held past its step"
    assert len(raw.calls) == 3


@in_loop
async def test_close_and_write_eof_write_what_is_held_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    raw = Recorder()
    t = CorkedTransport(raw, loop)
    t.write(b"answer")
    t.close()
    assert raw.calls == [b"answer", "close"]
    await _step()
    assert raw.calls == [b"answer", "close"], "nothing written after the close"

    raw = Recorder()
    t = CorkedTransport(raw, loop)
    t.writelines([b"a", b"b"])
    t.write_eof()
    assert raw.calls == [b"ab", "eof"]

    with pytest.raises(RuntimeError):
        t.write(b"after the end")  # refused to the writer, as the transport refuses it
    assert raw.calls == [b"ab", "eof"]

    raw = Recorder()
    t = CorkedTransport(raw, loop)
    t.write(b"never sent")
    t.abort()
    await _step()
    assert raw.calls == ["abort"]


@in_loop
async def test_the_write_buffer_size_counts_what_is_held_and_other_calls_reach_the_transport() -> None:
    raw = Recorder()
    t = CorkedTransport(raw, asyncio.get_running_loop())
    t.write(b"12345")
    assert t.get_write_buffer_size() == 5
    assert t.get_extra_info("peername") == ("127.0.0.1", 1234)
    assert t.can_write_eof()


def _scope(d: Disconnect | None) -> dict[str, Any]:
    return {"type": "http", "extensions": {DISCONNECT: d}} if d is not None else {"type": "http"}


async def _never_receive() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@in_loop
async def test_the_connections_end_cancels_the_work_at_once_as_client_gone() -> None:
    d = Disconnect(asyncio.get_running_loop())
    started = asyncio.Event()

    async def work() -> str:
        started.set()
        await asyncio.sleep(30)
        return "answered"

    task = asyncio.ensure_future(run_until_disconnect(_never_receive, work(), _scope(d)))
    await started.wait()
    d.fire()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, 2)


@in_loop
async def test_a_connection_gone_before_the_work_starts_runs_none_of_it() -> None:
    d = Disconnect(asyncio.get_running_loop())
    d.fire()
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(ClientGone):
        await run_until_disconnect(_never_receive, work(), _scope(d))
    assert not ran


@in_loop
async def test_work_that_ends_first_returns_and_a_later_end_of_the_connection_cancels_nothing() -> None:
    d = Disconnect(asyncio.get_running_loop())

    async def work() -> str:
        await _step()
        return "answered"

    assert await run_until_disconnect(_never_receive, work(), _scope(d)) == "answered"
    assert not d._watchers, "the watcher went with the work"
    d.fire()
    await _step()


@in_loop
async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    d = Disconnect(asyncio.get_running_loop())

    async def work() -> None:
        await asyncio.sleep(30)

    task = asyncio.ensure_future(run_until_disconnect(_never_receive, work(), _scope(d)))
    await _step()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not d._watchers


@in_loop
async def test_without_the_servers_disconnect_a_watcher_waits_for_http_disconnect() -> None:
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def work() -> None:
        await asyncio.sleep(30)

    task = asyncio.ensure_future(run_until_disconnect(receive, work(), _scope(None)))
    await _step()
    gone.set()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, 2)


@in_loop
async def test_more_than_the_hold_limit_in_one_step_goes_to_the_transport_at_once() -> None:
    from relaycast.server.corked import HOLD_BYTES

    raw = Recorder()
    t = CorkedTransport(raw, asyncio.get_running_loop())
    t.write(b"head")
    t.write(b"x" * HOLD_BYTES)
    assert raw.calls == [("writelines", [b"head", b"x" * HOLD_BYTES])], "written within the step, in one call"
    t.write(b"tail")
    assert raw.calls[1:] == []
    await _step()
    assert raw.calls[1:] == [b"tail"]

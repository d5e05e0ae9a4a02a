"""The host's memory of stored responses: bounded by count and bytes, oldest out first, every drop counted; and a
lone worker's own copies in front of it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relaycast import errors
from relaycast.keys.policy import KeyPolicy
from relaycast.log import EventLog
from relaycast.records import Attribution
from relaycast.redact import Redactor
from relaycast.schema import ChatRequest
from relaycast.server.stored_responses import MAX_ENTRY_BYTES, ResponseStore, StoredResponses


def test_the_oldest_go_first_when_count_or_bytes_pass_their_bound() -> None:
    store = ResponseStore(max_entries=3, max_bytes=1000)
    for i in range(5):
        assert store.put(f"resp_{i}", b"x" * 100)
    assert [store.get(f"resp_{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert store.put("resp_big", b"y" * 900)  # 300 + 900 > 1000: the two oldest go, down to 1000
    assert store.get("resp_big") is not None and store.get("resp_4") is not None
    assert store.get("resp_2") is None and store.get("resp_3") is None
    assert store.status()["bytes"] == 1000 and store.dropped["evicted"] == 4


def test_an_entry_larger_than_its_bound_is_not_kept_and_counted() -> None:
    store = ResponseStore()
    assert not store.put("resp_huge", b"z" * (MAX_ENTRY_BYTES + 1))
    assert store.get("resp_huge") is None and store.dropped == {"too_large": 1, "evicted": 0}


def test_the_query_ops_put_get_and_delete() -> None:
    async def run() -> None:
        store = ResponseStore()
        assert await store.query("response_put", ["resp_1", b"{}"]) is True
        assert await store.query("response_get", "resp_1") == b"{}"
        assert await store.query("response_delete", "resp_1") is True
        assert await store.query("response_get", "resp_1") is None
        assert await store.query("response_delete", "resp_1") is False

    asyncio.run(run())


def _asked(text: str) -> ChatRequest:
    messages = [{"role": "user", "content": text}]
    native = {"model": "m", "input": text}
    return ChatRequest({}, "m", (), False, False, messages, Attribution(), dialect="responses", native=native)


def _answer(rid: str, text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text}]
    return {"id": rid, "object": "response", "output": [{"type": "message", "role": "assistant", "content": content}]}


def test_a_lone_worker_reads_its_copies_first_and_the_hosts_store_for_what_they_no_longer_hold() -> None:
    async def run() -> None:
        host = ResponseStore()  # the host's store, as the telemetry parts keep it
        asked: list[str] = []

        async def telemetry(op: str, arg: Any, after_records: bool = True) -> Any:
            asked.append(op)
            return await host.query(op, arg)

        worker = StoredResponses(telemetry, EventLog(Redactor(())), alone=True, copies=2)
        alice, bob = KeyPolicy(name="alice"), KeyPolicy(name="bob")
        for i in range(3):
            await worker.keep(_asked(f"q{i}"), alice, _answer(f"resp_{i}", f"a{i}"))
        await asyncio.sleep(0.01)  # the stores, sent without waiting, are answered
        assert asked == ["response_put"] * 3 and host.get("resp_0") is not None

        asked.clear()
        assert (await worker.read("resp_2", alice))["id"] == "resp_2"  # a copy: the host is not asked
        assert asked == []
        history = await worker.history({"previous_response_id": "resp_0"}, alice)  # no copy left: the host's
        assert history == [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"}]
        assert asked == ["response_get"]
        with pytest.raises(errors.NotFoundRoute):
            await worker.read("resp_2", bob)  # another key's, copy or not
        with pytest.raises(errors.NotFoundRoute):
            await worker.read("resp_0", bob)

        assert (await worker.delete("resp_2", alice))["deleted"] is True
        assert host.get("resp_2") is None  # the host's store deleted it too
        with pytest.raises(errors.NotFoundRoute):
            await worker.read("resp_2", alice)

    asyncio.run(run())

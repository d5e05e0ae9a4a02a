"""The host's memory of stored responses: bounded by count and bytes, oldest out first, every drop counted."""

from __future__ import annotations

import asyncio

from relaycast.server.stored_responses import MAX_ENTRY_BYTES, ResponseStore


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

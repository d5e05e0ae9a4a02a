"""Stored responses of the Responses API (`store`, true unless the client says false): what `GET` and `DELETE
/v1/responses/{id}` read, and what `previous_response_id` continues.

One `ResponseStore` per host, so every worker finds what another stored: kept by the telemetry parts
(`TelemetryHub`: in the telemetry process of a host of one worker), or by the state process of a host of several
(`relaycast.server.state_process`). Its memory is bounded by count and bytes, oldest first
out; behind it, the store keeps every entry as long as it keeps requests (`relaycast.store.responses`; not with
`store.privacy_mode`, nor without a store: then a restart forgets them). Each entry belongs to the gateway key
that made it; another key does not see it. `StoredResponses` is a worker's side: it asks the host's store through
`Services.telemetry`, and a host's only worker also keeps copies of the responses it stored last.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

import orjson

from relaycast import errors
from relaycast.dialects.responses import output_messages
from relaycast.keys.policy import KeyPolicy
from relaycast.log import EventLog
from relaycast.schema import ChatRequest
from relaycast.store.responses import ResponseTable

MAX_ENTRIES = 10_000
MAX_BYTES = 64 * 1024 * 1024
MAX_ENTRY_BYTES = 8 * 1024 * 1024  # one conversation; a larger one is not stored (counted)
MAX_ID = 128
KEEP_TIMEOUT_S = 1.0  # storing a response holds its answer back at most this long (with several workers)
LOCAL_ENTRIES = 1_000  # a lone worker's own copies of the responses it stored last
LOCAL_BYTES = MAX_ENTRY_BYTES


class ResponseStore:
    """Stored responses by id: `{"owner", "response", "messages"}` as JSON bytes. Bounded; counts what it drops."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        table: ResponseTable | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self._clock = clock
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        # Ids deleted lately: the store's copy goes in its next batch, and until then must not be read back.
        self._deleted: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.dropped = {"too_large": 0, "evicted": 0}

    def put(self, rid: str, value: bytes) -> bool:
        """A new response (a stored id is never made again: a response id is unique)."""
        self._deleted.pop(rid, None)
        return self._remember(rid, value)

    def _remember(self, rid: str, value: bytes) -> bool:
        if len(value) > MAX_ENTRY_BYTES or len(value) > self._max_bytes:
            self.dropped["too_large"] += 1
            return False
        self.delete(rid)
        self._items[rid] = value
        self._bytes += len(value)
        while len(self._items) > self._max_entries or self._bytes > self._max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)
            self.dropped["evicted"] += 1
        return True

    def get(self, rid: str) -> bytes | None:
        return self._items.get(rid)

    def __len__(self) -> int:
        return len(self._items)

    def delete(self, rid: str) -> bool:
        old = self._items.pop(rid, None)
        if old is None:
            return False
        self._bytes -= len(old)
        return True

    def status(self) -> dict[str, Any]:
        """In memory: entries, bytes, dropped by reason; in the store (when kept there): written, queued, dropped."""
        out: dict[str, Any] = {"entries": len(self._items), "bytes": self._bytes, "dropped": dict(self.dropped)}
        if self.table is not None:
            out["store"] = self.table.status()
        return out

    async def query(self, op: str, arg: Any) -> Any:
        """The telemetry query ops: `response_put` [id, bytes], `response_get` id, `response_delete` id."""
        now_ms = int(self._clock() * 1000)
        if op == "response_put":
            rid, value = str(arg[0]), bytes(arg[1])
            kept = self.put(rid, value)
            if kept and self.table is not None:
                self.table.put(rid, now_ms, value)
            return kept
        rid = str(arg)
        found = self.get(rid)
        if found is None and self.table is not None and rid not in self._deleted:
            found = await self.table.get(rid)
            if rid in self._deleted:  # deleted while the store was read
                found = None
            elif found is not None and op == "response_get" and rid not in self._items:
                self._remember(rid, found)
        if op == "response_get":
            return found
        self.delete(rid)
        if self.table is not None:
            self.table.delete(rid, now_ms)
            self._deleted[rid] = None
            if len(self._deleted) > self._max_entries:
                self._deleted.popitem(last=False)
        return found is not None


OPS = frozenset({"response_put", "response_get", "response_delete"})


class StoredResponses:
    """A worker's access to the host's `ResponseStore` (`telemetry` is `Services.telemetry`). Its questions read
    no records: they go without waiting behind them (`after_records=False`), so a worker busy with other requests
    still stores and finds a response at once.

    With several workers, a response is stored before its answer goes out (for at most KEEP_TIMEOUT_S), so a
    follow-up that another worker serves finds it. A host's only worker (`alone`) does not wait: its questions
    reach the telemetry process in the order it asks them, on one connection, so a later read or delete of a
    response comes after the store of it, and no other worker reads the store meanwhile. It keeps its own copies
    of the last responses it stored (LOCAL_ENTRIES, LOCAL_BYTES), read before asking: a follow-up neither waits for
    a telemetry process that is busy (under `SCHED_IDLE` at saturation it may turn its event loop once in seconds)
    nor fails while that process restarts."""

    def __init__(self, telemetry: Any, log: EventLog, alone: bool = False, copies: int = LOCAL_ENTRIES) -> None:
        self._telemetry = telemetry
        self._log = log
        self._mine = ResponseStore(copies, LOCAL_BYTES) if alone else None
        self._storing: set[asyncio.Task[None]] = set()  # stores sent and not yet answered (a lone worker's)

    def _ask(self, op: str, arg: Any) -> Any:
        return self._telemetry(op, arg, after_records=False)

    async def _get(self, rid: Any, key: KeyPolicy | None) -> dict[str, Any] | None:
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID:
            return None
        raw = self._mine.get(rid) if self._mine is not None else None
        if raw is None:
            raw = await self._ask("response_get", rid)
        if raw is None:
            return None
        entry: dict[str, Any] = orjson.loads(raw)
        if entry.get("owner") != (key.name if key is not None else None):
            return None  # another key's: as if it did not exist
        return entry

    async def history(self, body: dict[str, Any], key: KeyPolicy | None) -> list[dict[str, Any]] | None:
        """The chat messages a `previous_response_id` continues; None without one. It must name a response this
        key stored here (never passed on to a provider's own store, which every key of the gateway shares)."""
        rid = body.get("previous_response_id")
        if rid is None:
            return None
        if not isinstance(rid, str) or len(rid) > MAX_ID:
            raise errors.InvalidRequest("'previous_response_id' must be a response id", param="previous_response_id")
        entry = await self._get(rid, key)
        if entry is None:
            raise errors.NotFoundRoute(f"Previous response with id '{rid}' not found.", param="previous_response_id")
        messages: list[dict[str, Any]] = entry["messages"]
        return messages

    async def keep(self, req: ChatRequest, key: KeyPolicy | None, answer: bytes | dict[str, Any] | None) -> None:
        """Store a finished response unless the client said `store: false`. Never fails the request."""
        body = req.native or {}
        if body.get("store") is False or answer is None:
            return
        resp = orjson.loads(answer) if isinstance(answer, bytes) else answer
        rid = resp.get("id") if isinstance(resp, dict) else None
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID:
            return
        # The instructions' system message (made for non-empty instructions only) is not carried over.
        conversation = req.messages[1:] if body.get("instructions") else req.messages
        entry = orjson.dumps(
            {
                "owner": key.name if key is not None else None,
                "response": resp,
                "messages": [*conversation, *output_messages(resp)],
            }
        )
        if len(entry) > MAX_ENTRY_BYTES:
            self._log.warning("response_not_stored", response_id=rid, error="too_large", bytes=len(entry))
            return
        if self._mine is not None and self._mine.put(rid, entry):
            task = asyncio.ensure_future(self._store(rid, entry, copied=True))  # nothing here waits for it
            self._storing.add(task)
            task.add_done_callback(self._storing.discard)
            return
        # Awaited before the answer (or its last event) goes out, so a follow-up finds it; never for long.
        await self._store(rid, entry, copied=False)

    async def _store(self, rid: str, entry: bytes, copied: bool) -> None:
        """Store in the host's store, waiting at most KEEP_TIMEOUT_S for its answer (so that questions left
        waiting stay few). `copied`: a lone worker's, kept in its copies; a store not answered by then was sent,
        and is taken after the questions before it, so only one not sent (the telemetry process is away, or too
        many questions wait) or refused is logged."""
        try:
            await asyncio.wait_for(self._ask("response_put", [rid, entry]), KEEP_TIMEOUT_S)
        except TimeoutError:
            if not copied:
                self._log.warning("response_not_stored", response_id=rid, error="timeout")
        except errors.RelaycastError as e:
            self._log.warning("response_not_stored", response_id=rid, error=e.error_class)

    async def read(self, rid: str, key: KeyPolicy | None) -> dict[str, Any]:
        entry = await self._get(rid, key)
        if entry is None:
            raise errors.NotFoundRoute(f"Response with id '{rid[:MAX_ID]}' not found.", param="response_id")
        response: dict[str, Any] = entry["response"]
        return response

    async def delete(self, rid: str, key: KeyPolicy | None) -> dict[str, Any]:
        if await self._get(rid, key) is None:
            raise errors.NotFoundRoute(f"Response with id '{rid[:MAX_ID]}' not found.", param="response_id")
        mine = self._mine is not None and self._mine.delete(rid)
        # The host's store deletes it too (asked after it was stored: a lone worker's questions keep their order).
        if not await self._ask("response_delete", rid) and not mine:
            raise errors.NotFoundRoute(f"Response with id '{rid[:MAX_ID]}' not found.", param="response_id")
        return {"id": rid, "object": "response", "deleted": True}

"""The telemetry process collects its garbage by the clock: cycles left by a destination that keeps failing never
pile up for want of allocations (`FullCollections`)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from relaycast.server.telemetry_process import FullCollections


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it
        self.payload = bytearray(1 << 20)


def test_cycles_are_freed_by_the_clock_without_any_allocation_to_trigger_the_collector() -> None:
    async def run() -> tuple[bool, bool, int]:
        loop = asyncio.get_running_loop()
        node = _Node()
        ref = weakref.ref(node)
        del node
        collections = FullCollections(loop, every_s=0.05)
        before = ref() is not None  # nothing collected it yet
        for _ in range(100):
            if ref() is None:
                break
            await asyncio.sleep(0.02)
        collections.stop()
        runs = collections.runs
        await asyncio.sleep(0.15)
        assert collections.runs == runs  # stopped: no more collections
        return before, ref() is None, runs

    enabled = gc.isenabled()
    gc.disable()  # the allocation-driven collector is off: only FullCollections can free the cycle
    try:
        before, freed, runs = asyncio.run(run())
    finally:
        if enabled:
            gc.enable()
    assert before and freed and runs >= 1

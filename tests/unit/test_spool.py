"""The on-disk spool (relaycast.telemetry.spool): its in-memory index, its bound under either overflow policy, and a
full disk: a real 2 MiB tmpfs, alone and under a destination whose spool and file live on it."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from relaycast.log import EventLog
from relaycast.redact import Redactor
from relaycast.telemetry.exporters.file import FileExporter
from relaycast.telemetry.exporters.webhook import WebhookExporter
from relaycast.telemetry.pipeline import Destination
from relaycast.telemetry.settings import DestinationConfig, FileOptions, WebhookOptions
from relaycast.telemetry.spool import Spool
from tests.capture import AsyncCapture
from tests.sample_records import sample_record


@contextmanager
def tiny_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` for the block; always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _batch(n: int, size: int = 10) -> list[bytes]:
    return [bytes([65 + i % 26]) * size for i in range(n)]


def test_the_spool_survives_a_restart_with_its_records_and_keeps_its_bound(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=100)
    assert s.put([b"a" * 10, b"b" * 20], 5, records=2).stored
    assert s.put([b"c"], 7, records=1).stored
    assert not s.put([b"d" * 200], 9, records=1).stored, "over the bound: refused"
    s2 = Spool(tmp_path, max_bytes=100)
    assert (s2.batches, s2.records, s2.bytes) == (2, 3, s.bytes)
    first = s2.oldest()
    assert first is not None and first.oldest_unix_ns == 5 and first.records == 2
    assert s2.read(first) == [b"a" * 10, b"b" * 20]
    assert s2.remove(first) and not s2.remove(first), "a second remove is a no-op"
    second = s2.oldest()
    assert second is not None and s2.read(second) == [b"c"] and (s2.batches, s2.records) == (1, 1)


def test_the_index_lives_in_memory_oldest_first_and_is_built_once(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10**6)
    for i in (30, 10, 20):
        s.put(_batch(2), i, records=2)
    (tmp_path / "00000000000000000001-1-00000000-5.batch").write_bytes(b"")  # appears after the spool opened
    seen = []
    while (e := s.oldest()) is not None:
        seen.append(e.oldest_unix_ns)
        s.remove(e)
    assert seen == [30, 10, 20], "in the order spooled; a file that appeared later is not looked for"
    reopened = Spool(tmp_path, max_bytes=10**6)
    assert reopened.oldest() is not None and reopened.oldest().oldest_unix_ns == 1, "a restart reads the directory"


def test_a_batch_file_named_without_its_record_count_counts_its_items(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=10**6)
    s.put(_batch(3), 5, records=3)
    (p,) = tmp_path.glob("*.batch")
    p.rename(tmp_path / "00000000000000000005-1-00000000.batch")  # the older name: <oldest>-<pid>-<seq>
    again = Spool(tmp_path, max_bytes=10**6)
    assert again.records == 3 and again.batches == 1


def test_drop_oldest_removes_the_oldest_batches_to_make_room_and_says_how_many_records(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=3 * Spool.size_of(_batch(4)))
    for i in range(3):
        assert s.put(_batch(4), i, records=4).stored
    put = s.put(_batch(4), 3, records=4, evict=True)
    assert put.stored and put.evicted == 4
    left = []
    while (e := s.oldest()) is not None:
        left.append(e.oldest_unix_ns)
        s.remove(e)
    assert left == [1, 2, 3] and s.bytes == 0
    assert len(list(tmp_path.glob("*.batch"))) == 0, "evicted files are gone from the disk too"


def test_drop_newest_refuses_a_batch_that_does_not_fit_and_keeps_the_oldest(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=2 * Spool.size_of(_batch(4)))
    assert s.put(_batch(4), 0, records=4).stored and s.put(_batch(4), 1, records=4).stored
    put = s.put(_batch(4), 2, records=4)
    assert not put.stored and put.evicted == 0 and s.oldest() is not None and s.oldest().oldest_unix_ns == 0
    assert not s.put([b"x" * 1000], 3, records=1, evict=True).stored, "larger than the whole spool: refused"
    assert s.batches == 2


def test_a_full_disk_raises_leaves_no_temporary_file_and_recovers_when_space_returns(tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        s = Spool(disk / "spool", max_bytes=64 * 1024 * 1024)
        stored = 0
        with pytest.raises(OSError) as e:
            for i in range(100):
                s.put(_batch(4, 100_000), i, records=4)
                stored += 1
        assert e.value.errno == errno.ENOSPC
        assert list((disk / "spool").glob("*.tmp")) == []
        assert s.batches == stored and s.bytes == sum(f.stat().st_size for f in (disk / "spool").glob("*.batch"))
        first = s.oldest()
        assert first is not None and len(s.read(first)) == 4
        s.remove(first)  # space returns
        assert s.put(_batch(4, 100_000), 1000, records=4).stored


# --- a destination on a full disk -----------------------------------------------------------------


def _accounted(status: dict) -> int:
    """Records a destination answers for: sent, on disk, or counted as dropped."""
    return status["sent"] + status["spooled_records"] + sum(status["dropped"].values()) + status["queued"]


def test_a_full_spool_disk_is_counted_as_disk_full_and_the_spool_recovers_when_the_destination_does(
    tmp_path: Path,
) -> None:
    async def body(disk: Path) -> None:
        async with AsyncCapture() as cap, aiohttp.ClientSession() as session:
            cap.answers = [503] * 10_000
            cfg = DestinationConfig(
                name="hook",
                kind="webhook",
                options=WebhookOptions(url=cap.url + "/hook"),
                max_retries=0,
                max_batch_records=20,
                flush_interval_s=0.02,
            )
            red = Redactor()
            d = Destination(cfg, WebhookExporter(cfg, session), Spool(disk / "hook", cfg.spool_max_bytes), red,
                            EventLog(red), clock=time.time_ns)  # fmt: skip
            d.start()
            text = "x" * 20_000
            for i in range(300):  # 6 MB of records for a 2 MiB disk
                d.offer(sample_record(i, text))
                if i % 20 == 19:
                    await asyncio.sleep(0.02)
            await d.flush()
            st = d.status()
            assert st["dropped"].get("disk_full", 0) > 0, st
            assert st["spooled_records"] > 0 and _accounted(st) == 300, st
            assert list((disk / "hook").glob("*.tmp")) == []
            assert "No space left" in (st["last_error"] or ""), st
            healthy_from = len(cap.requests)
            cap.answers.clear()  # the destination is back: the spool drains and frees the disk
            for _ in range(500):
                if d.status()["spooled_batches"] == 0:
                    break
                await asyncio.sleep(0.02)
            assert d.status()["spooled_batches"] == 0
            healthy_to = len(cap.requests)
            cap.answers = [503] * 10_000  # down again: the freed disk takes batches again
            spooled_before = d.spooled
            for i in range(300, 320):
                d.offer(sample_record(i, text))
            await d.flush()
            assert d.spooled > spooled_before
            await d.stop(d.worker.clock() + 1)
            st = d.status()
            assert _accounted(st) == 320
            delivered = [
                r["request_id"] for _, _, b in cap.requests[healthy_from:healthy_to] for r in json.loads(b)["records"]
            ]
            assert len(set(delivered)) == len(delivered) == st["sent"]

    with tiny_disk(tmp_path / "disk") as disk:
        asyncio.run(body(disk))


def test_a_file_destination_on_a_full_disk_counts_what_it_cannot_write_and_leaves_whole_lines(tmp_path: Path) -> None:
    async def body(disk: Path) -> dict:
        cfg = DestinationConfig(
            name="local",
            kind="file",
            options=FileOptions(path=str(disk / "out" / "traces.jsonl"), max_bytes=100 * 1024 * 1024),
            max_retries=1,
            max_batch_records=25,
        )
        red = Redactor()
        d = Destination(cfg, FileExporter(cfg), Spool(disk / "spool", cfg.spool_max_bytes), red, EventLog(red),
                        clock=time.time_ns)  # fmt: skip
        d.start()
        for i in range(200):  # 4 MB of lines for a 2 MiB disk that also holds the spool
            d.offer(sample_record(i, "y" * 20_000))
            if i % 25 == 24:
                await asyncio.sleep(0.01)
        await d.stop(d.worker.clock() + 5)
        return d.status()

    with tiny_disk(tmp_path / "disk") as disk:
        st = asyncio.run(body(disk))
        lines = (disk / "out" / "traces.jsonl").read_bytes().split(b"\n")
        assert lines[-1] == b"", "the file ends with a whole line"
        written = [json.loads(line)["request_id"] for line in lines[:-1]]
        assert list((disk / "spool").glob("*.tmp")) == []
    assert st["dropped"].get("disk_full", 0) > 0, st
    assert st["sent"] == len(written) and _accounted(st) == 200, st

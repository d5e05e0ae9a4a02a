"""File: request records appended as JSON lines (the shape `jsonrecord` documents), with size-based rotation.

When appending a line would take `path` past `max_bytes`, the file rotates first: `path.N-1` -> `path.N` ... `path`
-> `path.1`, keeping `backups` old files (the oldest is deleted; with 0 the file just starts anew). A line is
never split across files and never appended to an unfinished line left by a crash. A single line longer than
`max_bytes` (rare: content is dropped first, see `jsonrecord`) gets a file of its own rather than being lost.

Every file operation runs in a worker thread (`asyncio.to_thread`), so the event loop that serves requests never
waits on a disk. A failed write is undone (the file is cut back to its previous length) and raised as a retryable
ExportError, so the pipeline retries or spools the batch; delivery is at least once (a batch that failed after a
rotation may repeat the lines written before it): deduplicate on `request_id`. Files are created mode 0600 (and
the directories made for them 0700), since records hold prompts and completions. Lines are not fsynced: a machine
crash may lose the last batches.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from pathlib import Path

import aiohttp

from relaycast.private_files import open_private, private_dirs
from relaycast.records import RequestRecord
from relaycast.telemetry.exporters.base import ExportError, TestResult
from relaycast.telemetry.exporters.jsonrecord import record_json
from relaycast.telemetry.settings import DestinationConfig, FileOptions

MiB = 1024 * 1024
WRITE_BUFFER = 64 * 1024  # lines are gathered up to this much per write(2)


class FileExporter:
    kind = "file"
    max_batch_bytes = 8 * MiB
    max_age_s = None

    def __init__(self, dest: DestinationConfig, session: aiohttp.ClientSession | None = None) -> None:
        assert isinstance(dest.options, FileOptions)
        self.dest = dest
        self.o: FileOptions = dest.options
        self.path = Path(self.o.path)
        self._lock = threading.Lock()  # one writer at a time, whichever thread runs it

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        limit = min(self.max_batch_bytes, self.o.max_bytes - 1)  # the line and its newline fit in one file
        return [record_json(record, privacy, tags, max_bytes=limit)]

    async def send(self, items: list[bytes]) -> None:
        if not items:
            return
        try:
            await asyncio.to_thread(self._append, items)
        except OSError as e:
            raise ExportError(f"cannot write to {self.path}: {_reason(e)}", retryable=True) from None

    async def test(self) -> TestResult:
        try:
            await asyncio.to_thread(self._check_writable)
        except OSError as e:
            return TestResult(False, f"cannot write to {self.path.parent}: {_reason(e)}")
        return TestResult(True, f"ok: can write to {self.path}")

    async def close(self) -> None:
        return None  # no file is held open between batches

    # --- in a worker thread ---------------------------------------------------------------------

    def _append(self, items: list[bytes]) -> None:
        with self._lock:
            private_dirs(self.path.parent)
            size = self._size_ending_a_line()
            start = 0
            for i, item in enumerate(items):
                n = len(item) + 1  # the line and its newline
                if size + n > self.o.max_bytes and size > 0:
                    self._write(items[start:i])
                    start = i
                    self._rotate()
                    size = 0
                size += n
            self._write(items[start:])

    def _size_ending_a_line(self) -> int:
        """The file's size; when a crash left it mid-line, the unfinished line is ended first."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if size == 0:
            return 0
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return size
        self._write([b""])
        return size + 1

    def _write(self, items: list[bytes]) -> None:
        """Append each item as a line, through a small reused buffer: never a batch-sized copy in memory (items may
        be views into a spooled batch). A failure cuts the file back to where it was: no half line is left."""
        if not items:
            return
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            before = os.fstat(fd).st_size
            try:
                buf = bytearray()
                for item in items:
                    if len(buf) + len(item) + 1 > WRITE_BUFFER:
                        _write_all(fd, buf)
                        buf.clear()
                    if len(item) + 1 > WRITE_BUFFER:
                        _write_all(fd, item)  # a large line goes straight from its own buffer
                        buf += b"\n"
                    else:
                        buf += item
                        buf += b"\n"
                _write_all(fd, buf)
            except OSError:
                try:
                    os.ftruncate(fd, before)  # no half line is left behind
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        n = self.o.backups
        if n <= 0:
            self.path.unlink(missing_ok=True)
            return
        oldest = self._backup(n)
        oldest.unlink(missing_ok=True)
        for i in range(n - 1, 0, -1):
            src = self._backup(i)
            if src.exists():
                os.replace(src, self._backup(i + 1))
        os.replace(self.path, self._backup(1))

    def _backup(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _check_writable(self) -> None:
        """Create the directory if missing, then prove it takes a new file (as rotation needs) and, when the log
        exists already, that it opens for appending. Writes no record."""
        directory = self.path.parent
        private_dirs(directory)
        fd, probe = tempfile.mkstemp(prefix=".relaycast-test-", dir=directory)
        os.close(fd)
        os.unlink(probe)
        if self.path.exists():
            if self.path.is_dir():
                raise IsADirectoryError(21, f"{self.path.name} is a directory")
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__

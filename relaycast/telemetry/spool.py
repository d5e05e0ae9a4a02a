"""A bounded on-disk spool of encoded batches, for a destination that is down. Survives restarts.

One file per batch, named `<oldest record's unix ns>-<seq>.batch`, so files sort oldest first and a batch too
old for its destination can be discarded without reading it. Each file holds its items framed as a 4-byte
big-endian length then the bytes. Files are written to a temporary name and renamed, so a crash never leaves a
half batch. Files are created 0600 and the directories the spool creates 0700, since batches hold prompts and
completions. All methods block: the pipeline calls them in a worker thread.
"""

from __future__ import annotations

import builtins
import itertools
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

_LEN = struct.Struct(">I")
FILE_MODE = 0o600  # batches hold prompts and completions: the owner's only, like the directories made for them


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    oldest_unix_ns: int
    size: int


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._bytes = 0
        self._count = 0
        if self.directory.is_dir():
            for p in self.directory.glob("*.tmp"):
                p.unlink(missing_ok=True)
            for e in self._entries():
                self._bytes += e.size
                self._count += 1

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def batches(self) -> int:
        return self._count

    def put(self, items: list[builtins.bytes], oldest_unix_ns: int) -> bool:  # `bytes` here is the property
        """Store a batch. False (and nothing stored) when the spool would pass its size limit."""
        size = sum(4 + len(it) for it in items)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                return False
            _private_dirs(self.directory)
            name = f"{oldest_unix_ns:020d}-{os.getpid()}-{next(self._seq):08d}.batch"
            tmp = self.directory / (name + ".tmp")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb") as f:
                for it in items:  # item by item: no batch-sized copy in memory
                    f.write(_LEN.pack(len(it)))
                    f.write(it)
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(self.directory / name)
            self._bytes += size
            self._count += 1
            return True

    def oldest(self) -> SpoolEntry | None:
        entries = self._entries()
        return entries[0] if entries else None

    def read(self, entry: SpoolEntry) -> list[memoryview]:
        """The batch's items as views into one buffer: one large allocation, given back whole when done, rather
        than thousands of small copies."""
        data = memoryview(entry.path.read_bytes())
        items = []
        pos = 0
        while pos + 4 <= len(data):
            (n,) = _LEN.unpack_from(data, pos)
            pos += 4
            items.append(data[pos : pos + n])
            pos += n
        return items

    def remove(self, entry: SpoolEntry) -> None:
        with self._lock:
            try:
                entry.path.unlink()
            except FileNotFoundError:
                return
            self._bytes -= entry.size
            self._count -= 1

    def _entries(self) -> list[SpoolEntry]:
        if not self.directory.is_dir():
            return []
        out = []
        for p in sorted(self.directory.glob("*.batch")):
            try:
                oldest = int(p.name.split("-", 1)[0])
                size = p.stat().st_size
            except (ValueError, OSError):
                continue
            out.append(SpoolEntry(p, oldest, size))
        return out


def _private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents, each 0700."""
    missing = []
    d = directory
    while not d.is_dir():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)

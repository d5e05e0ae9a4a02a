"""A bounded on-disk spool of encoded batches, for a destination that is down. Survives restarts.

One file per batch, named `<oldest record's unix ns>-<pid>-<seq>-<records>.batch`, so files sort oldest first, a
batch too old for its destination can be discarded without reading it, and the records a batch holds are known
without reading it (drops are counted in records). Each file holds its items framed as a 4-byte big-endian length
then the bytes. Files are written to a temporary name and renamed, so a crash never leaves a half batch; a write
that fails (a full disk, a quota, a read-only file system) removes its temporary file and raises the OSError, and
the next `put` simply tries again, so the spool recovers by itself when space returns. Files are created 0600 and
the directories the spool creates 0700, since batches hold prompts and completions.

The index lives in memory: a deque of entries, oldest first, built once from the directory when the spool opens,
appended by `put` and popped by `remove`. `oldest()` is O(1) and a long backlog never costs a directory scan.

The size bound (`max_bytes`) is kept one of two ways, the destination's overflow policy: a `put` that does not fit
is refused (drop_newest), or the oldest batches are removed to make room (drop_oldest; `Put.evicted` says how many
records went). Every method but `oldest` blocks on the disk: the pipeline calls them in a worker thread.
"""

from __future__ import annotations

import builtins
import collections
import itertools
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from relaycast.private_files import open_private, private_dirs

_LEN = struct.Struct(">I")
SUFFIX = ".batch"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    oldest_unix_ns: int
    size: int  # bytes on disk
    records: int  # records the batch holds


@dataclass(frozen=True, slots=True)
class Put:
    """What `put` did: whether the batch is stored, and how many records older batches held that were removed to
    make room for it."""

    stored: bool
    evicted: int = 0


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._index: collections.deque[SpoolEntry] = collections.deque()
        self._bytes = 0
        self._records = 0
        if self.directory.is_dir():
            for p in self.directory.glob("*.tmp"):  # a crash mid-write: never a batch
                p.unlink(missing_ok=True)
            for e in _scan(self.directory):
                self._index.append(e)
                self._bytes += e.size
                self._records += e.records

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def batches(self) -> int:
        return len(self._index)

    @property
    def records(self) -> int:
        return self._records

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes fit under the bound now, without removing anything."""
        return self._bytes + size <= self.max_bytes

    @staticmethod
    def size_of(items: list[builtins.bytes]) -> int:  # `bytes` here is the property
        """The bytes a batch of `items` takes on disk."""
        return sum(4 + len(it) for it in items)

    def put(self, items: list[builtins.bytes], oldest_unix_ns: int, records: int, *, evict: bool = False) -> Put:
        """Store a batch of `records` records. Past the size bound: refused, or with `evict` the oldest batches are
        removed until it fits (a batch larger than the whole bound is always refused). Raises OSError when the
        disk refuses the write; no temporary file is left behind and nothing is removed then."""
        size = self.size_of(items)
        with self._lock:
            if size > self.max_bytes or (not evict and self._bytes + size > self.max_bytes):
                return Put(False)
            private_dirs(self.directory)
            name = f"{oldest_unix_ns:020d}-{os.getpid()}-{next(self._seq):08d}-{records}{SUFFIX}"
            tmp = self.directory / (name + ".tmp")
            try:
                fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
                with open(fd, "wb") as f:
                    for it in items:  # item by item: no batch-sized copy in memory
                        f.write(_LEN.pack(len(it)))
                        f.write(it)
                    f.flush()
                    os.fsync(f.fileno())
                tmp.rename(self.directory / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._index.append(SpoolEntry(self.directory / name, oldest_unix_ns, size, records))
            self._bytes += size
            self._records += records
            # Room is made after the write succeeded, so a failed write never costs older batches.
            evicted = 0
            while self._bytes > self.max_bytes and len(self._index) > 1:
                evicted += self._forget(self._index[0])
            return Put(True, evicted)

    def oldest(self) -> SpoolEntry | None:
        """The oldest batch, from the in-memory index: O(1), no disk."""
        with self._lock:
            return self._index[0] if self._index else None

    def read(self, entry: SpoolEntry) -> list[builtins.bytes]:
        """The batch's items, read one by one: record-sized allocations, never one batch-sized buffer."""
        items = []
        with open(entry.path, "rb") as f:
            while len(head := f.read(4)) == 4:
                (n,) = _LEN.unpack(head)
                item = f.read(n)
                if len(item) < n:
                    break  # a truncated tail (the disk was damaged): what came before is still good
                items.append(item)
        return items

    def remove(self, entry: SpoolEntry) -> bool:
        """Delete a batch. False when it was gone already (removed to make room meanwhile)."""
        with self._lock:
            if not (self._index and self._index[0] is entry) and entry not in self._index:
                return False
            self._forget(entry)
            return True

    def _forget(self, entry: SpoolEntry) -> int:
        """Drop `entry` from the index and the disk (under the lock). Its records."""
        if self._index and self._index[0] is entry:
            self._index.popleft()
        else:
            self._index.remove(entry)
        self._bytes -= entry.size
        self._records -= entry.records
        try:
            entry.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only disk: the file may come back after a restart, a duplicate at worst (at least once)
        return entry.records


def _scan(directory: Path) -> list[SpoolEntry]:
    """The batches on disk, oldest first: once, when a spool opens."""
    out = []
    for p in sorted(directory.glob("*" + SUFFIX)):
        try:
            parts = p.name[: -len(SUFFIX)].split("-")
            oldest = int(parts[0])
            size = p.stat().st_size
            records = int(parts[3]) if len(parts) > 3 else _frames(p)  # a name without the count: count items
        except (ValueError, OSError):
            continue
        out.append(SpoolEntry(p, oldest, size, records))
    return out


def _frames(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while len(head := f.read(4)) == 4:
            f.seek(_LEN.unpack(head)[0], os.SEEK_CUR)
            n += 1
    return n

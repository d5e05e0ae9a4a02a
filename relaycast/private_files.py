"""Files and directories the gateway creates for what it keeps (the store, the spool, file destinations): they hold
prompts, completions and key hashes, so they are its owner's only: files 0600, directories 0700. Files and
directories that already exist keep the mode they have."""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents, each 0700."""
    missing = []
    d = directory
    while not d.is_dir():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """`os.open` with O_CREAT, creating the file 0600."""
    return os.open(path, flags | os.O_CREAT, FILE_MODE)

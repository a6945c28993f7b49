"""Replacing small files safely: a temporary file, fsync, rename, fsync of the directory.

An interrupted write leaves the old file or the new one, never half of one, and a write
that was reported done survives a crash. Standard library only: the CLI uses it too.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["remove_leftovers", "write_atomically"]


def write_atomically(path: Path, text: str, *, mode: int) -> None:
    """Replace `path` with `text` (created with `mode`, less the umask); OSError on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per call: two writers of one file in one process (or a leftover of a killed
    # process whose pid came back) must not collide on the temporary name.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            data = memoryview(text.encode("utf-8"))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_leftovers(path: Path) -> list[Path]:
    """Remove temporary files of `path` that a killed writer left behind (they may hold what
    `path` holds: cluster keys, a node key); the ones removed. Call it only while no other
    process can be writing `path` (the daemon does, holding its state lock, at start)."""
    removed = []
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed

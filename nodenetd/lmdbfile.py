"""Checks of an LMDB data file before it is mapped (standard library only: `nodenet backup`
uses it without importing the daemon)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["DataFileError", "check_data_file"]


class DataFileError(Exception):
    """The data file cannot be opened safely; the message says why and what to do."""


_META = struct.Struct("<II")  # mm_magic, mm_version, after the 16-byte page header
_META_PSIZE = 40  # mm_dbs[FREE_DBI].md_pad holds the page size
_META_LAST = struct.Struct("<QQ")  # mm_last_pg, mm_txnid
_META_LAST_AT = 136
_LMDB_MAGIC = 0xBEEFC0DE


def _meta_page(head: bytes, at: int) -> tuple[int, int, int] | None:
    """(page size, last page, txnid) of the meta page at `at`, or None if there is none."""
    if len(head) < at + _META_LAST_AT + _META_LAST.size:
        return None
    magic, _version = _META.unpack_from(head, at + 16)
    if magic != _LMDB_MAGIC:
        return None
    (page_size,) = struct.unpack_from("<I", head, at + _META_PSIZE)
    last_page, txnid = _META_LAST.unpack_from(head, at + _META_LAST_AT)
    return page_size, last_page, txnid


def check_data_file(path: Path) -> None:
    """Refuse a `data.mdb` shorter than its newest meta page says (a truncated copy, a
    half-restored backup): LMDB maps it and the process dies of SIGBUS, with no message, at
    the first page past the end. A missing file is a new store; damage this check cannot see
    is LMDB's to report."""
    file = path / "data.mdb"
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(2 * 65536)
    except FileNotFoundError:
        return
    except PermissionError as exc:
        raise DataFileError(
            f"cannot read {file}: {exc.strerror}; run nodenetd as the user that owns it (for"
            f" the packaged service: chown -R nodenet:nodenet {path.parent})"
        ) from exc
    except OSError as exc:
        raise DataFileError(f"cannot read {file}: {exc.strerror}") from exc
    if size == 0:
        # LMDB writes its two meta pages when it creates the file: an empty one was cut.
        raise DataFileError(
            f"{file} is empty (0 bytes); restore the state directory {path} from a backup"
            " (docs/operations.md), or delete that file to start with empty state (the node"
            " then rejoins through its seeds)"
        )
    first = _meta_page(head, 0)
    if first is None or not 512 <= first[0] <= 65536:
        raise DataFileError(
            f"{file} is not an LMDB data file (or its first page is damaged); restore the"
            f" state directory {path} from a backup (docs/operations.md), or move it away"
            " (the node then starts with empty state and rejoins through its seeds)"
        )
    metas = [m for m in (first, _meta_page(head, first[0])) if m is not None]
    page_size, last_page, _ = max(metas, key=lambda m: m[2])
    needed = (last_page + 1) * page_size
    if size < needed:
        raise DataFileError(
            f"{file} is truncated: {size} bytes, but its last commit needs {needed}; restore"
            f" the state directory {path} from a complete backup (docs/operations.md), or move"
            " it away (the node then starts with empty state and rejoins through its seeds)"
        )

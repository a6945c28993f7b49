"""Hot backups of a node: a consistent copy of its LMDB state, keyring and node key.

`nodenet backup PATH` runs this in its own process while the daemon keeps serving: LMDB
lets another process read the environment, and `copy` works from one read transaction, so
the copy is one consistent snapshot (every entry with its index, nothing half-written)
whatever the daemon writes meanwhile. Restoring is copying the directory back while the
daemon is stopped (docs/operations.md).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import lmdb

from nodenet.daemon.lmdbfile import DataFileError, check_data_file

__all__ = ["BackupError", "BackupReport", "backup"]

MAX_DBS = 16


class BackupError(Exception):
    """The backup cannot be made; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What a backup holds."""

    path: Path
    entries: int
    members: int
    bytes: int
    seconds: float


def backup(state_dir: Path, target: Path, *, include_key: bool = True) -> BackupReport:
    """Copy the node's state under `state_dir` into the new directory `target`."""
    source = state_dir / "state"
    if not (source / "data.mdb").exists():
        raise BackupError(f"no nodenet state at {source} (is --state-dir right?)")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} exists and is not empty; give a new directory")
    try:
        check_data_file(source)  # a truncated store would kill this process (SIGBUS)
    except DataFileError as exc:
        raise BackupError(str(exc)) from None
    started = time.monotonic()
    # Everything goes into a hidden partial directory beside `target`, renamed to `target`
    # once complete (BACKUP.json last): an interrupted or failed backup leaves no directory
    # that looks like a backup (a half-copied data.mdb killed a daemon started on it).
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Partial directories of earlier backups to this name that were killed (any pid):
        # they can be large and hold the node key.
        for leftover in target.parent.glob(f".{target.name}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        partial.mkdir(mode=0o700)
        (partial / "state").mkdir(mode=0o700)
    except OSError as exc:
        raise BackupError(f"cannot create {partial}: {exc.strerror}") from exc
    try:
        report = _copy(state_dir, source, partial, target, include_key, started)
        _fsync_tree(partial)
        if target.exists():
            target.rmdir()  # checked empty above
        partial.rename(target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return report


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` to disk (before it is renamed whole)."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(
    state_dir: Path,
    source: Path,
    partial: Path,
    target: Path,
    include_key: bool,
    started: float,
) -> BackupReport:
    try:
        env = lmdb.open(str(source), readonly=True, lock=True, max_dbs=MAX_DBS, subdir=True)
    except lmdb.Error as exc:
        raise BackupError(f"cannot open {source}: {exc} (run as the nodenet user or root)") from exc
    try:
        with env.begin() as txn:
            counts = {name: _count(env, txn, name) for name in ("entries", "members")}
        env.copy(str(partial / "state"), compact=True)
        os.chmod(partial / "state" / "data.mdb", 0o600)  # LMDB creates it 0644
    except lmdb.Error as exc:
        raise BackupError(f"copying {source} failed: {exc}") from exc
    finally:
        env.close()
    try:
        for name in ("keyring", "node.key") if include_key else ("keyring",):
            if (state_dir / name).exists():
                shutil.copy2(state_dir / name, partial / name)
                os.chmod(partial / name, 0o600)
        size = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file())
        report = BackupReport(
            target, counts["entries"], counts["members"], size, time.monotonic() - started
        )
        (partial / "BACKUP.json").write_text(
            json.dumps(
                {
                    "nodenet": version("nodenetd"),
                    "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "source": str(state_dir),
                    "entries": report.entries,
                    "members": report.members,
                    "includes_node_key": include_key,
                },
                indent=2,
            )
            + "\n"
        )
    except OSError as exc:
        raise BackupError(
            f"writing the backup into {partial.parent} failed: {exc.strerror}; nothing was kept"
        ) from exc
    return report


def _count(env: lmdb.Environment, txn: lmdb.Transaction[bytes], name: str) -> int:
    try:
        db = env.open_db(name.encode(), txn=txn, create=False)
    except lmdb.NotFoundError:
        return 0
    return int(txn.stat(db)["entries"])

"""The daemon's persistent state: one LMDB environment, one batching writer thread, readers.

Everything nodenet keeps lives in one environment in the directory `<state_dir>/state/`
(files `data.mdb` and `lock.mdb`, mode 0600, directory 0700), in named databases:

    meta      small values by name: b"schema" → schema version, b"incarnation" → our
              incarnation (msgpack integers)
    members   node id (32 bytes) → that member's signed state (opaque bytes here)

The replicated store (DESIGN §3.4) adds `entries`, `heads` and the range index to
`DATABASES`; its writes are batches of the same `Put`/`Delete` operations, so one write
transaction updates all of them together.

Threading model (DESIGN §2: LMDB never runs on the Trio thread):

- Writes are requests (a tuple of operations, applied atomically) put on a thread-safe
  queue. One writer thread takes the first request, then everything that arrives within
  `max_batch_delay_s` of it, up to `max_batch_ops` operations (a request is never split),
  and applies the lot in ONE write transaction. `flush()` closes the batch at once.
- `await write(ops)` enqueues and sleeps on a `trio.Event`; after the commit the writer
  sets it through `TrioToken.run_sync_soon`, which never blocks the writer on Trio.
  `write_nowait(ops)` enqueues and returns: nobody waits, failures are only logged.
- Readers open their own read transactions in worker threads (`trio.to_thread.run_sync`)
  and see the last committed state; they never wait for the writer.
- Growing the map (`set_mapsize`) is only safe while this process has no transaction
  open. Read transactions therefore run under the shared side of a readers/writer lock;
  the writer aborts its own transaction and takes the exclusive side to resize. Resizes
  double the map, so they are rare and readers almost never wait.

Durability: the environment uses LMDB's defaults (`sync=True`, `metasync=True`): every
commit fsyncs data and meta pages before `write()` returns, so an acknowledged write
survives kill -9 and power loss. That costs fsyncs per transaction (under a millisecond
to several ms on SSDs, ~10 ms on spinning disks), which is why writes are batched: the
cost is paid per transaction, not per operation. The batching window is paid in latency:
a lone `write()` waits up to `max_batch_delay_s` for company before its commit.
`close()` commits what is queued; a process that dies without it loses only
`write_nowait` operations, which nobody was promised.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import lmdb
import msgpack
import trio

from nodenet.daemon.lmdbfile import DataFileError, check_data_file
from nodenet.protocol.identity import NODE_ID_LEN, NodeId

__all__ = [
    "DATABASES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Apply",
    "Delete",
    "Op",
    "Put",
    "StateConfig",
    "StateError",
    "StateStore",
    "StateStoreStatistics",
    "open_state_store",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
DATABASES: Final = ("meta", "members", "entries", "heads", "summary", "tombstones", "ids")
MAX_DBS: Final = 16  # room for the replicated store's databases without a format change
META_SCHEMA: Final = b"schema"
META_INCARNATION: Final = b"incarnation"
META_TAG_CHANGES: Final = b"tag_changes"
LOCK_FILE: Final = "nodenetd.lock"
MiB: Final = 1 << 20
GiB: Final = 1 << 30
# A short write is reported as EIO by LMDB, so EIO joins the "disk is full" family.
_DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


class StateError(Exception):
    """The state store cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Put:
    """Set `key` to `value` in the named database."""

    db: str
    key: bytes
    value: bytes

    def __post_init__(self) -> None:
        _check_key(self.db, self.key)
        if not isinstance(self.value, bytes):
            raise TypeError(f"Put value must be bytes, got {type(self.value).__name__}")


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove `key` from the named database (no error if it is absent)."""

    db: str
    key: bytes

    def __post_init__(self) -> None:
        _check_key(self.db, self.key)


@dataclass(frozen=True, slots=True, eq=False)
class Apply:
    """Run `fn(txn, dbs)` inside the write transaction, atomically with the rest of the batch.

    For read-modify-write logic (the store's last-writer-wins ingest). `fn` runs on the
    writer thread and may run again if the batch is retried, so it must only act through
    `txn`. Its return value is what `write` returns for it."""

    fn: Callable[[lmdb.Transaction[bytes], Mapping[str, lmdb._Database]], Any]
    weight: int = 1
    """How many operations it stands for (a batch of entries), for the batch limits."""


Op: TypeAlias = Put | Delete | Apply
Migration: TypeAlias = Callable[["lmdb.Transaction[bytes]", Mapping[str, "lmdb._Database"]], None]

# MIGRATIONS[v] upgrades schema v to v + 1 inside the open transaction. None exist yet.
MIGRATIONS: dict[int, Migration] = {}


def _check_key(db: str, key: bytes) -> None:
    if db not in DATABASES:
        raise ValueError(f"unknown state database {db!r}; the databases are {DATABASES}")
    if not isinstance(key, bytes):
        raise TypeError(f"state key must be bytes, got {type(key).__name__}")
    if not key:
        raise ValueError(f"state key in {db!r} is empty; LMDB keys are 1-511 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    """Sizes and batching limits of the state store."""

    map_size: int = 64 * MiB
    """Initial map size in bytes: the address space reserved, not disk used (the file
    grows with the data). Small, so a small node does not reserve much."""
    max_map_size: int = 64 * GiB
    """Bytes the map may double up to before writes fail with "state store is full"."""
    max_batch_ops: int = 1000
    """Operations per write transaction at most (bounds transaction size and latency)."""
    max_batch_delay_s: float = 0.010
    """Seconds a batch keeps collecting after its first request was queued: fsync costs
    milliseconds, so waiting briefly lets concurrent writers share one commit."""
    max_queued_ops: int = 100_000
    """Queued operations beyond which `write_nowait` refuses (`trio.WouldBlock`)."""

    def __post_init__(self) -> None:
        if self.map_size < 64 * 1024:
            raise ValueError(f"state.map_size = {self.map_size}: use at least 65536 bytes")
        if self.max_map_size < self.map_size:
            raise ValueError(
                f"state.max_map_size = {self.max_map_size} is below state.map_size ="
                f" {self.map_size}; raise it"
            )
        if self.max_batch_ops < 1 or self.max_queued_ops < 1:
            raise ValueError("state.max_batch_ops and state.max_queued_ops must be at least 1")
        if not 0 <= self.max_batch_delay_s <= 1:
            raise ValueError(f"state.max_batch_delay_s = {self.max_batch_delay_s}: use 0-1 s")


@dataclass(frozen=True, slots=True)
class StateStoreStatistics:
    """A snapshot of the store's counters (for metrics and tests)."""

    transactions: int  # write transactions committed
    ops_committed: int
    requests_committed: int
    largest_batch_ops: int  # operations in the largest committed transaction
    requests_failed: int
    queued_ops: int  # accepted but not yet committed or failed
    map_grows: int
    map_size: int  # bytes
    used_bytes: int  # bytes of the map holding data (high-water mark of the file)


class _SharedLock:
    """Many readers or one exclusive holder; a waiting exclusive holder blocks new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass(slots=True, eq=False)
class _Waiter:
    token: trio.lowlevel.TrioToken
    done: trio.Event
    error: str | None = None
    results: list[Any] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Request:
    ops: tuple[Op, ...]
    queued_at: float
    waiter: _Waiter | None


_STOP: Final = object()


def _wake(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        waiter.done.set()


class StateStore:
    """The daemon's LMDB environment: batched durable writes, direct reads (see module doc)."""

    def __init__(
        self,
        path: Path,
        env: lmdb.Environment,
        dbs: dict[str, lmdb._Database],
        lock_fd: int,
        config: StateConfig,
    ) -> None:
        """Use `StateStore.open` (or `open_state_store`); this takes an opened environment."""
        self.path = path
        self._env = env
        self._dbs = dbs
        self._lock_fd = lock_fd
        self._config = config
        self._max_key_size = env.max_key_size()
        self._page_size = env.stat()["psize"]
        self._rw = _SharedLock()
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _closed and the counters below
        self._closed = False
        self._env_closed = False
        self._transactions = self._ops = self._requests = self._largest = 0
        self._failed = self._queued = self._grows = 0
        self._map_size = env.info()["map_size"]
        self._used = self._used_bytes()
        self._writer = threading.Thread(
            target=self._run_writer, name="nodenet-state-writer", daemon=True
        )
        self._writer.start()

    @classmethod
    def open(cls, path: Path, config: StateConfig | None = None) -> StateStore:
        """Open (creating if needed) the environment in directory `path`; blocking, so call
        it through `trio.to_thread.run_sync` (or use `open_state_store`)."""
        config = config or StateConfig()
        lock_fd = _lock_directory(path)
        try:
            check_data_file(path)
        except DataFileError as exc:
            os.close(lock_fd)
            raise StateError(f"cannot open state store {path}: {exc}") from None
        try:
            env = lmdb.open(
                str(path),
                map_size=config.map_size,
                subdir=True,
                max_dbs=MAX_DBS,
                mode=0o600,
                sync=True,
                metasync=True,
                writemap=False,
                lock=True,
                create=True,
            )
        except (lmdb.Error, OSError) as exc:
            os.close(lock_fd)
            if isinstance(exc, PermissionError) or "Permission denied" in str(exc):
                # Not damage: moving the state away would throw the node's data out.
                raise StateError(
                    f"cannot open state store {path}: permission denied; run nodenetd as the"
                    f" user that owns it (for the packaged service: chown -R nodenet:nodenet"
                    f" {path.parent})"
                ) from exc
            raise StateError(
                f"cannot open state store {path}: {exc}; if its files are damaged, restore"
                f" {path} from a backup or move it away (the node then starts with empty state"
                " and rejoins through its seeds)"
            ) from exc
        try:
            dbs = _open_databases(env, path)
            stale = env.reader_check()
        except BaseException:
            env.close()
            os.close(lock_fd)
            raise
        if stale:
            logger.info("state store %s: freed %d read slots of processes that died", path, stale)
        return cls(path, env, dbs, lock_fd, config)

    def clear_stale_readers(self) -> int:
        """Free the read slots of processes that died inside a read transaction (a `kill -9`
        of `nodenet backup`, say): while one is held, LMDB can reuse no page freed after its
        snapshot and the file grows with every rewrite. Blocking (a scan of the lock table)."""
        stale = int(self._env.reader_check())
        if stale:
            logger.warning(
                "state store %s: freed %d read slots of processes that died", self.path, stale
            )
        return stale

    # Writes

    def write_nowait(self, ops: Iterable[Op]) -> None:
        """Queue `ops` and return: commit failures are logged, not raised; `trio.WouldBlock`
        when `max_queued_ops` operations are already waiting."""
        self._enqueue(ops, None, bounded=True)

    async def write(self, ops: Iterable[Op]) -> list[Any]:
        """Apply `ops` atomically; return once they are committed and synced to disk.

        Returns what each `Apply` op returned, in order. Cancelling the wait does not
        withdraw the write: it may still be committed."""
        waiter = _Waiter(trio.lowlevel.current_trio_token(), trio.Event())
        self._enqueue(ops, waiter, bounded=False)
        await waiter.done.wait()
        if waiter.error is not None:
            raise StateError(waiter.error)
        return waiter.results

    async def flush(self) -> None:
        """Commit everything queued so far (including `write_nowait` ops) and wait for it."""
        await self.write(())

    def save_member(self, node_id: NodeId, state: bytes) -> None:
        """Queue storing a member's signed state (fire and forget)."""
        self.write_nowait((Put("members", node_id, state),))

    def delete_member(self, node_id: NodeId) -> None:
        """Queue removing a member (fire and forget)."""
        self.write_nowait((Delete("members", node_id),))

    async def save_incarnation(self, incarnation: int) -> None:
        """Durably record our incarnation, so a restart never reuses a lower one."""
        await self.write((Put("meta", META_INCARNATION, msgpack.packb(incarnation)),))

    def _enqueue(self, ops: Iterable[Op], waiter: _Waiter | None, *, bounded: bool) -> None:
        batch = tuple(ops)
        for op in batch:
            if not isinstance(op, Put | Delete | Apply):
                raise TypeError(f"state operations are Put, Delete or Apply, got {op!r}")
            if isinstance(op, Apply):
                continue
            if len(op.key) > self._max_key_size:
                raise ValueError(
                    f"state key in {op.db!r} is {len(op.key)} bytes; LMDB allows at most"
                    f" {self._max_key_size}"
                )
        with self._lock:
            if self._closed:
                raise StateError(f"state store {self.path} is closed")
            if bounded and self._queued + len(batch) > self._config.max_queued_ops:
                raise trio.WouldBlock
            self._queued += len(batch)
            self._queue.put(_Request(batch, time.monotonic(), waiter))

    # Reads

    def get_sync(self, db: str, key: bytes) -> bytes | None:
        """The value of `key` in `db`, or None; blocking (run it in a worker thread)."""
        _check_key(db, key)
        with self._reading(db) as txn:
            return txn.get(key, db=self._dbs[db])

    def items_sync(
        self, db: str, prefix: bytes = b"", *, limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        """`(key, value)` pairs of `db` whose key starts with `prefix`, in key order; blocking."""
        found: list[tuple[bytes, bytes]] = []
        with self._reading(db) as txn, txn.cursor(self._dbs[db]) as cursor:
            if not cursor.set_range(prefix):
                return found
            for key, value in cursor:
                if not key.startswith(prefix) or (limit is not None and len(found) >= limit):
                    break
                found.append((key, value))
        return found

    async def get(self, db: str, key: bytes) -> bytes | None:
        """The value of `key` in `db`, or None."""
        return await trio.to_thread.run_sync(self.get_sync, db, key)

    async def items(
        self, db: str, prefix: bytes = b"", *, limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        """`(key, value)` pairs of `db` whose key starts with `prefix`, in key order."""
        return await trio.to_thread.run_sync(lambda: self.items_sync(db, prefix, limit=limit))

    async def load_members(self) -> dict[NodeId, bytes]:
        """Every stored member's signed state by node id (malformed ids are skipped)."""
        members: dict[NodeId, bytes] = {}
        for key, state in await self.items("members"):
            if len(key) == NODE_ID_LEN:
                members[NodeId(key)] = state
            else:
                logger.warning("state store: skipping a member key of %d bytes", len(key))
        return members

    async def load_tag_changes(self) -> dict[str, str | None]:
        """Tags changed at runtime: key → value, or None for a deleted key ({} if none)."""
        raw = await self.get("meta", META_TAG_CHANGES)
        if raw is None:
            return {}
        try:
            changes = msgpack.unpackb(raw, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise StateError(f"state store {self.path}: unreadable tag changes: {exc}") from exc
        if not isinstance(changes, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in changes.items()
        ):
            raise StateError(f"state store {self.path}: tag changes are not a map of strings")
        return changes

    async def save_tag_changes(self, changes: Mapping[str, str | None]) -> None:
        """Durably record the runtime tag changes (they outlive restarts)."""
        await self.write((Put("meta", META_TAG_CHANGES, msgpack.packb(dict(changes))),))

    async def load_incarnation(self) -> int:
        """Our last recorded incarnation (0 if none)."""
        raw = await self.get("meta", META_INCARNATION)
        return 0 if raw is None else _decode_int(raw, "incarnation", self.path)

    @contextmanager
    def reader(self) -> Iterator[tuple[lmdb.Transaction[bytes], Mapping[str, lmdb._Database]]]:
        """A read transaction and the databases, for several reads that must agree.

        Blocking: use it in a worker thread, and keep it short (one request, one
        reconciliation round): while it is open the map cannot grow."""
        with self._rw.shared():
            if self._env_closed:
                raise StateError(f"state store {self.path} is closed")
            try:
                with self._env.begin() as txn:
                    yield txn, self._dbs
            except lmdb.Error as exc:
                raise StateError(f"cannot read state store {self.path}: {exc}") from exc

    @contextmanager
    def _reading(self, db: str) -> Iterator[lmdb.Transaction[bytes]]:
        if db not in self._dbs:
            raise ValueError(f"unknown state database {db!r}; the databases are {DATABASES}")
        with self._rw.shared():
            if self._env_closed:
                raise StateError(f"state store {self.path} is closed")
            try:
                with self._env.begin() as txn:
                    yield txn
            except lmdb.Error as exc:
                raise StateError(f"cannot read {db!r} from state store {self.path}: {exc}") from exc

    # Lifecycle

    def statistics(self) -> StateStoreStatistics:
        """A consistent snapshot of the counters."""
        with self._lock:
            return StateStoreStatistics(
                transactions=self._transactions,
                ops_committed=self._ops,
                requests_committed=self._requests,
                largest_batch_ops=self._largest,
                requests_failed=self._failed,
                queued_ops=self._queued,
                map_grows=self._grows,
                map_size=self._map_size,
                used_bytes=self._used,
            )

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the environment; blocking.

        Later writes and reads raise StateError; closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        with self._rw.exclusive():
            self._env_closed = True
            self._env.close()
        os.close(self._lock_fd)

    async def aclose(self) -> None:
        """`close()` in a worker thread."""
        await trio.to_thread.run_sync(self.close)

    # The writer thread

    def _run_writer(self) -> None:
        carry: _Request | None = None
        stopping = False
        while not stopping:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if not isinstance(first, _Request):
                return
            batch, size = [first], _weight(first.ops)
            deadline = first.queued_at + self._config.max_batch_delay_s
            while size < self._config.max_batch_ops and first.ops:
                timeout = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=timeout)
                        if timeout > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if not isinstance(item, _Request):
                    stopping = True
                    break
                if size + _weight(item.ops) > self._config.max_batch_ops:
                    carry = item
                    break
                batch.append(item)
                size += _weight(item.ops)
                if not item.ops:  # a flush: commit now
                    break
            self._commit(batch, size)

    def _commit(self, batch: list[_Request], size: int) -> None:
        outcomes: list[str | None]  # per request: None when committed, else why not
        try:
            error = self._apply(batch) if size else None
            if error is None or len(batch) == 1:
                outcomes = [error] * len(batch)
                transactions = 1 if size and error is None else 0
                largest = size if transactions else 0
            else:  # one request may be the culprit: give each its own transaction
                outcomes = [self._apply([request]) if request.ops else None for request in batch]
                committed = [len(r.ops) for r, e in zip(batch, outcomes, strict=True) if not e]
                transactions = sum(1 for ops in committed if ops)
                largest = max(committed, default=0)
            used = self._used_bytes()
        except Exception as exc:  # a bug must fail the waiters, not hang them
            logger.exception("state store: unexpected error in the writer thread")
            outcomes = [f"state store write failed unexpectedly: {exc!r}"] * len(batch)
            transactions = largest = 0
            used = self._used
        with self._lock:
            self._queued -= size
            self._used = used
            self._transactions += transactions
            self._largest = max(self._largest, largest)
            for request, outcome in zip(batch, outcomes, strict=True):
                if outcome is None:
                    self._ops += len(request.ops)
                    self._requests += 1
                else:
                    self._failed += 1
        by_token: dict[trio.lowlevel.TrioToken, list[_Waiter]] = {}
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.waiter is not None:
                request.waiter.error = outcome
                by_token.setdefault(request.waiter.token, []).append(request.waiter)
            elif outcome is not None:
                logger.error(
                    "state store: %d queued operations were not saved: %s",
                    len(request.ops),
                    outcome,
                )
        for token, waiters in by_token.items():
            # RunFinishedError: the Trio run that was waiting has ended; nobody is left to tell.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(_wake, waiters)

    def _apply(self, batch: list[_Request]) -> str | None:
        """Apply the batch in one transaction, growing the map as needed; an error message."""
        dbs = self._dbs
        while True:
            try:
                results: list[list[Any]] = []
                with self._env.begin(write=True) as txn:
                    for request in batch:
                        results.append(outcome := [])
                        for op in request.ops:
                            if isinstance(op, Put):
                                txn.put(op.key, op.value, db=dbs[op.db])
                            elif isinstance(op, Delete):
                                txn.delete(op.key, db=dbs[op.db])
                            else:
                                outcome.append(op.fn(txn, dbs))
                for request, outcome in zip(batch, results, strict=True):
                    if request.waiter is not None:
                        request.waiter.results = outcome
                return None
            except lmdb.MapFullError:
                if not self._grow():
                    return (
                        f"state store is full: {_human(self._used_bytes())} used of"
                        f" {_human(self._map_size)} allowed by state.max_map_size; raise"
                        " state.max_map_size (disk is only used as data grows) or free space"
                    )
            except lmdb.Error as exc:
                if getattr(exc, "code", None) in _DISK_FULL_ERRNOS:
                    return (
                        "state store is full: the disk has no room beyond the"
                        f" {_human(self._used_bytes())} already used ({exc}); free disk space"
                    )
                return f"state store {self.path} write failed: {exc}; check the disk and the logs"

    def _grow(self) -> bool:
        if self._map_size >= self._config.max_map_size:
            return False
        new_size = min(self._map_size * 2, self._config.max_map_size)
        try:
            with self._rw.exclusive():  # LMDB requires no open transaction in this process
                self._env.set_mapsize(new_size)
        except lmdb.Error as exc:
            logger.error("state store: cannot grow the map to %d bytes: %s", new_size, exc)
            return False
        with self._lock:
            self._map_size = new_size
            self._grows += 1
        logger.info("state store: map grown to %s", _human(new_size))
        return True

    def _used_bytes(self) -> int:
        return (self._env.info()["last_pgno"] + 1) * self._page_size


@asynccontextmanager
async def open_state_store(
    path: Path, config: StateConfig | None = None
) -> AsyncIterator[StateStore]:
    """Open the store in a worker thread; close it (committing what is queued) on exit."""
    store = await trio.to_thread.run_sync(StateStore.open, path, config)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


def _weight(ops: tuple[Op, ...]) -> int:
    return sum(op.weight if isinstance(op, Apply) else 1 for op in ops)


def _lock_directory(path: Path) -> int:
    """Create `path` (0700) and lock it: LMDB forbids opening one environment twice."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create state store directory {path}: {exc.strerror}; check that it is a"
            " directory writable by this user, or choose another state directory"
        ) from exc
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot open {path / LOCK_FILE}: {exc.strerror}; run nodenetd as the user that"
            f" owns {path} (for the packaged service: chown -R nodenet:nodenet {path.parent})"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StateError(
            f"state store {path} is in use by another nodenetd (or another store in this"
            " process); stop it or choose another state directory"
        ) from exc
    return fd


def _open_databases(env: lmdb.Environment, path: Path) -> dict[str, lmdb._Database]:
    """Open the named databases and check (or record, or migrate) the schema version."""
    try:
        with env.begin(write=True) as txn:
            with txn.cursor() as names:
                had_databases = names.first()
            dbs = {name: env.open_db(name.encode(), txn=txn) for name in DATABASES}
            raw = txn.get(META_SCHEMA, db=dbs["meta"])
            if raw is None:
                if had_databases:
                    raise StateError(
                        f"{path} holds an LMDB environment without a nodenet schema version;"
                        " it is not a nodenet state store: choose another state directory"
                    )
                txn.put(META_SCHEMA, msgpack.packb(SCHEMA_VERSION), db=dbs["meta"])
                return dbs
            version = _decode_int(raw, "schema version", path)
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state store {path} has schema version {version}, newer than this nodenet"
                    f" understands ({SCHEMA_VERSION}): it was written by a newer nodenet;"
                    " upgrade nodenet"
                )
            for old in range(version, SCHEMA_VERSION):
                migration = MIGRATIONS.get(old)
                if migration is None:
                    raise StateError(
                        f"state store {path} has schema version {old}, which this nodenet"
                        f" cannot migrate to {SCHEMA_VERSION}; move {path} away to start"
                        " with empty state"
                    )
                logger.info("state store: migrating schema %d → %d", old, old + 1)
                migration(txn, dbs)
            if version != SCHEMA_VERSION:
                txn.put(META_SCHEMA, msgpack.packb(SCHEMA_VERSION), db=dbs["meta"])
            return dbs
    except lmdb.Error as exc:
        raise StateError(
            f"cannot read state store {path}: {exc}; restore it from a backup or move it away"
            " to start with empty state"
        ) from exc


def _decode_int(raw: bytes, what: str, path: Path) -> int:
    try:
        value = msgpack.unpackb(raw)
    except (ValueError, msgpack.UnpackException) as exc:
        raise StateError(f"state store {path}: the {what} is corrupt ({exc})") from exc
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StateError(f"state store {path}: the {what} is corrupt ({value!r})")
    return value


def _human(size: int) -> str:
    if size >= GiB:
        return f"{size / GiB:.1f} GiB"
    if size >= MiB:
        return f"{size / MiB:.1f} MiB"
    return f"{size / 1024:.1f} KiB"

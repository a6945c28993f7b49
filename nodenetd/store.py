"""The replicated store on LMDB: heads by key, entries by (hlc, id), a range-summary index.

Layout (one LMDB environment with the membership state, DESIGN §3.4):

    entries     hlc (8 bytes, big-endian) ‖ id (32)  →  the signed entry bytes
    heads       key (UTF-8)                           →  hlc (8) ‖ author (32) ‖ id (32)
    summary     page start (40 bytes, an item key)     →  count (4, LE) ‖ sum of ids (32, LE)
    tombstones  hlc ‖ id of a tombstone head           →  b""

`entries` holds only the current head of each key (superseded versions are dropped), so
it *is* the set anti-entropy reconciles, in reconciliation order. `summary` partitions that
ordered set into pages of at most `PAGE_MAX` items and keeps each page's count and sum of
ids mod 2^256, updated in the same write transaction as the entry; a range's fingerprint
then needs the page summaries inside it and at most two partial pages, never a full scan.

Every write (ingest of new entries, GC of tombstones) runs as one `Apply` on the state
store's writer thread, so last-writer-wins decisions and index updates are atomic, and an
acknowledged submit is on disk (fsync) before the API answers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from nodenet.daemon.state import Apply, StateStore
from nodenet.protocol.entries import ENTRY_ID_LEN, SignedEntry
from nodenet.protocol.hlc import pack_hlc

__all__ = ["PAGE_MAX", "EntryStore", "Head", "IngestOutcome", "item_key"]

log = logging.getLogger("nodenet.store")

PAGE_MAX = 128
"""Items per summary page before it splits: a partial page costs a scan of at most this
many keys, and 1,000,000 entries need ~10,000 page records."""
ITEM_KEY_LEN = 8 + ENTRY_ID_LEN
MIN_KEY = bytes(ITEM_KEY_LEN)
MOD = 1 << 256
_HEAD_LEN = 8 + 32 + ENTRY_ID_LEN


def item_key(hlc: int, entry_id: bytes) -> bytes:
    """The `entries` key of an item: its reconciliation order."""
    return hlc.to_bytes(8, "big") + entry_id


@dataclass(frozen=True, slots=True)
class Head:
    """The current head of a key, as the `heads` index records it."""

    hlc: int
    author: bytes
    id: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Head:
        return cls(int.from_bytes(raw[:8], "big"), raw[8:40], raw[40:72])

    def pack(self) -> bytes:
        return self.hlc.to_bytes(8, "big") + self.author + self.id

    @property
    def item(self) -> bytes:
        return item_key(self.hlc, self.id)


class IngestOutcome:
    """What happened to one ingested entry (also the metrics label)."""

    STORED = "stored"
    """A new head for its key."""
    DUPLICATE = "duplicate"
    """Already the head."""
    SUPERSEDED = "superseded"
    """Older than the head: dropped (a replica that has the head needs nothing from it)."""
    EXPIRED = "expired"
    """A tombstone older than the tombstone TTL: dropped, as every replica drops it."""


Dbs = Mapping[str, Any]


# --- the summary index (runs inside write transactions) -------------------------------------


def _summary_floor(txn: lmdb.Transaction[bytes], db: Any, key: bytes) -> bytes | None:
    """The start of the page holding `key`: the greatest page start ≤ key."""
    with txn.cursor(db) as cursor:
        if cursor.set_range(key):
            if cursor.key() == key:
                return key
            if cursor.prev():
                return cursor.key()
            return None
        if cursor.last():
            return cursor.key()
        return None


def _unpack_summary(raw: bytes) -> tuple[int, int]:
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:36], "little")


def _pack_summary(count: int, total: int) -> bytes:
    return count.to_bytes(4, "little") + (total % MOD).to_bytes(32, "little")


def _summary_change(txn: lmdb.Transaction[bytes], dbs: Dbs, key: bytes, delta: int) -> None:
    """Add (delta=+1) or remove (delta=-1) the item `key` in its page's summary."""
    db = dbs["summary"]
    start = _summary_floor(txn, db, key)
    if start is None:
        start = MIN_KEY
        count, total = 0, 0
    else:
        count, total = _unpack_summary(txn.get(start, db=db) or b"")
    count += delta
    total += delta * int.from_bytes(key[8:], "little")
    if count == 0 and start != MIN_KEY:
        txn.delete(start, db=db)
        return
    txn.put(start, _pack_summary(count, total), db=db)
    if count > PAGE_MAX:
        _split_page(txn, dbs, start)


def _split_page(txn: lmdb.Transaction[bytes], dbs: Dbs, start: bytes) -> None:
    keys = []
    with txn.cursor(dbs["summary"]) as pages:
        end = pages.key() if pages.set_range(start) and pages.next() else None
    with txn.cursor(dbs["entries"]) as cursor:
        if cursor.set_range(start):
            for key in cursor.iternext(keys=True, values=False):
                if end is not None and key >= end:
                    break
                keys.append(key)
    middle = len(keys) // 2
    lower, upper = keys[:middle], keys[middle:]
    txn.put(
        start,
        _pack_summary(len(lower), sum(int.from_bytes(k[8:], "little") for k in lower)),
        db=dbs["summary"],
    )
    txn.put(
        upper[0],
        _pack_summary(len(upper), sum(int.from_bytes(k[8:], "little") for k in upper)),
        db=dbs["summary"],
    )


class EntryStore:
    """Entries and heads on the state store's LMDB environment."""

    def __init__(self, state: StateStore, *, tombstone_ttl_s: float = 7 * 24 * 3600.0) -> None:
        self.state = state
        self.tombstone_ttl_s = tombstone_ttl_s

    # --- writes -----------------------------------------------------------------------------

    async def ingest(self, entries: Sequence[SignedEntry], *, now_ms: int) -> list[str]:
        """Store verified entries atomically and durably; an `IngestOutcome` for each."""
        if not entries:
            return []
        horizon = pack_hlc(max(0, now_ms - int(self.tombstone_ttl_s * 1000)), 0)
        (outcomes,) = await self.state.write(
            [Apply(lambda txn, dbs: _ingest(txn, dbs, entries, horizon))]
        )
        return list(outcomes)

    async def collect_garbage(self, *, now_ms: int, limit: int = 10_000) -> int:
        """Forget tombstones older than the TTL (at most `limit` per call); how many."""
        horizon = item_key(
            pack_hlc(max(0, now_ms - int(self.tombstone_ttl_s * 1000)), 0), bytes(32)
        )
        (removed,) = await self.state.write(
            [Apply(lambda txn, dbs: _collect(txn, dbs, horizon, limit))]
        )
        return int(removed)

    # --- reads (blocking: run them in a worker thread) -----------------------------------

    def head_sync(self, key: str) -> bytes | None:
        """The encoded head entry of `key` (a tombstone included), or None."""
        with self.state.reader() as (txn, dbs):
            raw = txn.get(key.encode("utf-8"), db=dbs["heads"])
            if raw is None:
                return None
            value: bytes | None = txn.get(Head.parse(raw).item, db=dbs["entries"])
            return value

    def list_sync(self, prefix: str, after: str | None, limit: int) -> list[bytes]:
        """Head entries whose key starts with `prefix`, after key `after`, in key order."""
        found: list[bytes] = []
        start = prefix.encode("utf-8")
        first = max(after.encode("utf-8") + b"\x00" if after is not None else start, start)
        with self.state.reader() as (txn, dbs), txn.cursor(dbs["heads"]) as cursor:
            if not cursor.set_range(first):
                return found
            for key, raw in cursor:
                if not key.startswith(start) or len(found) >= limit:
                    break
                value = txn.get(Head.parse(raw).item, db=dbs["entries"])
                if value is not None:
                    found.append(value)
        return found

    def get_items_sync(self, items: Sequence[bytes]) -> list[bytes]:
        """Encoded entries for the item keys (hlc ‖ id) we hold; missing ones are skipped."""
        with self.state.reader() as (txn, dbs):
            found = (txn.get(key, db=dbs["entries"]) for key in items)
            return [value for value in found if value is not None]

    def missing_sync(self, items: Sequence[bytes]) -> list[bytes]:
        """The item keys among `items` that we do not hold."""
        with self.state.reader() as (txn, dbs):
            return [key for key in items if txn.get(key, db=dbs["entries"]) is None]

    def count_sync(self) -> int:
        """Entries held (heads, tombstones included)."""
        with self.state.reader() as (txn, dbs):
            return int(txn.stat(dbs["entries"])["entries"])

    def digest_sync(self) -> bytes:
        """A digest of every head (key ‖ head): equal on replicas holding the same heads."""
        digest = hashlib.blake2b(digest_size=32)
        with self.state.reader() as (txn, dbs), txn.cursor(dbs["heads"]) as cursor:
            for key, raw in cursor:
                digest.update(len(key).to_bytes(2, "big") + key + raw)
        return digest.digest()


def _ingest(
    txn: lmdb.Transaction[bytes], dbs: Dbs, entries: Sequence[SignedEntry], horizon: int
) -> list[str]:
    outcomes = []
    for entry in entries:
        key = entry.key.encode("utf-8")
        new_head = Head(entry.hlc, entry.author, entry.id)
        if entry.tombstone and entry.hlc < horizon:
            outcomes.append(IngestOutcome.EXPIRED)
            continue
        raw = txn.get(key, db=dbs["heads"])
        if raw is not None:
            old = Head.parse(raw)
            if old.id == entry.id:
                outcomes.append(IngestOutcome.DUPLICATE)
                continue
            if (entry.hlc, entry.author, entry.id) <= (old.hlc, old.author, old.id):
                outcomes.append(IngestOutcome.SUPERSEDED)
                continue
            txn.delete(old.item, db=dbs["entries"])
            txn.delete(old.item, db=dbs["tombstones"])
            _summary_change(txn, dbs, old.item, -1)
        txn.put(key, new_head.pack(), db=dbs["heads"])
        txn.put(new_head.item, entry.encoded, db=dbs["entries"])
        if entry.tombstone:
            txn.put(new_head.item, b"", db=dbs["tombstones"])
        _summary_change(txn, dbs, new_head.item, +1)
        outcomes.append(IngestOutcome.STORED)
    return outcomes


def _collect(txn: lmdb.Transaction[bytes], dbs: Dbs, horizon: bytes, limit: int) -> int:
    """Remove tombstone heads older than `horizon` (an item key)."""
    expired: list[bytes] = []
    with txn.cursor(dbs["tombstones"]) as cursor:
        for item in cursor.iternext(keys=True, values=False):
            if item >= horizon or len(expired) >= limit:
                break
            expired.append(item)
    for item in expired:
        encoded = txn.get(item, db=dbs["entries"])
        txn.delete(item, db=dbs["tombstones"])
        if encoded is None:
            continue
        body = msgpack.unpackb(msgpack.unpackb(encoded)[0], raw=False)
        key = body[1].encode("utf-8")
        raw = txn.get(key, db=dbs["heads"])
        if raw is not None and Head.parse(raw).item == item:
            txn.delete(key, db=dbs["heads"])
        txn.delete(item, db=dbs["entries"])
        _summary_change(txn, dbs, item, -1)
    return len(expired)

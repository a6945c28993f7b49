"""The replicated store on LMDB: heads by key, entries by (hlc, id), a range-summary index.

Layout (one LMDB environment with the membership state, DESIGN §3.4):

    entries     hlc (8 bytes, big-endian) ‖ id (32)  →  the signed entry bytes
    heads       key (UTF-8)                           →  hlc (8) ‖ author (32) ‖ id (32)
    summary     page start (40 bytes, an item key)     →  count (4, LE) ‖ sum of ids (32, LE)
    tombstones  hlc ‖ id of a tombstone head           →  b""
    ids         id (32)                               →  hlc (8): find an entry by id

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
import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from nodenet.daemon.state import Apply, StateStore
from nodenet.protocol.entries import ENTRY_ID_LEN, SignedEntry, entry_id
from nodenet.protocol.hlc import pack_hlc
from nodenet.protocol.reconcile import (
    INFINITY,
    MIN_BOUND,
    Bound,
    Fingerprint,
    Item,
    fingerprint_value,
)

__all__ = [
    "PAGE_MAX",
    "DamagedEntries",
    "EntryStore",
    "Head",
    "IngestOutcome",
    "LmdbItemSource",
    "item_key",
]

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


class DamagedEntries(Exception):
    """Stored entries whose bytes no longer hash to their id; `keys` are theirs."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"damaged on disk: {', '.join(repr(k) for k in keys[:5])}")
        self.keys = keys


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


def _unpack_summary(raw: bytes) -> tuple[int, int]:
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:36], "little")


def _pack_summary(count: int, total: int) -> bytes:
    return count.to_bytes(4, "little") + (total % MOD).to_bytes(32, "little")


def _page_of(cursor: lmdb.Cursor[bytes], key: bytes) -> tuple[bytes, bytes | None]:
    """`(start, end)` of the page holding `key` (`end` None: the last page). With no page at
    or below `key`, the page is the one starting at MIN_KEY (created when first written)."""
    if not cursor.set_range(key):
        return (cursor.key() if cursor.last() else MIN_KEY), None
    if cursor.key() == key:
        return key, (cursor.key() if cursor.next() else None)
    above = cursor.key()
    return (cursor.key() if cursor.prev() else MIN_KEY), above


def _summary_changes(
    txn: lmdb.Transaction[bytes], dbs: Dbs, changes: list[tuple[bytes, int]]
) -> None:
    """Apply a transaction's item additions (+1) and removals (-1) to the page summaries:
    one lookup per run of keys in the same page, one read and one write per page touched.
    Call it after the `entries` database holds the transaction's items (a page that grows
    past PAGE_MAX is split from them)."""
    db = dbs["summary"]
    deltas: dict[bytes, list[int]] = {}
    with txn.cursor(db) as cursor:
        start: bytes | None = None
        end: bytes | None = None
        for key, delta in sorted(changes):
            if start is None or key < start or (end is not None and key >= end):
                start, end = _page_of(cursor, key)
            change = deltas.setdefault(start, [0, 0])
            change[0] += delta
            change[1] += delta * int.from_bytes(key[8:], "little")
    for start, (count_delta, total_delta) in deltas.items():
        count, total = _unpack_summary(txn.get(start, db=db) or b"")
        count += count_delta
        if count == 0 and start != MIN_KEY:
            txn.delete(start, db=db)
            continue
        txn.put(start, _pack_summary(count, total + total_delta), db=db)
        if count > PAGE_MAX:
            _split_page(txn, dbs, start)


def _split_page(txn: lmdb.Transaction[bytes], dbs: Dbs, start: bytes) -> None:
    """Split the page at `start` in two halves, or, if it holds more than two pages' worth
    (a large batch landed in it), in pages of PAGE_MAX / 2."""
    keys = []
    with txn.cursor(dbs["summary"]) as pages:
        end = pages.key() if pages.set_range(start) and pages.next() else None
    with txn.cursor(dbs["entries"]) as cursor:
        if cursor.set_range(start):
            for key in cursor.iternext(keys=True, values=False):
                if end is not None and key >= end:
                    break
                keys.append(key)
    size = (len(keys) + 1) // 2 if len(keys) <= 2 * PAGE_MAX else PAGE_MAX // 2
    for at in range(0, len(keys), size):
        part = keys[at : at + size]
        txn.put(
            start if at == 0 else part[0],
            _pack_summary(len(part), sum(int.from_bytes(k[8:], "little") for k in part)),
            db=dbs["summary"],
        )


class EntryStore:
    """Entries and heads on the state store's LMDB environment."""

    def __init__(self, state: StateStore, *, tombstone_ttl_s: float = 7 * 24 * 3600.0) -> None:
        self.state = state
        self.tombstone_ttl_s = tombstone_ttl_s
        self.count = 0
        """Entries held, as of the last write (read it without touching LMDB)."""
        self._writes = itertools.count(1)
        self._count_at = 0
        """Which write `count` is from: writes commit in order in the writer thread, but
        the tasks awaiting them may resume in any order, and a later one must not be
        overwritten by an earlier one's count."""

    # --- writes -----------------------------------------------------------------------------

    async def ingest(self, entries: Sequence[SignedEntry], *, now_ms: int) -> list[str]:
        """Store verified entries atomically and durably; an `IngestOutcome` for each."""
        if not entries:
            return []
        horizon = pack_hlc(max(0, now_ms - int(self.tombstone_ttl_s * 1000)), 0)
        (outcomes, count, order) = (
            await self.state.write(
                [
                    Apply(
                        lambda txn, dbs: (*_ingest(txn, dbs, entries, horizon), next(self._writes)),
                        weight=len(entries),
                    )
                ]
            )
        )[0]
        self._note_count(count, order)
        return list(outcomes)

    def _note_count(self, count: int, order: int) -> None:
        if order > self._count_at:
            self.count, self._count_at = count, order

    async def collect_garbage(self, *, now_ms: int, limit: int = 10_000) -> int:
        """Forget tombstones older than the TTL (at most `limit` per call); how many."""
        horizon = item_key(
            pack_hlc(max(0, now_ms - int(self.tombstone_ttl_s * 1000)), 0), bytes(32)
        )
        ((removed, count, order),) = await self.state.write(
            [Apply(lambda txn, dbs: (*_collect(txn, dbs, horizon, limit), next(self._writes)))]
        )
        self._note_count(count, order)
        return int(removed)

    # --- reads (blocking: run them in a worker thread) -----------------------------------

    def head_sync(self, key: str) -> bytes | None:
        """The encoded head entry of `key` (a tombstone included), or None; DamagedEntries
        if its bytes on disk no longer hash to its id."""
        with self.state.reader() as (txn, dbs):
            raw = txn.get(key.encode("utf-8"), db=dbs["heads"])
            if raw is None:
                return None
            head = Head.parse(raw)
            value: bytes | None = txn.get(head.item, db=dbs["entries"])
            if value is not None and entry_id(value) != head.id:
                raise DamagedEntries([key])
            return value

    def list_sync(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[bytes], list[str]]:
        """Head entries whose key starts with `prefix`, after key `after`, in key order; and
        the keys whose head is damaged on disk (left out of the list)."""
        found: list[bytes] = []
        damaged: list[str] = []
        start = prefix.encode("utf-8")
        first = max(after.encode("utf-8") + b"\x00" if after is not None else start, start)
        with self.state.reader() as (txn, dbs), txn.cursor(dbs["heads"]) as cursor:
            if not cursor.set_range(first):
                return found, damaged
            for key, raw in cursor:
                if not key.startswith(start) or len(found) >= limit:
                    break
                head = Head.parse(raw)
                value = txn.get(head.item, db=dbs["entries"])
                if value is None:
                    continue
                if entry_id(value) != head.id:
                    damaged.append(key.decode("utf-8", "replace"))
                    continue
                found.append(value)
        return found, damaged

    async def forget_damaged_items(self, items: Sequence[bytes]) -> int:
        """`forget_damaged` for entries found by item key (serving a transfer): their heads
        stay, pointing at nothing, which reads and ingest treat as no head."""
        ((removed, count, order),) = await self.state.write(
            [Apply(lambda txn, dbs: (*_forget_items(txn, dbs, items), next(self._writes)))]
        )
        self._note_count(count, order)
        return int(removed)

    async def forget_damaged(self, keys: Sequence[str]) -> int:
        """Remove the heads of `keys` whose bytes on disk no longer hash to their id (bit
        rot, a bad copy): anti-entropy then fetches them again from a peer, as entries this
        node never had. Checked again inside the write; how many were removed."""
        ((removed, count, order),) = await self.state.write(
            [Apply(lambda txn, dbs: (*_forget_damaged(txn, dbs, keys), next(self._writes)))]
        )
        self._note_count(count, order)
        return int(removed)

    def get_by_ids_sync(self, ids: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
        """Encoded entries for the ids we hold (others are skipped), in the order asked; and
        the item keys of those damaged on disk (left out: a peer would refuse them)."""
        found = []
        damaged = []
        with self.state.reader() as (txn, dbs):
            for wanted in ids:
                hlc = txn.get(wanted, db=dbs["ids"])
                if hlc is None:
                    continue
                value = txn.get(hlc + wanted, db=dbs["entries"])
                if value is None:
                    continue
                if entry_id(value) != wanted:
                    damaged.append(hlc + wanted)
                    continue
                found.append(value)
        return found, damaged

    def missing_sync(self, ids: Sequence[bytes]) -> list[bytes]:
        """The ids among `ids` that we do not hold."""
        with self.state.reader() as (txn, dbs):
            return [i for i in ids if txn.get(i, db=dbs["ids"]) is None]

    def count_sync(self) -> int:
        """Entries held (heads, tombstones included)."""
        with self.state.reader() as (txn, dbs):
            return int(txn.stat(dbs["entries"])["entries"])

    def fingerprint_sync(self) -> Fingerprint:
        """The reconciliation fingerprint of the whole store (what a STORE_SUMMARY carries),
        from the summary index: one read of each page record, never a scan of the entries."""
        source = LmdbItemSource()
        with self.state.reader() as (txn, dbs):
            source.bind(txn, dbs)
            return source.fingerprint(MIN_BOUND, INFINITY)

    def digest_sync(self) -> bytes:
        """A digest of every head (key ‖ head): equal on replicas holding the same heads."""
        digest = hashlib.blake2b(digest_size=32)
        with self.state.reader() as (txn, dbs), txn.cursor(dbs["heads"]) as cursor:
            for key, raw in cursor:
                digest.update(len(key).to_bytes(2, "big") + key + raw)
        return digest.digest()


def _ingest(
    txn: lmdb.Transaction[bytes], dbs: Dbs, entries: Sequence[SignedEntry], horizon: int
) -> tuple[list[str], int]:
    outcomes = []
    changes: list[tuple[bytes, int]] = []
    for entry in entries:
        key = entry.key.encode("utf-8")
        if entry.tombstone and entry.hlc < horizon:
            outcomes.append(IngestOutcome.EXPIRED)
            continue
        raw = txn.get(key, db=dbs["heads"])
        # A head whose entry is gone (dropped as damaged, or an unreadable tombstone that
        # was collected) counts as no head: the entry is taken, and nothing is subtracted
        # from the summary twice.
        if raw is not None and txn.get((old := Head.parse(raw)).item, db=dbs["entries"]):
            if old.id == entry.id:
                outcomes.append(IngestOutcome.DUPLICATE)
                continue
            if (entry.hlc, entry.author, entry.id) <= (old.hlc, old.author, old.id):
                outcomes.append(IngestOutcome.SUPERSEDED)
                continue
            txn.delete(old.item, db=dbs["entries"])
            txn.delete(old.item, db=dbs["tombstones"])
            txn.delete(old.id, db=dbs["ids"])
            changes.append((old.item, -1))
        # The bytes of `Head(entry.hlc, entry.author, entry.id)`, built once (the hot loop).
        hlc = entry.hlc.to_bytes(8, "big")
        item = hlc + entry.id
        txn.put(key, hlc + entry.author + entry.id, db=dbs["heads"])
        txn.put(item, entry.encoded, db=dbs["entries"])
        txn.put(entry.id, hlc, db=dbs["ids"])
        if entry.tombstone:
            txn.put(item, b"", db=dbs["tombstones"])
        changes.append((item, +1))
        outcomes.append(IngestOutcome.STORED)
    _summary_changes(txn, dbs, changes)
    return outcomes, int(txn.stat(dbs["entries"])["entries"])


def _damaged(txn: lmdb.Transaction[bytes], dbs: Dbs, item: bytes) -> bool:
    """Whether the entry stored under `item` no longer hashes to its id (False if gone)."""
    value = txn.get(item, db=dbs["entries"])
    return value is not None and entry_id(value) != item[8:]


def _forget_items(
    txn: lmdb.Transaction[bytes], dbs: Dbs, items: Sequence[bytes]
) -> tuple[int, int]:
    changes: list[tuple[bytes, int]] = []
    for item in items:
        if not _damaged(txn, dbs, item):
            continue  # gone meanwhile, or not damaged after all
        txn.delete(item, db=dbs["entries"])
        txn.delete(item, db=dbs["tombstones"])
        txn.delete(item[8:], db=dbs["ids"])
        changes.append((item, -1))
    _summary_changes(txn, dbs, changes)
    return len(changes), int(txn.stat(dbs["entries"])["entries"])


def _forget_damaged(txn: lmdb.Transaction[bytes], dbs: Dbs, keys: Sequence[str]) -> tuple[int, int]:
    """`_forget_items` for the heads of `keys`, the heads removed as well."""
    items = []
    for key in keys:
        raw = txn.get(key.encode("utf-8"), db=dbs["heads"])
        if raw is not None and _damaged(txn, dbs, item := Head.parse(raw).item):
            txn.delete(key.encode("utf-8"), db=dbs["heads"])
            items.append(item)
    return _forget_items(txn, dbs, items)


def _collect(txn: lmdb.Transaction[bytes], dbs: Dbs, horizon: bytes, limit: int) -> tuple[int, int]:
    """Remove tombstone heads older than `horizon` (an item key)."""
    expired: list[bytes] = []
    changes: list[tuple[bytes, int]] = []
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
        try:
            body = msgpack.unpackb(msgpack.unpackb(encoded)[0], raw=False)
            key = body[1].encode("utf-8")
        except (ValueError, TypeError, IndexError, AttributeError, msgpack.UnpackException):
            key = None  # damaged on disk: its head (if it still points here) reads as absent
        raw = txn.get(key, db=dbs["heads"]) if key else None
        if raw is not None and Head.parse(raw).item == item:
            txn.delete(key, db=dbs["heads"])
        txn.delete(item, db=dbs["entries"])
        txn.delete(item[8:], db=dbs["ids"])
        changes.append((item, -1))
    _summary_changes(txn, dbs, changes)
    return len(expired), int(txn.stat(dbs["entries"])["entries"])


# --- the reconciliation view (reads; bound to one read transaction per message) -----------


class LmdbItemSource:
    """`nodenet.protocol.reconcile.ItemSource` over the `entries` and `summary` databases.

    `bind` it to a read transaction for each `Reconciler` call: every lookup made while
    handling one message then sees one snapshot. Fingerprints add whole pages' summaries
    and scan at most the two partial pages at the ends of the range."""

    def __init__(self) -> None:
        self._txn: lmdb.Transaction[bytes] | None = None
        self._dbs: Dbs = {}

    def bind(self, txn: lmdb.Transaction[bytes], dbs: Dbs) -> None:
        """Use this read transaction until the next `bind`."""
        self._txn, self._dbs = txn, dbs

    @property
    def txn(self) -> lmdb.Transaction[bytes]:
        if self._txn is None:
            raise RuntimeError("LmdbItemSource used outside a bound read transaction")
        return self._txn

    def _pages(self, lo: bytes, hi: bytes) -> list[tuple[bytes, bytes, int, int]]:
        """(start, end, count, sum) of every page overlapping [lo, hi); end is exclusive."""
        txn, db = self.txn, self._dbs["summary"]
        found: list[tuple[bytes, bytes, int, int]] = []
        with txn.cursor(db) as cursor:
            start, _ = _page_of(cursor, lo)
            if not cursor.set_key(start):
                return found
            current, raw = cursor.item()
            while current < hi:
                more = cursor.next()
                end = cursor.key() if more else _INFINITE_KEY
                count, total = _unpack_summary(raw)
                found.append((current, end, count, total))
                if not more:
                    break
                current, raw = cursor.item()
        return found

    def _scan(self, lo: bytes, hi: bytes) -> Iterator[bytes]:
        with self.txn.cursor(self._dbs["entries"]) as cursor:
            if not cursor.set_range(lo):
                return
            for key in cursor.iternext(keys=True, values=False):
                if key >= hi:
                    return
                yield key

    def fingerprint(self, lower: Bound, upper: Bound) -> Fingerprint:
        lo, hi = lower.key, upper.key
        count = total = 0
        for start, end, page_count, page_sum in self._pages(lo, hi):
            if start >= lo and end <= hi:
                count += page_count
                total += page_sum
            else:
                for key in self._scan(max(lo, start), min(hi, end)):
                    count += 1
                    total += int.from_bytes(key[8:], "little")
        return Fingerprint(fingerprint_value(total % MOD, count), count)

    def items(self, lower: Bound, upper: Bound, limit: int) -> list[Item]:
        out: list[Item] = []
        for key in self._scan(lower.key, upper.key):
            if len(out) >= limit:
                break
            out.append((int.from_bytes(key[:8], "big"), key[8:]))
        return out

    def last(self, lower: Bound, upper: Bound) -> Item | None:
        with self.txn.cursor(self._dbs["entries"]) as cursor:
            found = cursor.prev() if cursor.set_range(upper.key) else cursor.last()
            if not found:
                return None
            key = cursor.key()
        if key < lower.key:
            return None
        return (int.from_bytes(key[:8], "big"), key[8:])

    def split(self, lower: Bound, upper: Bound, parts: int) -> list[Bound]:
        lo, hi = lower.key, upper.key
        pages = self._pages(lo, hi)
        inner = [p for p in pages if p[0] > lo]
        if len(inner) < parts:
            keys = list(self._scan(lo, hi))
            cuts = [keys[i * len(keys) // parts] for i in range(1, parts)] if len(keys) > 1 else []
            return _bounds(keys, cuts)
        total = sum(p[2] for p in pages)
        cuts, running, target = [], 0, 1
        for start, _, count, _ in pages:
            if start > lo and running >= target * total / parts and len(cuts) < parts - 1:
                cuts.append(start)
                target += 1
            running += count
        with self.txn.cursor(self._dbs["entries"]) as cursor:
            bounds = []
            for cut in cuts:
                if cursor.set_range(cut) and cursor.prev() and cursor.key() >= lo:
                    bounds.append(Bound.between(_item(cursor.key()), _item(cut)))
        return _increasing(bounds, lower, upper)


_INFINITE_KEY = INFINITY.key


def _item(key: bytes) -> Item:
    return (int.from_bytes(key[:8], "big"), key[8:])


def _bounds(keys: list[bytes], cuts: list[bytes]) -> list[Bound]:
    position = {k: i for i, k in enumerate(keys)}
    bounds = [
        Bound.between(_item(keys[position[c] - 1]), _item(c))
        for c in dict.fromkeys(cuts)
        if position[c] > 0
    ]
    return bounds


def _increasing(bounds: list[Bound], lower: Bound, upper: Bound) -> list[Bound]:
    out: list[Bound] = []
    for bound in bounds:
        if lower < bound < upper and (not out or out[-1] < bound):
            out.append(bound)
    return out

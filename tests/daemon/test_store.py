"""The LMDB entry store: last-writer-wins ingest, the summary index, tombstone GC."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.signing
import pytest
import trio

from nodenet.daemon.state import StateStore
from nodenet.daemon.store import PAGE_MAX, EntryStore, IngestOutcome, item_key
from nodenet.protocol.entries import SignedEntry, create_entry
from nodenet.protocol.hlc import pack_hlc

KEYS = [nacl.signing.SigningKey(bytes([i]) * 32) for i in range(1, 4)]
NOW_MS = 1_764_000_000_000
DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EntryStore]:
    state = await trio.to_thread.run_sync(StateStore.open, tmp_path / "state")
    try:
        yield EntryStore(state)
    finally:
        await state.aclose()


def entry(
    key: str, ms: int, *, author: int = 0, value: bytes | None = None, tombstone: bool = False
) -> SignedEntry:
    body = b"" if tombstone else (value if value is not None else f"{key}@{ms}".encode())
    return create_entry(KEYS[author], key, body, pack_hlc(ms, 0), tombstone=tombstone)


def check_index(store: EntryStore) -> int:
    """Recompute every page summary from the entries; return the number of pages."""
    with store.state.reader() as (txn, dbs):
        items = [k for k, _ in txn.cursor(dbs["entries"])]
        pages = [(k, v) for k, v in txn.cursor(dbs["summary"])]
    starts = [k for k, _ in pages] + [None]
    for (start, raw), end in zip(pages, starts[1:], strict=True):
        inside = [k for k in items if k >= start and (end is None or k < end)]
        count = int.from_bytes(raw[:4], "little")
        total = int.from_bytes(raw[4:36], "little")
        assert count == len(inside), f"page {start.hex()[:12]}: count {count} != {len(inside)}"
        assert total == sum(int.from_bytes(k[8:], "little") for k in inside) % 2**256
        assert count <= PAGE_MAX
    assert sum(int.from_bytes(v[:4], "little") for _, v in pages) == len(items)
    return len(pages)


async def test_ingest_keeps_the_last_writer_per_key(store):
    first, second = entry("k", NOW_MS), entry("k", NOW_MS + 1)
    assert await store.ingest([first], now_ms=NOW_MS) == [IngestOutcome.STORED]
    assert await store.ingest([first], now_ms=NOW_MS) == [IngestOutcome.DUPLICATE]
    assert await store.ingest([second], now_ms=NOW_MS) == [IngestOutcome.STORED]
    assert await store.ingest([first], now_ms=NOW_MS) == [IngestOutcome.SUPERSEDED]
    assert await trio.to_thread.run_sync(store.head_sync, "k") == second.encoded
    assert await trio.to_thread.run_sync(store.count_sync) == 1
    check_index(store)


async def test_list_by_prefix_with_paging(store):
    await store.ingest(
        [entry(f"app/{i:02d}", NOW_MS) for i in range(10)] + [entry("other", NOW_MS)], now_ms=NOW_MS
    )
    page = await trio.to_thread.run_sync(store.list_sync, "app/", None, 4)
    assert len(page) == 4
    rest = await trio.to_thread.run_sync(store.list_sync, "app/", "app/03", 100)
    assert len(rest) == 6


async def test_any_arrival_order_gives_the_same_digest(tmp_path):
    rng = random.Random(5)
    writes = [
        entry(f"k{rng.randrange(20)}", NOW_MS + rng.randrange(50), author=rng.randrange(3))
        for _ in range(300)
    ]
    digests = []
    for order in range(3):
        shuffled = list(writes)
        random.Random(order).shuffle(shuffled)
        state = await trio.to_thread.run_sync(StateStore.open, tmp_path / f"s{order}")
        try:
            store = EntryStore(state)
            for start in range(0, len(shuffled), 37):
                await store.ingest(shuffled[start : start + 37], now_ms=NOW_MS)
            digests.append(await trio.to_thread.run_sync(store.digest_sync))
            check_index(store)
        finally:
            await state.aclose()
    assert digests[0] == digests[1] == digests[2]


async def test_the_summary_index_stays_exact_through_splits_and_removals(store):
    rng = random.Random(11)
    for _ in range(20):
        writes = [
            entry(f"k{rng.randrange(400)}", NOW_MS + rng.randrange(10_000)) for _ in range(100)
        ]
        await store.ingest(writes, now_ms=NOW_MS)
    pages = check_index(store)
    assert pages > 1  # it did split


async def test_tombstones_expire_after_the_ttl_everywhere(store):
    old = NOW_MS - 8 * DAY_MS
    await store.ingest(
        [entry("gone", old - 10), entry("gone", old, tombstone=True), entry("kept", old)],
        now_ms=old + 1,
    )
    assert await store.collect_garbage(now_ms=NOW_MS) == 1
    assert await trio.to_thread.run_sync(store.head_sync, "gone") is None
    assert await trio.to_thread.run_sync(store.head_sync, "kept") is not None
    # An expired tombstone arriving later is not stored either.
    assert await store.ingest([entry("gone2", old, tombstone=True)], now_ms=NOW_MS) == [
        IngestOutcome.EXPIRED
    ]
    check_index(store)


async def test_items_lookup_and_missing(store):
    a, b = entry("a", NOW_MS), entry("b", NOW_MS)
    await store.ingest([a], now_ms=NOW_MS)
    ka, kb = item_key(a.hlc, a.id), item_key(b.hlc, b.id)
    assert await trio.to_thread.run_sync(store.get_items_sync, [ka, kb]) == [a.encoded]
    assert await trio.to_thread.run_sync(store.missing_sync, [ka, kb]) == [kb]

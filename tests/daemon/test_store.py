"""The LMDB entry store: last-writer-wins ingest, the summary index, tombstone GC."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.signing
import pytest
import trio

from nodenet.daemon.state import StateStore
from nodenet.daemon.store import PAGE_MAX, EntryStore, IngestOutcome, LmdbItemSource, item_key
from nodenet.protocol.entries import SignedEntry, create_entry
from nodenet.protocol.hlc import pack_hlc
from nodenet.protocol.reconcile import INFINITY, MIN_BOUND, Bound, MemoryItemSource, Reconciler

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


async def test_concurrent_ingests_leave_the_count_of_the_last_commit(store):
    # Commits happen in order in the writer thread, but the tasks awaiting them resume in
    # any order: the count must be the newest, not whichever task resumed last.
    for round_ in range(5):
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(
                    functools.partial(
                        store.ingest, [entry(f"r{round_}/{i}", NOW_MS + i)], now_ms=NOW_MS
                    )
                )
        assert store.count == await trio.to_thread.run_sync(store.count_sync) == 40 * (round_ + 1)


async def test_list_by_prefix_with_paging(store):
    await store.ingest(
        [entry(f"app/{i:02d}", NOW_MS) for i in range(10)] + [entry("other", NOW_MS)], now_ms=NOW_MS
    )
    page, damaged = await trio.to_thread.run_sync(store.list_sync, "app/", None, 4)
    assert (len(page), damaged) == (4, [])
    rest, _ = await trio.to_thread.run_sync(store.list_sync, "app/", "app/03", 100)
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


async def test_a_batch_larger_than_several_pages_in_one_transaction_is_split_exactly(store):
    # The summaries of a transaction are applied page by page after its items are stored:
    # 1,000 new items in one empty page must become pages of at most PAGE_MAX.
    rng = random.Random(12)
    writes = [entry(f"b{i}", NOW_MS + rng.randrange(10_000)) for i in range(1000)]
    await store.ingest(writes, now_ms=NOW_MS)
    assert check_index(store) >= 1000 // PAGE_MAX
    replaced = [entry(f"b{i}", NOW_MS + 20_000 + i) for i in range(0, 1000, 3)]  # removals too
    await store.ingest(replaced, now_ms=NOW_MS)
    check_index(store)


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
    assert await trio.to_thread.run_sync(store.get_by_ids_sync, [a.id, b.id]) == ([a.encoded], [])
    assert await trio.to_thread.run_sync(store.missing_sync, [a.id, b.id]) == [b.id]


# --- the reconciliation view --------------------------------------------------------------


async def _filled(store: EntryStore, n: int, seed: int) -> list[SignedEntry]:
    rng = random.Random(seed)
    writes = [
        entry(f"k{i}", NOW_MS - rng.randrange(10 * DAY_MS // 10), author=i % 3) for i in range(n)
    ]
    for start in range(0, n, 500):
        await store.ingest(writes[start : start + 500], now_ms=NOW_MS)
    return writes


async def test_lmdb_item_source_agrees_with_the_in_memory_one(store):
    writes = await _filled(store, 2000, seed=3)
    memory = MemoryItemSource([(e.hlc, e.id) for e in writes])
    source = LmdbItemSource()
    rng = random.Random(4)
    keys = sorted(item_key(e.hlc, e.id) for e in writes)
    with store.state.reader() as (txn, dbs):
        source.bind(txn, dbs)
        for _ in range(300):
            a, b = sorted(rng.sample(range(len(keys)), 2))
            lower = Bound(int.from_bytes(keys[a][:8], "big"), keys[a][8 : 8 + rng.randrange(4)])
            upper = (
                INFINITY
                if rng.random() < 0.1
                else Bound(int.from_bytes(keys[b][:8], "big"), keys[b][8:10])
            )
            if not lower < upper:
                continue
            assert source.fingerprint(lower, upper) == memory.fingerprint(lower, upper)
            assert source.items(lower, upper, 50) == list(memory.items(lower, upper, 50))
            assert source.last(lower, upper) == memory.last(lower, upper)
            bounds = source.split(lower, upper, 16)
            assert all(lower < x < upper for x in bounds)
            assert all(x < y for x, y in itertools.pairwise(bounds))
        assert source.fingerprint(MIN_BOUND, INFINITY).count == 2000


async def test_an_lmdb_store_reconciles_exactly_with_a_peer(store):
    writes = await _filled(store, 3000, seed=8)
    ours = {e.id for e in writes}
    rng = random.Random(9)
    theirs_items = [(e.hlc, e.id) for e in writes if rng.random() > 0.01]
    extra = [(pack_hlc(NOW_MS - rng.randrange(DAY_MS), 0), rng.randbytes(32)) for _ in range(40)]
    peer = Reconciler(MemoryItemSource(theirs_items + extra))
    source = LmdbItemSource()
    local = Reconciler(source)

    def step(call, *args):
        with store.state.reader() as (txn, dbs):
            source.bind(txn, dbs)
            return call(*args)

    message = step(local.initiate)
    for _ in range(12):
        reply = peer.receive(message)
        if reply is None:
            break
        message = step(local.receive, reply)
        if message is None:
            break
    theirs = {i for _, i in theirs_items} | {i for _, i in extra}
    assert local.have == ours - theirs
    assert local.need == theirs - ours


async def test_an_entry_damaged_on_disk_is_found_on_read_and_dropped_for_repair(store, tmp_path):
    # One flipped byte in a stored entry made GET and every listing of its prefix answer
    # 500 (found by a durability review). Its bytes no longer hash to its id: reads name
    # it, and dropping it lets anti-entropy see the difference and fetch it again.
    from nodenet.daemon.state import Apply
    from nodenet.daemon.store import DamagedEntries

    good = [entry(f"app/{i}", NOW_MS + i) for i in range(3)]
    await store.ingest(good, now_ms=NOW_MS + 10)
    damaged = good[1]
    item = item_key(damaged.hlc, damaged.id)
    flipped = damaged.encoded[:-1] + bytes([damaged.encoded[-1] ^ 1])
    await store.state.write([Apply(lambda txn, dbs: txn.put(item, flipped, db=dbs["entries"]))])

    with pytest.raises(DamagedEntries) as raised:
        await trio.to_thread.run_sync(store.head_sync, "app/1")
    assert raised.value.keys == ["app/1"]
    listed, found = await trio.to_thread.run_sync(store.list_sync, "app/", None, 10)
    assert (listed, found) == ([good[0].encoded, good[2].encoded], ["app/1"])

    assert await store.forget_damaged(["app/0", "app/1"]) == 1  # app/0 is intact: kept
    assert await trio.to_thread.run_sync(store.head_sync, "app/1") is None
    assert store.count == 2
    check_index(store)
    # The fingerprint is now that of a store that never had it: a peer that holds it sees
    # the difference at the next anti-entropy round and sends it.
    other = EntryStore(await trio.to_thread.run_sync(StateStore.open, tmp_path / "other"))
    try:
        await other.ingest([good[0], good[2]], now_ms=NOW_MS + 10)
        ours = await trio.to_thread.run_sync(store.fingerprint_sync)
        theirs = await trio.to_thread.run_sync(other.fingerprint_sync)
        assert ours == theirs
        assert await store.ingest([damaged], now_ms=NOW_MS + 10)  # and takes it back
        assert await trio.to_thread.run_sync(store.head_sync, "app/1") == damaged.encoded
    finally:
        await other.state.aclose()


async def test_a_damaged_entry_asked_for_by_id_is_not_sent_and_is_dropped_for_repair(store):
    # A node served its damaged entries to peers, which refused them as bad signatures, and
    # it never noticed (found by a durability re-review).
    from nodenet.daemon.state import Apply

    a, b = entry("a", NOW_MS), entry("b", NOW_MS + 1)
    await store.ingest([a, b], now_ms=NOW_MS + 10)
    item = item_key(b.hlc, b.id)
    broken = b.encoded[:-1] + bytes([b.encoded[-1] ^ 1])
    await store.state.write([Apply(lambda txn, dbs: txn.put(item, broken, db=dbs["entries"]))])
    found, damaged = await trio.to_thread.run_sync(store.get_by_ids_sync, [a.id, b.id])
    assert (found, damaged) == ([a.encoded], [item])
    assert await store.forget_damaged_items(damaged) == 1
    check_index(store)
    assert store.count == 1
    # The head still names b (nothing to read), and b arriving again is stored, not a
    # "duplicate" of what is gone.
    assert await trio.to_thread.run_sync(store.head_sync, "b") is None
    assert await store.ingest([b], now_ms=NOW_MS + 10) == [IngestOutcome.STORED]
    assert await trio.to_thread.run_sync(store.head_sync, "b") == b.encoded
    check_index(store)


async def test_an_unreadable_tombstone_collected_then_a_new_value_keeps_the_summary_right(store):
    # Collecting a tombstone whose bytes are unreadable left its head pointing at nothing;
    # the next value for that key subtracted the old item from the summary a second time,
    # and the node's store summaries never matched a peer's again (durability re-review).
    from nodenet.daemon.state import Apply

    old = NOW_MS - 8 * DAY_MS
    dead = entry("k", old, tombstone=True)
    await store.ingest([dead, entry("other", old)], now_ms=old + 1)
    item = item_key(dead.hlc, dead.id)
    await store.state.write([Apply(lambda txn, dbs: txn.put(item, b"garbage", db=dbs["entries"]))])
    assert await store.collect_garbage(now_ms=NOW_MS) == 1
    check_index(store)
    assert await store.ingest([entry("k", NOW_MS)], now_ms=NOW_MS) == [IngestOutcome.STORED]
    check_index(store)
    assert store.count == 2

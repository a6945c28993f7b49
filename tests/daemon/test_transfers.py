"""Transfers after a sync, in two in-process daemons (real sockets and LMDB): a replica far
behind fetches faster than it can verify, and must not hold more than a few batches of
fetched, unverified entries at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import nacl.signing
import trio
import trio.testing
from support.inprocess import two_daemons

from nodenet.daemon.replication import TRANSFER_BATCH, StoreService
from nodenet.protocol.entries import create_entry
from nodenet.protocol.hlc import pack_hlc

AUTHOR = nacl.signing.SigningKey(b"\x21" * 32)


async def test_given_verification_slower_than_fetching_then_pulls_wait_for_it():
    async with two_daemons() as (a, b):
        source, target = a.daemon.replication, b.daemon.replication
        assert source is not None
        assert target is not None
        batches = target.config.sync_pulls_in_flight + 4
        now = pack_hlc(int(time.time() * 1000), 0)
        entries = [
            create_entry(AUTHOR, f"bulk/{i:05d}", b"v", now + i)
            for i in range(batches * TRANSFER_BATCH)
        ]
        assert len(await source.ingest([e.encoded for e in entries])) == len(entries)

        verifying = threading.Event()  # shut: every verify thread of b waits
        held = [0, 0]  # fetched and not yet through ingest; the most at once
        decode = target._decode

        def gated_decode(blobs: Sequence[bytes], now_ms: int) -> list:
            verifying.wait(timeout=30)
            return decode(blobs, now_ms)

        ingest = target.ingest

        async def counting_ingest(blobs: Sequence[bytes], **kwargs: object) -> list:
            held[0] += len(blobs)
            held[1] = max(held)
            try:
                return await ingest(blobs, **kwargs)  # type: ignore[arg-type]
            finally:
                held[0] -= len(blobs)

        target._decode = gated_decode  # type: ignore[method-assign]
        target.ingest = counting_ingest  # type: ignore[method-assign]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    StoreService._pull, target, a.daemon.config.advertise, [e.id for e in entries]
                )
                bound = target.config.sync_pulls_in_flight * TRANSFER_BATCH
                with trio.fail_after(20):
                    while held[0] < bound:
                        await trio.sleep(0.01)
                # Nothing left to run but what waits: a pull that did not wait for its batch
                # to be stored would have fetched the next one by now.
                await trio.testing.wait_all_tasks_blocked(cushion=0.2)
                assert held[1] == bound, (held, bound)
                verifying.set()
            assert held[1] == bound
            with trio.fail_after(30):
                while target.store.count < len(entries):
                    await trio.sleep(0.01)
        finally:
            verifying.set()


async def test_given_a_full_state_store_then_replication_fails_softly_and_the_daemon_serves():
    # A replica whose disk (or state.max_map_size) is full used to exit at the first entries
    # its peers sent it, and again after every restart (found by a durability review).
    from nodenet.daemon.state import StateError

    async with two_daemons() as (a, b):
        source, target = a.daemon.replication, b.daemon.replication
        assert source is not None
        assert target is not None
        now = pack_hlc(int(time.time() * 1000), 0)
        entries = [create_entry(AUTHOR, f"full/{i}", b"v", now + i) for i in range(300)]
        assert len(await source.ingest([e.encoded for e in entries])) == len(entries)

        async def full(*args: object, **kwargs: object) -> list:
            raise StateError("state store is full: 64 MiB used of 64 MiB allowed")

        target.store.ingest = full  # type: ignore[method-assign]
        with trio.fail_after(20):
            await StoreService._pull(target, a.daemon.config.advertise, [e.id for e in entries])
            assert await target.ingest([entries[0].encoded], gossip=True) == []
        assert target.stats.write_failures == 3  # two pulled batches and the gossiped one
        assert (await b.http.get("/health")).status_code in (200, 503)
        metrics = (await b.http.get("/metrics")).text
        assert "nodenet_store_write_failures_total 3.0" in metrics

"""Periodic anti-entropy through store summaries, in two in-process daemons (real sockets
and LMDB, so real time: a short `store.sync_interval_s`, and every wait is on a counter
with a deadline, never a sleep for its own sake)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import trio
from support.inprocess import Running, two_daemons

from nodenet.daemon.replication import StoreService
from nodenet.protocol.entries import create_entry
from nodenet.protocol.hlc import pack_hlc

INTERVAL_S = 0.2
STORE = f"[store]\nsync_interval_s = {INTERVAL_S}\n"


@pytest.fixture
async def joined() -> AsyncIterator[tuple[Running, Running]]:
    """Daemons "a" and "b" with a short sync interval, b joined to a."""
    async with two_daemons(extra=STORE) as (a, b):
        response = await b.http.post("/v1/join", json={"addresses": [a.address]})
        assert response.status_code == 200
        yield a, b


def store(node: Running) -> StoreService:
    assert node.daemon.replication is not None
    return node.daemon.replication


def received(node: Running, result: str) -> int:
    return store(node).replicator.summaries_received[result]


async def until(check, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)


async def past_the_join(a: Running, b: Running) -> None:
    """Wait out the sessions joining starts (0.5 s after it, on both sides) and any started
    by a summary sent while writes were spreading: ten matching summaries each, ~2 s."""
    await until(lambda: received(a, "match") >= 10 and received(b, "match") >= 10)


async def test_given_agreeing_stores_then_summaries_flow_and_no_session_opens(joined):
    a, b = joined
    for node, key in ((a, "from-a"), (b, "from-b")):
        assert (await node.http.post("/v1/entries", json={"key": key, "value": "v"})).json()
    await until(lambda: store(a).store.count == store(b).store.count == 2)
    await past_the_join(a, b)
    sessions = store(a).stats.syncs + store(b).stats.syncs
    matched = received(a, "match") + received(b, "match")
    await until(lambda: received(a, "match") + received(b, "match") >= matched + 20)
    assert store(a).stats.syncs + store(b).stats.syncs == sessions
    assert received(a, "mismatch") + received(b, "mismatch") <= 2  # only while spreading
    metrics = (await a.http.get("/metrics")).text
    assert 'nodenet_store_summaries_received_total{result="match"}' in metrics
    assert "nodenet_store_summaries_sent_total" in metrics


async def test_given_an_entry_gossip_never_carried_then_a_summary_starts_the_repair(joined):
    a, b = joined
    await past_the_join(a, b)
    sessions = store(a).stats.syncs + store(b).stats.syncs
    # Stored on a without being gossiped, as if every datagram carrying it had been lost.
    entry = create_entry(store(a)._key, "unsent", b"v", pack_hlc(int(time.time() * 1000), 0))
    assert await store(a).store.ingest([entry], now_ms=int(time.time() * 1000)) == ["stored"]

    async def on_b() -> bool:
        return (await b.http.get("/v1/entries/unsent")).status_code == 200

    with trio.fail_after(20):
        while not await on_b():
            await trio.sleep(0.02)
    assert received(a, "mismatch") + received(b, "mismatch") >= 1
    assert store(a).stats.syncs + store(b).stats.syncs > sessions


async def test_given_two_nodes_start_a_session_with_each_other_at_once_then_one_goes_on(joined):
    # As when each sees the other join: the two requests cross. Before the tie-break both
    # answered "busy" and both sessions failed; now the smaller node id's session goes on
    # (it covers both directions) and the other is declined, not failed.
    a, b = joined
    await past_the_join(a, b)
    cores = {n: store(n).membership.core for n in (a, b)}
    before = {n: (store(n).stats.syncs, store(n).stats.sync_declined) for n in (a, b)}
    failures = store(a).stats.sync_failures + store(b).stats.sync_failures
    with trio.fail_after(20):
        async with trio.open_nursery() as both:
            for node, peer in ((a, b), (b, a)):
                address = cores[peer].states()[0].alive.address
                both.start_soon(store(node)._sync, address, cores[peer].node_id)
    smaller, larger = sorted((a, b), key=lambda n: cores[n].node_id)
    assert store(a).stats.sync_failures + store(b).stats.sync_failures == failures
    assert store(smaller).stats.syncs == before[smaller][0] + 1
    assert store(smaller).stats.sync_declined == before[smaller][1]
    assert store(larger).stats.sync_declined == before[larger][1] + 1

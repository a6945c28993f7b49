"""The replicator's anti-entropy schedule in isolation: store summaries, and the sessions
they start. Time is stepped by hand; stores are `MemoryItemSource`s; sessions run the real
`Reconciler` on both sides. Nothing here opens a socket or reads a clock."""

from __future__ import annotations

import random

import nacl.signing
import pytest

from nodenet.protocol.entries import entry_id
from nodenet.protocol.identity import NodeId, node_id_of
from nodenet.protocol.members import EventKind, MemberEvent
from nodenet.protocol.membership import Datagram, Exchange, Membership
from nodenet.protocol.messages import (
    Address,
    Alive,
    Entry,
    Leave,
    Message,
    Ping,
    ShortPing,
    StoreSummary,
)
from nodenet.protocol.reconcile import (
    INFINITY,
    MIN_BOUND,
    Fingerprint,
    MemoryItemSource,
    Reconciler,
)
from nodenet.protocol.replication import (
    RECENT_IDS,
    CompareSummary,
    Ingest,
    ReplicationConfig,
    Replicator,
    SendSummary,
    Sync,
)
from nodenet.protocol.wire import PROTOCOL_MINOR

INTERVAL = 10.0
KEYS = [nacl.signing.SigningKey(bytes([0x40 + i]) * 32) for i in range(4)]
IDS = [node_id_of(k) for k in KEYS]
ADDRESSES = [Address("127.0.0.1", 7950 + i) for i in range(4)]
SAME = Fingerprint.of([b"\x01" * 32, b"\x02" * 32])
OTHER = Fingerprint.of([b"\x01" * 32])


def _alive(i: int) -> Alive:
    return Alive.create(KEYS[i], incarnation=1, address=ADDRESSES[i])


def node(i: int, others: list[int], seed: int = 1) -> Replicator:
    """Node `i`'s replicator, over a membership core that holds `others` as alive."""
    core = Membership(key=KEYS[i], address=ADDRESSES[i], now=0.0, rng=random.Random(seed))
    for j in others:
        core.receive(0.0, IDS[j], ADDRESSES[j], _alive(j), PROTOCOL_MINOR)
    core.events()
    core.outputs()
    return Replicator(
        core,
        now=0.0,
        rng=random.Random(seed),
        config=ReplicationConfig(sync_interval_s=INTERVAL),
    )


def run_until(replicator: Replicator, until: float) -> list:
    """Run the replicator's timers up to `until`; every output, in order."""
    out = []
    while (due := replicator.get_timer()) is not None and due <= until:
        replicator.handle_timer(due)
        out += replicator.outputs()
    return out


def summary(theirs: Fingerprint) -> StoreSummary:
    return StoreSummary(fingerprint=theirs.value, count=theirs.count)


# --- the periodic tick ----------------------------------------------------------------------


def test_given_idle_intervals_then_each_tick_asks_for_a_summary_never_a_sync():
    replicator = node(0, [1, 2, 3])
    out = run_until(replicator, 10 * INTERVAL)
    assert out == [SendSummary()] * 10
    assert replicator.syncs == 0


def test_given_we_are_alone_then_no_summary_is_asked_for():
    assert run_until(node(0, []), 5 * INTERVAL) == []


def test_given_a_summary_when_sent_then_it_rides_on_the_next_ping_and_costs_no_datagram():
    replicator = node(0, [1, 2])
    core = replicator.membership
    (order,) = run_until(replicator, INTERVAL)
    core.outputs()
    replicator.send_summary(INTERVAL, order, SAME)
    assert core.outputs() == []  # nothing of its own
    assert replicator.summaries_sent == 1
    while True:
        core.handle_timer(core.get_timer())
        pings = [
            o
            for o in core.outputs()
            if isinstance(o, Datagram) and any(isinstance(m, Ping | ShortPing) for m in o.messages)
        ]
        if pings:
            break
    (ping,) = pings
    assert ping.address in ADDRESSES[1:]
    assert StoreSummary(fingerprint=SAME.value, count=2) in ping.messages


def test_given_we_are_leaving_then_no_summary_is_asked_for_or_sent():
    replicator = node(0, [1])
    replicator.membership.leave(0.0)
    assert run_until(replicator, 5 * INTERVAL) == []
    replicator.membership.outputs()
    replicator.send_summary(1.0, SendSummary(), SAME)
    assert not [
        m
        for o in replicator.membership.outputs()
        if isinstance(o, Datagram)
        for m in o.messages
        if isinstance(m, StoreSummary)
    ]


# --- receiving a summary --------------------------------------------------------------------


def test_given_a_matching_summary_then_compared_and_nothing_more():
    replicator = node(0, [1, 2])
    assert replicator.receive(1.0, IDS[1], ADDRESSES[1], summary(SAME))
    assert replicator.outputs() == [CompareSummary(IDS[1], SAME)]
    replicator.compare_summary(1.0, IDS[1], SAME, SAME)
    assert replicator.outputs() == []
    assert replicator.summaries_received["match"] == 1
    assert replicator.syncs == 0


def test_given_a_differing_summary_then_a_sync_with_its_sender_at_its_known_address():
    replicator = node(0, [1, 2])
    elsewhere = Address("192.0.2.9", 4000)  # a datagram's source is not where we connect
    replicator.receive(1.0, IDS[1], elsewhere, summary(OTHER))
    (compare,) = replicator.outputs()
    replicator.compare_summary(1.0, compare.node, compare.theirs, SAME)
    assert replicator.outputs() == [Sync(IDS[1], ADDRESSES[1])]
    assert replicator.summaries_received["mismatch"] == 1


def test_given_differing_summaries_from_one_sender_then_one_sync_per_interval():
    replicator = node(0, [1, 2])
    syncs: list[tuple[float, NodeId]] = []
    for now in (1.0, 4.0, 6.5, 10.0, 10.9, 11.5, 17.0, 21.6):
        replicator.receive(now, IDS[1], ADDRESSES[1], summary(OTHER))
        for out in replicator.outputs():
            replicator.compare_summary(now, out.node, out.theirs, SAME)
        syncs += [(now, o.node) for o in replicator.outputs() if isinstance(o, Sync)]
    assert syncs == [(1.0, IDS[1]), (11.5, IDS[1]), (21.6, IDS[1])]
    assert replicator.summaries_received["limited"] == 5


def test_given_comparisons_in_flight_then_still_one_sync_per_sender_per_interval():
    replicator = node(0, [1, 2])
    replicator.receive(1.0, IDS[1], ADDRESSES[1], summary(OTHER))
    replicator.receive(6.0, IDS[1], ADDRESSES[1], summary(OTHER))  # before the first is done
    orders = replicator.outputs()
    assert len(orders) == 2
    for order in orders:
        replicator.compare_summary(6.1, order.node, order.theirs, SAME)
    assert [type(o) for o in replicator.outputs()] == [Sync]


def test_given_differing_summaries_from_two_senders_then_a_sync_with_each():
    replicator = node(0, [1, 2, 3])
    for sender in (1, 2):
        replicator.receive(1.0, IDS[sender], ADDRESSES[sender], summary(OTHER))
    for order in replicator.outputs():
        replicator.compare_summary(1.0, order.node, order.theirs, SAME)
    assert replicator.outputs() == [Sync(IDS[1], ADDRESSES[1]), Sync(IDS[2], ADDRESSES[2])]


@pytest.mark.parametrize("case", ["stranger", "left", "we_leave"])
def test_given_a_summary_from_a_non_member_or_while_leaving_then_ignored(case: str):
    replicator = node(0, [1, 2])
    sender = 3 if case == "stranger" else 1
    if case == "left":
        replicator.membership.receive(
            0.5, IDS[1], ADDRESSES[1], Leave.create(KEYS[1], incarnation=1)
        )
    if case == "we_leave":
        replicator.membership.leave(0.5)
    assert replicator.receive(1.0, IDS[sender], ADDRESSES[sender], summary(OTHER))
    assert replicator.outputs() == []
    assert replicator.summaries_received["ignored"] == 1


# --- joins keep their direct sessions -------------------------------------------------------


def test_given_a_member_joined_or_we_joined_then_a_sync_soon_as_before():
    replicator = node(0, [1, 2])
    joined = MemberEvent(EventKind.JOINED, replicator.membership.member(IDS[2]), 3.0)
    replicator.membership_events(3.0, [joined])
    replicator.joined(4.0)
    out = run_until(replicator, 4.5)
    syncs = [o for o in out if isinstance(o, Sync)]
    assert syncs[0] == Sync(IDS[2], ADDRESSES[2])
    assert len(syncs) == 2
    assert all(isinstance(o, SendSummary) for o in out if not isinstance(o, Sync))


# --- two or more stores, summaries only -----------------------------------------------------


class Mesh:
    """Nodes whose datagrams (probes, ACKs, and the summaries riding on PINGs) and push-pulls
    are delivered to each other at once (summaries may be dropped), and whose sessions run the
    real `Reconciler` between their in-memory stores."""

    def __init__(self, stores: list[set[tuple[int, bytes]]], *, seed: int, loss: float = 0.0):
        n = len(stores)
        self.replicators = [node(i, [j for j in range(n) if j != i], seed + i) for i in range(n)]
        self.stores = [MemoryItemSource(items) for items in stores]
        self.hlcs = {item_id: hlc for items in stores for hlc, item_id in items}
        self.rng = random.Random(seed)
        self.loss = loss
        self.sessions = 0
        self.summaries_lost = 0

    def fingerprint(self, i: int) -> Fingerprint:
        return self.stores[i].fingerprint(MIN_BOUND, INFINITY)

    def run(self, until: float) -> None:
        while True:
            due = [
                (t, i)
                for i, r in enumerate(self.replicators)
                for t in (r.get_timer(), r.membership.get_timer())
                if t is not None
            ]
            when, i = min(due)
            if when > until:
                return
            replicator = self.replicators[i]
            if (t := replicator.get_timer()) is not None and t <= when:
                replicator.handle_timer(when)
            if (t := replicator.membership.get_timer()) is not None and t <= when:
                replicator.membership.handle_timer(when)
            self._drive(when, i)

    def _drive(self, now: float, i: int) -> None:
        replicator = self.replicators[i]
        for out in replicator.outputs():
            if isinstance(out, SendSummary):
                replicator.send_summary(now, out, self.fingerprint(i))
            elif isinstance(out, CompareSummary):
                replicator.compare_summary(now, out.node, out.theirs, self.fingerprint(i))
                self._drive(now, i)
            elif isinstance(out, Sync):
                self._session(i, ADDRESSES.index(out.address))
            else:
                raise AssertionError(f"unexpected output {out}")
        for out in replicator.membership.outputs():
            target = ADDRESSES.index(out.address)
            peer = self.replicators[target]
            if isinstance(out, Exchange):
                reply = peer.membership.answer_exchange(now, IDS[i], out.request)
                replicator.membership.exchange_done(now, out.id, reply)
                continue
            message: Message
            for message in out.messages:
                if isinstance(message, StoreSummary) and self.rng.random() < self.loss:
                    self.summaries_lost += 1
                elif not peer.membership.receive(
                    now, IDS[i], ADDRESSES[i], message, PROTOCOL_MINOR
                ):
                    peer.receive(now, IDS[i], ADDRESSES[i], message)
            self._drive(now, target)

    def _session(self, initiator: int, responder: int) -> None:
        self.sessions += 1
        ours, theirs = (Reconciler(self.stores[k]) for k in (initiator, responder))
        message: bytes | None = ours.initiate()
        for _ in range(20):
            assert message is not None
            reply = theirs.receive(message)
            if reply is None:
                break
            message = ours.receive(reply)
            if message is None:
                break
        assert ours.done
        for item_id in ours.need:
            self.stores[initiator].insert((self.hlcs[item_id], item_id))
        for item_id in ours.have:
            self.stores[responder].insert((self.hlcs[item_id], item_id))

    def converged(self) -> bool:
        return len({tuple(s) for s in self.stores}) == 1


def items(start: int, stop: int) -> set[tuple[int, bytes]]:
    return {(1000 + i, i.to_bytes(2, "big") * 16) for i in range(start, stop)}


def test_given_identical_stores_then_no_session_over_many_intervals():
    shared = items(0, 500)
    mesh = Mesh([shared, set(shared), set(shared), set(shared)], seed=3)
    mesh.run(100 * INTERVAL)
    assert mesh.sessions == 0
    sent = sum(r.summaries_sent for r in mesh.replicators)
    matched = sum(r.summaries_received["match"] for r in mesh.replicators)
    assert sent == matched >= 4 * 99


@pytest.mark.parametrize("loss", [0.0, 0.5])
def test_given_two_differing_stores_then_summaries_alone_make_them_converge(loss: float):
    mesh = Mesh([items(0, 300), items(200, 400)], seed=5, loss=loss)
    assert not mesh.converged()
    mesh.run(20 * INTERVAL)
    assert mesh.converged()
    assert len(mesh.stores[0]) == 400
    assert 1 <= mesh.sessions <= 3  # one is enough; a summary already on its way may add one
    assert loss == 0.0 or mesh.summaries_lost > 0
    # ... and once they agree, summaries start no more sessions
    sessions = mesh.sessions
    mesh.run(60 * INTERVAL)
    assert mesh.sessions == sessions


def test_given_one_store_behind_in_a_cluster_then_summaries_repair_it_within_a_few_intervals():
    shared = items(0, 100)
    mesh = Mesh([shared | items(100, 110), set(shared), set(shared), set(shared)], seed=11)
    mesh.run(10 * INTERVAL)
    assert mesh.converged()


def test_given_more_entries_held_than_remembered_then_the_least_recently_held_are_forgotten():
    """Gossiped copies of recently held entries are dropped unverified; the memory of them
    is bounded (`RECENT_IDS`) and forgets the entry held longest ago first."""
    r = node(0, [1])
    blobs = [i.to_bytes(4, "big") for i in range(RECENT_IDS + 2)]
    r.held(entry_id(b) for b in blobs[:RECENT_IDS])  # full
    r.held([entry_id(blobs[0])])  # held again: now the most recent
    r.held(entry_id(b) for b in blobs[RECENT_IDS:])  # two more: blobs[1] and [2] forgotten
    r.outputs()

    def verified(blob: bytes) -> bool:
        r.receive(1.0, IDS[1], ADDRESSES[1], Entry(entry=blob))
        return any(isinstance(o, Ingest) for o in r.outputs())

    assert [verified(blobs[i]) for i in (0, 1, 2, 3, RECENT_IDS + 1)] == [
        False,
        True,
        True,
        False,
        False,
    ]

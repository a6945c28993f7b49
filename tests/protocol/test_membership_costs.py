"""What the membership core costs its driver: timer wake-ups while idle, exact O(1) counts.

A daemon re-arms one timer from `get_timer()` after every input, so every deadline the
core reports is a wake-up of the process. An idle cluster should cost one wake-up per
probe interval (plus the rare push-pull and reconnect ticks): no gossip rounds with nothing
to send, no timer left behind by a probe that was answered. The cores here are wired
together by hand through a 1 ms fake link, stepping `now` ourselves.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter

import nacl.signing

from nodenet.protocol.config import PROFILES, retransmit_limit
from nodenet.protocol.identity import node_id_of
from nodenet.protocol.members import MemberStatus
from nodenet.protocol.membership import Datagram, Exchange, Membership
from nodenet.protocol.messages import Address, Alive, Dead, Leave, MemberState, PushPull, Suspect

LAN = PROFILES["lan"]


class Link:
    """Cores joined by a lossless link with a fixed latency; counts each core's wake-ups."""

    def __init__(self, cores: list[Membership], latency_s: float = 0.001) -> None:
        self.by_address = {c.self_info(0.0).address: c for c in cores}
        self.latency_s = latency_s
        self.now = 0.0
        self.wakeups: Counter[int] = Counter()
        self.gossip_times: list[tuple[int, float]] = []
        self._in_flight: list[tuple[float, int, Membership, Membership, Datagram]] = []
        self._order = itertools.count()

    def flush(self, core: Membership) -> None:
        for out in core.outputs():
            target = self.by_address.get(out.address)
            if target is None:
                if isinstance(out, Exchange):
                    core.exchange_done(self.now, out.id, None)
                continue
            if isinstance(out, Datagram):
                when = self.now + self.latency_s
                heapq.heappush(self._in_flight, (when, next(self._order), core, target, out))
            else:
                reply = target.answer_exchange(self.now, core.node_id, out.request)
                self.flush(target)
                core.exchange_done(self.now, out.id, reply)
                self.flush(core)

    def run(self, until: float) -> None:
        """Deliver datagrams and fire timers in time order up to `until`."""
        cores = list(self.by_address.values())
        for _ in range(10_000_000):
            timers = [(t, i) for i, c in enumerate(cores) if (t := c.get_timer()) is not None]
            next_timer = min(timers, default=(float("inf"), -1))
            next_datagram = self._in_flight[0][0] if self._in_flight else float("inf")
            when = min(next_timer[0], next_datagram)
            if when > until:
                self.now = until
                return
            when = self.now = max(when, self.now)  # a timer may be due in the past
            if next_datagram <= next_timer[0]:
                _, _, source, target, datagram = heapq.heappop(self._in_flight)
                for message in datagram.messages:
                    target.receive(when, source.node_id, source.self_info(when).address, message)
                self.flush(target)
            else:
                core = cores[next_timer[1]]
                self.wakeups[next_timer[1]] += 1
                before = core.stats.gossip_datagrams
                core.handle_timer(when)
                if core.stats.gossip_datagrams > before:
                    self.gossip_times.append((next_timer[1], when))
                self.flush(core)
        raise AssertionError("runaway: too many steps")


def make_core(seed: int, port: int, **config) -> Membership:
    key = nacl.signing.SigningKey(bytes([seed]) * 32)
    return Membership(
        key=key,
        address=Address("127.0.0.1", port),
        now=0.0,
        rng=random.Random(seed),
        config=LAN.with_changes(**config) if config else LAN,
    )


def pair() -> tuple[Link, Membership, Membership]:
    a, b = make_core(1, 7001), make_core(2, 7002)
    link = Link([a, b])
    a.join(0.0, [b.self_info(0.0).address])
    link.flush(a)
    link.run(60.0)  # the join's updates have long been sent their number of times
    assert a.cluster_size() == b.cluster_size() == 2
    return link, a, b


def test_given_an_idle_two_node_cluster_then_one_wake_up_per_probe_interval():
    link, a, b = pair()
    link.wakeups.clear()
    gossip = a.stats.gossip_datagrams + b.stats.gossip_datagrams
    probes = a.stats.probes + b.stats.probes
    window = 600.0
    link.run(60.0 + window)
    c = LAN
    periodic = window / c.probe_interval_s + window / c.push_pull_interval_s
    periodic += window / c.reconnect_interval_s
    print(f"\nwake-ups in {window:.0f} s: {dict(link.wakeups)} (periodic ticks: {periodic:.0f})")
    assert a.stats.probes + b.stats.probes - probes >= 2 * (window - 1)
    assert a.stats.gossip_datagrams + b.stats.gossip_datagrams == gossip  # nothing to say
    for core in (0, 1):
        assert link.wakeups[core] <= periodic + 2


def test_given_an_update_then_gossip_rounds_every_gossip_interval_until_it_is_sent_out():
    link, a, b = pair()
    link.gossip_times.clear()
    a.set_tags(link.now, {"role": "web"})
    link.flush(a)
    link.run(link.now + 30.0)
    assert b.member(a.node_id).tags == (("role", "web"),)
    times = [t for core, t in link.gossip_times if core == 0]
    print(f"\nA's gossip rounds at {[round(t - 60, 3) for t in times]} s after the update")
    # Each round carries the update once (one member to send to); probes and ACKs carry
    # it too, so there are at most as many rounds as transmits.
    assert 1 <= len(times) <= retransmit_limit(LAN.retransmit_mult, 2)
    assert times[0] - 60.0 <= LAN.gossip_interval_s  # the next point of the grid
    steps = [(t2 - t1) / LAN.gossip_interval_s for t1, t2 in itertools.pairwise(times)]
    assert all(s > 0.999 and abs(s - round(s)) < 1e-6 for s in steps), steps  # on the grid
    link.wakeups.clear()
    link.run(link.now + 100.0)
    assert link.wakeups[0] <= 100 / LAN.probe_interval_s + 10  # idle again


def test_given_an_acked_probe_then_its_timeout_costs_no_wake_up():
    link, a, _ = pair()
    link.wakeups.clear()
    acks = a.stats.probe_acks
    link.run(link.now + 50.0)
    assert a.stats.probe_acks - acks >= 49
    assert link.wakeups[0] <= 50 + 4  # the probe ticks, and a push-pull or reconnect


def recount(core: Membership) -> Counter[MemberStatus]:
    return Counter(m.status for m in core.members())


def test_given_any_sequence_of_claims_and_reaps_then_cluster_size_stays_exact():
    rng = random.Random(5)
    core = make_core(9, 7009, reap_after_s=20.0)
    keys = [nacl.signing.SigningKey(bytes([100 + i]) * 32) for i in range(12)]
    ids = [node_id_of(k) for k in keys]
    incarnations = [0] * len(keys)
    now = 0.0
    seen = Counter()
    for _ in range(3000):
        now += rng.choice([0.0, 0.1, 1.0, 5.0])
        i = rng.randrange(len(keys))
        accuser = keys[rng.randrange(len(keys))]
        inc = max(0, incarnations[i] + rng.choice([-1, 0, 0, 1]))
        incarnations[i] = max(incarnations[i], inc)
        address = Address("127.0.0.2", 8000 + i)
        kind = rng.randrange(6)
        if kind == 0:
            claim = Alive.create(keys[i], incarnation=inc, address=address)
        elif kind == 1:
            claim = Suspect.create(accuser, node=ids[i], incarnation=inc)
        elif kind == 2:
            claim = Dead.create(accuser, node=ids[i], incarnation=inc)
        elif kind == 3:
            claim = Leave.create(keys[i], incarnation=inc)
        if kind <= 3:
            core.receive(now, node_id_of(accuser), address, claim)
        elif kind == 4:  # a push-pull, tombstones of members we may never have seen included
            state = MemberState(
                Alive.create(keys[i], incarnation=inc, address=address),
                rng.choice([None, Dead.create(accuser, node=ids[i], incarnation=inc)]),
            )
            core.receive(now, node_id_of(accuser), address, PushPull(join=False, members=(state,)))
        else:
            core.handle_timer(now)  # suspicions expire, tombstones are reaped
        core.outputs()
        counts = recount(core)
        seen.update(counts.keys())
        assert core.status_counts() == {s: counts[s] for s in MemberStatus}
        assert core.cluster_size() == 1 + counts[MemberStatus.ALIVE] + counts[MemberStatus.SUSPECT]
    assert set(seen) == set(MemberStatus)  # every status was visited
    assert core.stats.deaths_declared > 0


def test_given_dead_and_suspect_members_then_random_alive_member_picks_only_alive_ones():
    core = make_core(3, 7003)
    keys = [nacl.signing.SigningKey(bytes([50 + i]) * 32) for i in range(9)]
    for i, key in enumerate(keys):
        address = Address("127.0.0.3", 9000 + i)
        core.receive(
            0.0, node_id_of(key), address, Alive.create(key, incarnation=1, address=address)
        )
    for key in keys[:3]:
        core.receive(
            0.0,
            node_id_of(keys[8]),
            Address("127.0.0.3", 1),
            Dead.create(keys[8], node=node_id_of(key), incarnation=1),
        )
    for key in keys[3:5]:
        core.receive(
            0.0,
            node_id_of(keys[8]),
            Address("127.0.0.3", 1),
            Suspect.create(keys[8], node=node_id_of(key), incarnation=1),
        )
    rng = random.Random(1)
    picks = Counter(core.random_alive_member(rng).node for _ in range(4000))
    assert set(picks) == {node_id_of(k) for k in keys[5:]}
    assert min(picks.values()) > 4000 / 4 * 0.85
    empty = make_core(4, 7004)
    assert empty.random_alive_member(rng) is None

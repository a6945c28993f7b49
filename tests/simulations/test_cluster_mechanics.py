"""Engine, network and node behaviours the scenarios rely on."""

from __future__ import annotations

from collections import Counter

import pytest

from nodenet.protocol import digest
from nodenet.protocol.members import MemberStatus
from nodenet.protocol.membership import Membership
from nodenet.simulations.cluster import Cluster
from nodenet.simulations.links import LinkModel


class CountedMembership(Membership):
    """The core, checking after every input that its O(1) counts and its digest tally equal
    a recount."""

    checks = 0

    def _check(self) -> None:
        counts = Counter(m.status for m in self._members.values())
        assert self.status_counts() == {s: counts[s] for s in MemberStatus}
        live = counts[MemberStatus.ALIVE] + counts[MemberStatus.SUSPECT]
        assert self.cluster_size() == 1 + live
        assert self._tally == digest.table_tally(self._pairs())
        CountedMembership.checks += 1

    def receive(self, *args, **kwargs):
        try:
            return super().receive(*args, **kwargs)
        finally:
            self._check()

    def handle_timer(self, now):
        super().handle_timer(now)
        self._check()

    def exchange_done(self, *args, **kwargs):
        try:
            return super().exchange_done(*args, **kwargs)
        finally:
            self._check()

    def answer_exchange(self, *args, **kwargs):
        try:
            return super().answer_exchange(*args, **kwargs)
        finally:
            self._check()


def test_given_crashes_joins_restarts_and_leaves_then_the_member_counts_and_tally_stay_exact():
    cluster = Cluster(1, link=LinkModel(loss=0.05), core_class=CountedMembership)
    cluster.start(20)
    cluster.run(20)
    a, b, c = cluster.nodes[3], cluster.nodes[4], cluster.nodes[5]
    cluster.crash(a)
    cluster.leave(b)
    cluster.run(40)
    cluster.restart(a, keep_state=True)
    cluster.crash(c)
    cluster.run(20)
    cluster.restart(c, keep_state=False)
    cluster.network.partition([n.address for n in cluster.nodes[:10]])
    cluster.run(40)
    cluster.network.heal()
    cluster.run(60)
    assert CountedMembership.checks > 20_000
    assert cluster.converged()


def test_given_a_bootstrap_then_every_node_holds_every_other_alive_as_restore_would():
    cluster = Cluster(2)
    cluster.bootstrap(30)
    first = cluster.nodes[0]
    assert cluster.converged()
    assert cluster.recorder.converged()
    # One shuffled ring for all (each node skips itself in it), each at its own place.
    assert sorted(first.core._ring) == sorted(n.node_id for n in cluster.nodes)
    assert len({n.core._ring_index for n in cluster.nodes}) > 1
    restored = Membership(
        key=first.key,
        address=first.address,
        now=0.0,
        rng=cluster.sim.fork_rng(),
        config=cluster.config,
    )
    restored.restore(0.0, [n.core.states()[0] for n in cluster.nodes])
    assert sorted(map(repr, restored.members())) == sorted(map(repr, first.core.members()))
    for n in cluster.nodes:  # the tally the bootstrap hands every core is its table's
        assert n.core._tally == digest.table_tally(n.core._pairs())
    cluster.run(30)
    assert cluster.recorder.converged()
    assert cluster.converged()


def test_given_the_same_seed_then_the_same_run_event_for_event():
    def trace(seed):
        cluster = Cluster(seed, link=LinkModel(distribution="lognormal", loss=0.02))
        cluster.bootstrap(15)
        cluster.crash(cluster.nodes[4])
        cluster.run(30)
        return [(e.at, e.observer, e.kind) for e in cluster.log], cluster.sim.events_run

    assert trace(9) == trace(9)
    assert trace(9) != trace(10)


def test_given_a_bandwidth_limit_then_datagrams_queue_behind_each_other():
    cluster = Cluster(3, link=LinkModel(latency_s=0.0, jitter_s=0.0), bandwidth_bps=8000)
    a, b = cluster.add_node(), cluster.add_node()
    arrivals = []
    b.deliver = lambda source, payload, size: arrivals.append(cluster.sim.now)
    for _ in range(3):
        cluster.network.send(a, b.address, None, 100)  # 100 bytes at 1000 bytes/s: 0.1 s each
    cluster.run(1)
    assert arrivals == pytest.approx([0.1, 0.2, 0.3])


def test_given_a_short_pause_then_the_node_is_suspected_and_refutes_when_it_wakes():
    cluster = Cluster(4)
    cluster.bootstrap(30)
    cluster.run(5)
    sleeper = cluster.nodes[2]
    sleeper.pause(4.0)
    probes = sleeper.core.stats.probes
    cluster.run(3.9)
    assert sleeper.core.stats.probes == probes  # frozen: its timers did not run
    assert sum(n.core.stats.suspicions for n in cluster.nodes if n is not sleeper) > 0
    cluster.run(20)
    assert sleeper.core.stats.refutations >= 1
    assert cluster.converged()
    assert cluster.recorder.false_positives == []


def test_given_a_pause_longer_than_the_suspicion_timeout_then_false_positives_are_counted():
    cluster = Cluster(4)
    cluster.bootstrap(30)
    cluster.run(5)
    sleeper = cluster.nodes[2]
    sleeper.pause(40.0)
    cluster.run(60)
    assert {s for _, _, s in cluster.recorder.false_positives} == {2}
    assert cluster.converged()  # it refuted its death when it woke


def test_given_an_asymmetric_block_then_only_that_direction_is_cut():
    cluster = Cluster(5)
    a, b = cluster.add_node(), cluster.add_node()
    cluster.network.block(a.address, b.address)
    assert not cluster.network.reachable(a.address, b.address)
    assert cluster.network.reachable(b.address, a.address)
    cluster.network.unblock(a.address, b.address)
    assert cluster.network.reachable(a.address, b.address)


def test_given_a_link_override_for_some_nodes_then_their_traffic_uses_it():
    cluster = Cluster(6)
    a, b, c = (cluster.add_node() for _ in range(3))
    lossy = LinkModel(loss=1.0)
    cluster.network.set_link(lossy, [a.address], direction="from")
    assert cluster.network.link_for(a.address, b.address) is lossy
    assert cluster.network.link_for(b.address, a.address) is cluster.network.link
    assert cluster.network.link_for(b.address, c.address) is cluster.network.link
    cluster.network.clear_links()
    assert cluster.network.link_for(a.address, b.address) is cluster.network.link

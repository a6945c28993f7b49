"""Whole clusters of membership cores on a fake network, in virtual time (lan profile).

Every run is seeded, so each is reproducible; each test prints what it measured, and
asserts against bounds derived from the profile (`support.cluster.Bounds`).
"""

from __future__ import annotations

import msgpack
import pytest
from support.cluster import ClusterHarness

from nodenet.protocol.config import PROFILES
from nodenet.protocol.identity import CLAIM_CONTEXT, node_id_of, sign
from nodenet.protocol.members import EventKind, MemberStatus
from nodenet.protocol.messages import Address, Alive, Leave, MemberState, MessageType, PushPull
from nodenet.simulations.network import LinkModel

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.DEAD,
    MemberStatus.LEFT,
)


def started(n: int, seed: int, **kwargs) -> ClusterHarness:
    cluster = ClusterHarness(seed, **kwargs)
    cluster.start(n)
    took = cluster.run_until(cluster.converged, limit_s=60)
    print(f"\n{n} nodes converged in {took:.2f} virtual s")
    return cluster


def test_given_100_nodes_joining_through_one_seed_then_all_see_all_alive_quickly():
    cluster = ClusterHarness(101)
    cluster.start(100, join_spread_s=1.0)
    bounds = cluster.bounds()
    took = cluster.run_until(cluster.converged, limit_s=120)
    # Joins are spread over 1 s; each joiner's ALIVE then needs one dissemination.
    limit = 1.0 + cluster.config.tcp_timeout_s + bounds.dissemination
    print(f"\nconverged in {took:.2f} s (bound {limit:.2f} s), {cluster.sim.events_run} events")
    assert took <= limit
    cluster.run(60)
    assert cluster.converged()
    assert cluster.events(EventKind.SUSPECTED) == []


def test_given_a_node_that_stops_answering_then_everyone_declares_it_dead_within_the_bound():
    cluster = started(100, seed=102)
    victim = cluster.nodes[37]
    victim.crash()
    crashed_at = cluster.sim.now
    bounds = cluster.bounds()
    cluster.run_until(lambda: cluster.all_see([victim], DEAD), limit_s=bounds.detection_worst)
    took = cluster.last_event_time(EventKind.FAILED, victim) - crashed_at
    lifeguard = bounds.detection_lifeguard(cluster.config.probe_interval_s)
    print(
        f"crash → last DEAD declaration: {took:.2f} s (Lifeguard bound {lifeguard:.2f} s,"
        f" worst-case bound {bounds.detection_worst:.2f} s)"
    )
    assert took <= lifeguard <= bounds.detection_worst
    assert len(cluster.events(EventKind.FAILED, victim)) == 99
    assert cluster.declared_dead([n for n in cluster.nodes if n is not victim]) == []


def test_given_10_percent_loss_on_every_link_for_10_minutes_then_no_false_dead():
    link = LinkModel(latency_s=0.002, jitter_s=0.002, loss=0.10, duplicate=0.01)
    cluster = started(50, seed=103, link=link)
    start = cluster.sim.now
    cluster.run(600)
    suspicions = len(cluster.events(EventKind.SUSPECTED))
    refuted = len(cluster.events(EventKind.REFUTED))
    dropped = cluster.network.datagrams_dropped / cluster.network.datagrams_sent
    print(
        f"600 s at 10% loss: {dropped:.1%} of datagrams dropped, {suspicions} suspicion events,"
        f" {refuted} refutation events, 0 allowed DEAD"
    )
    assert cluster.declared_dead(cluster.nodes, since=start) == []
    assert cluster.converged()


def test_given_a_slow_node_then_no_healthy_node_dies_and_its_awareness_rises_and_recovers():
    cluster = started(30, seed=104)
    slow = cluster.nodes[5]
    healthy = [n for n in cluster.nodes if n is not slow]
    start = cluster.sim.now
    slow.slow_s = 1.5  # every input waits 1.5 s in its backlog; its timers fire on time
    during = []
    for _ in range(240):
        cluster.run(0.5)
        during.append(slow.core.awareness)
    slow.slow_s = 0.0
    after = []
    for _ in range(120):
        cluster.run(0.5)
        after.append(slow.core.awareness)
    false_suspicions = [e for e in cluster.events(EventKind.SUSPECTED) if e.subject != slow.node_id]
    print(
        f"slow node awareness: max {max(during)}, mean {sum(during) / len(during):.1f} while slow;"
        f" {after[-1]} at the end; {slow.core.stats.suspicions} suspicions raised by it,"
        f" {len(false_suspicions)} suspicion events about healthy nodes"
    )
    assert cluster.declared_dead(healthy, since=start) == []
    assert max(during) >= 4  # Lifeguard noticed it is the slow one
    assert after[-1] == 0  # and it recovered
    assert cluster.converged()


def test_given_a_5050_partition_for_2_minutes_then_both_sides_see_it_and_it_heals_by_itself():
    cluster = started(50, seed=105)
    left, right = cluster.nodes[:25], cluster.nodes[25:]
    cluster.network.partition([n.address for n in left], [n.address for n in right])
    bounds = cluster.bounds(25)

    def split_seen() -> bool:
        return cluster.all_see(right, DEAD, observers=left) and cluster.all_see(
            left, DEAD, observers=right
        )

    detected = cluster.run_until(split_seen, limit_s=120)
    cluster.run(120 - detected)
    assert split_seen()
    cluster.network.heal()
    limit = 2 * cluster.config.reconnect_interval_s + bounds.dissemination
    healed = cluster.run_until(cluster.converged, limit_s=limit)
    print(f"partition seen after {detected:.2f} s; healed in {healed:.2f} s (bound {limit:.1f} s)")


def test_given_a_graceful_leave_then_left_everywhere_and_never_dead():
    cluster = started(20, seed=106)
    leaver = cluster.nodes[3]
    leaver.leave()
    took = cluster.run_until(lambda: cluster.all_see([leaver], LEFT), limit_s=30)
    cluster.run(120)
    print(f"LEFT everywhere after {took:.2f} s")
    assert cluster.all_see([leaver], LEFT)
    assert cluster.events(EventKind.FAILED, leaver) == []
    assert not leaver.up


def test_given_a_restarted_node_then_it_refutes_its_own_death_and_rejoins_without_seeds():
    cluster = started(20, seed=107)
    node = cluster.nodes[7]
    node.crash()
    cluster.run_until(lambda: cluster.all_see([node], DEAD), limit_s=120)
    node.restart()  # persisted state: incarnation + member table, no seeds needed
    took = cluster.run_until(cluster.converged, limit_s=30)
    print(f"restarted node alive everywhere again after {took:.2f} s")
    assert node.core.incarnation >= 1


def test_given_a_node_that_lost_its_state_then_it_refutes_its_death_when_it_hears_of_it():
    cluster = started(10, seed=108)
    node = cluster.nodes[4]
    node.crash()
    cluster.run_until(lambda: cluster.all_see([node], DEAD), limit_s=120)
    dead_incarnation = cluster.nodes[0].core.member(node.node_id).incarnation
    node.restart(keep_state=False)  # a wiped disk: incarnation 0, rejoin through the seed
    cluster.run_until(cluster.converged, limit_s=30)
    assert node.core.incarnation > dead_incarnation
    assert any(e.observer == node.node_id for e in cluster.events(EventKind.REFUTED))


def test_given_udp_blocked_between_two_nodes_then_tcp_fallback_keeps_them_alive():
    cluster = started(2, seed=109)
    a, b = cluster.nodes
    cluster.network.block(a.address, b.address, udp_only=True)
    cluster.network.block(b.address, a.address, udp_only=True)
    cluster.run(120)
    print(f"TCP fallback answered {a.core.stats.tcp_fallback_acks} of {a.core.stats.probes} probes")
    assert a.core.stats.tcp_fallback_acks > 0
    assert cluster.events(EventKind.SUSPECTED) == []


def test_given_tags_changed_at_runtime_then_everyone_sees_the_new_tags():
    cluster = started(20, seed=110)
    node = cluster.nodes[2]
    node.set_tags({"name": "n2", "role": "db"})
    cluster.run_until(
        lambda: all(
            dict(n.core.member(node.node_id).tags).get("role") == "db"
            for n in cluster.nodes
            if n is not node
        ),
        limit_s=10,
    )
    assert len(cluster.events(EventKind.UPDATED, node)) >= 19


# --- hostile input, over the real wire (signed and sealed) --------------------------------


def test_given_forged_alive_or_leave_about_another_node_then_nothing_changes():
    cluster = ClusterHarness(111, wire=True)
    cluster.start(6)
    cluster.run_until(cluster.converged, limit_s=60)
    mallory, victim = cluster.nodes[5], cluster.nodes[1]
    before = {n.node_id: n.core.member(victim.node_id) for n in cluster.nodes if n is not victim}

    # Claims about the victim, signed by Mallory (who holds the cluster key).
    evil = Address("127.0.0.66", 6666)
    alive_bytes = msgpack.packb(
        [MessageType.ALIVE, victim.node_id, 99, evil.to_wire(), {}], use_bin_type=True
    )
    forged_alive = Alive(
        node=victim.node_id,
        incarnation=99,
        address=evil,
        claim=alive_bytes,
        signature=sign(mallory.key, CLAIM_CONTEXT, alive_bytes),
    )
    leave_bytes = msgpack.packb([MessageType.LEAVE, victim.node_id, 99], use_bin_type=True)
    forged_leave = Leave(
        node=victim.node_id,
        incarnation=99,
        claim=leave_bytes,
        signature=sign(mallory.key, CLAIM_CONTEXT, leave_bytes),
    )
    push = PushPull(join=False, members=(MemberState(forged_alive, forged_leave),))
    for target in cluster.nodes:
        if target not in (mallory, victim):
            mallory.send_raw(target.address, [forged_alive])
            mallory.send_raw(target.address, [forged_leave])
            mallory.send_raw(target.address, [push], tcp=True)
    cluster.run(30)
    after = {n.node_id: n.core.member(victim.node_id) for n in cluster.nodes if n is not victim}
    rejected = sum(n.rejected for n in cluster.nodes)
    print(f"forged claims rejected {rejected} times")
    assert rejected >= 3 * 4
    for observer, info in after.items():
        assert info.status is ALIVE
        assert info.address == before[observer].address
        assert info.incarnation < 99
    assert cluster.events(EventKind.LEFT) == []


def test_given_a_replayed_leave_from_an_earlier_life_then_nothing_changes():
    cluster = started(8, seed=112)
    node = cluster.nodes[3]
    old_leave = Leave.create(node.key, incarnation=0)  # what it said before a restart
    node.set_tags({"name": "n3", "v": "2"})  # now at a higher incarnation
    cluster.run(5)
    for observer in cluster.nodes:
        if observer is not node:
            observer.inject(node.address, node.node_id, [old_leave])
    cluster.run(10)
    assert cluster.converged()
    assert cluster.events(EventKind.LEFT) == []


@pytest.mark.parametrize("profile", ["wan", "local"])
def test_given_other_profiles_then_a_crash_is_detected_within_their_bounds(profile):
    config = PROFILES[profile]
    cluster = ClusterHarness(113, config=config)
    cluster.start(20)
    cluster.run_until(cluster.converged, limit_s=120)
    victim = cluster.nodes[9]
    victim.crash()
    crashed = cluster.sim.now
    bounds = cluster.bounds()
    cluster.run_until(lambda: cluster.all_see([victim], DEAD), limit_s=bounds.detection_worst)
    took = cluster.last_event_time(EventKind.FAILED, victim) - crashed
    print(f"{profile}: detected in {took:.2f} s (worst-case bound {bounds.detection_worst:.1f} s)")
    assert took <= bounds.detection_worst
    assert node_id_of(victim.key) == victim.node_id

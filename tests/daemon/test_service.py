"""The membership service (the daemon's driver) on an in-memory network, in virtual time.

Real cores, real codecs (signing and sealing), real Trio tasks; only the sockets are
replaced by `support.memnet` and time by Trio's MockClock, so minutes pass in milliseconds.
"""

from __future__ import annotations

import random

import nacl.signing
import trio
import trio.testing
from support.memnet import MemoryNetwork

from nodenet.daemon.service import MembershipService
from nodenet.protocol.config import PROFILES
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.members import EventKind, MemberEvent, MemberStatus
from nodenet.protocol.membership import Membership
from nodenet.protocol.messages import Address
from nodenet.protocol.wire import WireCodec

EPOCH_MS = 1_764_000_000_000
KEY = ClusterKey(b"\x42" * 32)


class VirtualClock:
    """Core time and envelope stamps both follow Trio's (mock) clock."""

    def now(self) -> float:
        return trio.current_time()

    def wall_ms(self) -> int:
        return EPOCH_MS + int(trio.current_time() * 1000)


class Node:
    """One daemon-like node: a core, a codec, a service, runnable and killable."""

    def __init__(self, net: MemoryNetwork, index: int, ring: Keyring | None = None) -> None:
        self.net = net
        self.index = index
        self.key = nacl.signing.SigningKey(bytes([index + 1]) * 32)
        self.address = Address("127.0.0.1", 7950 + index)
        self.ring = ring or Keyring([KEY])
        self.events: list[MemberEvent] = []
        self.transport = net.transport(self.address)
        self.scope: trio.CancelScope | None = None
        self.service: MembershipService | None = None
        self.incarnation = 0
        self.saved_states: list = []

    def _make_service(self) -> MembershipService:
        core = Membership(
            key=self.key,
            address=self.address,
            now=trio.current_time(),
            rng=random.Random(self.index),
            config=PROFILES["lan"],
            tags={"name": f"n{self.index}"},
            incarnation=self.incarnation,
        )
        if self.saved_states:
            core.restore(trio.current_time(), self.saved_states)
        codec = WireCodec(self.key, self.ring)
        return MembershipService(
            core, codec, self.transport, clock=VirtualClock(), on_events=self.events.extend
        )

    async def start(self, nursery: trio.Nursery) -> None:
        self.net.down.discard(self.address)
        self.service = self._make_service()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self.scope = scope
                await self.service.run(task_status=task_status)

        await nursery.start(run)

    def kill(self) -> None:
        """kill -9: the process vanishes; what it persisted survives."""
        assert self.scope is not None
        assert self.service is not None
        self.saved_states = self.service.core.states()
        self.incarnation = self.service.core.incarnation + 1
        self.scope.cancel()
        self.net.down.add(self.address)

    def view(self) -> dict:
        assert self.service is not None
        return {m.node: m.status for m in self.service.core.members()}

    @property
    def node_id(self):
        assert self.service is not None
        return self.service.core.node_id


def all_see(observers: list[Node], subjects: list[Node], status: MemberStatus) -> bool:
    return all(o.view().get(s.node_id) is status for o in observers for s in subjects if o is not s)


async def wait_for(condition, *, limit_s: float, step_s: float = 0.1) -> float:
    """Poll `condition` in virtual time; return how long it took."""
    start = trio.current_time()
    with trio.fail_after(limit_s):
        while not condition():
            await trio.sleep(step_s)
    return trio.current_time() - start


async def cluster(nursery: trio.Nursery, n: int, **net_options) -> tuple[MemoryNetwork, list[Node]]:
    net = MemoryNetwork(nursery, random.Random(99), **net_options)
    nodes = [Node(net, i) for i in range(n)]
    for node in nodes:
        await node.start(nursery)
    async with trio.open_nursery() as joins:
        for node in nodes[1:]:
            joins.start_soon(node.service.join, [nodes[0].address])
    await wait_for(lambda: all_see(nodes, nodes, MemberStatus.ALIVE), limit_s=30)
    return net, nodes


async def test_given_five_nodes_joining_one_seed_then_all_alive_and_join_reports_success(
    autojump_clock,
):
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery, random.Random(1))
        nodes = [Node(net, i) for i in range(5)]
        for node in nodes:
            await node.start(nursery)
        results = await nodes[1].service.join([nodes[0].address, Address("127.0.0.1", 1)])
        assert results[0] == ""
        assert "refused" in results[1]
        for node in nodes[2:]:
            assert await node.service.join([nodes[0].address]) == [""]
        took = await wait_for(lambda: all_see(nodes, nodes, MemberStatus.ALIVE), limit_s=30)
        print(f"\n5 nodes converged {took:.2f} virtual s after the last join")
        nursery.cancel_scope.cancel()


async def test_given_a_killed_node_then_dead_everywhere_and_after_restart_alive_without_seeds(
    autojump_clock,
):
    async with trio.open_nursery() as nursery:
        _net, nodes = await cluster(nursery, 5)
        victim, others = nodes[3], nodes[:3] + nodes[4:]
        victim.kill()
        took = await wait_for(lambda: all_see(others, [victim], MemberStatus.DEAD), limit_s=120)
        print(f"\nkilled node DEAD everywhere after {took:.2f} virtual s")
        await victim.start(nursery)
        # It restores its member table and must find the others without any seed.
        known = [m.address for m in victim.service.core.members() if m.status is MemberStatus.ALIVE]
        await victim.service.join(known[:3])
        took = await wait_for(lambda: all_see(nodes, nodes, MemberStatus.ALIVE), limit_s=60)
        print(f"restarted node ALIVE everywhere after {took:.2f} virtual s")
        assert victim.service.core.incarnation > 0
        nursery.cancel_scope.cancel()


async def test_given_a_leave_then_left_everywhere_not_dead(autojump_clock):
    async with trio.open_nursery() as nursery:
        _net, nodes = await cluster(nursery, 5)
        leaver, others = nodes[4], nodes[:4]
        spread = await leaver.service.leave(timeout_s=5)
        assert spread
        leaver.kill()
        await wait_for(lambda: all_see(others, [leaver], MemberStatus.LEFT), limit_s=10)
        await trio.sleep(60)
        assert all_see(others, [leaver], MemberStatus.LEFT)
        failed = [e for n in others for e in n.events if e.kind is EventKind.FAILED]
        assert failed == []
        nursery.cancel_scope.cancel()


async def test_given_lossy_duplicating_links_then_no_false_deaths_over_five_minutes(autojump_clock):
    async with trio.open_nursery() as nursery:
        net, nodes = await cluster(nursery, 6, loss=0.05, duplicate=0.05)
        await trio.sleep(300)
        failed = [e for n in nodes for e in n.events if e.kind is EventKind.FAILED]
        print(f"\n{net.sent} datagrams, {net.dropped} dropped; {len(failed)} false deaths")
        assert failed == []
        assert all_see(nodes, nodes, MemberStatus.ALIVE)
        nursery.cancel_scope.cancel()


async def test_given_push_pull_then_a_member_missed_by_gossip_is_learned(autojump_clock):
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery, random.Random(5))
        nodes = [Node(net, i) for i in range(3)]
        for node in nodes:
            await node.start(nursery)
        # 1 joins 0; 2 joins 1. Datagrams are all lost, so only TCP push-pull carries news.
        net.loss = 1.0
        assert await nodes[1].service.join([nodes[0].address]) == [""]
        assert await nodes[2].service.join([nodes[1].address]) == [""]
        took = await wait_for(
            lambda: nodes[0].view().get(nodes[2].node_id) is not None, limit_s=120
        )
        print(f"\nnode 0 learned of node 2 through push-pull after {took:.2f} virtual s")
        nursery.cancel_scope.cancel()


async def test_given_a_flood_from_one_source_then_it_is_rate_limited_and_peers_stay_healthy(
    autojump_clock,
):
    async with trio.open_nursery() as nursery:
        net, nodes = await cluster(nursery, 4)
        target = nodes[0]
        flooder = Address("127.0.0.99", 6666)
        sent = 0
        for _ in range(100):  # 100 × 200 datagrams over 10 virtual seconds: 2,000/s
            for _ in range(200):
                net.deliver(b"\x01" + bytes(100), flooder, target.address)
                sent += 1
            await trio.sleep(0.1)
        await trio.sleep(30)
        dropped = target.service.dropped
        print(f"\nflood of {sent}: {dropped}")
        assert dropped.get("rate_limited", 0) >= sent * 0.8
        assert dropped.get("undecryptable", 0) <= sent * 0.2
        suspicions = [e for n in nodes for e in n.events if e.kind is EventKind.SUSPECTED]
        assert suspicions == []
        nursery.cancel_scope.cancel()


async def test_given_a_node_with_a_different_cluster_key_then_it_is_not_admitted(autojump_clock):
    async with trio.open_nursery() as nursery:
        net, nodes = await cluster(nursery, 3)
        stranger = Node(net, 7, ring=Keyring([ClusterKey(b"\x13" * 32)]))
        await stranger.start(nursery)
        (failure,) = await stranger.service.join([nodes[0].address])
        assert "another cluster key" in failure
        await trio.sleep(30)
        assert all(n.view().get(stranger.node_id) is None for n in nodes)
        assert nodes[0].service.dropped.get("undecryptable", 0) >= 1
        nursery.cancel_scope.cancel()


async def test_given_a_node_that_missed_a_key_rotation_then_it_can_still_rejoin(autojump_clock):
    old, new = KEY, ClusterKey(b"\x77" * 32)
    async with trio.open_nursery() as nursery:
        _net, nodes = await cluster(nursery, 3)
        laggard = nodes[2]
        laggard.kill()
        for node in nodes[:2]:  # install and use the new key while the laggard is away
            node.service.codec.keyring = node.service.codec.keyring.install(new).use(new)
        await laggard.start(nursery)  # it still holds only the old key
        assert await laggard.service.join([nodes[0].address]) == [""]
        await wait_for(lambda: all_see(nodes, nodes, MemberStatus.ALIVE), limit_s=60)
        assert laggard.service.codec.keyring.keys == (old,)
        nursery.cancel_scope.cancel()


async def test_given_the_laggard_then_takes_the_new_key_then_removing_the_old_one_loses_nothing(
    autojump_clock,
):
    # A node answering the laggard with the old key must not make the laggard, once it uses
    # the new key, answer back with the old one (each taking the other's fallback for "it
    # lacks my primary"): that pair would keep sealing with the old key until it is removed,
    # and lose the packets in flight then (probes fail, members turn SUSPECT).
    old, new = KEY, ClusterKey(b"\x77" * 32)
    async with trio.open_nursery() as nursery:
        _net, nodes = await cluster(nursery, 3)
        laggard = nodes[2]
        laggard.kill()
        for node in nodes[:2]:
            node.service.codec.keyring = node.service.codec.keyring.install(new).use(new)
        await laggard.start(nursery)
        assert await laggard.service.join([nodes[0].address]) == [""]
        await wait_for(lambda: all_see(nodes, nodes, MemberStatus.ALIVE), limit_s=60)
        assert any(n.service._key_for(laggard.address) == old for n in nodes[:2])

        laggard.service.codec.keyring = laggard.service.codec.keyring.install(new).use(new)
        await wait_for(
            lambda: all(n.service._key_for(m.address) is None for n in nodes for m in nodes),
            limit_s=10,
        )
        for node in nodes:
            node.service.codec.keyring = node.service.codec.keyring.remove(old)
        drops = [n.service.dropped.get("undecryptable", 0) for n in nodes]
        events = [len(n.events) for n in nodes]
        await trio.sleep(120)
        assert [n.service.dropped.get("undecryptable", 0) for n in nodes] == drops
        assert [len(n.events) for n in nodes] == events  # no SUSPECT, no DEAD
        assert all_see(nodes, nodes, MemberStatus.ALIVE)
        nursery.cancel_scope.cancel()


async def test_given_a_cluster_of_this_version_then_probes_use_the_short_ping(autojump_clock):
    async with trio.open_nursery() as nursery:
        _net, nodes = await cluster(nursery, 3)
        await trio.sleep(10)
        for node in nodes:
            members = node.service.core._members.values()
            assert members
            assert all(m.speaks_1_1 for m in members)
        assert all_see(nodes, nodes, MemberStatus.ALIVE)
        nursery.cancel_scope.cancel()


async def test_idle_connections_from_one_host_take_at_most_their_share_and_expire(
    autojump_clock,
):
    # 64 idle connections (no key needed) used to take every slot and lock joins out for
    # 10 s at a time (found by an adversarial review).
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery, random.Random(3))
        target, joiner = Node(net, 0), Node(net, 1)
        await target.start(nursery)
        await joiner.start(nursery)
        assert target.service is not None
        limits = target.service.limits
        held = []
        for i in range(100):
            ours, theirs = trio.testing.memory_stream_pair()
            held.append(ours)
            nursery.start_soon(target.transport._handler, theirs, Address("10.0.0.66", 4000 + i))
        await trio.testing.wait_all_tasks_blocked()
        refused = target.service.dropped.get("too_many_streams_from_source", 0)
        assert refused == 100 - limits.max_streams_per_source
        assert await joiner.service.join([target.address]) == [""]
        await trio.sleep(limits.first_frame_s + 0.1)  # idle ones are closed by then
        assert target.service._streams_from.get("10.0.0.66", 0) == 0
        assert target.service.dropped["first_frame_timeout"] == limits.max_streams_per_source
        nursery.cancel_scope.cancel()


async def test_a_slow_first_frame_is_served_once_its_length_came_in_time(autojump_clock):
    # A big push-pull over a slow link: the 4-byte length comes at once, the rest within
    # tcp_timeout_s. The first-frame deadline must not cut it off (adversarial re-review).
    async with trio.open_nursery() as nursery:
        net = MemoryNetwork(nursery, random.Random(4))
        target, joiner = Node(net, 0), Node(net, 1)
        await target.start(nursery)
        await joiner.start(nursery)
        assert target.service is not None
        assert joiner.service is not None
        slow = target.service.limits.first_frame_s + 2  # past it, inside tcp_timeout_s (10)

        async def slow_connect(address: Address) -> trio.abc.Stream:
            fast, far = trio.testing.memory_stream_pair()
            near, ours = trio.testing.memory_stream_pair()
            nursery.start_soon(target.transport._handler, far, joiner.address)

            async def forward() -> None:  # the header at once, the rest `slow` s later
                data = await near.receive_some(1 << 20)
                await fast.send_all(data[:4])
                await trio.sleep(slow)
                await fast.send_all(data[4:])
                while chunk := await near.receive_some(1 << 20):
                    await fast.send_all(chunk)
                await fast.send_eof()

            async def back() -> None:
                while chunk := await fast.receive_some(1 << 20):
                    await near.send_all(chunk)
                await near.send_eof()

            nursery.start_soon(forward)
            nursery.start_soon(back)
            return ours

        joiner.transport.connect = slow_connect  # type: ignore[method-assign]
        assert await joiner.service.join([target.address]) == [""]
        assert "first_frame_timeout" not in target.service.dropped
        nursery.cancel_scope.cancel()

"""A virtual network: link models, per-node bandwidth, partitions, and TCP conversations.

Datagrams go through the `LinkModel` of their link (the network's default, or an override
set for the sending or receiving node: a slow rack, a lossy uplink) that says "deliver
after d" (possibly twice) or "drop". Before that, a node with a bandwidth limit serialises
what it sends one packet after another: a datagram of `size` bytes leaves
`size · 8 / bandwidth_bps` seconds after the previous one (egress only; the receiving side
is not limited). TCP conversations lose no data but pay for loss with retransmission
delays, and fail at their deadline (as a connect timeout would) when the two ends cannot
reach each other (a partition, a blocked direction, a node that is down) or the delays run
past it. Addresses are only names here: nothing leaves the process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from nodenet.protocol.messages import Address
from nodenet.simulations.engine import Simulator
from nodenet.simulations.links import LinkModel

__all__ = ["Endpoint", "LinkModel", "Network"]


class Endpoint(Protocol):
    """What the network delivers to (a simulated node)."""

    address: Address
    up: bool
    slow_s: float
    paused_until: float

    def deliver(self, source: Endpoint, payload: Any, size: int) -> None: ...

    def answer(self, source: Endpoint, request: Any, size: int) -> tuple[Any, int]: ...


def ready_at(endpoint: Endpoint, when: float) -> float:
    """When `endpoint`'s process gets to input that arrives at `when`: after a pause
    ends, then after its backlog (`slow_s`)."""
    return max(when, endpoint.paused_until) + endpoint.slow_s


class Network:
    """Connects endpoints by address and applies links, bandwidth and partitions."""

    def __init__(
        self, sim: Simulator, link: LinkModel | None = None, *, bandwidth_bps: float = 0.0
    ) -> None:
        self.sim = sim
        self.link = link or LinkModel()
        self.bandwidth_bps = bandwidth_bps
        """Default egress bandwidth of every node in bits/s (0: unlimited)."""
        self.rng = sim.fork_rng()
        self.endpoints: dict[Address, Endpoint] = {}
        self._group: dict[Address, int] = {}
        self._blocked: set[tuple[Address, Address]] = set()
        self._udp_blocked: set[tuple[Address, Address]] = set()
        self._link_from: dict[Address, LinkModel] = {}
        self._link_to: dict[Address, LinkModel] = {}
        self._bandwidth: dict[Address, float] = {}
        self._tx_free: dict[Address, float] = {}
        self.datagrams_sent = 0
        self.datagrams_dropped = 0
        self.bytes_sent = 0

    def attach(self, endpoint: Endpoint) -> None:
        """Make `endpoint` reachable at its address."""
        self.endpoints[endpoint.address] = endpoint

    # --- links and bandwidth ------------------------------------------------------------

    def set_link(
        self, model: LinkModel, addresses: Iterable[Address], *, direction: str = "both"
    ) -> None:
        """Use `model` for traffic from (`direction="from"`), to ("to") or both ways of
        these nodes, instead of the default link. A node's outgoing override wins."""
        if direction not in ("both", "from", "to"):
            raise ValueError(f"link direction {direction!r} is not both, from or to")
        for address in addresses:
            if direction in ("both", "from"):
                self._link_from[address] = model
            if direction in ("both", "to"):
                self._link_to[address] = model

    def clear_links(self, addresses: Iterable[Address] | None = None) -> None:
        """Back to the default link (for these nodes, or all)."""
        if addresses is None:
            self._link_from.clear()
            self._link_to.clear()
            return
        for address in addresses:
            self._link_from.pop(address, None)
            self._link_to.pop(address, None)

    def link_for(self, source: Address, destination: Address) -> LinkModel:
        """The link model between two nodes."""
        if self._link_from or self._link_to:
            model = self._link_from.get(source) or self._link_to.get(destination)
            if model is not None:
                return model
        return self.link

    def set_bandwidth(self, addresses: Iterable[Address], bandwidth_bps: float) -> None:
        """Limit these nodes' egress to `bandwidth_bps` bits/s (0: unlimited)."""
        for address in addresses:
            self._bandwidth[address] = bandwidth_bps

    def _serialise(self, source: Address, size: int) -> float:
        """Seconds until the last bit of `size` bytes leaves `source` (queueing behind what
        it sent before): 0 without a bandwidth limit."""
        bandwidth = self._bandwidth.get(source, self.bandwidth_bps)
        if not bandwidth:
            return 0.0
        now = self.sim.now
        done = max(now, self._tx_free.get(source, 0.0)) + size * 8 / bandwidth
        self._tx_free[source] = done
        return done - now

    # --- faults -------------------------------------------------------------------------

    def partition(self, *groups: Iterable[Address]) -> None:
        """Split the network: endpoints reach only those in their own group (nodes in no
        group form one more group together)."""
        self._group = {a: i for i, group in enumerate(groups) for a in group}

    def heal(self) -> None:
        """Remove partitions and blocked directions."""
        self._group = {}
        self._blocked.clear()
        self._udp_blocked.clear()

    def block(self, source: Address, destination: Address, *, udp_only: bool = False) -> None:
        """Drop traffic from `source` to `destination` (asymmetric reachability); with
        `udp_only`, TCP still passes, as behind a firewall that forgets UDP."""
        (self._udp_blocked if udp_only else self._blocked).add((source, destination))

    def unblock(self, source: Address, destination: Address) -> None:
        """Undo `block` for one direction (UDP-only blocks too)."""
        self._blocked.discard((source, destination))
        self._udp_blocked.discard((source, destination))

    def reachable(self, source: Address, destination: Address, *, udp: bool = False) -> bool:
        """Whether anything sent from `source` can arrive at `destination` now."""
        if self._blocked and (source, destination) in self._blocked:
            return False
        if udp and self._udp_blocked and (source, destination) in self._udp_blocked:
            return False
        if not self._group:
            return True
        return self._group.get(source, -1) == self._group.get(destination, -1)

    def _both_ways(self, a: Address, b: Address) -> bool:
        return self.reachable(a, b) and self.reachable(b, a)

    # --- datagrams ----------------------------------------------------------------------

    def send(self, source: Endpoint, destination: Address, payload: Any, size: int) -> None:
        """Send one datagram (`payload`: whatever the endpoints agree on) of `size` bytes."""
        self.datagrams_sent += 1
        self.bytes_sent += size
        target = self.endpoints.get(destination)
        if target is None or not self.reachable(source.address, destination, udp=True):
            self.datagrams_dropped += 1
            return
        delays = self.link_for(source.address, destination).delays(self.rng)
        if not delays:
            self.datagrams_dropped += 1
            return
        queued = 0.0
        if self.bandwidth_bps or self._bandwidth:
            queued = self._serialise(source.address, size)
        for delay in delays:
            self.sim.after(queued + delay, self._arrive, source, target, payload, size)

    def _arrive(self, source: Endpoint, target: Endpoint, payload: Any, size: int) -> None:
        if target.up and self.reachable(source.address, target.address, udp=True):
            target.deliver(source, payload, size)

    # --- TCP ----------------------------------------------------------------------------

    def _segment(
        self, source: Address, destination: Address, size: int, *, handshake: bool
    ) -> float:
        delay = self.link_for(source, destination).tcp_segment(self.rng, handshake=handshake)
        if size and (self.bandwidth_bps or self._bandwidth):
            delay += self._serialise(source, size)
        return delay

    def connect_delay(self, source: Address, destination: Address) -> float:
        """SYN and SYN-ACK: the time before the first request byte can be sent."""
        return self._segment(source, destination, 0, handshake=True) + self._segment(
            destination, source, 0, handshake=True
        )

    def exchange(
        self,
        source: Endpoint,
        destination: Address,
        request: Any,
        deadline: float,
        done: Callable[[Any], None],
        *,
        size: int = 0,
    ) -> None:
        """Run a TCP request/reply; `done(reply or None)` is called exactly once.

        The request (`size` bytes) goes after the handshake; the target answers when its
        process gets to it (`ready_at`), and its reply comes back as one more transfer."""
        target = self.endpoints.get(destination)
        there = self.connect_delay(source.address, destination) + self._segment(
            source.address, destination, size, handshake=False
        )
        arrive = self.sim.now + there

        def at_target() -> None:
            if (
                target is None
                or not target.up
                or not self._both_ways(source.address, destination)
                or self.sim.now > deadline
            ):
                self.sim.at(deadline, done, None)
                return
            reply, reply_size = target.answer(source, request, size)
            back = self._segment(destination, source.address, reply_size, handshake=False)
            self.sim.after(back, at_source, reply)

        def at_source(reply: Any) -> None:
            if self.sim.now > deadline or not self._both_ways(source.address, destination):
                done(None)
            else:
                done(reply)

        if arrive > deadline or target is None:
            self.sim.at(deadline, done, None)
        else:
            self.sim.at(ready_at(target, arrive), at_target)

    def transfer(
        self,
        source: Endpoint,
        destination: Endpoint,
        size: int,
        deadline: float,
        done: Callable[[bool], None],
    ) -> None:
        """One leg of an open TCP conversation: `size` bytes from `source` to `destination`.
        `done(True)` when the receiving process has them, `done(False)` at the deadline if
        they cannot get there (the conversation is then broken)."""
        delay = self._segment(source.address, destination.address, size, handshake=False)
        arrive = self.sim.now + delay

        def landed() -> None:
            ok = (
                destination.up
                and self._both_ways(source.address, destination.address)
                and self.sim.now <= deadline
            )
            if ok:
                done(True)
            else:
                self.sim.at(deadline, done, False)

        if not math.isfinite(arrive) or arrive > deadline:
            self.sim.at(deadline, done, False)
        else:
            self.sim.at(ready_at(destination, arrive), landed)

"""A virtual network: latency, loss, duplication, partitions, and TCP exchanges.

Datagrams go through a `LinkModel` that says "deliver after d" (possibly twice) or
"drop". TCP exchanges lose no data but pay for loss with retransmission delays, and fail at
their deadline (as a connect timeout would) when the two ends cannot reach each other (a
partition, a blocked direction, or a node that is down) or the delays run past it.
Addresses are only names here: nothing leaves the process.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from nodenet.protocol.messages import Address
from nodenet.simulations.engine import Simulator

__all__ = ["Endpoint", "LinkModel", "Network"]


@dataclass(slots=True)
class LinkModel:
    """How one datagram fares on a link."""

    latency_s: float = 0.001
    """Mean one-way delay."""
    jitter_s: float = 0.0005
    """Uniform ± spread around the mean (never below zero)."""
    loss: float = 0.0
    """Probability a datagram is dropped."""
    duplicate: float = 0.0
    """Probability a delivered datagram arrives twice."""

    def delays(self, rng: random.Random) -> list[float]:
        """Delivery delays for one datagram: [] dropped, [d] once, [d1, d2] duplicated."""
        if self.loss and rng.random() < self.loss:
            return []
        first = self.one_way(rng)
        if self.duplicate and rng.random() < self.duplicate:
            return [first, self.one_way(rng)]
        return [first]

    def one_way(self, rng: random.Random) -> float:
        """One delay sample (reordering follows from jitter)."""
        return max(0.0, self.latency_s + rng.uniform(-self.jitter_s, self.jitter_s))

    def tcp_segment(self, rng: random.Random, *, handshake: bool) -> float:
        """Time for one TCP segment to get through, retransmitting lost copies.

        Linux waits 1 s before resending a lost SYN or SYN-ACK and at least 200 ms before
        resending data, doubling each time; that is what makes TCP slow on lossy links.
        """
        timeout = 1.0 if handshake else 0.2
        waited = 0.0
        for _ in range(8):
            if not self.loss or rng.random() >= self.loss:
                return waited + self.one_way(rng)
            waited += timeout
            timeout *= 2
        return float("inf")  # the connection gives up


class Endpoint(Protocol):
    """What the network delivers to (a simulated node)."""

    address: Address
    up: bool
    slow_s: float

    def deliver(self, source: Endpoint, payload: Any, size: int) -> None: ...

    def answer(self, source: Endpoint, request: Any) -> Any: ...


class Network:
    """Connects endpoints by address and applies the link model and partitions."""

    def __init__(self, sim: Simulator, link: LinkModel | None = None) -> None:
        self.sim = sim
        self.link = link or LinkModel()
        self.rng = sim.fork_rng()
        self.endpoints: dict[Address, Endpoint] = {}
        self._group: dict[Address, int] = {}
        self._blocked: set[tuple[Address, Address]] = set()
        self._udp_blocked: set[tuple[Address, Address]] = set()
        self.datagrams_sent = 0
        self.datagrams_dropped = 0
        self.bytes_sent = 0

    def attach(self, endpoint: Endpoint) -> None:
        """Make `endpoint` reachable at its address."""
        self.endpoints[endpoint.address] = endpoint

    # --- faults -------------------------------------------------------------------------

    def partition(self, *groups: Iterable[Address]) -> None:
        """Split the network: endpoints reach only those in their own group."""
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

    def reachable(self, source: Address, destination: Address, *, udp: bool = False) -> bool:
        """Whether anything sent from `source` can arrive at `destination` now."""
        if (source, destination) in self._blocked:
            return False
        if udp and (source, destination) in self._udp_blocked:
            return False
        return self._group.get(source, -1) == self._group.get(destination, -1)

    # --- traffic ------------------------------------------------------------------------

    def send(self, source: Endpoint, destination: Address, payload: Any, size: int) -> None:
        """Send one datagram (`payload`: whatever the endpoints agree on) of `size` bytes."""
        self.datagrams_sent += 1
        self.bytes_sent += size
        target = self.endpoints.get(destination)
        if target is None or not self.reachable(source.address, destination, udp=True):
            self.datagrams_dropped += 1
            return
        delays = self.link.delays(self.rng)
        if not delays:
            self.datagrams_dropped += 1
        for delay in delays:
            self.sim.after(delay, self._arrive, source, target, payload, size)

    def _arrive(self, source: Endpoint, target: Endpoint, payload: Any, size: int) -> None:
        if target.up and self.reachable(source.address, target.address, udp=True):
            target.deliver(source, payload, size)

    def exchange(
        self,
        source: Endpoint,
        destination: Address,
        request: Any,
        deadline: float,
        done: Callable[[Any], None],
    ) -> None:
        """Run a TCP request/reply; `done(reply or None)` is called exactly once."""
        target = self.endpoints.get(destination)
        segment = self.link.tcp_segment
        # SYN, SYN-ACK, then the request; the reply comes back as one more segment.
        there = (
            segment(self.rng, handshake=True)
            + segment(self.rng, handshake=True)
            + segment(self.rng, handshake=False)
        )
        back = segment(self.rng, handshake=False)
        arrive = self.sim.now + there

        def at_target() -> None:
            if target is None or not target.up or not self._both_ways(source.address, destination):
                self.sim.at(deadline, done, None)
                return
            reply = target.answer(source, request)
            self.sim.after(back, at_source, reply)

        def at_source(reply: Any) -> None:
            if self.sim.now > deadline or not self._both_ways(source.address, destination):
                done(None)
            else:
                done(reply)

        if arrive > deadline:
            self.sim.at(deadline, done, None)
        elif target is not None and target.slow_s:
            self.sim.at(arrive + target.slow_s, at_target)  # a slow node answers late
        else:
            self.sim.at(arrive, at_target)

    def _both_ways(self, a: Address, b: Address) -> bool:
        return self.reachable(a, b) and self.reachable(b, a)

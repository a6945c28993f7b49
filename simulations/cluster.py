"""A simulated cluster: N nodes on one virtual network, with an event log.

The building block of scenarios and of the membership tests: create nodes, join them,
inject faults, run virtual time, and ask who believes what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nacl.signing

from nodenet.protocol.config import PROFILES, MembershipConfig
from nodenet.protocol.identity import NodeId
from nodenet.protocol.members import EventKind, MemberEvent, MemberStatus
from nodenet.protocol.messages import Address
from nodenet.simulations.engine import Simulator
from nodenet.simulations.network import LinkModel, Network
from nodenet.simulations.node import SimNode

__all__ = ["Cluster", "LoggedEvent"]

BASE_PORT = 20000


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """`observer` saw `event` at virtual time `at`."""

    at: float
    observer: NodeId
    event: MemberEvent

    @property
    def kind(self) -> EventKind:
        """The event's kind."""
        return self.event.kind

    @property
    def subject(self) -> NodeId:
        """The node the event is about."""
        return self.event.member.node


class Cluster:
    """N simulated nodes sharing a virtual network and a seeded random generator."""

    def __init__(
        self,
        seed: int,
        *,
        config: MembershipConfig | None = None,
        link: LinkModel | None = None,
        wire: bool = False,
    ) -> None:
        self.sim = Simulator(seed)
        self.network = Network(self.sim, link)
        self.config = config or PROFILES["lan"]
        self.wire = wire
        self.nodes: list[SimNode] = []
        self.log: list[LoggedEvent] = []
        self._key_rng = self.sim.fork_rng()

    def add_node(
        self, *, seeds: Iterable[Address] = (), tags: dict[str, str] | None = None
    ) -> SimNode:
        """Start one more node (not yet joined)."""
        index = len(self.nodes)
        key = nacl.signing.SigningKey(self._key_rng.randbytes(32))
        node = SimNode(
            self.sim,
            self.network,
            key=key,
            address=Address("127.0.0.1", BASE_PORT + index),
            config=self.config,
            seeds=tuple(seeds),
            tags={"name": f"n{index}", **(tags or {})},
            wire=self.wire,
            on_event=self._record,
        )
        self.nodes.append(node)
        return node

    def _record(self, node: SimNode, event: MemberEvent) -> None:
        self.log.append(LoggedEvent(self.sim.now, node.node_id, event))

    def start(self, n: int, *, join_spread_s: float = 1.0) -> None:
        """Start `n` nodes that all join through the first one, spread over `join_spread_s`."""
        first = self.add_node()
        for _ in range(n - 1):
            node = self.add_node(seeds=[first.address])
            self.sim.after(self.sim.rng.uniform(0, join_spread_s), node.join, [first.address])

    def run(self, seconds: float) -> None:
        """Advance virtual time."""
        self.sim.run_until(self.sim.now + seconds)

    def run_until(
        self, condition: Callable[[], bool], *, limit_s: float, step_s: float = 0.25
    ) -> float:
        """Advance until `condition()` holds; return the virtual time it took (or raise)."""
        start = self.sim.now
        self.sim.run_while(lambda: not condition(), step=step_s, limit=start + limit_s)
        if not condition():
            raise AssertionError(f"condition not reached within {limit_s} virtual seconds")
        return self.sim.now - start

    # --- views ----------------------------------------------------------------------------

    def up_nodes(self) -> list[SimNode]:
        """Nodes currently running."""
        return [n for n in self.nodes if n.up]

    def all_see(
        self,
        subjects: Iterable[SimNode],
        status: MemberStatus,
        observers: Iterable[SimNode] | None = None,
    ) -> bool:
        """Whether every running observer holds every subject (but itself) in `status`."""
        subjects = list(subjects)
        for observer in observers if observers is not None else self.up_nodes():
            view = observer.view()
            for subject in subjects:
                if subject is not observer and view.get(subject.node_id) is not status:
                    return False
        return True

    def converged(self) -> bool:
        """Every running node sees every other running node alive."""
        return self.all_see(self.up_nodes(), MemberStatus.ALIVE)

    def events(self, kind: EventKind, subject: SimNode | None = None) -> list[LoggedEvent]:
        """Logged events of `kind` (about `subject`, if given)."""
        return [
            e
            for e in self.log
            if e.kind is kind and (subject is None or e.subject == subject.node_id)
        ]

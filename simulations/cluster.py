"""A simulated cluster: N nodes on one virtual network, with an event log and metrics.

The building block of scenarios and of the membership tests: create nodes, join them (or
bootstrap them already converged), inject faults, run virtual time, and ask who believes
what. A `Recorder` (metrics.py) follows every node; the raw event log is optional because
at 10,000 nodes a single crash is 20,000 events.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nacl.signing

from nodenet.protocol import digest
from nodenet.protocol.config import PROFILES, MembershipConfig
from nodenet.protocol.entries import SignedEntry
from nodenet.protocol.identity import NodeId
from nodenet.protocol.members import EventKind, MemberEvent, MemberStatus
from nodenet.protocol.membership import Membership
from nodenet.protocol.messages import Address
from nodenet.simulations.bootstrap import bootstrap_views
from nodenet.simulations.engine import Simulator
from nodenet.simulations.metrics import Recorder
from nodenet.simulations.network import LinkModel, Network
from nodenet.simulations.node import SimNode
from nodenet.simulations.store import EntryCatalog, SimStore, StoreSettings

__all__ = ["MAX_NODES", "Cluster", "LoggedEvent"]

BASE_PORT = 20000
MAX_NODES = 65535 - BASE_PORT  # one port per node on 127.0.0.1 (addresses are only names)


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
        store: StoreSettings | None = None,
        bandwidth_bps: float = 0.0,
        keep_log: bool = True,
        core_class: type[Membership] = Membership,
    ) -> None:
        self.sim = Simulator(seed)
        self.network = Network(self.sim, link, bandwidth_bps=bandwidth_bps)
        self.config = config or PROFILES["lan"]
        self.wire = wire
        self.store_settings = store
        self.keep_log = keep_log
        self.core_class = core_class
        self.nodes: list[SimNode] = []
        self.log: list[LoggedEvent] = []
        self.recorder = Recorder(self.nodes, seed=seed)
        self.recorder.network = self.network
        self.catalog = EntryCatalog()
        self._key_rng = self.sim.fork_rng()
        self._store_rng = self.sim.fork_rng()

    def add_node(
        self, *, seeds: Iterable[Address] = (), tags: dict[str, str] | None = None
    ) -> SimNode:
        """Start one more node (not yet joined)."""
        index = len(self.nodes)
        if index >= MAX_NODES:
            raise ValueError(f"at most {MAX_NODES} nodes per simulated cluster")
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
            index=index,
            core_class=self.core_class,
        )
        self.nodes.append(node)
        self.recorder.add_node(node, self.sim.now)
        if self.store_settings is not None:
            node.store = SimStore(
                node,
                self.catalog,
                self.store_settings,
                random.Random(self._store_rng.getrandbits(64)),
                on_stored=self._stored,
            )
            node.store.flush()
        return node

    def _record(self, node: SimNode, event: MemberEvent) -> None:
        if self.keep_log:
            self.log.append(LoggedEvent(self.sim.now, node.node_id, event))
        self.recorder.member_event(node, event)

    def _stored(self, node: SimNode, entries: list[SignedEntry]) -> None:
        self.recorder.stored(node, entries, self.sim.now)

    def start(self, n: int, *, join_spread_s: float = 1.0) -> None:
        """Start `n` nodes that all join through the first one, spread over `join_spread_s`."""
        first = self.add_node()
        for _ in range(n - 1):
            node = self.add_node(seeds=[first.address])
            self.sim.after(self.sim.rng.uniform(0, join_spread_s), node.join, [first.address])

    def bootstrap(self, n: int) -> None:
        """Start `n` nodes that already know each other, all ALIVE, as after a long quiet
        run (no join traffic: what 10,000 joins would cost is not what is being studied)."""
        if self.nodes:
            raise ValueError("bootstrap starts a cluster: it must be the first thing done")
        for _ in range(n):
            self.add_node()
        seeds = (self.nodes[0].address,)
        alives = [node.core.states()[0].alive for node in self.nodes]
        ring = [alive.node for alive in alives]
        rng = self.sim.fork_rng()
        rng.shuffle(ring)
        tally = digest.table_tally((alive, None) for alive in alives)
        for node in self.nodes:
            node.seeds = seeds
            bootstrap_views(node.core, alives, ring, rng, now=self.sim.now, tally=tally)
            node.pump()  # re-arm the timer the push-pull phase moved
        self.recorder.bootstrap(n)

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

    # --- behaviours that the metrics must know about ---------------------------------------

    def crash(self, node: SimNode) -> None:
        """Crash `node` (and record it)."""
        if node.up:
            node.crash()
            self.recorder.stopped(node, self.sim.now, crashed=True)

    def restart(self, node: SimNode, *, keep_state: bool = True) -> None:
        """Restart a stopped node."""
        if not node.up:
            node.restart(keep_state=keep_state)
            self.recorder.started(node, self.sim.now)

    def leave(self, node: SimNode, timeout_s: float = 5.0) -> None:
        """Make `node` leave gracefully; it stops once its LEAVE has spread."""
        if not node.up or node.leaving:
            return
        node.leave(timeout_s)
        core = node.core

        def check() -> None:
            if node.core is not core:
                return
            if not node.up:
                self.recorder.stopped(node, self.sim.now, crashed=False)
            else:
                self.sim.after(self.config.gossip_interval_s, check)

        self.sim.after(self.config.gossip_interval_s, check)

    def write(self, node: SimNode, key: str, value: bytes) -> SignedEntry:
        """Write an entry through `node`'s store."""
        if node.store is None:
            raise ValueError("this cluster has no store (StoreSettings)")
        entry = node.store.write(key, value)
        self.recorder.written(node, entry, self.sim.now)
        return entry

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

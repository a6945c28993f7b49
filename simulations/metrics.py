"""What a run measures, maintained incrementally so that 10,000 nodes stay affordable.

Every membership event a node reports updates that node's view of the subject, kept as one
byte per (observer, subject) pair (10⁸ bytes at 10,000 nodes), and per subject the number
of running observers that hold it alive, suspect, dead or left. From those, in O(1) per
event or O(N) per sample:

- the membership over time (mean view sizes, suspect/dead pairs, convergence);
- detection of every crash: the first suspicion anywhere, the first DEAD, and the moment
  every running node holds it DEAD; per-observer detection latencies for the CDF;
- false positives: DEAD declared about a node whose process is running (slow, paused or
  just unlucky), for the life it is in (not an old incarnation), by an observer that can
  reach it (across a partition, DEAD is the right answer);
- dissemination of every entry written: when each node first stored it;
- traffic: datagrams, TCP frames and bytes each node sent, per sample interval.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nodenet.protocol.entries import SignedEntry, supersedes
from nodenet.protocol.identity import NodeId
from nodenet.protocol.members import EventKind, MemberEvent, MemberStatus
from nodenet.protocol.reconcile import INFINITY, MIN_BOUND, MemoryItemSource

if TYPE_CHECKING:
    from nodenet.simulations.network import Network
    from nodenet.simulations.node import SimNode

__all__ = ["Crash", "Recorder", "Sample", "Write"]

UNKNOWN, ALIVE, SUSPECT, DEAD, LEFT = 0, 1, 2, 3, 4
_CODE = {
    MemberStatus.ALIVE: ALIVE,
    MemberStatus.SUSPECT: SUSPECT,
    MemberStatus.DEAD: DEAD,
    MemberStatus.LEFT: LEFT,
}
_EVENT_CODE = {
    EventKind.JOINED: ALIVE,
    EventKind.REFUTED: ALIVE,
    EventKind.SUSPECTED: SUSPECT,
    EventKind.FAILED: DEAD,
    EventKind.LEFT: LEFT,
    EventKind.REAPED: UNKNOWN,
}
RESERVOIR = 200_000  # per-observer detection latencies kept for the CDF (sampled beyond)


@dataclass(slots=True)
class Crash:
    """One node stopping without a goodbye, and how the cluster found out."""

    node: int
    at: float
    first_suspect_at: float | None = None
    first_dead_at: float | None = None
    all_dead_at: float | None = None
    """When every running node held it DEAD (None: never during its downtime)."""
    restarted_at: float | None = None


@dataclass(slots=True)
class Write:
    """One entry written by a node, and where it got to."""

    key: str
    author: int
    at: float
    entry: SignedEntry
    arrivals: dict[int, float] = field(default_factory=dict)
    """Node index → seconds after the write when that node first stored it."""


@dataclass(frozen=True, slots=True)
class Sample:
    """The cluster at one moment (`t`); rates are over the interval before it."""

    t: float
    up: int
    alive_view: float
    """Members an average running node holds ALIVE."""
    suspect_pairs: int
    dead_pairs: int
    left_pairs: int
    converged: bool
    datagrams_per_node_s: float
    frames_per_node_s: float
    bytes_per_node_s: float
    store_converged: float
    """Fraction of running nodes whose store holds exactly the newest entry of every key."""
    events: int


class Recorder:
    """Collects a run's metrics from node callbacks and periodic samples."""

    def __init__(self, nodes: list[SimNode], *, seed: int) -> None:
        self.nodes = nodes
        self._index: dict[NodeId, int] = {}
        self._views: list[bytearray] = []
        self._counts: list[list[int]] = [[] for _ in range(5)]  # code → per-subject count
        self._counting: list[bool] = []
        self._up = 0
        self._up_since: list[float | None] = []
        self.up_time: list[float] = []
        self.crashes: list[Crash] = []
        self._open_crash: dict[int, Crash] = {}
        self.detection_latencies: list[float] = []
        self._seen_latencies = 0
        self._rng = random.Random(seed ^ 0x5EED)
        self.false_positives: list[tuple[float, int, int]] = []
        """(time, observer, subject) of every DEAD declared about a running node."""
        self.false_suspicions = 0
        self.writes: dict[bytes, Write] = {}
        self._reference: dict[str, SignedEntry] = {}
        self._reference_source = MemoryItemSource()
        self.samples: list[Sample] = []
        self._last_totals = (0, 0, 0)
        self._last_t = 0.0
        self.capacity = 0
        self.network: Network | None = None
        """Set by the cluster: who can reach whom, for telling false positives apart."""

    # --- registration ---------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        for view in self._views:
            view.extend(bytes(extra))
        for counts in self._counts:
            counts.extend([0] * extra)
        self.capacity = capacity

    def add_node(self, node: SimNode, now: float) -> None:
        """A node was created (it counts as an observer from now on)."""
        index = node.index
        if index >= self.capacity:
            self._grow(max(2 * self.capacity, index + 1, 64))
        self._index[node.node_id] = index
        self._views.append(bytearray(self.capacity))
        self._counting.append(True)
        self._up += 1
        self._up_since.append(now)
        self.up_time.append(0.0)

    def bootstrap(self, count: int) -> None:
        """Nodes 0..count-1 all hold each other ALIVE (`Cluster.bootstrap`)."""
        alive_counts = self._counts[ALIVE]
        for i in range(count):
            view = self._views[i]
            view[:count] = b"\x01" * count
            view[i] = UNKNOWN
            alive_counts[i] = count - 1

    # --- membership -----------------------------------------------------------------------

    def member_event(self, node: SimNode, event: MemberEvent) -> None:
        """A node reported a membership event."""
        observer = node.index
        if not self._counting[observer]:
            return
        kind = event.kind
        if kind is EventKind.UPDATED:
            return
        subject = self._index.get(event.member.node)
        if subject is None or subject == observer:
            return
        new = _EVENT_CODE[kind]
        view = self._views[observer]
        old = view[subject]
        if old == new:
            return
        view[subject] = new
        counts = self._counts
        if old:
            counts[old][subject] -= 1
        if new:
            counts[new][subject] += 1
        now = event.at
        if new == SUSPECT:
            self._suspected(now, observer, subject, event)
        elif new == DEAD:
            self._declared_dead(now, observer, subject, event)

    def _suspected(self, now: float, observer: int, subject: int, event: MemberEvent) -> None:
        crash = self._open_crash.get(subject)
        if crash is not None:
            if crash.first_suspect_at is None:
                crash.first_suspect_at = now
        elif self._is_false(observer, subject, event):
            self.false_suspicions += 1

    def _declared_dead(self, now: float, observer: int, subject: int, event: MemberEvent) -> None:
        crash = self._open_crash.get(subject)
        if crash is None:
            if self._is_false(observer, subject, event):
                self.false_positives.append((now, observer, subject))
            return
        if crash.first_dead_at is None:
            crash.first_dead_at = now
        self._keep_latency(now - crash.at)
        self._check_all_dead(crash, now)

    def _is_false(self, observer: int, subject: int, event: MemberEvent) -> bool:
        """About a running node, in its current life, that the observer can reach (a
        partition makes DEAD the right answer)."""
        node = self.nodes[subject]
        if not node.up or node.leaving or event.member.incarnation < node.core.incarnation:
            return False
        if self.network is None:
            return True
        a, b = self.nodes[observer].address, node.address
        return self.network.reachable(a, b) and self.network.reachable(b, a)

    def _keep_latency(self, latency: float) -> None:
        self._seen_latencies += 1
        if len(self.detection_latencies) < RESERVOIR:
            self.detection_latencies.append(latency)
        else:
            slot = self._rng.randrange(self._seen_latencies)
            if slot < RESERVOIR:
                self.detection_latencies[slot] = latency

    def _check_all_dead(self, crash: Crash, now: float) -> None:
        if crash.all_dead_at is None and self._counts[DEAD][crash.node] >= self._up:
            crash.all_dead_at = now

    def up_count(self) -> int:
        """Nodes whose process is running."""
        return self._up

    # --- node life ------------------------------------------------------------------------

    def stopped(self, node: SimNode, now: float, *, crashed: bool) -> None:
        """A node's process stopped (crash, or the end of a graceful leave)."""
        index = node.index
        if not self._counting[index]:
            return
        self._forget_view(index)
        self._counting[index] = False
        self._up -= 1
        since = self._up_since[index]
        if since is not None:
            self.up_time[index] += now - since
            self._up_since[index] = None
        if crashed:
            crash = Crash(index, now)
            self.crashes.append(crash)
            self._open_crash[index] = crash
        for open_crash in self._open_crash.values():
            self._check_all_dead(open_crash, now)

    def _forget_view(self, index: int) -> None:
        view = self._views[index]
        counts = self._counts
        for subject, code in enumerate(view):
            if code:
                counts[code][subject] -= 1
                view[subject] = UNKNOWN

    def started(self, node: SimNode, now: float) -> None:
        """A node restarted: its view is whatever its core restored."""
        index = node.index
        self._forget_view(index)
        if not self._counting[index]:
            self._up += 1
        self._counting[index] = True
        self._up_since[index] = now
        crash = self._open_crash.pop(index, None)
        if crash is not None:
            crash.restarted_at = now
        view = self._views[index]
        counts = self._counts
        for info in node.core.members():
            subject = self._index.get(info.node)
            if subject is not None and subject != index:
                code = _CODE[info.status]
                view[subject] = code
                counts[code][subject] += 1

    def finish(self, now: float) -> None:
        """Close the books at the end of a run."""
        for index, since in enumerate(self._up_since):
            if since is not None:
                self.up_time[index] += now - since
                self._up_since[index] = now

    # --- store ----------------------------------------------------------------------------

    def written(self, node: SimNode, entry: SignedEntry, now: float) -> None:
        """A scenario write happened."""
        self.writes[entry.id] = Write(entry.key, node.index, now, entry, {node.index: 0.0})
        old = self._reference.get(entry.key)
        if old is None or supersedes(entry, old):
            if old is not None:
                self._reference_source.remove((old.hlc, old.id))
            self._reference[entry.key] = entry
            self._reference_source.insert((entry.hlc, entry.id))

    def stored(self, node: SimNode, entries: Sequence[SignedEntry], now: float) -> None:
        """A node stored new heads."""
        for entry in entries:
            write = self.writes.get(entry.id)
            if write is not None and node.index not in write.arrivals:
                write.arrivals[node.index] = now - write.at

    def store_converged(self) -> float:
        """Fraction of running nodes holding exactly the reference heads."""
        if not self._reference:
            return 1.0
        want = self._reference_source.fingerprint(MIN_BOUND, INFINITY)
        up = [n for n in self.nodes if n.up and n.store is not None]
        if not up:
            return 0.0
        same = sum(
            1
            for n in up
            if n.store is not None and n.store.source.fingerprint(MIN_BOUND, INFINITY) == want
        )
        return same / len(up)

    # --- samples --------------------------------------------------------------------------

    def converged(self) -> bool:
        """Every running node holds every other running node ALIVE, and no running node
        holds a stopped one alive or suspect."""
        up = self.up_count()
        alive, suspect = self._counts[ALIVE], self._counts[SUSPECT]
        for index, running in enumerate(self._counting):
            if running:
                if alive[index] != up - 1:
                    return False
            elif alive[index] or suspect[index]:
                return False
        return True

    def sample(self, now: float, events: int, *, with_store: bool) -> Sample:
        """Record the cluster's state now."""
        up = self.up_count()
        datagrams = frames = size = 0
        for node in self.nodes:
            datagrams += node.datagrams_sent
            frames += node.frames_sent
            size += node.bytes_sent + node.tcp_bytes_sent
        last_d, last_f, last_b = self._last_totals
        span = (now - self._last_t) * max(up, 1)
        rate = (lambda x: x / span) if span > 0 else (lambda x: 0.0)
        counts = self._counts
        sample = Sample(
            t=now,
            up=up,
            alive_view=sum(counts[ALIVE]) / max(up, 1),
            suspect_pairs=sum(counts[SUSPECT]),
            dead_pairs=sum(counts[DEAD]),
            left_pairs=sum(counts[LEFT]),
            converged=self.converged(),
            datagrams_per_node_s=rate(datagrams - last_d),
            frames_per_node_s=rate(frames - last_f),
            bytes_per_node_s=rate(size - last_b),
            store_converged=self.store_converged() if with_store else 1.0,
            events=events,
        )
        self._last_totals = (datagrams, frames, size)
        self._last_t = now
        for crash in self._open_crash.values():
            self._check_all_dead(crash, now)
        self.samples.append(sample)
        return sample

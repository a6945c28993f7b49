"""ClusterHarness: N real membership cores on a seeded fake network in virtual time.

It is the simulator's `Cluster` (one engine for tests and research) plus the bounds that a
timing profile implies, so tests assert against numbers derived from the profile rather
than constants picked to pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nodenet.protocol.config import MembershipConfig, retransmit_limit, suspicion_timeout
from nodenet.protocol.members import EventKind
from nodenet.simulations.cluster import Cluster
from nodenet.simulations.node import SimNode

__all__ = ["Bounds", "ClusterHarness", "profile_bounds"]


@dataclass(frozen=True, slots=True)
class Bounds:
    """Detection and dissemination bounds of a profile at cluster size n (seconds)."""

    ring_cycle: float
    """Every live member probes every other member once per ring cycle: (n-1) intervals."""
    suspicion_min: float
    suspicion_max: float
    dissemination: float
    """An update is gossiped retransmit_limit times, one gossip round apart at worst."""

    @property
    def detection_worst(self) -> float:
        """Crash to the last DEAD declaration, worst case: a full ring cycle before anyone
        probes the member, no confirmations at all, then dissemination."""
        return self.ring_cycle + self.suspicion_max + self.dissemination

    def detection_lifeguard(self, probe_interval_s: float) -> float:
        """The same with Lifeguard working: several members probe the dead member within a
        few intervals, confirm each other, and the minimum timeout applies."""
        return 3 * probe_interval_s + self.suspicion_min + self.dissemination


def profile_bounds(c: MembershipConfig, n: int) -> Bounds:
    """The bounds a profile implies at cluster size `n`."""
    minimum = suspicion_timeout(c.suspicion_mult, n, c.probe_interval_s)
    return Bounds(
        ring_cycle=(n - 1) * c.probe_interval_s,
        suspicion_min=minimum,
        suspicion_max=c.suspicion_max_timeout_mult * minimum,
        dissemination=retransmit_limit(c.retransmit_mult, n) * c.gossip_interval_s
        + math.ceil(math.log2(n)) * c.gossip_interval_s,
    )


class ClusterHarness(Cluster):
    """A `Cluster` with the assertions membership tests need."""

    def bounds(self, n: int | None = None, config: MembershipConfig | None = None) -> Bounds:
        """The bounds of this cluster's profile at size `n` (default: current size)."""
        return profile_bounds(config or self.config, n or len(self.nodes))

    def declared_dead(self, subjects: list[SimNode], since: float = 0.0) -> list[str]:
        """Names of `subjects` that anyone declared DEAD after `since`."""
        ids = {s.node_id: s.tags["name"] for s in subjects}
        return sorted(
            {
                ids[e.subject]
                for e in self.log
                if e.kind is EventKind.FAILED and e.at >= since and e.subject in ids
            }
        )

    def last_event_time(self, kind: EventKind, subject: SimNode) -> float:
        """When the last observer logged `kind` about `subject`."""
        times = [e.at for e in self.events(kind, subject)]
        if not times:
            raise AssertionError(f"nobody logged {kind.name} about {subject.tags['name']}")
        return max(times)

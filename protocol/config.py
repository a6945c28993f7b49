"""Membership timing: one frozen config, three named profiles, and the pure formulas.

The numbers are memberlist's (`config.go`: DefaultLANConfig, DefaultWANConfig,
DefaultLocalConfig) because operators already trust their behaviour; the reconnect and
reap intervals are Serf's, which memberlist leaves to its caller. The formulas are
memberlist's too (`util.go`, `suspicion.go`) and are tested table-driven.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from nodenet.protocol.errors import LocalProtocolError

__all__ = [
    "PROBE_ORDERS",
    "PROFILES",
    "MembershipConfig",
    "push_pull_interval",
    "remaining_suspicion_time",
    "retransmit_limit",
    "suspicion_timeout",
]


PROBE_ORDERS = ("ring", "random")
"""Values of `MembershipConfig.probe_order`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipConfig:
    """Timing and fan-out of SWIM + Lifeguard. Seconds are floats named `*_s`."""

    probe_interval_s: float = 1.0
    """Time between probes of successive members. Bounds detection time; each probe costs
    two small datagrams, so the load is constant per node whatever the cluster size."""

    probe_timeout_s: float = 0.5
    """Wait for a direct ACK before asking others to probe (PING_REQ). About the 99th
    percentile round trip of the network, so a slow ACK is not mistaken for a dead node."""

    indirect_checks: int = 3
    """Members asked to probe on our behalf when the direct probe fails. More routes means
    one bad link cannot make a healthy member look dead."""

    retransmit_mult: int = 4
    """Each update is sent `retransmit_mult · ceil(log10(N+1))` times: enough for gossip
    to reach every member with high probability (epidemic spread)."""

    suspicion_mult: int = 4
    """Minimum suspicion timeout is `suspicion_mult · max(1, log10(N)) · probe_interval`:
    time for the suspect to hear the rumour and refute it."""

    suspicion_max_timeout_mult: int = 6
    """Lifeguard: a suspicion starts at `suspicion_max_timeout_mult` × the minimum and
    shrinks towards the minimum as independent members confirm it."""

    push_pull_interval_s: float = 30.0
    """Full state exchange with one random member over TCP. Repairs anything gossip missed;
    scaled up above 32 members (`push_pull_interval`) to keep the total load flat."""

    gossip_interval_s: float = 0.2
    """How often queued updates are sent to `gossip_nodes` random members."""

    gossip_nodes: int = 3
    """Members each gossip round goes to."""

    gossip_to_the_dead_s: float = 30.0
    """Keep gossiping to a member this long after it was declared dead, so that a member
    that is in fact alive hears it and refutes."""

    awareness_max_multiplier: int = 8
    """Lifeguard: the local health score runs 0..this-1; probe interval and timeout are
    multiplied by score+1, so an overloaded node slows down instead of accusing others."""

    tcp_timeout_s: float = 10.0
    """Limit for one TCP exchange (push-pull, fallback probe)."""

    reconnect_interval_s: float = 30.0
    """How often to try a push-pull with a random dead member or seed (Serf's default), so
    that a healed partition merges without an operator."""

    reap_after_s: float = 24 * 3600.0
    """Dead and left members are kept as tombstones this long (Serf's 24 h), then forgotten;
    a tombstone stops an old rumour from resurrecting a member."""

    max_broadcasts: int = 1024
    """Bound on queued updates; the oldest, most-sent ones are dropped first."""

    probe_order: str = "ring"
    """For experiments only (the simulator's SWIM validation): "ring" (the default, as
    memberlist) probes members in a shuffled round-robin ring, so each is probed within one
    ring cycle; "random" picks every probe target uniformly at random, as in the SWIM paper,
    whose analysis (first detection after e/(e-1) periods on average) assumes it."""

    def __post_init__(self) -> None:
        if self.probe_order not in PROBE_ORDERS:
            raise LocalProtocolError(
                f"membership.probe_order: {self.probe_order!r} is not one of"
                f" {', '.join(PROBE_ORDERS)}"
            )
        for f in fields(self):
            if f.name == "probe_order":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LocalProtocolError(f"membership.{f.name} must be a number, got {value!r}")
            if f.name.endswith("_s") and not (value > 0 and math.isfinite(value)):
                raise LocalProtocolError(
                    f"membership.{f.name}: {value!r} must be a positive number of seconds"
                )
            if not f.name.endswith("_s") and (type(value) is not int or value < 1):
                raise LocalProtocolError(
                    f"membership.{f.name}: {value!r} must be a positive integer"
                )
        if self.probe_timeout_s >= self.probe_interval_s:
            raise LocalProtocolError(
                f"membership.probe_timeout_s ({self.probe_timeout_s}) must be shorter than"
                f" probe_interval_s ({self.probe_interval_s}): indirect probes need time"
            )

    def with_changes(self, **changes: Any) -> MembershipConfig:
        """A copy with some fields changed (validated)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise LocalProtocolError(f"unknown membership settings: {', '.join(sorted(unknown))}")
        return replace(self, **changes)


PROFILES: dict[str, MembershipConfig] = {
    "lan": MembershipConfig(),
    "wan": MembershipConfig(
        probe_interval_s=5.0,
        probe_timeout_s=3.0,
        suspicion_mult=6,
        push_pull_interval_s=60.0,
        gossip_interval_s=0.5,
        gossip_nodes=4,
        gossip_to_the_dead_s=60.0,
        tcp_timeout_s=30.0,
    ),
    "local": MembershipConfig(
        probe_interval_s=1.0,
        probe_timeout_s=0.2,
        indirect_checks=1,
        retransmit_mult=2,
        suspicion_mult=3,
        push_pull_interval_s=15.0,
        gossip_interval_s=0.1,
        gossip_to_the_dead_s=15.0,
        tcp_timeout_s=1.0,
    ),
}


def retransmit_limit(mult: int, n: int) -> int:
    """How many times one update is sent in a cluster of `n` members."""
    return mult * math.ceil(math.log10(n + 1))


def suspicion_timeout(mult: int, n: int, interval_s: float) -> float:
    """Minimum suspicion timeout in seconds: `mult · max(1, log10(n)) · interval`."""
    node_scale = max(1.0, math.log10(max(1, n)))
    # memberlist truncates node_scale to milliseconds; keep that for identical numbers.
    return mult * math.floor(node_scale * 1000) / 1000 * interval_s


def remaining_suspicion_time(
    confirmations: int, expected: int, elapsed_s: float, min_s: float, max_s: float
) -> float:
    """Lifeguard: time left on a suspicion with `confirmations` of `expected` confirmations.

    The timeout falls logarithmically from `max_s` (no confirmations) to `min_s` (all
    expected confirmations), rounded down to whole milliseconds as memberlist does.
    """
    if expected < 1:
        timeout = min_s
    else:
        fraction = math.log(confirmations + 1) / math.log(expected + 1)
        raw = max_s - fraction * (max_s - min_s)
        timeout = max(min_s, math.floor(raw * 1000) / 1000)
    return timeout - elapsed_s


PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_interval(interval_s: float, n: int) -> float:
    """Push-pull period for `n` members: doubles each time `n` doubles beyond 32."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_s
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval_s * multiplier

"""Converged clusters in bulk: every node's member table filled at once.

`bootstrap_views` gives every node the full member table at once, as after a long,
converged run, without paying for N² `restore` calls (each of which inserts into a list
at a random position): at 10,000 nodes that is 10⁸ members.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from itertools import repeat

from nodenet.protocol.config import push_pull_interval
from nodenet.protocol.identity import NodeId
from nodenet.protocol.members import Member, MemberStatus
from nodenet.protocol.membership import Membership
from nodenet.protocol.messages import Alive

__all__ = ["bootstrap_views"]


def bootstrap_views(
    core: Membership,
    alives: Sequence[Alive],
    ring: list[NodeId],
    rng: random.Random,
    *,
    now: float,
    tally: int,
) -> None:
    """Fill `core`'s member table with every ALIVE but its own, as `restore` would (all
    ALIVE, no events), and give it a probe ring: `ring` (every node id, in one shuffled
    order, the same list object for every node) with the core at a random position in
    it, as a node that has been probing for a while is somewhere in its cycle. The core
    skips its own id in it, never changes a ring in place, and shuffles a ring of its own
    at the end of the cycle; sharing the list saves 8 bytes per member per node (0.8 GB
    at 10,000 nodes), and a shuffle per node would cost O(N) random draws.

    The periodic push-pull is moved to a uniform phase within its (size-scaled) period,
    as in a cluster that has run for a while; the core's constructor puts it within the
    unscaled 30 s, which at 10,000 nodes would make every node exchange its 10,000 members
    in the first half minute.

    `tally` is `digest.table_tally` of `alives` (every node, all ALIVE): what each
    core's table, itself included, adds up to. The caller computes it once for all nodes.
    """
    me = core.node_id
    members = dict(
        zip(
            (a.node for a in alives),
            map(
                Member,
                alives,
                repeat(MemberStatus.ALIVE),
                (a.incarnation for a in alives),
                repeat(now),
            ),
            strict=True,
        )
    )
    members.pop(me, None)
    # The simulator's bulk form of `restore`: the table, its per-status counts, the ring.
    core._members = members
    core._counts = dict.fromkeys(MemberStatus, 0)
    core._counts[MemberStatus.ALIVE] = len(members)
    core._tally = tally
    core._ring = ring
    core._ring_index = rng.randrange(len(ring)) if ring else 0
    interval = push_pull_interval(core.config.push_pull_interval_s, len(members) + 1)
    timers = core._timers
    for i, (_, order, action) in enumerate(timers):
        if getattr(action, "__func__", None) is Membership._tick_push_pull:
            timers[i] = (now + rng.uniform(0, interval), order, action)
    heapq.heapify(timers)

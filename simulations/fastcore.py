"""The membership core as the simulator runs it: the real class, one query made O(1).

`Membership.cluster_size()` counts live members by iterating the whole member table, and
the core calls it for every datagram it sends (to size the retransmission limit of
piggybacked updates). That is O(N) per datagram, O(N²) per protocol period for the
cluster: at 10,000 nodes it was most of the simulator's time. `SimMembership` keeps the
count up to date instead, by watching the only methods that change a member's status or
add one (`_apply`, `_add_silently`, `_reap`). Everything else is the shipped code.
`check_counts=True` recomputes the real count on every call and fails loudly if the two
ever differ (the tests run with it on).

`bootstrap_views` gives every node the full member table at once, as after a long,
converged run, without paying for N² `restore` calls (each of which inserts into a list
at a random position): at 10,000 nodes that is 10⁸ members.
"""

from __future__ import annotations

import contextlib
import heapq
import random
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from nodenet.protocol.config import push_pull_interval
from nodenet.protocol.members import Member, MemberStatus
from nodenet.protocol.membership import Membership
from nodenet.protocol.messages import Alive, Claim, MemberState, PushPull

__all__ = ["SimMembership", "bootstrap_views"]

_LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)


class SimMembership(Membership):
    """`Membership` with an incrementally maintained live-member count."""

    check_counts = False
    """Verify the cached count against the full scan on every call (tests)."""

    def __init__(self, **kwargs: Any) -> None:
        self._live_count: int | None = None
        super().__init__(**kwargs)

    def cluster_size(self) -> int:
        """Members believed alive or suspect, plus ourselves (cached)."""
        count = self._live_count
        if count is None:
            count = self._live_count = Membership.cluster_size(self)
        elif self.check_counts:
            real = Membership.cluster_size(self)
            if real != count:
                raise AssertionError(f"cached cluster size {count} != real {real}")
        return count

    def invalidate(self) -> None:
        """Forget the cached count (after changing the member table from outside)."""
        self._live_count = None

    def _merge(self, now: float, push: PushPull) -> None:
        # A merge touches up to every member: count again afterwards, once.
        self._live_count = None
        super()._merge(now, push)
        self._live_count = None

    def _apply(self, now: float, claim: Claim) -> None:
        if self._live_count is None:
            super()._apply(now, claim)
            return
        members = self._members
        member = members.get(claim.node)
        was_live = member is not None and member.status in _LIVE
        super()._apply(now, claim)
        if self._live_count is not None:  # pragma: no branch
            member = members.get(claim.node)
            is_live = member is not None and member.status in _LIVE
            if is_live != was_live:
                self._live_count += 1 if is_live else -1

    def _add_silently(self, now: float, state: MemberState) -> None:
        super()._add_silently(now, state)
        self._live_count = None

    def _reap(self, now: float, member: Member, since: float) -> None:
        super()._reap(now, member, since)
        self._live_count = None


def bootstrap_views(
    core: Membership,
    alives: Sequence[Alive],
    ring: Sequence[Any],
    rng: random.Random,
    *,
    now: float,
) -> None:
    """Fill `core`'s member table with every ALIVE but its own, as `restore` would (all
    ALIVE, no events), and give it a probe ring: `ring` (every node id, in one shuffled
    order) rotated by a random offset. A full shuffle per node would cost O(N) random
    draws; a rotation keeps each node's probe times of a given member uniform, and the
    core reshuffles independently after the first cycle.

    The periodic push-pull is moved to a uniform phase within its (size-scaled) period,
    as in a cluster that has run for a while; the core's constructor puts it within the
    unscaled 30 s, which at 10,000 nodes would make every node exchange its 10,000 members
    in the first half minute.
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
    core._members = members  # the simulator's bulk form of `restore`
    offset = rng.randrange(len(ring)) if ring else 0
    rotated = [*ring[offset:], *ring[:offset]]
    with contextlib.suppress(ValueError):
        rotated.remove(me)
    core._ring = rotated
    core._ring_index = 0
    interval = push_pull_interval(core.config.push_pull_interval_s, len(members) + 1)
    timers = core._timers
    for timer in timers:
        if getattr(timer.action, "__func__", None) is Membership._tick_push_pull:
            timer.when = now + rng.uniform(0, interval)
    heapq.heapify(timers)
    if isinstance(core, SimMembership):
        core.invalidate()

"""A 5|5 partition with writes on both sides: each side declares the other dead, and after
the partition heals the cluster merges by itself: full membership and identical store
heads within 2 × `store.sync_interval_s` + `membership.reconnect_interval_s`.

In CI the intervals are shortened through the config (sync 2 s, reconnect 5 s: a 9 s
bound) and the partition lasts 30 s, long enough for both sides to bury the other; soak
keeps the lan defaults (sync 10 s, reconnect 30 s: a 50 s bound) and a 60 s partition.
"""

from __future__ import annotations

import time

import pytest
from chaos.harness import Cluster, EventRecorder, WriteLoad, check_invariants, figure, scaled
from chaos.harness import wait_for as poll
from support import nft

pytestmark = pytest.mark.slow

SYNC_S = scaled(2, 10)
RECONNECT_S = scaled(5, 30)
PARTITION_S = scaled(30, 60)
EXTRA = f"""
[store]
sync_interval_s = {SYNC_S}

[membership]
reconnect_interval_s = {RECONNECT_S}
"""


def test_given_a_5_5_partition_with_writes_on_both_sides_then_it_heals_by_itself_within_the_bound(
    firewall,
):
    with Cluster(10, extra=EXTRA) as cluster, EventRecorder(cluster.nodes) as events:
        cluster.start()
        left, right = cluster.nodes[:5], cluster.nodes[5:]

        def sees_other_side_dead() -> bool:
            for side, other in ((left, right), (right, left)):
                for node in side:
                    view = node.peers()
                    if any(view.get(o.name) != "dead" for o in other):
                        return False
            return True

        with (
            nft.partition([n.host for n in left], [n.host for n in right]),
            WriteLoad(cluster, rate=4, prefix="split/left", targets=lambda: left) as on_left,
            WriteLoad(cluster, rate=4, prefix="split/right", targets=lambda: right) as on_right,
        ):
            cut = time.monotonic()
            # At most a probe ring pass plus the longest suspicion (34 s for 10 lan members).
            detected = poll(sees_other_side_dead, timeout=60, what="both sides see it")
            time.sleep(max(0.0, PARTITION_S - (time.monotonic() - cut)))
        healed = time.monotonic()
        figure(
            f"partition: 5|5 for {healed - cut:.0f} s; every node saw the 5 others dead after"
            f" {detected:.1f} s; writes acknowledged: left {len(on_left.acked)},"
            f" right {len(on_right.acked)}"
        )
        bound = 2 * SYNC_S + RECONNECT_S
        merged = poll(cluster.membership_agrees, timeout=bound + 60, what="full membership")
        poll(
            lambda: len({d for _, d in cluster.digests().values()}) == 1,
            timeout=bound + 60,
            what="identical heads",
        )
        total = time.monotonic() - healed
        flurry = events.select("failed", since=healed)
        figure(
            f"partition: after healing, full membership in {merged:.1f} s and identical heads"
            f" in {total:.1f} s (bound 2 × {SYNC_S} + {RECONNECT_S} = {bound} s); members"
            f" declared dead after healing (stale DEAD claims crossing over, then refuted):"
            f" {len(flurry)}"
        )
        acked = {**on_left.snapshot(), **on_right.snapshot()}
        assert not on_left.failures, on_left.failures
        assert not on_right.failures, on_right.failures
        if total > bound:  # say how the merge went, to tell a stall from a protocol gap
            seen = sorted(
                (
                    e
                    for kind in ("joined", "suspected", "refuted", "failed")
                    for e in events.select(kind, since=healed)
                ),
                key=lambda e: e.at,
            )
            timeline = "\n".join(
                f"  +{e.at - healed:5.2f} s  {e.observer}: {e.kind} {e.member}" for e in seen
            )
            raise AssertionError(
                f"healing took {total:.1f} s, over the bound of {bound} s; membership"
                f" events after healing:\n{timeline}"
            )
        check_invariants(cluster, acked, prefix="split/", timeout=30)

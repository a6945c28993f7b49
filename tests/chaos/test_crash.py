"""Random kill -9 and restart of members under a steady write load: every acknowledged
entry ends up on every node, and every node's LMDB opens cleanly and verifies.

5 nodes; 20 events in CI, 100 in soak; each event kills a random running member with
SIGKILL, waits 0-1.5 s, restarts it (it rejoins from its saved member table) and waits
0.5-1.5 s. Writes go at 20 entries/s to random running members; a write whose answer was
lost with its node is not counted as acknowledged. `store.sync_interval_s = 2` so the
final convergence is quick; the invariant checker then kills everything once more and
opens every node's LMDB itself.
"""

from __future__ import annotations

import random
import time

import pytest
from chaos.harness import Cluster, EventRecorder, WriteLoad, check_invariants, figure, scaled

pytestmark = pytest.mark.slow

NODES = 5
EVENTS = scaled(20, 100)


def test_given_random_kill_9_and_restarts_under_writes_then_no_acknowledged_entry_is_lost():
    rng = random.Random(EVENTS)
    extra = "[store]\nsync_interval_s = 2\n"
    with Cluster(NODES, extra=extra) as cluster, EventRecorder(cluster.nodes) as events:
        cluster.start()
        crashed_on_start: list[str] = []
        down_s: list[float] = []
        with WriteLoad(cluster, rate=20, prefix="crash", threads=4) as load:
            started = time.monotonic()
            for event in range(EVENTS):
                node = rng.choice(cluster.live())
                node.kill9()
                killed = time.monotonic()
                time.sleep(rng.uniform(0, 1.5))
                while True:
                    try:
                        node.start()
                        break
                    except AssertionError as exc:  # the daemon exited during start-up
                        crashed_on_start.append(f"event {event}, {node.name}: {str(exc)[-400:]}")
                        node.kill9()
                down_s.append(time.monotonic() - killed)
                time.sleep(rng.uniform(0.5, 1.5))
            elapsed = time.monotonic() - started
        figure(
            f"crash: {EVENTS} kill -9/restart events in {elapsed:.0f} s; each node down"
            f" {min(down_s):.1f}-{max(down_s):.1f} s; {len(load.acked)} writes acknowledged,"
            f" {sum(load.failures.values())} failed (node killed under them: {dict(load.failures)})"
        )
        figure(
            f"crash: membership events seen: failed {events.count('failed')},"
            f" joined {events.count('joined')}; daemons that exited while starting:"
            f" {len(crashed_on_start)}"
        )
        check_invariants(cluster, load.snapshot(), prefix="crash/", timeout=60)
        assert not crashed_on_start, "daemons crashed while restarting:\n" + "\n".join(
            crashed_on_start
        )

"""A whole cluster starting at once (after a power cut, or `systemctl start` everywhere):
every daemon comes up and they converge, however the joins interleave with start-up."""

from __future__ import annotations

import pytest
from chaos.harness import Cluster, figure, scaled

pytestmark = pytest.mark.slow

NODES = 10
ROUNDS = scaled(1, 10)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_given_ten_daemons_started_at_the_same_moment_then_all_stay_up_and_converge(round_):
    with Cluster(NODES) as cluster:
        took = cluster.start(together=True)
        crashed = [n.name for n in cluster.nodes if n.exit_code() is not None]
        assert not crashed, f"daemons exited during start-up: {crashed}"
        figure(f"startup: {NODES} daemons started together, converged in {took:.1f} s")


def test_given_a_peer_joining_while_the_daemon_starts_then_the_daemon_stays_up():
    """A member pushes its state while the daemon is between binding its port and starting
    its store (the window in which the whole-cluster start above can crash it): the daemon
    must come up all the same. The peer retries its join as a restarting member would,
    from 4 threads, until the API answers, for each of a few starts."""
    import threading
    import time

    from chaos.hostile import Hostile

    with Cluster(1) as cluster:
        node = cluster[0]
        crashes = []
        for attempt in range(scaled(5, 20)):
            with Hostile(cluster.outsider()) as peer:
                frame = peer.push_pull()
                done = threading.Event()

                def hammer(peer=peer, frame=frame, done=done):
                    while not done.is_set():
                        try:
                            peer.exchange((node.host, node.port), frame, timeout=1)
                        except OSError:
                            time.sleep(0.001)

                workers = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
                for worker in workers:
                    worker.start()
                node.start(wait=False)
                try:
                    node.wait_ready(timeout=30)
                except AssertionError as exc:
                    crashes.append(f"start {attempt}: {str(exc)[-600:]}")
                finally:
                    done.set()
                    for worker in workers:
                        worker.join(timeout=5)
                node.kill9()
        figure(f"startup: {len(crashes)} of {scaled(5, 20)} starts crashed under joining peers")
        assert not crashes, "\n\n".join(crashes)

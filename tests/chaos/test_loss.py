"""Random UDP loss on every node: SWIM with Lifeguard keeps every healthy member alive, and
the store still converges.

10 nodes, lan profile with its default timings (store defaults too), 20 % of the UDP
packets among the cluster's addresses dropped at random by nftables (TCP untouched, as when
a network drops datagrams under load), for 2 minutes (10 in soak), under a steady write
load. Probes then fail directly about a third of the time (0.8² for PING and ACK), so the
indirect probes, NACKs and the TCP fallback carry the load.
"""

from __future__ import annotations

import time

import pytest
from chaos.harness import Cluster, EventRecorder, WriteLoad, check_invariants, figure, scaled
from support import nft

pytestmark = pytest.mark.slow

NODES = 10
LOSS_PERCENT = 20
DURATION_S = scaled(120, 600)


def test_given_20_percent_udp_loss_on_every_node_then_no_false_dead_and_entries_converge(
    firewall,
):
    with Cluster(NODES) as cluster:
        took = cluster.start()
        figure(f"loss: {NODES} nodes up and converged in {took:.1f} s")
        with (
            EventRecorder(cluster.nodes) as events,
            nft.loss(cluster.hosts, LOSS_PERCENT) as loss,
            WriteLoad(cluster, rate=5, prefix="loss") as load,
        ):
            started = time.monotonic()
            time.sleep(DURATION_S)
            seen, dropped = loss.counts()
            elapsed = time.monotonic() - started
        before = [n.metrics() for n in cluster.nodes]
        false_dead = events.select("failed")
        suspected = events.count("suspected")
        refuted = events.count("refuted")
        total = {
            name: sum(m.value(f"nodenet_{name}_total") for m in before)
            for name in ("probes", "probe_failures", "indirect_probes", "tcp_fallback_acks")
        }
        figure(
            f"loss: {elapsed:.0f} s at {LOSS_PERCENT} % UDP loss: nft dropped {dropped} of"
            f" {seen} UDP packets ({100 * dropped / max(seen, 1):.1f} %)"
        )
        figure(
            f"loss: probes {total['probes']:.0f}, failed {total['probe_failures']:.0f},"
            f" indirect {total['indirect_probes']:.0f},"
            f" answered only over TCP {total['tcp_fallback_acks']:.0f}"
        )
        figure(
            f"loss: suspicions (events, all observers) {suspected}, refutations {refuted},"
            f" false DEAD {len(false_dead)}"
        )
        figure(
            f"loss: {len(load.acked)} entries acknowledged during the loss,"
            f" failures {dict(load.failures)}"
        )
        assert dropped > 0, "the loss rule dropped nothing: the test proves nothing"
        assert not false_dead, f"healthy members declared dead: {false_dead}"
        assert not load.failures, f"writes failed under UDP loss: {dict(load.failures)}"
        report = check_invariants(cluster, load.snapshot(), prefix="loss/", timeout=60)
        figure(f"loss: heads identical {report.heads_s:.1f} s after the loss ended")

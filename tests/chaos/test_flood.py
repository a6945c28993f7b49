"""A hostile sender floods one node with 20,000 datagrams per second (30 s in soak, 10 s in
CI): that node keeps probing and answering its peers (nobody is suspected), its memory stays
bounded, and the drops are counted.

The flood comes from one loopback address, a mix of what an attacker without the cluster
key can send (garbage, packets sealed with another key) and what one with it can (valid,
signed PINGs). The per-source rate limit drops most of it before any decryption."""

from __future__ import annotations

import random
import threading
import time

import pytest
from chaos.harness import Cluster, EventRecorder, MiB, figure, percentile, scaled
from chaos.hostile import Hostile, now_ms

from nodenet.protocol.identity import NodeId
from nodenet.protocol.messages import Ping

pytestmark = pytest.mark.slow

NODES = 5
RATE = 20_000
SECONDS = scaled(10, 30)


def test_given_a_flood_of_20000_datagrams_per_second_then_no_false_suspicion_and_bounded_memory():
    with Cluster(NODES) as cluster:
        cluster.start()
        target = cluster[0]
        honest = {n.name for n in cluster.nodes}
        target_id = NodeId.from_text(target.get("/v1/self")["id"])
        rng = random.Random(20_000)
        with Hostile(cluster.outsider()) as attacker:
            pool = (
                [rng.randbytes(rng.randrange(41, 1400)) for _ in range(300)]
                + [
                    attacker.wrong.encode_datagrams([Ping(seq=i, target=target_id)], now_ms())[0]
                    for i in range(300)
                ]
                + [attacker.ping(target_id, seq=i) for i in range(400)]
            )
            rng.shuffle(pool)
            before = target.metrics()
            memory_before = target.memory()
            kernel_before = target.udp_kernel_drops()
            with EventRecorder(cluster.nodes) as events:
                started = time.monotonic()
                result = []
                flood = threading.Thread(
                    target=lambda: result.append(
                        attacker.flood(
                            pool,
                            (target.host, target.port),
                            rate=RATE,
                            seconds=SECONDS,
                            max_count=RATE * SECONDS,
                        )
                    )
                )
                flood.start()
                latencies = []
                peak_rss = 0
                while flood.is_alive():
                    t = time.monotonic()
                    target.get("/v1/self")
                    latencies.append(time.monotonic() - t)
                    peak_rss = max(peak_rss, target.memory()["rss"])
                    time.sleep(0.25)
                flood.join()
                sent = result[0]
                time.sleep(3)  # suspicions started by the flood would show by now
                bad = [
                    e
                    for e in events.events
                    if e.at >= started and e.kind in ("suspected", "failed") and e.member in honest
                ]
            after = target.metrics()
        memory_after = target.memory()
        drops = {
            reason: after.value("nodenet_dropped_packets_total", reason=reason)
            - before.value("nodenet_dropped_packets_total", reason=reason)
            for reason in after.by("nodenet_dropped_packets_total", "reason")
        }
        received = after.value("nodenet_datagrams_total", direction="in") - before.value(
            "nodenet_datagrams_total", direction="in"
        )
        probes = after.value("nodenet_probes_total") - before.value("nodenet_probes_total")
        acks = after.value("nodenet_probe_acks_total") - before.value("nodenet_probe_acks_total")
        kernel = target.udp_kernel_drops() - kernel_before
        figure(
            f"flood: {sent.sent} datagrams in {sent.seconds:.1f} s ({sent.rate:,.0f}/s) at one"
            f" node; it read {received:.0f}, the kernel dropped {kernel} (socket buffer full)"
        )
        figure(f"flood: counted drops { ({k: round(v) for k, v in drops.items() if v}) }")
        figure(
            f"flood: the flooded node started {probes:.0f} probes, {acks:.0f} answered;"
            f" awareness now {after.value('nodenet_awareness_score'):.0f};"
            f" false suspicions {len(bad)}"
        )
        figure(
            f"flood: RSS {memory_before['rss'] / MiB:.0f} → peak {peak_rss / MiB:.0f} →"
            f" {memory_after['rss'] / MiB:.0f} MiB; API latency median"
            f" {percentile(latencies, 0.5) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
        assert sent.rate > RATE * 0.5, "the flood did not reach half its rate: the test is void"
        assert not bad, f"honest members suspected during the flood: {bad}"
        assert sum(drops.values()) > 0.9 * received, "most of the flood must be refused, counted"
        assert probes >= SECONDS * 0.5, "the flooded node stopped probing"
        assert peak_rss - memory_before["rss"] < 50 * MiB
        cluster.wait_membership(timeout=10)

"""Many real daemons on loopback under a steady write load: everything converges and the
memory of every daemon is stable.

Soak: 50 daemons, 200 entries/s submitted across them for 10 minutes. CI: 8 daemons,
40 entries/s for 30 s. Memory is judged on the anonymous part of the resident set (the
Python heap): the file-backed part grows with the LMDB map pages the store touches, which
is data, not a leak. It is measured once the load has run for a third of the time and
again at the end, and must not grow by more than 10 %.
"""

from __future__ import annotations

import time

import pytest
from chaos.harness import Cluster, MiB, WriteLoad, check_invariants, figure, percentile, scaled

pytestmark = pytest.mark.slow

NODES = scaled(8, 50)
RATE = scaled(40, 200)
DURATION_S = scaled(30, 600)


def test_given_many_daemons_and_a_steady_write_load_then_all_converge_with_stable_memory():
    with Cluster(NODES) as cluster:
        took = cluster.start(converge_timeout=180)
        figure(f"scale: {NODES} daemons up and converged in {took:.1f} s")
        with WriteLoad(cluster, rate=RATE, prefix="scale", threads=max(4, RATE // 5)) as load:
            time.sleep(DURATION_S / 3)
            early = {n.name: n.memory() for n in cluster.nodes}
            time.sleep(DURATION_S * 2 / 3)
        late = {n.name: n.memory() for n in cluster.nodes}
        growth = {
            name: (late[name]["anon"] - early[name]["anon"]) / early[name]["anon"] for name in early
        }
        latencies = load.latencies
        figure(
            f"scale: {len(load.acked)} entries acknowledged in {DURATION_S} s"
            f" ({len(load.acked) / DURATION_S:.0f}/s of {RATE}/s asked), failures"
            f" {dict(load.failures)}; submit latency p50 {percentile(latencies, 0.5) * 1000:.0f}"
            f" ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms"
        )
        figure(
            f"scale: anonymous RSS per daemon from {DURATION_S / 3:.0f} s to the end:"
            f" {min(growth.values()):+.1%} … {max(growth.values()):+.1%};"
            f" total RSS at the end {min(m['rss'] for m in late.values()) / MiB:.0f}-"
            f"{max(m['rss'] for m in late.values()) / MiB:.0f} MiB"
        )
        report = check_invariants(cluster, load.snapshot(), prefix="scale/", timeout=120)
        figure(
            f"scale: identical heads on all {NODES} daemons {report.heads_s:.1f} s after the load"
        )
        assert not load.failures, dict(load.failures)
        assert all(abs(g) <= 0.10 for g in growth.values()), growth

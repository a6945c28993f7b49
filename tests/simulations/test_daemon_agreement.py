"""The simulator and the daemon agree: one scenario, simulated and with real processes.

Ten `nodenetd` processes (lan profile) on 127.0.0.1 join through n0; once all see all
alive and 5 s later, an idle window measures the UDP bytes each sends; then n3, n6 and n8
are killed one after the other, each once the previous one is DEAD everywhere. The same
scenario runs in the simulator (`nodenet.simulations.validation.agreement_run`) over many
seeds. The tolerances and their reasons are in docs/simulations.md ("Simulator and
daemon").
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import pytest
from support.daemons import DaemonProcess, free_port, node_dir, wait_until

from nodenet.simulations.validation import (
    AFTER_DEAD_S,
    AGREEMENT_CRASHES,
    AGREEMENT_NODES,
    SETTLE_S,
    agreement_run,
)

pytestmark = pytest.mark.slow

IDLE_S = 20.0
SIM_SEEDS = 300
BYTES_TOLERANCE = 0.10
"""UDP bytes per node per second: the daemon within ±10% of the simulator."""
OBSERVATION_LAG_S = 0.5
"""Detection: the daemon is observed through its API (every node polled in turn), and its
timers run on a loaded machine; the simulated range is widened by this much."""

_BYTES = re.compile(r"^nodenet_transport_bytes_total\{([^}]*)\} (\S+)$", re.MULTILINE)


def transport_bytes(node: DaemonProcess) -> dict[str, float]:
    """`transport_direction` → bytes, from the node's /metrics."""
    with node.api() as client:
        text = client.get("/metrics").text
    out = {}
    for labels, value in _BYTES.findall(text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out[f"{found['transport']}_{found['direction']}"] = float(value)
    return out


def all_see(nodes: list[DaemonProcess], names: list[str], status: str) -> bool:
    return all(node.peers().get(name) == status for node in nodes for name in names)


def daemons_run(root: Path, processes: list[DaemonProcess]) -> tuple[float, float, list[float]]:
    """The scenario with real processes: (UDP, TCP bytes per node per s, detection times)."""
    seed_port = free_port()
    nodes = []
    for i in range(AGREEMENT_NODES):
        config = node_dir(
            root,
            f"n{i}",
            port=seed_port if i == 0 else None,
            seeds=[] if i == 0 else [f"127.0.0.1:{seed_port}"],
            profile="lan",
        )
        node = DaemonProcess(config)
        processes.append(node)
        nodes.append(node.start(wait=False))
    for node in nodes:
        wait_until(node.ready, timeout=60, what=f"{node.directory.name} ready")
    names = [f"n{i}" for i in range(AGREEMENT_NODES)]
    took = wait_until(lambda: all_see(nodes, names, "alive"), timeout=60, what="convergence")
    print(f"\n{AGREEMENT_NODES} daemons converged in {took:.1f} s")
    time.sleep(SETTLE_S)  # the scenario's settling time, as simulated

    before = [(time.monotonic(), transport_bytes(n)) for n in nodes]
    time.sleep(IDLE_S)  # the idle window being measured
    after = [(time.monotonic(), transport_bytes(n)) for n in nodes]
    udp = statistics.fmean(
        (b["udp_out"] - a["udp_out"]) / (tb - ta)
        for (ta, a), (tb, b) in zip(before, after, strict=True)
    )
    tcp = statistics.fmean(
        (b["tcp_out"] - a["tcp_out"]) / (tb - ta)
        for (ta, a), (tb, b) in zip(before, after, strict=True)
    )

    detection = []
    running = list(nodes)
    for index in AGREEMENT_CRASHES:
        victim = nodes[index]
        running.remove(victim)
        victim.kill()
        detection.append(
            wait_until(
                lambda victim=victim: all_see(running, [victim.directory.name], "dead"),
                timeout=120,
                what=f"{victim.directory.name} dead everywhere",
            )
        )
        time.sleep(AFTER_DEAD_S)
    return udp, tcp, detection


def test_given_the_same_scenario_then_simulator_and_daemons_agree_on_detection_and_bytes(
    root, processes
):
    simulated = [agreement_run(seed, idle_s=IDLE_S) for seed in range(SIM_SEEDS)]
    sim_udp = statistics.fmean(r.udp_bytes_per_node_s for r in simulated)
    sim_tcp = statistics.fmean(r.tcp_bytes_per_node_s for r in simulated)
    sim_means = sorted(statistics.fmean(r.detection_s) for r in simulated)
    low, high = sim_means[1], sim_means[-2]  # the 0.5th and 99.5th percentiles of 300
    sim_all = [t for r in simulated for t in r.detection_s]

    udp, tcp, detection = daemons_run(root, processes)
    mean = statistics.fmean(detection)
    print(
        f"UDP bytes per node per s: daemons {udp:.1f}, simulator {sim_udp:.1f}"
        f" ({udp / sim_udp - 1:+.1%}); TCP (not compared: the daemons' store also syncs"
        f" every 10 s): daemons {tcp:.1f}, simulator {sim_tcp:.1f}\n"
        f"kill → DEAD everywhere: daemons {', '.join(f'{t:.2f}' for t in detection)} s"
        f" (mean {mean:.2f}); simulator mean {statistics.fmean(sim_all):.2f} s, median"
        f" {statistics.median(sim_all):.2f} s, mean of the three crashes in"
        f" [{low:.2f}, {high:.2f}] s for 99% of {SIM_SEEDS} seeds"
    )
    assert abs(udp / sim_udp - 1) <= BYTES_TOLERANCE
    assert low - OBSERVATION_LAG_S <= mean <= high + OBSERVATION_LAG_S

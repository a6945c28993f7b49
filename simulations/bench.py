"""Simulator throughput: `python -m nodenet.simulations.bench [--nodes N] [--duration S]`.

Runs a scenario (default `single_crash`, lan profile) at the given size and prints
simulated events per second and the ratio of virtual to wall time (STYLE §10: a ratio,
not a bare time), with the setup (building the N² member table) reported apart from the
run. Both are also given per CPU second of this process, which is what to compare on a
machine shared with other work. It also prints the peak RSS and how often each node's
membership core was woken by its timer (what an idle daemon pays in CPU).
"""

from __future__ import annotations

import argparse
import resource
import time

from nodenet.simulations.runner import build, summarise
from nodenet.simulations.scenario import Scenario


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--scenario", default="single_crash")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scenario = Scenario.load(args.scenario).with_overrides(
        {"nodes": args.nodes, "duration_s": args.duration}
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    script = build(scenario, args.seed)
    setup, setup_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    sim = script.cluster.sim
    running, cpu_running = time.perf_counter(), time.process_time()
    sim.run_until(scenario.duration_s)
    run_s, run_cpu = time.perf_counter() - running, time.process_time() - cpu_running
    total = time.perf_counter() - started
    summary = summarise(script, total).summary
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nodes = script.cluster.nodes
    wakeups = sum(n.wakeups for n in nodes) / len(nodes) / scenario.duration_s
    ratio_run, ratio_total = scenario.duration_s / run_s, scenario.duration_s / total
    print(
        f"{args.scenario}: {args.nodes} nodes,"
        f" {scenario.duration_s:.0f} s virtual ({scenario.profile})"
    )
    print(
        f"  setup {setup:.1f} s wall ({setup_cpu:.1f} s CPU), run {run_s:.1f} s wall"
        f" ({run_cpu:.1f} s CPU), total {total:.1f} s wall; peak RSS {rss:.0f} MB"
    )
    print(
        f"  {sim.events_run} events: {sim.events_run / run_s:,.0f} events/s"
        f" ({sim.events_run / run_cpu:,.0f} per CPU s)"
    )
    print(
        f"  virtual/wall {ratio_run:.2f} (run), {ratio_total:.2f} (total);"
        f" virtual/CPU {scenario.duration_s / run_cpu:.2f} (run)"
    )
    print(f"  core timer wake-ups per node per s: {wakeups:.2f}")
    print(
        f"  first detection {_seconds(summary.first_detection_mean_s)},"
        f" all DEAD {_seconds(summary.all_dead_mean_s)},"
        f" false positives {summary.false_positives}, {summary.datagrams_per_node_s:.2f}"
        f" datagrams and {summary.bytes_per_node_s:.0f} bytes per node per s"
    )


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f} s"


if __name__ == "__main__":
    main()

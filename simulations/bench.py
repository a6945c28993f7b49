"""Simulator throughput: `python -m nodenet.simulations.bench [--nodes N] [--duration S]`.

Runs the `single_crash` scenario (lan profile) at the given size and prints simulated
events per second and the ratio of virtual to wall time (STYLE §10: a ratio, not a bare
time), with the setup (building the N² member table) reported apart from the run.
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
    started = time.perf_counter()
    script = build(scenario, args.seed)
    setup = time.perf_counter() - started
    sim = script.cluster.sim
    running = time.perf_counter()
    sim.run_until(scenario.duration_s)
    run_s = time.perf_counter() - running
    total = time.perf_counter() - started
    summary = summarise(script, total).summary
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio_run, ratio_total = scenario.duration_s / run_s, scenario.duration_s / total
    print(
        f"{args.scenario}: {args.nodes} nodes,"
        f" {scenario.duration_s:.0f} s virtual ({scenario.profile})"
    )
    print(
        f"  setup {setup:.1f} s, run {run_s:.1f} s, total {total:.1f} s wall; peak RSS {rss:.0f} MB"
    )
    print(f"  {sim.events_run} events: {sim.events_run / run_s:,.0f} events/s")
    print(f"  virtual/wall {ratio_run:.2f} (run), {ratio_total:.2f} (total)")
    print(
        f"  first detection {summary.first_detection_mean_s}, all DEAD {summary.all_dead_mean_s},"
        f" false positives {summary.false_positives}, {summary.datagrams_per_node_s:.2f}"
        f" datagrams and {summary.bytes_per_node_s:.0f} bytes per node per s"
    )


if __name__ == "__main__":
    main()

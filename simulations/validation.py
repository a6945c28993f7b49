"""The SWIM paper's first-detection experiment, instrumented (Das, Gupta, Motivala 2002).

The paper's model: in every protocol period each of the N−1 other members picks one
uniformly random member to probe. A crashed member is then first picked in a given period
with probability q = 1 − (1 − 1/(N−1))^P, P the number of members probing (N−1 for a single
failure), so the period of its first detection is geometric with mean 1/q → e/(e−1) ≈ 1.582.

`first_detection` measures that on the real core with the paper's assumptions set
(`PAPER_CONFIG`). Each batch bootstraps a fresh converged cluster of N members, crashes
B of them at once at a random phase of the period, and runs until every one of them has
been suspected somewhere. Batches are independent, all start from N members holding each
other ALIVE, and with B victims P = N − B (the model's expectation is computed for it).

Members do not probe in lockstep, so rounds are counted from the crash: a member's round r
is its r-th probe tick at or after the crash. A probe that gets no ACK becomes a suspicion
at the prober's next tick, exactly one period later (a crashed member answers nothing, over
UDP, PING_REQ or TCP), so a victim first picked in round r is first suspected in
[r+1, r+2) periods after the crash: its first-detection period is
K = ⌊(t_suspect − t_crash)/T⌋ = r + 1, and E[K] = 1/q.

The instrumentation records every probe target each member picks after a crash, with the
number of live members in its view at that moment. From it the experiment reports, per
round, the victims picked against the expectation Σ B/L over all probers' ticks (each pick
hits a given live member with probability 1/L), and checks K = r + 1 for every victim:
where the run and the model differ, these say whether the targets, the probe period or the
counting is at fault.
"""

from __future__ import annotations

import functools
import gc
import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from nodenet.protocol.config import PROFILES, MembershipConfig
from nodenet.protocol.identity import NodeId
from nodenet.protocol.members import Member, MemberStatus
from nodenet.protocol.membership import Membership
from nodenet.simulations.cluster import Cluster
from nodenet.simulations.metrics import Crash

__all__ = [
    "PAPER_CONFIG",
    "AgreementRun",
    "FirstDetection",
    "agreement_run",
    "first_detection",
    "model_mean_periods",
]

PAPER_CONFIG = PROFILES["lan"].with_changes(
    probe_order="random",
    awareness_max_multiplier=1,
    suspicion_mult=2,
    suspicion_max_timeout_mult=1,
)
"""The lan profile with the SWIM paper's assumptions, i.e. without Lifeguard:

- `probe_order = "random"`: every probe target uniformly random among the live members
  (memberlist's shuffled ring probes each member exactly once per cycle instead);
- `awareness_max_multiplier = 1`: no local-health multiplier, so every member probes
  exactly once per period (Lifeguard stretches the period of a member whose PING_REQ
  helpers did not answer, e.g. because they were among the crashed);
- `suspicion_mult = 2`, `suspicion_max_timeout_mult = 1`: a fixed suspicion timeout with
  no confirmations expected (Lifeguard's `suspicion_mult − 2` confirmations are gossiped as
  rumours of their own; without them a crash costs one rumour instead of three, and the
  run a quarter less). Neither changes when a member is first suspected.
"""

WINDOW_ROUNDS = 3
"""Rounds after a crash in which every victim is certainly still a live probe target in
every view (a suspicion needs ≥ 1 period, death a suspicion timeout more), so the expected
number of victim picks is exactly Σ B/L over the probers' ticks."""

Pick = tuple[float, NodeId, NodeId | None, int]
"""(time, prober, target or None, live members in the prober's view)."""


def model_mean_periods(n: int, probers: int) -> float:
    """E[K] = 1/q, q = 1 − (1 − 1/(n−1))^probers: mean first-detection period."""
    return 1 / (1 - (1 - 1 / (n - 1)) ** probers)


def traced_core(picks: list[Pick]) -> type[Membership]:
    """The real membership core, noting every probe target it picks in `picks`."""

    class TracedMembership(Membership):
        def _next_probe_target(self) -> Member | None:
            member = super()._next_probe_target()
            live = self.cluster_size() - 1
            picks.append((self._latest, self.node_id, member.node if member else None, live))
            return member

    return TracedMembership


@dataclass(slots=True)
class FirstDetection:
    """What `first_detection` measured."""

    nodes: int
    victims_per_batch: int
    periods: list[int] = field(default_factory=list)
    """K of every crashed member: ⌊(first suspicion − crash) / probe interval⌋."""
    first_pick_rounds: list[int | None] = field(default_factory=list)
    """Per crashed member, the first round after the crash in which any member picked it."""
    picked: Counter[int] = field(default_factory=Counter)
    """Round → victims picked in that round (rounds < WINDOW_ROUNDS), over all batches."""
    expected: defaultdict[int, float] = field(default_factory=lambda: defaultdict(float))
    """Round → Σ B/L over every prober's tick in that round: the model's expected picks."""

    @property
    def trials(self) -> int:
        """Crashed members measured."""
        return len(self.periods)

    @property
    def mean_periods(self) -> float:
        """Mean first-detection period."""
        return statistics.fmean(self.periods)

    @property
    def standard_error(self) -> float:
        """Standard error of `mean_periods`."""
        return statistics.stdev(self.periods) / math.sqrt(len(self.periods))

    @property
    def model_mean(self) -> float:
        """The model's E[K] for this setup (N members, B of them crashed at once)."""
        return model_mean_periods(self.nodes, self.nodes - self.victims_per_batch)

    @property
    def counted_right(self) -> int:
        """Crashed members whose K is their first-pick round + 1 (all but `in_flight`, if
        suspicion follows a failed probe exactly one period later)."""
        return sum(
            1
            for k, r in zip(self.periods, self.first_pick_rounds, strict=True)
            if r is not None and k == r + 1
        )

    @property
    def in_flight(self) -> int:
        """Crashed members suspected within a period of the crash (K = 0): a PING sent
        less than a network latency before the crash arrived after it. The model has no
        such case; at 1 ms latency it is about one crash in a thousand."""
        return self.periods.count(0)

    def pick_ratio(self) -> float:
        """Victim picks observed / expected in the first WINDOW_ROUNDS rounds."""
        return sum(self.picked.values()) / sum(self.expected.values())

    def report(self) -> str:
        """A few lines for people."""
        rounds = ", ".join(
            f"round {r}: {self.picked[r]} picked / {self.expected[r]:.1f} expected"
            for r in sorted(self.expected)
        )
        histogram = ", ".join(f"K={k}: {c}" for k, c in sorted(Counter(self.periods).items()))
        e = math.e / (math.e - 1)
        return (
            f"{self.trials} crashes at N={self.nodes} ({self.victims_per_batch} per batch):"
            f" mean first detection {self.mean_periods:.3f} ± {self.standard_error:.3f} periods;"
            f" model {self.model_mean:.3f} ({self.mean_periods / self.model_mean - 1:+.1%}),"
            f" e/(e−1) = {e:.3f} ({self.mean_periods / e - 1:+.1%})\n"
            f"histogram {histogram}\n"
            f"victim picks: {rounds}; ratio {self.pick_ratio():.3f}\n"
            f"K = first-pick round + 1 for {self.counted_right} of {self.trials},"
            f" K = 0 (a PING in flight at the crash) for {self.in_flight}"
        )


def first_detection(
    *,
    nodes: int = 1000,
    batches: int = 16,
    victims: int = 25,
    seed: int = 2002,
    config: MembershipConfig = PAPER_CONFIG,
    disturb: Callable[[Cluster], None] | None = None,
) -> FirstDetection:
    """Crash `victims` members at once in each of `batches` fresh converged clusters, and
    measure each one's first-detection period (see the module's docstring).

    `disturb(cluster)`, if given, is called on each cluster before the crash (experiments
    that break one of the model's assumptions on purpose)."""
    period = config.probe_interval_s
    rng = random.Random(seed)
    result = FirstDetection(nodes=nodes, victims_per_batch=victims)
    for _ in range(batches):
        picks: list[Pick] = []
        cluster = Cluster(
            rng.getrandbits(32), config=config, keep_log=False, core_class=traced_core(picks)
        )
        gc.disable()  # 10⁶ members are built at once: nothing to collect in them
        try:
            cluster.bootstrap(nodes)
        finally:
            gc.enable()
        if disturb is not None:
            disturb(cluster)
        cluster.run(2 * period + rng.uniform(0, period))  # crash at no particular phase
        chosen = rng.sample(cluster.up_nodes(), victims)
        picks.clear()
        crashed_at = cluster.sim.now
        crashes = []
        for victim in chosen:
            cluster.crash(victim)
            crashes.append(cluster.recorder.crashes[-1])
        cluster.run_until(
            functools.partial(_all_suspected, crashes), limit_s=60 * period, step_s=period / 4
        )
        cluster.run(max(0.0, crashed_at + WINDOW_ROUNDS * period - cluster.sim.now))
        _analyse(result, picks, [v.node_id for v in chosen], crashed_at)
        for crash in crashes:
            assert crash.first_suspect_at is not None
            result.periods.append(math.floor((crash.first_suspect_at - crash.at) / period + 1e-9))
        del cluster, crashes, picks
        gc.collect()  # the cluster's objects form cycles (nodes and network)
    return result


def _all_suspected(crashes: list[Crash]) -> bool:
    return all(c.first_suspect_at is not None for c in crashes)


def _analyse(
    result: FirstDetection, picks: list[Pick], crashed: list[NodeId], crashed_at: float
) -> None:
    """Number each prober's rounds from the crash; count victim picks and first picks."""
    victims = set(crashed)
    rounds: Counter[NodeId] = Counter()
    first: dict[NodeId, int] = {}
    for when, prober, target, live in picks:
        if when < crashed_at or prober in victims:
            continue
        r = rounds[prober]
        rounds[prober] += 1
        if r < WINDOW_ROUNDS:
            result.expected[r] += len(victims) / live
        if target in victims:
            if r < WINDOW_ROUNDS:
                result.picked[r] += 1
            if target not in first or r < first[target]:
                first[target] = r
    result.first_pick_rounds.extend(first.get(v) for v in crashed)


# --- the simulator against the daemon ---------------------------------------------------

AGREEMENT_NODES = 10
AGREEMENT_CRASHES = (3, 6, 8)
"""Nodes killed one after the other (each once the previous one is DEAD everywhere)."""
SETTLE_S = 5.0
"""After convergence, before the idle window: the join's gossip has been sent out."""
AFTER_DEAD_S = 2.0


@dataclass(frozen=True, slots=True)
class AgreementRun:
    """One run of the agreement scenario (simulated or real)."""

    udp_bytes_per_node_s: float
    """UDP bytes sent per node per second in the idle window (payload, as the daemon's
    `nodenet_transport_bytes_total{transport="udp",direction="out"}` counts them)."""
    tcp_bytes_per_node_s: float
    detection_s: tuple[float, ...]
    """Kill → every other running node holds the victim DEAD, for each crash in turn."""


def agreement_run(seed: int, *, idle_s: float = 20.0) -> AgreementRun:
    """The scenario the daemon agreement test runs with real processes: 10 nodes (lan
    profile) join through n0 within 2 s; once converged and `SETTLE_S` later, an idle window
    of `idle_s` measures traffic; then nodes 3, 6 and 8 are killed one at a time, each once
    the previous one is DEAD everywhere and `AFTER_DEAD_S` later."""
    cluster = Cluster(seed, config=PROFILES["lan"], keep_log=False)
    cluster.start(AGREEMENT_NODES, join_spread_s=2.0)
    cluster.run_until(cluster.converged, limit_s=60.0)
    cluster.run(SETTLE_S)
    nodes = cluster.nodes
    udp = [n.bytes_sent for n in nodes]
    tcp = [n.tcp_bytes_sent for n in nodes]
    cluster.run(idle_s)
    udp_rate = sum(n.bytes_sent - b for n, b in zip(nodes, udp, strict=True)) / len(nodes)
    tcp_rate = sum(n.tcp_bytes_sent - b for n, b in zip(nodes, tcp, strict=True)) / len(nodes)
    detection = []
    for index in AGREEMENT_CRASHES:
        victim = nodes[index]
        cluster.crash(victim)
        detection.append(
            cluster.run_until(
                functools.partial(cluster.all_see, [victim], MemberStatus.DEAD),
                limit_s=120.0,
                step_s=0.05,
            )
        )
        cluster.run(AFTER_DEAD_S)
    return AgreementRun(udp_rate / idle_s, tcp_rate / idle_s, tuple(detection))


def main() -> None:
    """`python -m nodenet.simulations.validation [--seed S] [--plot PNG]`: run the
    first-detection experiment with the test's settings and print (and plot) it."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seed", type=int, default=2002)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--victims", type=int, default=25)
    parser.add_argument("--plot", help="write the histogram against the model to this PNG")
    args = parser.parse_args()
    result = first_detection(batches=args.batches, victims=args.victims, seed=args.seed)
    print(result.report())
    if args.plot:
        from nodenet.simulations.plots import plot_first_detection

        print(f"wrote {plot_first_detection(result, args.plot)}")


if __name__ == "__main__":
    main()

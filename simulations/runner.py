"""Running scenarios: build the cluster, play the script and churn, sample, summarise.

`run(scenario, seed=…, nodes=…)` returns a `Result`; the same scenario and seed give the
same result, number for number (wall-clock figures aside). `sweep` runs a scenario over
the cross product of settings and seeds. Every random choice of the script (which node
crashes, when churn strikes) comes from a generator derived from the seed.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodenet.simulations.cluster import Cluster
from nodenet.simulations.links import LinkModel
from nodenet.simulations.node import SimNode
from nodenet.simulations.progress import ProgressBar
from nodenet.simulations.results import ActionRow, CrashRow, NodeRow, Result, Summary, WriteRow
from nodenet.simulations.scenario import Action, Scenario, ScenarioError

__all__ = ["SweepRun", "build", "run", "sweep"]

DISTURBANCES = {"crash", "restart", "leave", "join", "partition", "heal", "block", "unblock"}


def run(
    scenario: Scenario | str,
    *,
    seed: int | None = None,
    nodes: int | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    progress: bool | ProgressBar = False,
) -> Result:
    """Run a scenario (or the bundled one of that name) and return what it measured."""
    if isinstance(scenario, str):
        scenario = Scenario.load(scenario)
    changes = dict(overrides) if isinstance(overrides, Mapping) else list(overrides)
    if changes:
        scenario = scenario.with_overrides(changes)
    if nodes is not None:
        scenario = scenario.with_overrides({"nodes": nodes})
    seed = scenario.seed if seed is None else seed
    bar = progress if isinstance(progress, ProgressBar) else None
    if progress is True:
        bar = ProgressBar(scenario.duration_s, label=f"{scenario.name} ")
    started = time.perf_counter()
    script = build(scenario, seed)
    sim = script.cluster.sim
    if bar is not None:
        sim.progress = bar.update
    try:
        sim.run_until(scenario.duration_s)
    finally:
        gc.unfreeze()
        if bar is not None:
            bar.close()
    return script.result(time.perf_counter() - started)


def build(scenario: Scenario, seed: int) -> Script:
    """The cluster of a scenario at t=0 with its script scheduled (run it with
    `script.cluster.sim.run_until`), for notebooks that want to look inside."""
    return Script(scenario, seed)


class Script:
    """A scenario being played on a cluster."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.cluster = Cluster(
            seed,
            config=scenario.membership,
            link=scenario.link,
            store=scenario.store,
            bandwidth_bps=scenario.bandwidth_bps,
            keep_log=False,
        )
        self.sim = self.cluster.sim
        self.rng = random.Random(seed * 1_000_003 + 17)
        self.actions: list[ActionRow] = []
        self.last_disturbance = 0.0
        self.last_write = 0.0
        # Setting up 10⁸ members allocates that many objects: keep the collector out of it
        # and out of the objects that live for the whole run.
        gc.disable()
        try:
            if scenario.bootstrap == "converged":
                self.cluster.bootstrap(scenario.nodes)
            else:
                self.cluster.start(scenario.nodes, join_spread_s=scenario.join_spread_s)
        finally:
            gc.freeze()
            gc.enable()
        for action in scenario.events:
            self.sim.at(action.at, self._do, action)
        if scenario.churn is not None:
            self._start_churn()
        self.sim.at(0.0, self._sample)

    # --- sampling -------------------------------------------------------------------------

    def _sample(self) -> None:
        self.cluster.recorder.sample(
            self.sim.now, self.sim.events_run, with_store=self.scenario.store is not None
        )
        following = self.sim.now + self.scenario.sample_interval_s
        if following <= self.scenario.duration_s + 1e-9:
            self.sim.at(following, self._sample)

    # --- selection ------------------------------------------------------------------------

    def _select(
        self, params: Mapping[str, Any], eligible: Sequence[SimNode], where: str
    ) -> list[SimNode]:
        nodes = self.cluster.nodes
        if "nodes" in params:
            indices = _indices(params["nodes"], len(nodes), f"{where}.nodes")
            chosen = [nodes[i] for i in indices]
            allowed = set(map(id, eligible))
            return [n for n in chosen if id(n) in allowed]
        pool = list(eligible)
        if "fraction" in params:
            count = round(params["fraction"] * len(pool))
        else:
            count = params.get("count", 1)
        return self.rng.sample(pool, min(count, len(pool)))

    def _up(self) -> list[SimNode]:
        return [n for n in self.cluster.nodes if n.up and not n.leaving]

    def _note(self, action: str, nodes: Sequence[SimNode], disturbance: bool = True) -> None:
        self.actions.append(ActionRow(self.sim.now, action, " ".join(str(n.index) for n in nodes)))
        if disturbance:
            self.last_disturbance = self.sim.now

    # --- actions --------------------------------------------------------------------------

    def _do(self, action: Action) -> None:
        handler = getattr(self, f"_do_{action.action}")
        handler(action.params, f"events[{action.action}@{action.at:g}]")

    def _do_crash(self, params: Mapping[str, Any], where: str) -> None:
        chosen = self._select(params, self._up(), where)
        for node in chosen:
            self.cluster.crash(node)
        self._note("crash", chosen)

    def _do_restart(self, params: Mapping[str, Any], where: str) -> None:
        down = [n for n in self.cluster.nodes if not n.up and not n.leaving]
        chosen = self._select(params, down, where) if params.keys() - {"keep_state"} else down
        for node in chosen:
            self.cluster.restart(node, keep_state=params.get("keep_state", True))
        self._note("restart", chosen)

    def _do_leave(self, params: Mapping[str, Any], where: str) -> None:
        chosen = self._select(params, self._up(), where)
        for node in chosen:
            self.cluster.leave(node)
        self._note("leave", chosen)

    def _do_join(self, params: Mapping[str, Any], where: str) -> None:
        joined = [self._join_one() for _ in range(params.get("count", 1))]
        self._note("join", [n for n in joined if n is not None])

    def _join_one(self) -> SimNode | None:
        up = self._up()
        if not up:
            return None
        seed = self.rng.choice(up).address
        node = self.cluster.add_node(seeds=[seed])
        node.join([seed])
        return node

    def _do_pause(self, params: Mapping[str, Any], where: str) -> None:
        chosen = self._select(params, self._up(), where)
        duration = params.get("duration_s", 5.0)
        for node in chosen:
            node.pause(duration)
        self._note("pause", chosen, disturbance=False)
        self.last_disturbance = max(self.last_disturbance, self.sim.now + duration)

    def _do_slow(self, params: Mapping[str, Any], where: str) -> None:
        chosen = self._select(params, self._up(), where)
        delay = params.get("delay_s", 1.0)
        for node in chosen:
            node.slow_s = delay
        self._note("slow", chosen, disturbance=False)
        if "duration_s" in params:
            end = self.sim.now + params["duration_s"]
            self.sim.at(end, self._unslow, chosen)
            self.last_disturbance = max(self.last_disturbance, end)

    def _unslow(self, nodes: list[SimNode]) -> None:
        for node in nodes:
            node.slow_s = 0.0
        self._note("unslow", nodes)

    def _do_partition(self, params: Mapping[str, Any], where: str) -> None:
        group = self._select(params, self.cluster.nodes, where)
        inside = set(map(id, group))
        rest = [n for n in self.cluster.nodes if id(n) not in inside]
        self.cluster.network.partition([n.address for n in group], [n.address for n in rest])
        self._note("partition", group)

    def _do_heal(self, params: Mapping[str, Any], where: str) -> None:
        self.cluster.network.heal()
        self._note("heal", [])

    def _pairs(self, params: Mapping[str, Any], where: str) -> list[tuple[SimNode, SimNode]]:
        nodes = self.cluster.nodes
        if "from" not in params:
            raise ScenarioError(f"{where}: needs `from` (and optionally `to`)")
        sources = [nodes[i] for i in _indices(params["from"], len(nodes), f"{where}.from")]
        if "to" in params:
            targets = [nodes[i] for i in _indices(params["to"], len(nodes), f"{where}.to")]
        else:
            targets = list(nodes)
        return [(a, b) for a in sources for b in targets if a is not b]

    def _do_block(self, params: Mapping[str, Any], where: str) -> None:
        pairs = self._pairs(params, where)
        for a, b in pairs:
            self.cluster.network.block(a.address, b.address, udp_only=params.get("udp_only", False))
        self._note("block", sorted({a for a, _ in pairs}, key=lambda n: n.index))

    def _do_unblock(self, params: Mapping[str, Any], where: str) -> None:
        pairs = self._pairs(params, where)
        for a, b in pairs:
            self.cluster.network.unblock(a.address, b.address)
        self._note("unblock", sorted({a for a, _ in pairs}, key=lambda n: n.index))

    def _do_link(self, params: Mapping[str, Any], where: str) -> None:
        chosen = self._select(params, self.cluster.nodes, where)
        base = self.scenario.link
        changes = {k: v for k, v in params.items() if k in _LINK_FIELDS}
        model = LinkModel(**{**{k: getattr(base, k) for k in _LINK_FIELDS}, **changes})
        addresses = [n.address for n in chosen]
        self.cluster.network.set_link(model, addresses, direction=params.get("direction", "both"))
        self._note("link", chosen, disturbance=False)
        if "duration_s" in params:
            end = self.sim.now + params["duration_s"]
            self.sim.at(end, self.cluster.network.clear_links, addresses)
            self.last_disturbance = max(self.last_disturbance, end)

    def _do_bandwidth(self, params: Mapping[str, Any], where: str) -> None:
        chosen = self._select(params, self.cluster.nodes, where)
        self.cluster.network.set_bandwidth([n.address for n in chosen], params["bandwidth_bps"])
        self._note("bandwidth", chosen, disturbance=False)

    def _do_write(self, params: Mapping[str, Any], where: str) -> None:
        if self.scenario.store is None:
            raise ScenarioError(f"{where}: writes need [store] enabled = true")
        count = params.get("count", 1)
        interval = params.get("interval_s", 0.0)
        authors = (
            [
                self.cluster.nodes[i]
                for i in _indices(params["nodes"], len(self.cluster.nodes), where)
            ]
            if "nodes" in params
            else None
        )
        for i in range(count):
            self.sim.after(i * interval, self._write_one, params, i, authors)

    def _write_one(self, params: Mapping[str, Any], i: int, authors: list[SimNode] | None) -> None:
        candidates = [n for n in (authors or self._up()) if n.up]
        if not candidates:
            return
        node = candidates[i % len(candidates)] if authors else self.rng.choice(candidates)
        keys = params.get("keys", params.get("count", 1))
        key = f"{params.get('key_prefix', 'key-')}{i % max(1, keys)}"
        value = self.rng.randbytes(params.get("value_bytes", 100))
        self.cluster.write(node, key, value)
        self.last_write = self.sim.now
        self.actions.append(ActionRow(self.sim.now, "write", str(node.index)))

    # --- churn ----------------------------------------------------------------------------

    def _start_churn(self) -> None:
        churn = self.scenario.churn
        assert churn is not None
        for rate, step in (
            (churn.crash_rate_per_s, self._churn_crash),
            (churn.join_rate_per_s, self._churn_join),
            (churn.leave_rate_per_s, self._churn_leave),
        ):
            if rate > 0:
                self.sim.at(churn.start_s + self.rng.expovariate(rate), self._churn, rate, step)

    def _churn(self, rate: float, step: Callable[[], None]) -> None:
        churn = self.scenario.churn
        assert churn is not None
        if self.sim.now > min(churn.stop_s, self.scenario.duration_s):
            return
        step()
        self.sim.after(self.rng.expovariate(rate), self._churn, rate, step)

    def _churn_crash(self) -> None:
        churn = self.scenario.churn
        assert churn is not None
        up = self._up()
        if len(up) <= churn.min_up:
            return
        node = self.rng.choice(up)
        self.cluster.crash(node)
        self._note("crash", [node])
        if churn.restart_after_s > 0:
            self.sim.after(
                self.rng.expovariate(1 / churn.restart_after_s), self._churn_restart, node
            )

    def _churn_restart(self, node: SimNode) -> None:
        churn = self.scenario.churn
        assert churn is not None
        if not node.up and not node.leaving:
            self.cluster.restart(node, keep_state=churn.keep_state)
            self._note("restart", [node])

    def _churn_join(self) -> None:
        node = self._join_one()
        if node is not None:
            self._note("join", [node])

    def _churn_leave(self) -> None:
        churn = self.scenario.churn
        assert churn is not None
        up = self._up()
        if len(up) > churn.min_up:
            node = self.rng.choice(up)
            self.cluster.leave(node)
            self._note("leave", [node])

    # --- the result -----------------------------------------------------------------------

    def result(self, wall_s: float) -> Result:
        """Summarise the run."""
        return summarise(self, wall_s)


_LINK_FIELDS = (
    "latency_s",
    "jitter_s",
    "distribution",
    "loss",
    "duplicate",
    "reorder",
    "reorder_delay_s",
)


def _indices(value: Any, count: int, where: str) -> list[int]:
    """Node indices from `[1, 2]`, `3`, or `"0-9"` (a range stops at the last node)."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: {value!r} is not a node index, list or range")
    if isinstance(value, int):
        value = [value]
    if isinstance(value, str):
        low, sep, high = value.partition("-")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise ScenarioError(f'{where}: {value!r} is not a range like "0-9"')
        # A range is clipped to the nodes that exist, so scenarios scale with --nodes.
        value = list(range(int(low), min(int(high) + 1, count)))
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise ScenarioError(f"{where}: {value!r:.40} is not a node index, list or range")
    bad = [i for i in value if not 0 <= i < count]
    if bad:
        raise ScenarioError(f"{where}: node {bad[0]} does not exist (there are {count})")
    return value


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _settled(timeline: Sequence[Any], since: float, ok: Callable[[Any], bool]) -> float | None:
    """Seconds from `since` to the first sample from which `ok` holds to the end."""
    settled = None
    for sample in timeline:
        if sample.t < since:
            continue
        if ok(sample):
            if settled is None:
                settled = sample.t
        else:
            settled = None
    return None if settled is None else settled - since


def summarise(script: Script, wall_s: float) -> Result:
    """Turn a finished script's recorder into a `Result`."""
    scenario, cluster = script.scenario, script.cluster
    sim, recorder = cluster.sim, cluster.recorder
    end = sim.now
    recorder.finish(end)
    if not recorder.samples or recorder.samples[-1].t < end:
        recorder.sample(end, sim.events_run, with_store=scenario.store is not None)
    period = scenario.membership.probe_interval_s

    def after(t: float | None, origin: float) -> float | None:
        return None if t is None else t - origin

    crashes = [
        CrashRow(
            node=c.node,
            at=c.at,
            first_suspect_s=after(c.first_suspect_at, c.at),
            first_detection_periods=(
                None
                if c.first_suspect_at is None
                else math.floor((c.first_suspect_at - c.at) / period + 1e-9)
            ),
            first_dead_s=after(c.first_dead_at, c.at),
            all_dead_s=after(c.all_dead_at, c.at),
            restarted_s=after(c.restarted_at, c.at),
        )
        for c in recorder.crashes
    ]
    up_at_end = [n for n in cluster.nodes if n.up]
    writes, spread = [], []
    for write in recorder.writes.values():
        latencies = [v for k, v in write.arrivals.items() if k != write.author]
        spread.extend(latencies)
        reached = sum(
            1
            for n in up_at_end
            if n.store is not None
            and (
                write.entry.id in n.store.by_id
                or (
                    (head := n.store.heads.get(write.key)) is not None
                    and head.order > write.entry.order
                )
            )
        )
        writes.append(
            WriteRow(
                key=write.key,
                author=write.author,
                at=write.at,
                reached=reached,
                up_at_end=len(up_at_end),
                p50_s=_percentile(latencies, 0.5),
                p90_s=_percentile(latencies, 0.9),
                p99_s=_percentile(latencies, 0.99),
                max_s=max(latencies) if latencies else None,
            )
        )
    node_rows = []
    for node, up_s in zip(cluster.nodes, recorder.up_time, strict=True):
        node_rows.append(
            NodeRow(
                node=node.index,
                up_at_end=node.up,
                up_s=up_s,
                datagrams_sent=node.datagrams_sent,
                bytes_sent=node.bytes_sent,
                frames_sent=node.frames_sent,
                tcp_bytes_sent=node.tcp_bytes_sent,
                datagrams_per_s=node.datagrams_sent / up_s if up_s else 0.0,
                bytes_per_s=(node.bytes_sent + node.tcp_bytes_sent) / up_s if up_s else 0.0,
                awareness=node.core.awareness,
                probes=node.core.stats.probes,
                suspicions=node.core.stats.suspicions,
                refutations=node.core.stats.refutations,
            )
        )
    node_seconds = sum(recorder.up_time) or 1.0
    timeline = recorder.samples
    last = timeline[-1]
    stores = [n.store for n in cluster.nodes if n.store is not None]
    detected = [c for c in crashes if c.first_suspect_s is not None]
    summary = Summary(
        scenario=scenario.name,
        seed=script.seed,
        nodes=scenario.nodes,
        duration_s=scenario.duration_s,
        profile=scenario.profile,
        wall_s=wall_s,
        events=sim.events_run,
        events_per_s=sim.events_run / wall_s if wall_s else 0.0,
        virtual_per_wall=end / wall_s if wall_s else 0.0,
        nodes_up_at_end=len(up_at_end),
        crashes=len(crashes),
        detected=len(detected),
        first_detection_mean_s=_mean([c.first_suspect_s for c in detected]),  # type: ignore[misc]
        first_detection_mean_periods=_mean([c.first_detection_periods for c in detected]),  # type: ignore[misc]
        first_dead_mean_s=_mean([c.first_dead_s for c in crashes if c.first_dead_s is not None]),
        all_dead_mean_s=_mean([c.all_dead_s for c in crashes if c.all_dead_s is not None]),
        all_dead_max_s=max(
            (c.all_dead_s for c in crashes if c.all_dead_s is not None), default=None
        ),
        detection_p50_s=_percentile(recorder.detection_latencies, 0.5),
        detection_p99_s=_percentile(recorder.detection_latencies, 0.99),
        false_positives=len(recorder.false_positives),
        false_positive_nodes=len({s for _, _, s in recorder.false_positives}),
        false_suspicions=recorder.false_suspicions,
        last_disturbance_s=script.last_disturbance,
        convergence_s=_settled(timeline, script.last_disturbance, lambda s: s.converged),
        converged_at_end=last.converged,
        datagrams_per_node_s=sum(n.datagrams_sent for n in cluster.nodes) / node_seconds,
        frames_per_node_s=sum(n.frames_sent for n in cluster.nodes) / node_seconds,
        bytes_per_node_s=sum(n.bytes_sent + n.tcp_bytes_sent for n in cluster.nodes) / node_seconds,
        udp_bytes_per_node_s=sum(n.bytes_sent for n in cluster.nodes) / node_seconds,
        tcp_bytes_per_node_s=sum(n.tcp_bytes_sent for n in cluster.nodes) / node_seconds,
        writes=len(writes),
        dissemination_p50_s=_percentile(spread, 0.5),
        dissemination_p90_s=_percentile(spread, 0.9),
        dissemination_p99_s=_percentile(spread, 0.99),
        dissemination_max_s=max(spread) if spread else None,
        writes_fully_replicated=(
            sum(1 for w in writes if w.reached == w.up_at_end) / len(writes) if writes else None
        ),
        store_converged_at_end=last.store_converged if scenario.store is not None else None,
        store_convergence_s=(
            _settled(timeline, script.last_write, lambda s: s.store_converged >= 1.0)
            if writes
            else None
        ),
        syncs=sum(s.stats.syncs for s in stores),
        sync_failures=sum(s.stats.sync_failures for s in stores),
        sync_bytes=sum(s.stats.sync_bytes for s in stores),
    )
    return Result(
        summary=summary,
        config={**dict(scenario.raw), "seed": script.seed},
        timeline=list(timeline),
        crashes=crashes,
        writes=writes,
        nodes=node_rows,
        actions=script.actions,
        detection_latencies=list(recorder.detection_latencies),
        dissemination_latencies=spread,
    )


# --- sweeps ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepRun:
    """One point of a sweep: its settings, seed, and result."""

    settings: dict[str, Any]
    seed: int
    result: Result

    @property
    def label(self) -> str:
        """A directory name for this point: `key=value,…,seed=N`."""
        parts = [f"{k}={v}" for k, v in self.settings.items()] + [f"seed={self.seed}"]
        return ",".join(parts).replace("/", "_")


def sweep(
    scenario: Scenario | str,
    grid: Mapping[str, Sequence[Any]],
    *,
    seeds: int | Sequence[int] = 1,
    nodes: int | None = None,
    out: str | Path | None = None,
    on_run: Callable[[SweepRun], None] | None = None,
) -> list[SweepRun]:
    """Run every combination of `grid` values (dotted keys) for each seed. With `out`,
    each run is saved in `out/<label>/` and the summaries in `out/sweep.csv`."""
    if isinstance(scenario, str):
        scenario = Scenario.load(scenario)
    if nodes is not None:
        scenario = scenario.with_overrides({"nodes": nodes})
    seed_list = (
        list(range(scenario.seed, scenario.seed + seeds)) if isinstance(seeds, int) else list(seeds)
    )
    keys = list(grid)
    runs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = dict(zip(keys, values, strict=True))
        variant = scenario.with_overrides(settings)
        for seed in seed_list:
            point = SweepRun(settings, seed, run(variant, seed=seed))
            runs.append(point)
            if out is not None:
                point.result.save(Path(out) / point.label)
            if on_run is not None:
                on_run(point)
    if out is not None:
        _write_sweep_table(Path(out), keys, runs)
    return runs


def _write_sweep_table(out: Path, keys: list[str], runs: list[SweepRun]) -> None:
    import csv
    from dataclasses import asdict, fields

    from nodenet.simulations.results import Summary

    out.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Summary)]
    with (out / "sweep.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*keys, "run", *names])
        for point in runs:
            summary = asdict(point.result.summary)
            writer.writerow(
                [*(point.settings[k] for k in keys), point.label]
                + ["" if summary[n] is None else summary[n] for n in names]
            )

"""Scenarios: every bundled one loads and runs; overrides reach any field; results are
reproducible and round-trip through CSV and JSON."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict

import pytest

from nodenet.simulations import Result, Scenario, ScenarioError, available, run, sweep

BUNDLED = {
    "steady_state",
    "single_crash",
    "mass_failure_10pct",
    "churn",
    "loss_5pct",
    "partition_heal",
    "slow_node",
    "entry_dissemination",
    "anti_entropy_convergence",
}


def test_given_the_bundled_scenarios_then_all_required_ones_exist_and_load():
    assert set(available()) >= BUNDLED
    for name in available():
        scenario = Scenario.load(name)
        assert scenario.name == name
        assert scenario.description


@pytest.mark.parametrize("name", sorted(available()))
def test_given_any_bundled_scenario_at_small_size_then_it_runs_and_ends_converged(name):
    overrides = {"duration_s": 100.0}
    if name == "churn":
        overrides["churn.stop_s"] = 50.0  # then it has 50 s to settle
    result = run(name, seed=3, nodes=12, overrides=overrides)
    s = result.summary
    assert s.events > 0
    assert result.timeline
    assert s.converged_at_end, name
    if name in ("single_crash", "mass_failure_10pct"):
        assert s.crashes >= 1
        assert s.detected == s.crashes
        assert s.false_positives == 0
    if name in ("entry_dissemination", "anti_entropy_convergence"):
        assert s.writes > 0
        assert s.store_converged_at_end == 1.0


def test_given_overrides_then_any_field_changes_by_its_dotted_path():
    base = Scenario.load("single_crash")
    changed = base.with_overrides(
        ["membership.probe_interval_s=2.0", "link.loss=0.05", "nodes=7", "events.0.at=5"]
    )
    assert changed.membership.probe_interval_s == 2.0
    assert changed.link.loss == 0.05
    assert changed.nodes == 7
    assert changed.events[0].at == 5.0
    store = base.with_overrides({"store.enabled": True, "store.sync_interval_s": 3})
    assert store.store is not None
    assert store.store.replication.sync_interval_s == 3


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ("membership.probe_intervl_s=1", "unknown membership settings|unknown key"),
        ("link.loss=2", "link.loss"),
        ("nodes=0", "nodes"),
        ("bootstrap=maybe", "bootstrap"),
        ("events.5.at=1", "events.5: no item"),
        ("typo=1", "unknown key typo"),
        ("membership.probe_order=sideways", "probe_order"),
    ],
)
def test_given_a_bad_setting_then_the_error_names_the_key(setting, match):
    with pytest.raises(ScenarioError, match=match):
        Scenario.load("single_crash").with_overrides([setting])


def test_given_a_bad_event_then_the_error_names_it():
    with pytest.raises(ScenarioError, match=r"events.0.action"):
        Scenario.from_dict({"events": [{"at": 1, "action": "explode"}]})
    with pytest.raises(ScenarioError, match=r"unknown key events.0.nodez"):
        Scenario.from_dict({"events": [{"at": 1, "action": "crash", "nodez": [1]}]})


def test_given_the_same_seed_then_identical_results(tmp_path):
    def numbers(result):
        summary = asdict(result.summary)
        for key in ("wall_s", "events_per_s", "virtual_per_wall"):
            summary.pop(key)
        return summary, [asdict(s) for s in result.timeline], result.detection_latencies

    scenario = Scenario.load("churn").with_overrides({"nodes": 20, "duration_s": 60})
    first, second = run(scenario, seed=5), run(scenario, seed=5)
    assert numbers(first) == numbers(second)
    assert numbers(first) != numbers(run(scenario, seed=6))


def test_given_a_result_then_csv_and_json_hold_it(tmp_path):
    result = run("entry_dissemination", seed=1, nodes=10, overrides={"duration_s": 70})
    result.save(tmp_path)
    assert Result.load(tmp_path).to_dict() == json.loads(result.to_json())
    with (tmp_path / "summary.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert int(row["writes"]) == result.summary.writes == 100
    with (tmp_path / "timeline.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(result.timeline)
    for name in ("crashes", "writes", "nodes", "actions", "detection_latencies"):
        assert (tmp_path / f"{name}.csv").is_file()


def test_given_a_sweep_then_every_combination_and_seed_runs(tmp_path):
    runs = sweep(
        "single_crash",
        {"link.loss": [0.0, 0.05], "membership.suspicion_mult": [3, 5]},
        seeds=2,
        nodes=8,
        out=tmp_path,
    )
    assert len(runs) == 8
    assert {
        (r.settings["link.loss"], r.settings["membership.suspicion_mult"], r.seed) for r in runs
    } == {(loss, mult, seed) for loss in (0.0, 0.05) for mult in (3, 5) for seed in (1, 2)}
    with (tmp_path / "sweep.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8
    assert all((tmp_path / r.label / "result.json").is_file() for r in runs)

"""`nodenet sim` (the `sim_app` typer sub-app): run, sweep, plot, list."""

from __future__ import annotations

import builtins
import json

from typer.testing import CliRunner

from nodenet.cli.sim import sim_app

runner = CliRunner()


def test_given_a_scenario_then_run_prints_a_summary_and_saves_results(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        sim_app,
        [
            "run",
            "single_crash",
            "--seed",
            "2",
            "--nodes",
            "10",
            "--set",
            "duration_s=40",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "first detection, mean s" in result.output
    assert (out / "result.json").is_file()
    assert (out / "timeline.csv").is_file()
    again = runner.invoke(
        sim_app,
        ["run", "single_crash", "--seed", "2", "--nodes", "10", "--set", "duration_s=40", "--json"],
    )
    summary = json.loads(again.output)
    assert summary["crashes"] == 1
    assert summary["nodes"] == 10


def test_given_bad_input_then_exit_2_with_the_key_named():
    result = runner.invoke(sim_app, ["run", "single_crash", "--set", "link.loss=7"])
    assert result.exit_code == 2
    assert "link.loss" in result.output
    result = runner.invoke(sim_app, ["run", "no_such_scenario"])
    assert result.exit_code == 2
    assert "steady_state" in result.output


def test_given_a_sweep_then_one_line_per_run_and_a_table(tmp_path):
    result = runner.invoke(
        sim_app,
        [
            "sweep",
            "single_crash",
            "--set",
            "link.loss=0,0.05",
            "--set",
            "duration_s=30",
            "--seeds",
            "2",
            "--nodes",
            "8",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len([line for line in result.output.splitlines() if "seed=" in line]) == 4
    assert (tmp_path / "sweep.csv").is_file()


def test_given_results_then_plot_writes_the_pngs(tmp_path):
    runner.invoke(
        sim_app,
        ["run", "single_crash", "--nodes", "10", "--set", "duration_s=40", "--out", str(tmp_path)],
    )
    result = runner.invoke(sim_app, ["plot", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("membership", "detection_cdf", "dissemination_cdf", "traffic"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_given_no_matplotlib_then_plot_says_how_to_install_it(tmp_path, monkeypatch):
    runner.invoke(
        sim_app,
        ["run", "steady_state", "--nodes", "5", "--set", "duration_s=5", "--out", str(tmp_path)],
    )
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = runner.invoke(sim_app, ["plot", str(tmp_path)])
    assert result.exit_code == 1
    assert "matplotlib" in result.output
    assert "pip install" in result.output


def test_given_list_then_every_bundled_scenario_is_shown():
    result = runner.invoke(sim_app, ["list"])
    assert result.exit_code == 0
    assert "partition_heal" in result.output
    assert "anti_entropy_convergence" in result.output
    # the first sentence, whole: a decimal point does not end it
    line = next(x for x in result.output.splitlines() if x.startswith("entry_dissemination"))
    assert "one every 0.5 s: how fast" in line

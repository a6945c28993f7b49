"""`nodenet sim`: run simulation scenarios, sweep their settings, plot the results.

Registered in the main app as `app.add_typer(sim_app, name="sim")`. The simulator and
matplotlib are imported inside the commands, so `nodenet --help` stays quick.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from nodenet.simulations.results import Summary

__all__ = ["sim_app"]

EX_USAGE = 2

sim_app = typer.Typer(
    help="Simulate clusters of thousands of nodes running the real protocol code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ScenarioArg = Annotated[
    str, typer.Argument(help="A bundled scenario name (see `nodenet sim list`) or a .toml file.")
]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed (default: the scenario's).")]
Nodes = Annotated[
    int | None, typer.Option("--nodes", min=1, help="Cluster size (default: the scenario's).")
]
Out = Annotated[Path | None, typer.Option("--out", help="Directory for the CSV and JSON results.")]

HEADLINES = (
    ("nodes", "nodes"),
    ("duration_s", "virtual seconds"),
    ("wall_s", "wall seconds"),
    ("events_per_s", "events per second"),
    ("crashes", "crashes"),
    ("first_detection_mean_s", "first detection, mean s"),
    ("first_detection_mean_periods", "first detection, mean periods"),
    ("all_dead_mean_s", "DEAD everywhere, mean s"),
    ("detection_p99_s", "DEAD at an observer, p99 s"),
    ("false_positives", "false positives (DEAD)"),
    ("false_suspicions", "false suspicions"),
    ("convergence_s", "converged after last fault, s"),
    ("converged_at_end", "converged at end"),
    ("datagrams_per_node_s", "datagrams per node per s"),
    ("bytes_per_node_s", "bytes per node per s"),
    ("writes", "entries written"),
    ("dissemination_p50_s", "dissemination p50 s"),
    ("dissemination_p99_s", "dissemination p99 s"),
    ("writes_fully_replicated", "entries on every node"),
    ("store_convergence_s", "stores identical after last write, s"),
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"nodenet: {message}", err=True)
    return typer.Exit(code)


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _summary_text(summary: Summary) -> str:
    rows = [(label, _format(getattr(summary, key))) for key, label in HEADLINES]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _load(scenario: str, settings: list[str]) -> Any:
    from nodenet.simulations.scenario import Scenario, ScenarioError

    try:
        return Scenario.load(scenario).with_overrides(settings)
    except ScenarioError as exc:
        raise _fail(str(exc), EX_USAGE) from None


@sim_app.command("list")
def list_scenarios() -> None:
    """List the bundled scenarios."""
    from nodenet.simulations.scenario import Scenario, available

    for name in available():
        first = re.split(r"\.(?:\s|$)", " ".join(Scenario.load(name).description.split()))[0]
        typer.echo(f"{name:<26} {first}")


@sim_app.command("run")
def run_command(
    scenario: ScenarioArg,
    seed: Seed = None,
    nodes: Nodes = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a field, e.g. link.loss=0.05."),
    ] = None,
    out: Out = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run one scenario; print its summary and save CSV and JSON results with --out."""
    from nodenet.simulations.runner import run
    from nodenet.simulations.scenario import ScenarioError

    loaded = _load(scenario, settings or [])
    try:
        result = run(loaded, seed=seed, nodes=nodes, progress=True)
    except ScenarioError as exc:
        raise _fail(str(exc), EX_USAGE) from None
    if out is not None:
        result.save(out)
    if as_json:
        typer.echo(json.dumps(result.to_dict()["summary"], indent=1))
    else:
        typer.echo(_summary_text(result.summary))
        if out is not None:
            typer.echo(f"results in {out}/ (plot them with `nodenet sim plot {out}`)")


def _grid(settings: list[str]) -> dict[str, list[Any]]:
    from nodenet.simulations.scenario import ScenarioError, parse_value

    grid: dict[str, list[Any]] = {}
    for text in settings:
        key, sep, values = text.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise _fail(f"--set {text!r}: expected key=v1,v2,...", EX_USAGE)
        try:
            grid[key.strip()] = [parse_value(v.strip()) for v in _split(values)]
        except ScenarioError as exc:
            raise _fail(str(exc), EX_USAGE) from None
    return grid


def _split(values: str) -> list[str]:
    """Split on commas outside brackets and quotes (a value may be an array)."""
    parts, depth, quote, current = [], 0, "", ""
    for char in values:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


@sim_app.command("sweep")
def sweep_command(
    scenario: ScenarioArg,
    settings: Annotated[
        list[str],
        typer.Option(
            "--set",
            metavar="KEY=V1,V2,...",
            help="Values of one field to sweep (repeat for a grid), e.g. link.loss=0,0.05,0.1.",
        ),
    ],
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per point.")] = 1,
    nodes: Nodes = None,
    out: Out = None,
) -> None:
    """Run a scenario for every combination of settings and seeds; one line per run."""
    from nodenet.simulations.runner import SweepRun, sweep
    from nodenet.simulations.scenario import ScenarioError

    grid = _grid(settings)
    loaded = _load(scenario, [])
    try:
        for key, values in grid.items():  # check every value before the long part
            for value in values:
                loaded.with_overrides({key: value})
    except ScenarioError as exc:
        raise _fail(str(exc), EX_USAGE) from None
    columns = (
        "first_detection_mean_s",
        "all_dead_mean_s",
        "false_positives",
        "convergence_s",
        "datagrams_per_node_s",
        "bytes_per_node_s",
        "dissemination_p99_s",
    )
    typer.echo("\t".join(["run", *columns]))

    def show(point: SweepRun) -> None:
        s = point.result.summary
        typer.echo("\t".join([point.label, *(_format(getattr(s, c)) for c in columns)]))
        sys.stdout.flush()

    sweep(loaded, grid, seeds=seeds, nodes=nodes, out=out, on_run=show)
    if out is not None:
        typer.echo(f"results in {out}/ (summary: {out}/sweep.csv)")


@sim_app.command("plot")
def plot_command(
    directory: Annotated[Path, typer.Argument(help="A directory written by run or sweep --out.")],
) -> None:
    """Draw PNG plots of saved results (needs matplotlib: pip install -e '.[sim]')."""
    from nodenet.simulations.plots import MatplotlibMissing, plot_dir

    try:
        paths = plot_dir(directory)
    except MatplotlibMissing as exc:
        raise _fail(str(exc)) from None
    except FileNotFoundError as exc:
        raise _fail(str(exc), EX_USAGE) from None
    for path in paths:
        typer.echo(str(path))

"""PNG plots of saved results (matplotlib: `pip install -e .[sim]`).

`plot_dir(dir)` draws, for a result saved with `Result.save`: `membership.png` (running
nodes, mean ALIVE view, suspect and dead pairs over time), `detection_cdf.png`,
`dissemination_cdf.png`, and `traffic.png` (datagrams and bytes per node per second over
time). For a sweep directory it plots every run in it. `plot_first_detection` draws the
SWIM validation's histogram against the model (docs/simulations.md).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodenet.simulations.results import Result

if TYPE_CHECKING:
    from nodenet.simulations.validation import FirstDetection

__all__ = ["MatplotlibMissing", "plot_dir", "plot_first_detection", "plot_result"]


class MatplotlibMissing(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MatplotlibMissing(
            "plots need matplotlib, which is not installed: pip install -e '.[sim]'"
            " (or pip install matplotlib)"
        ) from None
    return plt


def plot_dir(directory: str | Path) -> list[Path]:
    """Plot the result in `directory`, or every result below it (a sweep)."""
    root = Path(directory)
    if (root / "result.json").is_file():
        return plot_result(Result.load(root), root)
    written: list[Path] = []
    for child in sorted(p.parent for p in root.glob("*/result.json")):
        written += plot_result(Result.load(child), child)
    if not written:
        raise FileNotFoundError(f"no result.json in {root} or its subdirectories")
    return written


def _cdf(ax: Any, values: list[float], label: str) -> None:
    ordered = sorted(values)
    n = len(ordered)
    ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=label)


def plot_result(result: Result, out: str | Path) -> list[Path]:
    """Write the four PNGs of one result into `out`."""
    plt = _pyplot()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = result.summary
    title = f"{s.scenario}: {s.nodes} nodes, seed {s.seed}"
    t = [x.t for x in result.timeline]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, [x.up for x in result.timeline], label="running nodes")
    ax.plot(t, [x.alive_view + 1 for x in result.timeline], label="mean ALIVE view (+ self)")
    running = [max(x.up, 1) for x in result.timeline]
    ax.plot(
        t,
        [x.suspect_pairs / r for x, r in zip(result.timeline, running, strict=True)],
        label="suspects per node",
    )
    ax.plot(
        t,
        [x.dead_pairs / r for x, r in zip(result.timeline, running, strict=True)],
        label="dead per node",
    )
    for action in result.actions:
        if action.action in ("crash", "partition", "heal", "restart", "pause", "slow"):
            ax.axvline(action.at, color="grey", alpha=0.2, linewidth=0.8)
    ax.set(xlabel="virtual time (s)", ylabel="members", title=f"Membership — {title}")
    ax.legend(fontsize="small")
    paths.append(_save(fig, out / "membership.png", plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    if result.detection_latencies:
        _cdf(ax, result.detection_latencies, "crash → DEAD, per observer")
        first = [c.first_suspect_s for c in result.crashes if c.first_suspect_s is not None]
        if first:
            _cdf(ax, first, "crash → first suspicion")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no crash detected", ha="center", transform=ax.transAxes)
    ax.set(xlabel="seconds", ylabel="fraction", title=f"Detection latency — {title}")
    paths.append(_save(fig, out / "detection_cdf.png", plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    if result.dissemination_latencies:
        _cdf(ax, result.dissemination_latencies, "write → stored, per node")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no entries written", ha="center", transform=ax.transAxes)
    ax.set(xlabel="seconds", ylabel="fraction", title=f"Dissemination latency — {title}")
    paths.append(_save(fig, out / "dissemination_cdf.png", plt))

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    samples = result.timeline[1:]
    ts = [x.t for x in samples]
    top.plot(ts, [x.datagrams_per_node_s for x in samples], label="datagrams")
    top.plot(ts, [x.frames_per_node_s for x in samples], label="TCP frames")
    top.set(ylabel="per node per s", title=f"Traffic — {title}")
    top.legend(fontsize="small")
    bottom.plot(ts, [x.bytes_per_node_s for x in samples], color="C2")
    bottom.set(xlabel="virtual time (s)", ylabel="bytes per node per s")
    paths.append(_save(fig, out / "traffic.png", plt))
    return paths


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_first_detection(result: FirstDetection, path: str | Path) -> Path:
    """The first-detection periods of a `validation.first_detection` run against the
    model's geometric distribution (P(K = k) = q(1−q)^(k−1))."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    q = 1 / result.model_mean
    counts = Counter(result.periods)
    ks = list(range(0, max(counts) + 1))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(
        [k - 0.2 for k in ks],
        [counts[k] / result.trials for k in ks],
        width=0.4,
        label=f"simulated ({result.trials} crashes, mean {result.mean_periods:.3f})",
    )
    ax.bar(
        [k + 0.2 for k in ks],
        [q * (1 - q) ** (k - 1) if k else 0.0 for k in ks],
        width=0.4,
        label=f"model: geometric, mean 1/q = {result.model_mean:.3f}",
    )
    ax.set_xlabel("first-detection period K (crash → first suspicion, in probe intervals)")
    ax.set_ylabel("fraction of crashes")
    ax.set_title(
        f"SWIM first detection, N = {result.nodes}"
        f" ({result.victims_per_batch} crashes at a time); e/(e−1) = 1.582"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

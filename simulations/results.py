"""A run's results as plain dataclasses, written as CSV files plus one JSON document.

`Result.save(dir)` writes `result.json` (everything) and one CSV per table: `summary.csv`
(one row), `timeline.csv`, `crashes.csv`, `writes.csv`, `nodes.csv`, `actions.csv`,
`detection_latencies.csv`, `dissemination_latencies.csv`. `Result.load(dir)` reads
`result.json` back. docs/simulations.md ("Metrics") says what every column means.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nodenet.simulations.metrics import Sample

__all__ = ["ActionRow", "CrashRow", "NodeRow", "Result", "Summary", "WriteRow"]


@dataclass(slots=True)
class Summary:
    """The headline numbers of one run (see docs/simulations.md, "Metrics")."""

    scenario: str
    seed: int
    nodes: int
    duration_s: float
    profile: str
    wall_s: float = 0.0
    events: int = 0
    events_per_s: float = 0.0
    virtual_per_wall: float = 0.0
    nodes_up_at_end: int = 0
    crashes: int = 0
    detected: int = 0
    first_detection_mean_s: float | None = None
    first_detection_mean_periods: float | None = None
    first_dead_mean_s: float | None = None
    all_dead_mean_s: float | None = None
    all_dead_max_s: float | None = None
    detection_p50_s: float | None = None
    detection_p99_s: float | None = None
    false_positives: int = 0
    false_positive_nodes: int = 0
    false_suspicions: int = 0
    last_disturbance_s: float = 0.0
    convergence_s: float | None = None
    converged_at_end: bool = False
    datagrams_per_node_s: float = 0.0
    frames_per_node_s: float = 0.0
    bytes_per_node_s: float = 0.0
    udp_bytes_per_node_s: float = 0.0
    tcp_bytes_per_node_s: float = 0.0
    writes: int = 0
    dissemination_p50_s: float | None = None
    dissemination_p90_s: float | None = None
    dissemination_p99_s: float | None = None
    dissemination_max_s: float | None = None
    writes_fully_replicated: float | None = None
    store_converged_at_end: float | None = None
    store_convergence_s: float | None = None
    syncs: int = 0
    sync_failures: int = 0
    sync_bytes: int = 0


@dataclass(slots=True)
class CrashRow:
    """One crash: times are seconds after it (None: did not happen while it was down)."""

    node: int
    at: float
    first_suspect_s: float | None
    first_detection_periods: int | None
    first_dead_s: float | None
    all_dead_s: float | None
    restarted_s: float | None


@dataclass(slots=True)
class WriteRow:
    """One entry written: latencies are seconds after the write, over the nodes reached."""

    key: str
    author: int
    at: float
    reached: int
    up_at_end: int
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    max_s: float | None


@dataclass(slots=True)
class NodeRow:
    """One node's totals (rates per second of its own uptime)."""

    node: int
    up_at_end: bool
    up_s: float
    datagrams_sent: int
    bytes_sent: int
    frames_sent: int
    tcp_bytes_sent: int
    datagrams_per_s: float
    bytes_per_s: float
    awareness: int
    probes: int
    suspicions: int
    refutations: int


@dataclass(slots=True)
class ActionRow:
    """A scripted or churn action as it was carried out."""

    at: float
    action: str
    nodes: str


@dataclass(slots=True)
class Result:
    """Everything a run measured."""

    summary: Summary
    config: dict[str, Any]
    timeline: list[Sample] = field(default_factory=list)
    crashes: list[CrashRow] = field(default_factory=list)
    writes: list[WriteRow] = field(default_factory=list)
    nodes: list[NodeRow] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)
    detection_latencies: list[float] = field(default_factory=list)
    """Crash → DEAD at each observer, seconds (a uniform sample if there were very many)."""
    dissemination_latencies: list[float] = field(default_factory=list)
    """Write → stored at each node other than the author, seconds."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what `to_json` writes)."""
        return _clean(asdict(self))

    def to_json(self, indent: int | None = None) -> str:
        """The whole result as JSON (non-finite numbers become null)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def to_csv(self, directory: str | Path) -> list[Path]:
        """Write one CSV per table into `directory`; returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tables: dict[str, tuple[list[str], list[list[Any]]]] = {
            "summary": (_names(Summary), [_row(self.summary)]),
            "timeline": (_names(Sample), [_row(s) for s in self.timeline]),
            "crashes": (_names(CrashRow), [_row(c) for c in self.crashes]),
            "writes": (_names(WriteRow), [_row(w) for w in self.writes]),
            "nodes": (_names(NodeRow), [_row(n) for n in self.nodes]),
            "actions": (_names(ActionRow), [_row(a) for a in self.actions]),
            "detection_latencies": (["seconds"], [[v] for v in self.detection_latencies]),
            "dissemination_latencies": (["seconds"], [[v] for v in self.dissemination_latencies]),
        }
        paths = []
        for name, (header, rows) in tables.items():
            path = out / f"{name}.csv"
            with path.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows([_cell(v) for v in row] for row in rows)
            paths.append(path)
        return paths

    def save(self, directory: str | Path) -> Path:
        """Write the CSV files and `result.json` into `directory`."""
        out = Path(directory)
        self.to_csv(out)
        (out / "result.json").write_text(self.to_json(indent=1) + "\n")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """Rebuild from `to_dict` output."""
        return cls(
            summary=Summary(**data["summary"]),
            config=data["config"],
            timeline=[Sample(**s) for s in data["timeline"]],
            crashes=[CrashRow(**c) for c in data["crashes"]],
            writes=[WriteRow(**w) for w in data["writes"]],
            nodes=[NodeRow(**n) for n in data["nodes"]],
            actions=[ActionRow(**a) for a in data["actions"]],
            detection_latencies=list(data["detection_latencies"]),
            dissemination_latencies=list(data["dissemination_latencies"]),
        )

    @classmethod
    def load(cls, directory: str | Path) -> Result:
        """Read a result saved with `save`."""
        path = Path(directory) / "result.json"
        return cls.from_dict(json.loads(path.read_text()))


def _names(kind: type) -> list[str]:
    return [f.name for f in fields(kind)]


def _row(item: Any) -> list[Any]:
    return [getattr(item, f.name) for f in fields(item)]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(round(value, 6))
    return value


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value

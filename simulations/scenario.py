"""Scenarios: what to simulate, as TOML (`simulations/scenarios/*.toml`) or a dict.

A scenario is plain data: cluster size and duration, the membership profile with any
overrides, the store, the link, a churn process, and a script of timed actions. Every key
is checked; an unknown key or a bad value is an error naming it. `with_overrides` applies
`key=value` settings to any field by its dotted path (`membership.probe_interval_s`,
`link.loss`, `nodes`, `events.0.at`), which is what `--set` and sweeps use. The keys and
their meaning are documented in docs/simulations.md ("Writing a scenario").
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from nodenet.protocol.config import PROFILES, MembershipConfig
from nodenet.protocol.errors import LocalProtocolError
from nodenet.protocol.replication import ReplicationConfig
from nodenet.simulations.links import LinkModel
from nodenet.simulations.store import StoreSettings

__all__ = [
    "ACTIONS",
    "Action",
    "Churn",
    "Scenario",
    "ScenarioError",
    "available",
    "parse_assignment",
]


class ScenarioError(ValueError):
    """A scenario that cannot be run, with the key at fault in the message."""


TOP_KEYS = {
    "name": "short name (default: the file name)",
    "description": "one paragraph for people",
    "nodes": "cluster size at the start",
    "duration_s": "virtual seconds to simulate",
    "seed": "seed of the run (the CLI's --seed overrides it)",
    "bootstrap": '"converged" (all nodes know each other at t=0) or "join" (all join node 0)',
    "join_spread_s": "with bootstrap = join: joins are spread uniformly over this many seconds",
    "sample_interval_s": "seconds between samples of the timeline",
    "membership": "table: profile and MembershipConfig overrides",
    "store": "table: the replicated store (enabled, sync_interval_s, ...)",
    "link": "table: the default link model and bandwidth",
    "churn": "table: Poisson crash/restart and join/leave processes",
    "events": "array of tables: the timed script",
}
STORE_KEYS = {
    "enabled": "simulate the store (default false)",
    "sync_interval_s": "anti-entropy period",
    "sync_after_join_s": "delay before syncing with a member that (re)joined",
    "piggyback_max_bytes": "entries up to this size ride on gossip; larger ones are announced",
    "sync_timeout_s": "a reconciliation session gives up after this",
    "max_sync_rounds": "a reconciliation session gives up after this many rounds",
    "transfer_timeout_s": "a pull or push conversation gives up after this",
}
LINK_KEYS = {f.name for f in fields(LinkModel) if not f.name.startswith("_")} | {"bandwidth_bps"}
CHURN_KEYS = {
    "start_s": "when the processes start (default 0)",
    "stop_s": "when they stop (default: the end)",
    "crash_rate_per_s": "cluster-wide rate of crashes (Poisson)",
    "restart_after_s": "mean downtime of a crashed node (exponential); 0: never restarts",
    "keep_state": "restarts keep their state (default true)",
    "join_rate_per_s": "cluster-wide rate of new nodes joining",
    "leave_rate_per_s": "cluster-wide rate of graceful leaves",
    "min_up": "never crash or remove below this many running nodes (default 2)",
}
ACTIONS = {
    "crash": "stop nodes without a goodbye (kill -9)",
    "restart": "restart stopped nodes (keep_state = true|false); default: every stopped node",
    "leave": "graceful leave",
    "join": "`count` new nodes join through a running node",
    "pause": "freeze nodes for `duration_s` (no processing, no timers)",
    "slow": "every input of the nodes waits `delay_s` (for `duration_s`, default: to the end)",
    "partition": "split the cluster: the selected nodes against the rest",
    "heal": "remove partitions and blocked directions",
    "block": "drop traffic from `from` nodes to `to` nodes (`udp_only` = true: UDP only)",
    "unblock": "undo a block",
    "link": "another link model for traffic from/to the nodes (`direction`), for `duration_s`",
    "bandwidth": "limit the nodes' egress to `bandwidth_bps`",
    "write": "`count` entries, one every `interval_s`, by the selected (or random) nodes",
}
ACTION_KEYS = {
    "at",
    "action",
    "nodes",
    "count",
    "fraction",
    "keep_state",
    "duration_s",
    "delay_s",
    "from",
    "to",
    "udp_only",
    "direction",
    "bandwidth_bps",
    "interval_s",
    "value_bytes",
    "keys",
    "key_prefix",
} | LINK_KEYS


@dataclass(frozen=True, slots=True)
class Action:
    """One timed step of the script; `params` are its other keys, checked on load."""

    at: float
    action: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Churn:
    """Poisson processes of crashes (with restarts), joins and leaves."""

    start_s: float = 0.0
    stop_s: float = math.inf
    crash_rate_per_s: float = 0.0
    restart_after_s: float = 0.0
    keep_state: bool = True
    join_rate_per_s: float = 0.0
    leave_rate_per_s: float = 0.0
    min_up: int = 2


@dataclass(frozen=True, slots=True)
class Scenario:
    """A runnable scenario. Build with `load`, `from_dict`; change with `with_overrides`."""

    name: str
    description: str
    nodes: int
    duration_s: float
    seed: int
    bootstrap: str
    join_spread_s: float
    sample_interval_s: float
    profile: str
    membership: MembershipConfig
    store: StoreSettings | None
    link: LinkModel
    bandwidth_bps: float
    churn: Churn | None
    events: tuple[Action, ...]
    raw: Mapping[str, Any]
    """The scenario as data (after overrides): what results record and sweeps change."""

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A bundled scenario by name (`available()`), or a TOML file."""
        path = Path(name_or_path)
        if path.suffix == ".toml" or path.exists():
            try:
                text = path.read_text()
            except OSError as exc:
                raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
            default_name = path.stem
        else:
            bundled = resources.files("nodenet.simulations") / "scenarios" / f"{path.name}.toml"
            if not bundled.is_file():
                raise ScenarioError(
                    f"no scenario {str(name_or_path)!r}: give a .toml path or one of"
                    f" {', '.join(available())}"
                )
            text = bundled.read_text()
            default_name = path.name
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"scenario {name_or_path}: {exc}") from None
        data.setdefault("name", default_name)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Check and build a scenario from plain data (what a TOML file holds)."""
        raw = copy.deepcopy(dict(data))
        _known(raw, TOP_KEYS, "")
        nodes = _int(raw.get("nodes", 10), "nodes", minimum=1)
        duration = _number(raw.get("duration_s", 60.0), "duration_s", positive=True)
        bootstrap = raw.get("bootstrap", "converged")
        if bootstrap not in ("converged", "join"):
            raise ScenarioError(f"bootstrap: {bootstrap!r} is not converged or join")
        profile, membership = _membership(raw.get("membership", {}))
        link_table = _table(raw.get("link", {}), "link")
        _known(link_table, LINK_KEYS, "link.")
        link, bandwidth = _link(link_table, "link")
        return cls(
            name=str(raw.get("name", "scenario")),
            description=str(raw.get("description", "")),
            nodes=nodes,
            duration_s=duration,
            seed=_int(raw.get("seed", 1), "seed", minimum=0),
            bootstrap=bootstrap,
            join_spread_s=_number(raw.get("join_spread_s", 1.0), "join_spread_s"),
            sample_interval_s=_number(
                raw.get("sample_interval_s", 1.0), "sample_interval_s", positive=True
            ),
            profile=profile,
            membership=membership,
            store=_store(raw.get("store", {})),
            link=link,
            bandwidth_bps=bandwidth,
            churn=_churn(raw.get("churn")),
            events=tuple(
                _action(e, i) for i, e in enumerate(_list(raw.get("events", []), "events"))
            ),
            raw=raw,
        )

    def with_overrides(self, assignments: Mapping[str, Any] | Iterable[str]) -> Scenario:
        """A copy with fields set by dotted path: {"link.loss": 0.05} or ["link.loss=0.05"]."""
        pairs = (
            dict(assignments)
            if isinstance(assignments, Mapping)
            else dict(parse_assignment(a) for a in assignments)
        )
        data = copy.deepcopy(dict(self.raw))
        for path, value in pairs.items():
            _assign(data, path, value)
        return Scenario.from_dict(data)


def available() -> list[str]:
    """Names of the bundled scenarios."""
    folder = resources.files("nodenet.simulations") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value` → (key, value); the value is read as TOML (numbers, booleans, strings,
    arrays), or taken as a bare string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set {text!r}: expected key=value, e.g. link.loss=0.05")
    return key.strip(), parse_value(value.strip())


def parse_value(text: str) -> Any:
    """A TOML value, or the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    target: Any = data
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(target, list):
            target = target[_index(part, target, where)]
        else:
            target = target.setdefault(part, {})
        if not isinstance(target, dict | list):
            raise ScenarioError(f"--set {path}: {where} is not a table")
    last = parts[-1]
    if isinstance(target, list):
        target[_index(last, target, path)] = value
    else:
        target[last] = value


def _index(part: str, items: list[Any], where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ScenarioError(f"{where}: no item {part!r} (there are {len(items)})")
    return int(part)


# --- checking ---------------------------------------------------------------------------


def _known(table: Mapping[str, Any], keys: Iterable[str], prefix: str) -> None:
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ScenarioError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(keys))})")


def _table(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{name} must be a table, got {value!r:.40}")
    return value


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(f"{name} must be an array, got {value!r:.40}")
    return value


def _number(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{name}: {value!r:.40} is not a number")
    if value < 0 or (positive and value == 0):
        raise ScenarioError(f"{name}: {value!r} must be {'> 0' if positive else '≥ 0'}")
    return float(value)


def _int(value: Any, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"{name}: {value!r:.40} must be an integer ≥ {minimum}")
    return value


def _membership(value: Any) -> tuple[str, MembershipConfig]:
    table = dict(_table(value, "membership"))
    profile = table.pop("profile", "lan")
    if profile not in PROFILES:
        raise ScenarioError(f"membership.profile: {profile!r} is not one of {', '.join(PROFILES)}")
    known = {f.name for f in fields(MembershipConfig)}
    _known(table, known | {"profile"}, "membership.")
    try:
        return profile, PROFILES[profile].with_changes(**table)
    except (LocalProtocolError, TypeError) as exc:
        raise ScenarioError(str(exc)) from None


def _link(table: Mapping[str, Any], name: str) -> tuple[LinkModel, float]:
    values = {k: v for k, v in table.items() if k in LINK_KEYS and k != "bandwidth_bps"}
    bandwidth = _number(table.get("bandwidth_bps", 0.0), f"{name}.bandwidth_bps")
    for key, value in values.items():
        if key != "distribution":
            _number(value, f"{name}.{key}")
    try:
        return LinkModel(**values), bandwidth
    except ValueError as exc:
        raise ScenarioError(str(exc).replace("link.", f"{name}.")) from None


def _store(value: Any) -> StoreSettings | None:
    table = dict(_table(value, "store"))
    _known(table, STORE_KEYS, "store.")
    if not table.pop("enabled", False):
        return None
    replication_keys = {"sync_interval_s", "sync_after_join_s", "piggyback_max_bytes"}
    replication = {k: table.pop(k) for k in list(table) if k in replication_keys}
    try:
        for key, number in {**replication, **table}.items():
            _number(number, f"store.{key}", positive=key != "sync_after_join_s")
        return StoreSettings(
            replication=ReplicationConfig(**replication),
            **{k: (int(v) if k == "max_sync_rounds" else v) for k, v in table.items()},
        )
    except (LocalProtocolError, TypeError) as exc:
        raise ScenarioError(str(exc)) from None


def _churn(value: Any) -> Churn | None:
    if value is None:
        return None
    table = _table(value, "churn")
    _known(table, CHURN_KEYS, "churn.")
    numbers = {
        k: _number(v, f"churn.{k}") for k, v in table.items() if k not in ("keep_state", "min_up")
    }
    keep = table.get("keep_state", True)
    if not isinstance(keep, bool):
        raise ScenarioError(f"churn.keep_state: {keep!r} must be true or false")
    return Churn(
        **numbers,
        keep_state=keep,
        min_up=_int(table.get("min_up", 2), "churn.min_up", minimum=1),
    )


def _action(value: Any, index: int) -> Action:
    where = f"events.{index}"
    table = _table(value, where)
    _known(table, ACTION_KEYS, f"{where}.")
    kind = table.get("action")
    if kind not in ACTIONS:
        raise ScenarioError(f"{where}.action: {kind!r} is not one of {', '.join(ACTIONS)}")
    at = _number(table.get("at", 0.0), f"{where}.at")
    params = {k: v for k, v in table.items() if k not in ("at", "action")}
    for key in ("count",):
        if key in params:
            _int(params[key], f"{where}.{key}", minimum=0)
    for key in ("fraction",):
        if key in params and not 0 <= _number(params[key], f"{where}.{key}") <= 1:
            raise ScenarioError(f"{where}.fraction must be in 0..1")
    for key in ("duration_s", "delay_s", "interval_s", "bandwidth_bps"):
        if key in params:
            _number(params[key], f"{where}.{key}")
    if kind == "link":
        _link(params, where)
    return Action(at=at, action=kind, params=params)

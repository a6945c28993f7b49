"""Daemon configuration: TOML file, then `NODENET_*` environment, then command-line flags.

One frozen dataclass per section; `load_config` merges the three sources and validates
everything before the daemon touches a socket. Every error names the key, the bad value,
where it came from, and what is accepted: "network.port = 70000 (from /etc/nodenet/
nodenet.toml): not a port; use 1-65535". Unknown keys are errors too, because a typo that
is silently ignored is a setting that silently does not apply.

With no file at all the daemon runs on 127.0.0.1:7950 with state under the user's data
directory: the embedded default for trying nodenet out.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nodenet.daemon.handlers import HandlerConfig
from nodenet.daemon.paths import (
    SYSTEM_CONFIG_PATH,
    default_config_path,
    default_runtime_dir,
    default_state_dir,
)
from nodenet.daemon.replication import StoreConfig
from nodenet.daemon.state import StateConfig
from nodenet.protocol.config import PROFILES, MembershipConfig
from nodenet.protocol.entries import MAX_VALUE_LIMIT
from nodenet.protocol.errors import LocalProtocolError
from nodenet.protocol.messages import Address, make_tags
from nodenet.protocol.replication import ReplicationConfig

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_PORT",
    "ApiConfig",
    "ConfigError",
    "DaemonConfig",
    "load_config",
    "parse_address",
]

DEFAULT_CONFIG_PATH = SYSTEM_CONFIG_PATH
DEFAULT_PORT = 7950
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The configuration is invalid; the message says which key and what to do."""


def parse_address(text: str, *, default_port: int = DEFAULT_PORT) -> Address:
    """`host`, `host:port`, `[v6]:port` or `v6` → Address (IP literals only, no DNS)."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after ']'")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, text)
    if "%" in host and not _SCOPE.fullmatch(host.partition("%")[2]):
        raise ValueError(
            f"{text!r}: the zone after '%' must be an interface name (letters, digits, '.',"
            " '_', '-'; at most 15)"
        )
    try:
        return Address(str(ipaddress.ip_address(host)), port)
    except (ValueError, LocalProtocolError) as exc:
        raise ValueError(
            f"{text!r} is not an IP address with an optional port"
            " (e.g. 10.0.0.5, 10.0.0.5:7950, [fd00::5]:7950); host names are not resolved"
        ) from exc


_SCOPE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # IFNAMSIZ is 16 with the NUL


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r:.80}: port {text!r:.12} is not in 1-65535")
    return int(text)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The local HTTP API."""

    socket: Path
    """Unix socket; file permissions (mode `socket_mode`, the directory's group) are the
    access control."""
    socket_mode: int = 0o660
    tcp: Address | None = None
    """Optional TCP listener, loopback only (e.g. 127.0.0.1:7951)."""
    tokens_file: Path | None = None
    """Bearer tokens for the TCP listener (`nodenet api-token`); /metrics and /health need
    none. Without tokens, TCP serves only those two."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything `nodenetd` needs to start."""

    state_dir: Path
    name: str
    tags: tuple[tuple[str, str], ...]
    bind: Address
    advertise: Address
    seeds: tuple[Address, ...]
    keyring_file: Path
    membership: MembershipConfig
    profile: str
    api: ApiConfig
    log_level: str = "info"
    max_clock_skew_s: float = 300.0
    shutdown_timeout_s: float = 15.0
    """Bound on a graceful stop (LEAVE, close streams); systemd's TimeoutStopSec must be
    longer."""
    leave_timeout_s: float = 5.0
    """How long a graceful stop waits for the LEAVE to spread."""
    store: StoreConfig = field(default_factory=StoreConfig)
    state: StateConfig = field(default_factory=StateConfig)
    handlers: tuple[HandlerConfig, ...] = ()
    source: str = "built-in defaults"

    @property
    def key_file(self) -> Path:
        """The node key."""
        return self.state_dir / "node.key"


# --- the schema: section → key → (type, description) ---------------------------------------

_MEMBERSHIP_KEYS = {f.name for f in fields(MembershipConfig)}
SCHEMA: dict[str, dict[str, str]] = {
    "node": {
        "name": "string: human name, shown in `nodenet peers` (default: host name)",
        "state_dir": "path: key, keyring and state (default: /var/lib/nodenet as root)",
        "tags": "table of string → string, at most 512 bytes encoded",
    },
    "network": {
        "bind": "IP address to listen on (default 127.0.0.1; :: or 0.0.0.0 for all)",
        "port": "UDP and TCP port, 1-65535 (default 7950)",
        "advertise": "address:port others should use to reach this node (default: bind)",
        "seeds": "list of address:port to join at start and retry while alone",
    },
    "cluster": {
        "keyring_file": "path: cluster keys, one base64 key per line, primary first",
        "profile": f"timing profile: {', '.join(PROFILES)}",
        "max_clock_skew_s": "seconds of clock difference tolerated between nodes (≥ 1)",
    },
    "membership": {
        k: "override of the profile's value (see docs/membership.md)" for k in _MEMBERSHIP_KEYS
    },
    "api": {
        "socket": "path of the unix socket",
        "socket_mode": 'octal string such as "0660"',
        "tcp": "optional 127.0.0.1:port listener (empty: none)",
        "tokens_file": "bearer tokens for the TCP listener (default <state_dir>/api-tokens)",
    },
    "store": {
        "max_value": "largest value in bytes (default 65536, at most 1048576); cluster-wide",
        "tombstone_ttl_s": "seconds deletes are remembered (default 7 days)",
        "sync_interval_s": "seconds between anti-entropy rounds (default 10)",
        "piggyback_max_bytes": "entries up to this size ride on gossip (64-1200, default 1000)",
    },
    "state": {
        "max_map_size": "bytes the state database may grow to (default 64 GiB, at least 64 MiB);"
        " address space, not disk: the file grows with the data",
    },
    "log": {"level": f"one of {', '.join(LOG_LEVELS)}"},
    "daemon": {
        "shutdown_timeout_s": "seconds a graceful stop may take",
        "leave_timeout_s": "seconds to wait for the LEAVE to spread",
    },
}


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    euid: int | None = None,
) -> DaemonConfig:
    """Load, merge and validate. `overrides` are flags as {"section.key": value}."""
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    raw: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    source = "built-in defaults"
    # A file named by --config or $NODENET_CONFIG must exist: running on built-in defaults
    # (loopback, a new cluster key) because of a typo in a path would be a silent surprise.
    named = "--config" if path is not None else "$NODENET_CONFIG"
    explicit = path is not None or bool(environ.get("NODENET_CONFIG"))
    file = path or default_config_path(environ=environ, euid=euid)
    if explicit or file.exists():
        raw = _read_toml(file, named if explicit else None)
        source = str(file)
        for section, values in raw.items():
            for key in values:
                origin[f"{section}.{key}"] = str(file)
    for name, value in environ.items():
        if not name.startswith("NODENET_") or name in _ENV_IGNORED:
            continue
        section, key = _env_key(name)
        raw.setdefault(section, {})[key] = _from_env(section, key, value, name)
        origin[f"{section}.{key}"] = f"environment {name}"
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
        origin[dotted] = "command line"
    _check_known(raw, origin)
    config = _build(raw, origin, source, euid, environ)
    handlers = _handlers(raw.get("handlers", []), source)  # type: ignore[arg-type]
    return replace(config, handlers=handlers)


_ENV_IGNORED = {
    "NODENET_API_TOKEN",
    "NODENET_API",
    "NODENET_STATE_DIR",
    "NODENET_CONFIG",
    "NODENET_FUZZ_ITERATIONS",
    "NODENET_FUZZ_SEED",
    "NODENET_HYPOTHESIS_PROFILE",
}


def _env_key(name: str) -> tuple[str, str]:
    rest = name[len("NODENET_") :].lower()
    for section in SCHEMA:
        if rest.startswith(section + "_"):
            return section, rest[len(section) + 1 :]
    raise ConfigError(
        f"environment variable {name} does not name a setting: expected NODENET_<SECTION>_<KEY>"
        f" with a section among {', '.join(SCHEMA)}"
    )


_ENV_TEXT = {
    "node.name",
    "node.state_dir",
    "network.bind",
    "network.advertise",
    "cluster.keyring_file",
    "cluster.profile",
    "api.socket",
    "api.socket_mode",
    "api.tcp",
    "api.tokens_file",
    "log.level",
}
"""Settings that are text: their environment values are taken as they are, not as TOML."""


def _from_env(section: str, key: str, value: str, name: str) -> Any:
    """Environment values are strings; turn lists, tables and numbers into TOML values."""
    if section == "node" and key == "tags":
        pairs = [pair.strip() for pair in value.split(",") if pair.strip()]
        bad = [pair for pair in pairs if "=" not in pair]
        if bad:
            raise ConfigError(
                f"environment variable {name}: {bad[0]!r:.40} is not key=value;"
                " expected e.g. role=web,dc=fra1"
            )
        return dict(pair.split("=", 1) for pair in pairs)
    if section == "network" and key == "seeds":
        return [s for s in value.split(",") if s.strip()]
    if f"{section}.{key}" in _ENV_TEXT:
        return value  # NODENET_NODE_NAME=123 names a node "123"
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value  # a bare string


def _read_toml(path: Path, named_by: str | None = None) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = f"named by {named_by}; write one with `nodenet init`, or do not set {named_by}"
        raise ConfigError(
            f"config file {path} does not exist ({hint if named_by else 'it vanished'})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for section, values in data.items():
        if section == "handlers":
            if not isinstance(values, list) or not all(isinstance(h, dict) for h in values):
                raise ConfigError(f"config file {path}: handlers must be [[handlers]] tables")
        elif not isinstance(values, dict):
            raise ConfigError(f"config file {path}: `{section}` must be a [section] table")
    return data


def _check_known(raw: Mapping[str, Any], origin: Mapping[str, str]) -> None:
    for section, values in raw.items():
        if section == "handlers":
            continue
        if section not in SCHEMA:
            first = f"{section}.{next(iter(values), '')}"
            raise ConfigError(
                f"unknown section [{section}] (from {origin.get(first, 'the config file')});"
                f" known sections: {', '.join(SCHEMA)}"
            )
        for key in values:
            if key not in SCHEMA[section]:
                known = ", ".join(sorted(SCHEMA[section]))
                raise ConfigError(
                    f"unknown key {section}.{key} (from {origin.get(f'{section}.{key}', '?')});"
                    f" known keys in [{section}]: {known}"
                )


def _membership_accepts(profile: str, key: str, value: Any) -> bool:
    try:
        PROFILES[profile].with_changes(**{key: value})
    except (LocalProtocolError, TypeError):
        return False
    return True


def _as_toml(value: Any) -> str:
    """A value as it would be written in the config file (true, "text"), at most 80 chars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list):
        text = "[" + ", ".join(_as_toml(v) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Reader:
    """Typed access to the merged values, with errors that name key and origin."""

    def __init__(self, raw: Mapping[str, Mapping[str, Any]], origin: Mapping[str, str]) -> None:
        self.raw = raw
        self.origin = origin

    def has(self, dotted: str) -> bool:
        section, _, key = dotted.partition(".")
        return key in self.raw.get(section, {})

    def get(self, dotted: str, default: Any) -> Any:
        section, _, key = dotted.partition(".")
        return self.raw.get(section, {}).get(key, default)

    def fail(self, dotted: str, value: Any, accepted: str) -> ConfigError:
        where = self.origin.get(dotted, "built-in default")
        return ConfigError(f"{dotted} = {_as_toml(value)} (from {where}): {accepted}")

    def text(self, dotted: str, default: str) -> str:
        value = self.get(dotted, default)
        if not isinstance(value, str):
            raise self.fail(dotted, value, "must be a string")
        return value

    def number(self, dotted: str, default: float, *, minimum: float) -> float:
        value = self.get(dotted, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(dotted, value, f"must be a number ≥ {minimum}")
        return float(value)

    def address(self, dotted: str, default: str, port: int) -> Address:
        value = self.get(dotted, default)
        if not isinstance(value, str):
            raise self.fail(dotted, value, 'must be a string such as "10.0.0.5:7950"')
        try:
            return parse_address(value, default_port=port)
        except ValueError as exc:
            raise self.fail(dotted, value, str(exc)) from None

    def path(self, dotted: str, default: Path) -> Path:
        value = self.get(dotted, None)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(dotted, value, "must be a non-empty path")
        return Path(value).expanduser()


def _build(
    raw: Mapping[str, Mapping[str, Any]],
    origin: Mapping[str, str],
    source: str,
    euid: int,
    environ: Mapping[str, str],
) -> DaemonConfig:
    r = _Reader(raw, origin)
    state_dir = r.path("node.state_dir", default_state_dir(environ=environ, euid=euid))
    name = r.text("node.name", socket.gethostname())
    if not name or len(name) > 128:
        raise r.fail("node.name", name, "must be 1-128 characters")
    if not name.isprintable():
        raise r.fail("node.name", name, "must not contain control characters (newline, escape…)")

    tags_value = r.get("node.tags", {})
    if not isinstance(tags_value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags_value.items()
    ):
        raise r.fail("node.tags", tags_value, 'must be a table of strings, e.g. { role = "web" }')
    try:
        tags = make_tags({**tags_value, "name": name})
    except LocalProtocolError as exc:
        raise r.fail("node.tags", tags_value, str(exc)) from None

    port_value = r.get("network.port", DEFAULT_PORT)
    if (
        isinstance(port_value, bool)
        or not isinstance(port_value, int)
        or not 1 <= port_value <= 65535
    ):
        raise r.fail("network.port", port_value, "not a port; use 1-65535")
    bind = r.address("network.bind", "127.0.0.1", port_value)
    bind = Address(bind.host, port_value)
    if r.has("network.advertise") and r.get("network.advertise", ""):
        advertise = r.address("network.advertise", "", port_value)
        ip = ipaddress.ip_address(advertise.host.partition("%")[0])
        if ip.is_unspecified or ip.is_multicast:
            raise r.fail(
                "network.advertise",
                r.get("network.advertise", ""),
                "must be this node's own address, the one other nodes can reach it at",
            )
    else:
        if ipaddress.ip_address(bind.host).is_unspecified:
            raise r.fail(
                "network.bind",
                bind.host,
                "listening on all addresses needs network.advertise: the address other nodes"
                " should use to reach this one",
            )
        advertise = bind

    seeds_value = r.get("network.seeds", [])
    if not isinstance(seeds_value, list) or not all(isinstance(s, str) for s in seeds_value):
        raise r.fail("network.seeds", seeds_value, 'must be a list of "address:port" strings')
    seeds = []
    for seed in seeds_value:
        try:
            seeds.append(parse_address(seed))
        except ValueError as exc:
            raise r.fail("network.seeds", seed, str(exc)) from None

    profile = r.text("cluster.profile", "lan")
    if profile not in PROFILES:
        raise r.fail("cluster.profile", profile, f"use one of {', '.join(PROFILES)}")
    overrides = dict(raw.get("membership", {}))
    try:
        membership = PROFILES[profile].with_changes(**overrides)
    except (LocalProtocolError, TypeError) as exc:
        # Name the setting that is wrong (not merely the first one given), without the
        # protocol's own "membership.key: value" prefix.
        key = next(
            (k for k in overrides if not _membership_accepts(profile, k, overrides[k])),
            next(iter(overrides), ""),
        )
        reason = str(exc)
        for prefix in (f"membership.{key}: {overrides.get(key)!r} ", f"membership.{key}: "):
            reason = reason.removeprefix(prefix)
        raise r.fail(f"membership.{key}", overrides.get(key), reason) from None

    runtime = default_runtime_dir(environ=environ, euid=euid) or state_dir
    socket_mode_text = r.get("api.socket_mode", "0660")
    try:
        socket_mode = int(str(socket_mode_text), 8)
    except ValueError:
        raise r.fail(
            "api.socket_mode", socket_mode_text, 'must be an octal mode such as "0660"'
        ) from None
    if not 0 <= socket_mode <= 0o777:
        raise r.fail("api.socket_mode", socket_mode_text, "must be within 0000-0777")
    tcp_text = r.get("api.tcp", "")
    if isinstance(tcp_text, int) and not isinstance(tcp_text, bool):
        tcp_text = str(tcp_text)  # api.tcp = 7951 in TOML
    tcp = None
    if isinstance(tcp_text, str) and tcp_text.strip().isascii() and tcp_text.strip().isdigit():
        try:  # a bare port: on 127.0.0.1, as --help says
            tcp = parse_address(f"127.0.0.1:{tcp_text.strip()}")
        except ValueError as exc:
            raise r.fail("api.tcp", tcp_text, str(exc)) from None
    elif tcp_text:
        tcp = r.address("api.tcp", "", 7951)
    if tcp is not None and not ipaddress.ip_address(tcp.host).is_loopback:
        raise r.fail("api.tcp", tcp_text, "the API listens on loopback only (127.0.0.1 or ::1)")
    api = ApiConfig(
        socket=r.path("api.socket", runtime / "api.sock"),
        socket_mode=socket_mode,
        tcp=tcp,
        tokens_file=r.path("api.tokens_file", state_dir / "api-tokens"),
    )

    level = r.text("log.level", "info").lower()
    if level not in LOG_LEVELS:
        raise r.fail("log.level", level, f"use one of {', '.join(LOG_LEVELS)}")

    max_value = r.get("store.max_value", 65536)
    if (
        isinstance(max_value, bool)
        or not isinstance(max_value, int)
        or not 1 <= max_value <= MAX_VALUE_LIMIT
    ):
        raise r.fail(
            "store.max_value", max_value, f"must be an integer in 1..{MAX_VALUE_LIMIT} bytes"
        )
    try:
        replication = ReplicationConfig(
            sync_interval_s=r.number("store.sync_interval_s", 10.0, minimum=0.1),
            piggyback_max_bytes=int(r.number("store.piggyback_max_bytes", 1000, minimum=64)),
        )
    except LocalProtocolError as exc:
        raise r.fail(
            "store.piggyback_max_bytes", r.get("store.piggyback_max_bytes", 1000), str(exc)
        ) from None
    store = StoreConfig(
        max_value=max_value,
        tombstone_ttl_s=r.number("store.tombstone_ttl_s", 7 * 24 * 3600.0, minimum=60.0),
        replication=replication,
    )

    default_state = StateConfig()
    max_map_size = r.get("state.max_map_size", default_state.max_map_size)
    if (
        isinstance(max_map_size, bool)
        or not isinstance(max_map_size, int)
        or max_map_size < default_state.map_size
    ):
        raise r.fail(
            "state.max_map_size",
            max_map_size,
            f"must be a number of bytes ≥ {default_state.map_size} (64 MiB), e.g. 137438953472"
            " for 128 GiB",
        )

    return DaemonConfig(
        store=store,
        state=replace(default_state, max_map_size=max_map_size),
        state_dir=state_dir,
        name=name,
        tags=tags,
        bind=bind,
        advertise=advertise,
        seeds=tuple(seeds),
        keyring_file=r.path("cluster.keyring_file", state_dir / "keyring"),
        membership=membership,
        profile=profile,
        api=api,
        log_level=level,
        max_clock_skew_s=r.number("cluster.max_clock_skew_s", 300.0, minimum=1.0),
        shutdown_timeout_s=r.number("daemon.shutdown_timeout_s", 15.0, minimum=1.0),
        leave_timeout_s=r.number("daemon.leave_timeout_s", 5.0, minimum=0.0),
        source=source,
    )


HANDLER_KEYS = {
    "name": "label in logs and metrics (default: the prefix)",
    "prefix": 'run for entries whose key starts with this (required; "" for all)',
    "command": 'argv list, e.g. ["/usr/local/bin/on-config", "--reload"] (no shell)',
    "timeout_s": "seconds before the command is killed (default 30)",
    "concurrency": "runs at once (default 2)",
    "queue": "entries waiting; more are dropped and counted (default 1000)",
    "on_delete": "also run for deletes (default true)",
    "local": "also run for writes made through this node (default true)",
}


def _handlers(tables: list[dict[str, Any]], source: str) -> tuple[HandlerConfig, ...]:
    """Validate the [[handlers]] tables."""
    handlers = []
    names: set[str] = set()
    for index, table in enumerate(tables):
        where = f"handlers[{index}]"
        unknown = set(table) - set(HANDLER_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key {where}.{sorted(unknown)[0]} (from {source}); known keys:"
                f" {', '.join(sorted(HANDLER_KEYS))}"
            )
        prefix = table.get("prefix")
        if not isinstance(prefix, str):
            raise ConfigError(f'{where}.prefix (from {source}): required, a string ("" for all)')
        command = table.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) and a for a in command)
        ):
            raise ConfigError(
                f"{where}.command = {command!r} (from {source}): must be a non-empty list of"
                " strings, the program first (no shell)"
            )
        name = table.get("name", prefix or "all")
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(
                f"{where}.name = {name!r} (from {source}): must be unique and non-empty"
            )
        names.add(name)
        numbers = {}
        for key, default, minimum in (
            ("timeout_s", 30.0, 0.1),
            ("concurrency", 2, 1),
            ("queue", 1000, 1),
        ):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
                raise ConfigError(
                    f"{where}.{key} = {value!r} (from {source}): must be a number ≥ {minimum}"
                )
            if key != "timeout_s" and not isinstance(value, int):
                raise ConfigError(f"{where}.{key} = {value!r} (from {source}): must be an integer")
            numbers[key] = value
        flags = {}
        for key in ("on_delete", "local"):
            value = table.get(key, True)
            if not isinstance(value, bool):
                raise ConfigError(
                    f"{where}.{key} = {value!r} (from {source}): must be true or false"
                )
            flags[key] = value
        handlers.append(
            HandlerConfig(
                name=name,
                prefix=prefix,
                command=tuple(command),
                timeout_s=float(numbers["timeout_s"]),
                concurrency=int(numbers["concurrency"]),
                queue=int(numbers["queue"]),
                **flags,
            )
        )
    return tuple(handlers)

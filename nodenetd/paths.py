"""Where nodenet keeps things when the config does not say.

Standard library only: the CLI imports this (to find the API socket) without importing the
rest of the daemon.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "SYSTEM_API_SOCKET",
    "SYSTEM_CONFIG_PATH",
    "default_api_socket",
    "default_config_path",
    "default_runtime_dir",
    "default_state_dir",
]

SYSTEM_CONFIG_PATH = Path("/etc/nodenet/nodenet.toml")

SYSTEM_STATE_DIR = Path("/var/lib/nodenet")
SYSTEM_RUNTIME_DIR = Path("/run/nodenet")
SYSTEM_API_SOCKET = SYSTEM_RUNTIME_DIR / "api.sock"
"""Where the packaged service's daemon listens (systemd's RuntimeDirectory)."""


def default_state_dir(*, environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """`$STATE_DIRECTORY` under systemd, /var/lib/nodenet for root, else the XDG data dir."""
    env = os.environ if environ is None else environ
    if systemd := env.get("STATE_DIRECTORY"):
        return Path(systemd.split(":")[0])
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_STATE_DIR
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "nodenet"


def default_runtime_dir(
    *, environ: Mapping[str, str] | None = None, euid: int | None = None
) -> Path | None:
    """`$RUNTIME_DIRECTORY` under systemd, /run/nodenet for root, `$XDG_RUNTIME_DIR/nodenet`
    for users that have one; None means "use the state directory"."""
    env = os.environ if environ is None else environ
    if systemd := env.get("RUNTIME_DIRECTORY"):
        return Path(systemd.split(":")[0])
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_RUNTIME_DIR
    if xdg := env.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "nodenet"
    return None


def default_api_socket(*, environ: Mapping[str, str] | None = None) -> Path:
    """The socket a daemon started without `api.socket` listens on, for this user."""
    runtime = default_runtime_dir(environ=environ)
    return (runtime or default_state_dir(environ=environ)) / "api.sock"


def default_config_path(
    *, environ: Mapping[str, str] | None = None, euid: int | None = None
) -> Path:
    """`$NODENET_CONFIG`, /etc/nodenet/nodenet.toml for root, else the XDG config dir's
    nodenet/nodenet.toml (where `nodenet init` writes it for a user)."""
    env = os.environ if environ is None else environ
    if explicit := env.get("NODENET_CONFIG"):
        return Path(explicit)
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_CONFIG_PATH
    config_home = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "nodenet" / "nodenet.toml"

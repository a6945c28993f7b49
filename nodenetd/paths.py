"""Where the daemon keeps things when the config does not say."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_state_dir"]

SYSTEM_STATE_DIR = Path("/var/lib/nodenet")


def default_state_dir() -> Path:
    """`$STATE_DIRECTORY` under systemd, /var/lib/nodenet for root, else the XDG data dir."""
    if systemd := os.environ.get("STATE_DIRECTORY"):
        return Path(systemd.split(":")[0])
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "nodenet"

"""The files `nodenet init` writes besides the node key: the TOML config and the keyring.

Both are written with `nodenet.daemon.files.write_atomically`, so an interrupted `init`
leaves either the old file or the new one, never half of one. The keyring holds the cluster's
secret keys and is created with mode 0600. The config only uses keys that
`nodenet.daemon.config.load_config` accepts; a test loads what is written with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nodenet.daemon.files import write_atomically

__all__ = ["render_config", "toml_string", "write_atomically"]


def toml_string(text: str) -> str:
    """`text` as a TOML basic string (quotes, backslashes and control characters escaped)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def render_config(
    *,
    name: str,
    state_dir: Path,
    bind: str,
    port: int,
    advertise: str | None,
    seeds: Sequence[str],
    keyring_file: Path,
) -> str:
    """The config file text for these settings (all paths should be absolute)."""
    network = [f"bind = {toml_string(bind)}", f"port = {port}"]
    if advertise:
        network.append(f"advertise = {toml_string(advertise)}")
    network.append(f"seeds = [{', '.join(toml_string(s) for s in seeds)}]")
    lines = [
        "# nodenet configuration, written by `nodenet init`.",
        "# Start the node with: nodenetd --config <this file>",
        "",
        "[node]",
        f"name = {toml_string(name)}",
        f"state_dir = {toml_string(str(state_dir))}",
        "",
        "[network]",
        *network,
        "",
        "[cluster]",
        f"keyring_file = {toml_string(str(keyring_file))}",
    ]
    return "\n".join(lines) + "\n"

"""`nodenetd`: the daemon's command line.

This version sets up the node identity only; the network services (membership, store,
local API) are being built (issue 4) and the command says so instead of pretending.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

from nodenet.daemon.keyfile import load_or_create_node_key
from nodenet.daemon.paths import default_state_dir
from nodenet.protocol.identity import KeyFileError, node_id_of

__all__ = ["main"]

EXIT_SOFTWARE = 70  # sysexits EX_SOFTWARE: the requested service is not available


def main(argv: list[str] | None = None) -> int:
    """Entry point of `nodenetd`."""
    parser = argparse.ArgumentParser(prog="nodenetd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nodenetd {version('nodenetd')}")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="where node.key lives (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or default_state_dir()
    try:
        key, created = load_or_create_node_key(state_dir / "node.key")
    except KeyFileError as exc:
        print(f"nodenetd: {exc}", file=sys.stderr)
        return 1
    print(f"node id {node_id_of(key).text} ({'new' if created else 'existing'} key in {state_dir})")
    print("nodenetd: network services are not implemented in this version yet", file=sys.stderr)
    return EXIT_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())

"""Daemons running inside the test's Trio loop, with an HTTP client on their API socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from nodenet.daemon.config import load_config
from nodenet.daemon.daemon import Daemon
from support.daemons import node_dir


class Running:
    """A daemon started in the test's nursery, with an HTTP client on its socket."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(daemon.config.api.socket)),
            base_url="http://nodenetd",
            timeout=10,
        )

    @property
    def address(self) -> str:
        return str(self.daemon.config.advertise)


async def start(nursery: trio.Nursery, root: Path, name: str, **options: Any) -> Running:
    config = load_config(node_dir(root, name, **options), environ={})
    daemon = Daemon(config)
    await nursery.start(daemon.run)
    return Running(daemon)

"""Daemons running inside the test's Trio loop, with an HTTP client on their API socket."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

from nodenet.daemon.config import load_config
from nodenet.daemon.daemon import Daemon
from support.daemons import node_dir, short_tmpdir


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


@contextlib.asynccontextmanager
async def two_daemons(**options: Any) -> AsyncIterator[tuple[Running, Running]]:
    """In-process daemons "a" and "b" (not joined; `options` go to `start`), under a short
    temporary root, stopped gracefully and removed afterwards; the whole use is bounded."""
    root = short_tmpdir()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, root, "a", **options)
                b = await start(nursery, root, "b", **options)
                yield a, b
                for node in (a, b):
                    await node.http.aclose()
                    node.daemon.request_shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

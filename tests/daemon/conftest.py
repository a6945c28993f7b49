"""Fixtures for daemon tests: in-process daemons on real loopback sockets."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
import trio
from support.daemons import short_tmpdir
from support.inprocess import Running, start


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Running, Running]]:
    """Two daemons "a" and "b" (not joined), stopped gracefully after the test."""
    root = short_tmpdir()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, root, "a")
                b = await start(nursery, root, "b")
                yield a, b
                for node in (a, b):
                    await node.http.aclose()
                    node.daemon.request_shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

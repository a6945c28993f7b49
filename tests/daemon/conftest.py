"""Fixtures for daemon tests: in-process daemons on real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.inprocess import Running, two_daemons


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Running, Running]]:
    """Two daemons "a" and "b" (not joined), stopped gracefully after the test."""
    async with two_daemons() as nodes:
        yield nodes

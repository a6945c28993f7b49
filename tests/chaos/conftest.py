"""Chaos tests: real daemons under faults. Every nftables table they create is removed, even
if a test is interrupted, and every process they start is killed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import nft


@pytest.fixture(scope="session", autouse=True)
def _no_rules_left_behind() -> Iterator[None]:
    yield
    if nft.unavailable() is None:
        left = nft.remove_leftovers()
        assert not left, f"nftables tables left behind (now removed): {left}"


@pytest.fixture
def firewall() -> None:
    """Skip, saying exactly why, when nftables rules cannot be installed here."""
    missing = nft.unavailable()
    if missing:
        pytest.skip(f"cannot filter loopback traffic: {missing}")

"""Test-wide settings and fixtures: hypothesis profiles (`NODENET_HYPOTHESIS_PROFILE=soak`
for long runs), and the scratch directory and process list of the tests that run real
daemons."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from support.daemons import DaemonProcess, remove, short_tmpdir

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "soak", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("NODENET_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def root() -> Iterator[Path]:
    """A short scratch directory (unix socket paths must stay under 108 bytes), removed
    afterwards unless NODENET_KEEP_TEST_DIRS is set."""
    directory = short_tmpdir()
    yield directory
    if not os.environ.get("NODENET_KEEP_TEST_DIRS"):
        remove(directory)


@pytest.fixture
def processes() -> Iterator[list[DaemonProcess]]:
    """Daemons a test started (append them): all killed at the end, whatever happened."""
    started: list[DaemonProcess] = []
    yield started
    for process in started:
        process.kill()

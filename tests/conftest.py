"""Test-wide settings: hypothesis profiles (`NODENET_HYPOTHESIS_PROFILE=soak` for long runs)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "soak", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("NODENET_HYPOTHESIS_PROFILE", "ci"))

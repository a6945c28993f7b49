"""Lifeguard local health awareness (memberlist's `awareness.go`).

A node that misses ACKs may be the slow one. It keeps a score in 0..max-1: failed probes
without the expected NACKs and having to refute its own suspicion raise it, successful
probes lower it. Probe interval and timeout are multiplied by score+1, so an overloaded
node probes less often and waits longer instead of accusing healthy members.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """The local health score and the timeout scaling it implies."""

    __slots__ = ("_max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self._max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Add `delta`, clamped to 0..max-1; return the new score."""
        self.score = min(max(self.score + delta, 0), self._max - 1)
        return self.score

    def scale(self, timeout_s: float) -> float:
        """`timeout_s` stretched by the current score."""
        return timeout_s * (self.score + 1)

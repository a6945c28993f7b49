"""Lifeguard dynamic suspicion (memberlist's `suspicion.go`), sans-IO.

A suspicion starts with the maximum timeout and shrinks towards the minimum as *distinct*
members independently confirm it, because several independent accusers are strong evidence
while one accuser may itself be the broken one. The deadline is absolute (`now`-based) and
read by the membership core's timer; nothing here sleeps.
"""

from __future__ import annotations

from nodenet.protocol.config import remaining_suspicion_time
from nodenet.protocol.identity import NodeId

__all__ = ["Suspicion"]


class Suspicion:
    """One running suspicion about one member."""

    __slots__ = ("_confirmations", "deadline", "expected", "max_s", "min_s", "start")

    def __init__(
        self, *, accuser: NodeId, expected: int, min_s: float, max_s: float, now: float
    ) -> None:
        self._confirmations = {accuser}
        self.expected = expected
        self.min_s = min_s
        self.max_s = max_s
        self.start = now
        self.deadline = now + (max_s if expected >= 1 else min_s)

    @property
    def confirmations(self) -> int:
        """Distinct confirmations beyond the first accuser."""
        return len(self._confirmations) - 1

    def confirm(self, accuser: NodeId, now: float) -> bool:
        """Record an accusation; True if it was new (and the deadline may have moved)."""
        if self.confirmations >= self.expected or accuser in self._confirmations:
            return False
        self._confirmations.add(accuser)
        remaining = remaining_suspicion_time(
            self.confirmations, self.expected, now - self.start, self.min_s, self.max_s
        )
        self.deadline = now + max(remaining, 0.0)
        return True

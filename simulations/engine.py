"""The discrete-event engine: a heap of (time, seq, callback), one seeded Random.

No Trio and no wall clock: virtual time jumps from event to event, so ten virtual minutes
of a hundred nodes take seconds, and the same seed gives the same run, event for event.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

__all__ = ["Simulator"]


class Simulator:
    """Virtual time and the events scheduled in it."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.events_run = 0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()

    def fork_rng(self) -> random.Random:
        """An independent generator derived from the seed (one per node keeps a node's
        choices from shifting when another node's behaviour changes)."""
        return random.Random(self.rng.getrandbits(64))

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` at virtual time `when` (never in the past)."""
        heapq.heappush(self._queue, (max(when, self.now), next(self._order), callback, args))

    def after(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` `delay` seconds from now."""
        self.at(self.now + delay, callback, *args)

    def run_until(self, until: float, max_events: int = 50_000_000) -> None:
        """Run every event up to virtual time `until`, then set the clock to it."""
        queue = self._queue
        budget = max_events
        while queue and queue[0][0] <= until:
            when, _, callback, args = heapq.heappop(queue)
            self.now = when
            callback(*args)
            budget -= 1
            if budget == 0:
                raise RuntimeError(f"more than {max_events} events before t={until}: runaway?")
        self.events_run += max_events - budget
        self.now = max(self.now, until)

    def run_while(self, keep_going: Callable[[], bool], *, step: float, limit: float) -> float:
        """Advance in `step`s while `keep_going()`; stop at virtual time `limit`. Returns now."""
        while keep_going() and self.now < limit:
            self.run_until(min(self.now + step, limit))
        return self.now

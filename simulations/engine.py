"""The discrete-event engine: a heap of (time, seq, callback), one seeded Random.

No Trio and no wall clock: virtual time jumps from event to event, so ten virtual minutes
of a hundred nodes take seconds, and the same seed gives the same run, event for event.
Every source of randomness in a run is derived from the one seed (`fork_rng`).
"""

from __future__ import annotations

import gc
import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

__all__ = ["Simulator"]

CHUNK = 4096  # events between looks at the clock limit, progress hook and stop flag
GC_THRESHOLD = 100_000
"""During a run, the cyclic garbage collector looks at young objects after this many
allocations instead of Python's default 700. A run makes and drops millions of small
containers (events, datagrams, timer entries) that point into the long-lived member
tables, and each young collection touches what they point to: at 10,000 nodes, 10⁸
members spread over 11 GB, that was a third of the run time. Reference counting still
frees everything at once; only garbage cycles wait longer (a few MB of them at most)."""


class Simulator:
    """Virtual time and the events scheduled in it."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.events_run = 0
        self.progress: Callable[[float], None] | None = None
        """Called with the virtual time every few thousand events (a progress bar)."""
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._stopped = False

    def fork_rng(self) -> random.Random:
        """An independent generator derived from the seed (one per node keeps a node's
        choices from shifting when another node's behaviour changes)."""
        return random.Random(self.rng.getrandbits(64))

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` at virtual time `when` (never in the past)."""
        if when < self.now:
            when = self.now
        heapq.heappush(self._queue, (when, next(self._order), callback, args))

    def after(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` `delay` seconds from now."""
        self.at(self.now + delay, callback, *args)

    def stop(self) -> None:
        """Make the current `run_until` return after the event being run."""
        self._stopped = True

    @property
    def pending(self) -> int:
        """Events scheduled and not yet run."""
        return len(self._queue)

    def run_until(self, until: float, max_events: int = 500_000_000) -> None:
        """Run every event up to virtual time `until`, then set the clock to it (unless
        `stop` was called: then the clock stays at the last event)."""
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], GC_THRESHOLD), *threshold[1:])
        try:
            self._run_until(until, max_events)
        finally:
            gc.set_threshold(*threshold)

    def _run_until(self, until: float, max_events: int) -> None:
        queue = self._queue
        pop = heapq.heappop
        ran = 0
        self._stopped = False
        while queue and queue[0][0] <= until:
            for _ in range(CHUNK):
                if not queue or queue[0][0] > until:
                    break
                when, _, callback, args = pop(queue)
                self.now = when
                callback(*args)
                ran += 1
                if self._stopped:
                    break
            if self._stopped:
                break
            if ran > max_events:
                self.events_run += ran
                raise RuntimeError(f"more than {max_events} events before t={until}: runaway?")
            if self.progress is not None:
                self.progress(self.now)
        self.events_run += ran
        if not self._stopped:
            self.now = max(self.now, until)

    def run_while(self, keep_going: Callable[[], bool], *, step: float, limit: float) -> float:
        """Advance in `step`s while `keep_going()`; stop at virtual time `limit`. Returns now."""
        while keep_going() and self.now < limit:
            self.run_until(min(self.now + step, limit))
        return self.now

"""Hybrid logical clock (Kulkarni et al. 2014): 48-bit milliseconds ‖ 16-bit counter.

An HLC value is close to wall-clock time (so entries sort by when they were written, and
people can read it) yet never goes backwards and always orders a write after every write
its author had seen, whatever the clocks say. Ties in the millisecond are broken by the
counter; if the counter would overflow, the millisecond part moves on by one.

`now` and the wall clock are passed in: nothing here reads a clock.
"""

from __future__ import annotations

from nodenet.protocol.errors import LocalProtocolError

__all__ = ["COUNTER_BITS", "HybridClock", "hlc_millis", "pack_hlc", "unpack_hlc"]

COUNTER_BITS = 16
COUNTER_MAX = (1 << COUNTER_BITS) - 1
MILLIS_MAX = (1 << 48) - 1


def pack_hlc(millis: int, counter: int) -> int:
    """Combine wall milliseconds and a counter into one 64-bit value."""
    if not 0 <= millis <= MILLIS_MAX or not 0 <= counter <= COUNTER_MAX:
        raise LocalProtocolError(f"hlc parts out of range: {millis} ms, counter {counter}")
    return millis << COUNTER_BITS | counter


def unpack_hlc(hlc: int) -> tuple[int, int]:
    """Split an HLC into (milliseconds, counter)."""
    return hlc >> COUNTER_BITS, hlc & COUNTER_MAX


def hlc_millis(hlc: int) -> int:
    """The wall-clock milliseconds of an HLC value."""
    return hlc >> COUNTER_BITS


class HybridClock:
    """One node's HLC. `last` is the newest value issued or observed (persist it)."""

    __slots__ = ("last",)

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def now(self, wall_ms: int) -> int:
        """A new value for a local event (a write), later than every value seen so far."""
        millis, counter = unpack_hlc(self.last)
        if wall_ms > millis:
            millis, counter = wall_ms, 0
        else:
            counter += 1
        return self._set(millis, counter)

    def observe(self, remote: int, wall_ms: int) -> int:
        """Take a value from another node into account (an entry received)."""
        mine, my_counter = unpack_hlc(self.last)
        theirs, their_counter = unpack_hlc(remote)
        millis = max(mine, theirs, wall_ms)
        if millis == mine == theirs:
            counter = max(my_counter, their_counter) + 1
        elif millis == mine:
            counter = my_counter + 1
        elif millis == theirs:
            counter = their_counter + 1
        else:
            counter = 0
        return self._set(millis, counter)

    def _set(self, millis: int, counter: int) -> int:
        if counter > COUNTER_MAX:  # 65,536 events in one millisecond: borrow the next one
            millis, counter = millis + 1, 0
        self.last = pack_hlc(millis, counter)
        return self.last

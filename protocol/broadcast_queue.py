"""Transmit-limited broadcast queue (memberlist's `TransmitLimitedQueue`, `queue.go`).

Updates wait here to be piggybacked on outgoing datagrams. Each is sent at most
`retransmit_limit(mult, N)` times; those sent fewest times go first, and among equals the
newest first, so fresh news spreads before stale news. A new update with the same key
(for membership: the node it is about) replaces the queued one, which it supersedes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from operator import attrgetter

from nodenet.protocol.config import retransmit_limit
from nodenet.protocol.messages import Message, encode_message

__all__ = ["BroadcastQueue"]


@dataclass(slots=True, eq=False)
class _Item:
    key: Hashable | None
    message: Message
    size: int
    rank: int
    """Minus the order of queueing: among equals, the newest (lowest rank) goes first."""
    transmits: int = 0


_URGENCY = attrgetter("transmits", "rank")


class BroadcastQueue:
    """Pending updates with their transmit counts."""

    __slots__ = ("_by_key", "_items", "_max", "_mult", "_order")

    def __init__(self, *, retransmit_mult: int, max_items: int) -> None:
        self._mult = retransmit_mult
        self._max = max_items
        self._items: list[_Item] = []
        """Most urgent first, always: fewest transmits, then newest."""
        self._by_key: dict[Hashable, _Item] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._by_key

    def queue(self, message: Message, key: Hashable | None = None) -> None:
        """Add an update; one with the same `key` already queued is dropped."""
        if key is not None and (old := self._by_key.pop(key, None)) is not None:
            self._items.remove(old)
        self._order += 1
        item = _Item(key, message, len(encode_message(message)), -self._order)
        self._items.insert(0, item)  # never sent and the newest: the most urgent
        if key is not None:
            self._by_key[key] = item
        if len(self._items) > self._max:
            # Drop what has been sent most (and, among those, the oldest): it has spread most.
            # It is the last item: pop it, rather than `remove`, which would scan them all.
            self._forget(self._items.pop())

    def _remove(self, item: _Item) -> None:
        self._items.remove(item)
        self._forget(item)

    def _forget(self, item: _Item) -> None:
        if item.key is not None and self._by_key.get(item.key) is item:
            del self._by_key[item.key]

    def take(self, budget: int, members: int) -> list[Message]:
        """Updates whose encodings fit in `budget` bytes, counting one transmit each."""
        return self.take_sized(budget, members)[0]

    def take_sized(self, budget: int, members: int) -> tuple[list[Message], int]:
        """`take`, and the bytes the updates' encodings add up to."""
        items = self._items
        if not items or budget <= 0:
            return [], 0
        limit = retransmit_limit(self._mult, members)
        chosen: list[Message] = []
        used = 0
        retired = False
        for item in items:
            if used + item.size > budget:
                continue
            used += item.size
            chosen.append(item.message)
            item.transmits += 1
            retired = retired or item.transmits >= limit
        if retired:
            for item in [i for i in items if i.transmits >= limit]:
                self._remove(item)
        if chosen:
            items.sort(key=_URGENCY)  # nearly sorted already: linear
        return chosen, used

    def pending(self) -> list[Message]:
        """Queued updates, most urgent first (for inspection and tests)."""
        return [i.message for i in self._items]

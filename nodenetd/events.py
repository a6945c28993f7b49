"""The event hub: recent membership events with ids, fanned out to API subscribers.

Each event gets an increasing id and is kept in a ring of the last `capacity`, so a client
that reconnects with `Last-Event-ID` misses nothing that is still held. Ids start from the
daemon's start time in milliseconds × 1000, so ids of a later run are always greater, and a
resume id from an earlier run (or a gap) is answered with a "reset" first. Subscribers get a
bounded channel; one that does not keep up is disconnected (and can resume by id) rather
than allowed to make the daemon buffer without limit.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

__all__ = ["EventHub", "HubEvent"]


@dataclass(frozen=True, slots=True)
class HubEvent:
    """One event as the API streams it."""

    id: int
    kind: str
    """The SSE event name: "member", "entry", or "reset" on a gap."""
    payload: dict[str, Any] | Callable[[], dict[str, Any]]
    """The data, or a function that builds it: a bulk catch-up publishes thousands of
    entries, and most are never sent to anyone before they leave the ring."""

    @property
    def data(self) -> dict[str, Any]:
        """The event's data (built on first use)."""
        return self.payload() if callable(self.payload) else self.payload


class EventHub:
    """Publishes events to subscribers; keeps a ring of recent ones for resumption."""

    def __init__(
        self, capacity: int = 4096, subscriber_buffer: int = 1024, *, first_id: int = 1
    ) -> None:
        self._ring: deque[HubEvent] = deque(maxlen=capacity)
        self._first_id = first_id
        self._ids = itertools.count(first_id)
        self._subscribers: set[trio.MemorySendChannel[HubEvent]] = set()
        self._buffer = subscriber_buffer

    @property
    def last_id(self) -> int:
        """Id of the newest event (`first_id - 1` before any)."""
        return self._ring[-1].id if self._ring else self._first_id - 1

    def publish(self, kind: str, data: dict[str, Any] | Callable[[], dict[str, Any]]) -> HubEvent:
        """Record an event and hand it to every subscriber."""
        event = HubEvent(next(self._ids), kind, data)
        self._ring.append(event)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError):
                self._subscribers.discard(channel)
                channel.close()  # too slow: the client reconnects and resumes by id
        return event

    @asynccontextmanager
    async def subscribe(
        self, after: int | None = None
    ) -> AsyncIterator[trio.MemoryReceiveChannel[HubEvent]]:
        """A channel of events after id `after` (None: only new ones).

        If events after `after` have already left the ring, the channel starts with a
        "reset" event so the client knows it missed some."""
        send, receive = trio.open_memory_channel[HubEvent](self._buffer + len(self._ring) + 1)
        if after is not None:
            oldest = self._ring[0].id if self._ring else self.last_id + 1
            if after + 1 < oldest or after > self.last_id:
                # A gap (the ring moved on) or an id from another run of the daemon. The
                # reset carries the id to resume after, so a client that stores ids naively
                # continues from the oldest event held.
                send.send_nowait(
                    HubEvent(oldest - 1, "reset", {"missed_after": after, "oldest": oldest})
                )
                after = oldest - 1
            for event in self._ring:
                if event.id > after:
                    send.send_nowait(event)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def close(self) -> None:
        """End every subscription (shutdown)."""
        for channel in self._subscribers:
            channel.close()
        self._subscribers.clear()

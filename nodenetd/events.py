"""The event hub: recent membership events with ids, fanned out to API subscribers.

Each event gets an increasing id and is kept in a ring of the last `capacity`, so a client
that reconnects with `Last-Event-ID` misses nothing that is still held. Ids start from the
daemon's start time in milliseconds × 1000, so ids of a later run are always greater, and a
resume id from an earlier run (or a gap) is answered with a "reset" first.

Memory is bounded three ways, because entry events carry values of up to 1 MiB: the ring
also holds at most `ring_bytes`; a subscriber that falls `subscriber_bytes` (or
`subscriber_buffer` events) behind is disconnected and its stream cancelled, even while it
is blocked sending to a client that stopped reading (it can resume by id); and at most
`max_subscribers` streams run at once.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

__all__ = ["EventHub", "HubEvent", "Subscription", "TooManySubscribers"]

EVENT_OVERHEAD = 512
"""Bytes counted for an event beyond its `size` (ids, names, JSON)."""


@dataclass(frozen=True, slots=True)
class HubEvent:
    """One event as the API streams it."""

    id: int
    kind: str
    """The SSE event name: "member", "entry", or "reset" on a gap."""
    payload: dict[str, Any] | Callable[[], dict[str, Any]]
    """The data, or a function that builds it: a bulk catch-up publishes thousands of
    entries, and most are never sent to anyone before they leave the ring."""
    size: int = 0
    """Bytes of data the event holds besides its fixed part (an entry's value)."""

    @property
    def data(self) -> dict[str, Any]:
        """The event's data (built on first use)."""
        return self.payload() if callable(self.payload) else self.payload

    @property
    def weight(self) -> int:
        """Bytes it is counted for in the ring and in a subscriber's backlog."""
        return self.size + EVENT_OVERHEAD


class TooManySubscribers(Exception):
    """`max_subscribers` streams already run."""


@dataclass(eq=False, slots=True)
class Subscription:
    """One subscriber's backlog of events, and the scope its stream runs in."""

    _send: trio.MemorySendChannel[HubEvent]
    _receive: trio.MemoryReceiveChannel[HubEvent]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    """Cancelled when the subscriber falls too far behind: run the stream inside it."""
    backlog: int = 0
    """Bytes of events queued for it and not yet received."""

    async def receive(self) -> HubEvent:
        """The next event (`trio.EndOfChannel` once it has been disconnected)."""
        event = await self._receive.receive()
        self.backlog -= event.weight
        return event


class EventHub:
    """Publishes events to subscribers; keeps a ring of recent ones for resumption."""

    def __init__(
        self,
        capacity: int = 4096,
        subscriber_buffer: int = 1024,
        *,
        first_id: int = 1,
        ring_bytes: int = 32 << 20,
        subscriber_bytes: int = 16 << 20,
        max_subscribers: int = 32,
    ) -> None:
        self._ring: deque[HubEvent] = deque()
        self._capacity = capacity
        self._ring_bytes = ring_bytes
        self._held = 0
        self._first_id = first_id
        self._ids = itertools.count(first_id)
        self._subscribers: set[Subscription] = set()
        self._buffer = subscriber_buffer
        self._subscriber_bytes = subscriber_bytes
        self._max_subscribers = max_subscribers
        self._last_id = first_id - 1
        self.dropped = 0
        """Subscribers cut off for falling behind (they reconnect and resume by id)."""

    @property
    def last_id(self) -> int:
        """Id of the newest event (`first_id - 1` before any)."""
        return self._last_id

    @property
    def subscribers(self) -> int:
        """Streams running now."""
        return len(self._subscribers)

    def publish(
        self, kind: str, data: dict[str, Any] | Callable[[], dict[str, Any]], *, size: int = 0
    ) -> HubEvent:
        """Record an event and hand it to every subscriber."""
        event = HubEvent(next(self._ids), kind, data, size)
        self._last_id = event.id
        self._ring.append(event)
        self._held += event.weight
        while len(self._ring) > self._capacity or (
            self._held > self._ring_bytes and len(self._ring) > 1
        ):
            self._held -= self._ring.popleft().weight
        for subscriber in list(self._subscribers):
            if subscriber.backlog + event.weight > self._subscriber_bytes:
                self._drop(subscriber)
                continue
            try:
                subscriber._send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError):
                self._drop(subscriber)
            else:
                subscriber.backlog += event.weight
        return event

    def _drop(self, subscriber: Subscription) -> None:
        """Too slow: end its stream (the client reconnects and resumes by id)."""
        self.dropped += 1
        self._subscribers.discard(subscriber)
        subscriber._send.close()
        subscriber.scope.cancel()  # it may be blocked sending to a client that reads nothing

    @asynccontextmanager
    async def subscribe(self, after: int | None = None) -> AsyncIterator[Subscription]:
        """Events after id `after` (None: only new ones); TooManySubscribers at the cap.

        If events after `after` have already left the ring, the subscription starts with a
        "reset" event so the client knows it missed some."""
        if len(self._subscribers) >= self._max_subscribers:
            raise TooManySubscribers(f"{self._max_subscribers} event streams already run")
        send, receive = trio.open_memory_channel[HubEvent](self._buffer + len(self._ring) + 1)
        subscriber = Subscription(send, receive)
        if after is not None:
            replay = [event for event in self._ring if event.id > after]
            # At most half the subscriber's budget is replayed, the newest events: the rest
            # is left for what comes next.
            budget, cut = self._subscriber_bytes // 2, len(replay)
            while cut and budget >= replay[cut - 1].weight:
                budget -= replay[cut - 1].weight
                cut -= 1
            oldest = replay[cut].id if cut < len(replay) else self.last_id + 1
            if after + 1 < oldest or after > self.last_id:
                # A gap (the ring moved on, or more than the budget would be replayed) or an
                # id from another run of the daemon. The reset carries the id to resume
                # after, so a client that stores ids naively continues from the oldest sent.
                reset = HubEvent(oldest - 1, "reset", {"missed_after": after, "oldest": oldest})
                send.send_nowait(reset)
                subscriber.backlog += reset.weight
            for event in replay[cut:]:
                send.send_nowait(event)
                subscriber.backlog += event.weight
        self._subscribers.add(subscriber)
        try:
            async with receive:
                yield subscriber
        finally:
            self._subscribers.discard(subscriber)
            send.close()

    def close(self) -> None:
        """End every subscription (shutdown)."""
        for subscriber in self._subscribers:
            subscriber._send.close()
        self._subscribers.clear()

"""The membership service: the Trio driver of `nodenet.protocol.membership.Membership`.

Theory of operation
-------------------
All protocol decisions live in the core; this is glue. One task reads datagrams, one task
re-arms the core's single timer (`trio.move_on_at(core.get_timer())`, woken after every
input), one task sends datagrams from a bounded queue, and each TCP exchange (push-pull,
fallback probe) runs in its own task under the core's deadline. After every input the
service drains the core's outputs and events. Everything runs on the Trio thread, so the
core needs no locks.

Defences: datagrams from one source address beyond a token-bucket rate are dropped before
they cost a decryption; incoming TCP connections are capped and bounded in time and size;
every drop is counted by reason. A peer whose packets only an older installed cluster key
opens is answered with that key, so a node that missed a key rotation can still rejoin.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from nodenet.daemon.framing import FrameConnection
from nodenet.daemon.transport import Transport
from nodenet.protocol.errors import RemoteProtocolError
from nodenet.protocol.identity import NodeId
from nodenet.protocol.keyring import ClusterKey
from nodenet.protocol.members import MemberEvent
from nodenet.protocol.membership import Datagram, Exchange, Membership
from nodenet.protocol.messages import Address, Message, Ping, PushPull
from nodenet.protocol.wire import Received, WireCodec

__all__ = ["Clock", "MembershipService", "ServiceLimits", "SystemClock", "TransportStats"]

log = logging.getLogger("nodenet.membership")


class Clock(Protocol):
    """Monotonic time for the core, wall-clock milliseconds for envelope stamps."""

    def now(self) -> float:
        """Monotonic seconds (Trio's clock, so MockClock works)."""

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch."""


class SystemClock:
    """Trio's clock and the system's wall clock."""

    def now(self) -> float:
        return trio.current_time()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Bounds that keep one peer from starving the others."""

    datagrams_per_source_s: float = 200.0
    """Sustained datagrams per second accepted from one source address. A healthy peer
    sends a few per second; this leaves room for bursts of gossip and join storms."""
    datagram_burst: int = 400
    send_queue: int = 1024
    """Datagrams waiting to be sent; beyond it new ones are dropped (UDP is lossy anyway)."""
    max_exchanges: int = 32
    """Outgoing TCP exchanges at once; more are failed at once, not queued."""
    max_incoming_streams: int = 256
    """Incoming TCP connections at once; more are closed immediately."""
    max_streams_per_source: int = 24
    """Incoming TCP connections at once from one address (loopback excepted: a dev cluster
    runs many nodes there). A catching-up replica holds a sync and 8 pulls with one peer;
    with room for pushes that is below this. Idle connections from one host can then not
    take every slot and lock joins out."""
    first_frame_s: float = 3.0
    """Seconds an incoming connection may take to send the length of its first frame (a peer
    sends it right after connecting); the frame itself has `tcp_timeout_s`."""
    max_stream_bytes: int = 16 << 20
    """Bytes one TCP request or reply may carry in all (a push-pull of ~20,000 members)."""
    tracked_sources: int = 4096


class _TokenBuckets:
    """Per-source token buckets, least recently seen forgotten first."""

    def __init__(self, rate: float, burst: int, capacity: int) -> None:
        self._rate = rate
        self._burst = burst
        self._capacity = capacity
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        tokens, last = self._buckets.pop(source, (float(self._burst), now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self._capacity:
            self._buckets.popitem(last=False)
        return allowed


@dataclass(slots=True)
class TransportStats:
    """Counters of what crossed the wire (exported as metrics)."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    streams_in: int = 0
    streams_out: int = 0
    stream_bytes_in: int = 0
    stream_bytes_out: int = 0


class MembershipService:
    """Runs one membership core on a transport."""

    def __init__(
        self,
        core: Membership,
        codec: WireCodec,
        transport: Transport,
        *,
        clock: Clock | None = None,
        limits: ServiceLimits | None = None,
        on_events: Callable[[list[MemberEvent]], None] | None = None,
        on_rtts: Callable[[list[float]], None] | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.core = core
        self.codec = codec
        self.transport = transport
        self.clock = clock or SystemClock()
        self.limits = limits or ServiceLimits()
        self.stats = TransportStats()
        self.dropped: dict[str, int] = {}
        self._on_events = on_events
        self._on_rtts = on_rtts
        self._on_drop = on_drop
        self._buckets = _TokenBuckets(
            self.limits.datagrams_per_source_s,
            self.limits.datagram_burst,
            self.limits.tracked_sources,
        )
        self._peer_keys: OrderedDict[Address, ClusterKey] = OrderedDict()
        self._last_drop_log: dict[tuple[str, str], float] = {}
        self._send_in, self._send_out = trio.open_memory_channel[tuple[bytes, Address]](
            self.limits.send_queue
        )
        self._rearm = trio.Event()
        self._exchanges = trio.Semaphore(self.limits.max_exchanges)
        self._incoming = trio.Semaphore(self.limits.max_incoming_streams)
        self._streams_from: collections.Counter[str] = collections.Counter()
        self._nursery: trio.Nursery | None = None
        self._exchange_waiters: dict[int, trio.Event] = {}
        self._exchange_results: dict[int, str] = {}
        self.left = trio.Event()
        self._sent_all = trio.Event()
        self.message_handler: Callable[[float, NodeId, Address, Message], None] | None = None
        """Where datagram messages that are not about membership go (the store)."""
        self.stream_handler: Callable[[FrameConnection, list[Message]], Awaitable[None]] | None = (
            None
        )
        """Who continues a TCP conversation that is not a push-pull or a probe (the store)."""

    # --- running ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.serve_streams, self._serve_stream)
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._timer_loop)
            self._flush()
            task_status.started()

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if self._on_drop is not None:
            self._on_drop(reason)

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.get_timer()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._rearm.wait()
            self._rearm = trio.Event()
            now = self.clock.now()
            timer = self.core.get_timer()
            if timer is not None and timer <= now:
                self.core.handle_timer(now)
                self._flush()

    async def _receive_loop(self) -> None:
        while True:
            try:
                data, source = await self.transport.receive_datagram()
            except OSError as exc:  # e.g. ICMP port unreachable surfacing as ECONNREFUSED
                log.debug("UDP receive error: %s", exc)
                continue
            self.stats.datagrams_in += 1
            self.stats.bytes_in += len(data)
            if not self._buckets.allow(source.host, self.clock.now()):
                self._drop("rate_limited")
                continue
            try:
                got = self.codec.decode_datagram(data, self.clock.wall_ms())
            except RemoteProtocolError as exc:
                self._drop(exc.reason)
                self._log_drop(source, exc)
                continue
            self._note_key(source, got)
            now = self.clock.now()
            for message in got.envelope.messages:
                handled = self.core.receive(
                    now, got.envelope.sender, source, message, got.envelope.minor
                )
                if not handled and self.message_handler is not None:
                    self.message_handler(now, got.envelope.sender, source, message)
            self._flush()

    def _log_drop(self, source: Address, exc: RemoteProtocolError) -> None:
        """Say why a peer's packets (or TCP requests) are refused, once per source and reason
        per minute: a flood of bad input must not become a flood of log lines."""
        now = self.clock.now()
        key = (source.host, exc.reason)
        if now - self._last_drop_log.get(key, -math.inf) < 60.0:
            return
        self._last_drop_log[key] = now
        if len(self._last_drop_log) > self.limits.tracked_sources:
            self._last_drop_log.pop(next(iter(self._last_drop_log)))
        log.warning("refused packets from %s: %s", source, exc)

    def _note_key(self, peer: Address, got: Received) -> None:
        """Remember which key to answer `peer` with: the older key its packets are sealed with,
        unless that was a fallback answer (the peer holds its own primary; so may we)."""
        key = got.key
        if key == self.codec.keyring.primary:
            self._peer_keys.pop(peer, None)
            return
        if got.envelope.fallback:
            return
        if self._peer_keys.get(peer) != key:
            log.warning(
                "peer %s still seals with cluster key %s (our primary is %s); answering it with"
                " that key until it has the new one",
                peer,
                key.key_id,
                self.codec.keyring.primary.key_id,
            )
        self._peer_keys[peer] = key
        self._peer_keys.move_to_end(peer)
        if len(self._peer_keys) > self.limits.tracked_sources:
            self._peer_keys.popitem(last=False)

    def _key_for(self, peer: Address) -> ClusterKey | None:
        key = self._peer_keys.get(peer)
        return key if key is not None and key in self.codec.keyring.keys else None

    async def _send_loop(self) -> None:
        async for data, address in self._send_out:
            try:
                await self.transport.send_datagram(data, address)
                self.stats.datagrams_out += 1
                self.stats.bytes_out += len(data)
            except OSError as exc:
                self._drop("send_error")
                log.debug("cannot send to %s: %s", address, exc)
            if not self._send_out.statistics().current_buffer_used:
                self._sent_all.set()

    # --- outputs ------------------------------------------------------------------------

    def _flush(self) -> None:
        """Carry out what the core asked for, and re-arm the timer."""
        core = self.core
        for out in core.outputs():
            if isinstance(out, Datagram):
                self._queue_datagram(out)
            elif isinstance(out, Exchange):
                self._start_exchange(out)
        events = core.events()
        if events and self._on_events is not None:
            self._on_events(events)
        rtts = core.probe_rtts()
        if rtts and self._on_rtts is not None:
            self._on_rtts(rtts)
        if core.leave_done():
            self.left.set()
        self._rearm.set()

    def _queue_datagram(self, datagram: Datagram) -> None:
        key = self._key_for(datagram.address)
        for packet in self.codec.encode_datagrams(datagram.messages, self.clock.wall_ms(), key):
            try:
                self._send_in.send_nowait((packet, datagram.address))
            except trio.WouldBlock:
                self._drop("send_queue_full")

    def _start_exchange(self, exchange: Exchange) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._run_exchange, exchange)

    async def _run_exchange(self, exchange: Exchange) -> None:
        reply: list[Message] | None = None
        failure = "timed out"
        if _try_acquire(self._exchanges):
            try:
                with trio.move_on_at(exchange.deadline):
                    reply, failure = await self._exchange(exchange)
            finally:
                self._exchanges.release()
        else:
            self._drop("too_many_exchanges")
            failure = "too many TCP exchanges at once"
        useful = self.core.exchange_done(self.clock.now(), exchange.id, reply)
        waiter = self._exchange_waiters.pop(exchange.id, None)
        if waiter is not None:
            self._exchange_results[exchange.id] = "" if useful else failure
            waiter.set()
        self._flush()

    async def connect(self, address: Address) -> FrameConnection:
        """Open a framed TCP conversation with `address` (OSError if it cannot)."""
        stream = await self.transport.connect(address)
        self.stats.streams_out += 1
        return self._framed(stream, address)

    def _framed(self, stream: trio.abc.Stream, peer: Address) -> FrameConnection:
        return FrameConnection(
            stream,
            self.codec,
            peer,
            wall_ms=self.clock.wall_ms,
            max_bytes=self.limits.max_stream_bytes,
            key=self._key_for(peer),
        )

    def _closed(self, conn: FrameConnection) -> None:
        """Account for a finished conversation."""
        self.stats.stream_bytes_in += conn.bytes_in
        self.stats.stream_bytes_out += conn.bytes_out
        if conn.received is not None:
            self._note_key(conn.peer, conn.received)

    async def request(
        self, address: Address, messages: Sequence[Message]
    ) -> tuple[list[Message] | None, str]:
        """Send a request, half-close, read the reply: the reply (None on failure) and why."""
        try:
            conn = await self.connect(address)
        except OSError as exc:
            return None, exc.strerror or str(exc)
        async with conn.stream:
            try:
                await conn.send(messages)
                await conn.send_eof()
                reply = await conn.receive_all()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                return None, f"connection lost: {exc}"
            except RemoteProtocolError as exc:
                self._drop(exc.reason)
                return None, f"bad reply: {exc}"
            finally:
                self._closed(conn)
        if not reply:
            return None, (
                "the peer closed without answering: it could not open our packets (is it"
                " using another cluster key?) or refused the request"
            )
        return reply, ""

    async def _exchange(self, exchange: Exchange) -> tuple[list[Message] | None, str]:
        return await self.request(exchange.address, exchange.request)

    async def _serve_stream(self, stream: trio.abc.Stream, peer: Address) -> None:
        if not _try_acquire(self._incoming):
            self._drop("too_many_streams")
            await stream.aclose()
            return
        loopback = ipaddress.ip_address(peer.host.partition("%")[0]).is_loopback
        if not loopback and self._streams_from[peer.host] >= self.limits.max_streams_per_source:
            self._incoming.release()
            self._drop("too_many_streams_from_source")
            await stream.aclose()
            return
        self._streams_from[peer.host] += 1
        self.stats.streams_in += 1
        conn = self._framed(stream, peer)
        try:
            async with stream:
                first = None
                # A peer sends its first frame right after connecting: its length must come
                # within `first_frame_s`, the whole frame (up to 1 MiB, a big push-pull on a
                # slow link) within `tcp_timeout_s` of the connection.
                deadline = trio.current_time() + self.core.config.tcp_timeout_s
                header_s = min(self.limits.first_frame_s, self.core.config.tcp_timeout_s)
                with trio.move_on_after(header_s) as waiting:
                    started = await conn.receive_header()
                if waiting.cancelled_caught:
                    self._drop("first_frame_timeout")
                    log.debug("TCP connection from %s sent nothing in time", peer)
                    return
                if started:
                    with trio.move_on_at(deadline):
                        first = await conn.receive()
                if not first or conn.sender is None:
                    return
                if not isinstance(first[0], PushPull | Ping) and self.stream_handler:
                    # The store bounds its own conversations (a sync can take minutes).
                    await self.stream_handler(conn, first)
                    return
                with trio.move_on_after(self.core.config.tcp_timeout_s):
                    request = first + await conn.receive_all()
                    reply = self.core.answer_exchange(self.clock.now(), conn.sender, request)
                    self._flush()
                    await conn.send(reply)
        except RemoteProtocolError as exc:
            self._drop(exc.reason)
            self._log_drop(peer, exc)  # as for datagrams: a line per source and reason a minute
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("TCP connection from %s failed: %s", peer, exc)
        finally:
            self._closed(conn)
            self._incoming.release()
            self._streams_from[peer.host] -= 1
            if not self._streams_from[peer.host]:
                del self._streams_from[peer.host]

    # --- API ------------------------------------------------------------------------------

    async def join(self, addresses: Sequence[Address]) -> list[str]:
        """Push-pull with each address; per address "" on success or why it failed."""
        ids = self.core.join(self.clock.now(), addresses)
        events = {i: trio.Event() for i in ids}
        self._exchange_waiters.update(events)
        self._flush()
        for event in events.values():
            await event.wait()
        results = [self._exchange_results.pop(i, "no result") for i in ids]
        for address, failure in zip(addresses, results, strict=True):
            if failure:
                log.warning("could not join via %s: %s", address, failure)
            else:
                log.info("joined via %s", address)
        return results

    def set_tags(self, tags: dict[str, str]) -> None:
        """Announce new tags."""
        self.core.set_tags(self.clock.now(), tags)
        self._flush()

    async def leave(self, timeout_s: float) -> bool:
        """Broadcast our LEAVE and wait (bounded) until it has been sent enough times."""
        self.core.leave(self.clock.now())
        self._flush()
        with trio.move_on_after(timeout_s):
            await self.left.wait()
        await self._drain_send_queue()
        return self.left.is_set()

    async def _drain_send_queue(self) -> None:
        if self._send_in.statistics().current_buffer_used:
            self._sent_all = trio.Event()
            with trio.move_on_after(1.0):
                await self._sent_all.wait()


def _try_acquire(semaphore: trio.Semaphore) -> bool:
    try:
        semaphore.acquire_nowait()
    except trio.WouldBlock:
        return False
    return True

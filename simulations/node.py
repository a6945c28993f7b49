"""A simulated node: the real `Membership` core (and optionally the store's `Replicator`)
driven by virtual time and the network.

This is the simulator's equivalent of the daemon's driver loop: feed inputs, carry out
outputs, re-arm the one timer. By default messages travel as objects and each datagram and
TCP frame is charged exactly the bytes the daemon would send (`sizes.py`), which keeps
cryptography out of the hot path; with `wire=True` every datagram and exchange is really
signed, sealed, opened and verified, for tests of hostile input.

Behaviours: `crash` (kill -9), `restart` (with the persisted state or a wiped disk),
`leave` (graceful), `pause` (SIGSTOP: no processing and no timers; datagrams wait in a
bounded socket buffer), and `slow_s` (every input waits in a backlog while timers fire on
time: an overloaded node, Lifeguard's case).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import nacl.signing

from nodenet.protocol.config import MembershipConfig
from nodenet.protocol.errors import RemoteProtocolError
from nodenet.protocol.identity import NodeId, node_id_of
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.members import MemberEvent, MemberStatus
from nodenet.protocol.membership import Datagram, Exchange, Membership
from nodenet.protocol.messages import Address, Message
from nodenet.protocol.wire import FRAME_HEADER, PROTOCOL_MINOR, WireCodec
from nodenet.simulations.engine import Simulator
from nodenet.simulations.network import Network, ready_at
from nodenet.simulations.sizes import datagram_size, frames_size, message_size

if TYPE_CHECKING:
    from nodenet.simulations.store import SimStore

__all__ = ["SimNode"]

SIM_CLUSTER_KEY = ClusterKey(b"\x5a" * 32)
EPOCH_MS = 1_764_000_000_000  # wall clock at virtual time 0, for envelope timestamps
REJOIN_FANOUT = 3  # known members a restarted node pushes-pulls with at once
SOCKET_BUFFER_BYTES = 212_992  # Linux's default UDP receive buffer (net.core.rmem_default)

EventSink = Callable[["SimNode", MemberEvent], None]


class SimNode:
    """One node of a simulated cluster."""

    def __init__(
        self,
        sim: Simulator,
        network: Network,
        *,
        key: nacl.signing.SigningKey,
        address: Address,
        config: MembershipConfig,
        seeds: Sequence[Address] = (),
        tags: dict[str, str] | None = None,
        wire: bool = False,
        on_event: EventSink | None = None,
        index: int = 0,
        core_class: type[Membership] = Membership,
    ) -> None:
        self.sim = sim
        self.network = network
        self.key = key
        self.node_id: NodeId = node_id_of(key)
        self.address = address
        self.config = config
        self.seeds = tuple(seeds)
        self.tags = tags or {}
        self.index = index
        self.up = True
        self.leaving = False
        self.slow_s = 0.0
        """Extra delay before this node handles each input (datagram, TCP request or reply)
        while its timers still fire on time: an overloaded node with a backlog."""
        self.paused_until = 0.0
        """While virtual time is before this, the node's process does not run at all."""
        self.on_event = on_event
        self.store: SimStore | None = None
        # traffic, as the daemon's nodenet_transport_bytes_total counts it (payload bytes)
        self.datagrams_sent = 0
        self.bytes_sent = 0
        """UDP bytes sent."""
        self.datagrams_received = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.tcp_bytes_sent = 0
        self.tcp_bytes_received = 0
        self.buffer_drops = 0
        self.rejected = 0
        self.wakeups = 0
        """Times the core's timer was due and run (the daemon's timer-loop wake-ups)."""
        self._core_class = core_class
        self._codec = WireCodec(key, Keyring([SIM_CLUSTER_KEY])) if wire else None
        self._timer_at: float | None = None
        self._timer_token = 0
        self._buffer: list[tuple[Address, Any, int]] = []
        self._buffered_bytes = 0
        self.core = self._new_core(incarnation=0)
        network.attach(self)
        self.pump()

    def _new_core(self, incarnation: int) -> Membership:
        return self._core_class(
            key=self.key,
            address=self.address,
            now=self.sim.now,
            rng=self.sim.fork_rng(),
            config=self.config,
            tags=self.tags,
            incarnation=incarnation,
            seeds=self.seeds,
        )

    # --- encoding (objects, or the real wire) -----------------------------------------------

    def now_ms(self) -> int:
        """This node's wall clock in ms (all clocks agree in the simulator)."""
        return EPOCH_MS + int(self.sim.now * 1000)

    def _pack_datagram(self, messages: tuple[Message, ...]) -> tuple[Any, int]:
        if self._codec is None:
            size = datagram_size([message_size(m) for m in messages], self.now_ms())
            return (self.node_id, messages), size
        packets = self._codec.encode_datagrams(messages, self.now_ms())
        return packets, sum(len(p) for p in packets)

    def pack_frames(self, messages: Sequence[Message]) -> tuple[Any, int, int]:
        """A TCP payload: (payload, frames, bytes)."""
        if self._codec is None:
            frames, size = frames_size([message_size(m) for m in messages], self.now_ms())
            return (self.node_id, tuple(messages)), frames, size
        packed = self._codec.encode_frames(messages, self.now_ms())
        return packed, len(packed), sum(len(p) for p in packed)

    def _unpack(
        self, payload: Any, *, frames: bool = False
    ) -> tuple[NodeId, tuple[Message, ...]] | None:
        if self._codec is None:
            sender, messages = payload
            return sender, messages
        out: list[Message] = []
        sender = None
        for packet in payload:
            try:
                if frames:
                    got = self._codec.decode_frame(packet[FRAME_HEADER.size :], self.now_ms())
                else:
                    got = self._codec.decode_datagram(packet, self.now_ms())
            except RemoteProtocolError:
                self.rejected += 1
                return None
            sender = got.envelope.sender
            out.extend(got.envelope.messages)
        return (sender, tuple(out)) if sender is not None else None

    # --- inputs ---------------------------------------------------------------------------

    def deliver(self, source: Any, payload: Any, size: int) -> None:
        """A datagram arrives (called by the network)."""
        self.datagrams_received += 1
        self.bytes_received += size
        if self.paused_until > self.sim.now:
            if self._buffered_bytes + size > SOCKET_BUFFER_BYTES:
                self.buffer_drops += 1
                return
            self._buffered_bytes += size
            self._buffer.append((source.address, payload, size))
        elif self.slow_s:
            self.sim.after(self.slow_s, self._process, source.address, payload)
        else:
            self._process(source.address, payload)

    def _process(self, source: Address, payload: Any) -> None:
        if not self.up:
            return
        unpacked = self._unpack(payload)
        if unpacked is None:
            return
        sender, messages = unpacked
        now = self.sim.now
        core = self.core
        store = self.store
        for message in messages:
            if not core.receive(now, sender, source, message, PROTOCOL_MINOR) and store is not None:
                store.receive(now, sender, source, message)
        self.pump()

    def answer(self, source: Any, request: Any, size: int) -> tuple[Any, int]:
        """A TCP request arrives (called by the network): (reply payload, reply bytes)."""
        self.tcp_bytes_received += size
        unpacked = self._unpack(request, frames=True)
        messages: Sequence[Message] = ()
        if unpacked is not None:
            sender, request_messages = unpacked
            store = self.store
            if store is not None and store.handles(request_messages):
                messages = store.answer(request_messages)
            else:
                messages = self.core.answer_exchange(self.sim.now, sender, request_messages)
            self.pump()
        payload, frames, reply_size = self.pack_frames(messages)
        self.frames_sent += frames
        self.tcp_bytes_sent += reply_size
        return (payload, reply_size), reply_size

    def _exchange_done(self, core: Membership, exchange_id: int, reply: Any) -> None:
        when = ready_at(self, self.sim.now)
        if when > self.sim.now:
            self.sim.at(when, self._process_exchange_reply, core, exchange_id, reply)
        else:
            self._process_exchange_reply(core, exchange_id, reply)

    def _process_exchange_reply(self, core: Membership, exchange_id: int, reply: Any) -> None:
        if core is not self.core or not self.up:
            return  # an exchange started by a previous life of this node
        messages = None
        if reply is not None:
            payload, size = reply
            self.tcp_bytes_received += size
            unpacked = self._unpack(payload, frames=True)
            messages = unpacked[1] if unpacked is not None else None
        core.exchange_done(self.sim.now, exchange_id, messages)
        self.pump()

    def _on_timer(self, token: int) -> None:
        if token != self._timer_token or not self.up:
            return
        self._timer_at = None
        if self.paused_until > self.sim.now:
            return  # `_resume` runs what is due
        # The deadline may have moved later since this event was armed (an ACK cancelled
        # the probe timeout): then nothing is due, and `pump` re-arms for the real one, as
        # the daemon's timer loop re-reads `get_timer()` without running anything.
        due = self.core.get_timer()
        if due is not None and due <= self.sim.now:
            self.wakeups += 1
            self.core.handle_timer(self.sim.now)
        self.pump()

    # --- outputs --------------------------------------------------------------------------

    def pump(self) -> None:
        core = self.core
        self._send_outputs(core)
        events = core.events()
        if events:
            if self.on_event is not None:
                for event in events:
                    self.on_event(self, event)
            if self.store is not None:
                self.store.membership_events(events)
        if self.store is not None:
            self.store.flush()
            self._send_outputs(core)  # anything the store had the core send at once
        when = core.get_timer()
        if when is not None and (self._timer_at is None or when < self._timer_at):
            self._timer_at = when
            self._timer_token += 1
            self.sim.at(when, self._on_timer, self._timer_token)

    def _send_outputs(self, core: Membership) -> None:
        for out in core.outputs():
            if type(out) is Datagram:
                payload, size = self._pack_datagram(out.messages)
                self.bytes_sent += size
                self.datagrams_sent += 1
                self.network.send(self, out.address, payload, size)
            elif isinstance(out, Exchange):
                self.exchange(out.address, out.request, out.deadline, core, out.id)

    def exchange(
        self,
        address: Address,
        request: Sequence[Message],
        deadline: float,
        core: Membership,
        exchange_id: int,
    ) -> None:
        """Run one of the core's TCP exchanges."""
        payload, frames, size = self.pack_frames(request)
        self.frames_sent += frames
        self.tcp_bytes_sent += size
        done = functools.partial(self._exchange_done, core, exchange_id)
        self.network.exchange(self, address, payload, deadline, done, size=size)

    # --- behaviours -----------------------------------------------------------------------

    def join(self, addresses: Sequence[Address]) -> None:
        """Join through `addresses` (push-pull with each)."""
        self.core.join(self.sim.now, addresses)
        if self.store is not None:
            self.store.joined()
        self.pump()

    def crash(self) -> None:
        """Stop answering anything, as `kill -9` or a power cut would."""
        self.up = False
        self._timer_token += 1
        self._timer_at = None
        self._buffer.clear()
        self._buffered_bytes = 0
        if self.store is not None:
            self.store.stop()

    def restart(self, *, keep_state: bool = True) -> None:
        """Come back up. With `keep_state`, as the daemon does: the persisted incarnation,
        member table and store, rejoining known members without seeds. Without: a wiped
        disk, incarnation 0, an empty store, rejoining through the seeds."""
        if keep_state:
            states = self.core.states()
            known = [
                m.address
                for m in self.core.members()
                if m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)
            ]
            self.core = self._new_core(incarnation=self.core.incarnation + 1)
            self.core.restore(self.sim.now, states)
            rng = self.sim.fork_rng()
            addresses = rng.sample(known, min(REJOIN_FANOUT, len(known)))
        else:
            self.core = self._new_core(incarnation=0)
            addresses = list(self.seeds)
        self.up = True
        self.leaving = False
        self.paused_until = 0.0
        if self.store is not None:
            self.store.restart(keep_state=keep_state)
        self.join(addresses)

    def leave(self, timeout_s: float = 5.0) -> None:
        """Leave gracefully: broadcast LEAVE, keep gossiping until it has spread, stop."""
        self.leaving = True
        self.core.leave(self.sim.now)
        self.pump()
        deadline = self.sim.now + timeout_s
        core = self.core

        def check() -> None:
            if core is not self.core or not self.up:
                return
            if self.core.leave_done() or self.sim.now >= deadline:
                self.crash()
            else:
                self.sim.after(self.config.gossip_interval_s, check)

        self.sim.after(self.config.gossip_interval_s, check)

    def pause(self, duration_s: float) -> None:
        """Freeze the process for `duration_s` (SIGSTOP, a long GC pause, a VM migration):
        no timers, no processing; datagrams wait in the socket buffer (what overflows it is
        lost) and are handled, in order, when it resumes, before the overdue timers."""
        until = self.sim.now + duration_s
        if until <= self.paused_until:
            return
        self.paused_until = until
        self.sim.at(until, self._resume, until)

    def _resume(self, until: float) -> None:
        if until != self.paused_until or not self.up:
            return
        buffered, self._buffer = self._buffer, []
        self._buffered_bytes = 0
        for source, payload, _ in buffered:
            self._process(source, payload)
        if not self.up:
            return
        self.core.handle_timer(self.sim.now)
        self._timer_at = None
        self._timer_token += 1
        self.pump()
        if self.store is not None:
            self.store.resume()

    def set_tags(self, tags: dict[str, str]) -> None:
        """Change tags at runtime."""
        self.tags = tags
        self.core.set_tags(self.sim.now, tags)
        self.pump()

    def send_raw(self, address: Address, messages: Sequence[Message], *, tcp: bool = False) -> None:
        """Send `messages` as they are, bypassing the core (a hostile or buggy peer)."""
        if tcp:
            payload, _, size = self.pack_frames(tuple(messages))
            self.network.exchange(
                self, address, payload, self.sim.now + 10, lambda _: None, size=size
            )
        else:
            payload, size = self._pack_datagram(tuple(messages))
            self.network.send(self, address, payload, size)

    def inject(self, source: Address, sender: NodeId, messages: Sequence[Message]) -> None:
        """Hand messages to the core as if they arrived (already decoded) from `source`."""
        for message in messages:
            self.core.receive(self.sim.now, sender, source, message)
        self.pump()

    def view(self) -> dict[NodeId, MemberStatus]:
        """This node's opinion of every other node."""
        return {m.node: m.status for m in self.core.members()}

    @property
    def paused(self) -> bool:
        """Whether the process is frozen right now."""
        return self.paused_until > self.sim.now

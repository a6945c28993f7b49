"""A simulated node: the real `Membership` core driven by virtual time and the network.

This is the simulator's equivalent of the daemon's driver loop: feed inputs, carry out
outputs, re-arm the one timer. By default messages travel as objects and their size is
computed exactly (`sealed_size`), which keeps cryptography out of the hot path; with
`wire=True` every datagram and exchange is really signed, sealed, opened and verified,
for tests of hostile input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import nacl.signing

from nodenet.protocol.config import MembershipConfig
from nodenet.protocol.errors import RemoteProtocolError
from nodenet.protocol.identity import NodeId, node_id_of
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.members import MemberEvent, MemberStatus
from nodenet.protocol.membership import Datagram, Exchange, Membership
from nodenet.protocol.messages import Address, Message, encode_message
from nodenet.protocol.wire import FRAME_HEADER, WireCodec, sealed_size
from nodenet.simulations.engine import Simulator
from nodenet.simulations.network import Network

__all__ = ["SimNode"]

SIM_CLUSTER_KEY = ClusterKey(b"\x5a" * 32)
EPOCH_MS = 1_764_000_000_000  # wall clock at virtual time 0, for envelope timestamps
REJOIN_FANOUT = 3  # known members a restarted node pushes-pulls with at once

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
    ) -> None:
        self.sim = sim
        self.network = network
        self.key = key
        self.node_id: NodeId = node_id_of(key)
        self.address = address
        self.config = config
        self.seeds = tuple(seeds)
        self.tags = tags or {}
        self.up = True
        self.slow_s = 0.0
        """Extra delay before this node handles each input (datagram, TCP request or reply)
        while its timers still fire on time: an overloaded node with a backlog."""
        self.on_event = on_event
        self.bytes_sent = 0
        self.datagrams_sent = 0
        self.rejected = 0
        self._codec = WireCodec(key, Keyring([SIM_CLUSTER_KEY])) if wire else None
        self._timer_at: float | None = None
        self._timer_token = 0
        self.core = self._new_core(incarnation=0)
        network.attach(self)
        self._pump()

    def _new_core(self, incarnation: int) -> Membership:
        return Membership(
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

    def _now_ms(self) -> int:
        return EPOCH_MS + int(self.sim.now * 1000)

    def _pack_datagram(self, messages: tuple[Message, ...]) -> tuple[Any, int]:
        if self._codec is None:
            size = sealed_size([len(encode_message(m)) for m in messages], self._now_ms())
            return (self.node_id, messages), size
        packets = self._codec.encode_datagrams(messages, self._now_ms())
        return packets, sum(len(p) for p in packets)

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
                    got = self._codec.decode_frame(packet[FRAME_HEADER.size :], self._now_ms())
                else:
                    got = self._codec.decode_datagram(packet, self._now_ms())
            except RemoteProtocolError:
                self.rejected += 1
                return None
            sender = got.envelope.sender
            out.extend(got.envelope.messages)
        return (sender, tuple(out)) if sender is not None else None

    def _pack_frames(self, messages: tuple[Message, ...]) -> Any:
        if self._codec is None:
            return (self.node_id, messages)
        return self._codec.encode_frames(messages, self._now_ms())

    # --- inputs ---------------------------------------------------------------------------

    def deliver(self, source: Any, payload: Any, size: int) -> None:
        """A datagram arrives (called by the network)."""
        if self.slow_s:
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
        for message in messages:
            self.core.receive(self.sim.now, sender, source, message)
        self._pump()

    def answer(self, source: Any, request: Any) -> Any:
        """A TCP request arrives (called by the network); returns the reply payload."""
        unpacked = self._unpack(request, frames=True)
        if unpacked is None:
            return self._pack_frames(())
        sender, messages = unpacked
        reply = self.core.answer_exchange(self.sim.now, sender, messages)
        self._pump()
        return self._pack_frames(reply)

    def _exchange_done(self, core: Membership, exchange_id: int, reply: Any) -> None:
        if self.slow_s:
            self.sim.after(self.slow_s, self._process_exchange_reply, core, exchange_id, reply)
        else:
            self._process_exchange_reply(core, exchange_id, reply)

    def _process_exchange_reply(self, core: Membership, exchange_id: int, reply: Any) -> None:
        if core is not self.core or not self.up:
            return  # an exchange started by a previous life of this node
        messages = None
        if reply is not None:
            unpacked = self._unpack(reply, frames=True)
            messages = unpacked[1] if unpacked is not None else None
        core.exchange_done(self.sim.now, exchange_id, messages)
        self._pump()

    def _on_timer(self, token: int) -> None:
        if token != self._timer_token or not self.up:
            return
        self._timer_at = None
        self.core.handle_timer(self.sim.now)
        self._pump()

    # --- outputs --------------------------------------------------------------------------

    def _pump(self) -> None:
        core = self.core
        for out in core.outputs():
            if isinstance(out, Datagram):
                payload, size = self._pack_datagram(out.messages)
                self.bytes_sent += size
                self.datagrams_sent += 1
                self.network.send(self, out.address, payload, size)
            elif isinstance(out, Exchange):
                done = functools.partial(self._exchange_done, core, out.id)
                self.network.exchange(
                    self, out.address, self._pack_frames(out.request), out.deadline, done
                )
        for event in core.events():
            if self.on_event is not None:
                self.on_event(self, event)
        when = core.get_timer()
        if when is not None and when != self._timer_at:
            self._timer_at = when
            self._timer_token += 1
            self.sim.at(when, self._on_timer, self._timer_token)

    # --- behaviours -----------------------------------------------------------------------

    def join(self, addresses: Sequence[Address]) -> None:
        """Join through `addresses` (push-pull with each)."""
        self.core.join(self.sim.now, addresses)
        self._pump()

    def crash(self) -> None:
        """Stop answering anything, as `kill -9` or a power cut would."""
        self.up = False
        self._timer_token += 1
        self._timer_at = None

    def restart(self, *, keep_state: bool = True) -> None:
        """Come back up. With `keep_state`, as the daemon does: the persisted incarnation
        and member table, rejoining known members without seeds. Without: a wiped disk,
        incarnation 0, rejoining through the seeds."""
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
        self.core.join(self.sim.now, addresses)
        self._pump()

    def leave(self, timeout_s: float = 5.0) -> None:
        """Leave gracefully: broadcast LEAVE, keep gossiping until it has spread, stop."""
        self.core.leave(self.sim.now)
        self._pump()
        deadline = self.sim.now + timeout_s

        def check() -> None:
            if self.core.leave_done() or self.sim.now >= deadline:
                self.crash()
            else:
                self.sim.after(self.config.gossip_interval_s, check)

        self.sim.after(self.config.gossip_interval_s, check)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Change tags at runtime."""
        self.tags = tags
        self.core.set_tags(self.sim.now, tags)
        self._pump()

    def send_raw(self, address: Address, messages: Sequence[Message], *, tcp: bool = False) -> None:
        """Send `messages` as they are, bypassing the core (a hostile or buggy peer)."""
        if tcp:
            payload = self._pack_frames(tuple(messages))
            self.network.exchange(self, address, payload, self.sim.now + 10, lambda _: None)
        else:
            payload, size = self._pack_datagram(tuple(messages))
            self.network.send(self, address, payload, size)

    def inject(self, source: Address, sender: NodeId, messages: Sequence[Message]) -> None:
        """Hand messages to the core as if they arrived (already decoded) from `source`."""
        for message in messages:
            self.core.receive(self.sim.now, sender, source, message)
        self._pump()

    def view(self) -> dict[NodeId, MemberStatus]:
        """This node's opinion of every other node."""
        return {m.node: m.status for m in self.core.members()}

"""SWIM + Lifeguard membership as a sans-IO state machine (memberlist's `state.go`).

Theory of operation
-------------------
The core never touches a socket or a clock. A driver (the daemon, the simulator, a test)
feeds it inputs and carries out what it asks for:

* inputs: `receive(now, sender, address, message)` for each decoded message of a datagram,
  `handle_timer(now)` whenever `get_timer()` is reached, `exchange_done(now, id, reply)`
  when a TCP exchange the core asked for finishes (reply None if it failed),
  `answer_exchange(now, sender, request)` when a peer opens one with us, and the API calls
  `join`, `leave`, `set_tags`;
* outputs: `outputs()` drains `Datagram`s to send and `Exchange`s (TCP request/reply) to
  run; `events()` drains `MemberEvent`s. After any input the driver re-reads `get_timer()`.

Every `probe_interval` (× local health) we probe the next member of a shuffled ring: a
PING, and after `probe_timeout` (× local health) PING_REQs through `indirect_checks` other
members (which answer NACK if they cannot reach it either) plus a PING over TCP. No ACK by
the end of the interval: we suspect the member. A suspicion becomes DEAD when its Lifeguard
timer (shrinking with independent confirmations) runs out, unless the member refutes by
announcing ALIVE with a higher incarnation. Updates are queued in a transmit-limited
broadcast queue and piggybacked on every datagram, and gossip rounds push them to a few
random members; push-pull exchanges full state over TCP now and then, and reconnect
attempts to dead members and seeds merge healed partitions. How claims change a member is
the table in `members.py`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import nacl.signing

from nodenet.protocol import digest
from nodenet.protocol.awareness import Awareness
from nodenet.protocol.broadcast_queue import BroadcastQueue
from nodenet.protocol.config import PROFILES, MembershipConfig, push_pull_interval
from nodenet.protocol.config import suspicion_timeout as min_suspicion_timeout
from nodenet.protocol.errors import LocalProtocolError
from nodenet.protocol.identity import NodeId, node_id_of
from nodenet.protocol.members import EventKind, Member, MemberEvent, MemberInfo, MemberStatus
from nodenet.protocol.messages import (
    MAX_DIGEST_MEMBERS,
    PING_PREFIX_LEN,
    Ack,
    Address,
    Alive,
    Claim,
    Dead,
    Error,
    Leave,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullDigest,
    ShortPing,
    Suspect,
    Tags,
    encode_message,
    make_tags,
)
from nodenet.protocol.suspicion import Suspicion
from nodenet.protocol.wire import MAX_ENVELOPE_OVERHEAD

__all__ = ["INCARNATION_CEILING", "Datagram", "Exchange", "Membership", "MembershipStats", "Output"]

PUSH_PULL_CHUNK = 256  # members per PUSH_PULL message: ~200 KB, well inside a 1 MiB frame
DIGEST_SEND_LIMIT = 64  # states sent by datagram per push-pull; the rest waits for the next
_LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)

INCARNATION_CEILING = 2**63
"""Claims about a member's state at or above this incarnation are ignored. A node adds one
per refutation or tag change, so no honest one gets near it; a hostile claim at 2^64 − 1
(a valid uint64) could otherwise never be refuted, and refuting one just below would leave
us no incarnation for our next tag change."""


def _is_live(member: Member) -> bool:
    return member.status in _LIVE


def _is_alive(member: Member) -> bool:
    return member.status is MemberStatus.ALIVE


def _is_dead(member: Member) -> bool:
    return member.status is MemberStatus.DEAD


@dataclass(frozen=True, slots=True)
class Datagram:
    """Send `messages` in one datagram to `address`."""

    address: Address
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Exchange:
    """Open TCP to `address`, send `request`, read the reply; report it to `exchange_done`.

    The driver must report every exchange exactly once, with None on failure, and give up
    at `deadline` (the core's clock).
    """

    id: int
    address: Address
    request: tuple[Message, ...]
    deadline: float


Output = Datagram | Exchange


@dataclass(slots=True)
class MembershipStats:
    """Counters since start (the daemon exports them as Prometheus metrics)."""

    probes: int = 0
    probe_acks: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    nacks_received: int = 0
    tcp_fallback_acks: int = 0
    """Probes answered only over TCP: UDP is being lost or blocked somewhere."""
    suspicions: int = 0
    confirmations: int = 0
    refutations: int = 0
    deaths_declared: int = 0
    push_pulls: int = 0
    push_pull_failures: int = 0
    push_pulls_in_sync: int = 0
    """Digest push-pulls we answered at once: the requester's table agreed with ours."""
    reconnect_attempts: int = 0
    gossip_datagrams: int = 0
    ping_reqs_refused: int = 0
    """PING_REQs for a node we do not believe live (answered with a NACK, never relayed)."""
    accusations_ignored: int = 0
    """SUSPECT and DEAD claims dropped unheard: the accuser is not a member we believe
    alive, or the incarnation is at or above `INCARNATION_CEILING`."""


@dataclass(slots=True)
class _Probe:
    member: NodeId
    address: Address
    seq: int
    started: float
    expected_nacks: int = 0
    nacks: int = 0
    acked: bool = False
    timeout: int | None = None
    """The pending probe-timeout timer (cancelled when the ACK comes first)."""


@dataclass(slots=True)
class _Relay:
    requester: Address
    requester_seq: int
    want_nack: bool
    timer: int = 0


@dataclass(slots=True)
class _PendingExchange:
    kind: str  # "probe", "push_pull"
    seq: int = 0
    address: Address | None = None
    """Push-pull: where to send the states the responder wants (`digest.py`)."""


_Timer = tuple[float, int, Callable[[float], None]]
"""(when, order, action): plain tuples, because the heap compares them on every push and
pop and a tuple comparison is several times cheaper than an `order=True` dataclass's."""


class Membership:
    """One node's view of the cluster and the protocol that keeps it true."""

    def __init__(
        self,
        *,
        key: nacl.signing.SigningKey,
        address: Address,
        now: float,
        rng: random.Random,
        config: MembershipConfig | None = None,
        tags: Mapping[str, str] | Tags = (),
        incarnation: int = 0,
        seeds: Sequence[Address] = (),
        max_datagram_size: int = 1400,
    ) -> None:
        self._key = key
        self.node_id = node_id_of(key)
        self._ping_prefix = bytes(self.node_id[:PING_PREFIX_LEN])
        self.config = config or PROFILES["lan"]
        self._rng = rng
        self._address = address
        self._tags = make_tags(tags) if isinstance(tags, Mapping) else tags
        self._incarnation = incarnation
        self._alive = Alive.create(key, incarnation=incarnation, address=address, tags=self._tags)
        self._seeds = tuple(seeds)
        self._datagram_budget = max_datagram_size - MAX_ENVELOPE_OVERHEAD
        self._members: dict[NodeId, Member] = {}
        self._tally = digest.entry_hash(self._alive, None)
        """`digest.table_tally` of our table (ourselves and every member), kept exact on every
        change: an exchange with a table that agrees costs no pass over ours."""
        self._counts = dict.fromkeys(MemberStatus, 0)
        """Members in each status, kept exact on every change: `cluster_size()` is O(1)."""
        self._ring: list[NodeId] = []
        self._ring_index = 0
        self._awareness = Awareness(self.config.awareness_max_multiplier)
        self._broadcasts = BroadcastQueue(
            retransmit_mult=self.config.retransmit_mult, max_items=self.config.max_broadcasts
        )
        # Store updates ride along too, but only in the room membership updates leave:
        # knowing who is alive must never wait behind a burst of writes.
        # They are also sent twice as often: a membership update missed here is caught by
        # the next probe or push-pull, an entry missed waits for anti-entropy.
        self._payloads = BroadcastQueue(
            retransmit_mult=2 * self.config.retransmit_mult, max_items=self.config.max_broadcasts
        )
        self._timers: list[_Timer] = []
        self._timer_order = itertools.count()
        self._cancelled: set[int] = set()
        """Orders of timers that must not run (an ACKed probe's timeout): skipped, never
        reported by `get_timer`, so they cost the driver no wake-up."""
        self._latest = -math.inf
        """The latest `now` of any input: the driver has been called up to then."""
        self._outputs: list[Output] = []
        self._events: list[MemberEvent] = []
        self._seq = rng.randrange(2**32)
        self._exchange_ids = itertools.count(1)
        self._probe: _Probe | None = None
        self._probe_rider: Message | None = None
        self._relays: dict[int, _Relay] = {}
        self._exchanges: dict[int, _PendingExchange] = {}
        self._leaving = False
        self._rtts: list[float] = []
        self.stats = MembershipStats()
        # Stagger the periodic tasks so a cluster started at once does not tick in step.
        c = self.config
        self._at(now + rng.uniform(0, c.probe_interval_s), self._tick_probe)
        # Gossip rounds keep to a grid of `gossip_interval` steps from a random phase, but
        # the timer is armed only while something is queued: a round with nothing to send
        # would be a wake-up for nothing (five a second, idle). `_gossip_next` is the next
        # point of the grid a round has not been considered at.
        self._gossip_next = now + rng.uniform(0, c.gossip_interval_s)
        self._gossip_armed = False
        self._at(now + rng.uniform(0, c.push_pull_interval_s), self._tick_push_pull)
        self._at(now + rng.uniform(0, c.reconnect_interval_s), self._tick_reconnect)

    # --- queries ------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        """Our current incarnation number (persist it: a restart must start above it)."""
        return self._incarnation

    @property
    def awareness(self) -> int:
        """Lifeguard local health score: 0 is healthy, higher means we are probably slow."""
        return self._awareness.score

    @property
    def leaving(self) -> bool:
        """Whether `leave` was called."""
        return self._leaving

    def self_info(self, now: float) -> MemberInfo:
        """Our own entry as others see it."""
        return MemberInfo(
            node=self.node_id,
            address=self._address,
            tags=self._tags,
            status=MemberStatus.LEFT if self._leaving else MemberStatus.ALIVE,
            incarnation=self._incarnation,
            changed_at=now,
        )

    def members(self) -> list[MemberInfo]:
        """Every other member we know, tombstones included."""
        return [m.info() for m in self._members.values()]

    def member(self, node: NodeId) -> MemberInfo | None:
        """What we know about `node`, if anything."""
        m = self._members.get(node)
        return m.info() if m else None

    def states(self) -> list[MemberState]:
        """Signed state of every member and ourselves (what push-pull sends, and what the
        daemon persists so that a restart can rejoin without seeds)."""
        return [MemberState(alive, status) for alive, status in self._pairs()]

    def _pairs(self) -> list[digest.Pair]:
        """`states()` as `(alive, status claim)` pairs (no object per member: digests)."""
        return [(self._alive, None), *((m.alive, m.status_claim) for m in self._members.values())]

    def cluster_size(self) -> int:
        """Members believed alive or suspect, plus ourselves (N in the formulas)."""
        counts = self._counts
        return 1 + counts[MemberStatus.ALIVE] + counts[MemberStatus.SUSPECT]

    def status_counts(self) -> dict[MemberStatus, int]:
        """How many members we hold in each status (ourselves not included)."""
        return dict(self._counts)

    def random_alive_member(self, rng: random.Random) -> MemberInfo | None:
        """A member believed ALIVE, chosen uniformly with `rng` (None if there is none),
        without building a list of every member."""
        chosen = self._sample(rng, 1, _is_alive)
        return chosen[0].info() if chosen else None

    def leave_done(self) -> bool:
        """After `leave`: the LEAVE has been sent its full number of times (or nobody is
        left to tell), so the driver may stop."""
        return self._leaving and (self.node_id not in self._broadcasts or self.cluster_size() == 1)

    # --- driver interface ---------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called."""
        timers = self._timers
        cancelled = self._cancelled
        while timers and cancelled and timers[0][1] in cancelled:
            cancelled.discard(heapq.heappop(timers)[1])
        return timers[0][0] if timers else None

    def handle_timer(self, now: float) -> None:
        """Run everything due at or before `now`."""
        timers = self._timers
        cancelled = self._cancelled
        if now > self._latest:
            self._latest = now
        while timers and timers[0][0] <= now:
            _, order, action = heapq.heappop(timers)
            if cancelled and order in cancelled:
                cancelled.discard(order)
                continue
            action(now)

    def outputs(self) -> list[Output]:
        """Datagrams and exchanges to carry out, in order (drains)."""
        out, self._outputs = self._outputs, []
        return out

    def events(self) -> list[MemberEvent]:
        """Membership changes since the last call (drains)."""
        out, self._events = self._events, []
        return out

    def probe_rtts(self) -> list[float]:
        """Round-trip times (seconds, PING to ACK) of successful probes since the last call."""
        out, self._rtts = self._rtts, []
        return out

    def receive(
        self,
        now: float,
        sender: NodeId,
        address: Address,
        message: Message,
        minor: int | None = None,
    ) -> bool:
        """Handle one message from a datagram `sender` sent from `address`; `minor` is the
        protocol minor version its envelope stated (decides which PING we send it).

        Returns False for messages that are not about membership (the store's), so the
        driver can route them elsewhere.
        """
        handler = self._handlers.get(type(message))
        if handler is not None:
            if now > self._latest:
                self._latest = now
            handler(self, now, sender, address, message)
        if minor is not None and (member := self._members.get(sender)) is not None:
            member.speaks_1_1_at = member.incarnation if minor >= 1 else -1
        return handler is not None

    def answer_exchange(
        self, now: float, sender: NodeId, request: Sequence[Message]
    ) -> tuple[Message, ...]:
        """Answer a TCP request from `sender`: a PING (fallback probe) or a push-pull."""
        self._latest = max(self._latest, now)
        pushes = [m for m in request if isinstance(m, PushPull)]
        if pushes:
            for push in pushes:
                self._merge(now, push)
            theirs = [e for m in request if isinstance(m, PushPullDigest) for e in m.members]
            if not theirs:  # a join, a reconnect, or a 1.0 peer: the whole table
                return self._push_pull_messages(join=False)
            if len(theirs) > 2 * len(self._members) + MAX_DIGEST_MEMBERS:
                # An honest digest is as long as the sender's table, about ours: a much
                # longer one is a flood, refused before it costs a dict entry per member.
                return (Error(code="too_large", message=f"digest of {len(theirs)} members"),)
            if digest.in_sync(theirs, len(self._members) + 1, self._tally):
                self.stats.push_pulls_in_sync += 1
                return self._chunked((), join=False)  # the tables agree
            send, wanted = digest.answer(self._pairs(), theirs)
            return (*self._chunked([MemberState(*pair) for pair in send], join=False), *wanted)
        pings = [m for m in request if isinstance(m, Ping)]
        if pings:
            return tuple(Ack(seq=p.seq) for p in pings if p.target == self.node_id) or (
                Error(code="wrong_node", message="this is not the node you probed"),
            )
        return (Error(code="unsupported", message="expected PING or PUSH_PULL"),)

    def exchange_done(self, now: float, exchange_id: int, reply: Sequence[Message] | None) -> bool:
        """The outcome of an `Exchange`: the reply messages, or None if it failed.

        Returns whether the exchange did its job (an ACK, or a peer's state merged)."""
        self._latest = max(self._latest, now)
        pending = self._exchanges.pop(exchange_id, None)
        if pending is None:
            return False
        if pending.kind == "probe":
            probe = self._probe
            acked = reply is not None and any(
                isinstance(m, Ack) and m.seq == pending.seq for m in reply
            )
            if acked and probe is not None and probe.seq == pending.seq and not probe.acked:
                self.stats.tcp_fallback_acks += 1
                self._probe_acked(probe, now)
            return acked
        pushes = [m for m in reply or () if isinstance(m, PushPull)]
        if not pushes:
            self.stats.push_pull_failures += 1
            return False
        for push in pushes:
            self._merge(now, push)
        wanted = [e for m in reply or () if isinstance(m, PushPullDigest) for e in m.members]
        if wanted and pending.address is not None:
            pairs = digest.wanted_states(
                self._pairs(), wanted, DIGEST_SEND_LIMIT, start=self._rng.randrange(2**16)
            )
            self._send_states(pending.address, [MemberState(*pair) for pair in pairs])
        return True

    # --- API ----------------------------------------------------------------------------

    def join(self, now: float, addresses: Iterable[Address]) -> list[int]:
        """Push-pull with each address; returns the exchange ids (see `exchange_done`)."""
        self._latest = max(self._latest, now)
        return [self._start_push_pull(now, address, join=True) for address in addresses]

    def leave(self, now: float) -> None:
        """Announce a signed LEAVE and stop probing; poll `leave_done` before stopping."""
        if self._leaving:
            return
        self._latest = max(self._latest, now)
        self._leaving = True
        self._incarnation += 1
        if self._probe is not None and self._probe.timeout is not None:
            self._cancel(self._probe.timeout)
        self._probe = None
        self._queue(Leave.create(self._key, incarnation=self._incarnation), self.node_id)
        self._gossip_round(now)  # at once, off the grid; the grid goes on as before

    def set_tags(self, now: float, tags: Mapping[str, str]) -> None:
        """Replace our tags and announce them with a new incarnation."""
        if self._leaving:
            raise LocalProtocolError("cannot change tags while leaving")
        self._latest = max(self._latest, now)
        self._tags = make_tags(tags)
        self._announce(now, self._incarnation + 1)
        self._events.append(MemberEvent(EventKind.UPDATED, self.self_info(now), now))

    def restore(self, now: float, states: Iterable[MemberState]) -> None:
        """Load members remembered from before a restart, without events.

        Their last known state is kept; the driver should `join` a few of them (a restarted
        node rejoins the peers it knew), and reconnects retry the dead ones.
        """
        self._latest = max(self._latest, now)
        for state in states:
            if state.alive.node == self.node_id:
                # Start above what the cluster may remember of our previous life.
                seen = max(state.alive.incarnation, getattr(state.status, "incarnation", 0))
                if seen >= self._incarnation:
                    self._announce(now, seen + 1, broadcast=False)
            elif state.alive.node not in self._members:
                self._add_silently(now, state)

    def send_with_next_probe(self, message: Message) -> None:
        """Send a store message (a STORE_SUMMARY) with our next PING: to the member we probe
        next (each in turn), in a datagram we send anyway. A newer one replaces it."""
        self._probe_rider = message

    # --- time ---------------------------------------------------------------------------

    def _at(self, when: float, action: Callable[[float], None]) -> int:
        """Run `action(now)` at `when`; returns the timer's order, for `_cancel`."""
        order = next(self._timer_order)
        heapq.heappush(self._timers, (when, order, action))
        return order

    def _cancel(self, order: int) -> None:
        """Make a timer from `_at` never run (nor count as due)."""
        self._cancelled.add(order)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 2**32
        return self._seq

    # --- sending ------------------------------------------------------------------------

    def _send(self, address: Address, messages: Sequence[Message]) -> None:
        """Queue a datagram, filling the room left with piggybacked updates."""
        room = self._datagram_budget - sum(len(encode_message(m)) for m in messages)
        self._outputs.append(Datagram(address, (*messages, *self._take_updates(room))))

    def _take_updates(self, room: int) -> list[Message]:
        """Queued updates that fit in `room` bytes: membership first, then store payloads."""
        n = self.cluster_size()
        updates, used = self._broadcasts.take_sized(room, n)
        return updates + self._payloads.take(room - used, n)

    def broadcast(self, message: Message, key: Hashable | None = None) -> None:
        """Queue a store update (ENTRY, ENTRY_ANNOUNCE) for piggybacking and gossip.

        It is sent `2 · retransmit_mult · ceil(log10(N+1))` times, in whatever room
        membership updates leave; an update with the same `key` replaces a queued one."""
        self._payloads.queue(message, key)
        self._arm_gossip()

    def _exchange(
        self,
        now: float,
        address: Address,
        request: tuple[Message, ...],
        pending: _PendingExchange,
        deadline: float,
    ) -> int:
        exchange_id = next(self._exchange_ids)
        self._exchanges[exchange_id] = pending
        self._outputs.append(Exchange(exchange_id, address, request, deadline))
        return exchange_id

    # --- probing ------------------------------------------------------------------------

    def _tick_probe(self, now: float) -> None:
        if self._probe is not None:
            self._finish_probe(now, self._probe)
        interval = self._awareness.scale(self.config.probe_interval_s)
        self._at(now + interval, self._tick_probe)
        if self._leaving:
            return
        member = self._next_probe_target()
        if member is None:
            return
        seq = self._next_seq()
        probe = _Probe(member.node, member.alive.address, seq, now)
        self._probe = probe
        self.stats.probes += 1
        messages: list[Message] = [self._ping(member, seq)]
        if member.status is MemberStatus.SUSPECT and member.status_claim is not None:
            # Lifeguard buddy system: tell the suspect directly, so it can refute at once.
            messages.append(member.status_claim)
        if self._probe_rider is not None and member.speaks_1_1:  # a 1.0 node would skip it
            messages.append(self._probe_rider)
            self._probe_rider = None
        self._send(probe.address, messages)
        timeout = self._awareness.scale(self.config.probe_timeout_s)
        probe.timeout = self._at(
            now + timeout, lambda t: self._probe_indirectly(t, probe, now + interval)
        )

    def _next_probe_target(self) -> Member | None:
        if self.config.probe_order == "random":
            # For experiments: the SWIM paper's uniform choice among the live members.
            chosen = self._sample(self._rng, 1, _is_live)
            return chosen[0] if chosen else None
        for _ in range(len(self._ring) + 1):
            if self._ring_index >= len(self._ring):
                self._ring = [n for n in self._ring if n in self._members]
                self._rng.shuffle(self._ring)
                self._ring_index = 0
                if not self._ring:
                    return None
            member = self._members.get(self._ring[self._ring_index])
            self._ring_index += 1
            if member is not None and member.status in _LIVE:
                return member
        return None

    def _probe_indirectly(self, now: float, probe: _Probe, deadline: float) -> None:
        probe.timeout = None
        if self._probe is not probe or probe.acked:
            return
        target = probe.member
        chosen = self._sample(
            self._rng,
            self.config.indirect_checks,
            lambda m: m.status is MemberStatus.ALIVE and m.node != target,
        )
        for helper in chosen:
            self._send(
                helper.alive.address,
                [PingReq(seq=probe.seq, target=probe.member, address=probe.address, nack=True)],
            )
        probe.expected_nacks = len(chosen)
        self.stats.indirect_probes += 1
        self._exchange(
            now,
            probe.address,
            (Ping(seq=probe.seq, target=probe.member),),
            _PendingExchange("probe", probe.seq),
            deadline,
        )

    def _probe_acked(self, probe: _Probe, now: float) -> None:
        probe.acked = True
        if probe.timeout is not None:
            self._cancel(probe.timeout)  # nothing left to do at the timeout: no wake-up
            probe.timeout = None
        self.stats.probe_acks += 1
        self._awareness.apply_delta(-1)
        if len(self._rtts) < 1024:  # drained by the driver; bounded if it never does
            self._rtts.append(now - probe.started)

    def _finish_probe(self, now: float, probe: _Probe) -> None:
        self._probe = None
        if probe.acked:
            return
        self.stats.probe_failures += 1
        # Lifeguard: missing NACKs mean *we* may be the problem; without helpers to tell
        # us, every failed probe counts against our own health.
        if probe.expected_nacks:
            self._awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            self._awareness.apply_delta(1)
        member = self._members.get(probe.member)
        if member is not None and member.status in _LIVE:
            suspect = Suspect.create(self._key, node=member.node, incarnation=member.incarnation)
            self._apply(now, suspect)

    # --- message handlers ---------------------------------------------------------------

    def _on_ping(self, now: float, sender: NodeId, address: Address, ping: Ping) -> None:
        if ping.target == self.node_id:  # a ping for a previous owner of this address is not ours
            self._send(address, [Ack(seq=ping.seq)])

    def _on_short_ping(self, now: float, sender: NodeId, address: Address, ping: ShortPing) -> None:
        if ping.target == self._ping_prefix:
            self._send(address, [Ack(seq=ping.seq)])

    def _ping(self, member: Member, seq: int) -> Ping | ShortPing:
        """A PING for `member`: with the 8-byte target prefix if it speaks 1.1 (24 bytes
        fewer in every probe), else with its whole id."""
        if member.speaks_1_1:
            return ShortPing(seq=seq, target=member.node[:PING_PREFIX_LEN])
        return Ping(seq=seq, target=member.node)

    def _on_ping_req(self, now: float, sender: NodeId, address: Address, req: PingReq) -> None:
        if self._leaving:
            return
        member = self._members.get(req.target)
        if member is None or member.status not in _LIVE:
            # We probe only members we believe live, and only at the address we know for
            # them: a PING_REQ must not make us send to an address of the requester's
            # choosing (a cluster-key holder could aim our PINGs anywhere). A NACK says we
            # could not help, so the requester does not take our silence for its own
            # slowness (Lifeguard counts missing NACKs against it).
            self.stats.ping_reqs_refused += 1
            if req.nack:
                self._send(address, [Nack(seq=req.seq)])
            return
        seq = self._next_seq()
        relay = self._relays[seq] = _Relay(address, req.seq, req.nack)
        self._send(member.alive.address, [self._ping(member, seq)])
        relay.timer = self._at(
            now + self.config.probe_timeout_s, lambda t: self._relay_expired(seq)
        )

    def _relay_expired(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.want_nack:
            self._send(relay.requester, [Nack(seq=relay.requester_seq)])

    def _on_ack(self, now: float, sender: NodeId, address: Address, ack: Ack) -> None:
        probe = self._probe
        if probe is not None and ack.seq == probe.seq:
            if not probe.acked:
                self._probe_acked(probe, now)
            return
        relay = self._relays.pop(ack.seq, None)
        if relay is not None:
            self._cancel(relay.timer)
            self._send(relay.requester, [Ack(seq=relay.requester_seq)])

    def _on_nack(self, now: float, sender: NodeId, address: Address, nack: Nack) -> None:
        probe = self._probe
        if probe is not None and nack.seq == probe.seq:
            probe.nacks += 1
            self.stats.nacks_received += 1

    def _on_claim(self, now: float, sender: NodeId, address: Address, claim: Claim) -> None:
        self._apply(now, claim)

    def _on_push_pull(self, now: float, sender: NodeId, address: Address, push: PushPull) -> None:
        self._merge(now, push)

    _handlers: ClassVar[dict[type[Message], Callable[[Any, float, NodeId, Address, Any], None]]] = {
        Ping: _on_ping,
        ShortPing: _on_short_ping,
        PingReq: _on_ping_req,
        Ack: _on_ack,
        Nack: _on_nack,
        Alive: _on_claim,
        Suspect: _on_claim,
        Dead: _on_claim,
        Leave: _on_claim,
        PushPull: _on_push_pull,
    }

    # --- claims -------------------------------------------------------------------------

    def _apply(self, now: float, claim: Claim) -> None:
        """Apply one verified claim following the state table (`members.py`)."""
        if isinstance(claim, Suspect | Dead) and not self._credible(claim):
            self.stats.accusations_ignored += 1
            return
        if claim.node == self.node_id:
            self._claim_about_us(now, claim)
            return
        member = self._members.get(claim.node)
        if member is None:
            if isinstance(claim, Alive):
                self._add(now, claim)
            return
        if claim is member.alive or claim is member.status_claim:
            # The very claim that made the member what it is: a copy going round. The table
            # ignores it (same incarnation; its accuser is counted), so skip asking it.
            return
        row = member.transition_for(claim)
        if row is None:
            return
        if isinstance(claim, Suspect) and member.status is MemberStatus.SUSPECT:
            self._confirm(now, member, claim)
            return
        before = member.info()
        self._tally -= digest.entry_hash(member.alive, member.status_claim)
        if isinstance(claim, Alive):
            member.alive = claim
            member.status_claim = None
        else:
            assert isinstance(claim, Suspect | Dead | Leave)
            member.status_claim = claim
        self._tally += digest.entry_hash(member.alive, member.status_claim)
        member.incarnation = claim.incarnation
        member.suspicion = None
        if member.status is not row.to:
            counts = self._counts
            counts[member.status] -= 1
            counts[row.to] += 1
            member.status = row.to
            member.changed_at = now
        self._queue(claim, claim.node)
        if row.to is MemberStatus.SUSPECT:
            assert isinstance(claim, Suspect)
            self._start_suspicion(now, member, claim)
        elif row.to in (MemberStatus.DEAD, MemberStatus.LEFT):
            self._at(now + self.config.reap_after_s, lambda t: self._reap(t, member, now))
        kind = row.event
        if kind is EventKind.UPDATED and (before.address, before.tags) == (
            member.alive.address,
            member.alive.tags,
        ):
            kind = None  # a new incarnation alone is not news to the user
        if kind is not None:
            self._events.append(MemberEvent(kind, member.info(), now))

    def _credible(self, claim: Suspect | Dead) -> bool:
        """Whether an accusation is worth hearing (docs/protocol.md §11).

        Not at or above `INCARNATION_CEILING`: the accused could not refute it. About us,
        from anyone: refuting costs one ALIVE, and a peer we believe dead may be a live
        member on the other side of a healed partition, whose word the rest of the
        cluster hears. About others, only from ourselves or a member we believe
        alive or suspect: a holder of the cluster key that is not a member (or no longer
        is) must not be able to start a suspicion, let alone a death."""
        if claim.incarnation >= INCARNATION_CEILING:
            return False
        accuser = claim.accuser
        if claim.node == self.node_id or accuser == self.node_id:
            return True
        member = self._members.get(accuser)
        return member is not None and member.status in _LIVE

    def _add(self, now: float, alive: Alive) -> None:
        member = Member(
            alive=alive, status=MemberStatus.ALIVE, incarnation=alive.incarnation, changed_at=now
        )
        self._members[alive.node] = member
        self._tally += digest.entry_hash(alive, None)
        self._counts[MemberStatus.ALIVE] += 1
        self._insert_into_ring(alive.node)
        self._queue(alive, alive.node)
        self._events.append(MemberEvent(EventKind.JOINED, member.info(), now))

    def _add_silently(self, now: float, state: MemberState) -> None:
        """A member first heard of as a tombstone (push-pull, restore): no events."""
        status = state.status
        if isinstance(status, Leave):
            kind = MemberStatus.LEFT
        elif isinstance(status, Dead):
            kind = MemberStatus.DEAD
        else:
            kind = MemberStatus.ALIVE
        incarnation = max(state.alive.incarnation, status.incarnation if status else 0)
        member = Member(
            alive=state.alive,
            status=kind,
            incarnation=incarnation,
            changed_at=now,
            status_claim=status if kind is not MemberStatus.ALIVE else None,
        )
        self._members[state.alive.node] = member
        self._tally += digest.entry_hash(member.alive, member.status_claim)
        self._counts[kind] += 1
        self._insert_into_ring(state.alive.node)
        self._arm_gossip()  # a new gossip target (alive, or recently dead)
        if kind is not MemberStatus.ALIVE:
            self._at(now + self.config.reap_after_s, lambda t: self._reap(t, member, now))

    def _insert_into_ring(self, node: NodeId) -> None:
        ring = self._ring
        position = self._rng.randint(0, len(ring))
        # A new list rather than an insert in place (the same O(N)): a ring is never
        # changed once built, so a driver may hand many cores one list (the simulator's
        # converged start does, saving 8 bytes per member per node).
        self._ring = [*ring[:position], node, *ring[position:]]
        if position < self._ring_index:
            self._ring_index += 1

    def _claim_about_us(self, now: float, claim: Claim) -> None:
        if self._leaving:
            return
        if claim.incarnation >= INCARNATION_CEILING:
            self.stats.accusations_ignored += 1  # an ALIVE of ours we did not sign so high
            return
        if isinstance(claim, Alive):
            stale = claim.incarnation < self._incarnation or (
                claim.incarnation == self._incarnation and claim.claim == self._alive.claim
            )
            if stale:
                return
        elif claim.incarnation < self._incarnation:
            return
        # Someone believes something about us that is not our current ALIVE: refute it.
        self.stats.refutations += 1
        self._awareness.apply_delta(1)  # being suspected hints that we are the slow one
        self._announce(now, max(self._incarnation, claim.incarnation) + 1)
        self._events.append(MemberEvent(EventKind.REFUTED, self.self_info(now), now))

    def _announce(self, now: float, incarnation: int, *, broadcast: bool = True) -> None:
        self._incarnation = incarnation
        self._tally -= digest.entry_hash(self._alive, None)
        self._alive = Alive.create(
            self._key, incarnation=incarnation, address=self._address, tags=self._tags
        )
        self._tally += digest.entry_hash(self._alive, None)
        if broadcast:
            self._queue(self._alive, self.node_id)

    # --- suspicion ----------------------------------------------------------------------

    def _start_suspicion(self, now: float, member: Member, claim: Suspect) -> None:
        self.stats.suspicions += 1
        n = self.cluster_size()
        expected = self.config.suspicion_mult - 2
        if n - 2 < expected:
            expected = 0
        minimum = min_suspicion_timeout(self.config.suspicion_mult, n, self.config.probe_interval_s)
        maximum = self.config.suspicion_max_timeout_mult * minimum
        suspicion = Suspicion(
            accuser=claim.accuser, expected=expected, min_s=minimum, max_s=maximum, now=now
        )
        member.suspicion = suspicion
        self._at(suspicion.deadline, lambda t: self._suspicion_expired(t, member, suspicion))

    def _confirm(self, now: float, member: Member, claim: Suspect) -> None:
        suspicion = member.suspicion
        if suspicion is None or not suspicion.confirm(claim.accuser, now):
            return
        self.stats.confirmations += 1
        self._queue(claim, claim.node)  # pass the confirmation on
        self._at(suspicion.deadline, lambda t: self._suspicion_expired(t, member, suspicion))

    def _suspicion_expired(self, now: float, member: Member, suspicion: Suspicion) -> None:
        if member.suspicion is not suspicion or now < suspicion.deadline:
            return  # refuted, superseded, or the deadline moved
        if self._members.get(member.node) is not member:
            return
        self.stats.deaths_declared += 1
        self._apply(now, Dead.create(self._key, node=member.node, incarnation=member.incarnation))

    def _reap(self, now: float, member: Member, since: float) -> None:
        if member.changed_at != since or member.status in _LIVE:
            return
        if self._members.get(member.node) is not member:
            return
        del self._members[member.node]
        self._tally -= digest.entry_hash(member.alive, member.status_claim)
        self._counts[member.status] -= 1
        self._events.append(MemberEvent(EventKind.REAPED, member.info(), now))

    # --- gossip, push-pull, reconnect ---------------------------------------------------

    def _queue(self, claim: Claim, key: Hashable) -> None:
        """Queue a membership update for piggybacking and gossip."""
        self._broadcasts.queue(claim, key)
        self._arm_gossip()

    def _arm_gossip(self) -> None:
        """Make sure a gossip round is due while updates wait: at the next point of the
        grid that has not passed (what the timer would have been, had it ticked idly)."""
        if self._gossip_armed or not (len(self._broadcasts) or len(self._payloads)):
            return
        due = self._gossip_next
        latest = self._latest
        if due <= latest:
            interval = self.config.gossip_interval_s
            due += (math.floor((latest - due) / interval) + 1) * interval
            while due <= latest:  # rounding
                due += interval
            self._gossip_next = due
        self._gossip_armed = True
        self._at(due, self._tick_gossip)

    def _tick_gossip(self, now: float) -> None:
        self._gossip_armed = False
        self._gossip_next = now + self.config.gossip_interval_s
        if self._gossip_round(now):
            self._arm_gossip()
        # Without anyone to gossip to, the timer waits for a member to appear (`_add*`).

    def _gossip_round(self, now: float) -> bool:
        """Send queued updates to `gossip_nodes` random members; False if there is no
        member to send them to."""
        if not len(self._broadcasts) and not len(self._payloads):
            return True
        recent_dead = now - self.config.gossip_to_the_dead_s
        targets = self._sample(
            self._rng,
            self.config.gossip_nodes,
            lambda m: (
                m.status in _LIVE or (m.status is MemberStatus.DEAD and m.changed_at > recent_dead)
            ),
        )
        for member in targets:
            updates = self._take_updates(self._datagram_budget)
            if not updates:
                break
            self.stats.gossip_datagrams += 1
            self._outputs.append(Datagram(member.alive.address, tuple(updates)))
        return bool(targets)

    def _sample(self, rng: random.Random, k: int, accept: Callable[[Member], bool]) -> list[Member]:
        """Up to `k` distinct members for which `accept` holds, uniformly at random.

        Draws from the ring (which holds every member) and rejects misses, so a round
        costs O(k) while most members qualify, instead of a list of all N; only after
        many misses (few qualify: after a mass failure) does it fall back to that list.
        Rejecting a repeated member keeps the draw uniform over k-subsets.
        """
        ring = self._ring
        members = self._members
        chosen: list[Member] = []
        size = len(ring)
        misses = 0 if size else 8 + 4 * k
        while len(chosen) < k and misses < 8 + 4 * k:
            member = members.get(ring[rng.randrange(size)])
            if member is None or not accept(member) or any(c is member for c in chosen):
                misses += 1
            else:
                chosen.append(member)
        if len(chosen) < k:
            pool = [m for m in members.values() if accept(m)]
            chosen = rng.sample(pool, min(k, len(pool)))
        return chosen

    def _tick_push_pull(self, now: float) -> None:
        interval = push_pull_interval(self.config.push_pull_interval_s, self.cluster_size())
        self._at(now + interval, self._tick_push_pull)
        if self._leaving:
            return
        alive = self._sample(self._rng, 1, _is_alive)
        if alive:
            self._start_push_pull(now, alive[0].alive.address, join=False)

    def _tick_reconnect(self, now: float) -> None:
        self._at(now + self.config.reconnect_interval_s, self._tick_reconnect)
        if self._leaving:
            return
        dead = self._counts[MemberStatus.DEAD]
        live = self.cluster_size() - 1
        # Serf's rule: try with probability dead/alive, so a large healthy cluster with a
        # few dead members does not hammer them, while a split cluster retries every time.
        if dead and self._rng.random() < dead / max(1, live):
            self.stats.reconnect_attempts += 1
            (member,) = self._sample(self._rng, 1, _is_dead)
            self._start_push_pull(now, member.alive.address, join=True)
        elif live == 0 and self._seeds:
            self.stats.reconnect_attempts += 1
            self._start_push_pull(now, self._rng.choice(self._seeds), join=True)

    def _start_push_pull(self, now: float, address: Address, *, join: bool) -> int:
        """Full tables for a join or reconnect (the peer may know nothing of us); otherwise
        our own state and the digest of our table (`digest.py`)."""
        self.stats.push_pulls += 1
        request: tuple[Message, ...]
        if join:
            request = self._push_pull_messages(join=True)
        else:
            request = (PushPull(join=False, members=(MemberState(self._alive),)),)
            request += digest.digest(self._pairs())
        return self._exchange(
            now,
            address,
            request,
            _PendingExchange("push_pull", address=address),
            now + self.config.tcp_timeout_s,
        )

    def _push_pull_messages(self, *, join: bool) -> tuple[PushPull, ...]:
        return self._chunked(self.states(), join=join)

    @staticmethod
    def _chunked(states: Sequence[MemberState], *, join: bool) -> tuple[PushPull, ...]:
        """States in PUSH_PULL messages of at most `PUSH_PULL_CHUNK` (at least one message)."""
        return tuple(
            PushPull(join=join, members=tuple(states[i : i + PUSH_PULL_CHUNK]))
            for i in range(0, max(1, len(states)), PUSH_PULL_CHUNK)
        )

    def _send_states(self, address: Address, states: Sequence[MemberState]) -> None:
        """Send member states to `address` as PUSH_PULL datagrams, as many per datagram as
        fit (each datagram also takes piggybacked updates in the room left)."""
        empty = len(encode_message(PushPull(join=False, members=())))
        room = self._datagram_budget - empty - 2  # the member list header may grow by 2
        chunk: list[MemberState] = []
        used = 0
        for state in states:
            size = len(encode_message(PushPull(join=False, members=(state,)))) - empty
            if chunk and used + size > room:
                self._send(address, (PushPull(join=False, members=tuple(chunk)),))
                chunk, used = [], 0
            chunk.append(state)
            used += size
        if chunk:
            self._send(address, (PushPull(join=False, members=tuple(chunk)),))

    def _merge(self, now: float, push: PushPull) -> None:
        """Merge a peer's full state, with the same rules as gossip."""
        members = self._members
        for state in push.members:
            alive = state.alive
            node = alive.node
            status = state.status
            if isinstance(status, Suspect | Dead) and status.incarnation >= INCARNATION_CEILING:
                self.stats.accusations_ignored += 1
                status = None  # not even as a tombstone: the member could never come back
            member = members.get(node)
            if member is not None and alive.incarnation <= member.incarnation:
                # Most of a push-pull is what we know already: `_apply` would ignore this
                # ALIVE (it must be newer), so do not pay for asking it.
                if status is None:
                    continue
            else:
                if member is None and node != self.node_id and isinstance(status, Dead | Leave):
                    self._add_silently(now, state)  # a tombstone we never saw alive
                    continue
                self._apply(now, alive)
                if status is None:
                    continue
                member = members.get(node)
            if isinstance(status, Dead) and member is not None and node != self.node_id:
                # As memberlist: a peer's DEAD becomes our own suspicion, so the member gets
                # a chance to refute instead of dying on hearsay.
                if member.status is MemberStatus.ALIVE and status.incarnation >= member.incarnation:
                    self._apply(
                        now,
                        Suspect.create(self._key, node=node, incarnation=status.incarnation),
                    )
                continue
            self._apply(now, status)

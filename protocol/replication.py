"""Replication policy of the store, sans-IO: eager push, announce and pull, anti-entropy.

Theory of operation
-------------------
Every entry reaches every member two ways. *Eager*: a new entry (written here, or newly
stored from a peer) is gossiped on the membership core's datagrams: small ones whole
(ENTRY), large ones as an id (ENTRY_ANNOUNCE) that receivers pull over TCP from the node
that announced it. Re-gossiping what we newly store makes this an epidemic: it reaches
everyone in O(log N) rounds with high probability. *Anti-entropy* repairs whatever gossip
missed. Every `sync_interval_s` we send a STORE_SUMMARY with our next PING (so to the
member probed next, each in turn): the fingerprint of our whole store (the full range, as
`reconcile.py` computes it) and its count. A member whose own fingerprint differs
reconciles the whole store with us (`reconcile.py`) over TCP; one whose matches does
nothing, so agreeing stores cost ~21 bytes on a datagram sent anyway, per member per
interval, instead of a TCP session. A lost summary is made up for by
the next one. Summary-triggered sessions are limited to one per sender per
`sync_interval_s`. Right after a member joins or comes back (a restart, a healed
partition), and after we join, we reconcile with it directly, without asking first.

Like the membership core, the replicator does no I/O; storage is the driver's. It asks for
work as outputs and is told the results:

* `Ingest(source, entries)`: decode, verify and store these entry bytes; report the ones
  that became new heads with `stored(...)`;
* `Lookup(source, ids)`: which of these ids do we lack? report them with `missing(...)`;
* `Pull(address, ids)`: fetch these entries from `address` (ENTRY_REQUEST over TCP), then
  ingest them;
* `Sync(address)`: run one reconciliation session with `address`;
* `SendSummary()`: compute the fingerprint of the whole store, then call `send_summary`
  with it (it rides on the membership core's next PING);
* `CompareSummary(node, theirs)`: a member's summary: compute ours, then call
  `compare_summary` with both.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nodenet.protocol.entries import SignedEntry, entry_id
from nodenet.protocol.errors import LocalProtocolError
from nodenet.protocol.identity import NodeId
from nodenet.protocol.members import EventKind, MemberEvent, MemberStatus
from nodenet.protocol.membership import Membership
from nodenet.protocol.messages import (
    MAX_IDS,
    Address,
    Entry,
    EntryAnnounce,
    Message,
    StoreSummary,
)
from nodenet.protocol.reconcile import Fingerprint

__all__ = [
    "CompareSummary",
    "Ingest",
    "Lookup",
    "Pull",
    "ReplicationConfig",
    "Replicator",
    "SendSummary",
    "Sync",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationConfig:
    """Timing and sizes of store replication."""

    sync_interval_s: float = 10.0
    """Anti-entropy period: each member sends one store summary per interval, and opens at
    most one summary-triggered session per sender per interval. About the bound on how long
    an entry gossip missed stays missing."""
    sync_after_join_s: float = 0.5
    """Delay before reconciling with a member that just joined or came back (a restart,
    a healed partition), so that a burst of joins is not a burst of sessions at once."""
    piggyback_max_bytes: int = 1000
    """Entries up to this size ride whole on gossip datagrams (1,245 bytes of room at
    most); larger ones are announced by id and pulled over TCP."""

    def __post_init__(self) -> None:
        if not self.sync_interval_s > 0 or not self.sync_after_join_s >= 0:
            raise LocalProtocolError("store.sync_interval_s must be positive")
        if not 64 <= self.piggyback_max_bytes <= 1200:
            raise LocalProtocolError("store.piggyback_max_bytes must be in 64..1200")


@dataclass(frozen=True, slots=True)
class Ingest:
    """Verify and store these encoded entries; call `stored` with the new heads."""

    source: Address | None
    entries: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Lookup:
    """Which of these ids are not stored here? Call `missing` with them."""

    source: Address
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Pull:
    """Fetch these entries from `address` (ENTRY_REQUEST), then ingest them."""

    address: Address
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Sync:
    """Reconcile the store with the member at `address`."""

    node: NodeId
    address: Address


@dataclass(frozen=True, slots=True)
class SendSummary:
    """Compute the fingerprint of the whole store; call `send_summary` with it (it rides on
    our next PING, to the member probed next)."""


@dataclass(frozen=True, slots=True)
class CompareSummary:
    """`node` says its store is `theirs`: compute ours; call `compare_summary` with both."""

    node: NodeId
    theirs: Fingerprint


Output = Ingest | Lookup | Pull | Sync | SendSummary | CompareSummary
_ANY = object()  # timer payload: sync with any member (after we joined)

RECENT_IDS = 8192
"""Ids of entries recently stored or found already held: gossiped copies of them are
dropped before verification. Every node passes an entry on 2 · retransmit_mult ·
ceil(log10(N+1)) times (16 at N = 50), so each node receives about that many copies; without
this, each copy cost an Ed25519 verification and a store lookup. Copies arrive within
seconds of the first, so a window of 8,192 ids (~0.5 MiB) is ample; one that falls out of
it is merely verified again."""


SUMMARY_RESULTS = ("match", "mismatch", "limited", "ignored")
"""What came of a received summary: equal to ours; different, and a session started;
different or not looked at, because a session with its sender started less than an interval
ago (or one of its summaries was looked at less than half an interval ago); or ignored (its
sender is not a member we believe alive, or we are leaving)."""


class Replicator:
    """Decides what to send, pull and reconcile; the driver stores and transports."""

    def __init__(
        self,
        membership: Membership,
        *,
        now: float,
        rng: random.Random,
        config: ReplicationConfig | None = None,
    ) -> None:
        self.membership = membership
        self.config = config or ReplicationConfig()
        self._rng = rng
        self._outputs: list[Output] = []
        self._timers: list[tuple[float, int, NodeId | object | None]] = []
        self._order = itertools.count()
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        """`RECENT_IDS` ids held here, oldest first."""
        self.copies_skipped = 0
        """Gossiped entries dropped unverified: already held here."""
        self._at(now + rng.uniform(0, self.config.sync_interval_s), None)
        self._summary_seen: dict[NodeId, float] = {}
        """When we last looked at a summary from each member (within the last interval)."""
        self._summary_synced: dict[NodeId, float] = {}
        """When a summary from each member last started a session (within the last interval)."""
        self.gossiped = 0
        self.announced = 0
        self.syncs = 0
        self.summaries_sent = 0
        self.summaries_received = dict.fromkeys(SUMMARY_RESULTS, 0)
        """Summaries from members by what came of them (`SUMMARY_RESULTS`)."""

    # --- time -----------------------------------------------------------------------------

    def _at(self, when: float, node: NodeId | object | None) -> None:
        """Schedule a sync: with a given member, or (None) the periodic one."""
        heapq.heappush(self._timers, (when, next(self._order), node))

    def get_timer(self) -> float | None:
        """When `handle_timer` is next due."""
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        """Start the syncs that are due."""
        while self._timers and self._timers[0][0] <= now:
            _, _, node = heapq.heappop(self._timers)
            if node is None:
                self._at(now + self.config.sync_interval_s, None)
                self._summarize(now)
            elif node is _ANY:
                self._sync_with_random(now)
            else:
                self._sync_with(node)

    def _summarize(self, now: float) -> None:
        horizon = now - self.config.sync_interval_s
        for seen in (self._summary_seen, self._summary_synced):
            for node in [n for n, at in seen.items() if at <= horizon]:
                del seen[node]
        if self.membership.leaving or self.membership.cluster_size() == 1:
            return
        self._outputs.append(SendSummary())

    def _sync_with_random(self, now: float) -> None:
        if self.membership.leaving:
            return
        member = self.membership.random_alive_member(self._rng)
        if member is not None:
            self.syncs += 1
            self._outputs.append(Sync(member.node, member.address))

    def _sync_with(self, node: object) -> None:
        assert isinstance(node, NodeId)
        member = self.membership.member(node)
        if (
            member is not None
            and member.status is MemberStatus.ALIVE
            and not self.membership.leaving
        ):
            self.syncs += 1
            self._outputs.append(Sync(member.node, member.address))

    # --- inputs ---------------------------------------------------------------------------

    def outputs(self) -> list[Output]:
        """Work for the driver (drains)."""
        out, self._outputs = self._outputs, []
        return out

    def membership_events(self, now: float, events: Sequence[MemberEvent]) -> None:
        """Reconcile soon with members that joined or came back: they (or we) may have
        missed writes while apart (DESIGN §3.4: "right after a join or a healed partition")."""
        for event in events:
            if event.kind in (EventKind.JOINED, EventKind.REFUTED):
                self._at(now + self.config.sync_after_join_s, event.member.node)

    def joined(self, now: float) -> None:
        """We (re)joined the cluster: reconcile soon with a random member, since we may
        have missed writes while away (a restart, a partition)."""
        heapq.heappush(self._timers, (now + self.config.sync_after_join_s, next(self._order), _ANY))

    def submitted(self, now: float, entry: SignedEntry) -> None:
        """A local write was stored durably: push it."""
        self.held((entry.id,))
        self._spread(entry)

    def held(self, ids: Iterable[bytes]) -> None:
        """These entries are now held here (stored, or found already stored, superseded or
        expired): drop gossiped copies of them without asking the driver to verify them."""
        recent = self._recent
        for item_id in ids:
            recent[item_id] = None
            recent.move_to_end(item_id)
        while len(recent) > RECENT_IDS:
            # O(1): a plain dict's first key is found by walking past the slots of every
            # key deleted before it (they stay until it resizes), O(n) per call.
            recent.popitem(last=False)

    def stored(self, now: float, entries: Sequence[SignedEntry]) -> None:
        """Entries from peers became new heads here: pass them on (the epidemic)."""
        for entry in entries:
            self._spread(entry)

    def _spread(self, entry: SignedEntry) -> None:
        message: Message
        if len(entry.encoded) <= self.config.piggyback_max_bytes:
            message = Entry(entry=entry.encoded)
            self.gossiped += 1
        else:
            message = EntryAnnounce(ids=(entry.id,))
            self.announced += 1
        self.membership.broadcast(message, ("entry", entry.id))

    def receive(self, now: float, sender: NodeId, address: Address, message: Message) -> bool:
        """Handle a store message from a datagram; False if it is not one."""
        if isinstance(message, Entry):
            if entry_id(message.entry) in self._recent:
                self.copies_skipped += 1
            else:
                self._outputs.append(Ingest(address, (message.entry,)))
            return True
        if isinstance(message, EntryAnnounce):
            if message.ids:
                self._outputs.append(Lookup(address, message.ids))
            return True
        if isinstance(message, StoreSummary):
            self._summary_received(now, sender, message)
            return True
        return False

    def _summary_received(self, now: float, sender: NodeId, message: StoreSummary) -> None:
        member = self.membership.member(sender)
        if member is None or member.status is not MemberStatus.ALIVE or self.membership.leaving:
            self.summaries_received["ignored"] += 1
            return
        # A member sends one summary per interval to the member it probes, so two from one sender
        # within half an interval are a replay or a flood: each would cost a store read.
        seen = self._summary_seen.get(sender)
        synced = self._summary_synced.get(sender)
        interval = self.config.sync_interval_s
        if (seen is not None and now - seen < interval / 2) or (
            synced is not None and now - synced < interval
        ):
            self.summaries_received["limited"] += 1
            return
        self._summary_seen[sender] = now
        theirs = Fingerprint(value=message.fingerprint, count=message.count)
        self._outputs.append(CompareSummary(sender, theirs))

    def send_summary(self, now: float, order: SendSummary, ours: Fingerprint) -> None:
        """The result of a `SendSummary`: send `ours`, our whole store's fingerprint."""
        if self.membership.leaving:
            return
        summary = StoreSummary(fingerprint=ours.value, count=ours.count)
        self.membership.send_with_next_probe(summary)
        self.summaries_sent += 1

    def compare_summary(
        self, now: float, node: NodeId, theirs: Fingerprint, ours: Fingerprint
    ) -> None:
        """The result of a `CompareSummary`: reconcile with `node` if the stores differ (at
        most once per sender per `sync_interval_s`)."""
        if theirs == ours:
            self.summaries_received["match"] += 1
            return
        synced = self._summary_synced.get(node)
        if synced is not None and now - synced < self.config.sync_interval_s:
            self.summaries_received["limited"] += 1
            return
        member = self.membership.member(node)
        if member is None or member.status is not MemberStatus.ALIVE or self.membership.leaving:
            self.summaries_received["ignored"] += 1
            return
        self.summaries_received["mismatch"] += 1
        self._summary_synced[node] = now
        self.syncs += 1
        self._outputs.append(Sync(member.node, member.address))

    def missing(self, now: float, source: Address, ids: Sequence[bytes]) -> None:
        """The result of a `Lookup`: pull what we lack from whoever announced it."""
        for start in range(0, len(ids), MAX_IDS):
            self._outputs.append(Pull(source, tuple(ids[start : start + MAX_IDS])))

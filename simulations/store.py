"""The replicated store of a simulated node: the real `Replicator` and `Reconciler` on an
in-memory store, driven like `nodenet.daemon.replication` drives them.

Storage is a dict of heads (key → newest entry, last writer wins by `supersedes`), the same
heads by id, and a `MemoryItemSource` of their `(hlc, id)` items for reconciliation, as
the daemon's LMDB store keeps them. Entries are created (and signed, once) by the scenario;
every node then handles them as the objects they are: the shared `EntryCatalog` maps the
encoded bytes that travel in ENTRY messages back to the entry, so no node decodes or
verifies a signature in the hot path (the daemon does; the bytes on the wire are the same).

Like the daemon: gossip (`Ingest`) is stored at once and re-gossiped when it is new;
announced ids (`Lookup`) we lack are pulled (`Pull`: ENTRY_REQUEST over TCP, ≤ 256 ids per
conversation); a summary (`SendSummary`) rides on the membership core's next PING, and a
member's summary (`CompareSummary`) is compared with the store's own
fingerprint at once; a `Sync` opens one TCP conversation and runs `Reconciler` rounds, one frame
each way per round (each leg pays the link's latency, its retransmissions and the sender's
bandwidth), bounded in rounds and time; then the initiator pulls what it lacks and pushes
what the peer lacks. The responder's rounds are computed on its store as it is when each
frame arrives (the daemon reads one LMDB snapshot per round).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from nodenet.protocol.entries import SignedEntry, create_entry, supersedes
from nodenet.protocol.errors import ProtocolError
from nodenet.protocol.hlc import HybridClock
from nodenet.protocol.identity import NodeId
from nodenet.protocol.members import MemberEvent
from nodenet.protocol.messages import Address, Entry, EntryRequest, Message
from nodenet.protocol.messages import Sync as SyncMessage
from nodenet.protocol.reconcile import (
    INFINITY,
    MIN_BOUND,
    Fingerprint,
    MemoryItemSource,
    Reconciler,
)
from nodenet.protocol.replication import (
    CompareSummary,
    Ingest,
    Lookup,
    Pull,
    ReplicationConfig,
    Replicator,
    SendSummary,
)
from nodenet.protocol.replication import Sync as SyncOrder
from nodenet.simulations.sizes import frames_size, message_size

if TYPE_CHECKING:
    from nodenet.simulations.node import SimNode

__all__ = ["EntryCatalog", "SimStore", "StoreSettings"]

TRANSFER_BATCH = 256  # nodenet.daemon.replication.TRANSFER_BATCH


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """The store's settings in a simulation (the daemon's `StoreConfig` parts that matter)."""

    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    sync_timeout_s: float = 60.0
    """A reconciliation session (rounds, then pulls and pushes) gives up after this."""
    max_sync_rounds: int = 32
    transfer_timeout_s: float = 10.0
    """A pull or push conversation gives up after this."""


class EntryCatalog:
    """Every entry written in a run, by its encoded bytes (what ENTRY messages carry)."""

    def __init__(self) -> None:
        self._by_encoded: dict[bytes, SignedEntry] = {}

    def add(self, entry: SignedEntry) -> None:
        """Register a new entry."""
        self._by_encoded[entry.encoded] = entry

    def get(self, encoded: bytes) -> SignedEntry | None:
        """The entry with these bytes (None: not an entry of this run)."""
        return self._by_encoded.get(encoded)

    def __len__(self) -> int:
        return len(self._by_encoded)


StoredSink = Callable[["SimNode", list[SignedEntry]], None]


@dataclass(slots=True)
class StoreStats:
    """Counters of one node's store."""

    written: int = 0
    stored: int = 0
    duplicates: int = 0
    superseded: int = 0
    unknown: int = 0
    syncs: int = 0
    sync_failures: int = 0
    sync_rounds: int = 0
    sync_bytes: int = 0
    sync_seconds: float = 0.0
    pulled: int = 0
    pushed: int = 0


class SimStore:
    """One node's store and the driver of its `Replicator`."""

    def __init__(
        self,
        node: SimNode,
        catalog: EntryCatalog,
        settings: StoreSettings,
        rng: random.Random,
        on_stored: StoredSink | None = None,
    ) -> None:
        self.node = node
        self.sim = node.sim
        self.catalog = catalog
        self.settings = settings
        self.rng = rng
        self.on_stored = on_stored
        self.heads: dict[str, SignedEntry] = {}
        self.by_id: dict[bytes, SignedEntry] = {}
        self.source = MemoryItemSource()
        self.hlc = HybridClock()
        self.stats = StoreStats()
        self._life = 0
        self._timer_at: float | None = None
        self.replicator = self._new_replicator()

    def _new_replicator(self) -> Replicator:
        return Replicator(
            self.node.core, now=self.sim.now, rng=self.rng, config=self.settings.replication
        )

    # --- storage --------------------------------------------------------------------------

    def ingest(self, entries: Sequence[SignedEntry]) -> list[SignedEntry]:
        """Last writer wins; returns the entries that became new heads."""
        stored = []
        for entry in entries:
            old = self.heads.get(entry.key)
            if old is not None:
                if old.id == entry.id:
                    self.stats.duplicates += 1
                    continue
                if not supersedes(entry, old):
                    self.stats.superseded += 1
                    continue
                del self.by_id[old.id]
                self.source.remove((old.hlc, old.id))
            self.heads[entry.key] = entry
            self.by_id[entry.id] = entry
            self.source.insert((entry.hlc, entry.id))
            stored.append(entry)
        if stored:
            self.stats.stored += len(stored)
            now_ms = self.node.now_ms()
            for entry in stored:
                self.hlc.observe(entry.hlc, now_ms)
            if self.on_stored is not None:
                self.on_stored(self.node, stored)
        return stored

    def fingerprint(self) -> Fingerprint:
        """The fingerprint of the whole store (what a STORE_SUMMARY carries)."""
        return self.source.fingerprint(MIN_BOUND, INFINITY)

    def write(self, key: str, value: bytes, *, tombstone: bool = False) -> SignedEntry:
        """A local write (`nodenet submit`): stamp, sign, store, gossip."""
        entry = create_entry(
            self.node.key, key, value, self.hlc.now(self.node.now_ms()), tombstone=tombstone
        )
        self.catalog.add(entry)
        self.stats.written += 1
        if self.ingest([entry]):
            self.replicator.submitted(self.sim.now, entry)
        self.node.pump()  # gossip rides on what the core sends next
        return entry

    # --- inputs from the node -------------------------------------------------------------

    def receive(self, now: float, sender: NodeId, source: Address, message: Message) -> None:
        """A datagram message the membership core did not take."""
        self.replicator.receive(now, sender, source, message)

    def membership_events(self, events: Sequence[MemberEvent]) -> None:
        """Reconcile soon with members that (re)joined."""
        self.replicator.membership_events(self.sim.now, events)

    def joined(self) -> None:
        """We (re)joined: reconcile soon."""
        self.replicator.joined(self.sim.now)

    def handles(self, request: Sequence[Message]) -> bool:
        """Whether a TCP request is the store's (a pull or a push)."""
        return bool(request) and isinstance(request[0], EntryRequest | Entry)

    def answer(self, request: Sequence[Message]) -> tuple[Message, ...]:
        """Answer a pull with the entries we hold; take a push."""
        if isinstance(request[0], EntryRequest):
            ids = [i for m in request if isinstance(m, EntryRequest) for i in m.ids]
            held = (self.by_id.get(i) for i in ids[: TRANSFER_BATCH * 4])
            return tuple(Entry(entry=e.encoded) for e in held if e is not None)
        pushed = [self.catalog.get(m.entry) for m in request if isinstance(m, Entry)]
        self._store_from_peer([e for e in pushed if e is not None])
        return ()

    def _store_from_peer(self, entries: Sequence[SignedEntry]) -> None:
        stored = self.ingest(entries)
        self.replicator.held(e.id for e in entries)  # as the daemon does after ingest
        if stored:
            self.replicator.stored(self.sim.now, stored)

    # --- the driver loop ------------------------------------------------------------------

    def flush(self) -> None:
        """Carry out what the replicator asked for; re-arm its timer."""
        if not self.node.up:
            return
        replicator = self.replicator
        outputs = replicator.outputs()
        while outputs:
            for out in outputs:
                if isinstance(out, Ingest):
                    entries = [self.catalog.get(blob) for blob in out.entries]
                    self.stats.unknown += entries.count(None)
                    self._store_from_peer([e for e in entries if e is not None])
                elif isinstance(out, Lookup):
                    missing = [i for i in out.ids if i not in self.by_id]
                    if missing:
                        replicator.missing(self.sim.now, out.source, missing)
                elif isinstance(out, Pull):
                    self._pull(out.address, list(out.ids), self.sim.now)
                elif isinstance(out, SyncOrder):
                    self._sync(out.address)
                elif isinstance(out, SendSummary):
                    replicator.send_summary(self.sim.now, out, self.fingerprint())
                elif isinstance(out, CompareSummary):
                    ours = self.fingerprint()
                    replicator.compare_summary(self.sim.now, out.node, out.theirs, ours)
            outputs = replicator.outputs()
        when = replicator.get_timer()
        if when is not None and (self._timer_at is None or when < self._timer_at):
            self._timer_at = when
            self.sim.at(when, self._on_timer, self._life, when)

    def _on_timer(self, life: int, when: float) -> None:
        if life != self._life or when != self._timer_at or not self.node.up:
            return
        self._timer_at = None
        if self.node.paused:
            return  # `resume` catches up
        self.replicator.handle_timer(self.sim.now)
        self.node.pump()  # flushes us too, and sends what we queued

    def stop(self) -> None:
        """The node crashed: drop timers and conversations in flight."""
        self._life += 1
        self._timer_at = None

    def resume(self) -> None:
        """The node's process runs again after a pause."""
        self._timer_at = None
        self._life += 1
        self.replicator.handle_timer(self.sim.now)
        self.flush()

    def restart(self, *, keep_state: bool) -> None:
        """The node restarted (its membership core is new): new replicator; the entries
        survive only with `keep_state`."""
        self.stop()
        if not keep_state:
            self.heads.clear()
            self.by_id.clear()
            self.source = MemoryItemSource()
            self.hlc = HybridClock()
        self.replicator = self._new_replicator()

    # --- TCP conversations ----------------------------------------------------------------

    def _conversation_alive(self, life: int) -> bool:
        return life == self._life and self.node.up

    def _request(
        self, address: Address, messages: Sequence[Message], done: Callable[[Any], None]
    ) -> None:
        node = self.node
        payload, frames, size = node.pack_frames(messages)
        node.frames_sent += frames
        node.tcp_bytes_sent += size
        deadline = self.sim.now + self.settings.transfer_timeout_s
        node.network.exchange(node, address, payload, deadline, done, size=size)

    def _pull(self, address: Address, ids: list[bytes], started: float) -> None:
        """Fetch `ids` from `address`, TRANSFER_BATCH per conversation, one after another."""
        if not ids:
            return
        batch, rest = ids[:TRANSFER_BATCH], ids[TRANSFER_BATCH:]
        life = self._life

        def done(reply: Any) -> None:
            if reply is None or not self._conversation_alive(life):
                return
            (_, messages), size = reply
            self.node.tcp_bytes_received += size
            entries = [self.catalog.get(m.entry) for m in messages if isinstance(m, Entry)]
            found = [e for e in entries if e is not None]
            self.stats.pulled += len(found)
            self._store_from_peer(found)
            self.node.pump()
            self._pull(address, rest, started)

        self._request(address, [EntryRequest(ids=tuple(batch))], done)

    def _push(self, address: Address, ids: list[bytes]) -> None:
        """Send the entries `address` lacks, TRANSFER_BATCH per conversation."""
        entries = [e for e in (self.by_id.get(i) for i in ids[:TRANSFER_BATCH]) if e]
        rest = ids[TRANSFER_BATCH:]
        life = self._life
        if not entries:
            if rest:
                self._push(address, rest)
            return

        def done(reply: Any) -> None:
            if reply is None or not self._conversation_alive(life):
                return
            self.node.tcp_bytes_received += reply[1]
            self.stats.pushed += len(entries)
            self._push(address, rest)

        self._request(address, [Entry(entry=e.encoded) for e in entries], done)

    def _sync(self, address: Address) -> None:
        """One reconciliation session, initiated by us; see the module docstring."""
        node, network, sim = self.node, self.node.network, self.sim
        self.stats.syncs += 1
        started = sim.now
        deadline = started + self.settings.sync_timeout_s
        life = self._life
        peer = cast("SimNode | None", network.endpoints.get(address))
        peer_store = peer.store if peer is not None else None
        ours = Reconciler(self.source)
        theirs: Reconciler | None = None
        rounds = 0

        def fail(_: object = None) -> None:
            if self._conversation_alive(life):
                self.stats.sync_failures += 1

        def frame(sender: SimNode, payload: bytes) -> int:
            size = frames_size([message_size(SyncMessage(payload=payload))], sender.now_ms())[1]
            sender.frames_sent += 1
            sender.tcp_bytes_sent += size
            self.stats.sync_bytes += size
            return size

        def send(message: bytes) -> None:
            assert peer is not None
            size = frame(node, message)

            def landed(ok: bool) -> None:
                nonlocal theirs
                if not ok or peer_store is None or not self._conversation_alive(life):
                    fail()
                    return
                peer.tcp_bytes_received += size
                try:
                    theirs = theirs or Reconciler(peer_store.source)
                    reply = theirs.receive(message)
                except ProtocolError:
                    fail()
                    return
                if ours.done:
                    return  # we sent the final message and did not wait for an answer
                if reply is None:
                    fail()
                    return
                back = frame(peer, reply)
                network.transfer(peer, node, back, deadline, lambda ok: answered(ok, reply, back))

            network.transfer(node, peer, size, deadline, landed)
            if ours.done:
                finish()

        def answered(ok: bool, reply: bytes, size: int) -> None:
            nonlocal rounds
            if not ok or not self._conversation_alive(life):
                fail()
                return
            node.tcp_bytes_received += size
            rounds += 1
            self.stats.sync_rounds += 1
            if rounds > self.settings.max_sync_rounds:
                fail()
                return
            try:
                message = ours.receive(reply)
            except ProtocolError:
                fail()
                return
            if message is None:
                finish()
            else:
                send(message)

        def finish() -> None:
            self.stats.sync_seconds += sim.now - started
            self._pull(address, sorted(ours.need), sim.now)
            self._push(address, sorted(ours.have))

        if peer is None or not peer.up:
            sim.at(deadline, fail)
            return
        connected = sim.now + network.connect_delay(node.address, address)
        if connected > deadline:
            sim.at(deadline, fail)
            return
        sim.at(connected, send, ours.initiate())

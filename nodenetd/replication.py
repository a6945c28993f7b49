"""The store service: the Trio driver of `nodenet.protocol.replication.Replicator`.

Theory of operation
-------------------
Writes: `submit` stamps an entry with the hybrid logical clock, signs it, commits it
durably (fsync) and only then answers and gossips it. Reads go straight to LMDB in worker
threads.

Entries from peers arrive in datagrams (gossip), in replies to pulls, and in pushes after
a reconciliation. All of them go through one bounded ingest queue: workers verify
signatures in threads (Ed25519 is the cost; libsodium releases the GIL, so both cores work)
and hand verified entries to the store in batches; the store's writer thread decides last
writer wins. A full queue drops gossip (anti-entropy will repair it), never local writes.

Anti-entropy: every interval the replicator asks for a store summary to one member
(`SendSummary`), and for a comparison when a member's summary arrives (`CompareSummary`);
both need the fingerprint of the whole store, read from the LMDB summary index in a worker
thread. For each `Sync` the replicator asks for, we open one TCP conversation and run
`Reconciler` rounds (one frame each way per round, each round computed in a worker thread
on one LMDB snapshot). The initiator then pulls what it lacks and pushes what the peer
lacks; the responder only answers. Sessions are bounded in rounds, bytes and time.
"""

from __future__ import annotations

import collections
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nacl.signing
import trio

from nodenet.daemon.framing import FrameConnection
from nodenet.daemon.service import MembershipService
from nodenet.daemon.state import StateError, StateStore
from nodenet.daemon.store import EntryStore, IngestOutcome, LmdbItemSource
from nodenet.protocol.entries import DEFAULT_MAX_VALUE, SignedEntry, create_entry, decode_entry
from nodenet.protocol.errors import ProtocolError, RemoteProtocolError
from nodenet.protocol.hlc import HybridClock
from nodenet.protocol.identity import NodeId, verify
from nodenet.protocol.members import MemberEvent
from nodenet.protocol.messages import Address, Entry, EntryRequest, Error, Message, Sync
from nodenet.protocol.reconcile import Reconciler
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

__all__ = ["StoreConfig", "StoreService", "StoreStats"]

log = logging.getLogger("nodenet.store")

TRANSFER_BATCH = 256
"""Entries per pull or push conversation: at most 256 × 1 MiB stays under the stream cap."""
INGEST_BATCH = 256
"""Gossiped entries verified (in one thread) and committed (in one transaction) together."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    """Settings of the replicated store."""

    max_value: int = DEFAULT_MAX_VALUE
    """Largest value in bytes (64 KiB; up to 1 MiB). Every node of a cluster must agree."""
    tombstone_ttl_s: float = 7 * 24 * 3600.0
    """Deletes are remembered this long; a node away longer must resync from scratch."""
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    ingest_queue: int = 4096
    """Encoded entries waiting for verification; beyond it gossip is dropped (and counted)."""
    verify_threads: int = 2
    """Threads verifying signatures at once (one per core on the reference machine)."""
    sync_timeout_s: float = 300.0
    """Bound on one reconciliation session (a fresh node facing a large store needs many
    rounds: one per ~8,000 ids it lacks)."""
    max_sync_rounds: int = 256
    sync_pulls_in_flight: int = 8
    """Transfer conversations at once in each direction (pulls, pushes) after a sync, each
    until its batch is stored: also what bounds the entries held in memory while a replica
    far behind catches up (≤ this × `TRANSFER_BATCH`). Enough to keep the verify threads
    busy while other batches wait for their commit (catch-up of 100,000 entries: 3 → 8 took
    ~8.2 → ~7.3 s, more gained nothing)."""
    gc_interval_s: float = 3600.0


@dataclass(slots=True)
class StoreStats:
    """Counters (exported as metrics)."""

    ingested: dict[str, int] = field(default_factory=dict)
    """Entries by outcome: stored, duplicate, superseded, expired."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Entries refused before storing, by reason (bad_signature, future, malformed, …)."""
    dropped_queue_full: int = 0
    damaged: int = 0
    """Stored entries found damaged on disk (bytes no longer hashing to their id), dropped
    so that anti-entropy fetches them again."""
    write_failures: int = 0
    """Batches of verified entries the state store refused (disk or state.max_map_size full):
    the daemon goes on serving; anti-entropy fetches them again later."""
    submitted: int = 0
    syncs: int = 0
    sync_failures: int = 0
    sync_declined: int = 0
    """Sessions the peer declined ("busy"): it was already reconciling with us, and that
    session covers both directions."""
    sync_rounds: int = 0
    sync_bytes: int = 0
    sync_seconds: float = 0.0
    pulled: int = 0
    pushed: int = 0


class StoreService:
    """The replicated store of one daemon."""

    def __init__(
        self,
        state: StateStore,
        membership: MembershipService,
        key: nacl.signing.SigningKey,
        *,
        config: StoreConfig | None = None,
        rng: random.Random | None = None,
        on_entries: Callable[[list[SignedEntry], str], None] | None = None,
    ) -> None:
        self.config = config or StoreConfig()
        self.store = EntryStore(state, tombstone_ttl_s=self.config.tombstone_ttl_s)
        self.membership = membership
        self.clock = membership.clock
        self._key = key
        self.replicator = Replicator(
            membership.core,
            now=self.clock.now(),
            rng=rng or random.Random(),
            config=self.config.replication,
        )
        self.hlc = HybridClock()
        self.stats = StoreStats()
        self._on_entries = on_entries
        self._ingest_in, self._ingest_out = trio.open_memory_channel[tuple[Address | None, bytes]](
            self.config.ingest_queue
        )
        self._verify_limit = trio.CapacityLimiter(self.config.verify_threads)
        self._write_failure_logged = -math.inf
        self._rearm = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._initiated: set[NodeId] = set()
        """Peers we run a reconciliation session with, as its initiator."""
        self._answering: set[NodeId] = set()
        """Peers whose session with us we are answering."""
        membership.message_handler = self._on_message
        membership.stream_handler = self._serve_stream

    # --- running ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled."""
        self.hlc.last = await trio.to_thread.run_sync(self._newest_hlc)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self.ingest_workers):
                nursery.start_soon(self.ingest_from, self._ingest_out)
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._gc_loop)
            # Membership runs first, so a peer may have spoken to us already.
            self._flush()
            task_status.started()

    def _newest_hlc(self) -> int:
        """Start the clock past every stored entry (no write ever goes back in time), and
        learn how many entries there are."""
        self.store.count = self.store.count_sync()
        with self.store.state.reader() as (txn, dbs), txn.cursor(dbs["entries"]) as cursor:
            return int.from_bytes(cursor.key()[:8], "big") if cursor.last() else 0

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.replicator.get_timer()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._rearm.wait()
            self._rearm = trio.Event()
            now = self.clock.now()
            timer = self.replicator.get_timer()
            if timer is not None and timer <= now:
                self.replicator.handle_timer(now)
                self._flush()

    async def _gc_loop(self) -> None:
        while True:
            await trio.sleep(self.config.gc_interval_s)
            try:
                removed = await self.store.collect_garbage(now_ms=self.clock.wall_ms())
            except StateError as exc:
                log.error(
                    "tombstone collection failed, retried in %.0f s: %s",
                    self.config.gc_interval_s,
                    exc,
                )
                continue
            if removed:
                log.info(
                    "forgot %d tombstones older than %.0f days",
                    removed,
                    self.config.tombstone_ttl_s / 86400,
                )

    # --- inputs from the membership service ---------------------------------------------

    def joined(self) -> None:
        """We joined (or rejoined) the cluster: reconcile soon."""
        self.replicator.joined(self.clock.now())
        self._flush()

    def membership_events(self, events: Sequence[MemberEvent]) -> None:
        """Reconcile soon with members that (re)joined."""
        self.replicator.membership_events(self.clock.now(), events)
        self._flush()

    def _on_message(self, now: float, sender: NodeId, address: Address, message: Message) -> None:
        if self.replicator.receive(now, sender, address, message):
            self._flush()

    def _flush(self) -> None:
        if self._nursery is None:
            return  # not running yet: the replicator keeps its outputs until run() flushes
        for out in self.replicator.outputs():
            if isinstance(out, Ingest):
                for blob in out.entries:
                    self._queue_ingest(out.source, blob)
            elif isinstance(out, Lookup):
                self._nursery.start_soon(self._lookup, out)
            elif isinstance(out, Pull):
                self._nursery.start_soon(self._pull, out.address, out.ids)
            elif isinstance(out, SyncOrder):
                self._nursery.start_soon(self._sync, out.address, out.node)
            elif isinstance(out, SendSummary):
                self._nursery.start_soon(self._send_summary, out)
            elif isinstance(out, CompareSummary):
                self._nursery.start_soon(self._compare_summary, out)
        self._rearm.set()

    async def _send_summary(self, order: SendSummary) -> None:
        ours = await trio.to_thread.run_sync(self.store.fingerprint_sync)
        self.replicator.send_summary(self.clock.now(), order, ours)  # rides on the next PING

    async def _compare_summary(self, order: CompareSummary) -> None:
        ours = await trio.to_thread.run_sync(self.store.fingerprint_sync)
        self.replicator.compare_summary(self.clock.now(), order.node, order.theirs, ours)
        self._flush()

    def _queue_ingest(self, source: Address | None, blob: bytes) -> None:
        try:
            self._ingest_in.send_nowait((source, blob))
        except trio.WouldBlock:
            self.stats.dropped_queue_full += 1

    # --- local writes -------------------------------------------------------------------

    def sign(self, key: str, value: bytes, *, tombstone: bool = False) -> SignedEntry:
        """A new entry by this node, stamped now (LocalProtocolError if it is invalid)."""
        hlc = self.hlc.now(self.clock.wall_ms())
        return create_entry(
            self._key, key, value, hlc, tombstone=tombstone, max_value=self.config.max_value
        )

    def check_signed(self, encoded: bytes) -> SignedEntry:
        """Decode and verify a pre-signed entry (RemoteProtocolError if it is invalid)."""
        entry = decode_entry(
            encoded, now_ms=self.clock.wall_ms(), max_value=self.config.max_value, verify=verify
        )
        self.hlc.observe(entry.hlc, self.clock.wall_ms())
        return entry

    async def submit(self, entries: Sequence[SignedEntry]) -> list[str]:
        """Commit entries written through this node, all in one durable transaction, then
        gossip the new heads; an `IngestOutcome` per entry."""
        outcomes = await self.store.ingest(entries, now_ms=self.clock.wall_ms())
        self._count(outcomes)
        stored = [e for e, o in zip(entries, outcomes, strict=True) if o == IngestOutcome.STORED]
        self.stats.submitted += len(stored)
        now = self.clock.now()
        for entry in stored:
            self.replicator.submitted(now, entry)
        self._flush()
        if stored and self._on_entries is not None:
            self._on_entries(stored, "local")
        return outcomes

    def _count(self, outcomes: Sequence[str]) -> None:
        for outcome, n in collections.Counter(outcomes).items():
            self.stats.ingested[outcome] = self.stats.ingested.get(outcome, 0) + n

    # --- entries from peers -------------------------------------------------------------

    @property
    def ingest_workers(self) -> int:
        """Tasks running `ingest_from`: twice as many as verifying threads, so that while
        one batch waits for its commit (batching window + fsync) the next is verified."""
        return 2 * self.config.verify_threads

    async def ingest_from(
        self, channel: trio.MemoryReceiveChannel[tuple[Address | None, bytes]]
    ) -> None:
        """Verify, store and gossip on entries from `channel`, in batches of up to
        `INGEST_BATCH`, until it is closed (the daemon runs `ingest_workers` of these on
        the queue that datagrams feed)."""
        async for first in channel:
            batch = [first]
            while len(batch) < INGEST_BATCH:
                try:
                    batch.append(channel.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await self.ingest([blob for _, blob in batch], gossip=True)

    async def ingest(self, blobs: Sequence[bytes], *, gossip: bool = False) -> list[SignedEntry]:
        """Verify and store entries from peers; the ones that became new heads.

        Only entries that arrived by gossip are gossiped on: pulled and pushed ones were
        asked for by one node that lacked them, and the rest of the cluster has them."""
        now_ms = self.clock.wall_ms()
        decoded = await trio.to_thread.run_sync(
            self._decode, blobs, now_ms, limiter=self._verify_limit
        )
        entries = []
        for item in decoded:
            if isinstance(item, SignedEntry):
                entries.append(item)
            else:
                self.stats.rejected[item] = self.stats.rejected.get(item, 0) + 1
        if not entries:
            return []
        try:
            outcomes = await self.store.ingest(entries, now_ms=now_ms)
        except StateError as exc:
            self.stats.write_failures += 1
            now = self.clock.now()
            if now - self._write_failure_logged >= 60:  # at most a line a minute
                self._write_failure_logged = now
                log.error("cannot store %d replicated entries: %s", len(entries), exc)
            self.replicator.held(e.id for e in entries)
            return []
        self._count(outcomes)
        self.replicator.held(e.id for e in entries)  # every outcome: done with these bytes
        stored = [e for e, o in zip(entries, outcomes, strict=True) if o == IngestOutcome.STORED]
        if stored:
            # One receive event for the batch: our clock moves past the newest of them.
            self.hlc.observe(max(e.hlc for e in stored), now_ms)
            if gossip:
                self.replicator.stored(self.clock.now(), stored)
                self._flush()
            if self._on_entries is not None:
                self._on_entries(stored, "replicated")
        return stored

    def _decode(self, blobs: Sequence[bytes], now_ms: int) -> list[SignedEntry | str]:
        out: list[SignedEntry | str] = []
        for blob in blobs:
            try:
                out.append(
                    decode_entry(
                        blob, now_ms=now_ms, max_value=self.config.max_value, verify=verify
                    )
                )
            except RemoteProtocolError as exc:
                out.append(exc.reason)
                log.debug("refused an entry: %s", exc)
        return out

    async def _lookup(self, lookup: Lookup) -> None:
        missing = await trio.to_thread.run_sync(self.store.missing_sync, list(lookup.ids))
        if missing:
            self.replicator.missing(self.clock.now(), lookup.source, missing)
            self._flush()

    async def _pull(self, address: Address, ids: Sequence[bytes]) -> None:
        """Fetch entries from `address` in batches, a few conversations at once."""
        limit = trio.CapacityLimiter(self.config.sync_pulls_in_flight)
        async with trio.open_nursery() as nursery:
            for start in range(0, len(ids), TRANSFER_BATCH):
                nursery.start_soon(
                    self._pull_batch, address, ids[start : start + TRANSFER_BATCH], limit
                )

    async def _pull_batch(
        self, address: Address, batch: Sequence[bytes], limit: trio.CapacityLimiter
    ) -> None:
        # The slot is held until the batch is stored, as a push's is: a replica far behind
        # must not hold in memory everything it has fetched but not yet verified (the
        # network outruns Ed25519 several times over).
        async with limit:
            reply, failure = await self.membership.request(
                address, [EntryRequest(ids=tuple(batch))]
            )
            if reply is None:
                log.debug("pull of %d entries from %s failed: %s", len(batch), address, failure)
                return
            blobs = [m.entry for m in reply if isinstance(m, Entry)]
            self.stats.pulled += len(blobs)
            await self.ingest(blobs)

    async def _push_batch(
        self, address: Address, batch: Sequence[bytes], limit: trio.CapacityLimiter
    ) -> None:
        async with limit:
            blobs, damaged = await trio.to_thread.run_sync(self.store.get_by_ids_sync, list(batch))
            if damaged:
                await self.forget_damaged(items=damaged)
            if not blobs:
                return
            try:
                conn = await self.membership.connect(address)
            except OSError as exc:
                log.debug("push to %s failed: %s", address, exc)
                return
            async with conn.stream:
                try:
                    await conn.send([Entry(entry=b) for b in blobs])
                    await conn.send_eof()
                    await conn.receive_all()  # the peer closes once it has stored them
                except (
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    OSError,
                    RemoteProtocolError,
                ) as exc:
                    log.debug("push to %s failed: %s", address, exc)
                    return
            self.stats.pushed += len(blobs)

    async def forget_damaged(self, *, keys: Sequence[str] = (), items: Sequence[bytes] = ()) -> int:
        """Drop stored entries whose bytes no longer hash to their id (found by `keys` on an
        API read, or by `items` serving a transfer), so that anti-entropy fetches them again
        from a peer; they are never sent on (a peer would refuse them). How many."""
        removed = 0
        if keys:
            removed += await self.store.forget_damaged(keys)
        if items:
            removed += await self.store.forget_damaged_items(items)
        if removed:
            self.stats.damaged += removed
            log.error(
                "state store: %d stored entries were damaged on disk; dropped them, to be"
                " fetched again from peers; check the disk",
                removed,
            )
        return removed

    # --- reconciliation -----------------------------------------------------------------

    def _session(self) -> tuple[Reconciler, Callable[..., bytes | None]]:
        source = LmdbItemSource()
        reconciler = Reconciler(source)

        def step(call: Callable[..., bytes | None], *args: bytes) -> bytes | None:
            with self.store.state.reader() as (txn, dbs):
                source.bind(txn, dbs)
                return call(*args)

        return reconciler, step

    async def _sync(self, address: Address, node: NodeId) -> None:
        """Initiate a reconciliation with `address`, then pull and push the difference.

        At most one session with a peer at a time, in either direction: a join, a
        JOINED event and a differing summary often ask for one at nearly the same moment,
        on both sides (see `_answer_sync` for who yields)."""
        if node in self._initiated or node in self._answering:
            return
        self._initiated.add(node)
        try:
            await self._sync_once(address)
        finally:
            self._initiated.discard(node)

    async def _sync_once(self, address: Address) -> None:
        """One session. The difference is transferred while the session goes on (pulls of
        what we lack, pushes of what the peer lacks), a batch as soon as one is known, so
        that verifying and storing overlaps the remaining rounds (a replica far behind
        needs many), with a few conversations in flight each way."""
        started = self.clock.now()
        self.stats.syncs += 1
        reconciler, step = self._session()
        try:
            conn = await self.membership.connect(address)
        except OSError as exc:
            self.stats.sync_failures += 1
            log.debug("sync with %s: cannot connect: %s", address, exc)
            return
        pulling, pushing = (
            trio.CapacityLimiter(self.config.sync_pulls_in_flight) for _ in range(2)
        )
        to_pull: list[bytes] = []
        to_push: list[bytes] = []
        async with trio.open_nursery() as transfers:

            def transfer_known(*, final: bool) -> None:
                """Start the full batches of what the session has taught us (all of it once
                `final`); a partial batch waits for the next round."""
                need, have = reconciler.take_learned()
                for learned, waiting, limit, send in (
                    (need, to_pull, pulling, self._pull_batch),
                    (have, to_push, pushing, self._push_batch),
                ):
                    waiting.extend(learned)
                    waiting.sort()
                    ready = len(waiting) if final else len(waiting) - len(waiting) % TRANSFER_BATCH
                    for start in range(0, ready, TRANSFER_BATCH):
                        batch = waiting[start : min(start + TRANSFER_BATCH, ready)]
                        transfers.start_soon(send, address, batch, limit)
                    del waiting[:ready]

            outcome = await self._reconcile(address, conn, reconciler, step, transfer_known)
            if outcome == "declined":
                self.stats.sync_declined += 1
                return
            if outcome != "completed":
                self.stats.sync_failures += 1
                return  # what was transferred already is verified and kept
            self.stats.sync_seconds += self.clock.now() - started
            transfer_known(final=True)
            need, have = len(reconciler.need), len(reconciler.have)
            if need or have:
                log.info("sync with %s: pulling %d entries, pushing %d", address, need, have)

    async def _reconcile(
        self,
        address: Address,
        conn: FrameConnection,
        reconciler: Reconciler,
        step: Callable[..., bytes | None],
        progress: Callable[..., None],
    ) -> str:
        """Run the initiator's side of a session over `conn`: "completed", "declined" (the
        peer is already reconciling with us) or "failed". `progress(final=False)` is called
        after every round."""
        rounds = 0
        with trio.move_on_after(self.config.sync_timeout_s):
            async with conn.stream:
                try:
                    message = await trio.to_thread.run_sync(step, reconciler.initiate)
                    while message is not None:
                        await conn.send([Sync(payload=message)])
                        if reconciler.done:
                            break
                        reply = await conn.receive()
                        payload = _sync_payload(reply)
                        if payload is None:
                            if any(isinstance(m, Error) and m.code == "busy" for m in reply or ()):
                                return "declined"
                            break
                        rounds += 1
                        if rounds > self.config.max_sync_rounds:
                            raise TooManyRounds(address)
                        message = await trio.to_thread.run_sync(step, reconciler.receive, payload)
                        progress(final=False)
                    await conn.send_eof()
                except (ProtocolError, TooManyRounds) as exc:
                    log.info("sync with %s failed: %s", address, exc)
                    return "failed"
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    log.debug("sync with %s: connection lost: %s", address, exc)
                    return "failed"
                finally:
                    self.stats.sync_rounds += rounds
                    self.stats.sync_bytes += conn.bytes_in + conn.bytes_out
        return "completed" if reconciler.done else "failed"

    async def _serve_stream(self, conn: FrameConnection, first: list[Message]) -> None:
        """A peer's store conversation: a reconciliation, a pull, or a push."""
        if isinstance(first[0], Sync):
            await self._answer_sync(conn, first)
            return
        with trio.move_on_after(self.config.sync_timeout_s):
            await self._serve_transfer(conn, first)

    async def _serve_transfer(self, conn: FrameConnection, first: list[Message]) -> None:
        if isinstance(first[0], EntryRequest):
            request = first + await conn.receive_all()
            ids = [i for m in request if isinstance(m, EntryRequest) for i in m.ids]
            blobs, damaged = await trio.to_thread.run_sync(
                self.store.get_by_ids_sync, ids[: TRANSFER_BATCH * 4]
            )
            await conn.send([Entry(entry=b) for b in blobs])
            if damaged:
                await self.forget_damaged(items=damaged)
        elif isinstance(first[0], Entry):
            pushed = first + await conn.receive_all()
            await self.ingest([m.entry for m in pushed if isinstance(m, Entry)])
        else:
            await conn.send([Error(code="unsupported", message=f"unexpected {first[0].TYPE.name}")])

    async def _answer_sync(self, conn: FrameConnection, first: list[Message]) -> None:
        peer = conn.sender
        # Two nodes that start a session with each other at once (both saw the other join)
        # must not both refuse: the session of the smaller node id goes on, the other's
        # initiator is told "busy" by the peer that yields nothing.
        if (
            peer is None
            or peer in self._answering
            or (peer in self._initiated and self.membership.core.node_id < peer)
        ):
            await conn.send([Error(code="busy", message="already reconciling with you")])
            return
        self._answering.add(peer)
        try:
            await self._answer_sync_once(conn, first)
        finally:
            self._answering.discard(peer)

    async def _answer_sync_once(self, conn: FrameConnection, first: list[Message]) -> None:
        reconciler, step = self._session()
        payload = _sync_payload(first)
        rounds = 0
        with trio.move_on_after(self.config.sync_timeout_s):
            while payload is not None and rounds <= self.config.max_sync_rounds:
                rounds += 1
                reply = await trio.to_thread.run_sync(step, reconciler.receive, payload)
                if reply is None:
                    break
                await conn.send([Sync(payload=reply)])
                if reconciler.done:
                    break
                payload = _sync_payload(await conn.receive())


class TooManyRounds(Exception):
    """A reconciliation that does not converge within the round limit."""

    def __init__(self, address: Address) -> None:
        super().__init__(f"reconciliation with {address} took too many rounds")


def _sync_payload(messages: list[Message] | None) -> bytes | None:
    if not messages:
        return None
    for message in messages:
        if isinstance(message, Sync):
            return message.payload
    return None

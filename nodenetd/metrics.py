"""Prometheus metrics, named by the Prometheus conventions (DESIGN §4).

Counters the protocol core and the service already keep are read at scrape time by a
custom collector, so nothing is counted twice and a scrape always sees one consistent
snapshot. Each daemon has its own registry (tests run several daemons in one process).
No metric carries a peer id as a label: cardinality stays bounded whatever the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from importlib.metadata import version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from nodenet.daemon.events import EventHub
from nodenet.daemon.handlers import Handlers
from nodenet.daemon.replication import StoreService
from nodenet.daemon.service import MembershipService
from nodenet.protocol.members import EventKind, MemberEvent
from nodenet.protocol.wire import PROTOCOL_MAJOR, PROTOCOL_MINOR

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # `*_created` series double the output and nobody graphs them

# MembershipStats field → (metric name without prefix, help)
_CORE_COUNTERS = {
    "probes": ("probes", "Probes started (one member per probe interval)."),
    "probe_acks": ("probe_acks", "Probes answered with an ACK, directly, indirectly or over TCP."),
    "probe_failures": ("probe_failures", "Probes that got no ACK before their deadline."),
    "indirect_probes": ("indirect_probes", "Probes that needed PING_REQs through other members."),
    "nacks_received": (
        "nacks_received",
        "NACKs from members that could not reach a target either.",
    ),
    "tcp_fallback_acks": (
        "tcp_fallback_acks",
        "Probes answered only over TCP: UDP is lost or blocked on some path.",
    ),
    "suspicions": ("suspicions", "Suspicions started here (by us or on a peer's word)."),
    "confirmations": (
        "suspicion_confirmations",
        "Independent confirmations of running suspicions.",
    ),
    "refutations": ("refutations", "Times we refuted a claim that we were suspect, dead or gone."),
    "deaths_declared": (
        "deaths_declared",
        "Members this node declared dead after a suspicion timed out.",
    ),
    "push_pulls": ("push_pulls", "Full state exchanges started (periodic, join and reconnect)."),
    "push_pull_failures": ("push_pull_failures", "Full state exchanges that failed."),
    "push_pulls_in_sync": (
        "push_pulls_in_sync",
        "Digest push-pulls from peers answered at once: their member table agreed with ours.",
    ),
    "reconnect_attempts": ("reconnect_attempts", "Attempts to reach dead members or seeds."),
    "gossip_datagrams": ("gossip_datagrams", "Datagrams sent by gossip rounds."),
    "ping_reqs_refused": (
        "ping_reqs_refused",
        "PING_REQs for a node this one does not believe alive: answered with a NACK, not relayed.",
    ),
    "accusations_ignored": (
        "accusations_ignored",
        "SUSPECT/DEAD claims dropped: the accuser is not a live member, or the incarnation"
        " is 2^63 or more.",
    ),
}


class _Collector(Collector):
    """Reads the service and core counters at scrape time."""

    def __init__(
        self,
        service: Callable[[], MembershipService | None],
        store: Callable[[], StoreService | None],
    ) -> None:
        self._service = service
        self._store = store

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "nodenet_build_info",
            "Version of nodenetd and of its wire protocol.",
            labels=["version", "protocol"],
        )
        info.add_metric([version("nodenetd"), f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"], 1)
        yield info
        service = self._service()
        if service is None:
            return
        core = service.core
        members = GaugeMetricFamily(
            "nodenet_members", "Known members by state (this node excluded).", labels=["state"]
        )
        for status, count in core.status_counts().items():
            members.add_metric([status.value], count)
        yield members
        yield GaugeMetricFamily(
            "nodenet_awareness_score",
            "Lifeguard local health: 0 is healthy; higher means this node is probably slow.",
            value=core.awareness,
        )
        yield GaugeMetricFamily(
            "nodenet_incarnation", "This node's incarnation number.", value=core.incarnation
        )
        stats = core.stats
        for field in fields(stats):
            name, help_text = _CORE_COUNTERS[field.name]
            yield CounterMetricFamily(
                f"nodenet_{name}", help_text, value=getattr(stats, field.name)
            )
        t = service.stats
        packets = CounterMetricFamily(
            "nodenet_datagrams", "UDP datagrams received and sent.", labels=["direction"]
        )
        packets.add_metric(["in"], t.datagrams_in)
        packets.add_metric(["out"], t.datagrams_out)
        yield packets
        transferred = CounterMetricFamily(
            "nodenet_transport_bytes", "Bytes received and sent.", labels=["transport", "direction"]
        )
        transferred.add_metric(["udp", "in"], t.bytes_in)
        transferred.add_metric(["udp", "out"], t.bytes_out)
        transferred.add_metric(["tcp", "in"], t.stream_bytes_in)
        transferred.add_metric(["tcp", "out"], t.stream_bytes_out)
        yield transferred
        streams = CounterMetricFamily(
            "nodenet_tcp_connections", "TCP connections accepted and opened.", labels=["direction"]
        )
        streams.add_metric(["in"], t.streams_in)
        streams.add_metric(["out"], t.streams_out)
        yield streams
        dropped = CounterMetricFamily(
            "nodenet_dropped_packets",
            "Datagrams, frames and connections refused, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(service.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        store = self._store()
        if store is not None:
            yield from _store_metrics(store)


def _store_metrics(store: StoreService) -> Iterator[Metric]:
    s = store.stats
    ingested = CounterMetricFamily(
        "nodenet_entries_ingested",
        "Verified entries offered to the store, by outcome (stored = a new head).",
        labels=["outcome"],
    )
    for outcome in ("stored", "duplicate", "superseded", "expired"):
        ingested.add_metric([outcome], s.ingested.get(outcome, 0))
    yield ingested
    rejected = CounterMetricFamily(
        "nodenet_entries_rejected",
        "Entries refused before storing, by reason (nothing of them is stored).",
        labels=["reason"],
    )
    for reason, count in sorted(s.rejected.items()):
        rejected.add_metric([reason], count)
    yield rejected
    for name, value, help_text in (
        ("entries_submitted", s.submitted, "Entries written through this node's API."),
        ("entries_dropped", s.dropped_queue_full, "Gossiped entries dropped: ingest queue full."),
        (
            "store_damaged_entries",
            s.damaged,
            "Stored entries found damaged on disk, dropped to be fetched again from peers.",
        ),
        (
            "store_write_failures",
            s.write_failures,
            "Batches of replicated entries the state store refused (disk or map full).",
        ),
        (
            "entry_copies_skipped",
            store.replicator.copies_skipped,
            "Gossiped copies of entries already held here, dropped before verification.",
        ),
        ("entries_pulled", s.pulled, "Entries fetched from peers (announcements, sync)."),
        ("entries_pushed", s.pushed, "Entries sent to peers after a sync."),
        ("sync_sessions", s.syncs, "Anti-entropy sessions started here."),
        ("sync_failures", s.sync_failures, "Anti-entropy sessions that did not complete."),
        (
            "sync_declined",
            s.sync_declined,
            "Anti-entropy sessions the peer declined: it was already reconciling with us.",
        ),
        ("sync_rounds", s.sync_rounds, "Reconciliation round trips."),
        ("sync_bytes", s.sync_bytes, "Bytes of reconciliation messages, both ways."),
    ):
        yield CounterMetricFamily(f"nodenet_{name}", help_text, value=value)
    yield CounterMetricFamily(
        "nodenet_sync_seconds", "Time spent in completed sessions.", value=s.sync_seconds
    )
    yield CounterMetricFamily(
        "nodenet_store_summaries_sent",
        "Store summaries (whole-store fingerprints) sent, one per sync interval.",
        value=store.replicator.summaries_sent,
    )
    summaries = CounterMetricFamily(
        "nodenet_store_summaries_received",
        "Store summaries from members by result: match, mismatch (a session started),"
        " limited (a session with the sender started within the interval), ignored.",
        labels=["result"],
    )
    for result, count in store.replicator.summaries_received.items():
        summaries.add_metric([result], count)
    yield summaries
    yield GaugeMetricFamily(
        "nodenet_store_entries",
        "Entries held (one head per key, deletes included).",
        value=store.store.count,
    )
    statistics = store.store.state.statistics()
    yield GaugeMetricFamily(
        "nodenet_lmdb_used_bytes",
        "Bytes of the LMDB map holding data.",
        value=statistics.used_bytes,
    )
    yield GaugeMetricFamily(
        "nodenet_lmdb_map_bytes",
        "Size of the LMDB map (address space reserved).",
        value=statistics.map_size,
    )


class _HandlerCollector(Collector):
    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "nodenet_handler_runs",
            "Handler runs by handler and result (ok, failed, timeout, error, dropped).",
            labels=["handler", "result"],
        )
        for (name, result), count in sorted(self._handlers.results.items()):
            runs.add_metric([name, result], count)
        yield runs


class _HubCollector(Collector):
    def __init__(self, hub: EventHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "nodenet_api_event_streams",
            "Event streams (GET /v1/events) open now (at most 32).",
            value=self._hub.subscribers,
        )
        yield CounterMetricFamily(
            "nodenet_api_event_streams_dropped",
            "Event streams ended because their client fell too far behind.",
            value=self._hub.dropped,
        )


class Metrics:
    """The daemon's registry and the few metrics observed as they happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._service: MembershipService | None = None
        self._store: StoreService | None = None
        self.registry.register(_Collector(lambda: self._service, lambda: self._store))
        ProcessCollector(registry=self.registry)
        self.member_events = Counter(
            "nodenet_member_events",
            "Membership changes seen, by kind (failed, refuted … for false-positive rates).",
            ["kind"],
            registry=self.registry,
        )
        for kind in EventKind:
            self.member_events.labels(kind.value)
        self.probe_rtt = Histogram(
            "nodenet_probe_rtt_seconds",
            "Round-trip time of successful probes.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )

    def attach_hub(self, hub: EventHub) -> None:
        """Export the event hub's stream counts."""
        self.registry.register(_HubCollector(hub))

    def attach_handlers(self, handlers: Handlers) -> None:
        """Export handler run counts."""
        self.registry.register(_HandlerCollector(handlers))

    def attach(self, service: MembershipService, store: StoreService | None = None) -> None:
        """Export these services' counters."""
        self._service = service
        self._store = store

    def observe_events(self, events: list[MemberEvent]) -> None:
        """Count membership events."""
        for event in events:
            self.member_events.labels(event.kind.value).inc()

    def observe_rtts(self, rtts: list[float]) -> None:
        """Record probe round trips."""
        for rtt in rtts:
            self.probe_rtt.observe(rtt)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)

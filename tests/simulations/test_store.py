"""The store side: eager gossip, announce and pull, and anti-entropy with real Reconcilers."""

from __future__ import annotations

from nodenet.protocol.replication import ReplicationConfig
from nodenet.simulations.cluster import Cluster
from nodenet.simulations.store import StoreSettings


def heads(node):
    return {k: e.id for k, e in node.store.heads.items()}


def test_given_small_and_large_writes_then_every_node_gets_the_same_heads_by_gossip():
    cluster = Cluster(11, store=StoreSettings())
    cluster.bootstrap(30)
    cluster.run(2)
    writer = cluster.nodes[0]
    cluster.write(writer, "small", b"x" * 100)
    cluster.write(cluster.nodes[5], "large", b"y" * 5000)  # announced, then pulled over TCP
    cluster.write(cluster.nodes[6], "small", b"newer")  # supersedes the first
    cluster.run(5)
    reference = heads(writer)
    assert len(reference) == 2
    assert all(heads(n) == reference for n in cluster.nodes)
    assert sum(n.store.stats.pulled for n in cluster.nodes) >= 29


def test_given_nodes_away_during_writes_then_anti_entropy_repairs_them():
    settings = StoreSettings(replication=ReplicationConfig(sync_interval_s=5.0))
    cluster = Cluster(12, store=settings)
    cluster.bootstrap(20)
    cluster.run(2)
    away = cluster.nodes[15:]
    for node in away:
        cluster.crash(node)
    for i in range(60):
        cluster.write(cluster.nodes[i % 10], f"k{i}", bytes(50))
    cluster.run(30)  # gossip is over before they return
    for node in away:
        cluster.restart(node, keep_state=True)
    cluster.run(30)
    reference = heads(cluster.nodes[0])
    assert len(reference) == 60
    assert all(heads(n) == reference for n in cluster.nodes)
    assert cluster.recorder.store_converged() == 1.0
    syncs = [n.store.stats for n in cluster.nodes]
    assert sum(s.syncs for s in syncs) > 0
    assert sum(s.sync_bytes for s in syncs) > 0

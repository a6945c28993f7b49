"""Rotating the cluster key across running daemons while one node is offline."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.daemons import DaemonProcess, free_port, node_dir, wait_until

from nodenet.protocol.keyring import ClusterKey

pytestmark = pytest.mark.slow


def nodenet(node: DaemonProcess, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "nodenet.cli", *args, "--api", str(node.socket)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_rotation_with_a_node_offline_follows_the_documented_procedure(root):
    seed_port = free_port()
    nodes = [
        DaemonProcess(
            node_dir(
                root,
                f"n{i}",
                port=seed_port if i == 0 else None,
                seeds=[] if i == 0 else [f"127.0.0.1:{seed_port}"],
            )
        )
        for i in range(5)
    ]
    names = [f"n{i}" for i in range(5)]
    try:
        for node in nodes:
            node.start()
        wait_until(
            lambda: all(all(n.peers().get(x) == "alive" for x in names) for n in nodes),
            timeout=30,
            what="cluster",
        )
        late = nodes[4]
        late.stop()
        online = nodes[:4]
        new = ClusterKey.generate()
        for node in online:  # step 1: install everywhere
            nodenet(node, "keys", "install", new.text)
        for node in online:  # step 2: use everywhere
            nodenet(node, "keys", "use", new.key_id)
        with online[0].api() as client:
            old_id = next(
                k["id"] for k in client.get("/v1/keys").json()["keys"] if not k["primary"]
            )
        wait_until(
            lambda: all(all(n.peers().get(x) == "alive" for x in names[:4]) for n in online),
            timeout=30,
            what="online nodes together",
        )

        # The late node comes back with only the old key: the others still hold it, so it
        # is heard, answered with the old key, and rejoins by itself.
        late.start()
        wait_until(
            lambda: all(n.peers().get("n4") == "alive" for n in online),
            timeout=60,
            what="late node rejoined",
        )
        wait_until(
            lambda: all(v == "alive" for v in late.peers().values()),
            timeout=60,
            what="late node sees all",
        )
        # Then it gets the new key and uses it, and only then is the old key removed everywhere.
        nodenet(late, "keys", "install", new.text)
        nodenet(late, "keys", "use", new.key_id)
        for node in nodes:
            nodenet(node, "keys", "remove", old_id)
        for node in nodes:
            with node.api() as client:
                assert client.get("/v1/keys").json()["keys"] == [
                    {"id": new.key_id, "primary": True}
                ]
        # Still one cluster, now on the new key alone: a write anywhere reaches everyone.
        with nodes[2].api() as client:
            client.post("/v1/entries", json={"key": "after-rotation", "value": "ok"})
        wait_until(
            lambda: all(
                n.api().get("/v1/entries/after-rotation").status_code == 200 for n in nodes
            ),
            timeout=30,
            what="write after rotation everywhere",
        )
        assert all(all(n.peers().get(x) == "alive" for x in names) for n in nodes)
    finally:
        for node in nodes:
            node.kill()

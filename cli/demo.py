"""`make demo` until the daemon lands: identities, a keyring, and signed sealed datagrams.

Creates (or reuses) three node identities under a demo directory, one cluster key, and has
each node send the next a sealed, signed PING with its ALIVE claim piggybacked; the
receiver opens, verifies and decodes it. What it prints is computed, not canned.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nodenet.daemon.keyfile import load_or_create_node_key
from nodenet.protocol.identity import node_id_of
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.messages import Address, Alive, Ping
from nodenet.protocol.wire import WireCodec

NODES = 3


def run(directory: Path) -> int:
    """Run the demo with state under `directory`."""
    keys = [load_or_create_node_key(directory / f"node{i}" / "node.key") for i in range(NODES)]
    ring = Keyring([ClusterKey.generate()])
    codecs = [WireCodec(key, ring) for key, _ in keys]
    print(f"cluster key {ring.primary.key_id} (fresh for this demo)\n")
    print(f"{'NODE':<6} {'ID':<54} {'KEY FILE'}")
    for i, (key, created) in enumerate(keys):
        state = "created" if created else "reused"
        path = directory / f"node{i}" / "node.key"
        print(f"node{i:<2} {node_id_of(key).text:<54} {path} ({state})")
    print()
    for i, codec in enumerate(codecs):
        j = (i + 1) % NODES
        receiver = codecs[j]
        alive = Alive.create(
            keys[i][0], incarnation=1, address=Address("127.0.0.1", 7950 + i), tags={"demo": "1"}
        )
        now_ms = time.time_ns() // 1_000_000
        (datagram,) = codec.encode_datagrams(
            [Ping(seq=i + 1, target=receiver.node_id), alive], now_ms
        )
        got = receiver.decode_datagram(datagram, now_ms)
        kinds = "+".join(m.TYPE.name for m in got.envelope.messages)
        print(
            f"node{i} -> node{j}: {len(datagram)} bytes sealed, {kinds}, signature by"
            f" {got.envelope.sender.short} verified, opened with key {got.key.key_id}"
        )
    print("\nThe daemon (`nodenetd`) and `nodenet dev --nodes N` arrive with issue 4.")
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1] if len(sys.argv) > 1 else ".demo")))

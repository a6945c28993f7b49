"""Hot backup during continuous writes, then restore into a fresh daemon."""

from __future__ import annotations

import shutil
import threading

import pytest
from support.daemons import DaemonProcess, node_dir

from nodenet.daemon.backup import BackupError, backup
from nodenet.daemon.state import StateStore
from nodenet.daemon.store import EntryStore
from nodenet.protocol.entries import decode_entry
from nodenet.protocol.identity import verify

pytestmark = pytest.mark.slow


def test_a_backup_taken_during_writes_restores_to_a_consistent_verified_store(root):
    node = DaemonProcess(node_dir(root, "source")).start()
    acknowledged: list[str] = []
    attempted: list[str] = []  # sent, acknowledged or not: a write in flight may be in the copy
    stop = threading.Event()

    def write() -> None:
        with node.api() as client:
            i = 0
            while not stop.is_set() and i < 5000:
                keys = [f"k/{i + j:05d}" for j in range(20)]
                attempted.extend(keys)
                body = {"entries": [{"key": k, "value": f"v{k}"} for k in keys]}
                if client.post("/v1/entries", json=body).status_code == 200:
                    acknowledged.extend(keys)
                i += 20

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acknowledged) < 400:
            writer.join(0.05)
        before = set(acknowledged)
        report = backup(node.directory, root / "backup")
        after = set(attempted)
    finally:
        stop.set()
        writer.join(30)
        node.stop()
    print(f"\nbackup: {report.entries} entries, {report.bytes} B in {report.seconds:.2f} s")
    assert (root / "backup" / "node.key").stat().st_mode & 0o777 == 0o600

    # The copy is one consistent snapshot: everything acknowledged before it started, nothing
    # that had not even been sent when it ended, every entry verifies, counts agree.
    state = StateStore.open(root / "backup" / "state")
    try:
        store = EntryStore(state)
        with state.reader() as (txn, dbs):
            heads = {k.decode(): v for k, v in txn.cursor(dbs["heads"])}
            raw_entries = [v for _, v in txn.cursor(dbs["entries"])]
        assert before <= set(heads) <= after
        assert len(raw_entries) == len(heads) == report.entries
        for raw in raw_entries:
            decode_entry(raw, now_ms=2**47, max_value=65536, verify=verify)
        digest = store.digest_sync()
    finally:
        state.close()

    # Restore: the documented procedure is to put the backup in place of the state directory.
    restored = DaemonProcess(node_dir(root, "restored"))
    for name in ("state", "keyring", "node.key"):
        target = restored.directory / name
        if target.is_dir():
            shutil.rmtree(target)
        shutil.copytree(root / "backup" / name, target) if name == "state" else shutil.copy2(
            root / "backup" / name, target
        )
    restored.start()
    try:
        with restored.api() as client:
            summary = client.get("/v1/store").json()
            assert summary == {"entries": report.entries, "digest": digest.hex()}
            assert client.get(f"/v1/entries/{sorted(before)[-1]}").status_code == 200
            assert client.get("/v1/self").json()["id"] == _id(node)
    finally:
        restored.stop()


def _id(node: DaemonProcess) -> str:
    from nodenet.daemon.keyfile import load_node_key
    from nodenet.protocol.identity import node_id_of

    return node_id_of(load_node_key(node.directory / "node.key")).text


def test_backup_refuses_a_missing_state_or_a_non_empty_target(root):
    with pytest.raises(BackupError, match="no nodenet state"):
        backup(root / "nothing", root / "out")
    (root / "busy").mkdir()
    (root / "busy" / "file").write_text("x")
    (root / "s" / "state").mkdir(parents=True)
    (root / "s" / "state" / "data.mdb").write_text("")
    with pytest.raises(BackupError, match="not empty"):
        backup(root / "s", root / "busy")

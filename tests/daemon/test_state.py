"""The LMDB state store: batched durable writes, reads, schema checks, map growth, kill -9.

Real LMDB in tmp_path and real time: the writer is a thread, so Trio's MockClock would jump
while it works. Every test is bounded with `trio.fail_after` and waits on results, never
on sleeps.
"""

from __future__ import annotations

import logging
import signal
import stat
import subprocess
import sys
from pathlib import Path

import lmdb
import msgpack
import pytest
import trio

from nodenet.daemon import state
from nodenet.daemon.state import (
    Delete,
    Put,
    StateConfig,
    StateError,
    StateStore,
    open_state_store,
)
from nodenet.protocol.identity import NodeId

KiB = 1024
MiB = 1024 * KiB
DEADLINE_S = 30


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def reopen_and_read(
    path: Path, db: str, config: StateConfig | None = None
) -> dict[bytes, bytes]:
    async with open_state_store(path, config) as store:
        return dict(await store.items(db))


async def test_given_puts_and_deletes_when_read_back_then_latest_values_in_key_order(path: Path):
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            await store.write([Put("members", b"b", b"2"), Put("members", b"a", b"1")])
            await store.write([Put("members", b"c", b"3"), Put("members", b"a", b"one")])
            await store.write([Delete("members", b"b"), Delete("members", b"absent")])
            assert await store.get("members", b"a") == b"one"
            assert await store.get("members", b"b") is None
            assert await store.items("members") == [(b"a", b"one"), (b"c", b"3")]
            assert await store.items("meta", b"sch") == [(b"schema", msgpack.packb(1))]
            assert await store.items("members", b"c") == [(b"c", b"3")]
            assert await store.items("members", b"z") == []
            assert await store.items("members", limit=1) == [(b"a", b"one")]
        assert await reopen_and_read(path, "members") == {b"a": b"one", b"c": b"3"}


async def test_given_a_new_store_then_directory_and_files_are_private(path: Path):
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path):
            pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600


async def test_given_members_and_incarnation_helpers_then_they_round_trip(path: Path):
    alice, bob = NodeId(bytes(range(32))), NodeId(bytes(32))
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            assert await store.load_incarnation() == 0
            store.save_member(alice, b"alice signed state")
            store.save_member(bob, b"bob signed state")
            store.delete_member(bob)
            await store.save_incarnation(7)
            members = await store.load_members()
            assert members == {alice: b"alice signed state"}
            assert all(type(node) is NodeId for node in members)
        async with open_state_store(path) as store:
            assert await store.load_incarnation() == 7


async def test_given_100_concurrent_writers_then_they_share_a_few_transactions(path: Path):
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            before = store.statistics()
            async with trio.open_nursery() as nursery:
                for n in range(100):
                    nursery.start_soon(store.write, [Put("members", b"%03d" % n, b"v")])
            stats = store.statistics()
            assert stats.ops_committed - before.ops_committed == 100
            assert stats.transactions - before.transactions <= 10  # one, unless the VM stalls
            assert len(await store.items("members")) == 100


async def test_given_more_than_a_batch_queued_then_transactions_hold_at_most_1000_ops(
    path: Path,
):
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            for n in range(2500):
                store.write_nowait([Put("members", b"%05d" % n, b"v")])
            await store.flush()
            stats = store.statistics()
            assert stats.ops_committed == 2500
            assert stats.largest_batch_ops <= 1000
            assert stats.transactions >= 3
            assert stats.queued_ops == 0

            # One request is atomic: never split, even when larger than a batch.
            await store.write([Delete("members", b"%05d" % n) for n in range(1500)])
            after = store.statistics()
            assert after.transactions == stats.transactions + 1
            assert after.largest_batch_ops == 1500
            assert len(await store.items("members")) == 1000


async def test_given_write_nowait_when_flushed_then_visible_to_reads(path: Path):
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            store.write_nowait([Put("members", b"k", b"1")])
            store.write_nowait([Put("members", b"k", b"2"), Put("members", b"j", b"3")])
            await store.flush()
            assert await store.items("members") == [(b"j", b"3"), (b"k", b"2")]


async def test_given_a_cancelled_write_then_it_is_still_committed(path: Path):
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            with trio.CancelScope() as scope:
                scope.cancel()
                await store.write([Put("members", b"k", b"v")])
            assert scope.cancelled_caught
            await store.flush()
            assert await store.get("members", b"k") == b"v"


async def test_given_a_full_write_queue_when_writing_nowait_then_would_block(path: Path):
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path, StateConfig(max_queued_ops=10)) as store:
            with pytest.raises(trio.WouldBlock):
                store.write_nowait([Put("members", b"%02d" % n, b"v") for n in range(11)])
            await store.write([Put("members", b"%02d" % n, b"v") for n in range(11)])
            assert len(await store.items("members")) == 11


async def test_given_bad_operations_then_refused_when_made_or_queued(path: Path):
    with pytest.raises(ValueError, match="unknown state database 'nope'"):
        Put("nope", b"k", b"v")
    with pytest.raises(ValueError, match="empty"):
        Delete("members", b"")
    with pytest.raises(TypeError, match="must be bytes"):
        Put("members", "k", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        Put("members", b"k", bytearray(b"v"))  # type: ignore[arg-type]
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            with pytest.raises(ValueError, match="600 bytes; LMDB allows at most 511"):
                store.write_nowait([Put("members", b"k" * 600, b"v")])
            with pytest.raises(ValueError, match="unknown state database"):
                await store.get("nope", b"k")
            assert store.statistics().queued_ops == 0


async def test_given_a_closed_store_then_queued_writes_were_saved_and_calls_refused(path: Path):
    with trio.fail_after(DEADLINE_S):
        store = await trio.to_thread.run_sync(StateStore.open, path)
        for n in range(500):
            store.write_nowait([Put("members", b"%03d" % n, b"v")])
        await store.aclose()
        with pytest.raises(StateError, match="closed"):
            await store.write([Put("members", b"k", b"v")])
        with pytest.raises(StateError, match="closed"):
            store.write_nowait([Put("members", b"k", b"v")])
        with pytest.raises(StateError, match="closed"):
            await store.flush()
        with pytest.raises(StateError, match="closed"):
            await store.get("members", b"000")
        await store.aclose()  # closing twice is harmless
        assert len(await reopen_and_read(path, "members")) == 500


async def test_given_a_newer_schema_on_disk_when_opened_then_refused_with_upgrade_hint(
    path: Path,
):
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            await store.write([Put("meta", b"schema", msgpack.packb(2))])
    with pytest.raises(StateError, match=f"{path} has schema version 2.*upgrade nodenet"):
        StateStore.open(path)


async def test_given_an_older_schema_when_opened_then_migrations_run_in_order(
    path: Path, monkeypatch: pytest.MonkeyPatch
):
    def migrate(txn: lmdb.Transaction[bytes], dbs: dict[str, lmdb._Database]) -> None:
        txn.put(b"migrated", b"0 to 1", db=dbs["meta"])

    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            await store.write([Put("meta", b"schema", msgpack.packb(0))])
        with pytest.raises(StateError, match="schema version 0, which this nodenet cannot"):
            StateStore.open(path)
        monkeypatch.setitem(state.MIGRATIONS, 0, migrate)
        meta = await reopen_and_read(path, "meta")
    assert meta == {b"migrated": b"0 to 1", b"schema": msgpack.packb(1)}


def test_given_a_corrupt_schema_version_when_opened_then_refused(path: Path):
    StateStore.open(path).close()
    env = lmdb.open(str(path), max_dbs=state.MAX_DBS)
    with env.begin(write=True) as txn:
        txn.put(b"schema", b"\xc1", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(StateError, match=f"{path}: the schema version is corrupt"):
        StateStore.open(path)


def test_given_an_lmdb_environment_of_another_program_when_opened_then_refused(path: Path):
    path.mkdir()
    env = lmdb.open(str(path), max_dbs=2)
    env.open_db(b"theirs")
    env.close()
    with pytest.raises(StateError, match=f"{path} .*not a nodenet state store"):
        StateStore.open(path)


def test_given_a_corrupt_environment_when_opened_then_error_names_the_path(path: Path):
    path.mkdir(mode=0o700)
    (path / "data.mdb").write_bytes(b"not an lmdb file" * 1000)
    with pytest.raises(StateError, match=f"cannot open state store {path}: .*move it away"):
        StateStore.open(path)


def test_given_a_file_where_the_directory_should_be_then_refused(path: Path):
    path.write_bytes(b"")
    with pytest.raises(StateError, match=f"cannot create state store directory {path}"):
        StateStore.open(path)


def test_given_a_store_in_use_when_opened_again_then_refused(path: Path):
    store = StateStore.open(path)
    try:
        with pytest.raises(StateError, match=f"{path} is in use by another nodenetd"):
            StateStore.open(path)
    finally:
        store.close()
    StateStore.open(path).close()  # the lock goes with the store


async def test_given_a_tiny_map_when_data_outgrows_it_then_the_map_grows_under_readers(
    path: Path,
):
    config = StateConfig(map_size=64 * KiB, max_map_size=64 * MiB)
    value = bytes(1000)
    reads = 0
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path, config) as store:
            writing = True

            async def read_while_writing() -> None:
                nonlocal reads
                while writing:
                    rows = await store.items("members")
                    assert all(v == value for _, v in rows)
                    reads += 1

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(read_while_writing)
                for i in range(60):
                    await store.write(
                        [Put("members", b"%02d-%02d" % (i, j), value) for j in range(25)]
                    )
                writing = False
            stats = store.statistics()
            assert stats.map_grows >= 4
            assert stats.map_size >= 2 * MiB
            assert stats.used_bytes > 1500 * 1000
        assert reads > 0
        # Reopened with the tiny map again: LMDB maps at least what the file holds.
        assert len(await reopen_and_read(path, "members", config)) == 1500


async def test_given_the_map_limit_when_reached_then_writers_get_a_full_error_and_it_stays_up(
    path: Path, caplog: pytest.LogCaptureFixture
):
    config = StateConfig(map_size=64 * KiB, max_map_size=256 * KiB)
    committed = 0
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path, config) as store:

            async def fill() -> None:
                nonlocal committed
                for i in range(1000):
                    await store.write(
                        [Put("members", b"%03d-%d" % (i, j), bytes(1000)) for j in range(10)]
                    )
                    committed = i + 1

            with pytest.raises(StateError, match=r"state store is full: .* of 256\.0 KiB"):
                await fill()
            assert 0 < committed < 1000
            assert store.statistics().requests_failed == 1
            assert len(await store.items("members")) == committed * 10
            with caplog.at_level(logging.ERROR, logger="nodenet.daemon.state"):
                store.write_nowait([Put("members", b"big", bytes(300 * KiB))])
                # Shares the failing batch, yet fits: committed on its own.
                await store.write([Delete("members", b"000-0")])
            assert "1 queued operations were not saved: state store is full" in caplog.text
            assert await store.get("members", b"000-0") is None
            assert store.statistics().requests_failed == 2


DISK_FULL_SCRIPT = """
import resource, signal, sys, trio
from pathlib import Path
from nodenet.daemon.state import Put, StateError, open_state_store

async def main(path):
    async with open_state_store(Path(path)) as store:
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, hard))
        try:
            for n in range(1000):
                await store.write([Put("members", b"%04d" % n, bytes(4096))])
            print("no error")
        except StateError as exc:
            print("error:", exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        await store.write([Put("members", b"after", b"ok")])
        print("after:", (await store.get("members", b"after")).decode())

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
trio.run(main, sys.argv[1])
"""


async def test_given_a_full_disk_when_writing_then_a_full_error_and_writes_resume_after(
    path: Path,
):
    with trio.fail_after(DEADLINE_S):
        result = await trio.run_process(
            [sys.executable, "-c", DISK_FULL_SCRIPT, str(path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "error: state store is full: the disk has no room" in output
    assert "free disk space" in output
    assert "after: ok" in output


KILL_SCRIPT = """
import sys, trio
from pathlib import Path
from nodenet.daemon.state import Put, StateConfig, open_state_store

async def main(path):
    async with open_state_store(Path(path), StateConfig(map_size=64 * 1024)) as store:
        async def writer(task):
            for n in range(10**9):
                key = b"%02d-%08d" % (task, n)
                await store.write([Put("members", key, key * 40)])
                print(key.decode(), flush=True)  # only after the commit was synced

        async with trio.open_nursery() as nursery:
            for task in range(8):
                nursery.start_soon(writer, task)

trio.run(main, sys.argv[1])
"""


@pytest.mark.slow
async def test_given_acknowledged_writes_when_killed_with_sigkill_then_all_survive(
    path: Path, tmp_path: Path
):
    wanted = 400
    acked: list[bytes] = []
    stderr_path = tmp_path / "stderr"
    with trio.fail_after(DEADLINE_S), stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", KILL_SCRIPT, str(path)], stdout=subprocess.PIPE, stderr=stderr
        )
        assert process.stdout is not None
        buffer = b""
        try:
            while len(acked) < wanted:
                chunk = await process.stdout.receive_some()
                assert chunk, f"writer exited early: {stderr_path.read_text()}"
                *lines, buffer = (buffer + chunk).split(b"\n")
                acked.extend(lines)
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        while chunk := await process.stdout.receive_some():  # acks written before the kill
            *lines, buffer = (buffer + chunk).split(b"\n")
            acked.extend(lines)
        assert process.returncode == -signal.SIGKILL
        stored = await reopen_and_read(path, "members")
    missing = [key for key in acked if stored.get(key) != key * 40]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost: {missing[:5]}"
    assert len(acked) >= wanted


def test_given_bad_config_values_then_errors_name_the_key():
    with pytest.raises(ValueError, match=r"state\.max_map_size"):
        StateConfig(map_size=MiB, max_map_size=64 * KiB)
    with pytest.raises(ValueError, match=r"state\.map_size"):
        StateConfig(map_size=4096)
    with pytest.raises(ValueError, match=r"state\.max_batch_delay_s"):
        StateConfig(max_batch_delay_s=-1)


READER_DIES = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=16, readonly=True)
txn = env.begin()  # a snapshot, held until the process dies
print("reading", flush=True)
sys.stdin.read()
"""


def test_the_read_slot_of_a_killed_reader_is_freed_at_open_and_on_demand(path: Path):
    # A reader killed inside its transaction (kill -9 of `nodenet backup`) pins its snapshot:
    # LMDB then reuses no page freed after it and the file grows with every rewrite.
    def killed_reader() -> None:
        child = subprocess.Popen(
            [sys.executable, "-c", READER_DIES, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "reading\n"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)

    StateStore.open(path).close()
    killed_reader()
    store = StateStore.open(path)  # frees it on open
    try:
        assert store.clear_stale_readers() == 0
        killed_reader()
        assert store.clear_stale_readers() == 1
        assert store.clear_stale_readers() == 0
    finally:
        store.close()


OPEN_STORE = """
import sys
from pathlib import Path
from nodenet.daemon.state import StateError, StateStore
try:
    StateStore.open(Path(sys.argv[1])).close()
except StateError as exc:
    print(exc)
    sys.exit(3)
"""


async def test_a_truncated_data_file_is_refused_with_a_message_not_a_sigbus(path: Path):
    # LMDB maps the file; reading a page past its end killed the process with SIGBUS and
    # no message (a half-copied state directory, a partial backup). In a subprocess, so
    # that the old behaviour fails this test instead of killing pytest.
    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            for i in range(200):
                await store.write([Put("members", bytes([i % 256]) * 32, b"m" * 2000)])
    data = path / "data.mdb"
    whole = data.stat().st_size
    with data.open("r+b") as f:
        f.truncate(whole // 2)
    result = subprocess.run(
        [sys.executable, "-c", OPEN_STORE, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, (result.returncode, result.stderr[-500:])
    assert f"{data} is truncated: {whole // 2} bytes, but its last commit needs" in result.stdout
    assert "restore the state directory" in result.stdout
    from nodenet.daemon.backup import BackupError, backup

    assert path.name == "state"
    with pytest.raises(BackupError, match="is truncated"):
        backup(path.parent, path.parent / "backup")  # nodenet backup mapped it too
    data.write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-c", OPEN_STORE, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "is empty (0 bytes)" in result.stdout
    data.write_bytes(b"\x00" * 8192)
    result = subprocess.run(
        [sys.executable, "-c", OPEN_STORE, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "is not an LMDB data file" in result.stdout


async def test_a_backup_that_fails_midway_leaves_nothing_that_looks_like_a_backup(path: Path):
    from nodenet.daemon.backup import BackupError, backup

    with trio.fail_after(DEADLINE_S):
        async with open_state_store(path) as store:
            await store.write([Put("members", b"m" * 32, b"state")])
    (path.parent / "node.key").mkdir()  # copying it fails after the store was copied
    target = path.parent / "backups" / "today"
    with pytest.raises(BackupError, match=r"writing the backup into .* failed.*nothing was kept"):
        backup(path.parent, target)
    assert not target.exists()
    assert list((path.parent / "backups").iterdir()) == []  # no partial directory either
    (path.parent / "node.key").rmdir()
    killed = path.parent / "backups" / ".today.partial-99999"  # of a backup killed earlier
    (killed / "state").mkdir(parents=True)
    report = backup(path.parent, target)
    assert report.members == 1
    assert (target / "BACKUP.json").exists()
    assert sorted(p.name for p in target.iterdir()) == ["BACKUP.json", "state"]
    assert sorted(p.name for p in (path.parent / "backups").iterdir()) == ["today"]
    assert (target / "state" / "data.mdb").stat().st_mode & 0o777 == 0o600


def test_permission_denied_is_not_called_damage(path: Path, monkeypatch: pytest.MonkeyPatch):
    # The advice for damage is to move the state away, which would throw the node's data
    # out; for an ownership problem the advice is chown (found by a durability review).
    StateStore.open(path).close()

    def denied(*args: object, **kwargs: object) -> None:
        raise lmdb.Error(f"{path}: Permission denied")

    monkeypatch.setattr(state.lmdb, "open", denied)
    with pytest.raises(StateError, match="permission denied; run nodenetd as the user") as e:
        StateStore.open(path)
    assert "move it away" not in str(e.value)


def test_a_lock_file_that_cannot_be_opened_is_named_not_the_directory(path: Path):
    (path / "nodenetd.lock").mkdir(parents=True)  # as root, the closest to "owned by root"
    with pytest.raises(StateError, match=r"cannot open .*nodenetd\.lock: .*run nodenetd as"):
        StateStore.open(path)


def test_a_data_file_that_cannot_be_read_gets_the_chown_advice(path: Path, monkeypatch):
    from nodenet.daemon import lmdbfile

    StateStore.open(path).close()
    real_open = open

    def denied(file, *args, **kwargs):
        if str(file).endswith("data.mdb"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(lmdbfile, "open", denied, raising=False)
    with pytest.raises(StateError, match=r"Permission denied; run nodenetd as the user"):
        StateStore.open(path)

"""The store commands as processes against one real nodenetd: submit, get (binary values
byte for byte), ls, delete, watch, and the API's own error for a value over the limit."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemons import DaemonProcess, node_dir, remove, short_tmpdir

pytestmark = pytest.mark.slow
NODENET = [sys.executable, "-m", "nodenet.cli"]
BINARY = bytes(range(256)) * 4 + b"\xc3\x28 not UTF-8 \x00\n"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    root = short_tmpdir()
    node = DaemonProcess(node_dir(root, "solo"))
    try:
        yield node.start()
    finally:
        node.stop()
        remove(root)


def nodenet(
    daemon: DaemonProcess, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*NODENET, *args, "--api", str(daemon.socket)],
        input=stdin,
        capture_output=True,
        timeout=30,
    )


def test_submit_get_ls_delete_round_trip_with_a_binary_value(daemon: DaemonProcess, tmp_path: Path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(BINARY)

    stored = nodenet(daemon, "submit", "e2e/blob", "--file", str(blob))
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.decode().startswith("stored e2e/blob id ")
    text = nodenet(daemon, "submit", "e2e/text file", "-", stdin=b"replicas=3\n")
    assert text.returncode == 0, text.stderr

    got = nodenet(daemon, "get", "e2e/blob")
    assert got.returncode == 0, got.stderr
    assert got.stdout == BINARY
    assert nodenet(daemon, "get", "e2e/text file").stdout == b"replicas=3\n"

    meta = nodenet(daemon, "get", "e2e/blob", "--meta").stdout.decode().splitlines()
    assert meta[0] == "key     e2e/blob"
    assert meta[-1] == f"size    {len(BINARY)} bytes (binary)"

    listed = nodenet(daemon, "ls", "e2e/")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.decode().splitlines()
    assert header.split() == ["KEY", "SIZE", "AUTHOR", "TIME"]
    assert [row.split("  ")[0] for row in rows] == ["e2e/blob", "e2e/text file"]
    assert rows[0].split()[1] == str(len(BINARY))

    deleted = nodenet(daemon, "delete", "e2e/blob")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.decode().startswith("deleted e2e/blob id ")
    gone = nodenet(daemon, "get", "e2e/blob")
    assert gone.returncode == 1
    assert gone.stderr.decode() == "nodenet: no entry for key 'e2e/blob'\n"
    rows = nodenet(daemon, "ls", "e2e/").stdout.decode().splitlines()[1:]
    assert [row.split("  ")[0] for row in rows] == ["e2e/text file"]


def test_given_a_value_over_the_daemons_limit_when_submit_then_exit_1_with_its_message(
    daemon: DaemonProcess,
):
    result = nodenet(daemon, "submit", "e2e/big", "-", stdin=b"x" * (64 * 1024 + 1))
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "nodenet: value is 65537 bytes; the limit is 65536 (store.max_value)\n"
    )


def test_watch_prints_entries_across_a_daemon_restart_and_stops_on_ctrl_c(
    daemon: DaemonProcess,
):
    """Runs last: it restarts the module's daemon. The restarted daemon counts event ids
    from 1 again; watch must not take its old resume point for a place in the new count."""
    process = subprocess.Popen(
        [*NODENET, "watch", "e2e/watch/", "--api", str(daemon.socket)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()

    def next_line(timeout: float) -> str | None:
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            assert process.poll() is None, process.stderr and process.stderr.read()
            return None

    try:
        # watch shows only what happens after it connects: submit until a line appears
        deadline = time.monotonic() + 20
        line = None
        while line is None and time.monotonic() < deadline:
            assert nodenet(daemon, "submit", "e2e/watch/k", "v1").returncode == 0
            line = next_line(0.5)
        assert line is not None, "watch printed nothing within 20 s"
        assert "  e2e/watch/k  = v1  (by " in line
        assert line.rstrip().endswith(", local)")

        daemon.stop()
        daemon.start()
        assert nodenet(daemon, "submit", "e2e/watch/k", "v2").returncode == 0
        deadline = time.monotonic() + 30
        while (line := next_line(0.5)) is None or "= v1" in line:
            assert time.monotonic() < deadline, "the entry written after the restart not shown"
        assert "  e2e/watch/k  = v2  (by " in line

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        stderr = process.stderr.read()
        assert "nodenetd restarted" in stderr
        assert "Traceback" not in stderr
    finally:
        process.kill()
        process.wait(timeout=10)

"""The `nodenet` command against real daemons: dev cluster, peers, and a stopped daemon."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from support.daemons import DaemonProcess, free_port, node_dir

pytestmark = pytest.mark.slow
NODENET = [sys.executable, "-m", "nodenet.cli"]


def nodenet(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NODENET, *args], capture_output=True, text=True, timeout=timeout)


def test_peers_against_a_real_daemon_then_exit_69_once_it_stopped(root):
    node = DaemonProcess(node_dir(root, "solo")).start()
    try:
        result = nodenet("peers", "--api", str(node.socket))
        assert result.returncode == 0, result.stderr
        header, line = result.stdout.splitlines()
        assert header.split() == ["NAME", "ID", "ADDRESS", "STATUS", "TAGS"]
        assert line.split()[0] == "solo"
        assert "alive" in line
    finally:
        node.stop()
    result = nodenet("peers", "--api", str(node.socket))
    assert result.returncode == 69
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_dev_cluster_shows_a_killed_node_die_and_come_back(root):
    """The README tour: start a dev cluster, kill a node, see it dead, restart it, see it back.
    Started with SIGINT ignored, as a shell starts a background job (`make demo &`): Ctrl-C
    (SIGINT) must still stop it, with exit status 0."""
    process = subprocess.Popen(
        [
            *NODENET,
            "dev",
            "--nodes",
            "3",
            "--base-port",
            str(free_port()),
            "--dir",
            str(root / "dev"),
            "--run-for",
            "90",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []

    def read_until(pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"{pattern!r} not seen within {timeout} s:\n{''.join(lines)}")

    try:
        read_until(r"node2\s+127\.0\.0\.1:\d+\s+(\d+)", 60)
        pid = int(re.search(r"node2\s+127\.0\.0\.1:\d+\s+(\d+)", "".join(lines)).group(1))
        read_until(r"node2: alive", 30)
        subprocess.run(["kill", "-9", str(pid)], check=True)
        read_until(r"node2: .*dead", 40)
        config = root / "dev" / "node2" / "nodenet.toml"
        restarted = subprocess.Popen(
            [sys.executable, "-m", "nodenet.daemon.main", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            read_until(r"node2: dead → alive", 40)
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(timeout=20)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    print("".join(lines))
    assert process.returncode == 0

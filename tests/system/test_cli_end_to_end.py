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
        # The commands the intro suggests work as printed.
        intro = "".join(lines).split("Try, in another terminal:\n", 1)[1].split("\n\n", 1)[0]
        suggested = [line.strip() for line in intro.splitlines() if "nodenet " in line]
        assert len(suggested) == 2, intro
        for command in suggested:
            done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
            assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
            assert re.search(r"node\d", done.stdout), done.stdout
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
            # Ctrl-C stops the restarted daemon too, though dev did not start it.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            try:
                restarted_status = restarted.wait(timeout=30)
            except subprocess.TimeoutExpired:
                restarted.kill()
                raise
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    output = "".join(lines) + (process.stdout.read() if process.stdout else "")
    print(output)
    assert process.returncode == 0
    assert restarted_status == 0
    assert f"stopping node2 (pid {restarted.pid}, started outside nodenet dev)" in output

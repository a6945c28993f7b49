"""A real nodenetd's lifecycle under a supervisor: sd_notify, SIGHUP reloads, journald logs."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemons import DaemonProcess, node_dir, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def notify_socket(root: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(root / "notify"))
    sock.settimeout(30)
    yield sock
    sock.close()


def messages_until(sock: socket.socket, wanted: str) -> list[str]:
    """Notifications received up to (and including) one containing `wanted`."""
    got = []
    while True:
        message = sock.recv(4096).decode()
        got.append(message)
        if wanted in message:
            return got


def test_notify_ready_reloading_and_stopping(root, notify_socket):
    node = DaemonProcess(node_dir(root, "n0"))
    node.start(wait=False, env={"NOTIFY_SOCKET": str(root / "notify")})
    try:
        ready = messages_until(notify_socket, "READY=1")
        assert node.ready()
        assert any("STATUS=" in m for m in ready)
        node.signal(signal.SIGHUP)
        reload = messages_until(notify_socket, "READY=1")
        assert "RELOADING=1" in reload[0]
        assert "MONOTONIC_USEC=" in reload[0]
        node.signal(signal.SIGTERM)
        assert any("STOPPING=1" in m for m in messages_until(notify_socket, "STOPPING=1"))
        assert node.wait(timeout=20) == 0
    finally:
        node.kill()


def test_sighup_applies_new_tags_and_refuses_a_broken_file(root):
    a = DaemonProcess(node_dir(root, "a")).start()
    port = a.config.read_text().split("port = ")[1].split("\n")[0]
    b = DaemonProcess(node_dir(root, "b", seeds=[f"127.0.0.1:{port}"])).start()
    try:
        wait_until(lambda: a.peers().get("b") == "alive", timeout=30, what="b joined")
        text = b.config.read_text()
        b.config.write_text(text.replace('name = "b"', 'name = "b"\ntags = { role = "db" }'))
        b.signal(signal.SIGHUP)

        def a_sees_role() -> bool:
            with a.api() as client:
                peers = client.get("/v1/peers", params={"tag": "role=db"}).json()["peers"]
            return [p["name"] for p in peers] == ["b"]

        wait_until(a_sees_role, timeout=15, what="new tag gossiped")
        b.config.write_text(re.sub(r"port = \d+", "port = 99999999", text))
        b.signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in b.log(), timeout=15, what="refusal logged")
        assert "network.port" in b.log()
        assert b.ready()
    finally:
        a.kill()
        b.kill()


def test_under_journald_every_line_carries_a_priority(root):
    node = DaemonProcess(node_dir(root, "n0"))
    node.log_path.touch()
    stat = os.stat(node.log_path)
    node.start(env={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
    node.stop()
    lines = [line for line in node.log().splitlines() if line]
    assert lines
    assert all(line[:3] in ("<6>", "<4>", "<3>", "<7>", "<2>") for line in lines), lines[:5]

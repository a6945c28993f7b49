"""systemd notifications: the exact datagrams on a real socket, the watchdog in virtual time."""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from nodenet.daemon.notify import Notifier

WATCHDOG_10S = "10000000"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="nn"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def receiver(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd, and the NOTIFY_SOCKET value that reaches it."""
    path = short_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, str(path)


def received(sock: socket.socket) -> list[bytes]:
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(4096))
        except BlockingIOError:
            return datagrams


def test_given_no_notify_socket_when_notifying_then_nothing_is_sent_and_no_watchdog():
    notifier = Notifier.from_environ({"WATCHDOG_USEC": WATCHDOG_10S})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("up")
    notifier.status("fine")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping()


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda n: n.ready(), b"READY=1"),
        (lambda n: n.ready("serving 3 peers"), b"READY=1\nSTATUS=serving 3 peers"),
        (lambda n: n.status("joining 10.0.0.2:7950"), b"STATUS=joining 10.0.0.2:7950"),
        (lambda n: n.watchdog(), b"WATCHDOG=1"),
        (lambda n: n.stopping(), b"STOPPING=1"),
        (lambda n: n.stopping("leaving the cluster"), b"STOPPING=1\nSTATUS=leaving the cluster"),
    ],
)
def test_given_a_path_socket_when_notifying_then_the_exact_datagram_arrives(
    receiver: tuple[socket.socket, str], send, expected: bytes
):
    sock, notify_socket = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket})
    assert notifier.enabled
    send(notifier)
    assert received(sock) == [expected]


def test_given_an_abstract_socket_when_ready_then_the_datagram_arrives():
    name = f"nn-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
        Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert received(sock) == [b"READY=1\nSTATUS=up"]


def test_given_a_status_with_newlines_when_sent_then_it_stays_one_assignment(
    receiver: tuple[socket.socket, str],
):
    sock, notify_socket = receiver
    Notifier.from_environ({"NOTIFY_SOCKET": notify_socket}).status("bad peer\nSTOPPING=1")
    assert received(sock) == [b"STATUS=bad peer STOPPING=1"]


def test_given_a_reload_when_notified_then_monotonic_usec_is_now(
    receiver: tuple[socket.socket, str],
):
    sock, notify_socket = receiver
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier.from_environ({"NOTIFY_SOCKET": notify_socket}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [datagram] = received(sock)
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", datagram)
    assert match is not None, datagram
    assert before <= int(match[1]) <= after


def test_given_nobody_listens_when_notifying_then_no_error_and_one_warning_per_outage(
    short_dir: Path, caplog: pytest.LogCaptureFixture
):
    path = short_dir / "notify"
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.DEBUG, logger="nodenet.daemon.notify"):
        notifier.ready()
        notifier.watchdog()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert str(path) in warnings[0].getMessage()

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            sock.setblocking(False)
            notifier.watchdog()
            assert received(sock) == [b"WATCHDOG=1"]
        path.unlink()
        notifier.watchdog()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2


def test_given_an_unsupported_notify_socket_when_created_then_disabled_with_a_warning(
    caplog: pytest.LogCaptureFixture,
):
    with caplog.at_level(logging.WARNING, logger="nodenet.daemon.notify"):
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert "vsock:2:1234" in caplog.text
    notifier.ready()


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "main"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
    ],
)
def test_given_watchdog_variables_when_read_then_half_the_timeout_or_none(
    environ: dict[str, str], interval_s: float | None
):
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify", **environ})
    assert notifier.watchdog_interval_s == interval_s


async def test_given_a_10s_watchdog_when_run_for_12s_then_three_pings(
    receiver: tuple[socket.socket, str], autojump_clock: trio.testing.MockClock
):
    sock, notify_socket = receiver
    notifier = Notifier.from_environ(
        {"NOTIFY_SOCKET": notify_socket, "WATCHDOG_USEC": WATCHDOG_10S}
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run_watchdog)
        await trio.sleep(12)  # pings at 0 s, 5 s and 10 s
        nursery.cancel_scope.cancel()
    assert received(sock) == [b"WATCHDOG=1"] * 3


async def test_given_an_unhealthy_moment_when_the_watchdog_runs_then_that_ping_is_skipped(
    receiver: tuple[socket.socket, str], autojump_clock: trio.testing.MockClock
):
    sock, notify_socket = receiver
    notifier = Notifier.from_environ(
        {"NOTIFY_SOCKET": notify_socket, "WATCHDOG_USEC": WATCHDOG_10S}
    )
    answers = iter([True, False, True])
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(notifier.run_watchdog, healthy=lambda: next(answers)))
        await trio.sleep(12)
        nursery.cancel_scope.cancel()
    assert received(sock) == [b"WATCHDOG=1"] * 2


async def test_given_no_watchdog_when_run_then_it_returns_at_once(
    receiver: tuple[socket.socket, str], autojump_clock: trio.testing.MockClock
):
    sock, notify_socket = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket})
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run_watchdog)
    assert trio.current_time() == start
    assert received(sock) == []


async def test_given_a_daemon_under_systemd_when_members_join_then_the_status_line_follows(
    receiver: tuple[socket.socket, str],
):
    # `systemctl status nodenetd` shows the STATUS= line: it must not stay at "1 alive".
    from support.daemons import node_dir, short_tmpdir
    from support.inprocess import Running, start

    from nodenet.daemon.config import load_config
    from nodenet.daemon.daemon import Daemon

    sock, path = receiver
    root = short_tmpdir()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                config = load_config(node_dir(root, "a"), environ={})
                a = Running(Daemon(config, notifier=Notifier(path)))
                await nursery.start(a.daemon.run)
                assert received(sock) == [b"READY=1\nSTATUS=1 alive, 0 suspect, 0 dead"]
                b = await start(nursery, root, "b")
                response = await b.http.post("/v1/join", json={"addresses": [a.address]})
                assert response.status_code == 200
                seen: list[bytes] = []
                with trio.move_on_after(15):
                    while b"STATUS=2 alive, 0 suspect, 0 dead" not in seen:
                        await trio.sleep(0.05)
                        seen += received(sock)
                assert b"STATUS=2 alive, 0 suspect, 0 dead" in seen, seen
                for node in (a, b):
                    await node.http.aclose()
                    node.daemon.request_shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

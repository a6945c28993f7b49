"""One daemon per state directory and per API socket: real flocks, real sockets, a real kill -9."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodenet.daemon.lock import (
    AlreadyRunning,
    LockError,
    SocketPathInUse,
    acquire_state_lock,
    claim_socket_path,
    lock_holder,
)

CHILD_TAKES_LOCK = """
import sys
from pathlib import Path
from nodenet.daemon.lock import acquire_state_lock
lock = acquire_state_lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="nn"))
    yield path
    shutil.rmtree(path)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_given_no_state_dir_when_locked_then_dir_0700_lock_0600_with_our_pid(tmp_path: Path):
    state = tmp_path / "var" / "nodenet"
    lock = acquire_state_lock(state)
    assert lock.held
    assert mode_of(state) == 0o700
    assert lock.path == state / "lock"
    assert mode_of(lock.path) == 0o600
    assert lock.path.read_text() == f"{os.getpid()}\n"
    lock.release()
    assert not lock.held
    assert lock.path.read_text() == ""
    acquire_state_lock(state).release()


def test_given_a_held_lock_when_locking_again_then_already_running_names_pid_and_remedy(
    tmp_path: Path,
):
    with acquire_state_lock(tmp_path) as lock:
        with pytest.raises(AlreadyRunning) as caught:
            acquire_state_lock(tmp_path)
        assert str(caught.value) == (
            f"another nodenetd (pid {os.getpid()}) is using {tmp_path}; stop it, or give this"
            " one another --state-dir"
        )
        assert lock.held
    assert not lock.held
    acquire_state_lock(tmp_path).release()


def test_given_a_holder_that_wrote_no_pid_when_locking_then_pid_unknown(tmp_path: Path):
    with acquire_state_lock(tmp_path) as lock:
        lock.path.write_text("")  # as if we looked between its flock and its write
        with pytest.raises(AlreadyRunning, match=r"another nodenetd \(pid unknown\)"):
            acquire_state_lock(tmp_path)


def test_given_a_released_lock_when_released_again_then_nothing_happens(tmp_path: Path):
    lock = acquire_state_lock(tmp_path)
    lock.release()
    lock.release()
    assert not lock.held


def test_given_a_symlink_as_lock_file_when_locking_then_refused(tmp_path: Path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LockError, match=f"cannot open lock file {tmp_path / 'lock'}"):
        acquire_state_lock(tmp_path)


@contextlib.contextmanager
def child_holding_the_lock(state_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding `state_dir`'s lock, killed with SIGKILL on exit."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_TAKES_LOCK, str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child did not take the lock within 30 s"
        assert child.stdout.readline() == "locked\n"
        yield child
    finally:
        child.kill()
        child.wait(timeout=30)


def test_given_a_holder_killed_with_sigkill_when_locking_then_the_lock_is_free(tmp_path: Path):
    with (
        child_holding_the_lock(tmp_path) as child,
        pytest.raises(AlreadyRunning, match=f"pid {child.pid}"),
    ):
        acquire_state_lock(tmp_path)
    assert child.returncode == -signal.SIGKILL
    # The kernel closes a process's files before its parent can reap it: no stale lock.
    with acquire_state_lock(tmp_path) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_lock_holder_names_the_live_holder_and_nobody_once_it_is_gone(tmp_path: Path):
    assert lock_holder(tmp_path / "missing") is None
    with acquire_state_lock(tmp_path):
        assert lock_holder(tmp_path) == os.getpid()
    assert lock_holder(tmp_path) is None
    with child_holding_the_lock(tmp_path) as child:
        assert lock_holder(tmp_path) == child.pid
    assert lock_holder(tmp_path) is None  # the pid is still in the file; nobody holds it
    with acquire_state_lock(tmp_path):  # asking took no lock that stays
        pass


def test_given_nothing_at_the_path_when_claimed_then_parent_created_0755(short_dir: Path):
    path = short_dir / "run" / "api.sock"
    claim_socket_path(path)
    assert mode_of(path.parent) == 0o755
    assert not path.exists()


def test_given_an_existing_parent_when_claimed_then_its_mode_is_left_alone(short_dir: Path):
    short_dir.chmod(0o750)
    claim_socket_path(short_dir / "api.sock")
    assert mode_of(short_dir) == 0o750


def test_given_a_live_daemon_when_claimed_then_already_running_and_socket_kept(
    short_dir: Path,
):
    path = short_dir / "api.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        with pytest.raises(AlreadyRunning, match=f"already serving the API at {path}"):
            claim_socket_path(path)
    assert stat.S_ISSOCK(path.lstat().st_mode)


def test_given_a_live_daemon_with_a_full_backlog_when_claimed_then_already_running(
    short_dir: Path,
):
    path = short_dir / "api.sock"
    clients: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(0)
        try:
            for _ in range(10):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                clients.append(client)
                client.setblocking(False)
                try:
                    client.connect(str(path))
                except BlockingIOError:
                    break
            else:
                pytest.fail("the backlog never filled")
            with pytest.raises(AlreadyRunning):
                claim_socket_path(path)
        finally:
            for client in clients:
                client.close()
    assert path.exists()


def test_given_a_stale_socket_when_claimed_then_it_is_removed(short_dir: Path):
    path = short_dir / "api.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
    # Closed without unlinking, as a daemon killed with SIGKILL leaves it.
    assert path.exists()
    claim_socket_path(path)
    assert not path.exists()


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda p: p.write_text("notes"), "regular file"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: p.symlink_to(p.parent / "elsewhere"), "symbolic link"),
    ],
)
def test_given_a_non_socket_at_the_path_when_claimed_then_socket_path_in_use_and_untouched(
    short_dir: Path, make, kind: str
):
    path = short_dir / "api.sock"
    make(path)
    with pytest.raises(SocketPathInUse, match=f"{path} is taken by a {kind}, not a socket"):
        claim_socket_path(path)
    assert os.path.lexists(path)


def test_given_a_datagram_socket_at_the_path_when_claimed_then_socket_path_in_use(
    short_dir: Path,
):
    path = short_dir / "api.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(str(path))
        with pytest.raises(SocketPathInUse, match="datagram socket"):
            claim_socket_path(path)
    assert path.exists()

"""Refusing to run two daemons on one state directory or one API socket.

The state directory is guarded by `flock` on `<state_dir>/lock`. The kernel drops the lock
when the process ends in any way (including SIGKILL), so there is never a stale lock to clean
up; the pid written into the file is only there to say who holds it. Take the state lock
first: it also serialises the check-then-unlink of a stale API socket between two daemons
started with the same state directory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from pathlib import Path
from types import TracebackType

__all__ = [
    "AlreadyRunning",
    "LockError",
    "SocketPathInUse",
    "StateLock",
    "acquire_state_lock",
    "claim_socket_path",
    "lock_holder",
]

LOCK_FILE_NAME = "lock"


class LockError(Exception):
    """The daemon cannot take its state directory or API socket; the message says what to do."""


class AlreadyRunning(LockError):
    """Another daemon holds the state directory or serves the API socket."""


class SocketPathInUse(LockError):
    """Something that is not a nodenet API socket sits where the API socket should go."""


class StateLock:
    """A held lock on a state directory; released by `release()`, on exit, or at process end."""

    def __init__(self, path: Path, fd: int) -> None:
        """Wrap `fd`, an open descriptor of `path` on which this process holds the flock."""
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Let another daemon use the state directory; calling it again does nothing."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no pid left behind that names a process that has gone
        except OSError:
            pass  # the lock goes with the descriptor anyway
        finally:
            # The file stays: unlinking it would let a waiting daemon lock the old inode while
            # a newer one locks a new file at the same path, and both would run.
            os.close(fd)

    def __enter__(self) -> StateLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire_state_lock(state_dir: Path) -> StateLock:
    """Lock `state_dir` for this process (creating it 0700); AlreadyRunning names the holder."""
    _make_dir(state_dir, 0o700)
    path = state_dir / LOCK_FILE_NAME
    try:
        # O_CLOEXEC: a handler process that inherited the descriptor would hold the lock on
        # after the daemon died.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LockError(
            f"cannot open lock file {path}: {exc.strerror}; run nodenetd as the user that owns"
            f" {state_dir}, or give it another --state-dir"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise AlreadyRunning(
            f"another nodenetd (pid {holder or 'unknown'}) is using {state_dir}; stop it,"
            " or give this one another --state-dir"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise LockError(
            f"cannot lock {path}: {exc.strerror}; put the state directory on a local file"
            " system that supports flock, or give nodenetd another --state-dir"
        ) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise LockError(
            f"cannot write our pid into {path}: {exc.strerror}; check that {state_dir} is"
            " writable and not full"
        ) from exc
    return StateLock(path, fd)


def lock_holder(state_dir: Path) -> int | None:
    """The pid of the daemon holding `state_dir`, or None if no process holds it (or the
    holder wrote no pid). Changes nothing; a missing lock file means nobody holds it."""
    try:
        fd = os.open(state_dir / LOCK_FILE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the shared lock we may have taken
    return None


def claim_socket_path(path: Path) -> None:
    """Make `path` free to bind: remove a stale socket, refuse a live one or any other file."""
    _make_dir(path.parent, 0o755)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathInUse(
            f"the API socket path {path} is taken by a {_kind(st.st_mode)}, not a socket;"
            " move it away, or set api.socket to another path"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        # Non-blocking: a daemon whose accept backlog is full answers EAGAIN instead of
        # leaving us waiting, and is just as alive.
        probe.setblocking(False)
        try:
            probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            pass  # nobody listens: left behind by a daemon that was killed
        except BlockingIOError:
            raise AlreadyRunning(_serving(path)) from None
        except OSError as exc:
            if exc.errno == errno.EPROTOTYPE:
                raise SocketPathInUse(
                    f"{path} is a datagram socket, not a nodenet API socket; stop what uses"
                    " it, or set api.socket to another path"
                ) from exc
            raise LockError(
                f"cannot tell whether a daemon serves {path}: {exc.strerror}; run nodenetd as"
                " the user that owns it, or remove it if no daemon is running"
            ) from exc
        else:
            raise AlreadyRunning(_serving(path))
    try:
        path.unlink()
    except FileNotFoundError:
        pass  # another process removed it first; the path is free all the same
    except OSError as exc:
        raise LockError(
            f"cannot remove the stale API socket {path}: {exc.strerror}; remove it by hand"
        ) from exc


def _serving(path: Path) -> str:
    return (
        f"a daemon is already serving the API at {path}; stop it, or set api.socket to another path"
    )


def _make_dir(directory: Path, mode: int) -> None:
    """Create `directory` with exactly `mode` if it is missing; parents get the usual mode."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode)
        # mkdir applies the umask; the mode is part of the access control, so set it exactly.
        directory.chmod(mode)
    except FileExistsError:
        pass  # already there (or made by another process): its mode is not ours to change
    except OSError as exc:
        raise LockError(
            f"cannot create directory {directory}: {exc.strerror}; create it, or choose a path"
            " under a directory this user can write"
        ) from exc


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "regular file"
    return "special file"

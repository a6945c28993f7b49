"""systemd readiness, status and watchdog notifications (`sd_notify`) in pure Python.

Under `Type=notify` systemd passes a datagram socket in `NOTIFY_SOCKET` ("/path" or "@abstract")
and waits for `READY=1`; with `WatchdogSec=` it also passes `WATCHDOG_USEC` and restarts the
service when `WATCHDOG=1` stops arriving. Outside systemd there is no `NOTIFY_SOCKET` and every
method does nothing, so the daemon calls them unconditionally.

Sending never raises into the daemon and never blocks its event loop: a lost notification is
logged (one warning per run of failures) and the daemon carries on.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import trio

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to the service manager; a no-op when not started by systemd."""

    def __init__(
        self, notify_socket: str | None = None, *, watchdog_usec: int | None = None
    ) -> None:
        """`notify_socket` is a `NOTIFY_SOCKET` value; `watchdog_usec` the watchdog timeout."""
        self._address = _parse_address(notify_socket) if notify_socket else None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier from `NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID` (default os.environ)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """Whether notifications go anywhere."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send `WATCHDOG=1` (half the timeout, as systemd advises), or None."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> None:
        """Start-up (or a reload) is complete: `READY=1`, with an optional status line."""
        self._send("READY=1", status)

    def status(self, text: str) -> None:
        """Set the one-line status shown by `systemctl status`."""
        self._send(None, text)

    def watchdog(self) -> None:
        """Tell the watchdog the daemon is alive."""
        self._send("WATCHDOG=1", None)

    def stopping(self, status: str | None = None) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1", status)

    def reloading(self, status: str | None = None) -> None:
        """A reload has begun; call `ready()` when it is done."""
        # systemd >= 253 (Type=notify-reload) wants to know when the reload began, on
        # CLOCK_MONOTONIC specifically, to tell this reload from an earlier one.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}", status)

    async def run_watchdog(
        self,
        *,
        healthy: Callable[[], bool] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send `WATCHDOG=1` every `watchdog_interval_s` forever; returns at once without one.

        A loop that is stuck stops this task too, so pings stop by themselves; `healthy` is for
        a loop that runs while the work does not (a ping is skipped whenever it returns False).
        """
        interval = self.watchdog_interval_s
        task_status.started()
        if interval is None:
            return
        while True:
            if healthy is None or healthy():
                self.watchdog()
            await trio.sleep(interval)

    def _send(self, state: str | None, status: str | None) -> None:
        if self._address is None:
            return
        lines = [state] if state else []
        if status is not None:
            # A newline would start another assignment: "STATUS=x\nSTOPPING=1" must not be
            # something a peer name or an error text can send.
            lines.append("STATUS=" + " ".join(status.splitlines()))
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Non-blocking: a stalled service manager must not freeze the event loop.
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as exc:
            if not self._failing:
                logger.warning(
                    "cannot notify systemd at %s: %s; systemd may consider the service not"
                    " ready or hung (check NOTIFY_SOCKET and NotifyAccess= in the unit)",
                    _describe(self._address),
                    exc.strerror or exc,
                )
            else:
                logger.debug("notification to systemd failed again: %s", exc)
            self._failing = True
        else:
            self._failing = False


def _parse_address(value: str) -> bytes | None:
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    # systemd also speaks vsock (for virtual machines); nodenet does not run there.
    logger.warning(
        "NOTIFY_SOCKET=%r is neither a path nor an abstract socket (@name); not notifying systemd",
        value,
    )
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    usec_text = env.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    pid_text = env.get("WATCHDOG_PID")
    if pid_text:
        # The watchdog is meant for one process; a child that inherited the variables (or a
        # forked helper) must not ping on the main process's behalf.
        try:
            if int(pid_text) != os.getpid():
                return None
        except ValueError:
            logger.warning("WATCHDOG_PID=%r is not a pid; not pinging the watchdog", pid_text)
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        usec = 0
    if usec <= 0:
        logger.warning(
            "WATCHDOG_USEC=%r is not a positive number of microseconds; not pinging the watchdog",
            usec_text,
        )
        return None
    return usec


def _describe(address: bytes) -> str:
    if address.startswith(b"\0"):
        return "@" + address[1:].decode(errors="replace")
    return os.fsdecode(address)

"""`nodenet watch`: follow nodenetd's event stream and print store (and member) changes.

The stream (`GET /v1/events`, docs/api.md) carries every event; the PREFIX and --members
filters apply here. A stream that ends or breaks is resumed with `Last-Event-ID` set to the
last id seen, after waiting 1, 2, 4 … up to 30 s (back to 1 s once a connection is
accepted): being dropped as a slow reader, or a proxy cutting an idle line, loses nothing
the daemon still holds, and a gap it no longer holds is reported (`event: reset`). After a
daemon restart (its ids start again from 1, told apart by its uptime) the stream resumes
from the new daemon's first event. Only a daemon that cannot be reached at the start is an
error (exit 69); Ctrl-C ends the command with 0.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from nodenet.cli import output
from nodenet.cli.client import ApiClient, ApiError, Unreachable
from nodenet.cli.common import Api, connect, fail, unavailable

__all__ = ["RECONNECT_MAX_S", "reconnect_delay", "watch"]

RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 30.0
"""Long enough not to hammer a daemon that is down, short enough to notice its return."""

RESTART_SLACK_S = 1.0
"""How much shorter than expected the daemon's uptime may be before it counts as restarted:
the two readings of it are taken a request apart."""

sleep: Callable[[float], None] = time.sleep
"""How `watch` waits before reconnecting; tests replace it rather than wait."""


def reconnect_delay(attempt: int) -> float:
    """Seconds to wait before reconnection `attempt` (1, 2, …): doubling, at most 30 s."""
    return min(RECONNECT_FIRST_S * 2 ** min(attempt - 1, 16), RECONNECT_MAX_S)


def _note(message: str) -> None:
    typer.echo(f"nodenet: {message}", err=True)


class _Printer:
    """Turns the events the filters let through into lines on stdout."""

    def __init__(self, prefix: str, members: bool, as_json: bool) -> None:
        self.prefix = prefix
        self.members = members
        self.as_json = as_json

    def show(self, event: dict[str, Any]) -> None:
        """Print `event` if it passes the filters; report a reset on stderr too."""
        kind, data = event["event"], event["data"]
        if kind == "reset":
            self._reset(data)
        elif kind == "entry" and str(_get(data, "key")).startswith(self.prefix):
            self._line(data, output.format_entry_event)
        elif kind == "member" and self.members:
            self._line(data, output.format_member_event)

    def _line(self, data: Any, render: Callable[[Any], str]) -> None:
        if self.as_json:
            typer.echo(json.dumps(data, ensure_ascii=False))
            return
        try:
            typer.echo(render(data))
        except (AttributeError, KeyError, TypeError):  # keep watching; show what came
            typer.echo(json.dumps(data, ensure_ascii=False))

    def _reset(self, data: Any) -> None:
        after, oldest = _get(data, "missed_after"), _get(data, "oldest")
        known = isinstance(after, int) and isinstance(oldest, int)
        gap = f"{after + 1}-{oldest - 1}" if known else ""
        _note(
            f"missed events {gap or 'while disconnected'}: nodenetd no longer holds them"
            " (`nodenet ls` shows the current entries); continuing"
        )
        if self.as_json:
            typer.echo(json.dumps(data, ensure_ascii=False))


def _get(data: Any, field: str) -> Any:
    return data.get(field) if isinstance(data, dict) else None


class _Follower:
    """One `nodenet watch`: connect, print, and reconnect from the last event id seen.

    Event ids are counted from 1 again by a restarted daemon, and it would take an old
    `Last-Event-ID` for a position in its own count, hiding its first events. So each
    connection first asks `GET /v1/self`: an uptime shorter than the time since the last
    answer means a restart, and the stream is then resumed from the new daemon's start.
    """

    def __init__(self, client: ApiClient, printer: _Printer) -> None:
        self.client = client
        self.printer = printer
        self.last_id: str | None = None
        self.accepted = False
        """Whether a connection was ever accepted: from then on, failures are retried."""
        self.opened = False
        """Whether the current connection was accepted."""
        self.uptime: tuple[float, float] | None = None
        """The daemon's `uptime_s` at the last connection, and `time.monotonic()` then."""
        self.restarted = False
        self.interrupted = False
        """Set by Ctrl-C (see `_noticing_ctrl_c`)."""

    def run(self) -> None:
        """Follow the stream until interrupted; exit 69 or 1 if the first attempt fails."""
        attempt = 0
        while True:
            reason = self._follow_once()
            self._stop_if_interrupted()
            if self.opened:
                self.accepted = True
                attempt = 0
            attempt += 1
            delay = reconnect_delay(attempt)
            what = "lost the event stream" if self.opened else "cannot reach nodenetd"
            _note(f"{what} ({reason}); reconnecting in {delay:g} s")
            sleep(delay)
            self._stop_if_interrupted()

    def _stop_if_interrupted(self) -> None:
        # Python drops a KeyboardInterrupt raised while the garbage collector closes an
        # object (an HTTP response, say); the flag makes such a Ctrl-C stop watch anyway.
        if self.interrupted:
            raise KeyboardInterrupt

    def _follow_once(self) -> str:
        """Print events from one connection; why it ended."""
        self.opened = False
        try:
            self._notice_restart(self.client.get("/v1/self"))
            stream = self.client.stream(
                "/v1/events", last_event_id=self.last_id, on_open=self._on_open
            )
            for event in stream:
                if event["event"] != "reset" and (event["id"] or "").isdigit():
                    self.last_id = event["id"]  # a reset's id (0) is no resume point
                self.printer.show(event)
                self._stop_if_interrupted()
        except Unreachable as exc:
            if not self.accepted:
                raise unavailable(exc) from None
            return exc.reason
        except ApiError as exc:
            if not self.accepted or exc.status != 503:  # only "starting" is worth waiting for
                raise fail(exc.message) from None
            return exc.message
        return "nodenetd closed it"

    def _notice_restart(self, node: Any) -> None:
        uptime = _get(node, "uptime_s")
        if not isinstance(uptime, int | float):
            self.uptime = None  # a daemon that does not say: trust the ids
            return
        now = time.monotonic()
        if self.uptime is not None and self.last_id is not None:
            before, then = self.uptime
            if uptime + RESTART_SLACK_S < before + (now - then):
                self.last_id = "0"  # everything the new daemon holds
                self.restarted = True
        self.uptime = (float(uptime), now)

    def _on_open(self) -> None:
        self.opened = True
        if not self.accepted:
            return
        if self.restarted:
            self.restarted = False
            _note("reconnected; nodenetd restarted, showing the events since it started")
        elif self.last_id is None:
            _note("reconnected; events while disconnected are not shown (none was seen before)")
        else:
            _note(f"reconnected; resuming after event {self.last_id}")


def watch(
    prefix: Annotated[
        str, typer.Argument(metavar="PREFIX", help="Only keys that start with PREFIX.")
    ] = "",
    members: Annotated[
        bool, typer.Option("--members", help="Also print membership changes.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print each event's data as one JSON line (resets too: missed_after, oldest).",
        ),
    ] = False,
    api: Api = None,
) -> None:
    """Print store changes as they happen (Ctrl-C stops); reconnects if the stream breaks."""
    follower = _Follower(connect(api), _Printer(prefix, members, as_json))
    try:
        with _noticing_ctrl_c(follower):
            follower.run()
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@contextmanager
def _noticing_ctrl_c(follower: _Follower) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual and also sets `follower.interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can handle signals; Ctrl-C stays Python's default
        return

    def interrupt(signum: int, frame: Any) -> None:
        follower.interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

"""`nodenet watch` against the fake API's event log: filters, lines, reconnecting with
`Last-Event-ID` after a closed stream, backoff while the daemon is away, reset, a restarted
daemon, Ctrl-C.

The waits between reconnections go through `watch.sleep`, which these tests replace: they
record the delays and end the command (as Ctrl-C would) instead of waiting.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from typing import Any

import pytest
from support.fake_api import AUTHOR, SELF, EventLog, FakeApi, error, serving
from typer.testing import CliRunner

from nodenet.cli import watch
from nodenet.cli.main import app

runner = CliRunner()

MEMBER = {
    "id": "C" * 52,
    "short_id": "cccccccccc",
    "name": "web-2",
    "address": "10.0.0.6:7950",
    "status": "suspect",
}


def entry(key: str, value: str | None, *, origin: str = "local", deleted: bool = False) -> dict:
    """An entry event's data as the daemon sends it (`None`: a binary value)."""
    raw = b"\xff\x00\x01" if value is None else value.encode()
    return {
        "key": key,
        "id": "ab" * 32,
        "author": AUTHOR,
        "hlc": 117678816983515136,
        "time": "2026-11-25T19:50:45.476Z",
        "deleted": deleted,
        "value": value,
        "value_b64": base64.b64encode(raw).decode(),
        "origin": origin,
    }


EVENTS: list[tuple[int, str, dict[str, Any]]] = [
    (1, "entry", entry("app/config", "replicas=3")),
    (2, "member", {"kind": "suspected", "member": MEMBER, "at": "2026-11-25T19:04:00.123Z"}),
    (3, "entry", entry("other/x", "1")),
    (4, "entry", entry("app/blob", None, origin="replicated")),
    (5, "entry", entry("app/config", "", deleted=True)),
]
LINES = {
    1: "2026-11-25T19:50:45.476Z  app/config  = replicas=3  (by 4gkrygpbb7, local)",
    2: "2026-11-25T19:04:00.123Z  member web-2  suspected  (cccccccccc, 10.0.0.6:7950)",
    3: "2026-11-25T19:50:45.476Z  other/x  = 1  (by 4gkrygpbb7, local)",
    4: "2026-11-25T19:50:45.476Z  app/blob  = <binary, 3 bytes>  (by 4gkrygpbb7, replicated)",
    5: "2026-11-25T19:50:45.476Z  app/config  deleted  (by 4gkrygpbb7, local)",
}


def resume_points(fake: FakeApi) -> list[str | None]:
    """The Last-Event-ID of each connection to /v1/events, in order."""
    return [r.headers.get("last-event-id") for r in fake.requests if r.path == "/v1/events"]


class Sleeps:
    """Stands in for `watch.sleep`: records each delay, runs `then`, and after `limit`
    waits raises KeyboardInterrupt, as a Ctrl-C during the wait would."""

    def __init__(self, limit: int, then: Any = None) -> None:
        self.delays: list[float] = []
        self.limit = limit
        self.then = then

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.then is not None:
            self.then(len(self.delays))
        if len(self.delays) >= self.limit:
            raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def uptime_grows(fake: FakeApi) -> None:
    """As a daemon's does: an uptime standing still would look like a restart to watch."""
    started = time.monotonic() - 3600
    fake.respond("GET", "/v1/self", 200, lambda: {**SELF, "uptime_s": time.monotonic() - started})


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    recorder = Sleeps(limit=4)
    monkeypatch.setattr(watch, "sleep", recorder)
    return recorder


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (7, 30), (1000, 30)]
)
def test_reconnect_delays_double_from_1_s_up_to_30_s(attempt: int, delay: float):
    assert watch.reconnect_delay(attempt) == delay


def test_given_a_stream_closing_every_two_events_when_watch_then_it_resumes_from_the_last_id(
    api: str, fake: FakeApi, sleeps: Sleeps
):
    fake.events = EventLog(EVENTS, per_connection=2)
    result = runner.invoke(app, ["watch", "--members", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [LINES[i] for i in (1, 2, 3, 4, 5)]
    assert resume_points(fake) == [None, "2", "4", "5"]
    assert sleeps.delays == [1, 1, 1, 1]  # every connection was accepted: no backoff
    notes = result.stderr.splitlines()
    assert notes[0] == "nodenet: lost the event stream (nodenetd closed it); reconnecting in 1 s"
    assert notes[1] == "nodenet: reconnected; resuming after event 2"
    assert "Traceback" not in result.output


def test_given_a_prefix_when_watch_then_only_entries_under_it_and_no_members(
    api: str, fake: FakeApi, sleeps: Sleeps
):
    fake.events = EventLog(EVENTS, per_connection=5)
    sleeps.limit = 1
    result = runner.invoke(app, ["watch", "app/", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [LINES[1], LINES[4], LINES[5]]


def test_when_watch_json_then_each_events_data_on_one_line(api: str, fake: FakeApi, sleeps: Sleeps):
    fake.events = EventLog(EVENTS, per_connection=5)
    sleeps.limit = 1
    result = runner.invoke(app, ["watch", "--members", "--json", "--api", api])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [e[2] for e in EVENTS]


def test_given_long_or_multiline_values_when_watch_then_escaped_and_cut_to_one_line(
    api: str, fake: FakeApi, sleeps: Sleeps
):
    fake.events = EventLog([(1, "entry", entry("k", "line 1\nline 2\t" + "x" * 80))])
    sleeps.limit = 1
    result = runner.invoke(app, ["watch", "--api", api])
    (line,) = result.stdout.splitlines()
    assert "  k  = line 1\\nline 2\\t" + "x" * 44 + "…  (by " in line


def test_given_the_daemon_going_away_when_watch_then_backoff_doubles_to_30_s(
    fake: FakeApi, short_dir: str, monkeypatch: pytest.MonkeyPatch
):
    fake.events = EventLog(EVENTS[:1])
    with ExitStack() as server:
        api = server.enter_context(serving(fake, unix_path=f"{short_dir}/api.sock"))
        sleeps = Sleeps(limit=8, then=lambda n: n == 1 and server.close())
        monkeypatch.setattr(watch, "sleep", sleeps)
        result = runner.invoke(app, ["watch", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [LINES[1]]
    assert sleeps.delays == [1, 2, 4, 8, 16, 30, 30, 30]
    notes = result.stderr.splitlines()
    assert notes[1] == ("nodenet: cannot reach nodenetd (connection refused); reconnecting in 2 s")
    assert notes[-1].endswith("reconnecting in 30 s")


def test_given_a_resume_point_the_daemon_no_longer_holds_when_watch_then_reset_is_reported(
    api: str, fake: FakeApi, monkeypatch: pytest.MonkeyPatch
):
    log = EventLog(EVENTS, per_connection=1)
    fake.events = log

    def forget_events_2_to_3(n: int) -> None:
        log.oldest = 4

    monkeypatch.setattr(watch, "sleep", Sleeps(limit=3, then=forget_events_2_to_3))
    result = runner.invoke(app, ["watch", "--members", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [LINES[1], LINES[4], LINES[5]]
    assert (
        "nodenet: missed events 2-3: nodenetd no longer holds them (`nodenet ls` shows the"
        " current entries); continuing"
    ) in result.stderr.splitlines()
    # the reset's own id (0) is not a resume point
    assert resume_points(fake) == [None, "1", "4"]


def test_given_a_restarted_daemon_when_watch_reconnects_then_it_replays_the_new_daemons_events(
    api: str, fake: FakeApi, monkeypatch: pytest.MonkeyPatch
):
    old = EventLog(EVENTS[:3], per_connection=3)
    fake.events = old

    def restart(n: int) -> None:  # the new daemon counts from 1 again, and was just started
        fake.events = EventLog([(1, "entry", EVENTS[4][2])], per_connection=1)
        fake.respond("GET", "/v1/self", 200, {**SELF, "uptime_s": 0.5})

    monkeypatch.setattr(watch, "sleep", Sleeps(limit=2, then=restart))
    result = runner.invoke(app, ["watch", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [LINES[1], LINES[3], LINES[5]]
    assert resume_points(fake) == [None, "0"]
    assert (
        "nodenet: reconnected; nodenetd restarted, showing the events since it started"
        in result.stderr.splitlines()
    )


def test_given_the_same_daemon_when_watch_reconnects_then_it_resumes_after_the_last_id(
    api: str, fake: FakeApi, monkeypatch: pytest.MonkeyPatch
):
    fake.events = EventLog(EVENTS[:3], per_connection=3)

    fake.respond("GET", "/v1/self", 200, {**SELF, "uptime_s": 100.0})

    def time_passes(n: int) -> None:  # the daemon kept running: its uptime grew
        fake.respond("GET", "/v1/self", 200, {**SELF, "uptime_s": 100.0 + 30})

    monkeypatch.setattr(watch, "sleep", Sleeps(limit=2, then=time_passes))
    assert runner.invoke(app, ["watch", "--api", api]).exit_code == 0
    assert resume_points(fake) == [None, "3"]


def test_given_no_daemon_when_watch_then_exit_69_at_once(short_dir: str, sleeps: Sleeps):
    missing = f"{short_dir}/missing.sock"
    result = runner.invoke(app, ["watch", "--api", missing])
    assert result.exit_code == 69
    assert result.stderr.startswith(f"nodenet: cannot reach nodenetd at {missing} (no such file)")
    assert len(result.stderr.splitlines()) == 1
    assert sleeps.delays == []


def test_given_an_api_error_at_the_start_when_watch_then_exit_1_with_its_message(
    api: str, fake: FakeApi, sleeps: Sleeps
):
    fake.respond("GET", "/v1/events", 503, error("unavailable", "nodenetd is starting; retry"))
    result = runner.invoke(app, ["watch", "--api", api])
    assert result.exit_code == 1
    assert result.stderr == "nodenet: nodenetd is starting; retry\n"
    assert sleeps.delays == []


def test_given_a_ctrl_c_that_python_swallowed_when_watch_then_it_still_stops(
    api: str, fake: FakeApi, monkeypatch: pytest.MonkeyPatch
):
    fake.events = EventLog(EVENTS[:1], per_connection=1)
    swallowed: list[bool] = []

    def ctrl_c_inside_a_finalizer(seconds: float) -> None:
        try:  # as io's finalizers do with an exception raised while they close a response
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0)
        except KeyboardInterrupt:
            swallowed.append(True)

    monkeypatch.setattr(watch, "sleep", ctrl_c_inside_a_finalizer)
    result = runner.invoke(app, ["watch", "--api", api])
    assert swallowed == [True]
    assert result.exit_code == 0, result.output
    assert len(resume_points(fake)) == 1


def test_given_a_running_watch_when_ctrl_c_then_exit_0_without_a_traceback(api: str, fake: FakeApi):
    fake.events = EventLog(EVENTS[:1], per_connection=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "nodenet.cli", "watch", "--api", api],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(process.stdout.readline()))
        reader.start()
        reader.join(timeout=30)
        assert first == [LINES[1] + "\n"], "no event line within 30 s"
        deadline = time.monotonic() + 30
        while len(resume_points(fake)) < 2 and time.monotonic() < deadline:  # reconnecting
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate(timeout=10)
            pytest.fail(f"watch still running 30 s after SIGINT:\n{stderr}")
    finally:
        process.kill()
        process.wait(timeout=10)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr

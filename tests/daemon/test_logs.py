"""Log lines on stdout: `LEVEL name: message`, with journald priorities under systemd."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodenet.daemon.logs import LOGGER_NAME, set_level, setup_logging


@pytest.fixture(autouse=True)
def restore_nodenet_logger() -> Iterator[None]:
    """setup_logging changes a process-wide logger; give the next test the one it had."""
    logger = logging.getLogger(LOGGER_NAME)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def test_given_info_level_when_logging_then_one_plain_line_per_record():
    out = io.StringIO()
    setup_logging("info", environ={}, stream=out)
    log = logging.getLogger("nodenet.daemon.api")
    log.info("listening on %s", "/run/nodenet/api.sock")
    log.debug("not shown")
    logging.getLogger(LOGGER_NAME).warning("top level")
    assert out.getvalue() == (
        "INFO api: listening on /run/nodenet/api.sock\nWARNING nodenet: top level\n"
    )


def test_given_a_running_daemon_when_the_level_is_changed_then_debug_lines_appear():
    out = io.StringIO()
    setup_logging("warning", environ={}, stream=out)
    log = logging.getLogger("nodenet.protocol.swim")
    log.info("hidden")
    set_level("DEBUG")
    log.debug("probe 7")
    assert out.getvalue() == "DEBUG swim: probe 7\n"


@pytest.mark.parametrize(
    ("level", "line"),
    [
        (logging.DEBUG, "<7>DEBUG store: x\n"),
        (logging.INFO, "<6>INFO store: x\n"),
        (logging.WARNING, "<4>WARNING store: x\n"),
        (logging.ERROR, "<3>ERROR store: x\n"),
        (logging.CRITICAL, "<2>CRITICAL store: x\n"),
    ],
)
def test_given_journal_stream_when_logging_then_each_line_has_the_syslog_priority(
    level: int, line: str
):
    out = io.StringIO()
    setup_logging("debug", environ={"JOURNAL_STREAM": "8:12345"}, stream=out)
    logging.getLogger("nodenet.daemon.store").log(level, "x")
    assert out.getvalue() == line


def test_given_journal_stream_when_an_exception_is_logged_then_every_line_keeps_the_prefix():
    out = io.StringIO()
    setup_logging("info", environ={"JOURNAL_STREAM": "8:12345"}, stream=out)
    try:
        raise RuntimeError("store closed")
    except RuntimeError:
        logging.getLogger("nodenet.daemon.api").exception("request failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<3>ERROR api: request failed"
    assert lines[1] == "<3>ERROR api: Traceback (most recent call last):"
    assert lines[-1] == "<3>ERROR api: RuntimeError: store closed"
    assert all(line.startswith("<3>ERROR api: ") for line in lines)


def test_given_a_message_with_newlines_when_logged_then_it_cannot_forge_a_line():
    out = io.StringIO()
    setup_logging("info", environ={}, stream=out)
    logging.getLogger("nodenet.daemon.peers").info("peer name %r", "x\nCRITICAL fake: y")
    logging.getLogger("nodenet.daemon.peers").info("a\nCRITICAL fake: y")
    assert out.getvalue().splitlines() == [
        "INFO peers: peer name 'x\\nCRITICAL fake: y'",
        "INFO peers: a",
        "INFO peers: CRITICAL fake: y",
    ]


def test_given_setup_twice_when_logging_then_each_record_is_written_once():
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", environ={}, stream=first)
    setup_logging("info", environ={}, stream=second)
    logging.getLogger("nodenet.daemon.api").info("once")
    assert first.getvalue() == ""
    assert second.getvalue() == "INFO api: once\n"


def test_given_a_root_handler_when_logging_then_nodenet_records_do_not_reach_it(
    caplog: pytest.LogCaptureFixture,
):
    setup_logging("info", environ={}, stream=io.StringIO())
    logging.getLogger("nodenet.daemon.api").warning("only on stdout")
    assert caplog.records == []


def test_given_journal_stream_naming_this_file_when_logging_then_prefixed(tmp_path: Path):
    with (tmp_path / "out").open("w") as out:
        st = os.fstat(out.fileno())
        setup_logging("info", environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream=out)
        logging.getLogger("nodenet.daemon.api").info("to the journal")
    assert (tmp_path / "out").read_text() == "<6>INFO api: to the journal\n"


@pytest.mark.parametrize("journal_stream", ["1:2", "not-a-device"])
def test_given_journal_stream_naming_another_file_when_logging_then_not_prefixed(
    tmp_path: Path, journal_stream: str
):
    # A process started from the unit with its output redirected still inherits the variable.
    with (tmp_path / "out").open("w") as out:
        setup_logging("info", environ={"JOURNAL_STREAM": journal_stream}, stream=out)
        logging.getLogger("nodenet.daemon.api").info("to a file")
    assert (tmp_path / "out").read_text() == "INFO api: to a file\n"


@pytest.mark.parametrize("level", ["verbose", "", "warn"])
def test_given_an_unknown_level_when_set_then_the_error_lists_the_levels_and_nothing_changes(
    level: str,
):
    out = io.StringIO()
    setup_logging("info", environ={}, stream=out)
    with pytest.raises(ValueError, match="not one of debug, info, warning, error, critical"):
        setup_logging(level, environ={}, stream=io.StringIO())
    with pytest.raises(ValueError, match=f"log level {level!r}"):
        set_level(level)
    logging.getLogger("nodenet.daemon.api").info("still here")
    logging.getLogger("nodenet.daemon.api").debug("still hidden")
    assert out.getvalue() == "INFO api: still here\n"

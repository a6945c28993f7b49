"""The daemon's log output: one line per record on stdout, ready for journald or any supervisor.

Lines carry no timestamp (journald and most supervisors add their own) and read
`LEVEL name: message`, where `name` is the last part of the logger name. When stdout is the
journal (`JOURNAL_STREAM`), each line starts with the syslog priority `<N>` so journald stores
the right priority. A message of several lines (a traceback, a peer-supplied text) gets the
prefix on every line: journald stores each line as its own entry, and one without `<N>` would
be filed at the default priority.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

__all__ = ["LOGGER_NAME", "set_level", "setup_logging"]

LOGGER_NAME = "nodenet"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# (lowest logging level, syslog priority), highest first; syslog's "notice" (5) is unused.
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY = 7


def setup_logging(
    level: str, *, environ: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> logging.Logger:
    """Send the "nodenet" logger's records at `level` and above to `stream` (default stdout)."""
    number = _level_number(level)
    env = os.environ if environ is None else environ
    out = sys.stdout if stream is None else stream
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, _DaemonHandler)]:
        logger.removeHandler(old)  # calling again replaces the output instead of doubling it
    handler = _DaemonHandler(out)
    handler.setFormatter(_LineFormatter(journal=_is_journal(out, env)))
    logger.addHandler(handler)
    logger.propagate = False  # the root logger's handlers would print every line twice
    logger.setLevel(number)
    return logger


def set_level(level: str) -> None:
    """Change the "nodenet" logger's level (on SIGHUP); ValueError names the accepted levels."""
    logging.getLogger(LOGGER_NAME).setLevel(_level_number(level))


def _level_number(level: str) -> int:
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"log level {level!r} is not one of {', '.join(_LEVELS)}; set log.level to one of them"
        ) from None


class _DaemonHandler(logging.StreamHandler[TextIO]):
    """The handler `setup_logging` installs, told apart from any the embedding program adds."""


class _LineFormatter(logging.Formatter):
    def __init__(self, *, journal: bool) -> None:
        super().__init__("%(message)s")
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)  # the message, then any traceback and stack
        prefix = f"{record.levelname} {record.name.rpartition('.')[2]}: "
        if self._journal:
            prefix = f"<{_priority(record.levelno)}>{prefix}"
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def _priority(levelno: int) -> int:
    for lowest, priority in _PRIORITIES:
        if levelno >= lowest:
            return priority
    return _DEBUG_PRIORITY


def _is_journal(stream: TextIO, env: Mapping[str, str]) -> bool:
    # systemd sets JOURNAL_STREAM to the device:inode of the journal stream it connected; a
    # process started from the service with its output redirected inherits the variable, so
    # it only counts when the stream really is that file.
    value = env.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return True  # not a file (an in-memory stream): nothing to compare, trust the variable
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False

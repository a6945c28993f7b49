"""Filter patterns of `GET /v1/peers` and `nodenet peers --tag/--name`.

RE2 syntax (google-re2), as Serf's Go regexp: matching takes time linear in the text, so
no pattern can stall the daemon. Python's `re` backtracks: `(\\w|\\w)*!` against a 27-letter
tag value held the Trio thread for 11 s and the node was declared failed. The CLI imports
this module too; it imports re2 (2 ms, ~3 MiB) only when a pattern is compiled.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_FILTERS", "PatternError", "compile_pattern", "forget_patterns"]

MAX_PATTERN_LEN = 256
MAX_FILTERS = 16
"""Patterns one request may carry: compiling is bounded per pattern (`MAX_MEM`), not per
request, and 150 patterns of 400 letters held the event loop 16 s."""
MAX_MEM = 256 << 10
"""RE2's memory budget per pattern: a larger one (`\\pL{100}`) fails at once instead of
compiling for 100 ms; name and tag filters need far less."""


class PatternError(ValueError):
    """Not a valid RE2 regular expression; the message says why."""


def compile_pattern(text: str) -> Any:
    """A compiled RE2 pattern (use `.fullmatch`); PatternError if it is not valid."""
    if len(text) > MAX_PATTERN_LEN:
        raise PatternError(f"longer than {MAX_PATTERN_LEN} characters")
    import re2  # type: ignore[import-untyped]

    options = re2.Options()
    options.log_errors = False  # the error is ours to report, not RE2's to print on stderr
    options.max_mem = MAX_MEM
    try:
        return re2.compile(text, options)
    except UnicodeError:
        raise PatternError("not valid Unicode text") from None
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"{reason} (RE2 syntax)") from None


def forget_patterns() -> None:
    """Drop the re2 module's cache of compiled patterns (up to 128 of them, each up to
    `MAX_MEM`): filters are rarely repeated, and a request must not leave memory behind."""
    import re2

    re2.purge()

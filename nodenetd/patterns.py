"""Filter patterns of `GET /v1/peers` and `nodenet peers --tag/--name`.

RE2 syntax (google-re2), as Serf's Go regexp: matching takes time linear in the text, so
no pattern can stall the daemon. Python's `re` backtracks: `(\\w|\\w)*!` against a 27-letter
tag value held the Trio thread for 11 s and the node was declared failed. The CLI imports
this module too; it imports re2 (2 ms, ~3 MiB) only when a pattern is compiled.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PatternError", "compile_pattern"]

MAX_PATTERN_LEN = 1024


class PatternError(ValueError):
    """Not a valid RE2 regular expression; the message says why."""


def compile_pattern(text: str) -> Any:
    """A compiled RE2 pattern (use `.fullmatch`); PatternError if it is not valid."""
    if len(text) > MAX_PATTERN_LEN:
        raise PatternError(f"longer than {MAX_PATTERN_LEN} characters")
    import re2  # type: ignore[import-untyped]

    options = re2.Options()
    options.log_errors = False  # the error is ours to report, not RE2's to print on stderr
    try:
        return re2.compile(text, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"{reason} (RE2 syntax)") from None

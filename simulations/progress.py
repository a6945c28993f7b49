"""A progress bar with an ETA for long runs, on stderr.

Silent for the first few seconds of wall time (short runs print nothing) and whenever the
stream is not a terminal (logs and CI stay clean); otherwise one line rewritten with `\\r`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """`update(virtual_now)` as the simulation advances; `close()` at the end."""

    def __init__(
        self,
        total_s: float,
        *,
        label: str = "",
        stream: TextIO | None = None,
        after_s: float = 2.0,
        force: bool = False,
    ) -> None:
        self.total_s = total_s
        self.label = label
        self.stream = stream or sys.stderr
        self.after_s = after_s
        self.enabled = force or self.stream.isatty()
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, now: float) -> None:
        """Redraw (at most ten times a second)."""
        if not self.enabled:
            return
        wall = time.monotonic()
        elapsed = wall - self.started
        if elapsed < self.after_s or wall - self._last < 0.1:
            return
        self._last = wall
        done = min(1.0, now / self.total_s) if self.total_s else 1.0
        eta = elapsed * (1 - done) / done if done > 0 else float("inf")
        width = 30
        bar = "#" * int(done * width) + "-" * (width - int(done * width))
        eta_text = f"{eta:5.0f} s" if eta != float("inf") else "    ? s"
        self.stream.write(
            f"\r{self.label}[{bar}] {done:4.0%} t={now:.0f}/{self.total_s:.0f} s"
            f"  elapsed {elapsed:4.0f} s  ETA {eta_text}"
        )
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """End the line if anything was drawn."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()

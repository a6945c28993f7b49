"""How long `nodenet peers` takes, process start to exit, against the fake API.

Run by hand: `PYTHONPATH=tests .venv/bin/python tests/cli/measure_peers.py [RUNS]`.
DESIGN §5 budgets 200 ms; the result is reported as a ratio to that budget and next to the
cost of starting the interpreter alone, measured in the same run on the same machine (STYLE §10).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support.fake_api import FakeApi, serving

BUDGET_S = 0.200


def median_run_s(command: list[str], runs: int) -> float:
    """Median wall time of `runs` runs of `command` (which must exit 0)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(runs: int) -> None:
    """Measure and print."""
    nodenet = str(Path(sys.executable).parent / "nodenet")
    directory = tempfile.mkdtemp(prefix="nn", dir="/tmp")
    try:
        with serving(FakeApi(), unix_path=f"{directory}/api.sock") as target:
            median_run_s([nodenet, "peers", "--api", target], 2)  # warm the page cache
            peers = median_run_s([nodenet, "peers", "--api", target], runs)
            python = median_run_s([sys.executable, "-c", "pass"], runs)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"nodenet peers: median {peers * 1000:.0f} ms of {runs} runs")
    print(f"  {peers / BUDGET_S:.2f} of the {BUDGET_S * 1000:.0f} ms budget")
    print(f"  {peers / python:.1f}x `python -c pass` ({python * 1000:.0f} ms)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)

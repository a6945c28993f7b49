"""Set reconciliation (`nodenet.protocol.reconcile`) on two in-memory sets of 1,000,000 items.

What it measures, for each scenario, with the default `Reconciler` settings:

- *round trips* (messages sent by the initiator) and *bytes* (both directions, payloads
  only), against the targets below and against the information floor, d × 32 bytes: the
  ids themselves, which any method must transfer (ratio ``bytes / floor``);
- *CPU per side*: `time.process_time` spent inside `initiate` / `receive` on each side,
  the best of `--repeat` runs, against the 200 ms target and against the time the same
  process takes, in the same run, to fingerprint the whole set once by scanning it (the cost
  of one fingerprint without an index: the ratio shows what the index buys).

Scenarios (d = 100 differences; n = 1,000,000 items on each side; hlcs spread over 30 days
of milliseconds shifted left 16 bits; ids random):

| scenario       | the difference                                    | targets              |
|----------------|---------------------------------------------------|----------------------|
| in_sync        | none                                              | ≤ 1 round trip, 1 KB |
| recent_at_init | the 100 newest items are only on the initiator    | ≤ 3 round trips, 16 KB |
| recent_at_resp | the 100 newest items are only on the responder    | ≤ 3 round trips, 16 KB |
| scattered      | 100 uniformly chosen items, each on one side only | ≤ 200 KB             |

and for every scenario: ≤ 200 ms of CPU per side. KB = 1000 bytes. The daemon's LMDB
source is measured separately; this is the protocol's own cost with an O(log n) source.

`--sweep` also runs the scenarios for other `branching` / `id_list_threshold` values, the
table the defaults were chosen from. Exit status 1 if a target is missed.

Run: ``.venv/bin/python benchmarks/reconcile.py [--n N] [--sweep] [--json]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nodenet.protocol.reconcile import (
    DEFAULT_BRANCHING,
    DEFAULT_FRAME_LIMIT,
    DEFAULT_ID_LIST_THRESHOLD,
    ID_LEN,
    INFINITY,
    MIN_BOUND,
    Fingerprint,
    Item,
    MemoryItemSource,
    Reconciler,
)

KB = 1000
START_MS = 1_764_000_000_000  # 2025-11-24
SPAN_MS = 30 * 24 * 3600 * 1000
CPU_TARGET_S = 0.200
MAX_MESSAGES = 200  # a runaway session is a bug, not a slow result


@dataclass(frozen=True, slots=True)
class Targets:
    """Upper limits for one scenario (None: not a target)."""

    round_trips: int | None
    bytes: int | None


TARGETS = {
    "in_sync": Targets(round_trips=1, bytes=1 * KB),
    "recent_at_init": Targets(round_trips=3, bytes=16 * KB),
    "recent_at_resp": Targets(round_trips=3, bytes=16 * KB),
    "scattered": Targets(round_trips=None, bytes=200 * KB),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scenario's measurements."""

    scenario: str
    differences: int
    round_trips: int
    messages: int
    bytes: int
    largest_message: int
    cpu_initiator_s: float
    cpu_responder_s: float
    exact: bool


def random_items(rng: random.Random, n: int, *, newest: bool = False) -> list[Item]:
    """`n` items with random ids; hlcs uniform over 30 days, or (newest) just after them."""
    raw = rng.randbytes(ID_LEN * n)
    ids = [raw[at : at + ID_LEN] for at in range(0, len(raw), ID_LEN)]
    if newest:
        return [((START_MS + SPAN_MS + 1 + k) << 16, item_id) for k, item_id in enumerate(ids)]
    return [((START_MS + rng.randrange(SPAN_MS)) << 16, item_id) for item_id in ids]


def warm(*sources: MemoryItemSource) -> None:
    """Rebuild the lazily maintained prefix sums outside the timed region."""
    for source in sources:
        source.fingerprint(MIN_BOUND, INFINITY)


def reconcile(
    a: MemoryItemSource, b: MemoryItemSource, **settings: int
) -> tuple[Reconciler, Reconciler, list[int], float, float]:
    """Run a session between `a` (initiator) and `b`; message sizes and CPU of each side."""
    initiator, responder = Reconciler(a, **settings), Reconciler(b, **settings)
    cpu = {id(initiator): 0.0, id(responder): 0.0}
    began = time.process_time()
    message: bytes | None = initiator.initiate()
    cpu[id(initiator)] += time.process_time() - began
    sizes: list[int] = []
    peer = responder
    while message is not None:
        sizes.append(len(message))
        if len(sizes) > MAX_MESSAGES:
            raise RuntimeError("reconciliation did not finish")
        began = time.process_time()
        message = peer.receive(message)
        cpu[id(peer)] += time.process_time() - began
        peer = initiator if peer is responder else responder
    return initiator, responder, sizes, cpu[id(initiator)], cpu[id(responder)]


def run_scenario(
    name: str,
    a: MemoryItemSource,
    b: MemoryItemSource,
    a_only: set[bytes],
    b_only: set[bytes],
    repeat: int,
    settings: dict[str, int],
) -> Outcome:
    """Best CPU of `repeat` sessions; bytes and rounds are deterministic."""
    warm(a, b)
    best_a = best_b = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            initiator, responder, sizes, cpu_a, cpu_b = reconcile(a, b, **settings)
        finally:
            gc.enable()
        best_a, best_b = min(best_a, cpu_a), min(best_b, cpu_b)
    exact = (
        initiator.done
        and responder.done
        and initiator.have == responder.need == a_only
        and initiator.need == responder.have == b_only
    )
    return Outcome(
        scenario=name,
        differences=len(a_only) + len(b_only),
        round_trips=initiator.statistics().rounds,
        messages=len(sizes),
        bytes=sum(sizes),
        largest_message=max(sizes),
        cpu_initiator_s=best_a,
        cpu_responder_s=best_b,
        exact=exact,
    )


def scenarios(
    rng: random.Random, base: list[Item], a: MemoryItemSource, b: MemoryItemSource, d: int
) -> list[tuple[str, Callable[[], tuple[set[bytes], set[bytes]]], Callable[[], None]]]:
    """(name, set up → (ids only in a, ids only in b), tear down) for each scenario."""
    newest = random_items(rng, d, newest=True)
    scattered = rng.sample(base, d)

    def nothing() -> tuple[set[bytes], set[bytes]]:
        return set(), set()

    def restore() -> None:
        for item in newest:
            a.remove(item)
            b.remove(item)
        for item in scattered:
            a.insert(item)
            b.insert(item)

    def recent_on(side: MemoryItemSource) -> Callable[[], tuple[set[bytes], set[bytes]]]:
        def setup() -> tuple[set[bytes], set[bytes]]:
            for item in newest:
                side.insert(item)
            ids = {item_id for _, item_id in newest}
            return (ids, set()) if side is a else (set(), ids)

        return setup

    def scatter() -> tuple[set[bytes], set[bytes]]:
        a_only: set[bytes] = set()
        b_only: set[bytes] = set()
        for k, item in enumerate(scattered):  # alternate: half are missing on each side
            if k % 2:
                b.remove(item)
                a_only.add(item[1])
            else:
                a.remove(item)
                b_only.add(item[1])
        return a_only, b_only

    return [
        ("in_sync", nothing, restore),
        ("recent_at_init", recent_on(a), restore),
        ("recent_at_resp", recent_on(b), restore),
        ("scattered", scatter, restore),
    ]


def scan_fingerprint_s(source: MemoryItemSource) -> float:
    """CPU to fingerprint the whole set by scanning it: one fingerprint without an index."""
    began = time.process_time()
    Fingerprint.of(item_id for _, item_id in source)
    return time.process_time() - began


def verdicts(outcome: Outcome) -> dict[str, bool]:
    """Each target of the scenario: met or not."""
    target = TARGETS[outcome.scenario]
    checks = {
        "exact": outcome.exact,
        "cpu": max(outcome.cpu_initiator_s, outcome.cpu_responder_s) <= CPU_TARGET_S,
    }
    if target.round_trips is not None:
        checks["round_trips"] = outcome.round_trips <= target.round_trips
    if target.bytes is not None:
        checks["bytes"] = outcome.bytes <= target.bytes
    return checks


def table(outcomes: Sequence[Outcome], scan_s: float, n: int) -> str:
    """The results as aligned text with ratios and a PASS/FAIL per scenario."""
    lines = [
        f"n = {n:,} items per side; settings: branching={DEFAULT_BRANCHING},"
        f" id_list_threshold={DEFAULT_ID_LIST_THRESHOLD}, frame_limit={DEFAULT_FRAME_LIMIT}",
        f"scan fingerprint of one whole set (no index), same run: {scan_s * 1000:.0f} ms",
        "",
        f"{'scenario':<15} {'d':>4} {'round trips':>13} {'bytes':>17} {'× floor':>8}"
        f" {'largest':>8} {'CPU init/resp ms':>17} {'× 200 ms':>9} {'× scan':>7}  verdict",
    ]
    for o in outcomes:
        t = TARGETS[o.scenario]
        rt = f"{o.round_trips}" + (f" / {t.round_trips}" if t.round_trips is not None else "")
        size = f"{o.bytes:,}" + (f" / {t.bytes // KB}K" if t.bytes is not None else "")
        floor = f"{o.bytes / (o.differences * ID_LEN):.1f}" if o.differences else "-"
        cpu = max(o.cpu_initiator_s, o.cpu_responder_s)
        checks = verdicts(o)
        failed = [name for name, ok in checks.items() if not ok]
        verdict = "PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"
        lines.append(
            f"{o.scenario:<15} {o.differences:>4} {rt:>13} {size:>17} {floor:>8}"
            f" {o.largest_message:>8,} {o.cpu_initiator_s * 1000:>8.1f}/"
            f"{o.cpu_responder_s * 1000:<8.1f} {cpu / CPU_TARGET_S:>9.2f}"
            f" {cpu / scan_s:>7.2f}  {verdict}"
        )
    return "\n".join(lines)


def sweep(
    rng: random.Random, base: list[Item], a: MemoryItemSource, b: MemoryItemSource, d: int
) -> list[dict[str, Any]]:
    """Round trips, bytes and CPU of each scenario for other branching/threshold values."""
    rows = []
    for branching in (8, 16, 32):
        for threshold in (8, 16, 32, 64, 128):
            settings = {"branching": branching, "id_list_threshold": threshold}
            row: dict[str, Any] = {"branching": branching, "id_list_threshold": threshold}
            for name, setup, teardown in scenarios(rng, base, a, b, d):
                a_only, b_only = setup()
                outcome = run_scenario(name, a, b, a_only, b_only, 1, settings)
                teardown()
                row[name] = (outcome.round_trips, outcome.bytes, outcome.exact)
                row[f"{name}_cpu_ms"] = 1000 * max(outcome.cpu_initiator_s, outcome.cpu_responder_s)
            rows.append(row)
    return rows


def sweep_table(rows: Sequence[dict[str, Any]]) -> str:
    """The sweep as text: round trips / KB per scenario, and the scattered case's CPU."""
    names = list(TARGETS)
    lines = [
        "",
        "sweep (round trips / KB; CPU = the busier side in the scattered case)",
        f"{'b':>3} {'t':>4} " + " ".join(f"{name:>15}" for name in names) + f" {'CPU ms':>7}",
    ]
    for row in rows:
        cells = " ".join(
            f"{row[name][0]:>6} / {row[name][1] / KB:>6.1f}" + ("" if row[name][2] else "!")
            for name in names
        )
        lines.append(
            f"{row['branching']:>3} {row['id_list_threshold']:>4} {cells}"
            f" {row['scattered_cpu_ms']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if every target is met, 1 if not."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="items per side")
    parser.add_argument("--d", type=int, default=100, help="differences")
    parser.add_argument("--seed", type=int, default=20251125)
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (best CPU)")
    parser.add_argument("--sweep", action="store_true", help="also try other settings")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    built = time.perf_counter()
    base = random_items(rng, args.n)
    a, b = MemoryItemSource(base), MemoryItemSource(base)
    warm(a, b)
    build_s = time.perf_counter() - built
    scan_s = scan_fingerprint_s(a)

    outcomes = []
    for name, setup, teardown in scenarios(rng, base, a, b, args.d):
        a_only, b_only = setup()
        outcomes.append(run_scenario(name, a, b, a_only, b_only, args.repeat, {}))
        teardown()
    passed = all(all(verdicts(o).values()) for o in outcomes)
    rows = sweep(rng, base, a, b, args.d) if args.sweep else []

    if args.json:
        report = {
            "n": args.n,
            "seed": args.seed,
            "build_s": build_s,
            "scan_fingerprint_s": scan_s,
            "outcomes": [asdict(o) | {"targets": verdicts(o)} for o in outcomes],
            "sweep": rows,
            "pass": passed,
        }
        print(json.dumps(report, indent=2))
    else:
        print(f"built two sets of {args.n:,} items in {build_s:.1f} s (seed {args.seed})")
        print(table(outcomes, scan_s, args.n))
        if rows:
            print(sweep_table(rows))
        print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Wire codec throughput, as a ratio to raw Ed25519 measured in the same run.

What it measures, in operations per second:

- raw PyNaCl Ed25519 sign and verify of exactly the bytes the envelopes below sign
  (``ENVELOPE_CONTEXT ‖ body``, for the probe and for the larger piggybacking datagram),
  cycling through distinct signatures as the decoder does: the floor no codec goes below;
- `WireCodec.encode_datagrams` of a probe (one PING) and of a PING with three ALIVE claims
  piggybacked: build, sign and seal one datagram;
- `WireCodec.decode_datagram` of those datagrams: open, verify and decode. Each decoding
  codec has its own `CachingVerifier`, and every datagram it sees is new (a distinct
  envelope signature), as on a real network. With piggybacked claims it is measured twice:
  *cold*, where every claim is new too (pools of distinct signatures larger than the cache,
  cycled, so its FIFO eviction guarantees a miss), and *warm*, where the same three claims
  ride on every probe and the cache answers for them.

Why a ratio: an absolute rate says more about the machine (CPU model, turbo, noisy
neighbours on a small VM) than about the code, and it drifts between runs. Ed25519, done in
C by libsodium, is the irreducible cost of an authenticated datagram; everything else
(sealing, msgpack, validation, building messages, cache bookkeeping) is what our Python
adds. ``ratio = rate × (Ed25519 operations per datagram) / raw rate`` says how close the
codec gets to "costs nothing but its signatures" (1.0), and because numerator and
denominator are measured interleaved in one run, machine noise cancels out. The target,
decoding a probe at ≥ 0.7 × the raw verify rate, caps the Python overhead of the receive
path at ~43 % of one verify.

Noise handling: rounds of every case are interleaved (in rotating order), each case keeps
its best round, and the fixtures are frozen out of the garbage collector's way.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/codec.py [--quick] [--json]``);
exits 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.signing

from nodenet.protocol.identity import ENVELOPE_CONTEXT, SIGNATURE_LEN, CachingVerifier, node_id_of
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.messages import Address, Alive, Message, Ping
from nodenet.protocol.wire import WireCodec

TARGET_CASE = "decode_probe"
TARGET_LIMIT = 0.7  # decode_probe rate / raw verify rate

NOW_MS = 1_764_000_000_000  # fixed wall clock, so no datagram fails the clock-skew check
CACHE_CAPACITY = 4096  # CachingVerifier's default, passed explicitly to size the pools below
DISTINCT = CACHE_CAPACITY + CACHE_CAPACITY // 4  # > capacity: a cycle through them never hits
PIGGYBACKED = 3  # ALIVE claims riding on the probe
CLAIM_AUTHORS = 16  # claims are varied by author and incarnation
BATCH_S = 0.01  # a timed batch is long enough that reading the clock is negligible
TAGS = {"dc": "eu-west-1", "role": "web", "version": "0.1.0"}  # typical, not maximal


@dataclass(frozen=True, slots=True)
class Profile:
    """How long to measure."""

    rounds: int
    """Interleaved rounds; each case keeps its best."""
    round_s: float
    """Seconds per case per round."""


FULL = Profile(rounds=5, round_s=0.3)  # 9 cases: ~14 s of timing plus ~1 s of fixtures
QUICK = Profile(rounds=3, round_s=0.1)


@dataclass(slots=True)
class Case:
    """One measured operation: `run(n)` performs it n times."""

    key: str
    label: str
    run: Callable[[int], None]
    size: int
    """Bytes of the message, or of the sealed datagram."""
    baseline: str | None = None
    """Key of the raw case this one is compared with."""
    ed25519_ops: int = 1
    """Signs or verifies per operation that no cache can avoid."""
    verifier: CachingVerifier | None = None
    """The decoding codec's cache, whose hit rate the report shows."""
    rates: list[float] = field(default_factory=list)
    batch: int = 1


# --- fixtures -----------------------------------------------------------------------------


def _key(n: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(n.to_bytes(32, "big"))


def _alive(author: int, incarnation: int) -> Alive:
    return Alive.create(
        _key(author),
        incarnation=incarnation,
        address=Address(f"10.0.{author // 256}.{author % 256}", 7946),
        tags=TAGS,
    )


def _decoder(
    key: str,
    label: str,
    pool: Sequence[bytes],
    keyring: Keyring,
    *,
    baseline: str,
    ed25519_ops: int,
) -> Case:
    verifier = CachingVerifier(CACHE_CAPACITY)
    codec = WireCodec(_key(2), keyring, verify=verifier)
    packets = itertools.cycle(pool)
    decode = codec.decode_datagram

    def run(n: int) -> None:
        for packet in itertools.islice(packets, n):
            decode(packet, NOW_MS)

    return Case(
        key,
        label,
        run,
        len(pool[0]),
        baseline=baseline,
        ed25519_ops=ed25519_ops,
        verifier=verifier,
    )


def _encoder(
    key: str, label: str, codec: WireCodec, messages: list[Message], *, baseline: str
) -> Case:
    encode = codec.encode_datagrams
    size = len(encode(messages, NOW_MS)[0])

    def run(n: int) -> None:
        for _ in range(n):
            encode(messages, NOW_MS)

    return Case(key, label, run, size, baseline=baseline)


def _raw(suffix: str, what: str, pool: Sequence[bytes], keyring: Keyring) -> list[Case]:
    """Raw sign and verify of exactly the bytes the envelope signatures in `pool` cover.

    Like the decoder, the baseline cycles through distinct signatures: libsodium's verify
    is variable-time, and one signature checked over and over lets the branch predictor
    learn it (about 3 % faster here), which would flatter the baseline.
    """
    raw_key = _key(1)
    verify_key = raw_key.verify_key
    pairs = []
    for packet in pool:
        plaintext, _ = keyring.open(packet)
        body, signature = plaintext[:-SIGNATURE_LEN], plaintext[-SIGNATURE_LEN:]
        pairs.append((ENVELOPE_CONTEXT + body, signature))
    to_sign = itertools.cycle([signed for signed, _ in pairs])
    to_verify = itertools.cycle(pairs)

    def raw_sign(n: int) -> None:
        sign = raw_key.sign
        for signed in itertools.islice(to_sign, n):
            sign(signed)

    def raw_verify(n: int) -> None:
        verify = verify_key.verify
        for signed, signature in itertools.islice(to_verify, n):
            verify(signed, signature)

    size = len(pairs[0][0])
    return [
        Case(f"raw_sign{suffix}", f"raw Ed25519 sign, {what}", raw_sign, size),
        Case(f"raw_verify{suffix}", f"raw Ed25519 verify, {what}", raw_verify, size),
    ]


def _check_decodes(packet: bytes, keyring: Keyring, expected: list[Message]) -> None:
    """Refuse to time a datagram that does not round-trip."""
    received = WireCodec(_key(2), keyring).decode_datagram(packet, NOW_MS)
    if list(received.envelope.messages) != expected:
        raise RuntimeError("benchmark fixture does not round-trip through the codec")


def build_cases() -> list[Case]:
    """Build every case and its fixtures (a few thousand signatures: about a second)."""
    keyring = Keyring([ClusterKey(b"\x42" * 32)])
    sender = WireCodec(_key(1), keyring)
    target = node_id_of(_key(2))

    def ping(seq: int) -> Ping:
        return Ping(seq=seq, target=target)

    warm_claims = [_alive(100 + i, 1) for i in range(PIGGYBACKED)]
    piggyback = [ping(0), *warm_claims]

    probe_pool = [sender.encode_datagrams([ping(i)], NOW_MS)[0] for i in range(DISTINCT)]
    warm_pool = [
        sender.encode_datagrams([ping(i), *warm_claims], NOW_MS)[0] for i in range(DISTINCT)
    ]
    cold_messages = [
        [
            ping(i),
            *(
                _alive(j % CLAIM_AUTHORS, j // CLAIM_AUTHORS + 1)
                for j in range(i * PIGGYBACKED, (i + 1) * PIGGYBACKED)
            ),
        ]
        for i in range(DISTINCT // (PIGGYBACKED + 1) + 1)
    ]
    cold_pool = [sender.encode_datagrams(m, NOW_MS)[0] for m in cold_messages]
    if any(len(sender.encode_datagrams(m, NOW_MS)) != 1 for m in (piggyback, cold_messages[-1])):
        raise RuntimeError("PING + claims no longer fit one datagram; shrink the fixtures")
    _check_decodes(probe_pool[0], keyring, [ping(0)])
    _check_decodes(warm_pool[0], keyring, piggyback)
    _check_decodes(cold_pool[-1], keyring, cold_messages[-1])

    piggy = f"PING + {PIGGYBACKED} ALIVE"
    return [
        *_raw("", "probe body", probe_pool, keyring),
        *_raw("_piggyback", "piggyback body", warm_pool, keyring),
        _encoder("encode_probe", "encode probe (PING)", sender, [ping(0)], baseline="raw_sign"),
        _encoder(
            "encode_piggyback",
            f"encode {piggy}",
            sender,
            piggyback,
            baseline="raw_sign_piggyback",
        ),
        _decoder(
            "decode_probe",
            "decode probe (PING)",
            probe_pool,
            keyring,
            baseline="raw_verify",
            ed25519_ops=1,
        ),
        # Three of the four verifies are of ~70-byte claims, so the probe-sized verify is the
        # closer baseline (libsodium's verify costs ~2 % more at 600 bytes than at 100).
        _decoder(
            "decode_cold",
            f"decode {piggy}, cold cache",
            cold_pool,
            keyring,
            baseline="raw_verify",
            ed25519_ops=1 + PIGGYBACKED,
        ),
        _decoder(
            "decode_warm",
            f"decode {piggy}, warm cache",
            warm_pool,
            keyring,
            baseline="raw_verify_piggyback",
            ed25519_ops=1,
        ),
    ]


# --- measuring ----------------------------------------------------------------------------


def calibrate(case: Case) -> None:
    """Warm the case up and pick a batch size that takes about `BATCH_S`."""
    batch = 1
    while True:
        start = time.perf_counter()
        case.run(batch)
        if time.perf_counter() - start >= BATCH_S:
            case.batch = batch
            return
        batch *= 2


def measure_round(case: Case, seconds: float) -> float:
    """Operations per second over one round of about `seconds`."""
    run, batch = case.run, case.batch
    count = 0
    start = time.perf_counter()
    while True:
        run(batch)
        count += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def measure(cases: list[Case], profile: Profile) -> None:
    """Interleave rounds of every case, rotating the order so no case always runs first."""
    for case in cases:
        calibrate(case)
    for case in cases:
        if case.verifier is not None:  # count only what the timed rounds did
            case.verifier.hits = case.verifier.misses = 0
    for r in range(profile.rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.rates.append(measure_round(case, profile.round_s))


# --- reporting ----------------------------------------------------------------------------


def best(case: Case) -> float:
    """The best rate over all rounds: the least disturbed by other load on the machine."""
    return max(case.rates)


def ratio(case: Case, by_key: dict[str, Case]) -> float | None:
    """rate × Ed25519 ops per operation / raw rate; 1.0 means only the signatures cost."""
    if case.baseline is None:
        return None
    return best(case) * case.ed25519_ops / best(by_key[case.baseline])


def hit_rate(case: Case) -> float | None:
    """Share of signature checks the cache answered during the timed rounds."""
    if case.verifier is None:
        return None
    total = case.verifier.hits + case.verifier.misses
    return case.verifier.hits / total if total else None


def results(cases: list[Case], profile: Profile, elapsed_s: float) -> dict[str, Any]:
    """Everything measured, as JSON-ready data."""
    by_key = {case.key: case for case in cases}
    target = ratio(by_key[TARGET_CASE], by_key)
    assert target is not None
    return {
        "environment": {
            "python": platform.python_version(),
            "pynacl": importlib.metadata.version("pynacl"),
            "msgpack": importlib.metadata.version("msgpack"),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "rounds": profile.rounds,
        "round_s": profile.round_s,
        "elapsed_s": round(elapsed_s, 2),
        "cases": {
            case.key: {
                "label": case.label,
                "bytes": case.size,
                "best_per_s": round(best(case), 1),
                "median_per_s": round(statistics.median(case.rates), 1),
                "rates_per_s": [round(rate, 1) for rate in case.rates],
                "us_per_op": round(1e6 / best(case), 2),
                "baseline": case.baseline,
                "ed25519_ops": case.ed25519_ops,
                "ratio": _round(ratio(case, by_key)),
                "cache_hit_rate": _round(hit_rate(case)),
            }
            for case in cases
        },
        "target": {
            "case": TARGET_CASE,
            "baseline": "raw_verify",
            "ratio": round(target, 3),
            "limit": TARGET_LIMIT,
            "pass": target >= TARGET_LIMIT,
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def table(report: dict[str, Any]) -> str:
    """The human-readable report."""
    env = report["environment"]
    lines = [
        f"nodenet wire codec — Python {env['python']}, PyNaCl {env['pynacl']},"
        f" msgpack {env['msgpack']}, {env['cpus']} CPUs",
        f"best of {report['rounds']} interleaved rounds × {report['round_s']:.2f} s per case"
        f" ({report['elapsed_s']:.1f} s in all)",
        "ratio = rate × Ed25519 ops / raw rate; 1.00 = the codec costs only its signatures",
        "bytes = the signed message (raw cases) or the sealed datagram",
        "",
        f"{'case':<40}{'bytes':>6}{'best/s':>10}{'median/s':>10}{'µs/op':>8}"
        f"  {'compared with':<18}{'ratio':>6}{'cache hits':>12}",
    ]
    cases = report["cases"]
    for case in cases.values():
        baseline = case["baseline"]
        versus = ""
        if baseline is not None:
            kind = "sign" if baseline.startswith("raw_sign") else "verify"
            versus = f"{case['ed25519_ops']} × {kind} {cases[baseline]['bytes']} B"
        ratio_text = "" if case["ratio"] is None else f"{case['ratio']:.2f}"
        hits = "" if case["cache_hit_rate"] is None else f"{case['cache_hit_rate']:.0%}"
        line = (
            f"{case['label']:<40}{case['bytes']:>6}{case['best_per_s']:>10,.0f}"
            f"{case['median_per_s']:>10,.0f}{case['us_per_op']:>8.1f}"
            f"  {versus:<18}{ratio_text:>6}{hits:>12}"
        )
        lines.append(line.rstrip())
    target = report["target"]
    verdict = "PASS" if target["pass"] else "FAIL"
    lines += [
        "",
        f"{verdict}: {report['cases'][target['case']]['label']} runs at"
        f" {target['ratio']:.2f} × the raw verify rate (limit ≥ {target['limit']:.2f})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if the target is met, 1 if not."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~4 s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL

    start = time.perf_counter()
    cases = build_cases()
    gc.collect()
    gc.freeze()  # the fixtures are not what we measure: keep collections from scanning them
    measure(cases, profile)
    report = results(cases, profile, time.perf_counter() - start)

    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if report["target"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

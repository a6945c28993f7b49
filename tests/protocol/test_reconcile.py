"""Range-based set reconciliation: exact outcomes, bounded rounds and frames, strict decoding.

Two `Reconciler`s are wired together through `session` (a lossless in-memory link) and run
until both are done; every scenario then checks the defining property,
``A.have == B.need == A - B`` and ``A.need == B.have == B - A``, plus the round-trip bound
log_branching(n / threshold) + 2 and the frame limit on every message.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodenet.protocol.errors import (
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    TooLarge,
)
from nodenet.protocol.reconcile import (
    DEFAULT_BRANCHING,
    DEFAULT_FRAME_LIMIT,
    DEFAULT_ID_LIST_THRESHOLD,
    HLC_MAX,
    INFINITY,
    MAX_LIST_IDS,
    MAX_MESSAGE_BYTES,
    MAX_RANGES,
    MIN_BOUND,
    MIN_FRAME_LIMIT,
    Bound,
    Fingerprint,
    FingerprintRange,
    IdListRange,
    Item,
    MemoryItemSource,
    ReconcileMessage,
    Reconciler,
    ResolvedRange,
    SkipRange,
    State,
    decode_payload,
    encode_payload,
    fingerprint_value,
    item_key,
)

MAX_MESSAGES = 5000  # a session that long is a livelock, not a slow test
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


# --- the link ---------------------------------------------------------------------------------


@dataclass
class Session:
    """A finished session: both ends and every message, in order."""

    initiator: Reconciler
    responder: Reconciler
    messages: list[bytes]

    @property
    def round_trips(self) -> int:
        return self.initiator.statistics().rounds


def session(a: MemoryItemSource, b: MemoryItemSource, **config: int) -> Session:
    """Run `a` (initiator) against `b` until one side has nothing more to say."""
    initiator, responder = Reconciler(a, **config), Reconciler(b, **config)
    message: bytes | None = initiator.initiate()
    messages: list[bytes] = []
    peer = responder
    while message is not None:
        messages.append(message)
        assert len(messages) < MAX_MESSAGES, "reconciliation does not terminate"
        message = peer.receive(message)
        peer = initiator if peer is responder else responder
    return Session(initiator, responder, messages)


def make_items(rng: random.Random, n: int, hlc_span: int, hlc_base: int = 0) -> list[Item]:
    return [(hlc_base + rng.randrange(hlc_span), rng.randbytes(32)) for _ in range(n)]


def round_bound(n: int, threshold: int, branching: int) -> int:
    """log_branching(n / threshold) + 2, rounded up: the promised round trips."""
    return max(0, math.ceil(math.log(max(n, 1) / threshold, branching))) + 2


def check_exact(result: Session, a_only: set[bytes], b_only: set[bytes]) -> None:
    a, b = result.initiator, result.responder
    assert a.done
    assert b.done
    assert a.state is State.DONE
    assert b.state is State.DONE
    assert a.have == b.need == a_only
    assert a.need == b.have == b_only


def check_messages(result: Session, frame_limit: int) -> None:
    """Every message fits the frame, decodes, is canonical and has increasing bounds."""
    for payload in result.messages:
        assert len(payload) <= frame_limit
        message = decode_payload(payload)
        assert encode_payload(message) == payload
        uppers = [r.upper for r in message.ranges]
        assert all(x < y for x, y in pairwise([MIN_BOUND, *uppers]))


def ids(items: list[Item]) -> set[bytes]:
    return {item_id for _, item_id in items}


# --- outcomes: table-driven -------------------------------------------------------------------

Case = tuple[int, int, int, int]  # common, only in A, only in B, hlc span

CASES: dict[str, Case] = {
    "both empty": (0, 0, 0, 1000),
    "A empty": (0, 0, 40, 1000),
    "B empty": (0, 40, 0, 1000),
    "identical, small": (20, 0, 0, 1000),
    "identical, large": (3000, 0, 0, 10**9),
    "one difference in a large set": (3000, 1, 0, 10**9),
    "disjoint": (0, 1500, 1500, 10**9),
    "A a subset of B": (1000, 0, 2000, 10**9),
    "B a subset of A": (2500, 500, 0, 10**9),
    "scattered both ways": (4000, 30, 30, 10**9),
    "every hlc equal (id prefixes)": (2000, 25, 25, 1),
    "four hlcs (id prefixes)": (2000, 40, 10, 4),
    "hlcs at the top of the range": (500, 20, 20, 2**64),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"branching": 2, "id_list_threshold": 1},
        {"branching": 3, "id_list_threshold": 4},
        {"branching": 64, "id_list_threshold": MAX_LIST_IDS},
        {"frame_limit": MIN_FRAME_LIMIT, "branching": 4, "id_list_threshold": 8},
    ],
    ids=["defaults", "b2-t1", "b3-t4", "b64-t128", "tight-frame"],
)
def test_given_two_sets_when_reconciled_then_both_learn_exactly_the_differences(case, config):
    common, n_a, n_b, span = case
    rng = random.Random(f"{case}{config}")
    shared = make_items(rng, common, span)
    a_items, b_items = make_items(rng, n_a, span), make_items(rng, n_b, span)
    result = session(
        MemoryItemSource(shared + a_items), MemoryItemSource(shared + b_items), **config
    )

    check_exact(result, ids(a_items), ids(b_items))
    frame_limit = config.get("frame_limit", DEFAULT_FRAME_LIMIT)
    check_messages(result, frame_limit)
    if frame_limit == DEFAULT_FRAME_LIMIT:
        n = common + max(n_a, n_b)
        threshold = config.get("id_list_threshold", DEFAULT_ID_LIST_THRESHOLD)
        branching = config.get("branching", DEFAULT_BRANCHING)
        assert result.round_trips <= round_bound(n, threshold, branching)


def test_given_identical_sets_then_one_round_trip_settles_it():
    items = make_items(random.Random(1), 5000, 10**12)
    result = session(MemoryItemSource(items), MemoryItemSource(items))
    check_exact(result, set(), set())
    assert result.round_trips == 1
    assert result.messages[1] == b"\x01"  # "nothing to add": the version byte alone


@pytest.mark.parametrize("newest_on", ["initiator", "responder"])
def test_given_newest_items_on_one_side_then_the_tail_probe_finds_them_at_once(newest_on):
    rng = random.Random(2)
    shared = make_items(rng, 20_000, 10**12)
    newest = make_items(rng, 50, 1000, hlc_base=10**12 + 1)
    a_items, b_items = (newest, []) if newest_on == "initiator" else ([], newest)
    result = session(MemoryItemSource(shared + a_items), MemoryItemSource(shared + b_items))
    check_exact(result, ids(a_items), ids(b_items))
    assert result.round_trips <= 2
    assert sum(map(len, result.messages)) < 2 * 50 * 32


def test_given_a_peer_with_everything_then_a_new_node_gets_all_ids_a_full_frame_per_round():
    items = make_items(random.Random(3), 3000, 10**9)
    result = session(MemoryItemSource(), MemoryItemSource(items), frame_limit=MIN_FRAME_LIMIT)
    check_exact(result, set(), ids(items))
    check_messages(result, MIN_FRAME_LIMIT)
    # The new node lists nothing, so the holder answers each empty list with a frame of ids
    # and a fingerprint of the rest: round trips stay near the floor of ids / frame (splitting
    # the range and resolving one part per round took ~2 × as many).
    floor = math.ceil(len(items) * 32 / MIN_FRAME_LIMIT)
    assert result.responder.statistics().rounds <= floor + 2


def test_given_a_new_node_that_already_got_the_newest_by_gossip_then_still_a_frame_per_round():
    # The head probe: the new node splits by its own items, all at the end of the order, so
    # without an empty list for the stretch before its first item every frame cost two rounds.
    items = sorted(make_items(random.Random(5), 3000, 10**9))
    result = session(
        MemoryItemSource(items[-60:]), MemoryItemSource(items), frame_limit=MIN_FRAME_LIMIT
    )
    check_exact(result, set(), ids(items[:-60]))
    floor = math.ceil((len(items) - 60) * 32 / MIN_FRAME_LIMIT)
    assert result.responder.statistics().rounds <= floor + 2


def test_given_one_set_reconciled_with_many_peers_then_each_session_is_independent():
    rng = random.Random(4)
    shared = make_items(rng, 1000, 10**9)
    ours = MemoryItemSource(shared)
    for extra in (5, 0, 50):
        theirs = make_items(rng, extra, 10**9)
        result = session(ours, MemoryItemSource(shared + theirs))
        check_exact(result, set(), ids(theirs))


# --- outcomes: properties ---------------------------------------------------------------------


@st.composite
def set_pairs(draw: st.DrawFn) -> tuple[list[Item], list[Item], list[Item]]:
    """(shared, only in A, only in B) with hlcs from narrow (id prefixes) to the full range."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    span = draw(st.sampled_from([1, 3, 1000, 10**12, 2**64]))
    shared = make_items(rng, draw(st.integers(0, 2500)), span)
    return (
        shared,
        make_items(rng, draw(st.integers(0, 300)), span),
        make_items(rng, draw(st.integers(0, 300)), span),
    )


configs = st.fixed_dictionaries(
    {
        "branching": st.sampled_from([2, 3, 16, 64]),
        "id_list_threshold": st.sampled_from([1, 5, 32, MAX_LIST_IDS]),
        "frame_limit": st.sampled_from([MIN_FRAME_LIMIT, 20_000, DEFAULT_FRAME_LIMIT]),
    }
)


@settings(max_examples=120)
@given(sets=set_pairs(), config=configs)
def test_property_reconciliation_is_exact_bounded_and_within_the_frame(sets, config):
    shared, a_items, b_items = sets
    result = session(
        MemoryItemSource(shared + a_items), MemoryItemSource(shared + b_items), **config
    )

    check_exact(result, ids(a_items), ids(b_items))
    check_messages(result, config["frame_limit"])
    limited = sum(r.statistics().continuations for r in (result.initiator, result.responder))
    if config["frame_limit"] == DEFAULT_FRAME_LIMIT:
        assert limited == 0
        n = len(shared) + max(len(a_items), len(b_items))
        bound = round_bound(n, config["id_list_threshold"], config["branching"])
        assert result.round_trips <= bound


@settings(max_examples=60)
@given(sets=set_pairs(), initiator_first=st.booleans())
def test_property_either_side_may_initiate(sets, initiator_first):
    shared, a_items, b_items = sets
    a, b = MemoryItemSource(shared + a_items), MemoryItemSource(shared + b_items)
    if initiator_first:
        check_exact(session(a, b), ids(a_items), ids(b_items))
    else:
        check_exact(session(b, a), ids(b_items), ids(a_items))


@settings(max_examples=60)
@given(sets=set_pairs(), config=configs)
def test_property_take_learned_returns_each_difference_once_as_the_session_goes(sets, config):
    # What the daemon does to start transfers during a long session: take what each
    # message taught each side; together the takes are exactly `need` and `have`.
    shared, a_items, b_items = sets
    ends = [
        Reconciler(MemoryItemSource(shared + a_items), **config),
        Reconciler(MemoryItemSource(shared + b_items), **config),
    ]
    taken: list[tuple[list[bytes], list[bytes]]] = [([], []), ([], [])]

    def take(side: int) -> None:
        need, have = ends[side].take_learned()
        taken[side][0].extend(need)
        taken[side][1].extend(have)

    message: bytes | None = ends[0].initiate()
    side, messages = 1, 0
    while message is not None:
        messages += 1
        assert messages < MAX_MESSAGES, "reconciliation does not terminate"
        message = ends[side].receive(message)
        take(side)
        side = 1 - side

    for end, (need, have) in zip(ends, taken, strict=True):
        assert len(need) == len(set(need))
        assert len(have) == len(set(have))
        assert set(need) == end.need
        assert set(have) == end.have
        assert end.take_learned() == ([], [])
    assert set(taken[0][1]) == ids(a_items)
    assert set(taken[0][0]) == ids(b_items)


@pytest.mark.slow
def test_given_many_random_sessions_with_tight_and_loose_settings_then_all_are_exact():
    rng = random.Random(13)
    for _ in range(40):
        span = rng.choice([1, 5, 10**12, 2**64])
        shared = make_items(rng, rng.choice([0, 500, 4000]), span)
        a_items = make_items(rng, rng.choice([0, 3, 300, 2000]), span)
        b_items = make_items(rng, rng.choice([0, 3, 300, 2000]), span)
        config = {
            "branching": rng.choice([2, 4, 16, 64]),
            "id_list_threshold": rng.choice([1, 8, 32, MAX_LIST_IDS]),
            "frame_limit": rng.choice([MIN_FRAME_LIMIT, 30_000, DEFAULT_FRAME_LIMIT]),
        }
        result = session(
            MemoryItemSource(shared + a_items), MemoryItemSource(shared + b_items), **config
        )
        check_exact(result, ids(a_items), ids(b_items))
        check_messages(result, config["frame_limit"])


# --- the fingerprint --------------------------------------------------------------------------


def test_the_fingerprint_formula_is_blake2b_of_sum_and_count():
    id_a, id_b = hashlib.blake2b(b"entry one", digest_size=32).digest(), b"\x02" * 32
    total = int.from_bytes(id_a, "little") + int.from_bytes(id_b, "little")
    data = (total % 2**256).to_bytes(32, "little") + (2).to_bytes(8, "little")
    assert fingerprint_value(total, 2) == hashlib.blake2b(data).digest()[:16]
    assert Fingerprint.of([id_a, id_b]) == Fingerprint(value=fingerprint_value(total, 2), count=2)


@pytest.mark.parametrize(
    ("ids_", "total", "count"),
    [
        ([], 0, 0),
        ([b"\x01" + bytes(31)], 1, 1),
        ([bytes(31) + b"\x80"], 2**255, 1),  # little-endian: the last byte is the top
        ([b"\xff" * 32, b"\x01" + bytes(31)], 0, 2),  # wraps modulo 2^256
        ([b"\xff" * 32] * 3, 2**256 - 3, 3),
    ],
)
def test_the_fingerprint_sums_ids_little_endian_modulo_2_256(ids_, total, count):
    assert Fingerprint.of(ids_).value == fingerprint_value(total, count)


def test_the_fingerprint_depends_on_the_count_not_only_the_sum():
    assert fingerprint_value(0, 0) != fingerprint_value(0, 1)


# --- bounds -----------------------------------------------------------------------------------


def test_bounds_compare_with_items_as_zero_padded_keys():
    item = (7, b"\x10\x20" + bytes(30))
    assert Bound(7, b"\x10\x20").key == item_key(item)  # equal: the item is not below it
    assert Bound(7, b"\x10\x20\x01").key > item_key(item)
    assert Bound(7, b"\x10\x1f\xff").key < item_key(item)
    assert Bound(8).key > item_key(item) > Bound(7).key
    assert MIN_BOUND.key <= item_key((0, bytes(32)))
    assert INFINITY.key > item_key((HLC_MAX, b"\xff" * 32))


def test_a_bound_prefix_is_canonical_without_trailing_zero_bytes():
    assert Bound(5, b"\x01\x00\x00") == Bound(5, b"\x01")
    assert Bound(5, bytes(32)) == Bound(5)
    assert Bound(5, b"\x01\x00").prefix == b"\x01"


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ((1, b"\xaa" * 32), (2, b"\x00" * 32), Bound(2)),  # hlcs differ: no id bytes
        ((2, b"\x01" + b"\xff" * 31), (2, b"\x02" + bytes(31)), Bound(2, b"\x02")),
        (
            (2, b"\xab\xcd\x01" + bytes(29)),
            (2, b"\xab\xcd\x02" + bytes(29)),
            Bound(2, b"\xab\xcd\x02"),
        ),
        ((2, bytes(31) + b"\x01"), (2, bytes(31) + b"\x02"), Bound(2, bytes(31) + b"\x02")),
    ],
)
def test_between_picks_the_shortest_separating_prefix(before, after, expected):
    bound = Bound.between(before, after)
    assert bound == expected
    assert item_key(before) < bound.key <= item_key(after)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Bound(-1),
        lambda: Bound(2**64 + 1),
        lambda: Bound(1.0),  # type: ignore[arg-type]
        lambda: Bound(1, b"x" * 33),
        lambda: Bound(2**64, b"\x01"),
        lambda: Bound.between((2, b"\x01" * 32), (1, b"\x01" * 32)),
        lambda: item_key((1, b"short")),
        lambda: item_key((2**64, bytes(32))),
        lambda: Fingerprint(value=b"x", count=0),
    ],
)
def test_given_invalid_values_then_constructors_raise_local_errors(make):
    with pytest.raises(LocalProtocolError):
        make()


# --- the memory source ------------------------------------------------------------------------


def naive_fingerprint(items: list[Item], lower: Bound, upper: Bound) -> Fingerprint:
    return Fingerprint.of(i for h, i in sorted(items) if lower.key <= item_key((h, i)) < upper.key)


@settings(max_examples=60)
@given(st.integers(0, 2**32), st.sampled_from([1, 5, 10**6]), st.integers(0, 400))
def test_property_memory_source_agrees_with_a_scan(seed, span, n):
    rng = random.Random(seed)
    items = make_items(rng, n, span)
    source = MemoryItemSource(items)
    ordered = sorted(items)
    for _ in range(10):
        a, b = sorted(rng.choices(ordered, k=2)) if ordered else ((0, bytes(32)),) * 2
        lower, upper = Bound(a[0], a[1][: rng.randrange(33)]), Bound(b[0], b[1])
        if lower.key > upper.key:
            lower, upper = upper, lower
        assert source.fingerprint(lower, upper) == naive_fingerprint(items, lower, upper)
        inside = [x for x in ordered if lower.key <= item_key(x) < upper.key]
        assert source.items(lower, upper, 7) == inside[:7]
        assert source.last(lower, upper) == (inside[-1] if inside else None)
        parts = rng.choice([2, 3, 16])
        bounds = source.split(lower, upper, parts)
        edges = [lower, *bounds, upper]
        if bounds:
            assert all(x < y for x, y in pairwise(edges))
        counts = [source.fingerprint(x, y).count for x, y in pairwise(edges)]
        assert sum(counts) == len(inside)
        if len(inside) >= 2:
            assert bounds
            assert max(counts) <= math.ceil(len(inside) / parts)
        else:
            assert bounds == []


def test_split_bounds_are_the_shortest_between_neighbours():
    rng = random.Random(5)
    items = make_items(rng, 2000, 3)  # few hlcs: most bounds need an id prefix
    source = MemoryItemSource(items)
    ordered = sorted(items)
    for bound in source.split(MIN_BOUND, INFINITY, 64):
        at = next(k for k, item in enumerate(ordered) if item_key(item) >= bound.key)
        assert bound == Bound.between(ordered[at - 1], ordered[at])


def test_given_inserts_and_removals_then_the_source_matches_a_fresh_build():
    rng = random.Random(6)
    items = make_items(rng, 3000, 10**6)
    source = MemoryItemSource(items[:2000])
    for item in items[2000:]:
        assert source.insert(item)
    assert not source.insert(items[0])
    for item in items[:500]:
        assert source.remove(item)
    assert not source.remove(items[0])
    fresh = MemoryItemSource(items[500:])
    assert len(source) == len(fresh) == 2500
    assert list(source) == list(fresh)
    assert items[600] in source
    assert items[0] not in source
    assert "junk" not in source
    for lower, upper in [(MIN_BOUND, INFINITY), (Bound(10**5), Bound(7 * 10**5))]:
        assert source.fingerprint(lower, upper) == fresh.fingerprint(lower, upper)


def test_a_million_items_build_in_seconds_and_fingerprint_in_log_time():
    rng = random.Random(7)
    raw = rng.randbytes(32 * 1_000_000)
    items = [(rng.randrange(2**40), raw[k : k + 32]) for k in range(0, len(raw), 32)]
    began = time.process_time()
    source = MemoryItemSource(items)
    source.fingerprint(MIN_BOUND, INFINITY)
    built = time.process_time() - began
    began = time.process_time()
    for k in range(1000):
        source.fingerprint(Bound(k * 2**30), Bound(k * 2**30 + 2**35))
    per_fingerprint = (time.process_time() - began) / 1000
    assert built < 30
    assert per_fingerprint < 0.001


# --- the state machine: misuse ----------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"frame_limit": MIN_FRAME_LIMIT - 1},
        {"frame_limit": MAX_MESSAGE_BYTES + 1},
        {"id_list_threshold": 0},
        {"id_list_threshold": MAX_LIST_IDS + 1},
        {"branching": 1},
        {"branching": 65},
        {"branching": 16.0},
    ],
)
def test_given_invalid_settings_then_the_reconciler_refuses_them(config):
    with pytest.raises(LocalProtocolError):
        Reconciler(MemoryItemSource(), **config)


def test_given_a_started_or_finished_session_then_misuse_raises_local_errors():
    items = make_items(random.Random(8), 100, 1000)
    a = Reconciler(MemoryItemSource(items))
    first = a.initiate()
    with pytest.raises(LocalProtocolError, match="new Reconciler"):
        a.initiate()
    b = Reconciler(MemoryItemSource(items))
    assert b.receive(first) == b"\x01"
    assert b.done
    assert a.receive(b"\x01") is None
    assert a.done
    for side in (a, b):
        with pytest.raises(LocalProtocolError):
            side.receive(b"\x01")
    with pytest.raises(LocalProtocolError):
        b.initiate()


def test_given_garbage_then_the_session_fails_and_refuses_further_input():
    responder = Reconciler(MemoryItemSource())
    with pytest.raises(MalformedMessage):
        responder.receive(b"\x07")
    assert responder.state is State.FAILED
    with pytest.raises(LocalProtocolError):
        responder.receive(b"\x01")


def test_given_a_message_without_requests_then_no_reply_is_due():
    responder = Reconciler(MemoryItemSource())
    resolved = ReconcileMessage(
        ranges=(ResolvedRange(upper=INFINITY, have=(b"\x05" * 32,), lack=()),)
    )
    assert responder.receive(encode_payload(resolved)) is None
    assert responder.done
    assert responder.need == {b"\x05" * 32}


class _BadSplit(MemoryItemSource):
    def split(self, lower: Bound, upper: Bound, parts: int) -> list[Bound]:
        return []


def test_given_a_source_that_cannot_split_then_the_error_names_the_source():
    reconciler = Reconciler(_BadSplit(make_items(random.Random(9), 100, 1000)))
    with pytest.raises(LocalProtocolError, match="split"):
        reconciler.initiate()
    assert reconciler.state is State.FAILED


def test_statistics_count_rounds_messages_and_bytes_on_both_sides():
    rng = random.Random(10)
    shared = make_items(rng, 3000, 10**9)
    extra = make_items(rng, 10, 10**9)
    result = session(MemoryItemSource(shared + extra), MemoryItemSource(shared))
    a, b = result.initiator.statistics(), result.responder.statistics()
    total = sum(map(len, result.messages))
    assert a.bytes_sent + b.bytes_sent == total == a.bytes_received + b.bytes_received
    assert a.messages_sent + b.messages_sent == len(result.messages)
    assert a.rounds == b.rounds == math.ceil(len(result.messages) / 2)


# --- hostile peers: bounded work --------------------------------------------------------------


def test_given_an_id_list_that_cannot_be_answered_in_one_frame_then_we_split_instead():
    rng = random.Random(11)
    items = make_items(rng, 5000, 10**9)
    ours = Reconciler(MemoryItemSource(items), frame_limit=MIN_FRAME_LIMIT)
    listed = tuple(sorted(rng.randbytes(32) for _ in range(3)))
    everything = encode_payload(ReconcileMessage(ranges=(IdListRange(upper=INFINITY, ids=listed),)))
    reply = decode_payload(ours.receive(everything) or b"")
    assert len(encode_payload(reply)) <= MIN_FRAME_LIMIT
    assert all(isinstance(r, FingerprintRange | IdListRange) for r in reply.ranges)
    assert ours.have == set()  # nothing resolved yet: it will be, part by part


def test_given_an_empty_id_list_too_long_to_answer_then_a_frame_of_ids_and_a_fingerprint():
    items = sorted(make_items(random.Random(13), 5000, 10**9))
    ours = Reconciler(MemoryItemSource(items), frame_limit=MIN_FRAME_LIMIT)
    nothing = encode_payload(ReconcileMessage(ranges=(IdListRange(upper=INFINITY, ids=()),)))
    raw = ours.receive(nothing) or b""
    assert len(raw) <= MIN_FRAME_LIMIT
    resolved, rest = decode_payload(raw).ranges
    assert isinstance(resolved, ResolvedRange)
    assert isinstance(rest, FingerprintRange)
    assert rest.upper == INFINITY
    sent = [item_id for _, item_id in items[: len(resolved.have)]]
    assert list(resolved.have) == sent  # the first ids in order, as many as fit
    assert len(sent) * 32 > MIN_FRAME_LIMIT - 512
    assert ours.have == set(sent)
    assert (
        rest.fingerprint
        == MemoryItemSource(items[len(sent) :]).fingerprint(MIN_BOUND, INFINITY).value
    )


def test_given_the_most_ranges_a_message_may_hold_then_the_reply_stays_within_the_frame():
    rng = random.Random(12)
    ours = Reconciler(MemoryItemSource(make_items(rng, 20_000, 10**9)), frame_limit=MIN_FRAME_LIMIT)
    ranges = tuple(
        FingerprintRange(upper=Bound(k * 10**5 + 1), fingerprint=rng.randbytes(16))
        for k in range(MAX_RANGES)
    )
    reply = ours.receive(encode_payload(ReconcileMessage(ranges=ranges)))
    assert reply is not None
    assert len(reply) <= MIN_FRAME_LIMIT
    assert decode_payload(reply).ranges[-1].upper == INFINITY  # the rest, continued next round


# --- decoding: strict and total ---------------------------------------------------------------

ID = bytes(range(32))
FP = bytes(range(16))


def _range(ts: bytes, prefix: bytes, mode: int, body: bytes = b"") -> bytes:
    return ts + bytes((len(prefix),)) + prefix + bytes((mode,)) + body


MALFORMED: dict[str, tuple[bytes, type[Exception]]] = {
    "empty payload": (b"", MalformedMessage),
    "unknown version": (b"\x02", MalformedMessage),
    "truncated varint": (b"\x01\x81", MalformedMessage),
    "overlong varint": (b"\x01" + _range(b"\x80\x05", b"", 1, FP), MalformedMessage),
    "varint of 11 bytes": (b"\x01" + b"\x81" * 10 + b"\x01", MalformedMessage),
    "hlc beyond 2^64-1": (
        b"\x01" + _range(b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"", 1, FP),
        MalformedMessage,
    ),
    "prefix longer than 32": (b"\x01\x05\x21" + b"\x01" * 33 + b"\x01" + FP, MalformedMessage),
    "prefix with a trailing zero": (
        b"\x01" + _range(b"\x05", b"\x01\x00", 1, FP),
        MalformedMessage,
    ),
    "infinite bound with a prefix": (b"\x01" + _range(b"\x00", b"\x01", 1, FP), MalformedMessage),
    "unknown mode": (b"\x01" + _range(b"\x05", b"", 4), MalformedMessage),
    "truncated fingerprint": (b"\x01" + _range(b"\x05", b"", 1, FP[:15]), MalformedMessage),
    "truncated id list": (b"\x01" + _range(b"\x05", b"", 2, b"\x02" + ID), MalformedMessage),
    "repeated id": (b"\x01" + _range(b"\x05", b"", 2, b"\x02" + ID + ID), MalformedMessage),
    "empty first range": (b"\x01" + _range(b"\x01", b"", 1, FP), MalformedMessage),
    "equal bounds": (
        b"\x01" + _range(b"\x05", b"", 1, FP) + _range(b"\x01", b"", 1, FP),
        MalformedMessage,
    ),
    "range after infinity": (
        b"\x01" + _range(b"\x00", b"", 1, FP) + _range(b"\x05", b"", 1, FP),
        MalformedMessage,
    ),
    "trailing skip": (b"\x01" + _range(b"\x05", b"", 0), MalformedMessage),
    "two skips in a row": (
        b"\x01" + _range(b"\x05", b"", 0) + _range(b"\x05", b"", 0) + _range(b"\x00", b"", 1, FP),
        MalformedMessage,
    ),
    "resolved without ids": (b"\x01" + _range(b"\x00", b"", 3, b"\x00\x00"), MalformedMessage),
    "resolved id held and lacking": (
        b"\x01" + _range(b"\x00", b"", 3, b"\x01" + ID + b"\x01" + ID),
        MalformedMessage,
    ),
    "id list too long": (b"\x01" + _range(b"\x00", b"", 2, b"\x81\x01"), TooLarge),
    "too many ranges": (b"\x01" + _range(b"\x02", b"", 1, FP) * (MAX_RANGES + 1), TooLarge),
    "payload too large": (b"\x01" + bytes(MAX_MESSAGE_BYTES), TooLarge),
}


@pytest.mark.parametrize(("payload", "error"), MALFORMED.values(), ids=MALFORMED.keys())
def test_given_a_malformed_payload_then_decoding_raises_the_named_error(payload, error):
    with pytest.raises(error) as raised:
        decode_payload(payload)
    assert isinstance(raised.value, RemoteProtocolError)
    assert type(raised.value) is error


def test_given_a_non_bytes_payload_then_it_is_the_callers_mistake():
    with pytest.raises(LocalProtocolError):
        decode_payload("01")  # type: ignore[arg-type]


def test_the_varint_is_most_significant_digit_first_like_negentropy():
    message = ReconcileMessage(ranges=(FingerprintRange(upper=Bound(300), fingerprint=FP),))
    assert encode_payload(message) == b"\x01" + b"\x82\x2d" + b"\x00" + b"\x01" + FP  # 301


@st.composite
def messages(draw: st.DrawFn) -> ReconcileMessage:
    """Valid messages: increasing bounds, canonical skips, lists within the limits."""
    count = draw(st.integers(0, 12))
    hlcs = sorted(draw(st.lists(st.integers(0, HLC_MAX), min_size=count, max_size=count)))
    uppers: list[Bound] = []
    for hlc in hlcs:
        bound = Bound(hlc, draw(st.binary(max_size=32)))
        if bound > (uppers[-1] if uppers else MIN_BOUND):
            uppers.append(bound)
    if uppers and draw(st.booleans()):
        uppers.append(INFINITY)
    id_lists = st.lists(st.binary(min_size=32, max_size=32), unique=True, max_size=4)
    ranges = []
    skipped = False
    for k, upper in enumerate(uppers):
        last = k == len(uppers) - 1
        mode = draw(st.integers(1 if skipped or last else 0, 3))
        if mode == 0:
            ranges.append(SkipRange(upper=upper))
        elif mode == 1:
            ranges.append(
                FingerprintRange(upper=upper, fingerprint=draw(st.binary(min_size=16, max_size=16)))
            )
        elif mode == 2:
            ranges.append(IdListRange(upper=upper, ids=tuple(draw(id_lists))))
        else:
            both = draw(id_lists.filter(bool))
            cut = draw(st.integers(0, len(both)))
            ranges.append(
                ResolvedRange(upper=upper, have=tuple(both[:cut]), lack=tuple(both[cut:]))
            )
        skipped = mode == 0
    return ReconcileMessage(ranges=tuple(ranges))


@given(messages())
def test_property_encoding_round_trips_and_is_the_only_encoding(message):
    payload = encode_payload(message)
    assert decode_payload(payload) == message
    for cut in range(1, len(payload)):
        try:
            decode_payload(payload[:cut])
        except RemoteProtocolError:
            continue
        assert encode_payload(decode_payload(payload[:cut])) == payload[:cut]


# --- fuzzing ----------------------------------------------------------------------------------

ITERATIONS = int(os.environ.get("NODENET_FUZZ_ITERATIONS", "200000")) // 10
SEED = int(os.environ.get("NODENET_FUZZ_SEED", str(time.time_ns() % 2**32)))


def _corpus() -> list[bytes]:
    """Real messages of real sessions, every mode and bound form included."""
    rng = random.Random(0)
    corpus = []
    for span, config in [(10**9, {}), (2, {"branching": 3, "id_list_threshold": 2}), (2**64, {})]:
        shared = make_items(rng, 300, span)
        result = session(
            MemoryItemSource(shared + make_items(rng, 20, span)),
            MemoryItemSource(shared + make_items(rng, 20, span)),
            **config,
        )
        corpus += result.messages
    return corpus


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4])):
        choice = rng.randrange(6)
        at = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:
            buf[at % len(buf)] ^= 1 << rng.randrange(8)
        elif choice == 1 and buf:
            buf[at % len(buf)] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif choice == 2:
            buf[at:at] = rng.randbytes(rng.randrange(1, 40))
        elif choice == 3:
            del buf[at : at + rng.randrange(1, 40)]
        elif choice == 4:
            buf = buf[:at]
        else:
            end = min(len(buf), at + rng.randrange(1, 80))
            buf[at:at] = buf[at:end]  # duplicate a stretch: repeated ranges and ids
    return bytes(buf)


def test_fuzz_given_any_bytes_then_only_remote_protocol_errors_escape():
    rng = random.Random(SEED)
    print(f"reconcile fuzz seed {SEED} ({ITERATIONS} inputs); replay with NODENET_FUZZ_SEED")
    corpus = _corpus()
    source = MemoryItemSource(make_items(rng, 200, 10**9))
    accepted = 0
    for _ in range(ITERATIONS):
        kind = rng.randrange(4)
        if kind == 0:
            data = rng.randbytes(rng.randrange(64))
        elif kind == 1:
            data = b"\x01" + rng.randbytes(rng.randrange(200))
        elif kind == 2:
            message = rng.choice(corpus)
            data = message[: rng.randrange(len(message) + 1)]
        else:
            data = _mutate(rng, rng.choice(corpus))
        try:
            decoded = decode_payload(data)
        except RemoteProtocolError:
            decoded = None
        if decoded is not None:
            accepted += 1
            assert encode_payload(decoded) == data, "two encodings of one message"
        reconciler = Reconciler(source, frame_limit=MIN_FRAME_LIMIT)
        try:
            reply = reconciler.receive(data)
        except RemoteProtocolError:
            assert decoded is None
            continue
        assert decoded is not None
        assert reply is None or len(reply) <= MIN_FRAME_LIMIT
    assert accepted > ITERATIONS // 50  # the mutations reach past the first checks


# --- the worked example in docs/protocol.md ---------------------------------------------------

EXAMPLE_BLOCK = re.compile(r"^```text name=reconcile_example\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _doc_example() -> dict[str, bytes]:
    match = EXAMPLE_BLOCK.search(DOC.read_text())
    assert match, "docs/protocol.md has no reconcile_example block"
    values: dict[str, str] = {}
    key = ""
    for line in match.group(1).splitlines():
        if line.startswith("  "):
            values[key] += line.strip()
        else:
            key, _, value = line.partition(":")
            values[key] = value.strip()
    return {k: bytes.fromhex(v) for k, v in values.items()}


def test_the_worked_example_in_the_protocol_doc_matches_the_code():
    doc = _doc_example()
    id1 = hashlib.blake2b(b"entry one", digest_size=32).digest()
    id2 = hashlib.blake2b(b"entry two", digest_size=32).digest()
    assert (doc["id1"], doc["id2"]) == (id1, id2)
    assert Fingerprint.of([id1, id2]).value == doc["fingerprint_id1_id2"]
    example = ReconcileMessage(
        ranges=(
            FingerprintRange(upper=Bound(1000), fingerprint=doc["fingerprint_id1_id2"]),
            SkipRange(upper=Bound(1000, b"\x80")),
            IdListRange(upper=Bound(2000), ids=(id1,)),
            ResolvedRange(upper=INFINITY, have=(id2,), lack=()),
        )
    )
    assert encode_payload(example) == doc["message"]
    assert decode_payload(doc["message"]) == example

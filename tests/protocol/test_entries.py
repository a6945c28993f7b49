"""Store entries and the hybrid logical clock: encoding, every rejection, LWW convergence."""

from __future__ import annotations

import msgpack
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodenet.protocol.entries import (
    MAX_FUTURE_MS,
    SignedEntry,
    create_entry,
    decode_entry,
    supersedes,
)
from nodenet.protocol.errors import (
    BadSignature,
    FromTheFuture,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    TooLarge,
)
from nodenet.protocol.hlc import COUNTER_MAX, HybridClock, pack_hlc, unpack_hlc
from nodenet.protocol.identity import ENTRY_CONTEXT, node_id_of, sign, verify

ALICE = nacl.signing.SigningKey(b"\x01" * 32)
MALLORY = nacl.signing.SigningKey(b"\x03" * 32)
NOW_MS = 1_764_000_000_000
HLC = pack_hlc(NOW_MS, 0)


def decode(data: bytes, max_value: int = 65536) -> SignedEntry:
    return decode_entry(data, now_ms=NOW_MS, max_value=max_value, verify=verify)


def body_of(entry: SignedEntry) -> list:
    return list(msgpack.unpackb(msgpack.unpackb(entry.encoded)[0]))


def reseal(fields: list, signer=ALICE) -> bytes:
    body = msgpack.packb(fields, use_bin_type=True)
    return msgpack.packb([body, sign(signer, ENTRY_CONTEXT, body)], use_bin_type=True)


# --- hybrid logical clock -----------------------------------------------------------------


def test_hlc_follows_the_wall_clock_and_never_goes_back():
    clock = HybridClock()
    first = clock.now(1000)
    assert unpack_hlc(first) == (1000, 0)
    assert unpack_hlc(clock.now(1000)) == (1000, 1)
    assert unpack_hlc(clock.now(900)) == (1000, 2)  # the wall clock stepped back
    assert unpack_hlc(clock.now(1001)) == (1001, 0)


@pytest.mark.parametrize(
    ("mine", "theirs", "wall", "expected"),
    [
        ((10, 5), (10, 7), 9, (10, 8)),  # same millisecond: past both counters
        ((10, 5), (9, 7), 9, (10, 6)),  # ours is newer
        ((9, 5), (10, 7), 9, (10, 8)),  # theirs is newer
        ((9, 5), (8, 7), 12, (12, 0)),  # the wall clock is ahead of both
    ],
)
def test_hlc_observe(mine, theirs, wall, expected):
    clock = HybridClock(pack_hlc(*mine))
    assert unpack_hlc(clock.observe(pack_hlc(*theirs), wall)) == expected


def test_hlc_counter_overflow_borrows_the_next_millisecond():
    clock = HybridClock(pack_hlc(50, COUNTER_MAX))
    assert unpack_hlc(clock.now(50)) == (51, 0)


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 2**40), st.integers(0, 2**40)), max_size=50)
)
def test_hlc_values_strictly_increase_whatever_happens(events):
    clock = HybridClock()
    previous = -1
    for local, wall, remote_ms in events:
        value = clock.now(wall) if local else clock.observe(pack_hlc(remote_ms, 0), wall)
        assert value > previous
        previous = value


# --- entries ------------------------------------------------------------------------------


def test_an_entry_round_trips_and_its_id_is_its_hash():
    entry = create_entry(ALICE, "config/web", b"v=1", HLC)
    decoded = decode(entry.encoded)
    assert decoded == entry
    assert decoded.author == node_id_of(ALICE)
    assert len(decoded.id) == 32
    tombstone = create_entry(ALICE, "config/web", b"", HLC + 1, tombstone=True)
    assert decode(tombstone.encoded).tombstone


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda f: f.__setitem__(2, b"tampered"), BadSignature, "not signed by its author"),
        (lambda f: f.__setitem__(3, bytes(node_id_of(MALLORY))), BadSignature, "not signed"),
        (lambda f: f.__setitem__(4, pack_hlc(NOW_MS + MAX_FUTURE_MS + 5000, 0)), None, None),
        (lambda f: f.__setitem__(1, ""), MalformedMessage, "key must be 1-256 bytes"),
        (lambda f: f.__setitem__(1, "k" * 257), MalformedMessage, "key must be 1-256 bytes"),
        (lambda f: f.__setitem__(1, "a\nb"), MalformedMessage, "control characters"),
        (lambda f: f.__setitem__(5, 2), MalformedMessage, "unknown bits"),
        (
            lambda f: f.__setitem__(5, 1),
            MalformedMessage,
            "tombstone entry must have an empty value",
        ),
        (lambda f: f.__setitem__(0, 2), MalformedMessage, "version"),
        (lambda f: f.__setitem__(4, -1), MalformedMessage, "uint64"),
        (lambda f: f.__setitem__(3, b"short"), MalformedMessage, "32-byte node id"),
        (lambda f: f.pop(), MalformedMessage, "must be \\[version"),
    ],
)
def test_bad_entries_are_rejected_with_the_right_error(mutate, error, match):
    fields = body_of(create_entry(ALICE, "k", b"value", HLC))
    mutate(fields)
    # Tampering after signing keeps Alice's signature; the rest are re-signed honestly.
    signer_keeps_old_signature = error is BadSignature
    if signer_keeps_old_signature:
        original = create_entry(ALICE, "k", b"value", HLC)
        body = msgpack.packb(fields, use_bin_type=True)
        data = msgpack.packb([body, original.signature], use_bin_type=True)
    else:
        data = reseal(fields)
    if error is None:  # the future hlc, honestly signed
        with pytest.raises(FromTheFuture, match="in the future"):
            decode(data)
        return
    with pytest.raises(error, match=match):
        decode(data)


def test_an_entry_signed_by_someone_else_than_its_author_is_rejected():
    fields = body_of(create_entry(ALICE, "k", b"v", HLC))
    with pytest.raises(BadSignature):
        decode(reseal(fields, signer=MALLORY))


def test_a_key_that_is_not_utf8_is_rejected():
    fields = body_of(create_entry(ALICE, "kk", b"v", HLC))
    body = msgpack.packb(fields, use_bin_type=True).replace(b"\xa2kk", b"\xa2\xff\xfe")
    data = msgpack.packb([body, sign(ALICE, ENTRY_CONTEXT, body)], use_bin_type=True)
    with pytest.raises(MalformedMessage, match="not valid UTF-8"):
        decode(data)


def test_an_oversized_value_is_rejected_before_and_after_parsing():
    entry = create_entry(ALICE, "k", b"x" * 1200, HLC, max_value=4096)
    with pytest.raises(TooLarge, match="allows 1000"):
        decode(entry.encoded, max_value=1000)
    with pytest.raises(TooLarge, match="over the limit"):
        decode(entry.encoded + b"\x00" * 5000, max_value=1000)
    with pytest.raises(LocalProtocolError, match="limit is 10"):
        create_entry(ALICE, "k", b"x" * 11, HLC, max_value=10)


def test_a_non_canonical_encoding_is_rejected():
    entry = create_entry(ALICE, "k", b"v", HLC)
    body, signature = msgpack.unpackb(entry.encoded)
    padded = (
        b"\x92"
        + b"\xc5"
        + len(body).to_bytes(2, "big")
        + body
        + msgpack.packb(signature, use_bin_type=True)
    )
    with pytest.raises(MalformedMessage, match="canonical"):
        decode(padded)


@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_anything_but_remote_errors(data):
    with pytest.raises(RemoteProtocolError):
        decode(data)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    st.randoms(),
)
def test_any_arrival_order_gives_identical_heads(writes, rnd):
    keys = [ALICE, MALLORY]
    entries = [
        create_entry(
            keys[i % 2],
            key,
            b"" if tomb else f"{key}{t}".encode(),
            pack_hlc(NOW_MS, t),
            tombstone=tomb,
        )
        for i, (key, t, tomb) in enumerate(writes)
    ]

    def heads(order: list[SignedEntry]) -> dict[str, bytes]:
        current: dict[str, SignedEntry] = {}
        for entry in order:
            if entry.key not in current or supersedes(entry, current[entry.key]):
                current[entry.key] = entry
        return {k: e.id for k, e in current.items()}

    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert heads(entries) == heads(shuffled) == heads(list(reversed(entries)))

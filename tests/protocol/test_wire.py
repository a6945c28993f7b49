"""The wire codec: round trips, packing, and the rejection of every kind of bad packet."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.strategies import messages
from support.wire import (
    ALICE,
    BOB,
    CLUSTER_KEY,
    MALLORY,
    NOW_MS,
    OTHER_KEY,
    codec,
    craft,
    seal_plaintext,
)

from nodenet.protocol.errors import (
    BadSignature,
    ClockSkew,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    TooLarge,
    Undecryptable,
    UnsupportedVersion,
)
from nodenet.protocol.identity import CLAIM_CONTEXT, ENVELOPE_CONTEXT, node_id_of, sign
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.messages import (
    MAX_IDS,
    Address,
    Alive,
    Dead,
    Entry,
    EntryAnnounce,
    Message,
    MessageType,
    Ping,
    PushPull,
    StoreSummary,
    Suspect,
    encode_message,
)
from nodenet.protocol.wire import FRAME_HEADER, FrameReader, WireCodec

BOB_ID = node_id_of(BOB)


def _decode_all(receiver: WireCodec, packets: list[bytes]) -> list[Message]:
    out: list[Message] = []
    for packet in packets:
        out.extend(receiver.decode_datagram(packet, NOW_MS).envelope.messages)
    return out


def _fits_datagram(message: Message, extra: int = 0) -> bool:
    return len(encode_message(message)) + codec().envelope_overhead(NOW_MS) + extra <= 1400


# --- round trips --------------------------------------------------------------------------


@given(st.lists(messages, min_size=1, max_size=6))
def test_given_any_messages_when_sent_in_frames_then_they_decode_equal(batch: list[Message]):
    sender, receiver = codec(ALICE), codec(BOB)
    frames = sender.encode_frames(batch, NOW_MS)
    decoded: list[Message] = []
    for frame in frames:
        reader = FrameReader(sender.limits.max_frame_size)
        reader.feed(frame)
        payload = reader.next_frame()
        assert payload is not None
        got = receiver.decode_frame(payload, NOW_MS)
        assert got.envelope.sender == node_id_of(ALICE)
        assert got.envelope.sent_at_ms == NOW_MS
        decoded.extend(got.envelope.messages)
    assert decoded == batch


@given(st.lists(messages.filter(_fits_datagram), min_size=1, max_size=12))
def test_given_messages_when_packed_into_datagrams_then_greedy_and_lossless(batch: list[Message]):
    sender, receiver = codec(ALICE), codec(BOB)
    datagrams = sender.encode_datagrams(batch, NOW_MS)
    assert _decode_all(receiver, datagrams) == batch
    assert all(len(d) <= 1400 for d in datagrams)
    # Greedy: the first message of each datagram would not have fitted into the one before.
    roomy = codec(ALICE, max_datagram_size=65000)
    start = 0
    for datagram in datagrams[:-1]:
        count = len(receiver.decode_datagram(datagram, NOW_MS).envelope.messages)
        (merged,) = roomy.encode_datagrams(batch[start : start + count + 1], NOW_MS)
        assert len(merged) > 1400
        start += count


def test_given_a_message_too_big_for_any_datagram_when_packed_then_local_error():
    huge = Entry(entry=b"x" * 1400)
    with pytest.raises(LocalProtocolError, match="cannot fit"):
        codec().encode_datagrams([huge], NOW_MS)


@given(st.integers(1, 4), st.data())
def test_given_a_ring_when_any_key_is_primary_then_the_receiver_opens_and_names_it(
    size: int, data: st.DataObject
):
    keys = [ClusterKey(bytes([i]) * 32) for i in range(size)]
    primary = data.draw(st.sampled_from(keys))
    sender = codec(ALICE, Keyring(keys).use(primary))
    receiver = codec(BOB, Keyring(list(reversed(keys))))
    (datagram,) = sender.encode_datagrams([Ping(seq=1, target=BOB_ID)], NOW_MS)
    assert receiver.decode_datagram(datagram, NOW_MS).key == primary


# --- rejection ----------------------------------------------------------------------------


def _ping_datagram() -> bytes:
    (datagram,) = codec(ALICE).encode_datagrams([Ping(seq=7, target=BOB_ID)], NOW_MS)
    return datagram


def test_given_a_packet_sealed_with_another_cluster_key_when_opened_then_undecryptable():
    (datagram,) = codec(ALICE, Keyring([OTHER_KEY])).encode_datagrams(
        [Ping(seq=1, target=BOB_ID)], NOW_MS
    )
    with pytest.raises(Undecryptable, match="none of the 1 installed"):
        codec(BOB).decode_datagram(datagram, NOW_MS)


@given(st.data())
def test_given_any_flipped_bit_when_opened_then_rejected(data: st.DataObject):
    datagram = bytearray(_ping_datagram())
    bit = data.draw(st.integers(0, len(datagram) * 8 - 1))
    datagram[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(Undecryptable):
        codec(BOB).decode_datagram(bytes(datagram), NOW_MS)


@given(st.data())
def test_given_a_truncated_datagram_when_opened_then_undecryptable(data: st.DataObject):
    datagram = _ping_datagram()
    cut = data.draw(st.integers(0, len(datagram) - 1))
    with pytest.raises(Undecryptable):
        codec(BOB).decode_datagram(datagram[:cut], NOW_MS)


@given(st.binary(min_size=1, max_size=200))
def test_given_an_extended_datagram_when_opened_then_undecryptable(tail: bytes):
    with pytest.raises(Undecryptable):
        codec(BOB).decode_datagram(_ping_datagram() + tail, NOW_MS)


def test_given_a_datagram_over_the_limit_when_opened_then_too_large():
    with pytest.raises(TooLarge, match="exceeds 1400"):
        codec(BOB).decode_datagram(b"\x01" * 1401, NOW_MS)


@pytest.mark.parametrize("offset_ms", [5 * 60 * 1000 + 1, -(5 * 60 * 1000 + 1), 10**9])
def test_given_a_replayed_or_skewed_envelope_when_opened_then_clock_skew(offset_ms: int):
    with pytest.raises(ClockSkew, match="check NTP"):
        codec(BOB).decode_datagram(_ping_datagram(), NOW_MS + offset_ms)


def test_given_skew_within_the_limit_when_opened_then_accepted():
    assert codec(BOB).decode_datagram(_ping_datagram(), NOW_MS + 5 * 60 * 1000).envelope


def test_given_an_envelope_signed_by_another_key_when_opened_then_bad_signature():
    packet = craft([[1, 7, BOB_ID]], signer=MALLORY, sender=node_id_of(ALICE))
    with pytest.raises(BadSignature, match="invalid signature"):
        codec(BOB).decode_datagram(packet, NOW_MS)


def test_given_a_claim_signed_by_someone_else_when_relayed_then_bad_signature():
    address = Address("127.0.0.1", 7950)
    forged_claim = msgpack.packb(
        [MessageType.ALIVE, node_id_of(ALICE), 9, address.to_wire(), {}], use_bin_type=True
    )
    forged = [MessageType.ALIVE, forged_claim, sign(MALLORY, CLAIM_CONTEXT, forged_claim)]
    packet = craft([forged], signer=MALLORY)  # the envelope itself is honestly Mallory's
    with pytest.raises(BadSignature, match="not signed by its author"):
        codec(BOB).decode_datagram(packet, NOW_MS)


def test_given_an_accusation_signed_by_the_accused_when_decoded_then_bad_signature():
    # DEAD must be signed by the accuser named in it, not by anybody else.
    claim = msgpack.packb(
        [MessageType.DEAD, node_id_of(BOB), 1, node_id_of(ALICE)], use_bin_type=True
    )
    packet = craft([[MessageType.DEAD, claim, sign(BOB, CLAIM_CONTEXT, claim)]])
    with pytest.raises(BadSignature):
        codec(BOB).decode_datagram(packet, NOW_MS)


def test_given_a_claim_signature_from_another_context_when_decoded_then_bad_signature():
    claim = msgpack.packb([MessageType.LEAVE, node_id_of(ALICE), 3], use_bin_type=True)
    packet = craft([[MessageType.LEAVE, claim, sign(ALICE, b"other context", claim)]])
    with pytest.raises(BadSignature):
        codec(BOB).decode_datagram(packet, NOW_MS)


def test_given_a_claim_whose_inner_type_differs_when_decoded_then_malformed():
    suspect = Suspect.create(ALICE, node=BOB_ID, incarnation=1)
    packet = craft([[MessageType.DEAD, suspect.claim, suspect.signature]])
    with pytest.raises(MalformedMessage, match="own type code"):
        codec(BOB).decode_datagram(packet, NOW_MS)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([1, 2**32, b"\x00" * 32], "seq must be an integer"),
        ([1, -1, b"\x00" * 32], "seq must be an integer"),
        ([1, 1, b"\x00" * 31], "target must be 32 bytes"),
        ([1, 1], "needs 2 fields"),
        ([1, "1", b"\x00" * 32], "seq must be an integer"),
        ([1, True, b"\x00" * 32], "seq must be an integer"),
        ([2, 1, b"\x00" * 32, [b"\x7f\x00\x00", 1], True], "ip must be 4 or 16 bytes"),
        ([2, 1, b"\x00" * 32, [b"\x7f\x00\x00\x01", 0], True], "not a port"),
        ([2, 1, b"\x00" * 32, [b"\x7f\x00\x00\x01", 9], 1], "nack must be a boolean"),
        ([11, [b"\x00" * 32] * (MAX_IDS + 1)], "at most 4096"),
        ([11, [b"\x00" * 31]], "must be 32 bytes"),
        ([15, b"\x00" * 15, 1], "fingerprint must be 16 bytes"),
        ([15, b"\x00" * 17, 1], "fingerprint must be 16 bytes"),
        ([15, "x" * 16, 1], "fingerprint must be bytes"),
        ([15, b"\x00" * 16, -1], "count must be an integer"),
        ([15, b"\x00" * 16, 1.0], "count must be an integer"),
        ([15, b"\x00" * 16, True], "count must be an integer"),
        ([15, b"\x00" * 16], "STORE_SUMMARY needs 2 fields"),
        ([9, True, [[[1, b"x", b"y"], None]]], "expected a ALIVE claim, got type 1"),
        ("ping", "non-empty array"),
        ([], "non-empty array"),
        ([1.5], "type must be an integer"),
    ],
)
def test_given_a_malformed_message_when_decoded_then_malformed_naming_the_field(
    raw: object, match: str
):
    packet = craft([raw])
    with pytest.raises(MalformedMessage, match=match):
        codec(BOB).decode_frame(packet, NOW_MS)  # frames: some cases exceed a datagram


def test_given_oversized_tags_in_a_signed_alive_when_decoded_then_malformed():
    tags = {f"k{i}": "v" * 20 for i in range(30)}  # well over 512 bytes encoded
    claim = msgpack.packb(
        [MessageType.ALIVE, node_id_of(ALICE), 1, [b"\x7f\x00\x00\x01", 7950], tags],
        use_bin_type=True,
    )
    packet = craft(
        [[MessageType.ALIVE, claim, sign(ALICE, CLAIM_CONTEXT, claim)]],
        ring=Keyring([CLUSTER_KEY]),
    )
    with pytest.raises(MalformedMessage, match="512"):
        codec(BOB, max_datagram_size=4000).decode_datagram(packet, NOW_MS)


@pytest.mark.parametrize("name", ["web\nERROR daemon: forged", "\x1b]0;owned\x07", "a\x9b2J"])
def test_given_control_characters_in_a_signed_name_when_decoded_then_malformed(name):
    # Names and tags are printed in logs and terminals: a member must not be able to forge
    # log lines or send escape sequences to an operator's screen (adversarial review).
    claim = msgpack.packb(
        [MessageType.ALIVE, node_id_of(ALICE), 1, [b"\x7f\x00\x00\x01", 7950], {"name": name}],
        use_bin_type=True,
    )
    packet = craft([[MessageType.ALIVE, claim, sign(ALICE, CLAIM_CONTEXT, claim)]])
    with pytest.raises(MalformedMessage, match="control characters"):
        codec(BOB).decode_datagram(packet, NOW_MS)
    with pytest.raises(LocalProtocolError, match="control characters"):
        Alive.create(ALICE, incarnation=1, address=Address("::1", 1), tags={"name": name})


def test_given_tags_over_the_limit_when_creating_alive_then_local_error():
    with pytest.raises(LocalProtocolError, match="limit is 512"):
        Alive.create(
            ALICE,
            incarnation=1,
            address=Address("::1", 1),
            tags={f"k{i}": "v" * 20 for i in range(30)},
        )


def test_given_invalid_utf8_text_when_decoded_then_malformed():
    message = msgpack.packb([14, "c", "x"], use_bin_type=True)
    broken = message[:-1] + b"\xff"  # the 1-character string "x" becomes the byte 0xff
    body = (
        b"\x95\x01\x00"
        + msgpack.packb(node_id_of(ALICE), use_bin_type=True)
        + msgpack.packb(NOW_MS)
        + b"\x91"
        + broken
    )
    packet = seal_plaintext(body + sign(ALICE, ENVELOPE_CONTEXT, body))
    with pytest.raises(MalformedMessage, match="not valid msgpack"):
        codec(BOB).decode_datagram(packet, NOW_MS)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"major": 2}, UnsupportedVersion, "speaks 1.x"),
        ({"major": "1"}, MalformedMessage, "not an integer"),
        ({"major": 1.0}, MalformedMessage, "not an integer"),
        ({"minor": 256}, MalformedMessage, "minor version"),
        ({"sender": b"\x00" * 31}, MalformedMessage, "32-byte node id"),
        ({"sent_at_ms": -5}, MalformedMessage, "uint64"),
        ({"sent_at_ms": 1.5}, MalformedMessage, "uint64"),
    ],
)
def test_given_a_bad_envelope_header_when_opened_then_the_right_error(
    overrides: dict[str, object], error: type[RemoteProtocolError], match: str
):
    packet = craft([[1, 1, BOB_ID]], **overrides)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        codec(BOB).decode_datagram(packet, NOW_MS)


@pytest.mark.parametrize(
    "plaintext",
    [b"", b"\x00" * 64, b"\xc1" + b"\x00" * 64, b"\x93\x01\x00\x00" + b"\x00" * 64],
)
def test_given_garbage_behind_a_valid_seal_when_opened_then_malformed(plaintext: bytes):
    with pytest.raises(MalformedMessage):
        codec(BOB).decode_datagram(seal_plaintext(plaintext), NOW_MS)


# --- forward compatibility ----------------------------------------------------------------


def test_given_unknown_message_types_when_decoded_then_skipped_and_counted():
    packet = craft([[200, "future"], [1, 7, BOB_ID], [99]])
    envelope = codec(BOB).decode_datagram(packet, NOW_MS).envelope
    assert envelope.messages == (Ping(seq=7, target=BOB_ID),)
    assert envelope.skipped == 2


def test_given_extra_trailing_fields_when_decoded_then_ignored():
    packet = craft([[1, 7, BOB_ID, "new field", 42]], minor=3, extra=("envelope field",))
    envelope = codec(BOB).decode_datagram(packet, NOW_MS).envelope
    assert envelope.messages == (Ping(seq=7, target=BOB_ID),)
    assert envelope.minor == 3


def test_given_a_store_summary_with_appended_fields_when_decoded_then_they_are_ignored():
    packet = craft([[15, b"\x07" * 16, 3, "appended by a newer minor"]])
    envelope = codec(BOB).decode_datagram(packet, NOW_MS).envelope
    assert envelope.messages == (StoreSummary(fingerprint=b"\x07" * 16, count=3),)


def test_given_a_claim_with_an_appended_field_when_relayed_then_it_still_verifies():
    claim = msgpack.packb(
        [MessageType.SUSPECT, BOB_ID, 4, node_id_of(ALICE), "added in 1.1"], use_bin_type=True
    )
    packet = craft([[MessageType.SUSPECT, claim, sign(ALICE, CLAIM_CONTEXT, claim)]])
    (suspect,) = codec(BOB).decode_datagram(packet, NOW_MS).envelope.messages
    assert isinstance(suspect, Suspect)
    assert suspect.claim == claim  # forwarded verbatim, so the next hop verifies it too
    relayed = codec(MALLORY).encode_datagrams([suspect], NOW_MS)
    assert codec(ALICE).decode_datagram(relayed[0], NOW_MS).envelope.messages == (suspect,)


# --- frames -------------------------------------------------------------------------------


@given(st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_given_frames_split_anywhere_when_fed_then_reassembled(cuts: list[int]):
    sender = codec(ALICE)
    stream = b"".join(
        sender.encode_frames([Entry(entry=bytes([i]) * 40 * i)], NOW_MS)[0] for i in range(1, 4)
    )
    reader = FrameReader(sender.limits.max_frame_size)
    frames = []
    position = 0
    for cut in [*cuts, len(stream)]:
        reader.feed(stream[position : position + cut])
        position += cut
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
    assert [
        codec(BOB).decode_frame(f, NOW_MS).envelope.messages[0].entry  # type: ignore[attr-defined]
        for f in frames
    ] == [bytes([i]) * 40 * i for i in range(1, 4)]
    assert reader.buffered == 0


def test_given_a_frame_header_over_the_limit_when_read_then_too_large_before_buffering():
    reader = FrameReader(1 << 20)
    reader.feed(FRAME_HEADER.pack((1 << 20) + 1))
    with pytest.raises(TooLarge, match="announces"):
        reader.next_frame()


def test_given_a_zero_length_frame_when_read_then_malformed():
    reader = FrameReader(1 << 20)
    reader.feed(FRAME_HEADER.pack(0))
    with pytest.raises(MalformedMessage, match="zero-length"):
        reader.next_frame()


def test_given_many_messages_when_framed_then_split_under_the_frame_limit():
    sender = codec(ALICE, max_frame_size=4096)
    batch = [Entry(entry=bytes([i]) * 1000) for i in range(10)]
    frames = sender.encode_frames(batch, NOW_MS)
    assert len(frames) > 1
    assert all(len(f) - FRAME_HEADER.size <= 4096 for f in frames)


def test_given_a_push_pull_of_many_members_when_framed_then_round_trips():
    from nodenet.protocol.messages import MemberState

    alive = Alive.create(ALICE, incarnation=3, address=Address("10.0.0.1", 7950))
    dead = Dead.create(BOB, node=alive.node, incarnation=3)
    message = PushPull(join=True, members=(MemberState(alive, dead),) * 500)
    (frame,) = codec(ALICE).encode_frames([message], NOW_MS)
    got = codec(BOB).decode_frame(frame[FRAME_HEADER.size :], NOW_MS)
    assert got.envelope.messages == (message,)


def test_given_entry_announce_with_too_many_ids_when_built_then_local_error():
    with pytest.raises(LocalProtocolError, match="at most 4096"):
        EntryAnnounce(ids=(b"\x00" * 32,) * (MAX_IDS + 1))


# --- cases found while writing the specification ----------------------------------------


def _signed_alive_claim(tags_map_bytes: bytes) -> bytes:
    """An ALIVE message whose claim carries a hand-encoded tags map, correctly signed."""
    head = msgpack.packb(
        [MessageType.ALIVE, node_id_of(ALICE), 1, [b"\x7f\x00\x00\x01", 7950]], use_bin_type=True
    )
    claim = bytes([head[0] + 1]) + head[1:] + tags_map_bytes  # array of 4 → array of 5
    return claim


@pytest.mark.parametrize(
    ("tags_map", "match"),
    [
        (b"\x82\xa1a\xa1x\xc4\x01b\xa1y", "map of strings"),  # {"a": "x", b"b": "y"}
        (b"\x82\xa1a\xa1x\xa1a\xa1y", "duplicate keys"),  # {"a": "x", "a": "y"}
        (b"\x81\xa1a\xc7\x00\x05", "ext type"),  # {"a": ext(5, b"")}
    ],
)
def test_given_odd_maps_in_a_signed_claim_when_decoded_then_malformed_not_a_crash(tags_map, match):
    claim = _signed_alive_claim(tags_map)
    packet = craft([[MessageType.ALIVE, claim, sign(ALICE, CLAIM_CONTEXT, claim)]])
    with pytest.raises(MalformedMessage, match=match):
        codec(BOB).decode_datagram(packet, NOW_MS)


def test_given_a_float_type_code_inside_a_claim_when_decoded_then_malformed():
    claim = msgpack.packb(
        [5.0, node_id_of(ALICE), 1, [b"\x7f\x00\x00\x01", 1], {}], use_bin_type=True
    )
    packet = craft([[MessageType.ALIVE, claim, sign(ALICE, CLAIM_CONTEXT, claim)]])
    with pytest.raises(MalformedMessage, match="own type code"):
        codec(BOB).decode_datagram(packet, NOW_MS)


def test_given_a_zero_length_ext_in_an_ignored_field_when_decoded_then_malformed():
    packet = craft([[1, 7, BOB_ID, msgpack.ExtType(5, b"")]])
    with pytest.raises(MalformedMessage, match="ext type"):
        codec(BOB).decode_datagram(packet, NOW_MS)


def test_given_a_peer_that_missed_the_rotation_when_answered_with_its_key_then_it_can_open():
    old, new = CLUSTER_KEY, OTHER_KEY
    rotated = codec(ALICE, Keyring([new, old]))
    laggard = codec(BOB, Keyring([old]))
    (request,) = laggard.encode_datagrams([Ping(seq=1, target=node_id_of(ALICE))], NOW_MS)
    opened_with = rotated.decode_datagram(request, NOW_MS).key
    assert opened_with == old
    (reply,) = rotated.encode_datagrams([Ping(seq=2, target=BOB_ID)], NOW_MS, key=opened_with)
    got = laggard.decode_datagram(reply, NOW_MS)
    assert got.key == old
    assert got.envelope.fallback  # "not my primary: sealed with this key for you"
    assert not rotated.decode_datagram(request, NOW_MS).envelope.fallback
    (default,) = rotated.encode_datagrams([Ping(seq=3, target=BOB_ID)], NOW_MS)
    with pytest.raises(Undecryptable):
        laggard.decode_datagram(default, NOW_MS)


@settings(max_examples=50)
@given(st.lists(messages.filter(lambda m: _fits_datagram(m, extra=1)), min_size=1, max_size=12))
def test_given_fallback_sealing_when_packed_then_the_flag_fits_the_datagram_limit(
    batch: list[Message],
):
    old, new = CLUSTER_KEY, OTHER_KEY
    rotated = codec(ALICE, Keyring([new, old]))
    receiver = codec(BOB, Keyring([old]))
    datagrams = rotated.encode_datagrams(batch, NOW_MS, key=old)
    assert all(len(d) <= rotated.limits.max_datagram_size for d in datagrams)
    assert all(receiver.decode_datagram(d, NOW_MS).envelope.fallback for d in datagrams)
    assert _decode_all(receiver, datagrams) == batch

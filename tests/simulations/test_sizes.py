"""The simulator charges exactly the bytes the real codec produces."""

from __future__ import annotations

import random

import nacl.signing
import pytest

from nodenet.protocol.entries import create_entry
from nodenet.protocol.keyring import Keyring
from nodenet.protocol.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Entry,
    EntryAnnounce,
    EntryRequest,
    Error,
    Leave,
    MemberState,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullDigest,
    ShortPing,
    StoreSummary,
    Suspect,
    Sync,
    encode_message,
)
from nodenet.protocol.wire import WireCodec, sealed_size
from nodenet.simulations.node import EPOCH_MS, SIM_CLUSTER_KEY
from nodenet.simulations.sizes import datagram_size, frames_size, message_size

rng = random.Random(7)
KEYS = [nacl.signing.SigningKey(rng.randbytes(32)) for _ in range(3)]
ME = KEYS[0]


def messages():
    other = nacl.signing.SigningKey(rng.randbytes(32))
    v4, v6 = Address("10.1.2.3", 7950), Address("fd00::1", 65000)
    alive = Alive.create(ME, incarnation=5, address=v4, tags={"name": "n0", "rack": "a7"})
    alive6 = Alive.create(other, incarnation=300, address=v6)
    suspect = Suspect.create(ME, node=alive6.node, incarnation=300)
    dead = Dead.create(ME, node=alive6.node, incarnation=70000)
    leave = Leave.create(other, incarnation=2**40)
    entry = create_entry(ME, "k", b"v" * 3000, 123456789)
    states = tuple(
        MemberState(alive, None) if i % 2 else MemberState(alive6, None if i % 3 else suspect)
        for i in range(300)
    )
    return [
        *(Ping(seq=s, target=alive.node) for s in (0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1)),
        *(ShortPing(seq=s, target=bytes(8)) for s in (0, 127, 128, 65536, 2**32 - 1)),
        *(Ack(seq=s) for s in (1, 200, 70000)),
        Nack(seq=9),
        PingReq(seq=5, target=alive.node, address=v4, nack=True),
        PingReq(seq=500000, target=alive.node, address=v6, nack=False),
        alive,
        alive6,
        suspect,
        dead,
        leave,
        Entry(entry=entry.encoded),
        Entry(entry=b"x" * 100),
        EntryAnnounce(ids=(entry.id,) * 20),
        EntryRequest(ids=(entry.id,)),
        Sync(payload=b"s" * 70000),
        Error(code="x", message="y"),
        *(StoreSummary(fingerprint=bytes(16), count=c) for c in (0, 127, 128, 70000, 2**40)),
        PushPull(join=True, members=states),
        PushPull(join=False, members=states[:10]),
        PushPullDigest(members=tuple((bytes(8), 2**i, i % 5) for i in range(64))),
        PushPullDigest(members=((b"\xff" * 8, 0, 0),) * 4096),
    ]


@pytest.mark.parametrize("message", messages(), ids=lambda m: type(m).__name__)
def test_given_any_message_then_the_computed_size_equals_the_encoding(message):
    assert message_size(message) == len(encode_message(message))


def test_given_datagrams_then_sizes_equal_sealed_size_and_the_real_codec():
    codec = WireCodec(ME, Keyring([SIM_CLUSTER_KEY]))
    small = [m for m in messages() if len(encode_message(m)) < 300]
    for count in (1, 2, 5, 15, 16):
        batch = small[:count]
        sizes = [message_size(m) for m in batch]
        assert datagram_size(sizes, EPOCH_MS) == sealed_size(sizes, EPOCH_MS)
        (packet,) = codec.encode_datagrams(batch, EPOCH_MS)
        assert datagram_size(sizes, EPOCH_MS) == len(packet)


def test_given_tcp_messages_then_frame_count_and_bytes_equal_the_real_codec():
    codec = WireCodec(ME, Keyring([SIM_CLUSTER_KEY]))
    big = next(m for m in messages() if isinstance(m, PushPull) and m.join)
    batches = [
        [big] * 40,  # several frames of 1 MiB
        [Entry(entry=b"e" * 5000)] * 300,
        [Ping(seq=1, target=big.members[0].alive.node)],
        [],
    ]
    for batch in batches:
        frames = codec.encode_frames(batch, EPOCH_MS)
        assert frames_size([message_size(m) for m in batch], EPOCH_MS) == (
            len(frames),
            sum(len(f) for f in frames),
        )

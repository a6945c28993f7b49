"""Exact wire sizes without encoding, signing or sealing: what the daemon would send.

The simulator hands message objects around and charges each datagram and TCP frame the
bytes the real codec would produce: the msgpack encoding of every message (the 64-byte
signatures of claims and entries included, since they are part of the messages), the
envelope header, the envelope signature (64 bytes) and the seal (41 bytes), plus the 4-byte
length prefix of a frame. Computing the msgpack length from the fields is several times
cheaper than encoding; `tests/simulations/test_sizes.py` checks every formula against
`encode_message` and `WireCodec`, so the shortcut cannot drift from the real encoders.
"""

from __future__ import annotations

from collections.abc import Sequence

from nodenet.protocol.identity import SIGNATURE_LEN
from nodenet.protocol.keyring import SEAL_OVERHEAD
from nodenet.protocol.messages import (
    Ack,
    Address,
    Alive,
    Claim,
    Dead,
    Entry,
    EntryAnnounce,
    EntryRequest,
    Leave,
    Message,
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
from nodenet.protocol.wire import FRAME_HEADER

__all__ = ["DEFAULT_FRAME_LIMIT", "datagram_size", "frames_size", "message_size"]

DEFAULT_FRAME_LIMIT = 1 << 20  # WireLimits.max_frame_size


def _uint(value: int) -> int:
    if value < 0x80:
        return 1
    if value <= 0xFF:
        return 2
    if value <= 0xFFFF:
        return 3
    return 5 if value <= 0xFFFFFFFF else 9


def _bin(length: int) -> int:
    if length <= 0xFF:
        return 2 + length
    return 3 + length if length <= 0xFFFF else 5 + length


def _array(count: int) -> int:
    if count <= 15:
        return 1
    return 3 if count <= 0xFFFF else 5


def _address(address: Address) -> int:
    return 1 + (18 if ":" in address.host else 6) + _uint(address.port)


_SIGNATURE = 2 + SIGNATURE_LEN  # bin8 header + 64 bytes


def _claim(claim: Claim) -> int:
    """[type, claim bytes, signature]: as a message and inside a push-pull alike."""
    return 2 + _bin(len(claim.claim)) + _SIGNATURE


def message_size(message: Message) -> int:
    """len(encode_message(message)), computed from the fields."""
    kind = type(message)
    if kind is Ping:
        return 36 + _uint(message.seq)  # type: ignore[attr-defined]
    if kind is ShortPing:
        return 12 + _uint(message.seq)  # type: ignore[attr-defined]
    if kind is Ack or kind is Nack:
        return 2 + _uint(message.seq)  # type: ignore[attr-defined]
    if kind is Alive or kind is Suspect or kind is Dead or kind is Leave:
        return _claim(message)  # type: ignore[arg-type]
    if kind is Entry:
        return 2 + _bin(len(message.entry))  # type: ignore[attr-defined]
    if kind is Sync:
        return 2 + _bin(len(message.payload))  # type: ignore[attr-defined]
    if kind is PingReq:
        assert isinstance(message, PingReq)
        return 37 + _uint(message.seq) + _address(message.address)
    if kind is PushPull:
        assert isinstance(message, PushPull)
        # `_claim` inlined: a push-pull carries every member, so this loop is the hot one.
        total = 3 + _array(len(message.members))
        for state in message.members:
            length = len(state.alive.claim)
            total += (
                71 + length if length <= 0xFF else 72 + length if length <= 0xFFFF else 74 + length
            )
            status = state.status
            if status is None:
                total += 1
            else:
                total += _claim(status)
        return total
    if kind is PushPullDigest:
        entries = message.members  # type: ignore[attr-defined]
        # [prefix bin8, incarnation, status]: 1 + 10 + uint + 1 bytes each
        return 2 + _array(len(entries)) + sum(12 + _uint(e[1]) for e in entries)
    if kind is StoreSummary:
        return 20 + _uint(message.count)  # type: ignore[attr-defined]
    if kind is EntryAnnounce or kind is EntryRequest:
        ids = message.ids  # type: ignore[attr-defined]
        return 2 + _array(len(ids)) + 34 * len(ids)
    return len(encode_message(message))


def _fixed(now_ms: int) -> int:
    """Envelope bytes around the messages, without the message-list header."""
    return 1 + 1 + 1 + 34 + _uint(now_ms) + SIGNATURE_LEN + SEAL_OVERHEAD


def datagram_size(sizes: Sequence[int], now_ms: int) -> int:
    """The sealed datagram holding messages of these encoded sizes (`wire.sealed_size`)."""
    return _fixed(now_ms) + _array(len(sizes)) + sum(sizes)


def frames_size(
    sizes: Sequence[int], now_ms: int, limit: int = DEFAULT_FRAME_LIMIT
) -> tuple[int, int]:
    """(frames, bytes) of messages of these sizes packed greedily into TCP frames, as
    `WireCodec.encode_frames` packs them, each with its 4-byte length prefix (no messages:
    no frame)."""
    fixed = _fixed(now_ms)
    frames = total = 0
    count = size = 0
    for encoded in sizes:
        if count and fixed + _array(count + 1) + size + encoded > limit:
            frames += 1
            total += FRAME_HEADER.size + fixed + _array(count) + size
            count = size = 0
        count += 1
        size += encoded
    if count:
        frames += 1
        total += FRAME_HEADER.size + fixed + _array(count) + size
    return frames, total

"""The wire: envelopes, signing, sealing, compound datagrams and TCP frames.

Theory of operation
-------------------
Everything a node sends is an *envelope*: who sends it, when (the sender's wall clock, in
ms), and one or more messages, signed by the sender and sealed with the cluster keyring::

    packet    = 0x01 ‖ nonce(24) ‖ SecretBox(plaintext)        (keyring.py)
    plaintext = body ‖ signature(64)
    body      = msgpack [major, minor, sender(32), sent_at_ms, [message, ...] (, fallback)]
    signature = Ed25519(sender, ENVELOPE_CONTEXT ‖ body)

UDP carries one sealed envelope per datagram, at most `max_datagram_size` (1400) bytes,
filled greedily with as many messages as fit, so gossip rides on probes. TCP carries
frames: a 4-byte big-endian length, then one sealed envelope of at most `max_frame_size`.

`fallback` (minor 1) is present, `true`, only when the sender sealed with a key other than its
primary because the receiver seemed to lack the primary (a node that missed a key rotation).
A receiver never takes such a packet as a sign that the *sender* lacks its own primary:
otherwise two nodes could keep answering each other with the old key after both moved on.

Opening checks, in order: seal (any key of the ring), msgpack and envelope structure,
major version, sender signature, clock skew, then each message. Every failure is a
`RemoteProtocolError` subclass; nothing else escapes. Unknown message types are skipped
and counted, so a newer minor version can add messages without breaking older nodes.

`docs/protocol.md` is the byte-level specification with golden vectors.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack
import nacl.signing

from nodenet.protocol.errors import (
    BadSignature,
    ClockSkew,
    LocalProtocolError,
    MalformedMessage,
    TooLarge,
    UnsupportedVersion,
)
from nodenet.protocol.identity import (
    ENVELOPE_CONTEXT,
    SIGNATURE_LEN,
    CachingVerifier,
    NodeId,
    node_id_of,
    sign,
)
from nodenet.protocol.identity import verify as plain_verify
from nodenet.protocol.keyring import SEAL_OVERHEAD, ClusterKey, Keyring
from nodenet.protocol.messages import Message, Verify, decode_message, encode_message, unpack

__all__ = [
    "FRAME_HEADER",
    "MAX_ENVELOPE_OVERHEAD",
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "Envelope",
    "FrameReader",
    "Received",
    "WireCodec",
    "WireLimits",
    "sealed_size",
]

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 1
FRAME_HEADER = struct.Struct(">I")
MAX_ENVELOPE_OVERHEAD = (
    1  # array header of the body (5 fields)
    + 1  # major (positive fixint)
    + 2  # minor (uint8)
    + 2
    + 32  # sender (bin8)
    + 9  # sent_at_ms (uint64)
    + 3  # message list header (array16)
    + 1  # fallback flag (true), only on packets sealed with a non-primary key
    + SIGNATURE_LEN
    + SEAL_OVERHEAD
)
"""Upper bound on what a sealed envelope adds to its encoded messages (156 bytes); the
membership core budgets piggybacked gossip with it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WireLimits:
    """Size and time limits of the wire."""

    max_datagram_size: int = 1400
    """bytes, sealed. Fits a 1500-byte Ethernet MTU after IP/UDP headers and tunnel overhead,
    like memberlist's UDPBufferSize; larger datagrams risk IP fragmentation and loss."""

    max_frame_size: int = 1 << 20
    """bytes, sealed, per TCP frame (1 MiB). Bounds the memory one connection can pin."""

    max_clock_skew_ms: int = 5 * 60 * 1000
    """ms. Envelopes stamped further from our wall clock are refused: this bounds how long
    a captured packet can be replayed, and tells operators that a clock is badly off."""

    def __post_init__(self) -> None:
        minimum = SEAL_OVERHEAD + SIGNATURE_LEN + 64
        if not minimum <= self.max_datagram_size <= 65507:
            raise LocalProtocolError(
                f"max_datagram_size {self.max_datagram_size} must be in {minimum}..65507 bytes"
            )
        if not self.max_datagram_size <= self.max_frame_size <= 2**31:
            raise LocalProtocolError(
                f"max_frame_size {self.max_frame_size} must be in"
                f" {self.max_datagram_size}..{2**31} bytes"
            )
        if self.max_clock_skew_ms < 1000:
            raise LocalProtocolError(
                f"max_clock_skew_ms {self.max_clock_skew_ms} is below 1000 ms;"
                " ordinary NTP jitter would drop traffic"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A decoded, authenticated envelope."""

    sender: NodeId
    sent_at_ms: int
    minor: int
    messages: tuple[Message, ...]
    skipped: int = 0
    """How many messages had a type this version does not know (sent by a newer minor)."""
    fallback: bool = False
    """The sender sealed this with a key other than its primary, for us (see the module doc)."""


@dataclass(frozen=True, slots=True)
class Received:
    """An opened envelope and the cluster key that opened it."""

    envelope: Envelope
    key: ClusterKey
    size: int


class WireCodec:
    """Seals, signs, opens and verifies envelopes for one node."""

    def __init__(
        self,
        signing_key: nacl.signing.SigningKey,
        keyring: Keyring,
        *,
        limits: WireLimits | None = None,
        verify: Verify | None = None,
    ) -> None:
        self._key = signing_key
        self.node_id = node_id_of(signing_key)
        self.keyring = keyring
        """Replace with a new `Keyring` to install, use or remove cluster keys."""
        self.limits = limits or WireLimits()
        # Claims repeat (gossip, push-pull) and are worth caching; envelope signatures never
        # repeat, so they are verified directly and never push claims out of the cache.
        self._verify_claim: Verify = verify or CachingVerifier()
        self._verify_envelope: Verify = verify or plain_verify
        self._sender_header = msgpack.packb(self.node_id, use_bin_type=True)

    # --- sending --------------------------------------------------------------------------

    def envelope_overhead(self, now_ms: int) -> int:
        """Bytes a sealed envelope adds to its messages, for one-byte list headers."""
        return len(self._body_header(now_ms, 1)) + SIGNATURE_LEN + SEAL_OVERHEAD

    def _body_header(self, now_ms: int, count: int, fallback: bool = False) -> bytes:
        if not 0 <= now_ms < 2**64:
            raise LocalProtocolError(f"now_ms {now_ms} is not a uint64 millisecond timestamp")
        return b"".join(
            (
                b"\x96" if fallback else b"\x95",  # array of 6 (fallback appended) or 5
                msgpack.packb(PROTOCOL_MAJOR),
                msgpack.packb(PROTOCOL_MINOR),
                self._sender_header,
                msgpack.packb(now_ms),
                _array_header(count),
            )
        )

    def _seal(
        self, encoded: Sequence[bytes], now_ms: int, key: ClusterKey | None, fallback: bool
    ) -> bytes:
        body = self._body_header(now_ms, len(encoded), fallback) + b"".join(encoded)
        if fallback:
            body += b"\xc3"  # true
        return self.keyring.seal(body + sign(self._key, ENVELOPE_CONTEXT, body), key)

    def _pack_greedily(
        self, messages: Iterable[Message], now_ms: int, limit: int, key: ClusterKey | None
    ) -> list[bytes]:
        packets: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        fallback = key is not None and key != self.keyring.primary
        fixed = len(self._body_header(now_ms, 0)) - 1 + fallback + SIGNATURE_LEN + SEAL_OVERHEAD
        for message in messages:
            encoded = encode_message(message)
            if fixed + 1 + len(encoded) > limit:
                raise LocalProtocolError(
                    f"{message.TYPE.name} encodes to {len(encoded)} bytes and cannot fit a"
                    f" {limit}-byte packet even alone; send it over TCP or split it"
                )
            if batch and fixed + len(_array_header(len(batch) + 1)) + size + len(encoded) > limit:
                packets.append(self._seal(batch, now_ms, key, fallback))
                batch, size = [], 0
            batch.append(encoded)
            size += len(encoded)
        if batch:
            packets.append(self._seal(batch, now_ms, key, fallback))
        return packets

    def encode_datagrams(
        self, messages: Iterable[Message], now_ms: int, key: ClusterKey | None = None
    ) -> list[bytes]:
        """Seal `messages`, in order, into as few datagrams as greedy packing allows.

        `key` overrides the primary (see `Keyring.seal`: answering a peer that missed a
        key rotation)."""
        return self._pack_greedily(messages, now_ms, self.limits.max_datagram_size, key)

    def encode_frames(
        self, messages: Iterable[Message], now_ms: int, key: ClusterKey | None = None
    ) -> list[bytes]:
        """Seal `messages` into length-prefixed TCP frames, as few as greedy packing allows."""
        sealed = self._pack_greedily(messages, now_ms, self.limits.max_frame_size, key)
        return [FRAME_HEADER.pack(len(s)) + s for s in sealed]

    # --- receiving ------------------------------------------------------------------------

    def decode_datagram(self, packet: bytes, now_ms: int) -> Received:
        """Open, verify and decode one datagram, or raise a RemoteProtocolError subclass."""
        if len(packet) > self.limits.max_datagram_size:
            raise TooLarge(
                f"datagram of {len(packet)} bytes exceeds {self.limits.max_datagram_size}"
            )
        return self._open(packet, now_ms)

    def decode_frame(self, sealed: bytes, now_ms: int) -> Received:
        """Open, verify and decode the payload of one frame (from `FrameReader`)."""
        if len(sealed) > self.limits.max_frame_size:
            raise TooLarge(f"frame of {len(sealed)} bytes exceeds {self.limits.max_frame_size}")
        return self._open(sealed, now_ms)

    def _open(self, packet: bytes, now_ms: int) -> Received:
        plaintext, key = self.keyring.open(packet)
        if len(plaintext) <= SIGNATURE_LEN:
            raise MalformedMessage(f"envelope of {len(plaintext)} bytes has no room for a body")
        body, signature = plaintext[:-SIGNATURE_LEN], plaintext[-SIGNATURE_LEN:]
        fields = unpack(body, max_len=len(body))
        if not isinstance(fields, tuple) or len(fields) < 5:
            raise MalformedMessage("envelope body must be an array of at least 5 fields")
        major, minor, sender, sent_at_ms, raw_messages = fields[:5]
        if type(major) is not int:
            raise MalformedMessage(f"envelope major version {major!r:.20} is not an integer")
        if major != PROTOCOL_MAJOR:
            raise UnsupportedVersion(
                f"envelope has protocol version {major!r:.20}; this node speaks"
                f" {PROTOCOL_MAJOR}.x (upgrade the older side)"
            )
        if type(minor) is not int or not 0 <= minor <= 255:
            raise MalformedMessage(f"envelope minor version {minor!r:.20} is not in 0..255")
        if not isinstance(sender, bytes) or len(sender) != 32:
            raise MalformedMessage("envelope sender must be a 32-byte node id")
        if type(sent_at_ms) is not int or not 0 <= sent_at_ms < 2**64:
            raise MalformedMessage("envelope timestamp must be a uint64 of milliseconds")
        if not isinstance(raw_messages, tuple):
            raise MalformedMessage("envelope messages must be an array")
        sender_id = NodeId(sender)
        if not self._verify_envelope(sender_id, ENVELOPE_CONTEXT, body, signature):
            raise BadSignature(f"envelope from {sender_id.short} has an invalid signature")
        skew = sent_at_ms - now_ms
        if abs(skew) > self.limits.max_clock_skew_ms:
            raise ClockSkew(
                f"envelope from {sender_id.short} is stamped {skew / 1000:+.1f} s from our"
                f" clock (limit ±{self.limits.max_clock_skew_ms / 1000:.0f} s): a replay, or"
                " one of the two clocks is wrong (check NTP)"
            )
        messages = []
        skipped = 0
        for raw in raw_messages:
            message = decode_message(raw, self._verify_claim)
            if message is None:
                skipped += 1
            else:
                messages.append(message)
        envelope = Envelope(
            sender=sender_id,
            sent_at_ms=sent_at_ms,
            minor=minor,
            messages=tuple(messages),
            skipped=skipped,
            fallback=len(fields) > 5 and fields[5] is True,
        )
        return Received(envelope, key, len(packet))


def sealed_size(message_sizes: Sequence[int], now_ms: int) -> int:
    """Exact size of the sealed envelope holding messages of these encoded sizes (lets the
    simulator account bytes without signing and sealing)."""
    count = len(message_sizes)
    header = 1 + 1 + 1 + 34 + len(msgpack.packb(now_ms)) + len(_array_header(count))
    return header + sum(message_sizes) + SIGNATURE_LEN + SEAL_OVERHEAD


def _array_header(count: int) -> bytes:
    if count <= 15:
        return bytes((0x90 | count,))
    if count <= 0xFFFF:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


class FrameReader:
    """Splits a TCP byte stream into frame payloads (sans-IO: feed bytes, take frames).

    The length is checked against the limit as soon as the 4-byte header arrives, so a peer
    cannot make us buffer more than one maximal frame.
    """

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_frame_size: int) -> None:
        self._buffer = bytearray()
        self._max = max_frame_size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame payload, or None until more bytes arrive."""
        if len(self._buffer) < FRAME_HEADER.size:
            return None
        (length,) = FRAME_HEADER.unpack_from(self._buffer)
        if length == 0:
            raise MalformedMessage("zero-length frame")
        if length > self._max:
            raise TooLarge(f"frame header announces {length} bytes; the limit is {self._max}")
        end = FRAME_HEADER.size + length
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[FRAME_HEADER.size : end])
        del self._buffer[:end]
        return frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer)

"""A hostile peer: it holds the cluster key (or a wrong one) and its own Ed25519 key, and
speaks the wire format (docs/protocol.md) through the reference codec or raw bytes.

It sends from its own loopback address, so the daemon's per-source defences see one
source, and only ever to loopback addresses. Every flood is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack
import nacl.signing

from nodenet.protocol.identity import CLAIM_CONTEXT, ENVELOPE_CONTEXT, NodeId, node_id_of, sign
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.messages import (
    Address,
    Alive,
    Dead,
    Leave,
    MemberState,
    Message,
    Ping,
    PushPull,
    Suspect,
    encode_message,
)
from nodenet.protocol.wire import FRAME_HEADER, WireCodec

CLUSTER_KEY = ClusterKey(b"\x42" * 32)  # the key tests/support/daemons.py gives every node
WRONG_KEY = ClusterKey(b"\x43" * 32)


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: the hostile peer only attacks those")
    return host


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class FloodResult:
    sent: int
    seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class Hostile:
    """One hostile peer at `host` (a loopback address of its own)."""

    def __init__(self, host: str, *, key: nacl.signing.SigningKey | None = None) -> None:
        self.host = _loopback(host)
        self.key = key or nacl.signing.SigningKey.generate()
        self.id: NodeId = node_id_of(self.key)
        self.ring = Keyring([CLUSTER_KEY])
        self.codec = WireCodec(self.key, self.ring)
        self.wrong = WireCodec(self.key, Keyring([WRONG_KEY]))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.port = self.udp.getsockname()[1]
        self.address = Address(host, self.port)

    def close(self) -> None:
        self.udp.close()

    def __enter__(self) -> Hostile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answers(self, wait: float = 0.5) -> int:
        """Datagrams received so far (answers to what we sent), waiting up to `wait` s."""
        count = 0
        self.udp.settimeout(wait)
        with contextlib.suppress(OSError):
            while True:
                self.udp.recv(65536)
                count += 1
                self.udp.settimeout(0.05)
        return count

    # --- building packets -------------------------------------------------------------

    def datagram(self, messages: Sequence[Message], *, at_ms: int | None = None) -> bytes:
        """A valid datagram from us (our key, the cluster key)."""
        (packet,) = self.codec.encode_datagrams(messages, at_ms if at_ms is not None else now_ms())
        return packet

    def raw(
        self,
        messages: list[object],
        *,
        signer: nacl.signing.SigningKey | None = None,
        sender: bytes | None = None,
        at_ms: int | None = None,
        ring: Keyring | None = None,
        corrupt_signature: bool = False,
        major: int = 1,
    ) -> bytes:
        """An envelope built from raw msgpack parts (claims already encoded as messages)."""
        signer = signer or self.key
        body = msgpack.packb(
            [major, 0, sender or bytes(node_id_of(signer)), at_ms or now_ms(), messages],
            use_bin_type=True,
        )
        signature = sign(signer, ENVELOPE_CONTEXT, body)
        if corrupt_signature:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        return (ring or self.ring).seal(body + signature)

    def forged_envelope(self, victim: NodeId, messages: Sequence[Message]) -> bytes:
        """An envelope that claims to come from `victim` but is signed with our key."""
        parts = [msgpack.unpackb(encode_message(m)) for m in messages]
        return self.raw(parts, sender=bytes(victim))

    def ping(self, target: NodeId, seq: int = 1, **kw: int) -> bytes:
        return self.datagram([Ping(seq=seq, target=target)], **kw)

    def alive_of_self(self, incarnation: int = 1) -> Alive:
        return Alive.create(self.key, incarnation=incarnation, address=self.address, tags={})

    def accusation(self, kind: type[Suspect] | type[Dead], node: NodeId, incarnation: int):
        """A SUSPECT or DEAD about `node`, honestly signed by us as the accuser."""
        return kind.create(self.key, node=node, incarnation=incarnation)

    def forged_claim(self, kind: str, node: NodeId, incarnation: int, address: Address) -> bytes:
        """An ALIVE or LEAVE about `node` signed with *our* key: the claim signature fails."""
        if kind == "alive":
            wire_address = [ipaddress.ip_address(address.host).packed, address.port]
            claim = msgpack.packb(
                [5, bytes(node), incarnation, wire_address, {}], use_bin_type=True
            )
            code = 5
        else:
            claim = msgpack.packb([8, bytes(node), incarnation], use_bin_type=True)
            code = 8
        return self.raw([[code, claim, sign(self.key, CLAIM_CONTEXT, claim)]])

    # --- sending ----------------------------------------------------------------------

    def send(self, packet: bytes, to: tuple[str, int]) -> None:
        self.udp.sendto(packet, (_loopback(to[0]), to[1]))

    def send_many(self, packets: Iterable[bytes], to: tuple[str, int]) -> int:
        count = 0
        for packet in packets:
            with contextlib.suppress(OSError):
                self.udp.sendto(packet, (_loopback(to[0]), to[1]))
                count += 1
        return count

    def flood(
        self,
        pool: Sequence[bytes],
        to: tuple[str, int],
        *,
        rate: float,
        seconds: float,
        max_count: int,
    ) -> FloodResult:
        """Send datagrams from `pool` round robin at `rate` per second for at most `seconds`
        and at most `max_count` datagrams: bounded in count and in time."""
        target = (_loopback(to[0]), to[1])
        sent = errors = 0
        start = time.monotonic()
        deadline = start + seconds
        burst = max(1, int(rate / 200))  # pace in 5 ms slices
        i = 0
        while sent < max_count:
            now = time.monotonic()
            if now >= deadline:
                break
            due = min(max_count, int((now - start) * rate) + burst)
            while sent < due:
                try:
                    self.udp.sendto(pool[i % len(pool)], target)
                    sent += 1
                except OSError:
                    errors += 1
                    sent += 1
                i += 1
            time.sleep(0.004)
        return FloodResult(sent, time.monotonic() - start, errors)

    # --- TCP ----------------------------------------------------------------------------

    def tcp(self, to: tuple[str, int], timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(
            (_loopback(to[0]), to[1]), timeout=timeout, source_address=(self.host, 0)
        )
        return sock

    def frame(self, messages: Sequence[Message]) -> bytes:
        (frame,) = self.codec.encode_frames(messages, now_ms())
        return frame

    def exchange(self, to: tuple[str, int], payload: bytes, timeout: float = 5.0) -> bytes:
        """Send raw bytes, half-close, read until the peer closes (what it answered)."""
        with self.tcp(to, timeout) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks)

    def push_pull(self, join: bool = True) -> bytes:
        """A frame holding our own PUSH_PULL (we pretend to join)."""
        return self.frame([PushPull(join=join, members=(MemberState(self.alive_of_self()),))])


def frame_header(length: int) -> bytes:
    return FRAME_HEADER.pack(length)


def garbage(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def leave_of(key: nacl.signing.SigningKey, incarnation: int) -> Leave:
    return Leave.create(key, incarnation=incarnation)


def frame_of(packet: bytes) -> bytes:
    return struct.pack(">I", len(packet)) + packet


# --- mutation of decoded msgpack trees (the fuzzers re-sign what they mutate) -------------

REPLACEMENTS = [
    None, True, -1, 0, 2**32, 2**63, 2**64 - 1, 1.5,
    "", "x" * 40, "k" * 300, "a\x00b", "é",
    b"", b"\x00" * 32, b"\x00" * 33, [], {},
]  # fmt: skip
INSERTIONS = [0, "", "x", b"", b"y", [1], [1, 2], {"k": "v"}]


def mutate_tree(rng: random.Random, value: object) -> object:
    """Replace, drop, add, flip a bit in, or recurse into one part of a decoded msgpack
    tree; bytes are truncated and integers nudged to their edges."""
    if isinstance(value, list) and value:
        value = list(value)
        i = rng.randrange(len(value))
        action = rng.randrange(5)
        if action == 0:
            value[i] = rng.choice(REPLACEMENTS)
        elif action == 1:
            del value[i]
        elif action == 2:
            value.insert(i, rng.choice(INSERTIONS))
        elif action == 3 and isinstance(value[i], bytes) and value[i]:
            data = bytearray(value[i])
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            value[i] = bytes(data)
        else:
            value[i] = mutate_tree(rng, value[i])
        return value
    if isinstance(value, bytes) and value:
        return value[: rng.randrange(len(value))]
    if isinstance(value, int) and not isinstance(value, bool):
        return rng.choice([0, 1, -1, 2**64 - 1, 2**63, value + 1])
    return value

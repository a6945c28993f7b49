"""Fixed keys, codecs, and a raw envelope builder for crafting hostile packets."""

from __future__ import annotations

from typing import Any

import msgpack
import nacl.signing

from nodenet.protocol.identity import ENVELOPE_CONTEXT, node_id_of, sign
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.wire import WireCodec, WireLimits

NOW_MS = 1_764_000_000_000  # a fixed wall-clock time (late 2025) for deterministic tests
ALICE = nacl.signing.SigningKey(b"\x01" * 32)
BOB = nacl.signing.SigningKey(b"\x02" * 32)
MALLORY = nacl.signing.SigningKey(b"\x03" * 32)
CLUSTER_KEY = ClusterKey(b"\x42" * 32)
OTHER_KEY = ClusterKey(b"\x43" * 32)


def codec(
    key: nacl.signing.SigningKey = ALICE, ring: Keyring | None = None, **limits: Any
) -> WireCodec:
    """A codec for `key` on the test cluster key."""
    return WireCodec(
        key, ring or Keyring([CLUSTER_KEY]), limits=WireLimits(**limits) if limits else None
    )


def craft(
    messages: list[Any],
    *,
    signer: nacl.signing.SigningKey = ALICE,
    sender: bytes | None = None,
    major: Any = 1,
    minor: Any = 0,
    sent_at_ms: Any = NOW_MS,
    extra: tuple[Any, ...] = (),
    ring: Keyring | None = None,
) -> bytes:
    """Seal an envelope built from raw msgpack-able parts, signed by `signer`."""
    body = msgpack.packb(
        [
            major,
            minor,
            sender if sender is not None else node_id_of(signer),
            sent_at_ms,
            messages,
            *extra,
        ],
        use_bin_type=True,
    )
    return (ring or Keyring([CLUSTER_KEY])).seal(body + sign(signer, ENVELOPE_CONTEXT, body))


def seal_plaintext(plaintext: bytes, ring: Keyring | None = None) -> bytes:
    """Seal arbitrary bytes with the test cluster key (to reach the decoder behind the seal)."""
    return (ring or Keyring([CLUSTER_KEY])).seal(plaintext)

"""Cluster keys as text, checked without libsodium.

The API-only key commands (`nodenet keys install/use`) must not import nacl (DESIGN §5:
quick commands stay quick), yet should reject a mistyped key before sending it and name
keys by the same id the daemon logs. These mirror `nodenet.protocol.keyring.ClusterKey`
(`from_text` and `key_id`); a test checks that the two agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = ["KEY_LEN", "check_key_text", "key_id"]

KEY_LEN = 32


def check_key_text(text: str) -> bytes:
    """The 32 raw bytes of a base64 cluster key; ValueError saying what is wrong."""
    text = text.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(
            "not a base64 cluster key; generate one with `nodenet keys generate`"
        ) from None
    if len(raw) != KEY_LEN:
        raise ValueError(
            f"decodes to {len(raw)} bytes, a cluster key is {KEY_LEN} (44 base64 characters)"
        )
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64; was it mistyped?")
    return raw


def key_id(raw: bytes) -> str:
    """The 8-hex-character id naming a key in logs and `keys list` (as ClusterKey.key_id)."""
    return hashlib.blake2b(raw, digest_size=4, person=b"nodenet-key-id").hexdigest()

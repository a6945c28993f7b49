"""Store entries: signed (key, value) records, their encoding, validation and LWW order.

An entry is what `nodenet submit` writes and every member stores: a UTF-8 key, a byte
value, the author's node id, a hybrid logical clock value and flags (a tombstone marks a
delete), signed by the author. Its id is BLAKE2b-256 of the signed encoding, so equal ids
mean byte-identical entries and a relay cannot alter one without changing its id.

Encoding (docs/protocol.md, "Store entries")::

    entry = msgpack [body: bin, signature: bin(64)]
    body  = msgpack [1, key: str, value: bin, author: bin(32), hlc: uint64, flags: uint]
    signature = Ed25519(author, ENTRY_CONTEXT ‖ body)
    id    = BLAKE2b-256(entry)

Conflicts resolve by last writer wins on `(hlc, author, id)`: a total order, so every
replica that has seen the same entries picks the same head for every key, in any order of
arrival. Decoding is total: valid entry or a `RemoteProtocolError` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nacl.signing

from nodenet.protocol.errors import (
    BadSignature,
    FromTheFuture,
    LocalProtocolError,
    MalformedMessage,
    TooLarge,
)
from nodenet.protocol.hlc import hlc_millis
from nodenet.protocol.identity import ENTRY_CONTEXT, SIGNATURE_LEN, NodeId, node_id_of, sign
from nodenet.protocol.messages import Verify, unpack

__all__ = [
    "DEFAULT_MAX_VALUE",
    "ENTRY_ID_LEN",
    "FLAG_TOMBSTONE",
    "MAX_FUTURE_MS",
    "MAX_KEY_BYTES",
    "MAX_VALUE_LIMIT",
    "SignedEntry",
    "ValueTooLarge",
    "check_key",
    "create_entry",
    "decode_entry",
    "entry_id",
    "supersedes",
]

ENTRY_VERSION = 1
MAX_KEY_BYTES = 256
DEFAULT_MAX_VALUE = 64 * 1024
MAX_VALUE_LIMIT = 1024 * 1024
"""The largest `max_value` a cluster may configure: entries travel whole in one frame."""
FLAG_TOMBSTONE = 0x01
KNOWN_FLAGS = FLAG_TOMBSTONE
MAX_FUTURE_MS = 60_000
"""Entries stamped more than this ahead of our clock are refused: one bad clock (or a
forger) must not be able to win every conflict for the next year."""
ENTRY_ID_LEN = 32
_ENCODING_SLACK = 512  # msgpack headers, key, author, hlc and signature around the value
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # C0 controls and DEL


class ValueTooLarge(LocalProtocolError):
    """The value is larger than the cluster's `store.max_value`."""


@dataclass(frozen=True, slots=True)
class SignedEntry:
    """A verified entry."""

    key: str
    value: bytes = field(repr=False)
    author: NodeId
    hlc: int
    flags: int
    signature: bytes = field(repr=False)
    encoded: bytes = field(repr=False)
    """The exact signed bytes: what is stored, sent, and hashed into `id`."""
    id: bytes = field(repr=False)

    @property
    def tombstone(self) -> bool:
        """Whether this entry deletes its key."""
        return bool(self.flags & FLAG_TOMBSTONE)

    @property
    def order(self) -> tuple[int, bytes, bytes]:
        """The last-writer-wins order: the greatest entry for a key is its head."""
        return (self.hlc, self.author, self.id)


def entry_id(encoded: bytes) -> bytes:
    """BLAKE2b-256 of an entry's signed encoding."""
    return hashlib.blake2b(encoded, digest_size=ENTRY_ID_LEN).digest()


def supersedes(new: SignedEntry, old: SignedEntry) -> bool:
    """Whether `new` replaces `old` as the head of their key."""
    return new.order > old.order


def check_key(key: object) -> str:
    """`key` if it is a valid entry key (UTF-8, 1-256 bytes, no control characters), else
    LocalProtocolError saying why."""
    if not isinstance(key, str):
        raise LocalProtocolError("an entry key is text")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"key is not valid UTF-8 text ({exc.reason})") from exc
    if not encoded or len(encoded) > MAX_KEY_BYTES:
        raise LocalProtocolError(
            f"key must be 1-{MAX_KEY_BYTES} bytes of UTF-8, got {len(encoded)}"
        )
    if _CONTROL.search(key):
        raise LocalProtocolError("key must not contain control characters")
    return key


def create_entry(
    signing_key: nacl.signing.SigningKey,
    key: str,
    value: bytes,
    hlc: int,
    *,
    tombstone: bool = False,
    max_value: int = DEFAULT_MAX_VALUE,
) -> SignedEntry:
    """Sign a new entry (a tombstone has an empty value)."""
    check_key(key)
    if not isinstance(value, bytes):
        raise LocalProtocolError("an entry value is bytes")
    if tombstone and value:
        raise LocalProtocolError("a tombstone has no value")
    if len(value) > max_value:
        raise ValueTooLarge(
            f"value is {len(value)} bytes; the limit is {max_value} (store.max_value)"
        )
    if not 0 <= hlc < 2**64:
        raise LocalProtocolError(f"hlc {hlc} is not a 64-bit value")
    author = node_id_of(signing_key)
    flags = FLAG_TOMBSTONE if tombstone else 0
    body = msgpack.packb([ENTRY_VERSION, key, value, author, hlc, flags], use_bin_type=True)
    signature = sign(signing_key, ENTRY_CONTEXT, body)
    encoded = msgpack.packb([body, signature], use_bin_type=True)
    return SignedEntry(key, value, author, hlc, flags, signature, encoded, entry_id(encoded))


def decode_entry(data: bytes, *, now_ms: int, max_value: int, verify: Verify) -> SignedEntry:
    """Decode and verify an entry from a peer or a client, or raise RemoteProtocolError."""
    limit = max_value + _ENCODING_SLACK
    if len(data) > limit:
        raise TooLarge(f"entry of {len(data)} bytes is over the limit for {max_value}-byte values")
    outer = unpack(data, max_len=len(data))
    if not (isinstance(outer, tuple) and len(outer) == 2):
        raise MalformedMessage("an entry is [body, signature]")
    body, signature = outer
    if not isinstance(body, bytes) or not isinstance(signature, bytes):
        raise MalformedMessage("entry body and signature must be bytes")
    if len(signature) != SIGNATURE_LEN:
        raise MalformedMessage(f"entry signature must be {SIGNATURE_LEN} bytes")
    try:
        fields: Any = msgpack.unpackb(
            body,
            use_list=False,
            raw=False,
            strict_map_key=True,
            max_bin_len=len(body),
            max_str_len=len(body),
            max_array_len=16,
            max_map_len=0,
            max_ext_len=0,
        )
    except UnicodeDecodeError as exc:
        raise MalformedMessage("entry key is not valid UTF-8") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"entry body is not valid msgpack: {exc}") from exc
    if not (isinstance(fields, tuple) and len(fields) >= 6):
        raise MalformedMessage("entry body must be [version, key, value, author, hlc, flags]")
    version, key, value, author, hlc, flags = fields[:6]
    if version != ENTRY_VERSION or type(version) is not int:
        raise MalformedMessage(f"entry version {version!r:.20} is not {ENTRY_VERSION}")
    try:
        check_key(key)
    except LocalProtocolError as exc:
        raise MalformedMessage(f"entry {exc}") from None
    if not isinstance(value, bytes):
        raise MalformedMessage("entry value must be bytes")
    if len(value) > max_value:
        raise TooLarge(f"entry value is {len(value)} bytes; this cluster allows {max_value}")
    if not isinstance(author, bytes) or len(author) != 32:
        raise MalformedMessage("entry author must be a 32-byte node id")
    if type(hlc) is not int or not 0 <= hlc < 2**64:
        raise MalformedMessage("entry hlc must be a uint64")
    if type(flags) is not int or flags & ~KNOWN_FLAGS or flags < 0:
        raise MalformedMessage(f"entry flags {flags!r:.20} has unknown bits")
    if flags & FLAG_TOMBSTONE and value:
        raise MalformedMessage("a tombstone entry must have an empty value")
    node = NodeId(author)
    if not verify(node, ENTRY_CONTEXT, body, signature):
        raise BadSignature(f"entry {key!r} is not signed by its author {node.short}")
    ahead = hlc_millis(hlc) - now_ms
    if ahead > MAX_FUTURE_MS:
        raise FromTheFuture(
            f"entry {key!r} by {node.short} is stamped {ahead / 1000:.0f} s in the future"
            f" (limit {MAX_FUTURE_MS // 1000} s): the author's clock is wrong"
        )
    canonical = msgpack.packb([body, signature], use_bin_type=True)
    if canonical != data:
        raise MalformedMessage("entry is not in canonical encoding")
    return SignedEntry(key, value, node, hlc, flags, signature, data, entry_id(data))

"""Node identity: Ed25519 keys, node ids, and the node key file format.

A node *is* its Ed25519 public key. `NodeId` is those 32 bytes; people see it as lowercase
base32 without padding (52 characters) or as its first 10 characters where that is
unambiguous. Names and addresses are tags that may change; the id never does.

The key file holds the 32-byte seed of the signing key as one text line. This module only
formats and parses it and decides whether a file mode is acceptable; reading and writing
the file is the daemon's job (`nodenet.daemon.keyfile`), because `protocol/` does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict
from collections.abc import Iterable

import nacl.exceptions
import nacl.signing

from nodenet.protocol.errors import LocalProtocolError

__all__ = [
    "CLAIM_CONTEXT",
    "ENTRY_CONTEXT",
    "ENVELOPE_CONTEXT",
    "KEY_FILE_TAG",
    "SHORT_ID_LEN",
    "SIGNATURE_LEN",
    "CachingVerifier",
    "KeyFileError",
    "NodeId",
    "check_key_file_mode",
    "format_key_file",
    "generate_signing_key",
    "node_id_of",
    "parse_key_file",
    "resolve_node_id",
    "short_ids",
    "sign",
    "verify",
]

NODE_ID_LEN = 32
TEXT_ID_LEN = 52  # ceil(256 / 5) base32 characters, padding removed
SHORT_ID_LEN = 10  # 50 bits: collisions are negligible below millions of nodes
KEY_FILE_TAG = "nodenet-ed25519-seed-v1"
SEED_LEN = 32


class NodeId(bytes):
    """The 32-byte Ed25519 public key that identifies a node."""

    __slots__ = ()

    def __new__(cls, raw: bytes) -> NodeId:
        if len(raw) != NODE_ID_LEN:
            raise LocalProtocolError(f"a node id is {NODE_ID_LEN} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def from_text(cls, text: str) -> NodeId:
        """Parse the 52-character base32 form (either case)."""
        cleaned = text.strip()
        if len(cleaned) != TEXT_ID_LEN:
            raise LocalProtocolError(
                f"node id {text!r}: expected {TEXT_ID_LEN} base32 characters, got {len(cleaned)}"
                " (a short id needs resolving against known nodes: resolve_node_id)"
            )
        try:
            raw = base64.b32decode(cleaned.upper() + "====")
        except binascii.Error as exc:
            raise LocalProtocolError(f"node id {text!r} is not base32 (a-z, 2-7)") from exc
        node = cls(raw)
        if node.text != cleaned.lower():
            raise LocalProtocolError(
                f"node id {text!r} is not in canonical form (its last character must be"
                f" {node.text[-1]!r}); was it mistyped?"
            )
        return node

    @property
    def text(self) -> str:
        """The full lowercase base32 form."""
        return base64.b32encode(self).decode("ascii").rstrip("=").lower()

    @property
    def short(self) -> str:
        """The first `SHORT_ID_LEN` characters; see `short_ids` for a guaranteed-unique form."""
        return self.text[:SHORT_ID_LEN]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"NodeId({self.short}…)"


def short_ids(ids: Iterable[NodeId], min_len: int = SHORT_ID_LEN) -> dict[NodeId, str]:
    """Shortest prefix (at least `min_len` characters) that tells each id from all others."""
    texts = {node: node.text for node in ids}
    ordered = sorted(texts.values())
    needed: dict[str, int] = {}
    for i, text in enumerate(ordered):
        length = min_len
        for j in (i - 1, i + 1):
            if 0 <= j < len(ordered):
                other = ordered[j]
                common = next(
                    (k for k, (a, b) in enumerate(zip(text, other, strict=True)) if a != b),
                    len(text),
                )
                length = max(length, common + 1)
        needed[text] = min(length, TEXT_ID_LEN)
    return {node: text[: needed[text]] for node, text in texts.items()}


def resolve_node_id(prefix: str, known: Iterable[NodeId]) -> NodeId:
    """Find the one known node whose text id starts with `prefix`, or say why not."""
    wanted = prefix.strip().lower()
    if not wanted:
        raise LocalProtocolError("empty node id prefix")
    matches = [node for node in known if node.text.startswith(wanted)]
    if not matches:
        raise LocalProtocolError(f"no known node id starts with {prefix!r}")
    if len(matches) > 1:
        shown = ", ".join(sorted(n.text[: len(wanted) + 2] for n in matches)[:5])
        raise LocalProtocolError(
            f"node id prefix {prefix!r} is ambiguous ({len(matches)} nodes: {shown}…);"
            " give more characters"
        )
    return matches[0]


def generate_signing_key() -> nacl.signing.SigningKey:
    """A new random Ed25519 signing key (libsodium's CSPRNG)."""
    return nacl.signing.SigningKey.generate()


def node_id_of(key: nacl.signing.SigningKey) -> NodeId:
    """The node id (public key) of a signing key."""
    return NodeId(bytes(key.verify_key))


class KeyFileError(LocalProtocolError):
    """A node key file is unsafe or unreadable; the message says what to do."""


def format_key_file(key: nacl.signing.SigningKey) -> bytes:
    """The text content of a key file for `key`."""
    seed = base64.b64encode(bytes(key)).decode("ascii")
    return (
        "# nodenet node key: the secret half of this node's identity. Keep it mode 0600.\n"
        f"# node id: {node_id_of(key).text}\n"
        f"{KEY_FILE_TAG} {seed}\n"
    ).encode("ascii")


def parse_key_file(content: bytes, path: str) -> nacl.signing.SigningKey:
    """Parse key file content; `path` is only used in error messages."""
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError as exc:
        raise KeyFileError(
            f"key file {path}: not a nodenet key file (contains non-ASCII bytes);"
            " restore it from a backup or move it away to create a new identity"
        ) from exc
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != 1:
        raise KeyFileError(
            f"key file {path}: expected exactly one '{KEY_FILE_TAG} <base64>' line,"
            f" found {len(lines)} non-comment lines"
        )
    tag, _, seed_text = lines[0].partition(" ")
    if tag != KEY_FILE_TAG:
        raise KeyFileError(
            f"key file {path}: unknown format {tag[:40]!r} (expected {KEY_FILE_TAG!r})"
        )
    try:
        seed = base64.b64decode(seed_text.strip(), validate=True)
    except binascii.Error as exc:
        raise KeyFileError(f"key file {path}: the seed is not valid base64") from exc
    if len(seed) != SEED_LEN:
        raise KeyFileError(f"key file {path}: the seed is {len(seed)} bytes, expected 32")
    if base64.b64encode(seed).decode("ascii") != seed_text.strip():
        raise KeyFileError(f"key file {path}: the seed is not canonical base64 (altered?)")
    return nacl.signing.SigningKey(seed)


def check_key_file_mode(mode: int, path: str) -> None:
    """Refuse a key file that anyone but its owner may read or write."""
    loose = mode & 0o077
    if loose:
        raise KeyFileError(
            f"key file {path} has mode {mode & 0o777:04o}: group/other may access it"
            f" (mask {loose:03o}); run `chmod 600 {path}` (and consider the key leaked"
            " if others could read it)"
        )


# --- signatures -------------------------------------------------------------------------
# Every signature covers a context string and then the data, so a signature made for one
# purpose (an envelope, a membership claim, a store entry) can never be replayed as another.

SIGNATURE_LEN = 64
ENVELOPE_CONTEXT = b"nodenet/envelope/v1\x00"
CLAIM_CONTEXT = b"nodenet/claim/v1\x00"
ENTRY_CONTEXT = b"nodenet/entry/v1\x00"


def sign(key: nacl.signing.SigningKey, context: bytes, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of `context ‖ data`."""
    return key.sign(context + data).signature


def verify(signer: NodeId, context: bytes, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is `signer`'s signature of `context ‖ data`."""
    try:
        nacl.signing.VerifyKey(signer).verify(context + data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


class CachingVerifier:
    """`verify` that remembers recent good signatures.

    Gossip relays the same claim to a node several times (retransmit limit × fan-in) and
    push-pull repeats every claim a node already holds; caching by signature turns those
    repeats into one dictionary lookup and a BLAKE2b digest instead of an Ed25519 verify.
    Only successes are cached, keyed by the signature and bound to a digest of signer,
    context and data, so a cached entry can never make a different message pass.
    """

    __slots__ = ("_capacity", "_good", "hits", "misses")

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._good: OrderedDict[bytes, bytes] = OrderedDict()  # least recently used first
        self.hits = 0
        self.misses = 0

    def __call__(self, signer: NodeId, context: bytes, data: bytes, signature: bytes) -> bool:
        digest = hashlib.blake2b(signer + context + data, digest_size=16).digest()
        if self._good.get(signature) == digest:
            self._good.move_to_end(signature)
            self.hits += 1
            return True
        self.misses += 1
        if not verify(signer, context, data, signature):
            return False
        if len(self._good) >= self._capacity:
            self._good.popitem(last=False)
        self._good[signature] = digest
        return True

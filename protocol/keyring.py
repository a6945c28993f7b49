"""The cluster keyring: symmetric keys that seal every datagram and TCP frame.

Every packet is sealed with the *primary* key (XSalsa20-Poly1305 SecretBox, random nonce)
and opened with whichever installed key works, so a cluster rotates keys the way Serf does:
`install` a new key everywhere, `use` it (make it primary) everywhere, then `remove` the
old one. A node that was offline during the rotation still talks to the others as long as
they keep the old key installed; `open` reports which key worked so the daemon can log it.

Sealed layout: ``0x01 ‖ nonce (24 bytes) ‖ MAC (16 bytes) ‖ ciphertext`` (libsodium's
`crypto_secretbox_easy` layout: the authenticator comes before the ciphertext).
A `Keyring` is immutable: every change returns a new ring, so a driver swaps it atomically.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.secret
import nacl.utils

from nodenet.protocol.errors import LocalProtocolError, Undecryptable

__all__ = [
    "KEY_LEN",
    "SEAL_OVERHEAD",
    "SEAL_VERSION",
    "ClusterKey",
    "Keyring",
    "NonceSource",
]

KEY_LEN = nacl.secret.SecretBox.KEY_SIZE  # 32
NONCE_LEN = nacl.secret.SecretBox.NONCE_SIZE  # 24
MAC_LEN = nacl.secret.SecretBox.MACBYTES  # 16
SEAL_VERSION = 1
SEAL_OVERHEAD = 1 + NONCE_LEN + MAC_LEN  # 41 bytes added to every plaintext

NonceSource = Callable[[int], bytes]
"""Returns n random bytes. Injected so golden vectors can fix the nonce; the default is
libsodium's CSPRNG, which is the only acceptable source outside tests."""


@dataclass(frozen=True, slots=True)
class ClusterKey:
    """One 32-byte cluster key; `key_id` is a short fingerprint safe to log."""

    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise LocalProtocolError(f"a cluster key is {KEY_LEN} bytes, got {len(self.raw)}")

    @classmethod
    def generate(cls, nonce_source: NonceSource = nacl.utils.random) -> ClusterKey:
        """A new random key."""
        return cls(nonce_source(KEY_LEN))

    @classmethod
    def from_text(cls, text: str) -> ClusterKey:
        """Parse the base64 form (44 characters, as `nodenet keys` prints and Serf uses)."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
            raise LocalProtocolError(
                "cluster key is not valid base64; generate one with `nodenet keys generate`"
            ) from exc
        if len(raw) != KEY_LEN:
            raise LocalProtocolError(
                f"cluster key decodes to {len(raw)} bytes, expected {KEY_LEN}"
                " (44 base64 characters)"
            )
        key = cls(raw)
        if key.text != text.strip():
            raise LocalProtocolError("cluster key is not canonical base64; was it mistyped?")
        return key

    @property
    def text(self) -> str:
        """The base64 form; this is the secret itself."""
        return base64.b64encode(self.raw).decode("ascii")

    @property
    def key_id(self) -> str:
        """8 hex characters naming the key in logs and `keys list` without revealing it."""
        return hashlib.blake2b(self.raw, digest_size=4, person=b"nodenet-key-id").hexdigest()

    def __repr__(self) -> str:
        return f"ClusterKey({self.key_id})"


class Keyring:
    """An ordered set of cluster keys; the first is the primary used for sealing."""

    __slots__ = ("_boxes", "_keys", "_nonce_source")

    def __init__(
        self, keys: Sequence[ClusterKey], *, nonce_source: NonceSource = nacl.utils.random
    ) -> None:
        if not keys:
            raise LocalProtocolError("a keyring needs at least one cluster key")
        unique = tuple(dict.fromkeys(keys))
        if len(unique) != len(keys):
            raise LocalProtocolError("the keyring lists the same cluster key twice")
        self._keys = unique
        self._boxes = tuple(nacl.secret.SecretBox(k.raw) for k in unique)
        self._nonce_source = nonce_source

    @property
    def primary(self) -> ClusterKey:
        """The key every outgoing packet is sealed with."""
        return self._keys[0]

    @property
    def keys(self) -> tuple[ClusterKey, ...]:
        """All installed keys, primary first."""
        return self._keys

    def _replace(self, keys: Sequence[ClusterKey]) -> Keyring:
        return Keyring(keys, nonce_source=self._nonce_source)

    def install(self, key: ClusterKey) -> Keyring:
        """Add `key` as a secondary key (no change if it is already installed)."""
        if key in self._keys:
            return self
        return self._replace((*self._keys, key))

    def use(self, key: ClusterKey) -> Keyring:
        """Make an installed key the primary."""
        if key not in self._keys:
            raise LocalProtocolError(
                f"cluster key {key.key_id} is not installed; install it on every node first"
            )
        return self._replace((key, *(k for k in self._keys if k != key)))

    def remove(self, key: ClusterKey) -> Keyring:
        """Remove a secondary key; the primary cannot be removed."""
        if key not in self._keys:
            raise LocalProtocolError(f"cluster key {key.key_id} is not installed")
        if key == self.primary:
            raise LocalProtocolError(
                f"cluster key {key.key_id} is the primary; `use` another key before removing it"
            )
        return self._replace(tuple(k for k in self._keys if k != key))

    def seal(self, plaintext: bytes, key: ClusterKey | None = None) -> bytes:
        """Encrypt and authenticate `plaintext` with the primary key, or with `key`.

        Replies to a peer whose packets only an older installed key opens should be sealed
        with that key: the peer missed the rotation and cannot open the new primary yet.
        """
        box = self._boxes[0]
        if key is not None and key != self._keys[0]:
            try:
                box = self._boxes[self._keys.index(key)]
            except ValueError:
                raise LocalProtocolError(f"cluster key {key.key_id} is not installed") from None
        nonce = self._nonce_source(NONCE_LEN)
        if len(nonce) != NONCE_LEN:
            raise LocalProtocolError(f"nonce source returned {len(nonce)} bytes, not {NONCE_LEN}")
        return bytes((SEAL_VERSION,)) + box.encrypt(plaintext, nonce)

    def open(self, packet: bytes) -> tuple[bytes, ClusterKey]:
        """Decrypt `packet` with the first key that authenticates it; report that key."""
        if len(packet) < SEAL_OVERHEAD:
            raise Undecryptable(
                f"packet of {len(packet)} bytes is shorter than the {SEAL_OVERHEAD}-byte seal"
            )
        if packet[0] != SEAL_VERSION:
            raise Undecryptable(
                f"packet starts with 0x{packet[0]:02x}, not seal version 0x{SEAL_VERSION:02x}"
                " (not a nodenet packet, or a newer format)"
            )
        body = packet[1:]
        for key, box in zip(self._keys, self._boxes, strict=True):
            try:
                return box.decrypt(body), key
            except nacl.exceptions.CryptoError:
                continue
        raise Undecryptable(
            f"none of the {len(self._keys)} installed cluster keys opens this packet"
            " (the sender uses another cluster key, or the packet was altered)"
        )

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary.key_id}, keys={[k.key_id for k in self._keys]})"

    # --- the keyring file format (reading and writing the file is the daemon's job) --------

    def to_text(self) -> str:
        """The keyring file: one base64 key per line, primary first (a secret: mode 0600)."""
        lines = ["# nodenet cluster keyring: one key per line, the first is the primary."]
        lines.extend(f"{k.text}  # key id {k.key_id}" for k in self._keys)
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(
        cls, text: str, where: str, *, nonce_source: NonceSource = nacl.utils.random
    ) -> Keyring:
        """Parse a keyring file (`where` names it in errors)."""
        keys = []
        for number, line in enumerate(text.splitlines(), 1):
            content = line.split("#", 1)[0].strip()
            if not content:
                continue
            try:
                keys.append(ClusterKey.from_text(content))
            except LocalProtocolError as exc:
                raise LocalProtocolError(f"{where} line {number}: {exc}") from None
        if not keys:
            raise LocalProtocolError(
                f"{where} holds no cluster key; add one (`nodenet keys generate`) or run"
                " `nodenet init`"
            )
        try:
            return cls(keys, nonce_source=nonce_source)
        except LocalProtocolError as exc:
            raise LocalProtocolError(f"{where}: {exc}") from None

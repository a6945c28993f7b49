"""Errors of the protocol core: who is at fault is part of the type.

`LocalProtocolError` means the caller (our own code, our own config) did something wrong.
`RemoteProtocolError` means a peer sent bad, forged, stale or oversized data: the driver
drops it, counts it under `reason` (a short, stable metrics label) and carries on. Decoding
never raises anything else, so a driver needs exactly one `except` around it.
"""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "ClockSkew",
    "FromTheFuture",
    "LocalProtocolError",
    "MalformedMessage",
    "ProtocolError",
    "RemoteProtocolError",
    "TooLarge",
    "Undecryptable",
    "UnsupportedVersion",
]


class ProtocolError(Exception):
    """Base of every error the protocol core raises."""


class LocalProtocolError(ProtocolError):
    """The caller misused the API or passed an invalid value; fix the calling code or config."""


class RemoteProtocolError(ProtocolError):
    """A peer sent data that must be dropped; `reason` is the metrics label."""

    reason = "malformed"


class Undecryptable(RemoteProtocolError):
    """No key of the keyring opens the packet: wrong cluster key, corruption, or not ours."""

    reason = "undecryptable"


class MalformedMessage(RemoteProtocolError):
    """The bytes opened but are not a valid envelope or message."""

    reason = "malformed"


class TooLarge(MalformedMessage):
    """A datagram, frame or field is larger than the configured limit."""

    reason = "too_large"


class BadSignature(RemoteProtocolError):
    """An Ed25519 signature does not verify with the key it claims."""

    reason = "bad_signature"


class ClockSkew(RemoteProtocolError):
    """The sender's clock differs from ours by more than the allowed skew (or it is a replay)."""

    reason = "clock_skew"


class FromTheFuture(RemoteProtocolError):
    """A store entry is stamped too far ahead of our clock (a wrong clock or a forgery)."""

    reason = "future"


class UnsupportedVersion(RemoteProtocolError):
    """The envelope's major protocol version is not one we speak."""

    reason = "version"

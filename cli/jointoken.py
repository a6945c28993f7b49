"""Join tokens: one string that carries what a new machine needs to join a cluster.

`nodenet token` prints it on a member, `nodenet init --token` consumes it on the new
machine. Format: ``nodenet1:`` followed by base64url (no padding) of compact JSON
``{"v": 1, "keys": ["<base64 cluster key>", …], "seeds": ["host:port", …]}``, keys primary
first. The token holds the cluster keys, so it is a secret: pass it like a password.

This module only encodes and decodes the envelope; checking the keys and addresses
themselves is left to the callers, which use the protocol's and the daemon's own parsers.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PREFIX", "JoinToken", "TokenError", "decode_token", "encode_token"]

PREFIX = "nodenet1:"
VERSION = 1


class TokenError(ValueError):
    """The text is not a usable join token; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class JoinToken:
    """The decoded content of a token."""

    keys: tuple[str, ...]
    """Base64 cluster keys, primary first."""
    seeds: tuple[str, ...]
    """`host:port` addresses of members to join."""


def encode_token(keys: Sequence[str], seeds: Sequence[str]) -> str:
    """The token text for these keys (primary first) and seed addresses."""
    body = json.dumps(
        {"v": VERSION, "keys": list(keys), "seeds": list(seeds)}, separators=(",", ":")
    )
    return PREFIX + base64.urlsafe_b64encode(body.encode()).decode("ascii").rstrip("=")


def decode_token(text: str) -> JoinToken:
    """Parse a token; TokenError if it is not one this version understands."""
    text = text.strip()
    again = "copy it again from `nodenet token` on a cluster member"
    if not text.startswith(PREFIX):
        if text.startswith("nodenet") and ":" in text:
            raise TokenError(
                f"this token is version {text.split(':', 1)[0]!r}, this nodenet reads"
                f" {PREFIX[:-1]!r}; create one with this version's `nodenet token`"
            )
        raise TokenError(f"a join token starts with {PREFIX!r}; {again}")
    encoded = text[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        content = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenError(f"the join token is damaged (not base64url JSON); {again}") from None
    if not isinstance(content, dict) or content.get("v") != VERSION:
        raise TokenError(f"the join token is not version {VERSION}; {again}")
    keys, seeds = content.get("keys"), content.get("seeds")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise TokenError(f"the join token holds no cluster keys; {again}")
    if not isinstance(seeds, list) or not all(isinstance(s, str) for s in seeds):
        raise TokenError(f"the join token's seeds are not a list of addresses; {again}")
    return JoinToken(keys=tuple(keys), seeds=tuple(seeds))

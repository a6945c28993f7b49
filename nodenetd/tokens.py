"""Bearer tokens for the API's TCP listener, each with a role: read, write or admin.

The unix socket needs none: its file permissions are the access control. On TCP, every
request but `/metrics` and `/health` needs `Authorization: Bearer <token>` with a role that
covers it. Only SHA-256 digests of tokens are stored, in a file (`api.tokens_file`, mode
0600) with one `<sha256 hex> <role> <name>` line per token; `nodenet api-token` manages it
and the daemon re-reads it on SIGHUP.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

__all__ = ["OPEN_PATHS", "Role", "Token", "TokenError", "Tokens", "required_role"]

OPEN_PATHS = ("/metrics", "/health")


class Role(IntEnum):
    """What a token may do; each role includes the ones below it."""

    READ = 1
    WRITE = 2
    ADMIN = 3


class TokenError(Exception):
    """The tokens file is unusable; the message says which line and why."""


@dataclass(frozen=True, slots=True)
class Token:
    """A stored token: its digest, role and a name for people."""

    digest: str
    role: Role
    name: str


def digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored as."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return "nnt_" + secrets.token_urlsafe(32)


def required_role(method: str, path: str) -> Role | None:
    """The role a request needs over TCP; None for the open paths."""
    if path in OPEN_PATHS:
        return None
    if path.startswith("/v1/keys"):
        return Role.ADMIN
    if method in ("GET", "HEAD", "OPTIONS"):
        return Role.READ
    if path in ("/v1/leave", "/v1/join"):
        return Role.ADMIN
    return Role.WRITE


class Tokens:
    """The configured tokens."""

    def __init__(self, tokens: tuple[Token, ...] = ()) -> None:
        self.tokens = tokens

    @classmethod
    def load(cls, path: Path | None) -> Tokens:
        """Read the tokens file (none configured: no token is accepted on TCP)."""
        if path is None or not path.exists():
            return cls()
        mode = path.stat().st_mode
        if mode & 0o077:
            raise TokenError(
                f"tokens file {path} has mode {mode & 0o777:04o}; run `chmod 600 {path}`"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise TokenError(
                f"tokens file {path} is not UTF-8 text (byte {exc.start}); recreate it with"
                " `nodenet api-token create`"
            ) from None
        tokens = []
        for number, line in enumerate(text.splitlines(), 1):
            content = line.split("#", 1)[0].strip()
            if not content:
                continue
            parts = content.split(maxsplit=2)
            if len(parts) != 3 or len(parts[0]) != 64 or parts[1].upper() not in Role.__members__:
                raise TokenError(
                    f"{path} line {number}: expected '<sha256 hex> <read|write|admin> <name>'"
                )
            tokens.append(Token(parts[0].lower(), Role[parts[1].upper()], parts[2]))
        return cls(tuple(tokens))

    def role_of(self, token: str) -> Token | None:
        """The stored token matching `token`, compared in constant time."""
        wanted = digest(token)
        found = None
        for stored in self.tokens:
            if hmac.compare_digest(stored.digest, wanted):
                found = stored
        return found

    def with_token(self, name: str, role: Role) -> tuple[Tokens, str]:
        """A copy with a new token called `name` (replacing one of that name), and the token."""
        token = new_token()
        kept = tuple(t for t in self.tokens if t.name != name)
        return Tokens((*kept, Token(digest(token), role, name))), token

    def without(self, name: str) -> Tokens:
        """A copy without the token called `name`."""
        return Tokens(tuple(t for t in self.tokens if t.name != name))

    def to_text(self) -> str:
        """The tokens file."""
        lines = ["# nodenet API tokens: <sha256 of the token> <role> <name>. Mode 0600."]
        lines += [f"{t.digest} {t.role.name.lower()} {t.name}" for t in self.tokens]
        return "\n".join(lines) + "\n"

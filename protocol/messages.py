"""The messages nodes exchange, as typed values, and their msgpack wire form.

Theory of operation
-------------------
Every message is a frozen dataclass with a `TYPE` from `MessageType`. On the wire a message
is a msgpack array ``[type, field, field, ...]``. Decoders accept *more* fields than they
know (a newer minor version may append fields) and skip messages of unknown types, so old
and new minor versions interoperate; fewer fields, wrong types or out-of-range values are
`MalformedMessage`.

Membership *claims* (ALIVE, SUSPECT, DEAD, LEAVE) are relayed by gossip far from their
author, so each carries its own Ed25519 signature and stays verifiable at every hop:
``[type, claim, signature]`` where `claim` is the msgpack encoding of the claim fields
(starting with the type again) and `signature` is by the claim's author over
``CLAIM_CONTEXT ‖ claim``. ALIVE and LEAVE are authored by the node they are about, SUSPECT
and DEAD by the accuser. Relays forward the claim bytes verbatim, so fields appended by a
newer minor version survive relaying and still verify.

Constructors validate (raising `LocalProtocolError`); `decode_message` turns every failure
into `MalformedMessage` or `BadSignature`, naming the message and field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias, cast

import msgpack
import nacl.signing

from nodenet.protocol.errors import BadSignature, LocalProtocolError, MalformedMessage, TooLarge
from nodenet.protocol.identity import CLAIM_CONTEXT, SIGNATURE_LEN, NodeId, node_id_of, sign
from nodenet.protocol.reconcile import FINGERPRINT_LEN

__all__ = [
    "ENTRY_ID_LEN",
    "MAX_TAGS_BYTES",
    "Ack",
    "Address",
    "Alive",
    "Claim",
    "Dead",
    "Entry",
    "EntryAnnounce",
    "EntryRequest",
    "Error",
    "Leave",
    "MemberState",
    "Message",
    "MessageType",
    "Nack",
    "Ping",
    "PingReq",
    "PushPull",
    "PushPullDigest",
    "ShortPing",
    "StoreSummary",
    "Suspect",
    "Sync",
    "Tags",
    "Verify",
    "decode_message",
    "encode_message",
    "make_tags",
    "unpack",
]


class MessageType(IntEnum):
    """Message type codes.

    WARNING: the numeric values are part of the protocol. Append new types at the end;
    never renumber or reuse a value, or old and new nodes will misread each other.
    """

    PING = 1
    PING_REQ = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    LEAVE = 8
    PUSH_PULL = 9
    ENTRY = 10
    ENTRY_ANNOUNCE = 11
    ENTRY_REQUEST = 12
    SYNC = 13
    ERROR = 14
    STORE_SUMMARY = 15  # 1.1
    PUSH_PULL_DIGEST = 16  # 1.1
    SHORT_PING = 17  # 1.1


MAX_TAGS_BYTES = 512  # encoded size; tags ride in every ALIVE, which must fit a datagram
MAX_TAG_COUNT = 64
ENTRY_ID_LEN = 32  # BLAKE2b-256
MAX_IDS = 4096  # ids per announce/request: 4096 × 34 bytes stays far below a 1 MiB frame
MAX_ERROR_TEXT = 1024
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

Tags: TypeAlias = tuple[tuple[str, str], ...]
"""Node tags as (key, value) pairs sorted by key: hashable, and canonical on the wire."""

Verify: TypeAlias = Callable[[NodeId, bytes, bytes, bytes], bool]
"""verify(signer, context, data, signature) -> whether the signature is valid."""


def unpack(data: bytes, *, max_len: int) -> Any:
    """Strictly decode one msgpack object of at most `max_len` bytes, or raise MalformedMessage."""
    if len(data) > max_len:
        raise TooLarge(f"{len(data)} bytes of msgpack exceed the limit of {max_len}")
    try:
        return msgpack.unpackb(
            data,
            use_list=False,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_len,
            max_str_len=max_len,
            max_array_len=max_len,
            max_map_len=MAX_TAG_COUNT,
            max_ext_len=0,
            ext_hook=_no_ext,
            object_pairs_hook=_unique_map,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"not valid msgpack: {exc}") from exc


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"ext type {code} is not allowed")


def _unique_map(pairs: Sequence[tuple[Any, Any]]) -> dict[Any, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("map has duplicate keys")
    return result


def _pack(obj: Any) -> bytes:
    return cast(bytes, msgpack.packb(obj, use_bin_type=True))


# --- field validation: one function per field kind, raising LocalProtocolError ------------


def _uint(value: object, name: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise LocalProtocolError(f"{name} must be an integer in 0..{maximum}, got {value!r:.40}")
    return value


def _bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise LocalProtocolError(f"{name} must be a boolean, got {value!r:.40}")
    return value


def _blob(value: object, name: str, *, max_len: int, exact: bool = False) -> bytes:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{name} must be bytes, got {type(value).__name__}")
    if exact and len(value) != max_len:
        raise LocalProtocolError(f"{name} must be {max_len} bytes, got {len(value)}")
    if len(value) > max_len:
        raise LocalProtocolError(f"{name} is {len(value)} bytes, more than {max_len}")
    return value


def _text(value: object, name: str, *, max_len: int) -> str:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be a string, got {type(value).__name__}")
    if len(_utf8(value, name)) > max_len:
        raise LocalProtocolError(f"{name} is longer than {max_len} bytes")
    return value


def _utf8(value: str, name: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{name} is not valid Unicode text ({exc.reason})") from exc


def _node(value: object, name: str) -> NodeId:
    if isinstance(value, NodeId):
        return value
    return NodeId(_blob(value, name, max_len=32, exact=True))


def _ids(value: object, name: str) -> tuple[bytes, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_IDS:
        raise LocalProtocolError(f"{name} must be a list of at most {MAX_IDS} entry ids")
    for item in value:
        _blob(item, f"{name} item", max_len=ENTRY_ID_LEN, exact=True)
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 controls


def make_tags(tags: Mapping[str, str]) -> Tags:
    """Validate tags and return them in canonical (sorted) form."""
    pairs = tuple(sorted(tags.items()))
    _check_tags(pairs, "tags")
    return pairs


def _check_tags(value: object, name: str) -> Tags:
    if not isinstance(value, tuple) or len(value) > MAX_TAG_COUNT:
        raise LocalProtocolError(f"{name} must hold at most {MAX_TAG_COUNT} pairs")
    previous = None
    for pair in value:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise LocalProtocolError(f"{name} must be (key, value) pairs")
        key, val = pair
        if not isinstance(key, str) or not isinstance(val, str) or not key:
            raise LocalProtocolError(f"{name}: keys and values are strings, keys non-empty")
        if _CONTROL.search(key) or _CONTROL.search(val):
            # A name or tag is printed in logs and terminals: a newline forges log lines,
            # an escape sequence rewrites the operator's screen.
            raise LocalProtocolError(
                f"{name}: keys and values must not contain control characters"
                f" (newline, tab, escape…): {key!r:.40}={val!r:.40}"
            )
        if previous is not None and key <= previous:
            raise LocalProtocolError(f"{name} must be sorted by key without duplicates")
        previous = key
    try:
        size = len(_pack(dict(value)))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{name} hold text that is not valid Unicode") from exc
    if size > MAX_TAGS_BYTES:
        raise LocalProtocolError(
            f"{name} encode to {size} bytes; the limit is {MAX_TAGS_BYTES} (shorten them)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Address:
    """An IP address and port; `host` is normalised (IPv6 compressed, no brackets)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise LocalProtocolError(f"address host must be a string, got {self.host!r:.40}")
        try:
            normal = str(ipaddress.ip_address(self.host))
        except ValueError as exc:
            raise LocalProtocolError(f"address host {self.host!r} is not an IP address") from exc
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise LocalProtocolError(f"address port {self.port!r} is not a port (1-65535)")
        object.__setattr__(self, "host", normal)

    def to_wire(self) -> tuple[bytes, int]:
        """`[packed ip (4 or 16 bytes), port]`."""
        return (ipaddress.ip_address(self.host).packed, self.port)

    @classmethod
    def from_wire(cls, value: object, name: str) -> Address:
        """Parse `[ip bytes, port]`, raising LocalProtocolError."""
        if not (isinstance(value, tuple) and len(value) >= 2):
            raise LocalProtocolError(f"{name} must be [ip, port]")
        raw, port = value[0], value[1]
        if not isinstance(raw, bytes) or len(raw) not in (4, 16):
            raise LocalProtocolError(f"{name} ip must be 4 or 16 bytes")
        if type(port) is not int or not 1 <= port <= 65535:
            raise LocalProtocolError(f"{name} port {port!r:.20} is not a port (1-65535)")
        address = object.__new__(cls)  # the packed form is already valid: skip reparsing
        object.__setattr__(address, "host", str(ipaddress.ip_address(raw)))
        object.__setattr__(address, "port", port)
        return address

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# --- messages ---------------------------------------------------------------------------


class Message:
    """Base of every message; subclasses are frozen, slotted, keyword-only dataclasses."""

    __slots__ = ()
    TYPE: ClassVar[MessageType]

    def fields_to_wire(self) -> tuple[Any, ...]:
        """The fields after the type code, in wire order."""
        raise NotImplementedError

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> Message:
        """Build from wire fields (after the type code); raise LocalProtocolError if invalid."""
        raise NotImplementedError


def _need(fields: tuple[Any, ...], count: int, what: str) -> None:
    if len(fields) < count:
        raise LocalProtocolError(f"{what} needs {count} fields, got {len(fields)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Message):
    """Direct probe: "are you `target`?"; answered with ACK carrying the same `seq`."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    seq: int
    target: NodeId

    def __post_init__(self) -> None:
        _uint(self.seq, "seq", UINT32_MAX)
        _node(self.target, "target")

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.seq, self.target)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> Ping:
        _need(fields, 2, "PING")
        return cls(seq=fields[0], target=_node(fields[1], "target"))


PING_PREFIX_LEN = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class ShortPing(Message):
    """PING (1.1) naming its target by the first 8 bytes of its id: sent only to members
    whose envelopes say they speak 1.1 (a 1.0 node skips the type and would not answer)."""

    TYPE: ClassVar[MessageType] = MessageType.SHORT_PING
    seq: int
    target: bytes

    def __post_init__(self) -> None:
        _uint(self.seq, "seq", UINT32_MAX)
        _blob(self.target, "target prefix", max_len=PING_PREFIX_LEN, exact=True)

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.seq, self.target)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> ShortPing:
        _need(fields, 2, "SHORT_PING")
        return cls(seq=fields[0], target=fields[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class PingReq(Message):
    """Indirect probe: "please ping `target` at `address` for me"; `nack` asks for a NACK."""

    TYPE: ClassVar[MessageType] = MessageType.PING_REQ
    seq: int
    target: NodeId
    address: Address
    nack: bool

    def __post_init__(self) -> None:
        _uint(self.seq, "seq", UINT32_MAX)
        _node(self.target, "target")
        _bool(self.nack, "nack")
        if not isinstance(self.address, Address):
            raise LocalProtocolError("address must be an Address")

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.seq, self.target, self.address.to_wire(), self.nack)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> PingReq:
        _need(fields, 4, "PING_REQ")
        return cls(
            seq=fields[0],
            target=_node(fields[1], "target"),
            address=Address.from_wire(fields[2], "address"),
            nack=fields[3],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _SeqOnly(Message):
    """A message whose only field is a probe sequence number."""

    seq: int

    def __post_init__(self) -> None:
        _uint(self.seq, "seq", UINT32_MAX)

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.seq,)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> Message:
        _need(fields, 1, cls.TYPE.name)
        return cls(seq=fields[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(_SeqOnly):
    """Answer to PING (directly, or relayed by the member that got the PING_REQ)."""

    TYPE: ClassVar[MessageType] = MessageType.ACK


@dataclass(frozen=True, slots=True, kw_only=True)
class Nack(_SeqOnly):
    """From an indirect prober: "I am alive but got no ACK from the target" (Lifeguard)."""

    TYPE: ClassVar[MessageType] = MessageType.NACK


# --- signed membership claims -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim(Message):
    """A membership statement signed by its author; `claim` is the exact signed encoding."""

    node: NodeId
    incarnation: int
    claim: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def author(self) -> NodeId:
        """Who signed the claim: the node itself, or the accuser."""
        return self.node

    def claim_fields(self) -> tuple[Any, ...]:
        """The signed fields, type code first; `claim` is their msgpack encoding."""
        return (self.TYPE, self.node, self.incarnation)

    def __post_init__(self) -> None:
        _node(self.node, "node")
        _uint(self.incarnation, "incarnation", UINT64_MAX)
        _blob(self.signature, "signature", max_len=SIGNATURE_LEN, exact=True)
        _blob(self.claim, "claim", max_len=MAX_CLAIM_BYTES)

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.claim, self.signature)

    @classmethod
    def _sign(cls, key: nacl.signing.SigningKey, **values: Any) -> Any:
        """Build, encode and sign a claim with `key`; the constructor checks the author."""
        unsigned = cls(claim=b"", signature=bytes(SIGNATURE_LEN), **values)
        claim = _pack(unsigned.claim_fields())
        if unsigned.author != node_id_of(key):
            raise LocalProtocolError(f"a {cls.TYPE.name} claim must be signed by its author")
        return cls(claim=claim, signature=sign(key, CLAIM_CONTEXT, claim), **values)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> Claim:
        name = cls.TYPE.name
        _need(fields, 2, name)
        claim = _blob(fields[0], f"{name} claim", max_len=MAX_CLAIM_BYTES)
        signature = _blob(fields[1], f"{name} signature", max_len=SIGNATURE_LEN, exact=True)
        try:
            inner = unpack(claim, max_len=MAX_CLAIM_BYTES)
        except MalformedMessage as exc:
            raise LocalProtocolError(f"{name} claim: {exc}") from exc
        if (
            not isinstance(inner, tuple)
            or not inner
            or type(inner[0]) is not int
            or inner[0] != cls.TYPE
        ):
            raise LocalProtocolError(f"{name} claim does not start with its own type code")
        message = cls._from_claim(inner[1:], claim, signature)
        if not verify(message.author, CLAIM_CONTEXT, claim, signature):
            raise _ClaimSignatureError(
                f"{name} claim about {message.node.short} is not signed by its author"
                f" {message.author.short}"
            )
        return message

    @classmethod
    def _from_claim(cls, fields: tuple[Any, ...], claim: bytes, signature: bytes) -> Claim:
        raise NotImplementedError


class _ClaimSignatureError(LocalProtocolError):
    """Internal marker so the decoder reports a bad claim signature as BadSignature."""


MAX_CLAIM_BYTES = 1024  # an ALIVE with maximal tags and an IPv6 address is under 640 bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Alive(Claim):
    """The claim "I, `node`, am alive at `address` with `tags`", signed by `node`."""

    TYPE: ClassVar[MessageType] = MessageType.ALIVE
    address: Address
    tags: Tags = ()

    def __post_init__(self) -> None:
        Claim.__post_init__(self)
        if not isinstance(self.address, Address):
            raise LocalProtocolError("address must be an Address")
        _check_tags(self.tags, "tags")

    def claim_fields(self) -> tuple[Any, ...]:
        return (self.TYPE, self.node, self.incarnation, self.address.to_wire(), dict(self.tags))

    @classmethod
    def create(
        cls,
        key: nacl.signing.SigningKey,
        *,
        incarnation: int,
        address: Address,
        tags: Mapping[str, str] | Tags = (),
    ) -> Alive:
        """Sign an ALIVE claim about ourselves."""
        pairs = make_tags(tags) if isinstance(tags, Mapping) else tags
        alive: Alive = cls._sign(
            key, node=node_id_of(key), incarnation=incarnation, address=address, tags=pairs
        )
        return alive

    @classmethod
    def _from_claim(cls, fields: tuple[Any, ...], claim: bytes, signature: bytes) -> Alive:
        _need(fields, 4, "ALIVE claim")
        tags = fields[3]
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise LocalProtocolError("ALIVE tags must be a map of strings to strings")
        return cls(
            node=_node(fields[0], "node"),
            incarnation=fields[1],
            address=Address.from_wire(fields[2], "address"),
            tags=tuple(sorted(tags.items())),  # checked by the constructor
            claim=claim,
            signature=signature,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Accusation(Claim):
    """SUSPECT or DEAD: `accuser` says `node` at `incarnation` is not answering."""

    accuser: NodeId

    @property
    def author(self) -> NodeId:
        return self.accuser

    def __post_init__(self) -> None:
        Claim.__post_init__(self)
        _node(self.accuser, "accuser")

    def claim_fields(self) -> tuple[Any, ...]:
        return (self.TYPE, self.node, self.incarnation, self.accuser)

    @classmethod
    def create(cls, key: nacl.signing.SigningKey, *, node: NodeId, incarnation: int) -> Any:
        """Sign an accusation about `node` as ourselves."""
        return cls._sign(key, node=node, incarnation=incarnation, accuser=node_id_of(key))

    @classmethod
    def _from_claim(cls, fields: tuple[Any, ...], claim: bytes, signature: bytes) -> Claim:
        _need(fields, 3, f"{cls.TYPE.name} claim")
        return cls(
            node=_node(fields[0], "node"),
            incarnation=fields[1],
            accuser=_node(fields[2], "accuser"),
            claim=claim,
            signature=signature,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspect(_Accusation):
    """`accuser` suspects `node`; others start (or confirm) a suspicion timer."""

    TYPE: ClassVar[MessageType] = MessageType.SUSPECT


@dataclass(frozen=True, slots=True, kw_only=True)
class Dead(_Accusation):
    """`accuser` declares `node` dead after its suspicion timed out."""

    TYPE: ClassVar[MessageType] = MessageType.DEAD


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave(Claim):
    """The claim "I, `node`, am leaving", signed by `node` (a graceful shutdown)."""

    TYPE: ClassVar[MessageType] = MessageType.LEAVE

    @classmethod
    def create(cls, key: nacl.signing.SigningKey, *, incarnation: int) -> Leave:
        """Sign our own LEAVE."""
        leave: Leave = cls._sign(key, node=node_id_of(key), incarnation=incarnation)
        return leave

    @classmethod
    def _from_claim(cls, fields: tuple[Any, ...], claim: bytes, signature: bytes) -> Leave:
        _need(fields, 2, "LEAVE claim")
        return cls(
            node=_node(fields[0], "node"), incarnation=fields[1], claim=claim, signature=signature
        )


StatusClaim: TypeAlias = Suspect | Dead | Leave


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member in a push-pull: its newest ALIVE and, if not alive, the claim saying so."""

    alive: Alive
    status: StatusClaim | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.alive, Alive):
            raise LocalProtocolError("member state needs an ALIVE claim")
        if self.status is not None:
            if not isinstance(self.status, Suspect | Dead | Leave):
                raise LocalProtocolError("member status must be SUSPECT, DEAD or LEAVE")
            if self.status.node != self.alive.node:
                raise LocalProtocolError("member status claim is about another node")


MAX_PUSH_PULL_MEMBERS = 1024  # × ≤ 800 bytes each stays under a 1 MiB frame; see membership


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPull(Message):
    """Full state exchange over TCP; `join` marks the first exchange of a joining node."""

    TYPE: ClassVar[MessageType] = MessageType.PUSH_PULL
    join: bool
    members: tuple[MemberState, ...]

    def __post_init__(self) -> None:
        _bool(self.join, "join")
        if not isinstance(self.members, tuple) or len(self.members) > MAX_PUSH_PULL_MEMBERS:
            raise LocalProtocolError(f"members must be at most {MAX_PUSH_PULL_MEMBERS} states")

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (
            self.join,
            tuple(
                (
                    _claim_to_wire(m.alive),
                    None if m.status is None else _claim_to_wire(m.status),
                )
                for m in self.members
            ),
        )

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> PushPull:
        _need(fields, 2, "PUSH_PULL")
        raw_members = fields[1]
        if not isinstance(raw_members, tuple):
            raise LocalProtocolError("PUSH_PULL members must be a list")
        members = []
        for item in raw_members:
            if not (isinstance(item, tuple) and len(item) >= 2):
                raise LocalProtocolError("PUSH_PULL member must be [alive, status]")
            alive = _claim_from_wire(item[0], verify, (Alive,))
            status = None if item[1] is None else _claim_from_wire(item[1], verify, _STATUS)
            assert isinstance(alive, Alive)
            assert status is None or isinstance(status, Suspect | Dead | Leave)
            members.append(MemberState(alive, status))
        return cls(join=fields[0], members=tuple(members))


_STATUS: tuple[type[Claim], ...] = (Suspect, Dead, Leave)

DIGEST_PREFIX_LEN = 8
MAX_DIGEST_MEMBERS = 4096  # × ≤ 21 bytes each: ~86 KB, far inside a 1 MiB frame

DigestEntry = tuple[bytes, int, int]
"""(node id prefix, incarnation, status code): see `PushPullDigest`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPullDigest(Message):
    """A push-pull by digest (1.1): one `(prefix, incarnation, status)` per member instead
    of its signed claims.

    `prefix` is the first 8 bytes of the node id; `incarnation` the highest incarnation we
    hold a claim at (the ALIVE's or the status claim's); `status` 1 alive, 2 suspect, 3 dead,
    4 left, or 0 for "I know no such member" (in an answer). A request carries the sender's
    whole table; the answer names the members whose state the responder wants (the
    requester's is newer, or the responder lacks them), and the requester sends those as
    PUSH_PULL datagrams. Status codes above 4 are ignored (a newer minor's)."""

    TYPE: ClassVar[MessageType] = MessageType.PUSH_PULL_DIGEST
    members: tuple[DigestEntry, ...]

    def __post_init__(self) -> None:
        # Entries are checked where they come from outside (`from_fields`): a digest we
        # build ourselves has one per member, and checking each again cost a simulation of
        # 10,000 nodes a tenth of its time.
        if not isinstance(self.members, tuple) or len(self.members) > MAX_DIGEST_MEMBERS:
            raise LocalProtocolError(f"digest must be at most {MAX_DIGEST_MEMBERS} members")

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.members,)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> PushPullDigest:
        _need(fields, 1, "PUSH_PULL_DIGEST")
        raw = fields[0]
        if not isinstance(raw, tuple):
            raise LocalProtocolError("PUSH_PULL_DIGEST members must be a list")
        if len(raw) > MAX_DIGEST_MEMBERS:
            raise LocalProtocolError(f"digest must be at most {MAX_DIGEST_MEMBERS} members")
        members = []
        for item in raw:
            if not (isinstance(item, tuple) and len(item) >= 3):
                raise LocalProtocolError("digest member must be [prefix, incarnation, status]")
            _blob(item[0], "digest prefix", max_len=DIGEST_PREFIX_LEN, exact=True)
            _uint(item[1], "digest incarnation", UINT64_MAX)
            _uint(item[2], "digest status", 255)
            members.append((item[0], item[1], item[2]))
        return cls(members=tuple(members))


def _claim_to_wire(claim: Claim) -> tuple[Any, ...]:
    return (claim.TYPE, claim.claim, claim.signature)


def _claim_from_wire(value: object, verify: Verify, allowed: tuple[type[Claim], ...]) -> Claim:
    if not (isinstance(value, tuple) and value):
        raise LocalProtocolError("expected a claim [type, claim, signature]")
    code = value[0]
    cls = next((c for c in allowed if type(code) is int and code == c.TYPE), None)
    if cls is None:
        names = "/".join(c.TYPE.name for c in allowed)
        raise LocalProtocolError(f"expected a {names} claim, got type {code!r:.20}")
    return cls.from_fields(value[1:], verify)


# --- store messages (handled by the replication layer) -----------------------------------

MAX_OPAQUE_BYTES = 2**24  # bounded again by the datagram or frame size that carries them


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry(Message):
    """One signed store entry, in the encoding of `nodenet.protocol.entries`."""

    TYPE: ClassVar[MessageType] = MessageType.ENTRY
    entry: bytes

    def __post_init__(self) -> None:
        _blob(self.entry, "entry", max_len=MAX_OPAQUE_BYTES)

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.entry,)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> Entry:
        _need(fields, 1, "ENTRY")
        return cls(entry=fields[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class _IdList(Message):
    """A message whose only field is a list of entry ids."""

    ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _ids(self.ids, "ids")

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.ids,)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> Message:
        _need(fields, 1, cls.TYPE.name)
        return cls(ids=fields[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryAnnounce(_IdList):
    """Ids of entries the sender has (too large to piggyback); pull the ones you lack."""

    TYPE: ClassVar[MessageType] = MessageType.ENTRY_ANNOUNCE


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryRequest(_IdList):
    """Asks for entries by id; answered with ENTRY messages over TCP."""

    TYPE: ClassVar[MessageType] = MessageType.ENTRY_REQUEST


@dataclass(frozen=True, slots=True, kw_only=True)
class Sync(Message):
    """One round of range-based set reconciliation, in the format of `reconcile`."""

    TYPE: ClassVar[MessageType] = MessageType.SYNC
    payload: bytes

    def __post_init__(self) -> None:
        _blob(self.payload, "payload", max_len=MAX_OPAQUE_BYTES)

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.payload,)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> Sync:
        _need(fields, 1, "SYNC")
        return cls(payload=fields[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Message):
    """A TCP peer refusing a request: a stable `code` and a human `message`."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: str
    message: str

    def __post_init__(self) -> None:
        _text(self.code, "code", max_len=64)
        _text(self.message, "message", max_len=MAX_ERROR_TEXT)

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.code, self.message)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> Error:
        _need(fields, 2, "ERROR")
        return cls(code=fields[0], message=fields[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSummary(Message):
    """The sender's whole store in 16 bytes: the reconciliation fingerprint of the full
    range and its item count. A receiver whose own differs starts a SYNC session."""

    TYPE: ClassVar[MessageType] = MessageType.STORE_SUMMARY
    fingerprint: bytes
    count: int

    def __post_init__(self) -> None:
        _blob(self.fingerprint, "fingerprint", max_len=FINGERPRINT_LEN, exact=True)
        _uint(self.count, "count", UINT64_MAX)

    def fields_to_wire(self) -> tuple[Any, ...]:
        return (self.fingerprint, self.count)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...], verify: Verify) -> StoreSummary:
        _need(fields, 2, "STORE_SUMMARY")
        return cls(fingerprint=fields[0], count=fields[1])


MESSAGE_CLASSES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Ping,
        PingReq,
        Ack,
        Nack,
        Alive,
        Suspect,
        Dead,
        Leave,
        PushPull,
        Entry,
        EntryAnnounce,
        EntryRequest,
        Sync,
        Error,
        PushPullDigest,
        StoreSummary,
        ShortPing,
    )
}
assert set(MESSAGE_CLASSES) == set(MessageType), "every message type needs a class"


def encode_message(message: Message) -> bytes:
    """The msgpack encoding of one message: ``[type, fields...]``."""
    return _pack((message.TYPE, *message.fields_to_wire()))


def decode_message(value: object, verify: Verify) -> Message | None:
    """Decode one already-unpacked message; None for a type this version does not know."""
    if not (isinstance(value, tuple) and value):
        raise MalformedMessage("a message must be a non-empty array [type, ...]")
    code = value[0]
    if type(code) is not int:
        raise MalformedMessage(f"message type must be an integer, got {code!r:.20}")
    cls = MESSAGE_CLASSES.get(code)
    if cls is None:
        return None
    try:
        return cls.from_fields(value[1:], verify)
    except _ClaimSignatureError as exc:
        raise BadSignature(str(exc)) from exc
    except LocalProtocolError as exc:
        raise MalformedMessage(f"{cls.TYPE.name}: {exc}") from exc

"""Range-based set reconciliation of the store (anti-entropy), in the style of negentropy.

Theory of operation
-------------------
Two nodes hold sets of store entries. Each entry is an *item* ``(hlc, id)``; items are
ordered by hlc, then by id. The goal: both learn exactly which ids only one of them holds
(`Reconciler.have`: ours the peer lacks; `Reconciler.need`: the peer's we lack), in few
round trips and close to the information floor of 32 bytes per difference.

*Ranges and bounds.* A range is the half-open interval ``[lower, upper)`` of the order. A
`Bound` is ``(hlc, id prefix)``: an item is below it when ``(hlc, id)`` sorts before
``(hlc, prefix padded with zero bytes)``; `INFINITY` lies above every item. A message lists
ranges by their upper bounds only (each starts where the previous one ended, the first at
`MIN_BOUND`), so the ranges of a message tile the whole order. Bounds between neighbouring
items use the shortest id prefix that separates them, so most bounds carry no id bytes.

*Fingerprints.* `fingerprint_value` is the one formula: BLAKE2b over (sum of the ids as
little-endian 256-bit integers, mod 2^256) ‖ (count, 8 bytes little-endian), first 16 bytes.
A sum is cheap to maintain incrementally (add on insert, subtract on delete), so a range's
fingerprint comes from an index, never from a scan. Equal fingerprints mean equal ranges.

*One round.* Each range of a message has a mode, and the receiver answers each:

- SKIP: nothing to do here. Never answered.
- FINGERPRINT: compare with ours. Equal: settled (implicitly skipped). Different: if we
  hold at most `id_list_threshold` items there, send them as an ID_LIST; otherwise split
  the range into `branching` parts of roughly equal count (`ItemSource.split`) and send a
  FINGERPRINT per part (an ID_LIST for a part we hold nothing in), plus the *tail probe*:
  an empty ID_LIST for the stretch after our last item. Whatever the peer holds that is
  newer than all we hold is then settled at once, which is the common case after a
  partition or a restart. The *head probe* does the same for the stretch before our first
  item (a new replica that got the newest entries by gossip while it joined).
- ID_LIST: the peer's complete list of ids in the range. We know both sides there, so we
  resolve it: record the differences and answer RESOLVED with the ids we hold that the peer
  lacks and the ids of its list we lack (or nothing, if there is no difference). An empty
  list for a range where we hold more than a frame's worth (a new replica) is resolved up
  to as many ids as fit, the rest of the range going back as one FINGERPRINT.
- RESOLVED: the peer resolved a range we listed; record what it says. Never answered.

Both sides run the same code; the only asymmetry is who calls `initiate` (which answers the
whole order as if its fingerprint differed). A message containing a FINGERPRINT or ID_LIST
(a *request*) is always answered, possibly by an empty message; a message without requests
is not, and ends the session: its sender and its receiver are then both `done`, and
``A.have == B.need`` and ``A.need == B.have``. Every split divides the splitter's count by
about `branching`, so a session needs about log_branching(n / id_list_threshold) + 2 round
trips, whatever the number of differences.

*Frame limit.* A reply never exceeds `frame_limit` bytes. Answers are added whole, in
order; when the next one does not fit, the rest of the order is sent as one fingerprint of
``[its lower bound, INFINITY)`` and is continued next round (negentropy's frameSizeLimit).
A RESOLVED answer too large for even an empty reply is answered by splitting instead.
Incoming RESOLVED ranges are recorded regardless. Work per message is linear in the bytes
received and sent, and a message holds at most `MAX_RANGES` ranges and `MAX_LIST_IDS` ids
per list, so a peer cannot make us do unbounded work.

Decoding (`decode_payload`) is strict and total: every byte accounted for, one encoding per
message, bounds strictly increasing; anything else is `MalformedMessage` or `TooLarge`.
The wire format is specified in docs/protocol.md, "Reconciliation (SYNC payload)".
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from itertools import accumulate, pairwise
from typing import Protocol, TypeAlias

from nodenet.protocol.errors import LocalProtocolError, MalformedMessage, TooLarge

__all__ = [
    "DEFAULT_BRANCHING",
    "DEFAULT_FRAME_LIMIT",
    "DEFAULT_ID_LIST_THRESHOLD",
    "FINGERPRINT_LEN",
    "FORMAT_VERSION",
    "HLC_MAX",
    "ID_LEN",
    "INFINITY",
    "MAX_BRANCHING",
    "MAX_IDS_PER_MESSAGE",
    "MAX_LIST_IDS",
    "MAX_MESSAGE_BYTES",
    "MAX_RANGES",
    "MIN_BOUND",
    "MIN_FRAME_LIMIT",
    "Bound",
    "Fingerprint",
    "FingerprintRange",
    "IdListRange",
    "Item",
    "ItemSource",
    "MemoryItemSource",
    "Mode",
    "Range",
    "ReconcileMessage",
    "ReconcileStatistics",
    "Reconciler",
    "ResolvedRange",
    "SkipRange",
    "State",
    "decode_payload",
    "encode_payload",
    "fingerprint_value",
    "item_key",
]

Item: TypeAlias = tuple[int, bytes]
"""A store entry as reconciliation sees it: (hlc, 32-byte id)."""

ID_LEN = 32  # BLAKE2b-256 entry ids
FINGERPRINT_LEN = 16  # 2^-128 chance that two different ranges look equal
FORMAT_VERSION = 1  # first byte of every payload
HLC_MAX = 2**64 - 1
_INFINITE_HLC = 2**64  # outside every item's hlc: the sentinel of INFINITY
_INFINITE_KEY = b"\xff" * 41  # sorts after every 40-byte item key
_MOD = 2**256

# Limits a receiver enforces (the protocol's, not a node's configuration).
MAX_MESSAGE_BYTES = 1 << 20
"""Largest payload accepted; a sender's `frame_limit` may not exceed it."""
MAX_RANGES = 8192
"""Ranges per message: each costs the receiver one fingerprint at least."""
MAX_LIST_IDS = 128
"""Ids in an ID_LIST (and so in a RESOLVED's `lack`): bounds `id_list_threshold`."""
MAX_IDS_PER_MESSAGE = MAX_MESSAGE_BYTES // ID_LEN
"""All ids of all lists in one message."""
MAX_BRANCHING = 64
MIN_FRAME_LIMIT = 8192
"""Room for the largest answer that is never split (b + 1 fingerprints, or an ID_LIST of
MAX_LIST_IDS ids) plus the continuation, so every reply makes progress."""

# Defaults; benchmarks/reconcile.py measures them (n = 1,000,000, d = 100).
DEFAULT_BRANCHING = 16
"""Parts per split: 16 fingerprints (~400 bytes) per differing range per round; fewer
parts cost round trips (log base), more cost bytes per level."""
DEFAULT_ID_LIST_THRESHOLD = 32
"""Send ids instead of splitting at or below this many items: the smallest value that keeps
a million items at three round trips with b = 16 (16 needs four); larger values gain nothing
there and lengthen every list. A list is then at most 1 KiB (negentropy's choice, 2b)."""
DEFAULT_FRAME_LIMIT = 256 * 1024
"""Bytes per message: bounds the work of one round on each side and fits a 1 MiB frame."""

_RESERVE_BYTES = 128  # room kept for the continuation: a SKIP (≤ 44) and a fingerprint (19)
_RESERVE_RANGES = 2


def fingerprint_value(id_sum: int, count: int) -> bytes:
    """THE fingerprint formula: BLAKE2b(sum mod 2^256, 32 bytes LE ‖ count, 8 bytes LE)[:16].

    `id_sum` is the sum of the range's ids, each read as a little-endian unsigned 256-bit
    integer; `count` the number of items. Unkeyed BLAKE2b with its default 64-byte digest,
    no salt or personalisation, truncated to its first 16 bytes.
    """
    data = (id_sum % _MOD).to_bytes(32, "little") + count.to_bytes(8, "little")
    return hashlib.blake2b(data).digest()[:FINGERPRINT_LEN]


def item_key(item: Item) -> bytes:
    """The item's 40-byte sort key, ``hlc (8, big-endian) ‖ id``: bytes order is item order."""
    hlc, item_id = item
    if type(hlc) is not int or not 0 <= hlc <= HLC_MAX:
        raise LocalProtocolError(f"item hlc must be an integer in 0..2^64-1, got {hlc!r:.40}")
    if not isinstance(item_id, bytes) or len(item_id) != ID_LEN:
        raise LocalProtocolError(f"item id must be {ID_LEN} bytes, got {item_id!r:.40}")
    return hlc.to_bytes(8, "big") + item_id


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A range's fingerprint (`fingerprint_value`) and its item count."""

    value: bytes
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes) or len(self.value) != FINGERPRINT_LEN:
            raise LocalProtocolError(f"a fingerprint is {FINGERPRINT_LEN} bytes")
        if type(self.count) is not int or self.count < 0:
            raise LocalProtocolError("a fingerprint's count is a non-negative integer")

    @classmethod
    def of(cls, ids: Iterable[bytes]) -> Fingerprint:
        """The fingerprint of a collection of ids, computed directly (for tests and tools)."""
        total = count = 0
        for item_id in ids:
            total += int.from_bytes(item_id, "little")
            count += 1
        return cls(value=fingerprint_value(total, count), count=count)


@dataclass(frozen=True, slots=True)
class Bound:
    """A range boundary ``(hlc, id prefix)``; an item is below it if its key sorts before `key`.

    The prefix is canonical: trailing zero bytes are dropped (padding adds them back).
    ``hlc = 2**64`` with an empty prefix is `INFINITY`, above every item.
    """

    hlc: int
    prefix: bytes = b""
    key: bytes = field(init=False, repr=False, compare=False)
    """``hlc (8, big-endian) ‖ prefix padded to 32 bytes``, or 41 × ff for INFINITY: compare
    it with `item_key` (or an LMDB cursor's key) bytewise."""

    def __post_init__(self) -> None:
        if type(self.hlc) is not int or not 0 <= self.hlc <= _INFINITE_HLC:
            raise LocalProtocolError(f"bound hlc must be in 0..2^64, got {self.hlc!r:.40}")
        if not isinstance(self.prefix, bytes) or len(self.prefix) > ID_LEN:
            raise LocalProtocolError(f"bound id prefix must be at most {ID_LEN} bytes")
        prefix = self.prefix.rstrip(b"\0")
        if self.hlc == _INFINITE_HLC:
            if prefix:
                raise LocalProtocolError("the infinite bound has no id prefix")
            key = _INFINITE_KEY
        else:
            key = self.hlc.to_bytes(8, "big") + prefix.ljust(ID_LEN, b"\0")
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "key", key)

    @property
    def infinite(self) -> bool:
        """Whether this is `INFINITY`."""
        return self.hlc == _INFINITE_HLC

    def __lt__(self, other: Bound) -> bool:
        return self.key < other.key

    def __le__(self, other: Bound) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Bound) -> bool:
        return self.key > other.key

    def __ge__(self, other: Bound) -> bool:
        return self.key >= other.key

    @classmethod
    def between(cls, before: Item, after: Item) -> Bound:
        """The shortest bound above `before` and at or below `after` (as negentropy picks)."""
        return _between_keys(item_key(before), item_key(after))


MIN_BOUND = Bound(0)
"""The lowest bound: every item is at or above it."""
INFINITY = Bound(_INFINITE_HLC)
"""The end of the order: every item is below it."""


def _between_keys(before: bytes, after: bytes) -> Bound:
    if before >= after:
        raise LocalProtocolError("Bound.between needs two items in increasing order")
    hlc = int.from_bytes(after[:8], "big")
    if before[:8] != after[:8]:
        return Bound(hlc)
    shared = 8
    while before[shared] == after[shared]:
        shared += 1
    return Bound(hlc, after[8 : shared + 1])


# --- the item source ----------------------------------------------------------------------


class ItemSource(Protocol):
    """The sorted set being reconciled. The daemon implements it on LMDB with a range-summary
    index, the simulator and tests in memory (`MemoryItemSource`).

    All calls made while handling one message must see one snapshot of the set (on LMDB: one
    read transaction per `Reconciler.initiate` / `Reconciler.receive`).
    """

    def fingerprint(self, lower: Bound, upper: Bound) -> Fingerprint:
        """Fingerprint and count of the items in ``[lower, upper)``."""
        ...

    def items(self, lower: Bound, upper: Bound, limit: int) -> Sequence[Item]:
        """The first `limit` items of ``[lower, upper)``, in order."""
        ...

    def split(self, lower: Bound, upper: Bound, parts: int) -> Sequence[Bound]:
        """Up to ``parts - 1`` increasing bounds strictly inside ``(lower, upper)`` dividing the
        range into parts of roughly equal count, each fewer items than the whole; empty for
        fewer than two items. Any such bounds are correct: both sides fingerprint the bounds
        the message names. Prefer the shortest prefixes (`Bound.between` of neighbours)."""
        ...

    def last(self, lower: Bound, upper: Bound) -> Item | None:
        """The greatest item of ``[lower, upper)``, if any (for the tail probe)."""
        ...


class MemoryItemSource:
    """An in-memory `ItemSource`: a sorted list of item keys and their prefix sums.

    Fingerprints, splits and lookups cost O(log n). Inserts and removals are list inserts
    (a memmove); the prefix sums after the first changed position are rebuilt lazily, once,
    at the next query, so a batch of changes costs one O(n) pass.
    """

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._keys: list[bytes] = sorted({item_key(item) for item in items})
        self._sums: list[int] = []
        self._stale_from: int | None = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[Item]:
        return (_item_of(key) for key in self._keys)

    def __contains__(self, item: object) -> bool:
        try:
            key = item_key(item)  # type: ignore[arg-type]
        except (LocalProtocolError, TypeError, ValueError):
            return False
        at = bisect.bisect_left(self._keys, key)
        return at < len(self._keys) and self._keys[at] == key

    def insert(self, item: Item) -> bool:
        """Add an item; False if it was already present."""
        key = item_key(item)
        at = bisect.bisect_left(self._keys, key)
        if at < len(self._keys) and self._keys[at] == key:
            return False
        self._keys.insert(at, key)
        self._stale(at)
        return True

    def remove(self, item: Item) -> bool:
        """Remove an item; False if it was not present."""
        key = item_key(item)
        at = bisect.bisect_left(self._keys, key)
        if at == len(self._keys) or self._keys[at] != key:
            return False
        del self._keys[at]
        self._stale(at)
        return True

    def _stale(self, at: int) -> None:
        if self._stale_from is None or at < self._stale_from:
            self._stale_from = at

    def _prefix_sums(self) -> list[int]:
        start = self._stale_from
        if start is not None:
            base = self._sums[start] if start else 0
            ids = (int.from_bytes(key[8:], "little") for key in self._keys[start:])
            self._sums[start:] = accumulate(ids, initial=base)
            self._stale_from = None
        return self._sums

    def _range(self, lower: Bound, upper: Bound) -> tuple[int, int]:
        start = bisect.bisect_left(self._keys, lower.key)
        return start, max(start, bisect.bisect_left(self._keys, upper.key, start))

    def fingerprint(self, lower: Bound, upper: Bound) -> Fingerprint:
        """Fingerprint of ``[lower, upper)`` from two prefix sums."""
        start, end = self._range(lower, upper)
        sums = self._prefix_sums()
        return Fingerprint(
            value=fingerprint_value(sums[end] - sums[start], end - start), count=end - start
        )

    def items(self, lower: Bound, upper: Bound, limit: int) -> list[Item]:
        """The first `limit` items of ``[lower, upper)``."""
        start, end = self._range(lower, upper)
        return [_item_of(key) for key in self._keys[start : min(end, start + max(0, limit))]]

    def split(self, lower: Bound, upper: Bound, parts: int) -> list[Bound]:
        """Boundaries at equal-count positions, each the shortest between its neighbours."""
        start, end = self._range(lower, upper)
        count = end - start
        keys = self._keys
        cuts = sorted({start + count * k // parts for k in range(1, parts)} - {start})
        return [_between_keys(keys[at - 1], keys[at]) for at in cuts if at < end]

    def last(self, lower: Bound, upper: Bound) -> Item | None:
        """The greatest item of ``[lower, upper)``."""
        start, end = self._range(lower, upper)
        return _item_of(self._keys[end - 1]) if end > start else None


def _item_of(key: bytes) -> Item:
    return int.from_bytes(key[:8], "big"), key[8:]


# --- the wire format ------------------------------------------------------------------------


class Mode(IntEnum):
    """What a range of a message carries.

    WARNING: the numeric values are part of the protocol. Append new modes; never renumber.
    """

    SKIP = 0
    FINGERPRINT = 1
    ID_LIST = 2
    RESOLVED = 3


def _check_ids(ids: object, name: str, limit: int) -> tuple[bytes, ...]:
    if not isinstance(ids, tuple):
        raise LocalProtocolError(f"{name} must be a tuple of ids")
    if len(ids) > limit:
        raise LocalProtocolError(f"{name} holds {len(ids)} ids, more than {limit}")
    if not all(isinstance(i, bytes) and len(i) == ID_LEN for i in ids):
        raise LocalProtocolError(f"{name} must hold {ID_LEN}-byte ids")
    if len(set(ids)) != len(ids):
        raise LocalProtocolError(f"{name} repeats an id")
    return ids


def _check_bound(bound: object) -> None:
    if not isinstance(bound, Bound):
        raise LocalProtocolError("a range's upper bound must be a Bound")


@dataclass(frozen=True, slots=True, kw_only=True)
class SkipRange:
    """Nothing (more) to do in this range."""

    upper: Bound

    def __post_init__(self) -> None:
        _check_bound(self.upper)


@dataclass(frozen=True, slots=True, kw_only=True)
class FingerprintRange:
    """The sender's fingerprint of the range: compare, and answer if it differs."""

    upper: Bound
    fingerprint: bytes

    def __post_init__(self) -> None:
        _check_bound(self.upper)
        if not isinstance(self.fingerprint, bytes) or len(self.fingerprint) != FINGERPRINT_LEN:
            raise LocalProtocolError(f"a range fingerprint is {FINGERPRINT_LEN} bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class IdListRange:
    """All ids the sender holds in the range, in order: resolve the range."""

    upper: Bound
    ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_bound(self.upper)
        _check_ids(self.ids, "ID_LIST", MAX_LIST_IDS)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedRange:
    """The answer to an ID_LIST: `have` (the sender's ids the receiver lacks) and `lack` (ids
    of the receiver's list the sender lacks)."""

    upper: Bound
    have: tuple[bytes, ...]
    lack: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_bound(self.upper)
        _check_ids(self.have, "RESOLVED have", MAX_IDS_PER_MESSAGE)
        _check_ids(self.lack, "RESOLVED lack", MAX_LIST_IDS)
        if not self.have and not self.lack:
            raise LocalProtocolError("a RESOLVED range without differences must be a SKIP")
        if not set(self.have).isdisjoint(self.lack):
            raise LocalProtocolError("RESOLVED names an id as both held and lacking")


Range: TypeAlias = SkipRange | FingerprintRange | IdListRange | ResolvedRange
_REQUESTS = (FingerprintRange, IdListRange)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileMessage:
    """One SYNC payload: ranges tiling the order from MIN_BOUND, by increasing upper bound.

    After the last range an implicit SKIP runs to INFINITY. Canonical form: no SKIP last,
    no two SKIPs in a row.
    """

    ranges: tuple[Range, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.ranges, tuple) or len(self.ranges) > MAX_RANGES:
            raise LocalProtocolError(f"a message holds a tuple of at most {MAX_RANGES} ranges")
        previous = MIN_BOUND
        skipped = False
        ids = 0
        for at, item in enumerate(self.ranges):
            if not isinstance(item, SkipRange | FingerprintRange | IdListRange | ResolvedRange):
                raise LocalProtocolError(f"range {at} is not a range")
            if item.upper <= previous:
                raise LocalProtocolError(f"range {at}: bounds must strictly increase")
            is_skip = isinstance(item, SkipRange)
            if is_skip and skipped:
                raise LocalProtocolError(f"range {at}: two SKIP ranges in a row")
            if isinstance(item, IdListRange):
                ids += len(item.ids)
            elif isinstance(item, ResolvedRange):
                ids += len(item.have) + len(item.lack)
            previous, skipped = item.upper, is_skip
        if skipped:
            raise LocalProtocolError("the last range is a SKIP (it is implicit)")
        if ids > MAX_IDS_PER_MESSAGE:
            raise LocalProtocolError(f"a message holds at most {MAX_IDS_PER_MESSAGE} ids")

    @property
    def has_requests(self) -> bool:
        """Whether the message asks for an answer (holds a FINGERPRINT or ID_LIST)."""
        return any(isinstance(item, _REQUESTS) for item in self.ranges)


_SMALL_VARINTS = [bytes((value,)) for value in range(128)]


def _varint(value: int) -> bytes:
    """Base-128, most significant digit first, high bit on every byte but the last."""
    if value < 128:
        return _SMALL_VARINTS[value]
    digits = bytearray((value & 0x7F,))
    value >>= 7
    while value:
        digits.append(0x80 | value & 0x7F)
        value >>= 7
    digits.reverse()
    return bytes(digits)


def _id_list(ids: Sequence[bytes]) -> bytes:
    return _varint(len(ids)) + b"".join(ids)


_EMPTY_LIST = _id_list(())


def _put_range(out: bytearray, prev_hlc: int, upper: Bound, mode: Mode, body: bytes) -> int:
    """Append one encoded range; returns the hlc the next bound is a delta from."""
    if upper.hlc == _INFINITE_HLC:
        out += b"\x00\x00"
    else:
        out += _varint(1 + upper.hlc - prev_hlc)
        out.append(len(upper.prefix))
        out += upper.prefix
        prev_hlc = upper.hlc
    out.append(mode)
    out += body
    return prev_hlc


def _body(item: Range) -> tuple[Mode, bytes]:
    if isinstance(item, SkipRange):
        return Mode.SKIP, b""
    if isinstance(item, FingerprintRange):
        return Mode.FINGERPRINT, item.fingerprint
    if isinstance(item, IdListRange):
        return Mode.ID_LIST, _id_list(item.ids)
    return Mode.RESOLVED, _id_list(item.have) + _id_list(item.lack)


def encode_payload(message: ReconcileMessage) -> bytes:
    """The bytes of a message (the SYNC payload)."""
    out = bytearray((FORMAT_VERSION,))
    prev_hlc = 0
    for item in message.ranges:
        prev_hlc = _put_range(out, prev_hlc, item.upper, *_body(item))
    return bytes(out)


class _Reader:
    """A cursor over a payload; every read checks that the bytes are there."""

    __slots__ = ("at", "data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1
        self.at = 0  # the range being read, for error messages

    def fail(self, error: type[MalformedMessage], what: str) -> MalformedMessage:
        return error(f"reconciliation payload, range {self.at}: {what}")

    def varint(self, what: str, maximum: int, *, limit: bool = False) -> int:
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] == 0x80:
            raise self.fail(MalformedMessage, f"{what}: varint has a leading zero digit")
        value = 0
        for _ in range(10):
            if pos >= len(data):
                raise self.fail(MalformedMessage, f"{what}: truncated varint")
            byte = data[pos]
            pos += 1
            value = value << 7 | byte & 0x7F
            if byte < 0x80:
                break
        else:
            raise self.fail(MalformedMessage, f"{what}: varint longer than 10 bytes")
        self.pos = pos
        if value > maximum:
            raise self.fail(TooLarge if limit else MalformedMessage, f"{what} {value} > {maximum}")
        return value

    def take(self, count: int, what: str) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise self.fail(MalformedMessage, f"{what} truncated ({count} bytes expected)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def ids(self, what: str, maximum: int) -> tuple[bytes, ...]:
        raw = self.take(self.varint(f"{what} count", maximum, limit=True) * ID_LEN, what)
        return tuple(raw[at : at + ID_LEN] for at in range(0, len(raw), ID_LEN))


def decode_payload(payload: bytes) -> ReconcileMessage:
    """Decode a SYNC payload strictly; raises only MalformedMessage (or its TooLarge)."""
    if not isinstance(payload, bytes):
        raise LocalProtocolError(f"a payload is bytes, not {type(payload).__name__}")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise TooLarge(
            f"reconciliation payload of {len(payload)} bytes (limit {MAX_MESSAGE_BYTES})"
        )
    if not payload:
        raise MalformedMessage("empty reconciliation payload (no version byte)")
    if payload[0] != FORMAT_VERSION:
        raise MalformedMessage(f"reconciliation format {payload[0]} is not {FORMAT_VERSION}")
    reader = _Reader(payload)
    ranges: list[Range] = []
    prev_hlc = 0
    try:
        while reader.pos < len(payload):
            if reader.at == MAX_RANGES:
                raise reader.fail(TooLarge, f"more than {MAX_RANGES} ranges")
            encoded = reader.varint("hlc", _INFINITE_HLC)
            prefix = reader.take(reader.varint("prefix length", ID_LEN), "prefix")
            if prefix.endswith(b"\0"):
                raise reader.fail(MalformedMessage, "id prefix ends in a zero byte")
            if encoded == 0:
                if prefix:
                    raise reader.fail(MalformedMessage, "the infinite bound has an id prefix")
                upper = INFINITY
            else:
                prev_hlc += encoded - 1
                if prev_hlc > HLC_MAX:
                    raise reader.fail(MalformedMessage, "hlc beyond 2^64-1")
                upper = Bound(prev_hlc, prefix)
            mode = reader.varint("mode", Mode.RESOLVED)
            item: Range
            if mode == Mode.SKIP:
                item = SkipRange(upper=upper)
            elif mode == Mode.FINGERPRINT:
                item = FingerprintRange(upper=upper, fingerprint=reader.take(FINGERPRINT_LEN, "fp"))
            elif mode == Mode.ID_LIST:
                item = IdListRange(upper=upper, ids=reader.ids("ID_LIST", MAX_LIST_IDS))
            else:
                have = reader.ids("RESOLVED have", MAX_IDS_PER_MESSAGE)
                lack = reader.ids("RESOLVED lack", MAX_LIST_IDS)
                item = ResolvedRange(upper=upper, have=have, lack=lack)
            ranges.append(item)
            reader.at += 1
        return ReconcileMessage(ranges=tuple(ranges))
    except LocalProtocolError as exc:
        raise MalformedMessage(f"reconciliation payload: {exc}") from exc


# --- the state machine ----------------------------------------------------------------------


class State(Enum):
    """Where a reconciliation session is."""

    IDLE = "idle"  # nothing sent or received yet
    WAITING = "waiting"  # we sent requests; the peer's answer is due
    DONE = "done"  # a message without requests went one way: both sides are finished
    FAILED = "failed"  # the peer sent garbage or the source failed; drop the session


class _Event(Enum):
    INITIATE = "initiate"
    SENT_REQUESTS = "sent requests"  # a reply the peer must answer
    SENT_FINAL = "sent final"  # a reply without requests
    RECEIVED_FINAL = "received final"  # a message without requests: no reply
    ERROR = "error"


_TRANSITIONS: dict[tuple[State, _Event], State] = {
    (State.IDLE, _Event.INITIATE): State.WAITING,
    (State.IDLE, _Event.SENT_REQUESTS): State.WAITING,
    (State.IDLE, _Event.SENT_FINAL): State.DONE,
    (State.IDLE, _Event.RECEIVED_FINAL): State.DONE,
    (State.IDLE, _Event.ERROR): State.FAILED,
    (State.WAITING, _Event.SENT_REQUESTS): State.WAITING,
    (State.WAITING, _Event.SENT_FINAL): State.DONE,
    (State.WAITING, _Event.RECEIVED_FINAL): State.DONE,
    (State.WAITING, _Event.ERROR): State.FAILED,
}


@dataclass(frozen=True, slots=True)
class ReconcileStatistics:
    """A snapshot of one session's counters."""

    rounds: int
    """Round trips: messages sent by the initiator (= received by the responder)."""
    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int
    continuations: int
    """Replies cut by the frame limit (the rest carried as one fingerprint)."""


class _Reply:
    """A message being built: whole answers appended in order, within the frame limit."""

    __slots__ = ("cursor", "ids", "limit", "out", "prev_hlc", "ranges", "requests")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.out = bytearray((FORMAT_VERSION,))
        self.prev_hlc = 0
        self.cursor = MIN_BOUND
        self.ranges = self.ids = self.requests = 0

    @property
    def empty(self) -> bool:
        return self.ranges == 0

    def space(self) -> int:
        """Bytes left for answers (the continuation's room excluded)."""
        return self.limit - _RESERVE_BYTES - len(self.out)

    def add(self, lower: Bound, parts: Sequence[tuple[Bound, Mode, bytes, int]]) -> bool:
        """Append the answer for ``[lower, last upper)`` if it fits; a SKIP fills any gap."""
        return self._add(lower, parts, _RESERVE_BYTES, _RESERVE_RANGES)

    def finish(self, lower: Bound, rest: Fingerprint) -> None:
        """Carry ``[lower, INFINITY)`` as one fingerprint, in the room kept for it."""
        added = self._add(lower, [(INFINITY, Mode.FINGERPRINT, rest.value, 0)], 0, 0)
        assert added, "the continuation always fits the room kept for it"

    def _add(
        self,
        lower: Bound,
        parts: Sequence[tuple[Bound, Mode, bytes, int]],
        reserve_bytes: int,
        reserve_ranges: int,
    ) -> bool:
        chunk = bytearray()
        prev = self.prev_hlc
        ranges = len(parts)
        if lower != self.cursor:
            prev = _put_range(chunk, prev, lower, Mode.SKIP, b"")
            ranges += 1
        ids = 0
        for upper, mode, body, count in parts:
            prev = _put_range(chunk, prev, upper, mode, body)
            ids += count
        if (
            len(self.out) + len(chunk) > self.limit - reserve_bytes
            or self.ranges + ranges > MAX_RANGES - reserve_ranges
            or self.ids + ids > MAX_IDS_PER_MESSAGE
        ):
            return False
        self.out += chunk
        self.prev_hlc = prev
        self.cursor = parts[-1][0]
        self.ranges += ranges
        self.ids += ids
        self.requests += sum(mode in (Mode.FINGERPRINT, Mode.ID_LIST) for _, mode, _, _ in parts)
        return True


class Reconciler:
    """One reconciliation session with one peer; both sides use this class.

    The initiator calls `initiate` and sends the result; each side passes every message it
    receives to `receive` and sends back what it returns, until `receive` returns None or
    `done` is true after sending. Then `have` and `need` are the exact differences.
    """

    def __init__(
        self,
        source: ItemSource,
        *,
        frame_limit: int = DEFAULT_FRAME_LIMIT,
        id_list_threshold: int = DEFAULT_ID_LIST_THRESHOLD,
        branching: int = DEFAULT_BRANCHING,
    ) -> None:
        if type(frame_limit) is not int or not MIN_FRAME_LIMIT <= frame_limit <= MAX_MESSAGE_BYTES:
            raise LocalProtocolError(
                f"frame_limit must be {MIN_FRAME_LIMIT}..{MAX_MESSAGE_BYTES} bytes,"
                f" got {frame_limit!r:.20}"
            )
        if type(id_list_threshold) is not int or not 1 <= id_list_threshold <= MAX_LIST_IDS:
            raise LocalProtocolError(
                f"id_list_threshold must be 1..{MAX_LIST_IDS}, got {id_list_threshold!r:.20}"
            )
        if type(branching) is not int or not 2 <= branching <= MAX_BRANCHING:
            raise LocalProtocolError(f"branching must be 2..{MAX_BRANCHING}, got {branching!r:.20}")
        self._source = source
        self._frame_limit = frame_limit
        self._threshold = id_list_threshold
        self._branching = branching
        self._state = State.IDLE
        self._initiator = False
        self._have: set[bytes] = set()
        self._need: set[bytes] = set()
        self._learned: tuple[list[bytes], list[bytes]] = ([], [])
        """The ids of `need` and `have` learned since the last `take_learned`."""
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0
        self._continuations = 0

    # --- public surface -------------------------------------------------------------------

    @property
    def state(self) -> State:
        """Where the session is."""
        return self._state

    @property
    def done(self) -> bool:
        """Whether the session is finished: nothing more will be sent or is expected."""
        return self._state is State.DONE

    @property
    def have(self) -> frozenset[bytes]:
        """Ids we hold that the peer lacks (so far; exact once `done`)."""
        return frozenset(self._have)

    @property
    def need(self) -> frozenset[bytes]:
        """Ids the peer holds that we lack (so far; exact once `done`)."""
        return frozenset(self._need)

    def take_learned(self) -> tuple[list[bytes], list[bytes]]:
        """`(need, have)`: the ids added to `need` and `have` since the last call.

        A caller that transfers entries while a long session goes on takes what each round
        taught it, instead of comparing the whole of `need` and `have` with what it already
        sent every round (O(n) a round, O(n²) for a replica far behind). Every id of the
        session is returned by exactly one call."""
        learned, self._learned = self._learned, ([], [])
        return learned

    def _learn(self, need: Iterable[bytes], have: Iterable[bytes]) -> None:
        for ids, known, learned in (
            (need, self._need, self._learned[0]),
            (have, self._have, self._learned[1]),
        ):
            for item_id in ids:
                if item_id not in known:
                    known.add(item_id)
                    learned.append(item_id)

    def statistics(self) -> ReconcileStatistics:
        """Counters of this session."""
        return ReconcileStatistics(
            rounds=self._sent if self._initiator else self._received,
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            continuations=self._continuations,
        )

    def initiate(self) -> bytes:
        """The first message: the whole order answered as if its fingerprint differed."""
        self._expect(_Event.INITIATE)
        self._initiator = True
        reply = _Reply(self._frame_limit)
        try:
            total = self._source.fingerprint(MIN_BOUND, INFINITY)
            opened = self._open(reply, MIN_BOUND, INFINITY, total.count)
        except BaseException:
            self._state = State.FAILED
            raise
        assert opened, "an empty reply has room for any opening answer"
        return self._send(reply, _Event.INITIATE)

    def receive(self, message: bytes) -> bytes | None:
        """Process a message from the peer; returns the reply, or None when none is due.

        Raises MalformedMessage or TooLarge (RemoteProtocolError) for a bad payload, after
        which the session is FAILED.
        """
        self._expect(_Event.RECEIVED_FINAL)
        try:
            decoded = decode_payload(message)
            self._received += 1
            self._bytes_received += len(message)
            reply = self._answer(decoded)
        except BaseException:
            self._state = State.FAILED
            raise
        if reply is None:
            self._state = _TRANSITIONS[self._state, _Event.RECEIVED_FINAL]
            return None
        return self._send(reply, _Event.SENT_REQUESTS if reply.requests else _Event.SENT_FINAL)

    # --- the protocol ---------------------------------------------------------------------

    def _expect(self, event: _Event) -> None:
        if (self._state, event) not in _TRANSITIONS:
            what = "initiate" if event is _Event.INITIATE else "receive a message"
            raise LocalProtocolError(
                f"cannot {what} in state {self._state.value}; use a new Reconciler per session"
            )

    def _send(self, reply: _Reply, event: _Event) -> bytes:
        self._state = _TRANSITIONS[self._state, event]
        payload = bytes(reply.out)
        self._sent += 1
        self._bytes_sent += len(payload)
        return payload

    def _answer(self, message: ReconcileMessage) -> _Reply | None:
        reply = _Reply(self._frame_limit)
        cut: Bound | None = None
        lower = MIN_BOUND
        for item in message.ranges:
            if isinstance(item, ResolvedRange):
                self._learn(need=item.have, have=item.lack)
            elif cut is None:
                if isinstance(item, FingerprintRange):
                    ours = self._source.fingerprint(lower, item.upper)
                    if ours.value != item.fingerprint and not self._open(
                        reply, lower, item.upper, ours.count
                    ):
                        cut = lower
                elif isinstance(item, IdListRange) and not self._resolve(
                    reply, lower, item.upper, item.ids
                ):
                    cut = lower
            lower = item.upper
        if not message.has_requests:
            return None
        if cut is not None:
            reply.finish(cut, self._source.fingerprint(cut, INFINITY))
            self._continuations += 1
        return reply

    def _open(
        self, reply: _Reply, lower: Bound, upper: Bound, count: int, split: bool = False
    ) -> bool:
        """Answer a range whose fingerprints differ: our ids if few, else fingerprints of parts."""
        if count <= self._threshold and not split:
            ids = [item_id for _, item_id in self._source.items(lower, upper, count)]
            return reply.add(lower, [(upper, Mode.ID_LIST, _id_list(ids), len(ids))])
        source = self._source
        bounds = list(source.split(lower, upper, self._branching))
        edges = [lower, *bounds, upper]
        if not bounds or any(a >= b for a, b in pairwise(edges)):
            raise LocalProtocolError(
                f"ItemSource.split returned no increasing bounds inside a range of {count} items"
            )
        oldest = source.items(lower, upper, 1)
        head = Bound(oldest[0][0]) if oldest else None
        if head is not None and lower < head < edges[1]:
            edges.insert(1, head)  # [lower, head) holds nothing of ours: probe it likewise
        newest = source.last(lower, upper)
        tail = None if newest is None or newest[0] == HLC_MAX else Bound(newest[0] + 1)
        if tail is not None and bounds[-1] < tail < upper:
            edges[-1] = tail  # [tail, upper) holds nothing of ours: probe it with an empty list
        else:
            tail = None
        parts: list[tuple[Bound, Mode, bytes, int]] = []
        for start, end in pairwise(edges):
            part = source.fingerprint(start, end)
            if part.count >= count:
                raise LocalProtocolError("ItemSource.split left a part as large as the range")
            if part.count == 0:
                parts.append((end, Mode.ID_LIST, _EMPTY_LIST, 0))
            else:
                parts.append((end, Mode.FINGERPRINT, part.value, 0))
        if tail is not None:
            parts.append((upper, Mode.ID_LIST, _EMPTY_LIST, 0))
        return reply.add(lower, parts)

    def _resolve(
        self, reply: _Reply, lower: Bound, upper: Bound, listed: tuple[bytes, ...]
    ) -> bool:
        """Answer the peer's ID_LIST: record and send both differences, or split if too many."""
        theirs = set(listed)
        room = max(0, reply.space() // ID_LEN - len(theirs) - 4)
        ours = self._source.items(lower, upper, len(theirs) + room + 1)
        if len(ours) <= len(theirs) + room:
            mine = {item_id for _, item_id in ours}
            have = [item_id for _, item_id in ours if item_id not in theirs]
            lack = [item_id for item_id in listed if item_id not in mine]
            if not have and not lack:
                return True
            body = _id_list(have) + _id_list(lack)
            if reply.add(lower, [(upper, Mode.RESOLVED, body, len(have) + len(lack))]):
                self._learn(need=lack, have=have)
                return True
        elif not theirs and room:
            # The peer holds nothing here (a replica far behind, or a new one): resolve as
            # many of our ids as fit and carry the rest of the range as one fingerprint, which
            # the peer answers with another empty list. Each round trip then moves a full
            # frame of ids and costs us one read and one fingerprint, instead of splitting
            # the range and resolving a part of it per round.
            sent = ours[:room]
            cut = Bound.between(sent[-1], ours[room])
            have = [item_id for _, item_id in sent]
            rest = self._source.fingerprint(cut, upper)
            parts = [
                (cut, Mode.RESOLVED, _id_list(have) + _EMPTY_LIST, len(have)),
                (upper, Mode.FINGERPRINT, rest.value, 0),
            ]
            if reply.add(lower, parts):
                self._learn(need=(), have=have)
                return True
        if not reply.empty:
            return False
        count = self._source.fingerprint(lower, upper).count
        return self._open(reply, lower, upper, count, split=True)

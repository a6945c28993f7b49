"""Push-pull by digest (protocol 1.1): compare member tables without sending signed claims.

Theory of operation
-------------------
A full push-pull sends every member's signed ALIVE (~130 bytes each) both ways, although
the two tables almost always agree. A digest is one `(id prefix, incarnation, status)` per
member (~13 bytes): enough to see which side holds a state the other would take (see
`rank`). So a periodic push-pull is:

1. the requester sends its own state (a one-member PUSH_PULL) and the digest of its table;
2. the responder answers with the full states the requester lacks or holds older, and a
   digest of the members whose state *it* wants (the requester's is newer, or unknown here);
3. the requester sends those states as PUSH_PULL datagrams.

A 1.0 responder skips the digest (an unknown message type), merges the one-member PUSH_PULL
and answers with its full table, so mixed clusters keep working. Joins and reconnects
still send the full table: the peer may know nothing of us.

Almost always the two tables agree, and the answer is empty. To find that out without a
dict entry per member, each table keeps a tally (`entry_hash` summed over its digest,
changed with every state change): a requester's digest with our count and our tally is
answered at once. The tally uses Python's `hash`, salted per process, so it is never sent:
it only stands in for comparing the requester's digest entry by entry with our own.

Prefixes are 8 bytes of the node id. Two members sharing a prefix are compared against
every digest entry with that prefix, which at worst sends a state that was not needed;
finding a second node id with a given member's prefix costs ~2^64 key generations.
"""

from __future__ import annotations

import struct
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter

from nodenet.protocol.messages import (
    DIGEST_PREFIX_LEN,
    MAX_DIGEST_MEMBERS,
    Alive,
    Dead,
    DigestEntry,
    Leave,
    MemberState,
    PushPullDigest,
    Suspect,
)

__all__ = [
    "UNKNOWN",
    "WANTED_LIMIT",
    "Pair",
    "answer",
    "digest",
    "entries",
    "entry_hash",
    "in_sync",
    "rank",
    "rank_of",
    "table_tally",
    "tally",
    "wanted_states",
]

UNKNOWN = 0
"""Status code of a digest entry for a member the sender does not know."""
WANTED_LIMIT = 256
"""Entries an answer asks for at most: the requester sends only 64 states per push-pull."""
_CODES: dict[type, int] = {type(None): 1, Suspect: 2, Dead: 3, Leave: 4}
_HASH_MODULUS = sys.hash_info.modulus
_PACK_HASH = struct.Struct("<q").pack
"""A `hash` value (a C `Py_hash_t`: fits a signed 64-bit integer) as 8 bytes."""
_PREFIX = itemgetter(0)
_INCARNATION = itemgetter(1)
_HIGHEST_CODE = 4


Pair = tuple[Alive, Suspect | Dead | Leave | None]
"""A member's state as the table holds it: its ALIVE and the status claim, if any (cheaper
to make for every member than a `MemberState`)."""


def rank(state: MemberState) -> tuple[int, int]:
    """`rank_of` a `MemberState`."""
    return rank_of(state.alive, state.status)


def rank_of(alive: Alive, status: Suspect | Dead | Leave | None) -> tuple[int, int]:
    """`(ALIVE incarnation, status code)`: a state ranks higher than another only if the
    member table holding the other would take something from it.

    Only the ALIVE's incarnation counts, not the status claim's: the table never takes a
    DEAD over a DEAD, and takes a SUSPECT over a SUSPECT only as a confirmation, whatever
    their incarnations, so ranking by those would ask for the same state forever. A newer
    ALIVE is always taken; at the same ALIVE, SUSPECT over ALIVE, DEAD over ALIVE (as a
    suspicion), LEAVE over all."""
    return alive.incarnation, _CODES[type(status)]


def digest(pairs: Iterable[Pair]) -> tuple[PushPullDigest, ...]:
    """The digest of a table, in as many messages as `MAX_DIGEST_MEMBERS` needs."""
    return _messages(entries(pairs))


def entries(pairs: Iterable[Pair]) -> list[DigestEntry]:
    """The digest entry of each member (`rank_of` inlined: once per member per push-pull)."""
    codes = _CODES
    return [
        (alive.node[:DIGEST_PREFIX_LEN], alive.incarnation, codes[type(status)])
        for alive, status in pairs
    ]


def entry_hash(alive: Alive, status: Suspect | Dead | Leave | None) -> int:
    """The hash of a member's digest entry: what it adds to its table's `tally`.

    `hash` of an int is the int modulo `_HASH_MODULUS` (2^61 − 1), so incarnations that far
    apart would hash alike; an entry at or above it is hashed apart (with a marker), and
    `in_sync` never trusts a digest holding one: such tables are compared in full."""
    entry = (alive.node[:DIGEST_PREFIX_LEN], *rank_of(alive, status))
    plain = hash(entry) if alive.incarnation < _HASH_MODULUS else hash((*entry, None))
    return next(_keyed([plain]))


def tally(entries: Iterable[DigestEntry]) -> int:
    """An order-free checksum of a digest: the sum of its entries' hashes. Equal digests
    (as multisets) have equal tallies; unequal ones collide with probability ~2^-64 (on a
    64-bit build), and then exchanges between these two tables send nothing they should
    have for as long as both stay as they are; exchanges with other members, and gossip,
    still carry the states. Only comparable within one process: `hash` of bytes is salted
    per process."""
    return sum(_keyed(map(hash, entries)))


def _keyed(hashes: Iterable[int]) -> Iterator[int]:
    """Each hash through SipHash (`hash` of its 8 bytes), at C speed. Python's tuple hash is
    made of rotations and multiplications and comes out nearly additive in each element: a
    plain sum of entry hashes stayed equal when two members swapped statuses (A alive and B
    dead here, A dead and B alive there). A keyed hash of each makes the sum a checksum."""
    return map(hash, map(_PACK_HASH, hashes))


def table_tally(pairs: Iterable[Pair]) -> int:
    """The tally of a table as its holder keeps it: `entry_hash` summed over its states."""
    return sum(entry_hash(alive, status) for alive, status in pairs)


def in_sync(theirs: Sequence[DigestEntry], count: int, ours: int) -> bool:
    """Whether a requester's digest describes our table, which has `count` entries and the
    tally `ours` (kept as states change, from `entry_hash`): then `answer` would send and
    want nothing. C-speed passes over `theirs`, no dict per member.

    Only for distinct prefixes: `answer` compares each member with every entry of its
    prefix, so two members sharing one (A@2, B@1 here, A@1, B@2 there) make equal digests
    of unequal tables. Equal digests have a repeated prefix exactly when both tables do."""
    return (
        len(theirs) == count
        and tally(theirs) == ours
        and (not theirs or max(map(_INCARNATION, theirs)) < _HASH_MODULUS)
        and len(set(map(_PREFIX, theirs))) == count
    )


def _messages(entries: Sequence[DigestEntry]) -> tuple[PushPullDigest, ...]:
    return tuple(
        PushPullDigest(members=tuple(entries[i : i + MAX_DIGEST_MEMBERS]))
        for i in range(0, len(entries), MAX_DIGEST_MEMBERS)
    )


def _by_prefix(entries: Iterable[DigestEntry]) -> dict[bytes, list[tuple[int, int]]]:
    index: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for prefix, incarnation, code in entries:
        ranks = index[prefix]
        if code <= _HIGHEST_CODE:  # a newer minor's status: not comparable, leave it alone
            ranks.append((incarnation, code))
    return index


def answer(
    ours: Sequence[Pair], theirs: Iterable[DigestEntry]
) -> tuple[list[Pair], tuple[PushPullDigest, ...]]:
    """The responder's side: our states the requester lacks or holds older, and the digest
    of the members whose state we want from it."""
    index = _by_prefix(theirs)
    codes = _CODES
    send: list[Pair] = []
    ours_by_prefix: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for pair in ours:
        alive, status = pair
        prefix = alive.node[:DIGEST_PREFIX_LEN]
        mine = (alive.incarnation, codes[type(status)])
        ours_by_prefix[prefix].append(mine)
        known = index.get(prefix)
        if known is None or any(r < mine for r in known):
            send.append(pair)
    wanted: list[DigestEntry] = []
    for prefix, ranks in index.items():
        if len(wanted) >= WANTED_LIMIT:
            break
        held = ours_by_prefix.get(prefix)
        if not ranks:
            continue
        if held is None:
            # A tombstone we never knew is not worth asking for (and one we reaped must not
            # come back): only members the requester believes alive or suspect.
            if any(code <= _CODES[Suspect] for _, code in ranks):
                wanted.append((prefix, 0, UNKNOWN))
        elif any(r > h for r in ranks for h in held):
            wanted.append((prefix, *min(held)))
    return send, _messages(wanted)


def wanted_states(
    ours: Sequence[Pair], wanted: Iterable[DigestEntry], limit: int, start: int = 0
) -> list[Pair]:
    """The requester's side: our states newer than what the responder said it holds (at
    most `limit`, looking from `ours[start]` on and around, so that a long table is covered
    over several push-pulls; the rest waits for the next one)."""
    index = _by_prefix(wanted)
    send: list[Pair] = []
    start = start % len(ours) if ours else 0
    for pair in (*ours[start:], *ours[:start]):
        known = index.get(pair[0].node[:DIGEST_PREFIX_LEN])
        if known is not None and any(r < rank_of(*pair) for r in known):
            send.append(pair)
            if len(send) >= limit:
                break
    return send

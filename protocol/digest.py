"""Push-pull by digest (protocol 1.1): compare member tables without sending signed claims.

Theory of operation
-------------------
A full push-pull sends every member's signed ALIVE (~130 bytes each) both ways, although
the two tables almost always agree. A digest is one `(id prefix, incarnation, status)` per
member (~13 bytes): enough to see which side holds the newer state of each member by the
same order the member table applies claims in (a higher incarnation wins; at the same
incarnation suspect beats alive, dead beats suspect, left beats dead). So a periodic
push-pull is:

1. the requester sends its own state (a one-member PUSH_PULL) and the digest of its table;
2. the responder answers with the full states the requester lacks or holds older, and a
   digest of the members whose state *it* wants (the requester's is newer, or unknown here);
3. the requester sends those states as PUSH_PULL datagrams.

A 1.0 responder skips the digest (an unknown message type), merges the one-member PUSH_PULL
and answers with its full table, so mixed clusters keep working. Joins and reconnects
still send the full table: the peer may know nothing of us.

Prefixes are 8 bytes of the node id. Two members sharing a prefix are compared against
every digest entry with that prefix, which at worst sends a state that was not needed;
finding a second node id with a given member's prefix costs ~2^64 key generations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from nodenet.protocol.messages import (
    DIGEST_PREFIX_LEN,
    MAX_DIGEST_MEMBERS,
    Dead,
    DigestEntry,
    Leave,
    MemberState,
    PushPullDigest,
    Suspect,
)

__all__ = ["UNKNOWN", "answer", "digest", "rank", "wanted_states"]

UNKNOWN = 0
"""Status code of a digest entry for a member the sender does not know."""
_CODES: dict[type, int] = {type(None): 1, Suspect: 2, Dead: 3, Leave: 4}
_HIGHEST_CODE = 4


def rank(state: MemberState) -> tuple[int, int]:
    """`(incarnation, status code)`: the newer of two states of a member ranks higher."""
    status = state.status
    if status is None:
        return state.alive.incarnation, 1
    return max(state.alive.incarnation, status.incarnation), _CODES[type(status)]


def digest(states: Iterable[MemberState]) -> tuple[PushPullDigest, ...]:
    """The digest of a table, in as many messages as `MAX_DIGEST_MEMBERS` needs."""
    entries = [(bytes(s.alive.node[:DIGEST_PREFIX_LEN]), *rank(s)) for s in states]
    return _messages(entries)


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
    ours: Sequence[MemberState], theirs: Iterable[DigestEntry]
) -> tuple[list[MemberState], tuple[PushPullDigest, ...]]:
    """The responder's side: our states the requester lacks or holds older, and the digest
    of the members whose state we want from it."""
    index = _by_prefix(theirs)
    send: list[MemberState] = []
    ours_by_prefix: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for state in ours:
        prefix = bytes(state.alive.node[:DIGEST_PREFIX_LEN])
        mine = rank(state)
        ours_by_prefix[prefix].append(mine)
        known = index.get(prefix)
        if known is None or any(r < mine for r in known):
            send.append(state)
    wanted: list[DigestEntry] = []
    for prefix, ranks in index.items():
        held = ours_by_prefix.get(prefix)
        if not ranks:
            continue
        if held is None:
            wanted.append((prefix, 0, UNKNOWN))
        elif any(r > h for r in ranks for h in held):
            wanted.append((prefix, *min(held)))
    return send, _messages(wanted)


def wanted_states(
    ours: Sequence[MemberState], wanted: Iterable[DigestEntry], limit: int
) -> list[MemberState]:
    """The requester's side: our states newer than what the responder said it holds (at
    most `limit`; the rest waits for the next push-pull)."""
    index = _by_prefix(wanted)
    send = []
    for state in ours:
        known = index.get(bytes(state.alive.node[:DIGEST_PREFIX_LEN]))
        if known is not None and any(r < rank(state) for r in known):
            send.append(state)
            if len(send) >= limit:
                break
    return send

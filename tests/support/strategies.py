"""Hypothesis strategies that build every kind of valid protocol message."""

from __future__ import annotations

import nacl.signing
from hypothesis import strategies as st

from nodenet.protocol.identity import NodeId, node_id_of
from nodenet.protocol.messages import (
    MAX_TAGS_BYTES,
    Ack,
    Address,
    Alive,
    Dead,
    Entry,
    EntryAnnounce,
    EntryRequest,
    Error,
    Leave,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullDigest,
    ShortPing,
    StoreSummary,
    Suspect,
    Sync,
    make_tags,
)

# A handful of fixed signing keys keep signing cheap and examples shrinkable.
KEYS = [nacl.signing.SigningKey(bytes([i]) * 32) for i in range(1, 6)]

uint32 = st.integers(0, 2**32 - 1)
uint64 = st.integers(0, 2**64 - 1)
keys = st.sampled_from(KEYS)
node_ids = st.binary(min_size=32, max_size=32).map(NodeId)
entry_ids = st.binary(min_size=32, max_size=32)

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.builds(Address, st.one_of(ipv4, ipv6), st.integers(1, 65535))

_tag_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@st.composite
def tags(draw: st.DrawFn) -> tuple[tuple[str, str], ...]:
    """Tag sets within the 512-byte limit (drawn, then trimmed to fit)."""
    raw = draw(st.dictionaries(_tag_text.filter(bool), _tag_text, max_size=12))
    pairs = dict(sorted(raw.items()))
    while pairs:
        try:
            return make_tags(pairs)
        except Exception:
            pairs.pop(next(reversed(pairs)))
    assert MAX_TAGS_BYTES > 0
    return ()


@st.composite
def alives(draw: st.DrawFn) -> Alive:
    return Alive.create(
        draw(keys), incarnation=draw(uint64), address=draw(addresses), tags=draw(tags())
    )


@st.composite
def accusations(draw: st.DrawFn, kind: type[Suspect] | type[Dead]) -> Suspect | Dead:
    claim: Suspect | Dead = kind.create(draw(keys), node=draw(node_ids), incarnation=draw(uint64))
    return claim


@st.composite
def leaves(draw: st.DrawFn) -> Leave:
    return Leave.create(draw(keys), incarnation=draw(uint64))


@st.composite
def member_states(draw: st.DrawFn) -> MemberState:
    alive = draw(alives())
    kind = draw(st.sampled_from([None, Suspect, Dead, Leave]))
    if kind is None:
        return MemberState(alive)
    if kind is Leave:
        key = next(k for k in KEYS if node_id_of(k) == alive.node)
        return MemberState(alive, Leave.create(key, incarnation=alive.incarnation))
    return MemberState(
        alive, kind.create(draw(keys), node=alive.node, incarnation=alive.incarnation)
    )


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, seq=uint32, target=node_ids),
    st.builds(PingReq, seq=uint32, target=node_ids, address=addresses, nack=st.booleans()),
    st.builds(ShortPing, seq=uint32, target=st.binary(min_size=8, max_size=8)),
    st.builds(Ack, seq=uint32),
    st.builds(Nack, seq=uint32),
    alives(),
    accusations(Suspect),
    accusations(Dead),
    leaves(),
    st.builds(
        PushPull, join=st.booleans(), members=st.lists(member_states(), max_size=3).map(tuple)
    ),
    st.builds(Entry, entry=st.binary(max_size=300)),
    st.builds(EntryAnnounce, ids=st.lists(entry_ids, max_size=8).map(tuple)),
    st.builds(EntryRequest, ids=st.lists(entry_ids, max_size=8).map(tuple)),
    st.builds(Sync, payload=st.binary(max_size=300)),
    st.builds(Error, code=st.text(max_size=20), message=st.text(max_size=100)),
    st.builds(
        PushPullDigest,
        members=st.lists(
            st.tuples(st.binary(min_size=8, max_size=8), uint64, st.integers(0, 255)), max_size=8
        ).map(tuple),
    ),
    st.builds(
        StoreSummary,
        fingerprint=st.binary(min_size=16, max_size=16),
        count=st.integers(min_value=0, max_value=2**64 - 1),
    ),
)

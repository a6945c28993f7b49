"""Push-pull by digest (protocol 1.1): the comparison rules, and two cores exchanging tables."""

from __future__ import annotations

import dataclasses
import itertools
import random
import sys

import nacl.signing
from hypothesis import given
from hypothesis import strategies as st

from nodenet.protocol import digest
from nodenet.protocol.config import PROFILES
from nodenet.protocol.identity import NodeId, node_id_of, verify
from nodenet.protocol.members import MemberStatus
from nodenet.protocol.membership import Datagram, Exchange, Membership
from nodenet.protocol.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Error,
    Leave,
    MemberState,
    Ping,
    PushPull,
    PushPullDigest,
    Suspect,
    decode_message,
    encode_message,
    unpack,
)

KEYS = [nacl.signing.SigningKey(bytes([0x40 + i]) * 32) for i in range(6)]
ACCUSER = nacl.signing.SigningKey(b"\x3f" * 32)
STATUS = {1: None, 2: Suspect, 3: Dead, 4: Leave}


def state(i: int, incarnation: int, code: int, bump: int) -> MemberState:
    """Member i's ALIVE at `incarnation`, and a status claim (`code`) `bump` above it."""
    key = KEYS[i]
    alive = Alive.create(key, incarnation=incarnation, address=Address("127.0.0.1", 7000 + i))
    kind = STATUS[code]
    if kind is None:
        return MemberState(alive)
    node = node_id_of(key)
    claim = (
        Leave.create(key, incarnation=incarnation + bump)
        if kind is Leave
        else kind.create(ACCUSER, node=node, incarnation=incarnation + bump)
    )
    return MemberState(alive, claim)


def pairs(states: list[MemberState]) -> list[digest.Pair]:
    return [(s.alive, s.status) for s in states]


tables = st.dictionaries(
    st.integers(0, len(KEYS) - 1),
    st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(0, 1)),
)


@given(tables, tables)
def test_given_two_tables_then_each_side_sends_exactly_the_states_that_rank_higher(a, b):
    ours_a = [state(i, *v) for i, v in sorted(a.items())]
    ours_b = [state(i, *v) for i, v in sorted(b.items())]
    rank_a = {s.alive.node: digest.rank(s) for s in ours_a}
    rank_b = {s.alive.node: digest.rank(s) for s in ours_b}
    request = [e for m in digest.digest(pairs(ours_a)) for e in m.members]
    send, wanted = digest.answer(pairs(ours_b), request)
    wanted_entries = [e for m in wanted for e in m.members]
    back = digest.wanted_states(pairs(ours_a), wanted_entries, limit=100)

    assert {alive.node for alive, _ in send} == {
        n for n, r in rank_b.items() if n not in rank_a or rank_a[n] < r
    }
    assert {alive.node for alive, _ in back} == {
        n
        for n, r in rank_a.items()
        if (n in rank_b and rank_b[n] < r) or (n not in rank_b and r[1] <= 2)  # no tombstones
    }


def test_given_rank_then_it_orders_states_as_the_member_table_accepts_claims():
    assert digest.rank(state(0, 3, 1, 0)) < digest.rank(state(0, 3, 2, 0))  # suspect > alive
    assert digest.rank(state(0, 3, 2, 0)) < digest.rank(state(0, 3, 3, 0))  # dead > suspect
    assert digest.rank(state(0, 3, 3, 0)) < digest.rank(state(0, 3, 4, 0))  # left > dead
    assert digest.rank(state(0, 3, 3, 0)) < digest.rank(state(0, 4, 1, 0))  # refuted
    assert digest.rank(state(0, 3, 2, 1)) == (3, 2)  # only the ALIVE's incarnation counts


def test_given_two_tombstones_at_different_accusation_incarnations_then_nothing_moves():
    # The table never takes a DEAD over a DEAD: ranking by the accusation's incarnation
    # made one side ask for the other's tombstone on every push-pull, for a day.
    older, newer = state(0, 3, 3, 0), state(0, 3, 3, 1)
    prefix_entries = [e for m in digest.digest(pairs([older])) for e in m.members]
    send, wanted = digest.answer(pairs([newer]), prefix_entries)
    assert send == []
    assert wanted == ()


def test_given_an_unknown_tombstone_in_a_digest_then_it_is_not_asked_for():
    entries = [
        e for m in digest.digest(pairs([state(1, 2, 3, 0), state(2, 2, 1, 0)])) for e in m.members
    ]
    _, wanted = digest.answer([], entries)
    assert [e[0] for m in wanted for e in m.members] == [bytes(node_id_of(KEYS[2])[:8])]


def test_given_a_status_code_of_a_newer_minor_then_that_entry_is_left_alone():
    ours = [state(0, 2, 1, 0)]
    prefix = bytes(ours[0].alive.node[:8])
    send, wanted = digest.answer(pairs(ours), [(prefix, 1, 9)])
    assert send == []
    assert wanted == ()
    assert digest.wanted_states(pairs(ours), [(prefix, 1, 9)], limit=10) == []


# --- two cores ------------------------------------------------------------------------------

HERE = Address("127.0.0.1", 7950)
THERE = Address("127.0.0.1", 7951)


def core(key: nacl.signing.SigningKey, address: Address) -> Membership:
    return Membership(key=key, address=address, now=0.0, rng=random.Random(3))


def periodic_push_pull(m: Membership, until: float = 600.0) -> Exchange:
    """Run `m`'s timers until it starts a periodic push-pull; every member ACKs its pings."""
    while (t := m.get_timer()) is not None and t <= until:
        m.handle_timer(t)
        for out in m.outputs():
            if isinstance(out, Exchange) and any(
                isinstance(x, PushPull) and not x.join for x in out.request
            ):
                return out
            for ping in (x for x in getattr(out, "messages", ()) if isinstance(x, Ping)):
                m.receive(t, ping.target, out.address, Ack(seq=ping.seq))
    raise AssertionError("no periodic push-pull")


def test_given_two_cores_that_know_different_members_then_one_exchange_makes_them_agree():
    alice, bob = core(KEYS[0], HERE), core(KEYS[1], THERE)
    for m, other in ((alice, bob), (bob, alice)):
        m.receive(0.0, other.node_id, other.states()[0].alive.address, other.states()[0].alive)
    alice.receive(0.0, node_id_of(KEYS[2]), THERE, state(2, 1, 1, 0).alive)  # only alice
    bob.receive(0.0, node_id_of(KEYS[3]), THERE, state(3, 1, 1, 0).alive)  # only bob
    bob.receive(0.0, node_id_of(KEYS[4]), THERE, state(4, 1, 1, 0).alive)
    alice.receive(0.0, node_id_of(KEYS[4]), THERE, state(4, 2, 1, 0).alive)  # alice's newer
    alice.outputs(), bob.outputs(), alice.events(), bob.events()

    exchange = periodic_push_pull(alice)
    own, *digests = exchange.request
    assert isinstance(own, PushPull)
    assert [s.alive.node for s in own.members] == [alice.node_id]
    assert all(isinstance(d, PushPullDigest) for d in digests)

    reply = bob.answer_exchange(1.0, alice.node_id, exchange.request)
    sent = {s.alive.node for m in reply if isinstance(m, PushPull) for s in m.members}
    assert sent == {node_id_of(KEYS[3])}  # what alice lacks; nothing she already holds
    assert alice.exchange_done(1.1, exchange.id, reply)
    datagrams = [o for o in alice.outputs() if isinstance(o, Datagram)]
    assert {d.address for d in datagrams} == {exchange.address}
    for d in datagrams:
        for message in d.messages:
            bob.receive(1.2, alice.node_id, HERE, message)

    def view(m: Membership) -> dict:
        return {s.alive.node: digest.rank(s) for s in m.states()}

    assert view(alice) == view(bob)
    assert bob.member(node_id_of(KEYS[4])).incarnation == 2
    assert alice.member(node_id_of(KEYS[3])).status is MemberStatus.ALIVE


def test_given_tables_that_agree_then_the_exchange_is_a_tenth_of_a_full_one():
    alice, bob = core(KEYS[0], HERE), core(KEYS[1], THERE)
    for i in range(2, 6):
        for m in (alice, bob):
            m.receive(0.0, node_id_of(KEYS[i]), THERE, state(i, 1, 1, 0).alive)
    for m, other in ((alice, bob), (bob, alice)):
        m.receive(0.0, other.node_id, other.states()[0].alive.address, other.states()[0].alive)
    exchange = periodic_push_pull(alice)
    reply = bob.answer_exchange(1.0, alice.node_id, exchange.request)
    assert [len(m.members) for m in reply] == [0]  # one empty PUSH_PULL, no digest
    assert bob.stats.push_pulls_in_sync == 1  # found by the tally, no pass over the table
    # The same digest as bob's daemon would see it, decoded from the wire.
    wire = [
        decode_message(unpack(encode_message(m), max_len=1 << 20), verify) for m in exchange.request
    ]
    assert [len(m.members) for m in bob.answer_exchange(1.0, alice.node_id, wire)] == [0]
    assert bob.stats.push_pulls_in_sync == 2
    assert alice.exchange_done(1.1, exchange.id, reply)
    assert not [o for o in alice.outputs() if isinstance(o, Datagram)]

    full = bob.answer_exchange(1.0, alice.node_id, exchange.request[:1])  # as 1.0 answers
    size = sum(len(encode_message(m)) for m in (*exchange.request, *reply))
    full_size = sum(len(encode_message(m)) for m in (*alice._push_pull_messages(join=False), *full))
    assert size * 4 < full_size, (size, full_size)


def tally_of_table(m: Membership) -> int:
    return digest.table_tally(m._pairs())


ops = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["claim", "pushed", "restored"]),
            st.integers(2, len(KEYS) - 1),
            st.integers(0, 3),
            st.integers(1, 4),
            st.integers(0, 1),
        ),
        st.tuples(st.just("huge"), st.integers(2, len(KEYS) - 1), st.integers(0, 3)),
        st.tuples(st.just("accuse_us"), st.integers(0, 5)),
        st.tuples(st.just("restore_us"), st.integers(0, 8)),
        st.tuples(st.just("wait"), st.floats(0.0, 100.0)),
    ),
    max_size=30,
)


@given(ops)
def test_given_any_run_of_claims_then_the_tally_is_the_tally_of_the_table(steps):
    """The kept tally follows every change (new member, newer ALIVE, suspicion, death, leave,
    reaping, our own refutation; by gossip, by PUSH_PULL, by `restore`, tombstones of members
    never seen, incarnations past 2^61 − 1), or an in-sync answer would hide a difference."""
    config = dataclasses.replace(PROFILES["lan"], reap_after_s=60.0)
    m = Membership(key=KEYS[0], address=HERE, now=0.0, rng=random.Random(3), config=config)
    accuser = Alive.create(ACCUSER, incarnation=1, address=THERE)
    now = 0.0
    m.receive(now, accuser.node, THERE, accuser)
    for step in steps:
        if step[0] == "claim":
            _, i, incarnation, code, bump = step
            s = state(i, incarnation, code, bump)
            m.receive(now, s.alive.node, THERE, s.alive)
            if s.status is not None:
                m.receive(now, node_id_of(ACCUSER), THERE, s.status)
        elif step[0] == "pushed":  # a PUSH_PULL datagram: tombstones of strangers too
            _, i, incarnation, code, bump = step
            push = PushPull(join=False, members=(state(i, incarnation, code, bump),))
            m.receive(now, accuser.node, THERE, push)
        elif step[0] == "restored":
            _, i, incarnation, code, bump = step
            m.restore(now, [state(i, incarnation, code, bump)])
        elif step[0] == "huge":  # hashes like incarnation k: must still tally apart
            _, i, k = step
            huge = Alive.create(
                KEYS[i],
                incarnation=sys.hash_info.modulus + k,
                address=Address("127.0.0.1", 7000 + i),
            )
            m.receive(now, huge.node, THERE, huge)
        elif step[0] == "restore_us":
            ours = Alive.create(KEYS[0], incarnation=step[1], address=HERE)
            m.restore(now, [MemberState(ours)])
        elif step[0] == "accuse_us":
            m.receive(
                now,
                accuser.node,
                THERE,
                Suspect.create(ACCUSER, node=m.node_id, incarnation=step[1]),
            )
        else:
            now += step[1]
            while (t := m.get_timer()) is not None and t <= now:
                m.handle_timer(t)
                for out in m.outputs():  # keep the accuser alive: it ACKs every probe
                    for ping in (x for x in getattr(out, "messages", ()) if isinstance(x, Ping)):
                        m.receive(t, ping.target, out.address, Ack(seq=ping.seq))
        assert m._tally == tally_of_table(m)


def test_given_tables_that_differ_in_one_state_then_they_are_not_answered_as_in_sync():
    alice, bob = core(KEYS[0], HERE), core(KEYS[1], THERE)
    for m, other in ((alice, bob), (bob, alice)):
        m.receive(0.0, other.node_id, other.states()[0].alive.address, other.states()[0].alive)
    alice.receive(0.0, node_id_of(KEYS[2]), THERE, state(2, 2, 1, 0).alive)
    bob.receive(0.0, node_id_of(KEYS[2]), THERE, state(2, 1, 1, 0).alive)  # one older
    exchange = periodic_push_pull(alice)
    reply = bob.answer_exchange(1.0, alice.node_id, exchange.request)
    assert bob.stats.push_pulls_in_sync == 0
    wanted = [e for m in reply if isinstance(m, PushPullDigest) for e in m.members]
    assert wanted == [(node_id_of(KEYS[2])[:8], 1, 1)]


def test_given_incarnations_2_61_minus_1_apart_then_the_tables_are_not_taken_as_in_sync():
    """`hash` of an int is taken modulo 2^61 − 1: incarnations that far apart hash alike, so a
    table holding one is never trusted to a tally."""
    modulus = sys.hash_info.modulus
    low = state(2, 5, 1, 0)
    high = MemberState(
        Alive.create(KEYS[2], incarnation=5 + modulus, address=Address("127.0.0.1", 7002))
    )
    assert hash(digest.entries(pairs([low]))[0]) == hash(digest.entries(pairs([high]))[0])
    for ours, theirs in ((low, high), (high, low)):
        kept = digest.table_tally(pairs([ours]))
        assert not digest.in_sync(digest.entries(pairs([theirs])), 1, kept)
    assert digest.in_sync(digest.entries(pairs([low])), 1, digest.table_tally(pairs([low])))


@dataclasses.dataclass(frozen=True)
class Claimed:
    """What the digest functions read of an ALIVE, for node ids chosen to share prefixes."""

    node: NodeId
    incarnation: int


SHARED = [NodeId(bytes([1 + i % 2]) * 8 + bytes([i]) * 24) for i in range(4)]  # 0~2, 1~3
DEAD = {
    (i, n): Dead.create(ACCUSER, node=SHARED[i], incarnation=n) for i in range(4) for n in range(3)
}
shared_tables = st.dictionaries(st.integers(0, 3), st.tuples(st.integers(0, 2), st.booleans()))


def shared_pairs(table: dict[int, tuple[int, bool]]) -> list[digest.Pair]:
    return [
        (Claimed(SHARED[i], n), DEAD[i, n] if dead else None)  # type: ignore[misc]
        for i, (n, dead) in sorted(table.items())
    ]


@given(shared_tables, shared_tables)
def test_given_any_two_tables_when_in_sync_then_the_full_comparison_finds_nothing(a, b):
    """The shortcut never skips what `answer` would send or ask for, prefixes shared or not."""
    ours, theirs = shared_pairs(b), digest.entries(shared_pairs(a))
    if digest.in_sync(theirs, len(ours), digest.table_tally(ours)):
        assert digest.answer(ours, theirs) == ([], ())


def test_given_two_members_that_swapped_statuses_then_the_tables_are_not_in_sync():
    """A alive and B dead here, A dead and B alive there: Python's tuple hash is nearly
    additive in each element, so a plain sum of entry hashes took about a third of such
    pairs as equal (which ones depends on the process's hash salt: every pair is tried)."""
    swaps = [
        (i, j, x, y)
        for i, j in itertools.combinations(range(len(KEYS)), 2)
        for x, y in itertools.permutations(STATUS, 2)
    ]
    for i, j, x, y in swaps:
        ours = pairs([state(i, 1, x, 0), state(j, 2, y, 0)])
        theirs = digest.entries(pairs([state(i, 1, y, 0), state(j, 2, x, 0)]))
        assert not digest.in_sync(theirs, 2, digest.table_tally(ours)), (i, j, x, y)
        assert digest.answer(ours, theirs) != ([], ())


def test_given_two_members_sharing_a_prefix_then_swapped_states_are_not_in_sync():
    ours = shared_pairs({0: (2, False), 2: (1, False)})  # SHARED[0] and [2] share a prefix
    theirs = digest.entries(shared_pairs({0: (1, False), 2: (2, False)}))
    assert sorted(theirs) == sorted(digest.entries(ours))  # equal digests of unequal tables
    assert not digest.in_sync(theirs, len(ours), digest.table_tally(ours))
    send, wanted = digest.answer(ours, theirs)
    assert send  # what the full comparison finds: our newer state of one ...
    assert wanted  # ... and theirs of the other


def test_given_a_responder_without_digests_then_its_full_answer_is_merged():
    alice, bob = core(KEYS[0], HERE), core(KEYS[1], THERE)
    bob.receive(0.0, node_id_of(KEYS[3]), THERE, state(3, 1, 1, 0).alive)
    alice.receive(0.0, bob.node_id, THERE, bob.states()[0].alive)
    exchange = periodic_push_pull(alice)
    legacy = [m for m in exchange.request if not isinstance(m, PushPullDigest)]  # 1.0 skips it
    reply = bob.answer_exchange(1.0, alice.node_id, legacy)
    assert alice.exchange_done(1.1, exchange.id, reply)
    assert alice.member(node_id_of(KEYS[3])).status is MemberStatus.ALIVE
    assert bob.member(alice.node_id).status is MemberStatus.ALIVE


def test_given_a_digest_far_longer_than_any_table_then_the_request_is_refused():
    bob = core(KEYS[1], THERE)
    flood = PushPullDigest(members=tuple((i.to_bytes(8, "big"), 1, 1) for i in range(4096)))
    own = PushPull(join=False, members=(state(0, 1, 1, 0),))
    (error,) = bob.answer_exchange(1.0, node_id_of(KEYS[0]), (own, flood, flood))
    assert isinstance(error, Error)
    assert error.code == "too_large"

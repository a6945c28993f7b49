"""The membership core in isolation: every state-table transition and every handler.

One core (ALICE) is driven by hand, stepping `now`; other nodes exist only as keys that
sign claims. Expected outcomes are written out here, not read from `TRANSITIONS`, so a
change to the table has to be a change to these tests too.
"""

from __future__ import annotations

import random

import nacl.signing
import pytest

from nodenet.protocol.config import PROFILES
from nodenet.protocol.identity import node_id_of
from nodenet.protocol.members import TRANSITIONS, EventKind, MemberStatus
from nodenet.protocol.membership import INCARNATION_CEILING, Datagram, Exchange, Membership
from nodenet.protocol.messages import (
    UINT64_MAX,
    Ack,
    Address,
    Alive,
    Claim,
    Dead,
    Error,
    Leave,
    MemberState,
    Message,
    MessageType,
    Nack,
    Ping,
    PingReq,
    PushPull,
    ShortPing,
    Suspect,
)

ME = nacl.signing.SigningKey(b"\x10" * 32)
X = nacl.signing.SigningKey(b"\x11" * 32)  # the member whose fate the tests decide
ACCUSERS = [nacl.signing.SigningKey(bytes([0x20 + i]) * 32) for i in range(6)]
X_ID = node_id_of(X)
HERE = Address("127.0.0.1", 7950)
X_ADDR = Address("127.0.0.1", 7951)


def core(now: float = 0.0, **kwargs) -> Membership:
    return Membership(key=ME, address=HERE, now=now, rng=random.Random(7), **kwargs)


def alive(key=X, incarnation=1, address=X_ADDR, tags=None) -> Alive:
    return Alive.create(key, incarnation=incarnation, address=address, tags=tags or {})


def put(m: Membership, claim: Claim, now: float = 0.0) -> list:
    m.receive(now, node_id_of(ACCUSERS[0]), X_ADDR, claim)
    return [e.kind for e in m.events()]


def member_in(status: MemberStatus, incarnation: int = 5) -> Membership:
    """A core that holds X in `status` at `incarnation`, with enough others to be a cluster."""
    m = core()
    for accuser in ACCUSERS:
        put(m, alive(accuser, address=Address("127.0.0.2", 7000 + accuser.encode()[0])))
    put(m, alive(incarnation=incarnation))
    if status is MemberStatus.SUSPECT:
        put(m, Suspect.create(ACCUSERS[0], node=X_ID, incarnation=incarnation))
    elif status is MemberStatus.DEAD:
        put(m, Dead.create(ACCUSERS[0], node=X_ID, incarnation=incarnation))
    elif status is MemberStatus.LEFT:
        put(m, Leave.create(X, incarnation=incarnation))
    assert m.member(X_ID).status is status
    m.events()
    return m


def make_claim(kind: MessageType, incarnation: int) -> Claim:
    if kind is MessageType.ALIVE:
        return alive(incarnation=incarnation, tags={"changed": str(incarnation)})
    if kind is MessageType.SUSPECT:
        return Suspect.create(ACCUSERS[1], node=X_ID, incarnation=incarnation)
    if kind is MessageType.DEAD:
        return Dead.create(ACCUSERS[1], node=X_ID, incarnation=incarnation)
    return Leave.create(X, incarnation=incarnation)


A, S, D, L = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
EXPECTED = {
    # (state, claim): {incarnation offset: (new state, events)}
    (A, MessageType.ALIVE): {-1: (A, []), 0: (A, []), 1: (A, [EventKind.UPDATED])},
    (S, MessageType.ALIVE): {-1: (S, []), 0: (S, []), 1: (A, [EventKind.REFUTED])},
    (D, MessageType.ALIVE): {-1: (D, []), 0: (D, []), 1: (A, [EventKind.JOINED])},
    (L, MessageType.ALIVE): {-1: (L, []), 0: (L, []), 1: (A, [EventKind.JOINED])},
    (A, MessageType.SUSPECT): {
        -1: (A, []),
        0: (S, [EventKind.SUSPECTED]),
        1: (S, [EventKind.SUSPECTED]),
    },
    (S, MessageType.SUSPECT): {-1: (S, []), 0: (S, []), 1: (S, [])},
    (D, MessageType.SUSPECT): {-1: (D, []), 0: (D, []), 1: (D, [])},
    (L, MessageType.SUSPECT): {-1: (L, []), 0: (L, []), 1: (L, [])},
    (A, MessageType.DEAD): {-1: (A, []), 0: (D, [EventKind.FAILED]), 1: (D, [EventKind.FAILED])},
    (S, MessageType.DEAD): {-1: (S, []), 0: (D, [EventKind.FAILED]), 1: (D, [EventKind.FAILED])},
    (D, MessageType.DEAD): {-1: (D, []), 0: (D, []), 1: (D, [])},
    (L, MessageType.DEAD): {-1: (L, []), 0: (L, []), 1: (L, [])},
    (A, MessageType.LEAVE): {-1: (A, []), 0: (L, [EventKind.LEFT]), 1: (L, [EventKind.LEFT])},
    (S, MessageType.LEAVE): {-1: (S, []), 0: (L, [EventKind.LEFT]), 1: (L, [EventKind.LEFT])},
    (D, MessageType.LEAVE): {-1: (D, []), 0: (L, [EventKind.LEFT]), 1: (L, [EventKind.LEFT])},
    (L, MessageType.LEAVE): {-1: (L, []), 0: (L, []), 1: (L, [])},
}
CASES = [
    (state, kind, offset, outcome)
    for (state, kind), outcomes in EXPECTED.items()
    for offset, outcome in outcomes.items()
]


@pytest.mark.parametrize(
    ("state", "kind", "offset", "outcome"),
    CASES,
    ids=[f"{s.name}-{k.name}-inc{o:+d}" for s, k, o, _ in CASES],
)
def test_state_table(state, kind, offset, outcome):
    m = member_in(state, incarnation=5)
    events = put(m, make_claim(kind, 5 + offset))
    assert (m.member(X_ID).status, events) == outcome


def test_the_table_in_code_matches_the_expectations():
    accepted = {
        key
        for key, outcomes in EXPECTED.items()
        if any(o[0] is not key[0] or o[1] for o in outcomes.values())
    }
    assert set(TRANSITIONS) - {(S, MessageType.SUSPECT)} == accepted


def test_given_an_unknown_member_then_only_alive_adds_it():
    m = core()
    for kind in (MessageType.SUSPECT, MessageType.DEAD, MessageType.LEAVE):
        assert put(m, make_claim(kind, 1)) == []
        assert m.member(X_ID) is None
    assert put(m, alive()) == [EventKind.JOINED]
    assert m.member(X_ID).address == X_ADDR


def test_given_an_alive_with_only_a_new_incarnation_then_no_user_event_but_it_is_gossiped():
    m = member_in(A, incarnation=5)
    assert put(m, alive(incarnation=6)) == []
    assert m.member(X_ID).incarnation == 6


# --- suspicion timers ---------------------------------------------------------------------


def _run(m: Membership, until: float, *, answer: bool = True) -> list[Datagram | Exchange]:
    """Run timers up to `until`; with `answer`, every member ACKs our pings at once."""
    outputs = []
    while (t := m.get_timer()) is not None and t <= until:
        m.handle_timer(t)
        batch = m.outputs()
        outputs.extend(batch)
        for d in _datagrams(batch) if answer else ():
            for ping in (x for x in d.messages if isinstance(x, Ping)):
                m.receive(t, ping.target, d.address, Ack(seq=ping.seq))
        outputs.extend(m.outputs())
    return outputs


def test_given_a_suspicion_without_confirmations_then_dead_after_the_maximum_timeout():
    m = member_in(A)
    assert put(m, Suspect.create(ACCUSERS[1], node=X_ID, incarnation=5), now=10.0) == [
        EventKind.SUSPECTED
    ]
    n = m.cluster_size()
    assert n == 8
    minimum = 4 * 1.0 * 1.0  # suspicion_mult · max(1, log10(8)) · probe_interval
    _run(m, 10.0 + 6 * minimum - 0.01)
    assert m.member(X_ID).status is S
    _run(m, 10.0 + 6 * minimum)
    assert m.member(X_ID).status is D
    assert [e.kind for e in m.events()] == [EventKind.FAILED]


def test_given_independent_confirmations_then_dead_at_the_minimum_timeout():
    m = member_in(A)
    put(m, Suspect.create(ACCUSERS[1], node=X_ID, incarnation=5), now=10.0)
    put(m, Suspect.create(ACCUSERS[2], node=X_ID, incarnation=5), now=10.5)
    put(m, Suspect.create(ACCUSERS[3], node=X_ID, incarnation=5), now=11.0)
    assert m.stats.confirmations == 2
    _run(m, 13.99)
    assert m.member(X_ID).status is S
    _run(m, 14.0)
    assert m.member(X_ID).status is D


def test_given_a_refutation_then_the_suspicion_timer_does_nothing():
    m = member_in(A)
    put(m, Suspect.create(ACCUSERS[1], node=X_ID, incarnation=5), now=10.0)
    put(m, alive(incarnation=6), now=11.0)
    _run(m, 100.0)
    assert m.member(X_ID).status is A


# --- who is heard ------------------------------------------------------------------------

STRANGER = nacl.signing.SigningKey(b"\x30" * 32)  # holds the cluster key, is no member


@pytest.mark.parametrize("kind", [Suspect, Dead])
def test_given_an_accusation_by_a_non_member_then_it_is_ignored_and_counted(kind):
    m = member_in(A)
    assert put(m, kind.create(STRANGER, node=X_ID, incarnation=5)) == []
    assert m.member(X_ID).status is A
    assert m.stats.accusations_ignored == 1


@pytest.mark.parametrize("accuser_status", [D, L])
def test_given_an_accusation_by_a_member_we_believe_gone_then_it_is_ignored(accuser_status):
    m = member_in(A)
    accuser = ACCUSERS[4]
    accuser_id = node_id_of(accuser)
    if accuser_status is D:
        put(m, Dead.create(ACCUSERS[5], node=accuser_id, incarnation=1))
    else:
        put(m, Leave.create(accuser, incarnation=1))
    assert m.member(accuser_id).status is accuser_status
    m.events()
    assert put(m, Dead.create(accuser, node=X_ID, incarnation=5)) == []
    assert m.member(X_ID).status is A
    assert m.stats.accusations_ignored == 1


def test_given_an_accusation_by_a_suspect_member_then_it_is_heard():
    m = member_in(A)
    accuser_id = node_id_of(ACCUSERS[4])
    put(m, Suspect.create(ACCUSERS[5], node=accuser_id, incarnation=1))
    m.events()
    assert put(m, Suspect.create(ACCUSERS[4], node=X_ID, incarnation=5)) == [EventKind.SUSPECTED]
    assert m.stats.accusations_ignored == 0


@pytest.mark.parametrize("kind", [Suspect, Dead])
def test_given_an_accusation_at_the_incarnation_ceiling_then_nobody_acts_on_it(kind):
    m = member_in(A)
    for incarnation in (INCARNATION_CEILING, UINT64_MAX):
        assert put(m, kind.create(ACCUSERS[1], node=X_ID, incarnation=incarnation)) == []
    assert m.member(X_ID).status is A
    assert m.stats.accusations_ignored == 2
    # just below the ceiling it is an ordinary accusation
    assert put(m, kind.create(ACCUSERS[1], node=X_ID, incarnation=INCARNATION_CEILING - 1))


@pytest.mark.parametrize("kind", [Suspect, Dead])
def test_given_an_accusation_about_us_at_the_largest_incarnation_then_no_crash_no_refutation(
    kind,
):
    m = core(incarnation=3)
    m.receive(0.0, X_ID, X_ADDR, kind.create(X, node=m.node_id, incarnation=UINT64_MAX))
    assert m.incarnation == 3
    assert m.events() == []
    assert m.stats.accusations_ignored == 1
    # one just below the ceiling is refuted, and leaves room for our next tag change
    m.receive(
        0.0, X_ID, X_ADDR, kind.create(X, node=m.node_id, incarnation=INCARNATION_CEILING - 1)
    )
    assert m.incarnation == INCARNATION_CEILING
    m.set_tags(0.0, {"after": "refutation"})
    assert m.incarnation == INCARNATION_CEILING + 1


def test_given_a_push_pull_with_a_tombstone_at_the_ceiling_then_the_member_is_kept_alive():
    m = core()
    dead = Dead.create(ACCUSERS[2], node=X_ID, incarnation=UINT64_MAX)
    m.answer_exchange(
        0.0, X_ID, (PushPull(join=False, members=(MemberState(alive(incarnation=2), dead),)),)
    )
    assert m.member(X_ID).status is A
    assert m.stats.accusations_ignored == 1


# --- claims about ourselves ---------------------------------------------------------------


@pytest.mark.parametrize("kind", [Suspect, Dead])
def test_given_an_accusation_about_us_then_we_refute_with_a_higher_incarnation(kind):
    m = core(incarnation=3)
    m.receive(0.0, X_ID, X_ADDR, kind.create(X, node=m.node_id, incarnation=3))
    assert m.incarnation == 4
    assert [e.kind for e in m.events()] == [EventKind.REFUTED]
    assert m.awareness == 1
    refutation = next(s.alive for s in m.states() if s.alive.node == m.node_id)
    assert refutation.incarnation == 4


def test_given_an_old_accusation_about_us_then_ignored():
    m = core(incarnation=3)
    m.receive(0.0, X_ID, X_ADDR, Suspect.create(X, node=m.node_id, incarnation=2))
    assert m.incarnation == 3
    assert m.events() == []


def test_given_our_own_alive_echoed_back_then_no_refutation():
    m = core(incarnation=3)
    ours = m.states()[0].alive
    m.receive(0.0, X_ID, X_ADDR, ours)
    assert m.incarnation == 3


def test_given_an_alive_of_ours_from_a_previous_life_then_we_refute_above_it():
    m = core(incarnation=0)
    previous = Alive.create(ME, incarnation=9, address=Address("10.9.9.9", 1))
    m.receive(0.0, X_ID, X_ADDR, previous)
    assert m.incarnation == 10


def test_given_a_replayed_leave_of_ours_then_we_refute_it():
    m = core(incarnation=2)
    m.receive(0.0, X_ID, X_ADDR, Leave.create(ME, incarnation=2))
    assert m.incarnation == 3


def test_given_restore_of_a_previous_life_then_we_start_above_its_incarnation():
    m = core()
    dead_me = Dead.create(X, node=m.node_id, incarnation=7)
    m.restore(0.0, [MemberState(Alive.create(ME, incarnation=7, address=HERE), dead_me)])
    assert m.incarnation == 8


# --- probing ------------------------------------------------------------------------------


def _datagrams(outputs) -> list[Datagram]:
    return [o for o in outputs if isinstance(o, Datagram)]


def _first(outputs, message_type) -> tuple[Datagram, Message]:
    for d in _datagrams(outputs):
        for message in d.messages:
            if isinstance(message, message_type):
                return d, message
    raise AssertionError(f"no {message_type.__name__} in {outputs}")


def _until_probe(m: Membership) -> tuple[float, Datagram, Ping]:
    """Step timers (no answers) until the core sends a probe; return when, where and what."""
    for _ in range(100):
        started = m.get_timer()
        out = _run(m, started, answer=False)
        for d in _datagrams(out):
            for message in d.messages:
                if isinstance(message, Ping):
                    return started, d, message
    raise AssertionError("no probe within 100 timer steps")


def test_given_a_member_when_probing_then_ping_and_on_ack_no_suspicion():
    m = member_in(A)
    m.events()
    out = _run(m, 1.0)
    datagram, ping = _first(out, Ping)
    target = m.member(ping.target)
    assert datagram.address == target.address
    m.receive(m.get_timer() - 0.9, ping.target, datagram.address, Ack(seq=ping.seq))
    assert m.stats.probe_acks == 1
    _run(m, 5.0)
    assert m.stats.probe_failures == 0


def test_given_no_ack_then_indirect_probes_and_tcp_fallback_then_suspect():
    m = member_in(A)
    started, _, ping = _until_probe(m)
    later = _run(m, started + 0.5, answer=False)  # probe_timeout: indirect stage
    reqs = [msg for d in _datagrams(later) for msg in d.messages if isinstance(msg, PingReq)]
    assert len(reqs) == 3
    assert all(r.seq == ping.seq and r.target == ping.target and r.nack for r in reqs)
    (tcp,) = [o for o in later if isinstance(o, Exchange)]
    assert tcp.request == (Ping(seq=ping.seq, target=ping.target),)
    m.receive(started + 0.7, node_id_of(ACCUSERS[0]), HERE, Nack(seq=ping.seq))
    m.exchange_done(started + 0.8, tcp.id, None)
    _run(m, started + 1.0, answer=False)
    assert m.member(ping.target).status is S
    # 3 expected NACKs, 1 received: awareness rises by 2.
    assert m.awareness == 2


def test_given_udp_fails_but_tcp_answers_then_no_suspicion():
    m = member_in(A)
    started, _, _ = _until_probe(m)
    later = _run(m, started + 0.5, answer=False)
    (tcp,) = [o for o in later if isinstance(o, Exchange)]
    m.exchange_done(started + 0.6, tcp.id, (Ack(seq=tcp.request[0].seq),))
    _run(m, started + 1.0, answer=False)
    assert m.stats.tcp_fallback_acks == 1
    assert all(info.status is A for info in m.members())


def test_given_a_suspect_member_when_probed_then_the_suspicion_rides_along():
    m = member_in(S)
    for _ in range(20):
        out = _run(m, m.get_timer())
        for d in _datagrams(out):
            if any(isinstance(x, Ping) and x.target == X_ID for x in d.messages):
                assert any(isinstance(x, Suspect) and x.node == X_ID for x in d.messages)
                return
    raise AssertionError("X was never probed")


def test_given_a_ping_for_us_then_ack_to_the_source_address():
    m = core()
    m.receive(0.0, X_ID, X_ADDR, Ping(seq=42, target=m.node_id))
    (datagram,) = m.outputs()
    assert datagram.address == X_ADDR
    assert datagram.messages[0] == Ack(seq=42)


def test_given_a_ping_for_someone_else_then_no_answer():
    m = core()
    m.receive(0.0, X_ID, X_ADDR, Ping(seq=42, target=X_ID))
    assert m.outputs() == []


def test_given_a_short_ping_for_us_then_ack_and_for_another_prefix_nothing():
    m = core()
    m.receive(0.0, X_ID, X_ADDR, ShortPing(seq=7, target=m.node_id[:8]))
    (datagram,) = m.outputs()
    assert datagram.messages[0] == Ack(seq=7)
    m.receive(0.0, X_ID, X_ADDR, ShortPing(seq=8, target=X_ID[:8]))
    assert m.outputs() == []


def _probes_of_x(m: Membership, until: float) -> list[Message]:
    out = _run(m, until)
    return [
        x
        for d in _datagrams(out)
        for x in d.messages
        if isinstance(x, Ping | ShortPing) and x.target in (X_ID, X_ID[:8])
    ]


def test_given_a_member_that_spoke_1_1_since_its_restart_then_it_gets_short_pings():
    m = member_in(A)
    assert all(isinstance(p, Ping) for p in _probes_of_x(m, 20.0))  # never said its minor
    m.receive(20.0, X_ID, X_ADDR, Ack(seq=0), minor=1)
    short = _probes_of_x(m, 40.0)
    assert short
    assert all(isinstance(p, ShortPing) and p.target == X_ID[:8] for p in short)
    # It restarts (a new incarnation): perhaps at an older version, so full PINGs again
    # until it speaks; and an envelope at minor 0 means 1.0.
    m.receive(40.0, X_ID, X_ADDR, alive(incarnation=9))
    assert all(isinstance(p, Ping) for p in _probes_of_x(m, 60.0))
    m.receive(60.0, X_ID, X_ADDR, Ack(seq=0), minor=1)
    m.receive(60.0, X_ID, X_ADDR, Ack(seq=0), minor=0)
    assert all(isinstance(p, Ping) for p in _probes_of_x(m, 80.0))


def test_given_a_ping_req_then_relay_ack_or_nack_after_the_timeout():
    m = member_in(A)
    requester = Address("127.0.0.3", 9)
    m.receive(0.0, X_ID, requester, PingReq(seq=5, target=X_ID, address=X_ADDR, nack=True))
    (relay,) = m.outputs()
    ping = relay.messages[0]
    assert relay.address == X_ADDR
    assert isinstance(ping, Ping)
    m.receive(0.1, X_ID, X_ADDR, Ack(seq=ping.seq))
    (forward,) = m.outputs()
    assert (forward.address, forward.messages[0]) == (requester, Ack(seq=5))
    # A second request that gets no ACK is answered with a NACK after probe_timeout.
    m.receive(1.0, X_ID, requester, PingReq(seq=6, target=X_ID, address=X_ADDR, nack=True))
    m.outputs()
    assert any(d.messages[0] == Nack(seq=6) for d in _datagrams(_run(m, 1.5)))


def test_given_a_ping_req_naming_another_address_then_the_known_address_is_probed():
    m = member_in(A)
    elsewhere = Address("127.0.0.99", 4242)
    m.receive(
        0.0,
        X_ID,
        Address("127.0.0.3", 9),
        PingReq(seq=5, target=X_ID, address=elsewhere, nack=True),
    )
    (relay,) = m.outputs()
    assert relay.address == X_ADDR
    assert isinstance(relay.messages[0], Ping)


@pytest.mark.parametrize("status", [None, D, L])
def test_given_a_ping_req_for_a_node_not_believed_live_then_an_immediate_nack_and_no_ping(status):
    m = core() if status is None else member_in(status)
    m.outputs()  # whatever building the table queued
    requester = Address("127.0.0.3", 9)
    m.receive(0.0, X_ID, requester, PingReq(seq=5, target=X_ID, address=X_ADDR, nack=True))
    # (updates may ride along on the NACK)
    assert [(d.address, d.messages[0]) for d in _datagrams(m.outputs())] == [
        (requester, Nack(seq=5))
    ]
    assert m.stats.ping_reqs_refused == 1
    # without nack, nothing at all
    m.receive(0.0, X_ID, requester, PingReq(seq=6, target=X_ID, address=X_ADDR, nack=False))
    assert _datagrams(m.outputs()) == []


def test_given_piggyback_room_then_updates_ride_on_acks_within_the_datagram_limit():
    m = member_in(A)
    m.receive(0.0, X_ID, X_ADDR, Ping(seq=1, target=m.node_id))
    (datagram,) = m.outputs()
    assert datagram.messages[0] == Ack(seq=1)
    assert any(isinstance(x, Alive) for x in datagram.messages[1:])
    from nodenet.protocol.messages import encode_message
    from nodenet.protocol.wire import sealed_size

    assert sealed_size([len(encode_message(x)) for x in datagram.messages], 2**40) <= 1400


# --- push-pull, join, leave, tags -------------------------------------------------------


def test_given_join_then_push_pull_with_our_state_and_merge_of_the_reply():
    m = core()
    (exchange_id,) = m.join(0.0, [X_ADDR])
    (exchange,) = m.outputs()
    assert exchange.id == exchange_id
    assert exchange.request[0].join is True
    assert exchange.request[0].members[0].alive.node == m.node_id
    reply = PushPull(join=False, members=(MemberState(alive()),))
    m.exchange_done(0.1, exchange_id, (reply,))
    assert m.member(X_ID).status is A


def test_given_a_push_pull_request_then_merge_and_answer_with_our_state():
    m = core()
    answer = m.answer_exchange(0.0, X_ID, (PushPull(join=True, members=(MemberState(alive()),)),))
    assert m.member(X_ID).status is A
    (push,) = answer
    assert {s.alive.node for s in push.members} == {m.node_id, X_ID}


def test_given_a_remote_dead_claim_in_push_pull_then_we_only_suspect():
    m = member_in(A)
    dead = Dead.create(ACCUSERS[2], node=X_ID, incarnation=5)
    m.answer_exchange(
        0.0, X_ID, (PushPull(join=False, members=(MemberState(alive(incarnation=5), dead),)),)
    )
    assert m.member(X_ID).status is S


def test_given_an_unknown_tombstone_in_push_pull_then_kept_silently():
    m = core()
    leave = Leave.create(X, incarnation=2)
    m.answer_exchange(
        0.0, X_ID, (PushPull(join=False, members=(MemberState(alive(incarnation=2), leave),)),)
    )
    assert m.member(X_ID).status is L
    assert m.events() == []


def test_given_a_tcp_ping_then_ack_or_error():
    m = core()
    assert m.answer_exchange(0.0, X_ID, (Ping(seq=3, target=m.node_id),)) == (Ack(seq=3),)
    (error,) = m.answer_exchange(0.0, X_ID, (Ping(seq=3, target=X_ID),))
    assert isinstance(error, Error)
    (error,) = m.answer_exchange(0.0, X_ID, (Ack(seq=3),))
    assert error.code == "unsupported"


def test_given_leave_then_signed_leave_is_gossiped_and_probing_stops():
    m = member_in(A)
    m.leave(0.0)
    out = m.outputs()
    leaves = [x for d in _datagrams(out) for x in d.messages if isinstance(x, Leave)]
    assert leaves
    assert leaves[0].node == m.node_id
    assert not m.leave_done()
    for _ in range(200):
        out = _run(m, m.get_timer())
        assert not any(isinstance(x, Ping) for d in _datagrams(out) for x in d.messages)
        if m.leave_done():
            break
    assert m.leave_done()


def test_given_new_tags_then_a_new_incarnation_is_announced():
    m = member_in(A)
    before = m.incarnation
    m.set_tags(1.0, {"role": "db"})
    assert m.incarnation == before + 1
    assert [e.kind for e in m.events()] == [EventKind.UPDATED]
    assert m.states()[0].alive.tags == (("role", "db"),)


def test_given_a_dead_member_then_reaped_after_reap_after():
    m = member_in(D)
    config = PROFILES["lan"]
    _run(m, config.reap_after_s - 1)
    assert m.member(X_ID) is not None
    _run(m, config.reap_after_s + 1)
    assert m.member(X_ID) is None
    assert EventKind.REAPED in [e.kind for e in m.events()]


def test_given_non_membership_messages_then_receive_says_so():
    from nodenet.protocol.messages import Entry

    assert core().receive(0.0, X_ID, X_ADDR, Entry(entry=b"x")) is False

"""The pure formulas and small parts of the membership core, table-driven.

The expected numbers are memberlist's own test tables (util_test.go, suspicion_test.go),
so our timing matches what memberlist users know.
"""

from __future__ import annotations

import pytest
from support.wire import ALICE, BOB, MALLORY

from nodenet.protocol.awareness import Awareness
from nodenet.protocol.broadcast_queue import BroadcastQueue
from nodenet.protocol.config import (
    PROFILES,
    MembershipConfig,
    push_pull_interval,
    remaining_suspicion_time,
    retransmit_limit,
    suspicion_timeout,
)
from nodenet.protocol.errors import LocalProtocolError
from nodenet.protocol.identity import node_id_of
from nodenet.protocol.messages import Ack, Entry, Ping
from nodenet.protocol.suspicion import Suspicion


@pytest.mark.parametrize(
    ("mult", "n", "expected"), [(3, 0, 0), (3, 1, 3), (3, 99, 6), (4, 100, 12), (4, 1000, 16)]
)
def test_retransmit_limit(mult, n, expected):
    assert retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("n", "expected_s"),
    [(5, 1.0), (10, 1.0), (50, 1.698), (100, 2.0), (500, 2.698), (1000, 3.0)],
)
def test_suspicion_timeout(n, expected_s):
    assert suspicion_timeout(3, n, 1.0) / 3 == pytest.approx(expected_s, abs=1e-9)


@pytest.mark.parametrize(
    ("confirmations", "expected", "elapsed", "min_s", "max_s", "remaining"),
    [
        (0, 3, 0, 2, 30, 30),
        (1, 3, 2, 2, 30, 14),
        (2, 3, 3, 2, 30, 4.81),
        (3, 3, 4, 2, 30, -2),
        (4, 3, 5, 2, 30, -3),
        (5, 3, 10, 2, 30, -8),
        (0, 0, 1, 2, 30, 1),  # nobody expected to confirm: the minimum applies at once
    ],
)
def test_remaining_suspicion_time(confirmations, expected, elapsed, min_s, max_s, remaining):
    got = remaining_suspicion_time(confirmations, expected, elapsed, min_s, max_s)
    assert got == pytest.approx(remaining, abs=1e-9)


@pytest.mark.parametrize(
    ("n", "multiplier"),
    [(0, 1), (1, 1), (32, 1), (33, 2), (64, 2), (65, 3), (128, 3), (129, 4), (10_000, 10)],
)
def test_push_pull_interval_scales_above_32_members(n, multiplier):
    assert push_pull_interval(30.0, n) == 30.0 * multiplier


def test_profiles_carry_memberlists_numbers():
    lan, wan, local = PROFILES["lan"], PROFILES["wan"], PROFILES["local"]
    assert (lan.probe_interval_s, lan.probe_timeout_s, lan.indirect_checks) == (1.0, 0.5, 3)
    assert (lan.gossip_interval_s, lan.gossip_nodes, lan.suspicion_mult) == (0.2, 3, 4)
    assert (lan.suspicion_max_timeout_mult, lan.retransmit_mult, lan.push_pull_interval_s) == (
        6,
        4,
        30.0,
    )
    assert (wan.probe_interval_s, wan.probe_timeout_s, wan.suspicion_mult) == (5.0, 3.0, 6)
    assert (local.probe_timeout_s, local.gossip_interval_s, local.push_pull_interval_s) == (
        0.2,
        0.1,
        15.0,
    )


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"probe_interval_s": 0}, "positive number of seconds"),
        ({"probe_timeout_s": 2.0}, "shorter than"),
        ({"indirect_checks": 0}, "positive integer"),
        ({"gossip_nodes": 2.5}, "positive integer"),
        ({"retransmit_mult": True}, "must be a number"),
        ({"no_such_field": 1}, "unknown membership settings"),
    ],
)
def test_given_bad_config_values_then_errors_name_the_field(changes, match):
    with pytest.raises(LocalProtocolError, match=match):
        MembershipConfig().with_changes(**changes)


def test_awareness_clamps_and_scales():
    awareness = Awareness(8)
    assert awareness.apply_delta(-1) == 0
    assert awareness.apply_delta(3) == 3
    assert awareness.scale(0.5) == 2.0
    assert awareness.apply_delta(100) == 7
    assert awareness.scale(1.0) == 8.0


def test_suspicion_shrinks_with_distinct_confirmations_only():
    a, b, c = (node_id_of(k) for k in (ALICE, BOB, MALLORY))
    suspicion = Suspicion(accuser=a, expected=2, min_s=2.0, max_s=30.0, now=100.0)
    assert suspicion.deadline == 130.0
    assert not suspicion.confirm(a, 101.0)  # the first accuser again is not independent
    assert suspicion.confirm(b, 101.0)
    first = suspicion.deadline
    assert first < 130.0
    assert not suspicion.confirm(b, 102.0)
    assert suspicion.confirm(c, 102.0)
    assert suspicion.deadline == pytest.approx(102.0)  # all expected confirmations: minimum
    assert not suspicion.confirm(node_id_of(ALICE), 103.0)


def test_suspicion_without_expected_confirmations_uses_the_minimum():
    suspicion = Suspicion(accuser=node_id_of(ALICE), expected=0, min_s=2.0, max_s=30.0, now=0.0)
    assert suspicion.deadline == 2.0


def test_broadcast_queue_sends_fewest_transmits_first_newest_first_and_retires():
    queue = BroadcastQueue(retransmit_mult=1, max_items=10)
    first, second = Ack(seq=1), Ack(seq=2)
    queue.queue(first)
    queue.queue(second)
    assert queue.pending() == [second, first]
    # retransmit limit for 9 members: 1 × ceil(log10(10)) = 1 → sent once, then retired.
    assert queue.take(1000, members=9) == [second, first]
    assert len(queue) == 0


def test_broadcast_queue_replaces_by_key_and_skips_what_does_not_fit():
    queue = BroadcastQueue(retransmit_mult=4, max_items=10)
    node = node_id_of(ALICE)
    queue.queue(Ping(seq=1, target=node), key=node)
    queue.queue(Ping(seq=2, target=node), key=node)
    big = Entry(entry=b"x" * 500)
    queue.queue(big)
    assert queue.pending() == [big, Ping(seq=2, target=node)]
    assert queue.take(100, members=10) == [Ping(seq=2, target=node)]  # big does not fit
    assert queue.pending() == [big, Ping(seq=2, target=node)]
    assert node in queue


def test_broadcast_queue_is_bounded_dropping_the_most_sent():
    queue = BroadcastQueue(retransmit_mult=4, max_items=2)
    queue.queue(Ack(seq=1))
    queue.take(1000, members=10)  # seq=1 has been sent once
    queue.queue(Ack(seq=2))
    queue.queue(Ack(seq=3))
    assert queue.pending() == [Ack(seq=3), Ack(seq=2)]

"""One member frozen (SIGSTOP) for 2 s out of every 10 s: Lifeguard must keep everyone
alive, the frozen member included (a 2 s stall is shorter than any suspicion timeout), and
a member that is really killed meanwhile must still be declared dead within the bound the
lan profile promises.

The bound: a dead member is probed within one pass of the probe ring ((n - 1) probe
intervals), then suspected for at most `suspicion_max_timeout_mult` × the minimum suspicion
timeout (memberlist's formula, `nodenet.protocol.config`), plus one probe interval for the
failed probe itself.
"""

from __future__ import annotations

import threading
import time

import pytest
from chaos.harness import Cluster, EventRecorder, figure, scaled, wait_for

from nodenet.protocol.config import PROFILES, suspicion_timeout

pytestmark = pytest.mark.slow

NODES = 5
CYCLES = scaled(3, 30)
PAUSE_S, PERIOD_S = 2.0, 10.0


def detection_bound(n: int) -> float:
    lan = PROFILES["lan"]
    minimum = suspicion_timeout(lan.suspicion_mult, n, lan.probe_interval_s)
    return (
        (n - 1) * lan.probe_interval_s
        + lan.suspicion_max_timeout_mult * minimum
        + (lan.probe_interval_s)
    )


def test_given_a_member_paused_2_of_every_10_seconds_then_nobody_dies_but_a_killed_member_does():
    with Cluster(NODES) as cluster, EventRecorder(cluster.nodes) as events:
        cluster.start()
        sleeper, victim = cluster[NODES - 1], cluster[NODES - 2]
        stop = threading.Event()
        pauses = []

        def pause_loop() -> None:
            while not stop.is_set():
                sleeper.pause()
                pauses.append(time.monotonic())
                stop.wait(PAUSE_S)
                sleeper.resume()
                stop.wait(PERIOD_S - PAUSE_S)

        worker = threading.Thread(target=pause_loop, daemon=True)
        started = time.monotonic()
        worker.start()
        try:
            time.sleep(CYCLES * PERIOD_S)
            paused_phase = time.monotonic()
            false_dead = events.select("failed", since=started)
            suspected = events.select("suspected", since=started)
            refuted = events.select("refuted", since=started)
            figure(
                f"pause: {len(pauses)} pauses of {PAUSE_S:.0f} s every {PERIOD_S:.0f} s over"
                f" {paused_phase - started:.0f} s: {len(suspected)} suspicions"
                f" ({sum(e.member == sleeper.name for e in suspected)} of the paused member),"
                f" {len(refuted)} refutations, {len(false_dead)} declared dead"
            )
            assert not false_dead, f"members declared dead while only paused: {false_dead}"

            killed_at = time.monotonic()
            victim.kill9()
            others = [n.name for n in cluster.nodes if n is not victim]
            bound = detection_bound(NODES)

            def everyone_buried() -> bool:
                seen = {e.observer for e in events.select("failed", member=victim.name)}
                return set(others) <= seen

            took = wait_for(everyone_buried, timeout=bound + 30, what=f"{victim.name} dead")
            first = min(e.at for e in events.select("failed", member=victim.name)) - killed_at
        finally:
            stop.set()
            worker.join(timeout=15)
            if sleeper.paused:
                sleeper.resume()
        healthy_dead = [e for e in events.select("failed") if e.member != victim.name]
        figure(
            f"pause: killed {victim.name} (kill -9) declared dead by a first member after"
            f" {first:.1f} s, by every member after {took:.1f} s; the lan profile's bound for"
            f" {NODES} members is {bound:.1f} s; healthy members declared dead: {len(healthy_dead)}"
        )
        assert took <= bound, f"detection took {took:.1f} s, over the profile's {bound:.1f} s"
        assert not healthy_dead, f"healthy members declared dead: {healthy_dead}"
        cluster.wait_membership(timeout=30)

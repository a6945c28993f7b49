"""Link models: each latency distribution has the configured mean; loss, duplication and
reordering happen at their rates; bad values are refused with the key named."""

from __future__ import annotations

import random
import statistics

import pytest

from nodenet.simulations.links import DISTRIBUTIONS, LinkModel


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_given_a_distribution_then_delays_have_the_configured_mean(distribution):
    link = LinkModel(latency_s=0.01, jitter_s=0.004, distribution=distribution)
    rng = random.Random(1)
    samples = [link.one_way(rng) for _ in range(20000)]
    assert min(samples) >= 0
    assert statistics.fmean(samples) == pytest.approx(0.01, rel=0.03)
    if distribution == "constant":
        assert set(samples) == {0.01}
    if distribution in ("normal", "lognormal"):
        assert statistics.stdev(samples) == pytest.approx(0.004, rel=0.05)


def test_given_loss_duplication_and_reordering_then_each_happens_at_its_rate():
    link = LinkModel(
        latency_s=0.001, jitter_s=0, loss=0.1, duplicate=0.05, reorder=0.2, reorder_delay_s=0.5
    )
    rng = random.Random(2)
    outcomes = [link.delays(rng) for _ in range(50000)]
    delivered = [o for o in outcomes if o]
    assert 1 - len(delivered) / len(outcomes) == pytest.approx(0.1, abs=0.01)
    assert sum(len(o) == 2 for o in delivered) / len(delivered) == pytest.approx(0.05, abs=0.01)
    held = sum(o[0] > 0.4 for o in delivered) / len(delivered)
    assert held == pytest.approx(0.2, abs=0.01)


def test_given_a_lossy_link_then_tcp_pays_retransmission_timeouts():
    rng = random.Random(3)
    clean = LinkModel(latency_s=0.001, jitter_s=0)
    lossy = LinkModel(latency_s=0.001, jitter_s=0, loss=0.3)
    assert clean.tcp_segment(rng, handshake=True) == 0.001
    delays = [lossy.tcp_segment(rng, handshake=False) for _ in range(2000)]
    assert statistics.fmean(delays) > 0.05  # 200 ms RTO on 30% of segments, doubling


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"loss": 1.5}, "link.loss"),
        ({"distribution": "pareto"}, "link.distribution"),
        ({"latency_s": -1}, "link.latency_s"),
        ({"latency_s": 0, "distribution": "lognormal"}, "lognormal"),
    ],
)
def test_given_bad_link_values_then_the_error_names_the_key(changes, match):
    with pytest.raises(ValueError, match=match):
        LinkModel(**changes)

"""How one datagram fares on a link: a latency distribution, loss, duplication, reordering.

A `LinkModel` answers PeerSim's question for one datagram: "deliver after d" (possibly
twice) or "drop". Its parts are independent and compose: the one-way delay is drawn from a
`Latency` distribution; loss drops; duplication delivers a second copy with its own delay;
reordering holds a datagram back so that later ones overtake it. The network layers the
rest on top (per-node bandwidth, per-node link overrides, partitions, blocked directions).
All randomness comes from the generator passed in, so runs are reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["DISTRIBUTIONS", "LinkModel", "latency_sampler"]

DISTRIBUTIONS = ("constant", "uniform", "normal", "lognormal", "exponential")
"""Latency distributions: `latency_s` is always the mean; `jitter_s` is the half-width
(uniform) or the standard deviation (normal, lognormal); constant and exponential ignore
it (an exponential's standard deviation equals its mean)."""

Sampler = Callable[[random.Random], float]


def latency_sampler(distribution: str, mean_s: float, jitter_s: float) -> Sampler:
    """A function drawing one non-negative one-way delay (seconds) from `distribution`."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"link.distribution: {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}"
        )
    if not (mean_s >= 0 and math.isfinite(mean_s)):
        raise ValueError(f"link.latency_s: {mean_s!r} must be a finite number ≥ 0")
    if not (jitter_s >= 0 and math.isfinite(jitter_s)):
        raise ValueError(f"link.jitter_s: {jitter_s!r} must be a finite number ≥ 0")
    if distribution == "constant" or (jitter_s == 0 and distribution != "exponential"):
        return lambda rng: mean_s
    if distribution == "uniform":
        low, high = mean_s - jitter_s, mean_s + jitter_s
        return lambda rng: max(0.0, rng.uniform(low, high))
    if distribution == "normal":
        return lambda rng: max(0.0, rng.gauss(mean_s, jitter_s))
    if distribution == "lognormal":
        if mean_s == 0:
            raise ValueError("link.latency_s must be positive for a lognormal distribution")
        sigma = math.sqrt(math.log1p((jitter_s / mean_s) ** 2))
        mu = math.log(mean_s) - sigma * sigma / 2  # so that the mean is mean_s
        return lambda rng: rng.lognormvariate(mu, sigma)
    if mean_s == 0:
        return lambda rng: 0.0
    rate = 1.0 / mean_s
    return lambda rng: rng.expovariate(rate)


def _probability(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"link.{name}: {value!r} must be a probability in 0..1")


@dataclass(slots=True)
class LinkModel:
    """One datagram's fate on a link. Every field is validated on construction."""

    latency_s: float = 0.001
    """Mean one-way delay in seconds (1 ms: a LAN)."""
    jitter_s: float = 0.0005
    """Spread of the delay: ± half-width (uniform) or standard deviation (normal, lognormal)."""
    distribution: str = "uniform"
    """One of `DISTRIBUTIONS`."""
    loss: float = 0.0
    """Probability a datagram is dropped."""
    duplicate: float = 0.0
    """Probability a delivered datagram arrives twice (each copy with its own delay)."""
    reorder: float = 0.0
    """Probability a datagram is held back `reorder_delay_s` more, so later ones overtake it."""
    reorder_delay_s: float = 0.01
    """Extra delay of a reordered datagram, in seconds."""
    _sample: Sampler = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            _probability(name, getattr(self, name))
        if not (self.reorder_delay_s >= 0 and math.isfinite(self.reorder_delay_s)):
            raise ValueError("link.reorder_delay_s must be a finite number ≥ 0")
        self._sample = latency_sampler(self.distribution, self.latency_s, self.jitter_s)

    def one_way(self, rng: random.Random) -> float:
        """One propagation delay sample (seconds)."""
        return self._sample(rng)

    def delays(self, rng: random.Random) -> list[float]:
        """Delivery delays for one datagram: [] dropped, [d] once, [d1, d2] duplicated."""
        if self.loss and rng.random() < self.loss:
            return []
        first = self._sample(rng)
        if self.reorder and rng.random() < self.reorder:
            first += self.reorder_delay_s
        if self.duplicate and rng.random() < self.duplicate:
            return [first, self._sample(rng)]
        return [first]

    def tcp_segment(self, rng: random.Random, *, handshake: bool) -> float:
        """Time for one TCP segment to get through, retransmitting lost copies.

        Linux waits 1 s before resending a lost SYN or SYN-ACK and at least 200 ms before
        resending data, doubling each time; that is what makes TCP slow on lossy links.
        TCP delivers in order and exactly once, so duplication and reordering do not apply.
        """
        timeout = 1.0 if handshake else 0.2
        waited = 0.0
        for _ in range(8):
            if not self.loss or rng.random() >= self.loss:
                return waited + self._sample(rng)
            waited += timeout
            timeout *= 2
        return math.inf  # the connection gives up

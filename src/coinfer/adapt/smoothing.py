"""A time-decayed weighted mean: the exponential moving average every estimate is built from.

Samples arrive at irregular times (one per request, a probe now and then), so the usual EMA with a
fixed factor per sample would forget faster when traffic is heavy. Here a sample's weight halves
every `half_life_s` seconds of *time*, whatever the traffic:

    mean(t) = sum_k w_k 2^(-(t - t_k)/h) x_k / sum_k w_k 2^(-(t - t_k)/h)

Both sums decay by the same factor, so the mean only changes when a sample comes; each update is
O(1). With weight w_k = b_k (bytes) it is a byte-weighted mean; with x_k = m_k / p_k and
w_k = p_k it is the decayed ratio of sums sum(m) / sum(p). An estimate whose newest sample is older
than `expiry_s` says nothing (None): the caller falls back to the configured value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DecayingMean:
    """The decayed sums of the module docstring, as of the newest sample's time `at_s`."""

    weighted_sum: float = 0.0
    weight: float = 0.0
    at_s: float = -math.inf

    def add(self, value: float, at_s: float, half_life_s: float, weight: float = 1.0) -> DecayingMean:
        """The mean with one more sample; a sample of zero weight or not finite changes nothing."""
        if not (weight > 0 and math.isfinite(weight) and math.isfinite(value) and math.isfinite(at_s)):
            return self
        if self.weight == 0.0:
            return DecayingMean(weight * value, weight, at_s)
        if at_s >= self.at_s:
            keep = 0.5 ** ((at_s - self.at_s) / half_life_s)
            return DecayingMean(self.weighted_sum * keep + weight * value, self.weight * keep + weight, at_s)
        # A late sample (it ended before the newest one) counts as old as it is.
        late = weight * 0.5 ** ((self.at_s - at_s) / half_life_s)
        return DecayingMean(self.weighted_sum + late * value, self.weight + late, self.at_s)

    def value(self, now_s: float, expiry_s: float) -> float | None:
        """The mean, or None when there is no sample or the newest is more than `expiry_s` old."""
        if self.weight <= 0.0 or now_s - self.at_s > expiry_s:
            return None
        return self.weighted_sum / self.weight

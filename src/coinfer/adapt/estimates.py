"""Smoothed estimates of the cluster as it is now, and the problem they describe.

`Estimates` is a snapshot: per directed link its bandwidth and latency, per device a speed
factor (measured compute time / the profile's prediction, so 2.0 means twice as slow as
profiled). `apply` turns a deploy-time Problem into the problem those estimates describe; every
policy and solver then works on it unchanged. `Estimator` (below) builds snapshots from the
traffic itself.

How the estimator reads the traffic (REFERENCE section 4 for the probe; the rest is ours):
- Bandwidth, from request hops of at least `SMALL_HOP_BYTES`: a hop of b bytes in t seconds on a
  link whose fixed time is latency + overhead spent w = t - latency - overhead seconds on the wire.
  The estimate is the decayed total of bits over the decayed total of wire seconds: a mean of
  each hop's 8 b / w weighted by its bytes, harmonically, so a big transfer says more than a small
  one, and a transfer that crawled counts for the whole time it took (a collapse shows at the
  first slow hop; its weight then halves every half-life as fast hops come). A hop whose time is
  almost all fixed time (w under `MIN_WIRE_FRACTION` of t) is skipped: dividing by a near-zero
  difference would give any bandwidth at all.
- Latency, from request hops below `SMALL_HOP_BYTES` (t - overhead - 8 b / bandwidth) and from the
  two-point probe (`fit_two_point`: omega - overhead). The latency used for the bandwidth formula
  and the bandwidth used for the latency formula are the current estimates (configured when none).
- Probe pairing: a probe hop (`HopSample.probe`) is *small* below `SMALL_HOP_BYTES` and *large*
  otherwise. Each probe is paired with the fastest probe of the other kind on the same link that
  ended at most `PROBE_PAIR_WINDOW_S` before it started (queueing can only add time, so the fastest
  of repeated sends is the truest; from its start, because a 1 MB probe on a crawling link takes
  seconds), and each pair is one fit. The paper's round (1 KB twice, then 1 MB twice; see
  `coinfer.adapt.probing`) gives two fits, each from the faster 1 KB send; alternating sizes give
  three. Any order works.
- Device speed factor: sum(measured stage seconds) / sum(predicted_s) per device, decayed; the
  `predicted_s` of a StageSample must come from the deploy-time problem, whose node times `apply`
  scales.
- Every estimate is a `DecayingMean` (half-life `half_life_s` on the samples' `at_s`); one with no
  sample for `expiry_s` is left out of the snapshot, so the configured value applies again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from coinfer.adapt.probing import SMALL_HOP_BYTES, LinkActivity, LinkId
from coinfer.adapt.records import HopSample, RequestRecord, StageSample
from coinfer.adapt.smoothing import DecayingMean
from coinfer.cluster import Cluster, Link
from coinfer.errors import UserInputError
from coinfer.problem import Problem

MIN_WIRE_FRACTION = 0.1  # a hop with less wire time than this share of its time is skipped for bandwidth
PROBE_PAIR_WINDOW_S = 2.0  # a probe pairs with probes of the other size that ended this long before it began
PROBE_KEPT = 8  # probes remembered per link for pairing


@dataclass(frozen=True)
class LinkEstimate:
    """A link's bandwidth and latency as believed now (`apply` keeps its configured overhead)."""

    bandwidth_bits_per_s: float
    latency_s: float


@dataclass(frozen=True)
class Estimates:
    """What is currently believed; a link or device not named keeps its configured values."""

    links: Mapping[tuple[str, str], LinkEstimate] = field(default_factory=dict)
    speed_factor: Mapping[str, float] = field(default_factory=dict)


def apply(problem: Problem, estimates: Estimates) -> Problem:
    """`problem` with each estimated link's bandwidth and latency and each device's node times
    scaled by its speed factor (graph, objective and constraints unchanged)."""
    links = tuple(
        dataclasses.replace(link, bandwidth_bits_per_s=e.bandwidth_bits_per_s, latency_s=e.latency_s)
        if (e := estimates.links.get((link.source, link.target))) is not None else link
        for link in problem.cluster.links)
    cluster = Cluster(problem.cluster.name, problem.cluster.devices, links)
    times = {device: ({n: t * f for n, t in node_times.items()}
                      if (f := estimates.speed_factor.get(device, 1.0)) != 1.0 else node_times)
             for device, node_times in problem.node_time_s.items()}
    return dataclasses.replace(problem, cluster=cluster, node_time_s=times)


def fit_two_point(s1_bytes: float, tau1_s: float, s2_bytes: float, tau2_s: float) -> LinkEstimate | None:
    """The link model time(s) = omega + s / beta through two probes (REFERENCE section 4 step 2).

    beta = (s2 - s1) / (tau2 - tau1) bytes/s and omega = max(0, tau1 - s1 / beta), returned as
    `LinkEstimate(8 beta, omega)`; omega is the whole fixed time of a message (a link's latency
    plus its per-message overhead). None, keeping the old model, when tau2 <= tau1 or s2 <= s1:
    two points that do not rise say nothing about the slope.
    """
    if s2_bytes <= s1_bytes or tau2_s <= tau1_s:
        return None
    beta_bytes_per_s = (s2_bytes - s1_bytes) / (tau2_s - tau1_s)
    omega_s = max(0.0, tau1_s - s1_bytes / beta_bytes_per_s)
    return LinkEstimate(8.0 * beta_bytes_per_s, omega_s)


class Estimator:
    """Smoothed link and device estimates from served requests and link probes.

    Feed it every completed request (`observe`) and every probe hop (`observe_hop`); ask for a
    `snapshot` before each decision. Not thread-safe: one serving loop owns it. See the module
    docstring for how each estimate is read from the traffic.
    """

    def __init__(self, problem: Problem, *, half_life_s: float = 5.0, expiry_s: float = 30.0) -> None:
        if not (half_life_s > 0 and math.isfinite(half_life_s)):
            raise UserInputError(f"half_life_s must be a positive number of seconds, got {half_life_s}")
        if not expiry_s > 0:
            raise UserInputError(f"expiry_s must be a positive number of seconds, got {expiry_s}")
        self.half_life_s = half_life_s
        self.expiry_s = expiry_s
        self._cluster = problem.cluster
        self._bandwidth_s_per_bit: dict[LinkId, DecayingMean] = {}  # wire seconds per bit (1 / bandwidth)
        self._latency: dict[LinkId, DecayingMean] = {}
        self._speed: dict[str, DecayingMean] = {}
        self._probes: dict[LinkId, list[HopSample]] = {}
        self._activity = LinkActivity()

    @property
    def activity(self) -> LinkActivity:
        """When each link last carried a probe or a hop big enough to measure bandwidth (`LinkActivity.thin`)."""
        return self._activity

    def observe(self, record: RequestRecord) -> None:
        """Learn from one completed (or failed) request: its stage times and its hops."""
        for stage in record.stages:
            self._observe_stage(stage)
        for hop in record.hops:
            self.observe_hop(hop)

    def observe_hop(self, sample: HopSample) -> None:
        """Learn from one hop: a probe is paired and fitted, a request hop read directly."""
        key = (sample.source, sample.target)
        link = self._cluster.link(*key)
        if link is None or not (sample.seconds > 0 and math.isfinite(sample.seconds)):
            return
        if sample.probe:
            self._observe_probe(key, link, sample)
        else:
            self._observe_request_hop(key, link, sample)
        if sample.probe or sample.size_bytes >= SMALL_HOP_BYTES:
            self._activity = self._activity.used([key], sample.at_s)

    def snapshot(self, now_s: float) -> Estimates:
        """The estimates still fresh at `now_s`; expired ones are left out (configured values apply)."""
        links: dict[tuple[str, str], LinkEstimate] = {}
        for link in self._cluster.links:
            key = (link.source, link.target)
            bandwidth = self._bandwidth(key, now_s)
            latency = self._fresh(self._latency.get(key), now_s)
            if bandwidth is not None or latency is not None:
                links[key] = LinkEstimate(link.bandwidth_bits_per_s if bandwidth is None else bandwidth,
                                          link.latency_s if latency is None else latency)
        speed = {d: v for d in self._speed if (v := self._fresh(self._speed[d], now_s)) is not None}
        return Estimates(links, speed)

    # -- reading samples ----------------------------------------------------------------------

    def _observe_stage(self, stage: StageSample) -> None:
        if not (stage.predicted_s > 0 and stage.seconds >= 0 and math.isfinite(stage.seconds)):
            return
        # value m/p with weight p: the decayed ratio of sums, so long stages count for more
        mean = self._speed.get(stage.device, DecayingMean())
        self._speed[stage.device] = mean.add(stage.seconds / stage.predicted_s, stage.at_s, self.half_life_s,
                                             stage.predicted_s)

    def _observe_request_hop(self, key: LinkId, link: Link, hop: HopSample) -> None:
        if hop.size_bytes >= SMALL_HOP_BYTES:
            fixed_s = self._latency_s(key, link, hop.at_s) + link.overhead_s + link.runtime_s
            wire_s = hop.seconds - fixed_s
            if wire_s >= MIN_WIRE_FRACTION * hop.seconds:
                self._add_bandwidth(key, 8.0 * hop.size_bytes, wire_s, hop.at_s)
        else:
            wire_s = 8.0 * hop.size_bytes / self._bandwidth_bits_per_s(key, link, hop.at_s)
            fixed_s = link.overhead_s + link.runtime_s
            self._add(self._latency, key, max(0.0, hop.seconds - fixed_s - wire_s), hop.at_s, 1.0)

    def _observe_probe(self, key: LinkId, link: Link, probe: HopSample) -> None:
        small = probe.size_bytes < SMALL_HOP_BYTES
        started_s = probe.at_s - probe.seconds
        kept = [p for p in self._probes.get(key, [])
                if p.at_s <= probe.at_s and started_s - p.at_s <= PROBE_PAIR_WINDOW_S]
        others = [p for p in kept if (p.size_bytes < SMALL_HOP_BYTES) != small]
        if others:
            other = min(others, key=lambda p: p.seconds)
            lo, hi = (probe, other) if small else (other, probe)
            fit = fit_two_point(lo.size_bytes, lo.seconds, hi.size_bytes, hi.seconds)
            if fit is not None:
                fixed_s = link.overhead_s + link.runtime_s
                self._add(self._latency, key, max(0.0, fit.latency_s - fixed_s), probe.at_s, 1.0)
                bits = 8.0 * (hi.size_bytes - lo.size_bytes)
                self._add_bandwidth(key, bits, bits / fit.bandwidth_bits_per_s, probe.at_s)
        self._probes[key] = [*kept, probe][-PROBE_KEPT:]

    def _latency_s(self, key: LinkId, link: Link, at_s: float) -> float:
        value = self._fresh(self._latency.get(key), at_s)
        return link.latency_s if value is None else value

    def _bandwidth_bits_per_s(self, key: LinkId, link: Link, at_s: float) -> float:
        value = self._bandwidth(key, at_s)
        return link.bandwidth_bits_per_s if value is None else value

    def _bandwidth(self, key: LinkId, now_s: float) -> float | None:
        s_per_bit = self._fresh(self._bandwidth_s_per_bit.get(key), now_s)
        return None if s_per_bit is None or s_per_bit <= 0 else 1.0 / s_per_bit

    def _add_bandwidth(self, key: LinkId, bits: float, wire_s: float, at_s: float) -> None:
        # the mean of seconds per bit weighted by bits is total seconds / total bits (module docstring)
        self._add(self._bandwidth_s_per_bit, key, wire_s / bits, at_s, bits)

    def _add(self, means: dict[LinkId, DecayingMean], key: LinkId, value: float, at_s: float, weight: float) -> None:
        means[key] = means.get(key, DecayingMean()).add(value, at_s, self.half_life_s, weight)

    def _fresh(self, mean: DecayingMean | None, now_s: float) -> float | None:
        return None if mean is None else mean.value(now_s, self.expiry_s)

"""Estimates: the decaying mean, the two-point probe fit, the Estimator, and apply()."""

from __future__ import annotations

import dataclasses

import pytest

from coinfer.adapt.estimates import Estimates, Estimator, LinkEstimate, apply, fit_two_point
from coinfer.adapt.probing import LinkActivity
from coinfer.adapt.records import HopSample, RequestRecord, StageSample
from coinfer.adapt.smoothing import DecayingMean
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.plan import parse_plan
from coinfer.problem import Problem
from tests.adapt.helpers import chain_graph, problem_of


def two_devices(bps: float = 8e6, latency_s: float = 0.01, overhead_s: float = 0.0) -> Problem:
    cluster = Cluster("c", (Device("phone", "end", 1e9, power_w=2.0, origin=True), Device("edge", "edge", 1e10)),
                      (Link("phone", "edge", bps, latency_s=latency_s, overhead_s=overhead_s),
                       Link("edge", "phone", bps, latency_s=latency_s, overhead_s=overhead_s)))
    return problem_of(chain_graph([1e9, 2e9], [2_000_000, 1_000]), cluster)


def hop(size: int, seconds: float, at_s: float, probe: bool = False) -> HopSample:
    return HopSample("phone", "edge", size, seconds, at_s, probe)


def test_decaying_mean_halves_old_weight_every_half_life() -> None:
    # 10 at t=0 then 20 at t=5 with a 5 s half-life: weights 0.5 and 1, mean (5 + 20) / 1.5.
    mean = DecayingMean().add(10.0, 0.0, 5.0).add(20.0, 5.0, 5.0)
    assert mean.value(5.0, 30.0) == pytest.approx(25.0 / 1.5)
    # a late sample (t=0 again, arriving after t=5) counts with the weight of its age: 0.5
    late = mean.add(40.0, 0.0, 5.0)
    assert late.value(5.0, 30.0) == pytest.approx((5 + 20 + 20) / 2.0)
    # a weighted sample: 0 with weight 3 against 20 with weight 1 at the same time
    assert DecayingMean().add(20.0, 1.0, 5.0).add(0.0, 1.0, 5.0, weight=3.0).value(1.0, 30.0) == pytest.approx(5.0)


def test_decaying_mean_expires() -> None:
    mean = DecayingMean().add(1.0, 10.0, 5.0)
    assert mean.value(40.0, 30.0) == 1.0
    assert mean.value(40.1, 30.0) is None
    assert DecayingMean().value(0.0, 30.0) is None


def test_two_point_fit_recovers_omega_and_beta() -> None:
    omega_s, beta = 0.004, 2.5e6  # 4 ms fixed, 2.5 MB/s
    fit = fit_two_point(1024, omega_s + 1024 / beta, 1048576, omega_s + 1048576 / beta)
    assert fit is not None
    assert fit.bandwidth_bits_per_s == pytest.approx(8 * beta)
    assert fit.latency_s == pytest.approx(omega_s)


def test_two_point_fit_keeps_the_old_model_when_time_does_not_rise() -> None:
    assert fit_two_point(1024, 0.05, 1048576, 0.05) is None
    assert fit_two_point(1024, 0.05, 1048576, 0.04) is None
    # a noisy small probe slower than the slope allows: omega clamps at 0
    fit = fit_two_point(1024, 0.0001, 1048576, 0.5)
    assert fit is not None and fit.latency_s == 0.0


def test_estimator_recovers_a_bandwidth_from_request_hops() -> None:
    # configured 8 Mbit/s, 10 ms; really 2 Mbit/s. Hops of 20 kB..2 MB take 10 ms + 8 b / 2e6.
    problem = two_devices()
    est = Estimator(problem)
    for k, size in enumerate([20_000, 2_000_000, 300_000, 50_000, 1_000_000]):
        est.observe_hop(hop(size, 0.01 + 8 * size / 2e6, float(k)))
    link = est.snapshot(4.0).links[("phone", "edge")]
    assert link.bandwidth_bits_per_s == pytest.approx(2e6)
    assert link.latency_s == 0.01  # no small hop nor probe: the configured latency stays
    assert ("edge", "phone") not in est.snapshot(4.0).links


def test_small_hops_tell_latency_not_bandwidth() -> None:
    # 1 kB hops over a link now 30 ms away, at the configured 8 Mbit/s: 30 ms + 1 ms of wire.
    est = Estimator(two_devices())
    for k in range(3):
        est.observe_hop(hop(1000, 0.030 + 8 * 1000 / 8e6, float(k)))
    link = est.snapshot(3.0).links[("phone", "edge")]
    assert link.latency_s == pytest.approx(0.030)
    assert link.bandwidth_bits_per_s == 8e6


def test_a_hop_of_nothing_but_fixed_time_says_nothing_about_bandwidth() -> None:
    est = Estimator(two_devices(latency_s=0.1))
    est.observe_hop(hop(100_000, 0.1005, 0.0))  # 0.5 ms of wire in 100.5 ms: under 10%
    assert est.snapshot(0.0).links == {}


def test_estimator_pairs_probes_and_fits_the_link() -> None:
    # the paper's round: 1 KB twice (one delayed by 20 ms of queueing), then 1 MB twice.
    problem = two_devices(overhead_s=0.001)
    omega_s, beta = 0.006, 1e6  # really: 5 ms latency + 1 ms overhead, 1 MB/s

    def took(size: int) -> float:
        return omega_s + size / beta

    est = Estimator(problem)
    est.observe_hop(hop(1024, took(1024) + 0.020, 0.0, probe=True))
    est.observe_hop(hop(1024, took(1024), 0.1, probe=True))
    est.observe_hop(hop(1048576, took(1048576), 1.2, probe=True))
    est.observe_hop(hop(1048576, took(1048576), 2.3, probe=True))
    link = est.snapshot(2.3).links[("phone", "edge")]
    assert link.latency_s == pytest.approx(0.005)  # omega less the configured overhead
    assert link.bandwidth_bits_per_s == pytest.approx(8 * beta)
    assert est.activity.thin([("phone", "edge"), ("edge", "phone")], 2.3) == (("edge", "phone"),)


def test_probes_too_far_apart_are_not_paired() -> None:
    est = Estimator(two_devices())
    est.observe_hop(hop(1024, 0.011, 0.0, probe=True))
    est.observe_hop(hop(1048576, 1.06, 5.0, probe=True))
    assert est.snapshot(5.0).links == {}


def test_estimates_expire_back_to_the_configured_values() -> None:
    est = Estimator(two_devices(), half_life_s=5.0, expiry_s=30.0)
    est.observe_hop(hop(1_000_000, 0.01 + 8e6 / 2e6, 10.0))
    assert ("phone", "edge") in est.snapshot(40.0).links
    assert est.snapshot(40.1).links == {}


def test_speed_factor_is_the_decayed_ratio_of_measured_to_predicted() -> None:
    # edge: 0.2 s predicted, measured 0.3 s then 0.5 s at the same moment: (0.3 + 0.5) / 0.4 = 2
    est = Estimator(two_devices())
    stages = (StageSample("edge", ("n1",), 0.3, 0.2, 1.0), StageSample("edge", ("n1",), 0.5, 0.2, 1.0))
    est.observe(RequestRecord(0, 0, 0.0, 1.0, stages))
    assert est.snapshot(1.0).speed_factor == {"edge": pytest.approx(2.0)}


def test_estimator_rejects_a_bad_half_life() -> None:
    with pytest.raises(UserInputError, match="half_life_s"):
        Estimator(two_devices(), half_life_s=0.0)


def test_apply_changes_evaluate_latency_as_expected() -> None:
    # n0@phone | n1@edge: n0's 2 MB cross phone -> edge. Halving the bandwidth to 4 Mbit/s adds
    # 2 MB x 8 / 8e6 = 2 s of transfer; 30 ms more latency adds 30 ms to each of the two hops; an
    # edge twice as slow adds its 0.2 s of compute again.
    problem = two_devices()
    plan = parse_plan("n0@phone | n1@edge", problem.graph, problem.cluster.device_names)
    before = evaluate(plan, problem).latency_s
    slow = Estimates({("phone", "edge"): LinkEstimate(4e6, 0.01)})
    assert evaluate(plan, apply(problem, slow)).latency_s == pytest.approx(before + 2.0)
    far = Estimates({("phone", "edge"): LinkEstimate(8e6, 0.04), ("edge", "phone"): LinkEstimate(8e6, 0.04)})
    assert evaluate(plan, apply(problem, far)).latency_s == pytest.approx(before + 0.06)
    busy = Estimates(speed_factor={"edge": 2.0})
    assert evaluate(plan, apply(problem, busy)).latency_s == pytest.approx(before + 0.2)
    assert apply(problem, Estimates()) == dataclasses.replace(problem)


def test_link_activity_counts_only_hops_that_measure_bandwidth() -> None:
    record = RequestRecord(0, 0, 0.0, 1.0, hops=(hop(1000, 0.01, 1.0), HopSample("edge", "phone", 50_000, 0.1, 2.0)))
    activity = LinkActivity().seen(record)
    links = [("phone", "edge"), ("edge", "phone")]
    assert activity.thin(links, 5.0, quiet_s=10.0) == (("phone", "edge"),)
    assert activity.used([("phone", "edge")], 4.0).thin(links, 5.0, quiet_s=10.0) == ()
    assert activity.thin(links, 12.5, quiet_s=10.0) == tuple(links)

"""Each term of the cost model on an example worked out by hand."""

from __future__ import annotations

import copy
import math

import pytest

from coinfer.api import make_problem, plan
from coinfer.cluster import BackgroundLoad, Dvfs, Radio
from coinfer.cost import evaluate, terms
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.files.graph_file import graph_from_dict
from tests.conftest import TOY_CHAIN, TOY_CLUSTER


def split(problem):  # type: ignore[no-untyped-def]
    return evaluate(plan(problem, placement="a@phone | b@edge"), problem)


def test_compute_time(toy_problem):  # type: ignore[no-untyped-def]
    # a on the phone: 1e9 FLOP / 1e9 FLOP/s = 1 s; b on the edge: 2e9 / 1e10 = 0.2 s.
    b = split(toy_problem)
    assert b.compute_s == pytest.approx(1.2)
    assert [s.compute_s for s in b.stages] == pytest.approx([1.0, 0.2])


def test_transfer_time_counts_latency_overhead_and_bytes(toy_problem):  # type: ignore[no-untyped-def]
    # a's 2 MB at 1 MB/s: 0.01 + 0.005 + 2 = 2.015 s; the 1 kB result back: 0.015 + 0.001 = 0.016 s.
    b = split(toy_problem)
    assert [t.time_s for t in b.transfers] == pytest.approx([2.015, 0.016])
    assert b.transfers[1].is_result
    assert b.transfer_s == pytest.approx(2.031)
    assert b.latency_s == pytest.approx(3.231)


def test_origin_only_sends_nothing(toy_problem):  # type: ignore[no-untyped-def]
    # Everything on the phone: 3 s of compute, no hop, 2 W x 3 s = 6 J.
    b = evaluate(plan(toy_problem, solver="origin-only"), toy_problem)
    assert b.transfers == ()
    assert (b.latency_s, b.energy_j) == pytest.approx((3.0, 6.0))


def test_input_is_sent_from_the_origin(toy_problem):  # type: ignore[no-untyped-def]
    # Everything on the edge: input 1 MB up (1.015 s), 0.3 s compute, result back (0.016 s).
    b = evaluate(plan(toy_problem, placement="edge"), toy_problem)
    assert [t.tensor for t in b.transfers] == ["input", "b"]
    assert b.latency_s == pytest.approx(1.015 + 0.3 + 0.016)


def test_shared_tensor_is_sent_once_per_device() -> None:
    # a feeds b and c, both on the edge: a's output crosses once.
    doc = copy.deepcopy(TOY_CHAIN)
    doc["nodes"].append({"id": "c", "inputs": ["a"], "flops": 0, "output_bytes": 1e3})
    graph = graph_from_dict(doc)
    problem = make_problem(graph, cluster_from_dict(TOY_CLUSTER))
    b = evaluate(plan(problem, placement="a@phone | b..c@edge"), problem)
    assert [t.tensor for t in b.transfers].count("a") == 1


def test_linear_and_transmit_energy(toy_problem):  # type: ignore[no-untyped-def]
    # phone: 2 W x 1 s compute + 1.5 W x 2.015 s sending = 5.0225 J; edge: 0 W compute, 1.5 W x 0.016 s.
    b = split(toy_problem)
    assert b.energy_by_device_j["phone"] == pytest.approx(5.0225)
    assert b.energy_by_device_j["edge"] == pytest.approx(0.024)
    assert b.origin_energy_j == pytest.approx(5.0225)
    assert b.energy_j == pytest.approx(5.0465)


def test_dvfs_energy_is_kappa_f2_cycles() -> None:
    # kappa = 1e-27, f = 1 GHz: P = kappa f^3 = 1 W; 4 FLOP/cycle -> 4e9 FLOP/s.
    # 4e9 FLOP = 1e9 cycles: 1 s, and E = kappa f^2 C = 1e-27 * 1e18 * 1e9 = 1 J.
    dvfs = Dvfs(kappa_w_per_hz3=1e-27, clock_hz=1e9, flops_per_cycle=4)
    assert (dvfs.flops_per_s, dvfs.power_w) == pytest.approx((4e9, 1.0))
    doc = copy.deepcopy(TOY_CLUSTER)
    doc["devices"]["phone"] = {"dvfs": {"kappa_w_per_hz3": 1e-27, "clock_hz": 1e9, "flops_per_cycle": 4},
                               "origin": True}
    graph = graph_from_dict({"version": 1, "input_bytes": 0,
                             "nodes": [{"id": "x", "inputs": ["input"], "flops": 4e9, "output_bytes": 0}]})
    problem = make_problem(graph, cluster_from_dict(doc))
    b = evaluate(plan(problem, solver="origin-only"), problem)
    assert (b.compute_s, b.energy_j) == pytest.approx((1.0, 1.0))


def test_queueing_mm1_and_md1() -> None:
    # lambda = 10/s, mu = 40/s. M/M/1 time in system: 1 / (40 - 10) = 1/30 s.
    # M/D/1: rho = 0.25, waiting 0.25 / (2 * 40 * 0.75) = 1/240 s, plus service 1/40 s = 7/240 s.
    assert terms.queueing_time_s(BackgroundLoad(10, 40, "mm1")) == pytest.approx(1 / 30)
    assert terms.queueing_time_s(BackgroundLoad(10, 40, "md1")) == pytest.approx(7 / 240)
    assert terms.queueing_time_s(BackgroundLoad(40, 40, "mm1")) == math.inf


def test_queueing_is_charged_once_per_loaded_device() -> None:
    doc = copy.deepcopy(TOY_CLUSTER)
    doc["devices"]["edge"]["background"] = {"arrival_rate_per_s": 10, "service_rate_per_s": 40}
    problem = make_problem(graph_from_dict(TOY_CHAIN), cluster_from_dict(doc))
    b = split(problem)
    assert b.queueing_s == pytest.approx(1 / 30)
    assert b.latency_s == pytest.approx(3.231 + 1 / 30)
    # Throughput: the edge is 25% busy with others, so its 0.2 s becomes 0.2 / 0.75 per request.
    edge_only = evaluate(plan(problem, placement="edge"), problem)
    assert edge_only.bottleneck == "link phone->edge"  # 1.015 s beats 0.4 s of stretched compute


def test_shannon_hartley_rate() -> None:
    # W = 1 MHz, p h / (N0 W) = 0.3 * 1e-6 / (1e-13 * 1e6) = 3 -> r = 1e6 * log2(4) = 2 Mbit/s.
    assert Radio(1e6, 0.3, 1e-6, 1e-13).rate_bits_per_s == pytest.approx(2e6)
    doc = copy.deepcopy(TOY_CLUSTER)
    doc["links"] = [{"between": ["phone", "edge"],
                     "radio": {"channel_width_hz": 1e6, "transmit_power_w": 0.3, "channel_gain": 1e-6,
                               "noise_w_per_hz": 1e-13}}]
    cluster = cluster_from_dict(doc)
    link = cluster.link("phone", "edge")
    assert link is not None and link.bandwidth_bits_per_s == pytest.approx(2e6)
    assert link.power_w == pytest.approx(0.3)  # the radio's transmit power, since none was given


def test_prices_per_second_per_byte_and_electricity() -> None:
    # Edge compute 0.2 s at 1e-3 USD/s = 2e-4. Per byte: 1e-9 USD/B * (2 MB + 1 kB) = 2.001e-3.
    # Electricity: the phone draws 2 J + 3.0225 J = 5.0225 J = 5.0225/3.6e6 kWh at 0.36 USD/kWh.
    doc = copy.deepcopy(TOY_CLUSTER)
    doc["links"][0]["price_usd_per_byte"] = 1e-9
    doc["devices"]["phone"]["electricity_usd_per_kwh"] = 0.36
    problem = make_problem(graph_from_dict(TOY_CHAIN), cluster_from_dict(doc))
    b = split(problem)
    assert b.cost_usd == pytest.approx(2e-4 + 2.001e-3 + 5.0225 / 3.6e6 * 0.36)


def test_reliability_multiplies_devices_and_links(toy_problem):  # type: ignore[no-untyped-def]
    # Both devices compute, both link directions carry data: 0.999 * 0.998 * 0.99 * 0.99.
    assert split(toy_problem).reliability == pytest.approx(0.999 * 0.998 * 0.99 * 0.99)
    assert evaluate(plan(toy_problem, solver="origin-only"), toy_problem).reliability == pytest.approx(0.999)


def test_pipelined_throughput_is_set_by_the_bottleneck(toy_problem):  # type: ignore[no-untyped-def]
    # Busy per request: phone 1 s, edge 0.2 s, link up 2.015 s, link down 0.016 s.
    b = split(toy_problem)
    assert b.bottleneck == "link phone->edge"
    assert b.throughput_rps == pytest.approx(1 / 2.015)


def test_memory_constraint_names_device_and_shortfall() -> None:
    # The edge needs b's 4 MB of parameters + a's 2 MB in + 1 kB out = 6.001 MB but has 5 MB.
    doc = copy.deepcopy(TOY_CLUSTER)
    doc["devices"]["edge"]["memory_bytes"] = 5e6
    problem = make_problem(graph_from_dict(TOY_CHAIN), cluster_from_dict(doc))
    b = split(problem)
    assert b.memory_by_device_bytes == {"phone": 4_000_000, "edge": 6_001_000}
    [v] = b.violations
    assert (v.kind, v.subject, v.value - v.limit) == ("memory", "edge", pytest.approx(1.001e6))
    assert "1.0 MB short" in v.message


def test_deadline_energy_budget_and_capacity_constraints(toy_graph, toy_cluster) -> None:  # type: ignore[no-untyped-def]
    # Latency 3.231 s > 3 s; origin energy 5.0225 J > 5 J; at 0.6 requests/s the uplink is
    # busy 0.6 * 2.015 = 121% of the time.
    problem = make_problem(toy_graph, toy_cluster, deadline_s=3.0, origin_energy_budget_j=5.0,
                           request_rate_per_s=0.6)
    found = {v.kind: v for v in split(problem).violations}
    assert set(found) == {"deadline", "energy-budget", "capacity"}
    assert found["deadline"].value - found["deadline"].limit == pytest.approx(0.231)
    assert found["energy-budget"].value == pytest.approx(5.0225)
    assert found["capacity"].subject == "link phone->edge"
    assert found["capacity"].value == pytest.approx(1.209)


def test_missing_link_is_infinite_and_reported() -> None:
    doc = copy.deepcopy(TOY_CLUSTER)
    doc["devices"]["cloud"] = {"flops_per_s": 1e11}
    problem = make_problem(graph_from_dict(TOY_CHAIN), cluster_from_dict(doc))
    b = evaluate(plan(problem, placement="a@phone | b@cloud"), problem)
    assert b.latency_s == math.inf
    assert b.throughput_rps == 0.0
    assert any(v.kind == "link" and "no link" in v.message for v in b.violations)


def test_weighted_objective(toy_graph, toy_cluster) -> None:  # type: ignore[no-untyped-def]
    problem = make_problem(toy_graph, toy_cluster, objective="latency=1,energy=0.5")
    b = split(problem)
    assert b.objective_value == pytest.approx(3.231 + 0.5 * 5.0465)


def test_runtime_cost_per_message_is_priced_on_every_hop_and_kept_in_cluster_files(toy_problem):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from coinfer.files.cluster_file import cluster_to_dict

    slow = copy.deepcopy(TOY_CLUSTER)
    for link in slow["links"]:
        link["runtime_s"] = 0.25
    cluster = cluster_from_dict(slow, "runtime")
    assert cluster_from_dict(cluster_to_dict(cluster), "again").links == cluster.links
    problem = replace(toy_problem, cluster=cluster)
    b = split(problem)
    # each of the two hops (a's output out, the result back) pays 0.25 s more than in
    # test_transfer_time_counts_latency_overhead_and_bytes
    assert [t.time_s for t in b.transfers] == pytest.approx([2.265, 0.266])
    assert b.latency_s == pytest.approx(3.731)

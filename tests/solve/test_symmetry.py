"""Interchangeable servers: found exactly, and breaking their symmetry keeps the ILP exact."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.files.cluster_file import load_cluster
from coinfer.solve.brute_force import brute_force
from coinfer.solve.ilp import ilp
from coinfer.solve.ilp_model import build
from coinfer.solve.symmetry import interchangeable_groups
from tests.solve.random_problems import graphs

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


def twin_edges(phone_to_edge2_bits_per_s: float = 20e6) -> Cluster:
    """A phone, two identical edges and a cloud, full mesh; edge2's uplink speed is a parameter."""
    devices = (Device("phone", "end", 5e9, power_w=2.0, origin=True), Device("edge1", "edge", 5e10, power_w=10.0),
               Device("edge2", "edge", 5e10, power_w=10.0), Device("cloud", "cloud", 5e11, power_w=250.0))
    speed = {("phone", "edge1"): 20e6, ("phone", "edge2"): phone_to_edge2_bits_per_s, ("phone", "cloud"): 5e6,
             ("edge1", "edge2"): 1e9, ("edge1", "cloud"): 1e8, ("edge2", "cloud"): 1e8}
    links = [Link(a, b, s, latency_s=0.002, power_w=1.0) for (a, b), s in speed.items()]
    links += [Link(b, a, s, latency_s=0.002, power_w=1.0) for (a, b), s in speed.items()]
    return Cluster("twins", devices, tuple(links))


def test_identical_servers_are_found_and_a_difference_separates_them() -> None:
    graph = _small_graph()
    assert interchangeable_groups(make_problem(graph, twin_edges())) == [["edge1", "edge2"]]
    assert interchangeable_groups(make_problem(graph, twin_edges(19e6))) == []  # one uplink differs
    assert interchangeable_groups(make_problem(graph, load_cluster("one-to-multiple"))) == [["edge1", "edge2"]]
    assert interchangeable_groups(make_problem(graph, load_cluster("phone-edge-cloud"))) == []


def test_symmetry_rows_are_added_only_for_interchangeable_servers() -> None:
    graph = _small_graph()
    twins, distinct = make_problem(graph, twin_edges()), make_problem(graph, twin_edges(19e6))
    # one row for the one pair of twins
    assert len(build(twins).row_lo) - len(build(distinct).row_lo) == 1


@pytest.mark.parametrize("objective", ["latency", "throughput", "energy"])
@SETTINGS
@given(graph=graphs(max_nodes=6), uplink=st.sampled_from([20e6, 3e6]))
def test_ilp_with_symmetry_breaking_equals_brute_force(objective: str, graph, uplink: float) -> None:  # type: ignore[no-untyped-def]
    cluster = twin_edges()
    cluster = replace(cluster, links=tuple(replace(lk, bandwidth_bits_per_s=uplink) if lk.source == "phone" else lk
                                           for lk in cluster.links))
    problem = make_problem(graph, cluster, objective=objective)
    assert interchangeable_groups(problem) == [["edge1", "edge2"]]
    oracle = evaluate(brute_force(problem), problem).objective_value
    found = evaluate(ilp(problem), problem).objective_value
    assert math.isclose(found, oracle, rel_tol=1e-6, abs_tol=1e-12)


def test_the_ilp_still_finds_plans_that_use_both_twins() -> None:
    # Two heavy parallel branches: the best throughput runs one on each edge, which the symmetry
    # row must allow (edge2 runs no more nodes than edge1).
    cluster = twin_edges()
    cluster = replace(cluster, devices=tuple(d for d in cluster.devices if d.name != "cloud"),
                      links=tuple(lk for lk in cluster.links if "cloud" not in (lk.source, lk.target)))
    problem = make_problem(_small_graph(branch_flops=5e10), cluster, objective="throughput")
    oracle = brute_force(problem)
    assert {"edge1", "edge2"} <= set(oracle.devices_used)
    found = ilp(problem)
    assert math.isclose(evaluate(found, problem).objective_value, evaluate(oracle, problem).objective_value,
                        rel_tol=1e-6)
    assert {"edge1", "edge2"} <= set(found.devices_used)


def _small_graph(branch_flops: float = 2e9):  # type: ignore[no-untyped-def]
    from coinfer.graph import Graph, GraphInput, Node, TensorSpec

    nodes = (Node("a", ("input",), 1e9, 400_000), Node("b", ("a",), branch_flops, 100_000),
             Node("c", ("a",), branch_flops, 100_000),
             Node("d", ("b", "c"), 1e9, 4_000))
    return Graph("diamond", (GraphInput("input", TensorSpec(600_000)),), nodes)

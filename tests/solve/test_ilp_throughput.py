"""The throughput ILP's pigeonhole floor: valid (never above the optimum) and what lets HiGHS close."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.ilp import solve_ilp
from coinfer.solve.ilp_model import build, pigeonhole_floor_s
from tests.solve.random_problems import problems


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_nodes=5, objective="throughput"))
def test_the_floor_never_exceeds_the_optimum(problem: Problem) -> None:
    best = evaluate(brute_force(problem), problem)
    assert pigeonhole_floor_s(build(problem)) <= best.bottleneck_s * (1 + 1e-12)


def equal_layers(count: int, devices: int) -> Problem:
    """`count` independent 1 GFLOP nodes on `devices` identical 1 GFLOP/s devices with free links."""
    graph = Graph("layers", (GraphInput("input", TensorSpec(1)),),
                  tuple(Node(f"n{i}", ("input",), flops=1e9 * (1 + i * 1e-3), output_bytes=1) for i in range(count)))
    names = [f"d{i}" for i in range(devices)]
    cluster = Cluster("same", tuple(Device(n, "edge", 1e9, origin=i == 0) for i, n in enumerate(names)),
                      tuple(Link(a, b, 1e15) for a in names for b in names if a != b))
    return make_problem(graph, cluster, objective="throughput")


def test_some_device_runs_ceil_n_over_k_nodes() -> None:
    # 25 nodes of 1.000..1.024 s on 6 devices: one device runs 5, at least 1.000 + ... + 1.004 = 5.010 s,
    # while the LP's even spread prices 25.3 / 6 = 4.22 s.
    problem = equal_layers(25, 6)
    assert pigeonhole_floor_s(build(problem)) == pytest.approx(5.010)
    found = solve_ilp(problem, time_limit_s=60)
    assert found.optimal and found.mip_gap == 0
    assert evaluate(found.plan, problem).bottleneck_s == pytest.approx(5.010, rel=1e-6)


def test_a_node_no_device_may_run_gives_no_floor() -> None:
    problem = equal_layers(3, 2)
    model = build(problem)
    model.allowed[1, :] = False  # as a cap or a missing link rules every device out
    assert pigeonhole_floor_s(model) == 0.0

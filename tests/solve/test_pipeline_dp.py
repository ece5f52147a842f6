"""pipeline-dp: the least bottleneck over pipelines of contiguous stages on distinct devices."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.pipeline_dp import pipeline_dp
from tests.solve.random_problems import problems

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pipelines(problem: Problem) -> list[Plan]:
    """Every plan whose stages are contiguous and on distinct devices: PipeEdge's search space."""
    nodes = [n.id for n in problem.graph.nodes]
    devices = problem.cluster.device_names
    plans = []
    for m in range(1, min(len(devices), len(nodes)) + 1):
        for cuts in itertools.combinations(range(1, len(nodes)), m - 1):
            bounds = (0, *cuts, len(nodes))
            for order in itertools.permutations(devices, m):
                plans.append(Plan(problem.graph, {nodes[v]: order[s] for s in range(m)
                                                  for v in range(bounds[s], bounds[s + 1])}))
    return plans


@SETTINGS
@given(problem=problems(chain=True, max_nodes=5, objective="throughput"))
def test_bottleneck_equals_the_best_pipeline(problem: Problem) -> None:
    plan = pipeline_dp(problem)
    got = evaluate(plan, problem)
    assert plan.reported_objective == pytest.approx(got.objective_value, rel=1e-9)
    assert got.objective_value == pytest.approx(got.bottleneck_s)
    best = min(evaluate(p, problem).bottleneck_s for p in pipelines(problem))
    assert got.bottleneck_s == pytest.approx(best, rel=1e-9)
    # brute force may still do better by sending work back to a device (layers 0 and 2 on the
    # origin, 1 on a server): a plan no pipeline of distinct devices can express.
    assert got.bottleneck_s >= evaluate(brute_force(problem), problem).bottleneck_s * (1 - 1e-9)


@SETTINGS
@given(problem=problems(max_nodes=5, objective="throughput"))
def test_dags_get_valid_plans_never_better_than_the_oracle(problem: Problem) -> None:
    plan = pipeline_dp(problem)
    got = evaluate(plan, problem)
    assert plan.reported_objective == pytest.approx(got.objective_value, rel=1e-9)
    assert got.bottleneck_s >= evaluate(brute_force(problem), problem).bottleneck_s * (1 - 1e-9)


def test_toy_balances_two_equal_devices(toy_problem: Problem) -> None:
    # Two devices of 1 GFLOP/s and a free link; layers of 1, 1, 2 GFLOP (1 s, 1 s, 2 s).
    # One stage: 4 s. Best split: [a, b] | [c] -> max(2 s, 2 s) = 2 s; [a] | [b, c] -> 3 s.
    from coinfer.files.graph_file import graph_from_dict
    graph = graph_from_dict({"version": 1, "input_bytes": 0, "nodes": [
        {"id": "a", "inputs": ["input"], "flops": 1e9, "output_bytes": 0},
        {"id": "b", "inputs": ["a"], "flops": 1e9, "output_bytes": 0},
        {"id": "c", "inputs": ["b"], "flops": 2e9, "output_bytes": 0}]})
    cluster = Cluster("two", (Device("x", "end", 1e9, origin=True), Device("y", "edge", 1e9)),
                      (Link("x", "y", 1e12), Link("y", "x", 1e12)))
    plan = pipeline_dp(make_problem(graph, cluster, objective="throughput"))
    assert [s.node_ids for s in plan.stages] == [("a", "b"), ("c",)]  # either device first: a tie
    assert plan.reported_objective == pytest.approx(2.0, rel=1e-6)


def test_refuses_more_than_eight_distinct_devices_but_counts_identical_ones(toy_problem: Problem) -> None:
    distinct = (Device("o", "end", 1e9, origin=True), *(Device(f"s{i}", "edge", 1e9 * (i + 2)) for i in range(8)))
    problem = make_problem(toy_problem.graph, Cluster("big", distinct))
    with pytest.raises(UserInputError, match="9 devices in 9 classes"):
        pipeline_dp(problem)
    # eight identical servers are one class: 9 counts x 2 classes, not 2^9 subsets
    identical = (Device("o", "end", 1e9, origin=True), *(Device(f"s{i}", "edge", 1e9) for i in range(8)))
    links = tuple(Link(a.name, b.name, 1e9) for a in identical for b in identical if a is not b)
    plan = pipeline_dp(make_problem(toy_problem.graph, Cluster("big", identical, links), objective="throughput"))
    assert set(plan.placement) == {"a", "b"}

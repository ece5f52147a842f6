"""chain-dp: exact on chains (equal to brute force), constraints respected, DAGs refused."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.api import make_problem
from coinfer.cluster import BackgroundLoad
from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Constraints, Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.chain_dp import Limits, _labels, chain_dp, tables
from tests.solve.random_problems import problems

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_optimal(problem: Problem) -> None:
    plan = chain_dp(problem)
    got = evaluate(plan, problem)
    assert plan.reported_objective == pytest.approx(got.objective_value, rel=1e-9, abs=1e-12)
    oracle = evaluate(brute_force(problem), problem)
    assert got.feasible == oracle.feasible
    if oracle.feasible:
        assert got.objective_value == pytest.approx(oracle.objective_value, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("objective", ["latency", "energy", "origin-energy", "latency=1,energy=0.05,origin-energy=0.2"])
@SETTINGS
@given(data=st.data())
def test_equals_brute_force(objective: str, data: st.DataObject) -> None:
    assert_optimal(data.draw(problems(chain=True, max_nodes=6, objective=objective)))


@SETTINGS
@given(problem=problems(chain=True, max_nodes=6, objective="energy"), fraction=st.floats(0.3, 1.2))
def test_equals_brute_force_under_a_deadline(problem: Problem, fraction: float) -> None:
    # The deadline sits between the fastest plan and the energy-optimal one, so it usually binds.
    fastest = evaluate(chain_dp(dataclasses.replace(problem, objective=make_problem(
        problem.graph, problem.cluster).objective)), problem).latency_s
    frugal = evaluate(chain_dp(problem), problem).latency_s
    deadline = fastest + fraction * (frugal - fastest)
    assert_optimal(dataclasses.replace(problem, constraints=Constraints(deadline_s=deadline)))


@SETTINGS
@given(problem=problems(chain=True, max_nodes=5, objective="latency=1,energy=0.1"),
       memory=st.lists(st.integers(10**6, 2 * 10**7), min_size=3, max_size=3),
       loaded=st.lists(st.booleans(), min_size=3, max_size=3))
def test_equals_brute_force_with_memory_and_queueing(problem: Problem, memory: list[int], loaded: list[bool]) -> None:
    devices = tuple(dataclasses.replace(
        d, memory_bytes=float(memory[i]) if i else float("inf"),
        background=BackgroundLoad(5.0, 50.0) if loaded[i] else None) for i, d in enumerate(problem.cluster.devices))
    assert_optimal(dataclasses.replace(problem, cluster=dataclasses.replace(problem.cluster, devices=devices)))


@SETTINGS
@given(problem=problems(chain=True, max_nodes=6, objective="latency=1,energy=0.05"))
def test_label_search_agrees_with_the_vectorised_path(problem: Problem) -> None:
    tab = tables(problem)
    fast = chain_dp(problem).reported_objective
    slow = _labels(tab, Limits.none(tab))
    assert slow is not None and slow[1] == pytest.approx(fast, rel=1e-12)


def test_toy_chain_worked_by_hand(toy_problem: Problem) -> None:
    # conftest's toy: a (1 GFLOP, 2 MB out) -> b (2 GFLOP, 1 kB out); phone 1 GFLOP/s, edge 10 GFLOP/s,
    # link 1 MB/s + 15 ms per message. Input 1 MB.
    #   a,b@phone: 1 + 2                                   = 3.000 s
    #   a@phone b@edge: 1 + (0.015 + 2) + 0.2 + (0.015 + 0.001) = 3.231 s
    #   a,b@edge: (0.015 + 1) + 0.1 + 0.2 + 0.016          = 1.331 s  <- optimum
    plan = chain_dp(toy_problem)
    assert str(plan) == "a..b@edge"
    assert plan.reported_objective == pytest.approx(1.331)


def test_memory_infeasible_device_gets_no_layers(toy_problem: Problem) -> None:
    # The edge is fastest, but with 1 kB of memory it cannot hold any layer; all stays on the phone.
    edge = dataclasses.replace(toy_problem.cluster.device("edge"), memory_bytes=1e3)
    devices = tuple(edge if d.name == "edge" else d for d in toy_problem.cluster.devices)
    problem = dataclasses.replace(toy_problem, cluster=dataclasses.replace(toy_problem.cluster, devices=devices))
    plan = chain_dp(problem)
    assert "edge" not in plan.devices_used
    assert evaluate(plan, problem).feasible


def test_refuses_a_dag_and_throughput(toy_problem: Problem) -> None:
    spec = TensorSpec(10)
    dag = Graph("dag", (GraphInput("input", spec),), (
        Node("a", ("input",), 1e6, 10), Node("b", ("a",), 1e6, 10), Node("c", ("a", "b"), 1e6, 10)))
    with pytest.raises(UserInputError, match=r"dads .*ilp"):
        chain_dp(make_problem(dag, toy_problem.cluster))
    with pytest.raises(UserInputError, match="pipeline-dp"):
        chain_dp(make_problem(toy_problem.graph, toy_problem.cluster, objective="throughput"))

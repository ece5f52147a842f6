"""hpa: its batch cost equals evaluate; never beats the oracle; partial adjustment behaves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.hpa import BatchCost, hpa, hpa_adjust
from tests.solve.random_problems import problems

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OBJECTIVES = ["latency", "energy", "throughput", "latency=1,energy=0.2,origin-energy=1"]


@pytest.mark.parametrize("objective", OBJECTIVES)
@SETTINGS
@given(data=st.data())
def test_batch_cost_equals_evaluate(objective: str, data: st.DataObject) -> None:
    problem = data.draw(problems(max_nodes=6, objective=objective))
    batch = BatchCost(problem)
    k = len(batch.devices)
    rows = np.array(data.draw(st.lists(st.lists(st.integers(0, k - 1), min_size=batch.n, max_size=batch.n),
                                       min_size=1, max_size=4)))
    value, bad = batch.score(rows)
    for row, v, b in zip(rows, value, bad, strict=True):
        got = evaluate(Plan(problem.graph, {n.id: batch.devices[d] for n, d in zip(problem.graph.nodes, row,
                                                                                    strict=True)}), problem)
        assert v == pytest.approx(got.objective_value, rel=1e-9, abs=1e-12)
        assert bool(b) == (not got.feasible)


def test_never_beats_brute_force_and_usually_equals_it() -> None:
    equal = total = 0

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(problem=problems(max_nodes=6, objective="latency=1,energy=0.2"))
    def check(problem: Problem) -> None:
        nonlocal equal, total
        plan = hpa(problem)
        got = evaluate(plan, problem)
        assert plan.reported_objective == pytest.approx(got.objective_value, rel=1e-9, abs=1e-12)
        oracle = evaluate(brute_force(problem), problem)
        assert got.objective_value >= oracle.objective_value * (1 - 1e-9)
        total += 1
        equal += got.objective_value <= oracle.objective_value * (1 + 1e-9)

    check()
    assert equal >= 0.7 * total  # measured: about 95% on these small random DAGs


@SETTINGS
@given(problem=problems(max_nodes=6, objective="latency"))
def test_adjust_keeps_a_plan_when_nothing_changed(problem: Problem) -> None:
    plan = hpa(problem)
    assert hpa_adjust(problem, plan).placement == plan.placement


def _slow_uplink(problem: Problem, factor: float) -> Problem:
    links = tuple(dataclasses.replace(lk, bandwidth_bits_per_s=lk.bandwidth_bits_per_s / factor)
                  for lk in problem.cluster.links)
    return dataclasses.replace(problem, cluster=dataclasses.replace(problem.cluster, links=links))


def test_adjust_moves_the_cut_when_bandwidth_drops() -> None:
    # phone 1 GFLOP/s, edge 100 GFLOP/s. Layers a, b, c of 0.1 GFLOP and d of 1 GFLOP; outputs
    # 1 MB, 1 MB, 10 kB, 10 kB; input 1 MB. At 100 MB/s: all on the edge, 10 + 13 + 0.1 ms.
    # At 100 kB/s the input alone takes 10 s; all on the phone takes 1.3 s; the cut after c
    # takes 0.3 (phone) + 0.1 (10 kB up) + 0.01 (d on the edge) + 0.1 (result back) = 0.51 s.
    sizes = [1_000_000, 1_000_000, 10_000, 10_000]
    nodes = tuple(Node(f"{c}", ("input",) if i == 0 else (f"{chr(96 + i)}",), 1e9 if c == "d" else 1e8, s)
                  for i, (c, s) in enumerate(zip("abcd", sizes, strict=True)))
    graph = Graph("g", (GraphInput("input", TensorSpec(1_000_000)),), nodes)
    cluster = Cluster("c", (Device("phone", "end", 1e9, origin=True), Device("edge", "edge", 1e11)),
                      (Link("phone", "edge", 8e8), Link("edge", "phone", 8e8)))
    fast = make_problem(graph, cluster)
    before = hpa(fast)
    assert str(before) == "a..d@edge"
    slow = _slow_uplink(fast, 1000.0)
    after = hpa_adjust(slow, before)
    assert after.reported_objective < evaluate(before, slow).objective_value
    assert str(after) == "a..c@phone | d@edge"
    assert after.reported_objective == pytest.approx(evaluate(after, slow).objective_value)

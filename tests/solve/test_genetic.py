"""`genetic`: its vectorised costs equal `cost.evaluate`; it never beats the oracle; it is deterministic."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from coinfer.cost import evaluate
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.genetic import PopulationCost, genetic
from tests.solve.test_ilp import constrained_problems, priced_problems

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("objective", ["latency", "energy", "origin-energy", "cost", "throughput"])
def test_population_cost_equals_evaluate(objective: str) -> None:
    @SETTINGS
    @given(problem=constrained_problems(objective=objective, full_mesh=False))
    def check(problem: Problem) -> None:
        cost, rng = PopulationCost(problem), random.Random(0)
        k, n = len(cost.devices), len(problem.graph.nodes)
        genes = np.array([[rng.randrange(k) for _ in range(n)] for _ in range(6)], dtype=np.intp)
        violation, value = cost.score(genes)
        for row, v, o in zip(genes, violation, value, strict=True):
            plan = Plan(problem.graph, {nd.id: cost.devices[g] for nd, g in zip(problem.graph.nodes, row, strict=True)})
            b = evaluate(plan, problem)
            assert (v == 0) == b.feasible, b.violations
            assert o == pytest.approx(b.objective_value, rel=1e-9, abs=1e-15)

    check()


@pytest.mark.parametrize("objective", ["latency", "energy", "throughput"])
def test_genetic_never_beats_the_oracle_and_is_deterministic(objective: str) -> None:
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
    @given(problem=priced_problems(objective=objective, full_mesh=False))
    def check(problem: Problem) -> None:
        plan = genetic(problem)
        b = evaluate(plan, problem)
        assert plan.reported_objective == pytest.approx(b.objective_value, rel=1e-9, abs=1e-15)
        oracle = evaluate(brute_force(problem), problem)
        if oracle.feasible:
            assert b.feasible and b.objective_value >= oracle.objective_value * (1 - 1e-9)
        assert genetic(problem).placement == plan.placement

    check()


def test_genetic_on_a_70_node_dag() -> None:
    # No time is asserted (DESIGN section 5); the run is printed with -s for the record.
    from coinfer.api import make_problem
    from coinfer.files.cluster_file import load_cluster
    from coinfer.graph import Graph, GraphInput, Node, TensorSpec

    rng = random.Random(0)  # a chain with a skip edge every third node (ResNet-like)
    nodes = tuple(Node(f"n{i}", tuple(f"n{p}" for p in sorted({i - 1, max(0, i - 3)} - {-1, i})) or ("input",),
                       rng.uniform(1e6, 5e8), rng.randint(1_000, 3_000_000), rng.randint(0, 2_000_000))
                  for i in range(70))
    graph = Graph("dag70", (GraphInput("input", TensorSpec(600_000)),), nodes)
    problem = make_problem(graph, load_cluster("phone-edge-cloud"), objective="latency")
    start = time.perf_counter()
    plan = genetic(problem)
    print(f"genetic, 70 nodes x 3 devices: {time.perf_counter() - start:.2f} s")
    singles = [evaluate(Plan(problem.graph, {n.id: d for n in problem.graph.nodes}), problem).objective_value
               for d in problem.cluster.device_names]
    assert plan.reported_objective is not None and plan.reported_objective <= min(singles)

"""Every registered solver: a valid plan, and a reported objective equal to `cost.evaluate`'s."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from coinfer.cost import evaluate
from coinfer.errors import InfeasibleError, UserInputError
from coinfer.problem import Problem
from coinfer.solve import SOLVERS
from coinfer.solve.brute_force import brute_force
from tests.solve.random_problems import problems


@pytest.mark.parametrize("name", sorted(SOLVERS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_nodes=5))
def test_plans_are_valid_and_never_beat_the_oracle(name: str, problem: Problem) -> None:
    try:
        plan = SOLVERS[name](problem)
    except UserInputError as exc:  # a solver that cannot take this problem must name one that can
        assert any(other in str(exc) for other in SOLVERS if other != name), str(exc)
        return
    except InfeasibleError:
        assert not evaluate(brute_force(problem), problem).feasible
        return
    assert set(plan.placement) == {n.id for n in problem.graph.nodes}
    assert set(plan.placement.values()) <= set(problem.cluster.device_names)
    b = evaluate(plan, problem)
    if plan.reported_objective is not None:
        assert plan.reported_objective == pytest.approx(b.objective_value, rel=1e-9, abs=1e-12)
    oracle = evaluate(brute_force(problem), problem)
    if oracle.feasible:
        assert not b.feasible or b.objective_value >= oracle.objective_value * (1 - 1e-9)


@pytest.mark.parametrize("nodes", [30, 2000])  # 2^2000 plans overflow a float: still a clear refusal
def test_brute_force_refuses_big_problems(toy_problem, nodes: int) -> None:  # type: ignore[no-untyped-def]
    from coinfer.api import make_problem
    from coinfer.files.graph_file import graph_from_dict

    doc = {"version": 1, "input_bytes": 1, "nodes": [
        {"id": f"n{i}", "inputs": [f"n{i - 1}" if i else "input"], "flops": 1, "output_bytes": 1}
        for i in range(nodes)]}
    problem = make_problem(graph_from_dict(doc), toy_problem.cluster)
    with pytest.raises(UserInputError, match="use an exact solver that scales"):
        brute_force(problem)

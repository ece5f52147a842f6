"""`pareto_front`: no member is dominated, and the latency and energy optima are on it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from coinfer.cost import evaluate
from coinfer.problem import Objective, Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.pareto import AXES, pareto, pareto_front
from tests.solve.test_ilp import priced_problems


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(problem=priced_problems(objective="latency=1,energy=0.1", max_nodes=4))
def test_front_is_non_dominated_and_holds_the_extremes(problem: Problem) -> None:
    front = pareto_front(problem)
    vectors = [tuple(b.metric(m) for m in AXES) for _, b in front]
    for v in vectors:
        assert not any(all(o <= s for o, s in zip(other, v, strict=True)) and other != v for other in vectors)
    for plan, b in front:
        assert b.feasible and plan.reported_objective == pytest.approx(evaluate(plan, problem).objective_value)
    for metric in ("latency_s", "energy_j"):
        optimum = evaluate(brute_force(_only(problem, metric)), problem).metric(metric)
        assert min(b.metric(metric) for _, b in front) == pytest.approx(optimum, rel=1e-7, abs=1e-12)
    best = pareto(problem)
    assert best.reported_objective == pytest.approx(min(b.objective_value for _, b in front))


def _only(problem: Problem, metric: str) -> Problem:
    from dataclasses import replace

    return replace(problem, objective=Objective({metric: 1.0}))  # type: ignore[dict-item]


def test_toy_front(toy_problem: Problem) -> None:
    # From test_ilp's hand-worked toy: all on the edge is fastest (1.331 s) and, with the phone
    # only transmitting (1.5225 J + the edge's 0.024 J), also the most frugal; it dominates the rest
    # on latency and energy, but all on the phone costs nothing while the edge charges per second.
    front = pareto_front(toy_problem)
    placements = [dict(p.placement) for p, _ in front]
    assert {"a": "edge", "b": "edge"} in placements
    assert {"a": "phone", "b": "phone"} in placements

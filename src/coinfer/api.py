"""The Python API in a few calls: capture, load a cluster, make a problem, plan, evaluate.

    import coinfer
    graph = coinfer.capture("torchvision:resnet18")
    cluster = coinfer.load_cluster("phone-edge-cloud")
    problem = coinfer.make_problem(graph, cluster, objective="latency")
    plan = coinfer.plan(problem, placement="conv1..layer2@phone | layer3..fc@edge")
    print(plan, coinfer.evaluate(plan, problem).latency_s)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from coinfer.cluster import Cluster
from coinfer.errors import UserInputError
from coinfer.graph import Graph
from coinfer.plan import Plan, parse_plan
from coinfer.problem import Constraints, Objective, Problem, parse_objective
from coinfer.profile.resolve import resolve_times
from coinfer.profile.timings import Profile
from coinfer.solve import get_solver

if TYPE_CHECKING:
    from coinfer.profile.analytic import Calibration


def make_problem(
    graph: Graph,
    cluster: Cluster,
    *,
    objective: str | Objective = "latency",
    deadline_s: float | None = None,
    origin_energy_budget_j: float | None = None,
    request_rate_per_s: float | None = None,
    min_reliability: float | None = None,
    profiles: Mapping[str, Profile] | None = None,
    calibration: Calibration | None = None,
) -> Problem:
    """A Problem with node times resolved per device (see `coinfer.profile.resolve`)."""
    times, sources = resolve_times(graph, cluster, profiles, calibration)
    goal = parse_objective(objective) if isinstance(objective, str) else objective
    limits = Constraints(deadline_s, origin_energy_budget_j, request_rate_per_s, min_reliability)
    return Problem(graph, cluster, times, goal, limits, sources)


def plan(problem: Problem, *, placement: str | Mapping[str, str] | None = None, solver: str | None = None) -> Plan:
    """A plan from a hand-written placement (one-line form or node->device mapping) or a solver.

    Under a `min_reliability` constraint the solver's plan gets the standbys that meet it
    (coinfer.solve.replicas; InfeasibleError says the best reliability possible when none can); a
    hand-written placement keeps the standbys it names."""
    if placement is not None and solver is not None:
        raise UserInputError("give either a placement or a solver, not both")
    if placement is None:
        chosen = get_solver(solver or "origin-only")(problem)
        if problem.constraints.min_reliability is not None:
            from coinfer.solve.replicas import choose_standbys

            chosen = choose_standbys(chosen, problem)
        return chosen
    if isinstance(placement, str):
        return parse_plan(placement, problem.graph, problem.cluster.device_names)
    unknown = sorted(set(placement.values()) - set(problem.cluster.device_names))
    if unknown:
        raise UserInputError(f"placement names unknown device(s) {unknown}; devices: "
                             f"{', '.join(problem.cluster.device_names)}")
    return Plan(problem.graph, dict(placement))

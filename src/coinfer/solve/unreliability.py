"""Which solvers price unreliability, and the problem the others are handed.

A plan's unreliability (1 - reliability, coinfer.cost.reliability) is a product over the devices
and links it uses, and with standbys a sum over failure states: no additive per-node cost that
the dynamic programs (chain-dp, dads, neurosurgeon, pipeline-dp, hpa) or the vectorised genetic
search could carry. So:
- `ilp` prices it exactly (coinfer.solve.ilp_reliability), `pareto` through its ILPs, and the
  solvers that cost whole plans with cost.evaluate (brute-force, origin-only, server-only) price
  it as evaluate does;
- every other solver places the nodes without the term (a warning says so), and the standby
  pass after it (coinfer.solve.replicas) prices the term in the standbys it adds;
- where nothing in the cluster can fail, unreliability is 0 for every plan and the term is
  simply dropped, for every solver.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

from coinfer.plan import Plan
from coinfer.problem import Metric, Objective, Problem

log = logging.getLogger(__name__)

PRICE_UNRELIABILITY = frozenset({"ilp", "pareto", "brute-force", "origin-only", "server-only"})
# solvers whose plans already carry the standbys their problem asks for, chosen with the placement
CHOOSE_STANDBYS = frozenset({"ilp", "pareto", "brute-force"})


def can_fail(problem: Problem) -> bool:
    """Some device or link of the cluster has a failure probability above 0."""
    cluster = problem.cluster
    return (any(d.failure_probability > 0 for d in cluster.devices)
            or any(lk.failure_probability > 0 for lk in cluster.links))


def unreliability_weight(problem: Problem) -> float:
    return problem.objective.weights.get("unreliability", 0.0)


def wants_standbys(problem: Problem) -> bool:
    """Standbys can change this problem's objective or feasibility: something can fail, and a
    reliability floor or an unreliability weight asks for them."""
    return can_fail(problem) and (problem.constraints.min_reliability is not None or unreliability_weight(problem) > 0)


def without_unreliability(problem: Problem) -> Problem:
    """The problem with no unreliability term in its objective (latency when it was the only one)."""
    weights: dict[Metric, float] = {m: w for m, w in problem.objective.weights.items() if m != "unreliability"}
    return dataclasses.replace(problem, objective=Objective(weights or {"latency_s": 1.0}))


def pricing(name: str, solve: Callable[[Problem], Plan]) -> Callable[[Problem], Plan]:
    """`solve`, handed a problem whose objective it can price (see the module docstring)."""
    if name in PRICE_UNRELIABILITY:
        return solve

    @functools.wraps(solve)
    def solve_pricing(problem: Problem) -> Plan:
        if unreliability_weight(problem) <= 0:
            return solve(problem)
        if can_fail(problem):
            log.warning("%s places nodes without the unreliability term (only %s price it exactly); the standby "
                        "pass after it prices it", name, ", ".join(sorted(PRICE_UNRELIABILITY - {"origin-only",
                                                                                             "server-only"})))
        return solve(without_unreliability(problem))

    return solve_pricing

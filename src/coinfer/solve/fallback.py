"""The plan for a cluster that lost devices or links (coinfer.runtime.recovery and coinfer.sim.failures)."""

from __future__ import annotations

import logging

from coinfer.cost import evaluate
from coinfer.errors import CoinferError
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem

log = logging.getLogger(__name__)

# fast solvers that place any DAG, tried in order when the plan's own solver gives nothing feasible
FALLBACK_SOLVERS = ("dads", "neurosurgeon", "origin-only", "server-only")


def replacement_plan(plan: Plan, problem: Problem) -> Plan:
    """The plan to serve `problem` with (a cluster that lost devices or links): `plan`'s own solver's
    result when feasible, else the first feasible of FALLBACK_SOLVERS, else the first that needs no
    missing link (it may break a deadline or a memory limit: serving late beats not serving), else
    everything on the origin, which sends nothing. A plan with tiled stages first tries its own
    failover (`Plan.failover`: a lost device's tiles go to the other tile devices, no re-solve)."""
    from coinfer.solve import SOLVERS

    lost = [d for d in plan.devices_used if d not in problem.cluster.device_names]
    moved = plan.failover(lost) if plan.tilings and lost else None
    if moved is not None and not evaluate(moved, problem).violations:
        return moved

    names = [plan.solver] if plan.solver in SOLVERS else []
    names += [n for n in FALLBACK_SOLVERS if n not in names]
    runnable: Plan | None = None  # the first that at least needs no missing link, when none is feasible
    for name in names:
        try:
            candidate = SOLVERS[name](problem)
        except (CoinferError, ValueError, KeyError) as exc:  # a solver that cannot place this graph
            log.info("re-planning: %s gave no plan (%s)", name, exc)
            continue
        violations = evaluate(candidate, problem).violations
        if not violations:
            return candidate
        if runnable is None and not any(v.kind == "link" for v in violations):
            runnable = candidate
    return runnable or all_on(problem.graph, problem.origin, "origin-only")

"""`pareto`: the plans no other candidate beats on every one of latency, energy, cost, bottleneck.

A user rarely knows the weights of a weighted objective in advance; the front shows the trade-off
(the survey's multi-objective formulations, REFERENCE section 1). Candidates, all feasible for the
problem's constraints:
- the single-device plans (everything on one device: the baselines every result is compared with);
- the `ilp` optimum of each axis alone, of the problem's own objective, and of weighted sums over
  every pair of axes and all four (weights `PAIR_WEIGHTS`, each axis divided by its range over the
  single-device plans so that seconds, joules and dollars mix);
- an epsilon-constraint scan (Haimes et al. 1971): minimum energy under `EPSILON_STEPS` latency
  caps between the latency optimum and the energy optimum's latency. Weighted sums only reach the
  convex hull of the front; the scan also finds points in its dents.
`pareto_front` keeps the non-dominated ones (duplicates of a metric vector once). The registered
solver `pareto(problem)` returns the candidate with the best objective value of the problem: a
member of the front, or, when the objective weighs origin energy (not an axis), possibly a plan
the front drops for being no better on the four axes.

Complexity: 4 + 1 + 6 x len(PAIR_WEIGHTS) + 1 + EPSILON_STEPS MILPs (26 by default) and D plans
costed; each MILP gets `TIME_LIMIT_S` (a plan found by then is used, its gap logged).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import replace

from coinfer.cost import Breakdown, evaluate
from coinfer.errors import InfeasibleError
from coinfer.plan import Plan, all_on
from coinfer.problem import Constraints, Metric, Objective, Problem
from coinfer.solve.ilp import solve_ilp
from coinfer.solve.waiting import fold_waiting_energy

AXES: tuple[Metric, ...] = ("latency_s", "energy_j", "cost_usd", "bottleneck_s")
PAIR_WEIGHTS = (0.2, 0.5, 0.8)
EPSILON_STEPS = 3
TIME_LIMIT_S = 10.0


def pareto(problem: Problem) -> Plan:
    """The candidate best on the problem's objective: a member of the front, unless the objective
    weighs a metric outside `AXES` (origin energy), by which a plan the front drops can be best."""
    plan, b = min(_candidates(problem), key=lambda pb: pb[1].objective_value)
    return Plan(problem.graph, plan.placement, "pareto", b.objective_value)


def pareto_front(problem: Problem) -> list[tuple[Plan, Breakdown]]:
    """Feasible non-dominated plans over `AXES`, sorted by latency; raises InfeasibleError."""
    return sorted(non_dominated(_candidates(problem)), key=lambda pb: tuple(pb[1].metric(m) for m in AXES))


def _candidates(problem: Problem) -> list[tuple[Plan, Breakdown]]:
    """Every feasible plan the scans found, costed; raises InfeasibleError when there is none."""
    singles = [all_on(problem.graph, d, "pareto") for d in problem.cluster.device_names]
    scale = {m: _range(m, [evaluate(p, problem) for p in singles]) for m in AXES}
    candidates = list(singles)
    best_of: dict[Metric, Plan] = {}
    for m in AXES:
        plan = _solve(problem, {m: 1.0})
        if plan is not None:
            best_of[m] = plan
            candidates.append(plan)
    own = _solve(problem, problem.objective.weights)
    candidates += [own] if own is not None else []
    for weights in _weight_vectors(scale):
        candidates += [p for p in [_solve(problem, weights)] if p is not None]
    if "latency_s" in best_of and "energy_j" in best_of:
        candidates += _epsilon_scan(problem, best_of["latency_s"], best_of["energy_j"])
    costed = [(p, evaluate(p, problem)) for p in candidates]
    feasible = [(Plan(problem.graph, p.placement, "pareto", b.objective_value), b) for p, b in costed if b.feasible]
    if not feasible:
        raise InfeasibleError(f"no candidate plan meets the constraints ({_active(problem.constraints)}); "
                              f"relax them (solve with ilp for the details)")
    return feasible


def non_dominated(costed: list[tuple[Plan, Breakdown]]) -> list[tuple[Plan, Breakdown]]:
    """Members no other member beats on every axis (and strictly on one); equal vectors once."""
    vectors = [tuple(b.metric(m) for m in AXES) for _, b in costed]
    keep: list[tuple[Plan, Breakdown]] = []
    seen: set[tuple[float, ...]] = set()
    for (plan, b), v in zip(costed, vectors, strict=True):
        dominated = any(all(o <= s for o, s in zip(other, v, strict=True)) and other != v for other in vectors)
        if not dominated and v not in seen:
            seen.add(v)
            keep.append((plan, b))
    return keep


def _solve(problem: Problem, weights: Mapping[Metric, float]) -> Plan | None:
    # the origin's waiting energy is folded per objective, so the front's metrics stay the true ones
    weighted = fold_waiting_energy(replace(problem, objective=Objective(dict(weights))), "solver 'pareto'")
    try:
        return solve_ilp(weighted, time_limit_s=TIME_LIMIT_S, solver="pareto").plan
    except InfeasibleError:
        return None


def _weight_vectors(scale: Mapping[Metric, float]) -> list[dict[Metric, float]]:
    """Every pair of axes at `PAIR_WEIGHTS`, and all four equally, each over its range."""
    vectors: list[dict[Metric, float]] = []
    for a, b in itertools.combinations(AXES, 2):
        vectors += [{a: w / scale[a], b: (1 - w) / scale[b]} for w in PAIR_WEIGHTS]
    vectors.append({m: 1.0 / scale[m] for m in AXES})
    return vectors


def _epsilon_scan(problem: Problem, fastest: Plan, frugal: Plan) -> list[Plan]:
    """Minimum energy with latency capped at evenly spaced points between the two extremes."""
    low, high = evaluate(fastest, problem).latency_s, evaluate(frugal, problem).latency_s
    plans: list[Plan] = []
    for i in range(1, EPSILON_STEPS + 1):
        cap = low + (high - low) * i / (EPSILON_STEPS + 1)
        deadline = min(cap, problem.constraints.deadline_s or math.inf)
        capped = replace(problem, constraints=replace(problem.constraints, deadline_s=deadline))
        plans += [p for p in [_solve(capped, {"energy_j": 1.0})] if p is not None]
    return plans


def _range(metric: Metric, costs: list[Breakdown]) -> float:
    """Spread of a metric over the single-device plans (1 when it is flat or infinite)."""
    values = [b.metric(metric) for b in costs if math.isfinite(b.metric(metric))]
    spread = max(values) - min(values) if values else 0.0
    top = max(values) if values else 0.0
    # A spread whose reciprocal overflows (subnormal energies) counts as flat, like zero.
    if spread > 0 and math.isfinite(1.0 / spread):
        return spread
    return top if top > 0 and math.isfinite(1.0 / top) else 1.0


def _active(c: Constraints) -> str:
    names = [n for n, v in (("deadline", c.deadline_s), ("origin energy budget", c.origin_energy_budget_j),
                            ("request rate", c.request_rate_per_s)) if v is not None]
    return ", ".join(["memory", *names])

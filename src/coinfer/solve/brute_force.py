"""`brute-force`: the oracle. Every assignment of nodes to devices, costed by `cost.evaluate`.

Model: exactly the cost model (any objective, every constraint), with nothing approximated, so the
exact solvers are tested against it. Complexity: O(D^N) evaluations for N nodes and D devices;
refused beyond `MAX_ASSIGNMENTS`. Feasible plans beat infeasible ones; among infeasible plans the
one with the best objective is returned (its violations say why). Ties go to the assignment met
first, which keeps nodes on earlier-listed devices (the origin first).

Where standbys matter (something can fail, and a reliability floor or an unreliability weight is
set: `solve.unreliability.wants_standbys`), every node also takes every ordered choice of up to
`max_standbys` standby devices, so the search is joint over placement and replicas; among plans
of equal objective the one with fewer standbys wins. That is O((D * sum_k (D-1)!/(D-1-k)!)^N).
"""

from __future__ import annotations

import itertools
import math

from coinfer.cost.evaluate import evaluate
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.replicas import MAX_STANDBYS_PER_STAGE
from coinfer.solve.unreliability import wants_standbys

MAX_ASSIGNMENTS = 200_000


def brute_force(problem: Problem, *, max_standbys: int = MAX_STANDBYS_PER_STAGE) -> Plan:
    nodes = [n.id for n in problem.graph.nodes]
    devices = [problem.origin, *(d.name for d in problem.cluster.servers)]
    replicas = [(d, standbys) for d in devices
                for standbys in _standby_choices(d, devices, max_standbys if wants_standbys(problem) else 0)]
    if len(nodes) * math.log10(len(replicas)) > math.log10(MAX_ASSIGNMENTS):  # k^n overflows a float at large n
        raise UserInputError(
            f"brute-force would cost {len(replicas)}^{len(nodes)} = 1e{len(nodes) * math.log10(len(replicas)):.1f} "
            f"plans (limit {MAX_ASSIGNMENTS}); "
            f"use an exact solver that scales (dads for two devices, chain-dp for chains, ilp for DAGs) "
            f"or a coarser graph (--granularity block)"
        )
    best: tuple[bool, float, int] | None = None
    best_plan: Plan | None = None
    for assignment in itertools.product(replicas, repeat=len(nodes)):
        placement = {n: d for n, (d, _) in zip(nodes, assignment, strict=True)}
        standbys = {n: s for n, (_, s) in zip(nodes, assignment, strict=True) if s}
        plan = Plan(problem.graph, placement, "brute-force", standbys=standbys)
        b = evaluate(plan, problem)
        key = (not b.feasible, b.objective_value, sum(len(s) for s in standbys.values()))
        if best is None or key < best:
            best = key
            best_plan = Plan(plan.graph, placement, "brute-force", b.objective_value, standbys=standbys)
    assert best_plan is not None  # a graph has at least one node
    return best_plan


def _standby_choices(primary: str, devices: list[str], most: int) -> list[tuple[str, ...]]:
    others = [d for d in devices if d != primary]
    return [c for k in range(min(most, len(others)) + 1) for c in itertools.permutations(others, k)]

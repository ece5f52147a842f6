"""`brute-force`: the oracle. Every assignment of nodes to devices, costed by `cost.evaluate`.

Model: exactly the cost model (any objective, every constraint), with nothing approximated, so the
exact solvers are tested against it. Complexity: O(D^N) evaluations for N nodes and D devices;
refused beyond `MAX_ASSIGNMENTS`. Feasible plans beat infeasible ones; among infeasible plans the
one with the best objective is returned (its violations say why). Ties go to the assignment met
first, which keeps nodes on earlier-listed devices (the origin first).
"""

from __future__ import annotations

import itertools
import math

from coinfer.cost.evaluate import evaluate
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem

MAX_ASSIGNMENTS = 200_000


def brute_force(problem: Problem) -> Plan:
    nodes = [n.id for n in problem.graph.nodes]
    devices = [problem.origin, *(d.name for d in problem.cluster.servers)]
    if len(nodes) * math.log10(len(devices)) > math.log10(MAX_ASSIGNMENTS):  # k^n overflows a float at large n
        raise UserInputError(
            f"brute-force would cost {len(devices)}^{len(nodes)} = 1e{len(nodes) * math.log10(len(devices)):.1f} "
            f"plans (limit {MAX_ASSIGNMENTS}); "
            f"use an exact solver that scales (dads for two devices, chain-dp for chains, ilp for DAGs) "
            f"or a coarser graph (--granularity block)"
        )
    best: tuple[bool, float] | None = None
    best_plan: Plan | None = None
    for assignment in itertools.product(devices, repeat=len(nodes)):
        plan = Plan(problem.graph, dict(zip(nodes, assignment, strict=True)), "brute-force")
        b = evaluate(plan, problem)
        key = (not b.feasible, b.objective_value)
        if best is None or key < best:
            best, best_plan = key, Plan(plan.graph, plan.placement, "brute-force", b.objective_value)
    assert best_plan is not None  # a graph has at least one node
    return best_plan

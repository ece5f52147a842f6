"""The baselines every result is compared with: all on the origin, all on one server.

`origin-only` runs the whole model where the input arrives (no transfer at all); `server-only`
ships the input to a single server and the result back, trying every server and keeping the one
with the best objective (ties: the first in the cluster file). Complexity O(devices x nodes).
"""

from __future__ import annotations

from coinfer.cost.evaluate import evaluate
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem


def origin_only(problem: Problem) -> Plan:
    return all_on(problem.graph, problem.origin, solver="origin-only")


def server_only(problem: Problem) -> Plan:
    candidates = [all_on(problem.graph, d.name, solver="server-only") for d in problem.cluster.servers]
    if not candidates:
        return origin_only(problem)
    return min(candidates, key=lambda p: _score(p, problem))


def _score(plan: Plan, problem: Problem) -> tuple[bool, float]:
    b = evaluate(plan, problem)
    return (not b.feasible, b.objective_value)

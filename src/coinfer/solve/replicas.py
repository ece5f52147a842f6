"""Standbys for a plan's stages: the greedy pass after a solver (the survey's replicated partitions).

`choose_standbys` keeps the plan's placement (standbys add no latency, energy or money in the cost
model: they compute nothing until their primary is lost) and adds standbys greedily: each step
tries every device as a new standby of each stage that lacks it, and of all those stages at once,
where it still has memory for the weights (coinfer.cost.evaluate's memory rule), and keeps the
move that divides the plan's failure probability most per standby it adds
(coinfer.cost.reliability, exact), the smaller memory need breaking ties. Once the constraint
holds it drops every standby the plan can do without; when no move helps any more it raises
InfeasibleError with the best reliability it reached.

When the objective weighs unreliability (`latency=1,unreliability=2`) it then keeps adding the
standby that lowers the objective most, while one does, and drops those the objective does not
miss. Standbys are free in every other term, so this only trades reliability against memory;
trading it against latency means moving nodes, which `ilp` and `brute-force` do jointly.

Greedy, not exact: `brute_force_standbys` enumerates every assignment on small cases, and the
tests hold the two to the same feasibility and compare their standby counts; `ilp` chooses
standbys exactly (coinfer.solve.ilp_reliability), and the tests hold it to brute force.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

from coinfer.cost import evaluate
from coinfer.cost.reliability import reliability
from coinfer.errors import InfeasibleError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.unreliability import unreliability_weight, wants_standbys

MAX_STANDBYS_PER_STAGE = 3
# A standby is worth adding for the objective when it lowers it by more than this fraction.
OBJECTIVE_STEP = 1e-9


def choose_standbys(plan: Plan, problem: Problem) -> Plan:
    """`plan` with the standbys that bring its reliability to `problem.constraints.min_reliability`,
    then those that lower an objective that weighs unreliability (see the module docstring)."""
    if not wants_standbys(problem):
        return plan
    target = problem.constraints.min_reliability
    if target is not None and reliability(plan, problem) < target:
        plan = _meet(plan, problem, target)
    if unreliability_weight(problem) > 0:
        plan = _lower_objective(plan, problem)
    return plan


def _lower_objective(plan: Plan, problem: Problem) -> Plan:
    current, now = plan, evaluate(plan, problem).objective_value
    while True:
        scored = [(evaluate(c, problem).objective_value, c) for c, _ in _one_more(current, problem)]
        better = [(value, c) for value, c in scored if value < now * (1.0 - OBJECTIVE_STEP)]
        if not better:
            break
        now, current = min(better, key=lambda vc: vc[0])
    best, target = now, problem.constraints.min_reliability or 0.0
    return _prune(current, lambda c: evaluate(c, problem).objective_value <= best and reliability(c, problem) >= target)


def _meet(plan: Plan, problem: Problem, target: float) -> Plan:
    current = plan
    while True:
        now = reliability(current, problem)
        best: tuple[float, float, float, Plan] | None = None
        for candidate, added in _one_more(current, problem):
            r = reliability(candidate, problem)
            if r <= now:
                continue
            # the failure probability divided, per standby added: a move of two standbys must do
            # twice as much as a move of one
            gain = (math.log1p(-now) - math.log1p(-r) if r < 1.0 else math.inf) / added
            memory = sum(evaluate(candidate, problem).memory_by_device_bytes.values())
            if best is None or (gain, -memory) > (best[0], -best[2]):
                best = (gain, r, memory, candidate)
        if best is None:
            raise InfeasibleError(
                f"no plan with standbys reaches reliability {target:g}: the best found is "
                f"{now:.6g} ({current}); lower --min-reliability, or add devices that fail less often, or "
                "memory for more standbys")
        current = best[3]
        if best[1] >= target:
            return _prune(current, lambda c: reliability(c, problem) >= target)


def _prune(plan: Plan, still_good: Callable[[Plan], bool]) -> Plan:
    """Drop every standby the plan is `still_good` without (the last-added first): a move that
    helped early can be made redundant by later ones."""
    for stage in reversed(plan.stages):
        for device in reversed(stage.standbys):
            standbys = dict(plan.standbys)
            kept = tuple(d for d in stage.standbys if d != device)
            standbys.update({n: kept for n in stage.node_ids})
            candidate = plan.with_standbys(standbys)
            if still_good(candidate):
                return _prune(candidate, still_good)
    return plan


def _one_more(plan: Plan, problem: Problem) -> Iterator[tuple[Plan, int]]:
    """`plan` with one more standby: on one stage, for each stage and device that can take it, or on
    every stage that lacks that device (two stages that fail together, because their devices do,
    are only helped by one standby for both at once)."""
    devices = problem.cluster.device_names
    # a tiled stage takes no standby: a lost tile device's tiles move to the others (Plan.failover)
    stages = [s for s in plan.stages if len(s.standbys) < MAX_STANDBYS_PER_STAGE and s.tiling is None]
    for device in devices:
        lacking = [s for s in stages if device not in s.replicas]
        moves = [[s] for s in lacking] + ([lacking] if len(lacking) > 1 else [])
        for move in moves:
            standbys = dict(plan.standbys)
            for stage in move:
                standbys.update({n: (*stage.standbys, device) for n in stage.node_ids})
            candidate = plan.with_standbys(standbys)
            if not any(v.kind == "memory" for v in evaluate(candidate, problem).violations):
                yield candidate, len(move)


def brute_force_standbys(plan: Plan, problem: Problem, max_per_stage: int = 2) -> Plan | None:
    """The plan with the fewest standbys (then the highest reliability) that meets the constraint,
    over every ordered choice of up to `max_per_stage` standbys per stage; None when none does.
    Exponential: for tests on small cases."""
    target = problem.constraints.min_reliability or 0.0
    stages = plan.stages
    devices = problem.cluster.device_names
    choices = [[c for k in range(max_per_stage + 1) for c in itertools.permutations(
        [d for d in devices if d != s.device], k)] for s in stages]
    best: tuple[int, float, Plan] | None = None
    for assignment in itertools.product(*choices):
        standbys = {n: tuple(a) for s, a in zip(stages, assignment, strict=True) for n in s.node_ids if a}
        candidate = plan.with_standbys(standbys)
        b = evaluate(candidate, problem)
        if any(v.kind == "memory" for v in b.violations) or b.reliability < target:
            continue
        key = (sum(len(a) for a in assignment), -b.reliability)
        if best is None or key < (best[0], -best[1]):
            best = (key[0], b.reliability, candidate)
    return None if best is None else best[2]

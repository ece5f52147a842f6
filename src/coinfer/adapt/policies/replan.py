"""The loop `partial` and `resolve` share: look again now and then, switch only for a clear gain.

A *look* happens when `window` requests have completed since the last one, when the estimates
have moved by more than `moved` (a fraction; see `switching.estimates_moved`) since it, or at once
after a measured deadline miss. It proposes a plan for the problem as currently estimated
(`view.problem`) and compares the two with `cost.evaluate` on that problem: a feasible plan always
beats an infeasible one; otherwise the candidate must improve the objective by the fraction
`hysteresis`, waived after a deadline miss (the plan in use has just been shown not to work). Each
look also asks the runtime to probe the links no request crossed in the last `quiet_s`
(`coinfer.adapt.probing`), so a link the plan abandoned is seen again when it recovers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from coinfer.adapt.estimates import Estimates
from coinfer.adapt.policies.switching import (
    deadline_missed,
    describe,
    estimates_moved,
    improves,
    same_placement,
    with_codecs,
)
from coinfer.adapt.policy import Decision, View
from coinfer.adapt.probing import LinkActivity
from coinfer.cost import evaluate
from coinfer.errors import InfeasibleError
from coinfer.plan import Plan
from coinfer.problem import Problem

Propose = Callable[[Problem, Plan], Plan]  # (problem as estimated, plan in use) -> candidate


@dataclass(frozen=True)
class ReplanState:
    since_look: int = 0  # requests completed since the last look
    looked_with: Estimates = field(default_factory=Estimates)  # the estimates of the last look
    switched_at_s: float = -math.inf  # when the plan in use was chosen
    activity: LinkActivity = field(default_factory=LinkActivity)


@dataclass(frozen=True)
class Triggers:
    window: int
    moved: float
    hysteresis: float
    quiet_s: float


def replan(name: str, view: View, state: ReplanState, propose: Propose, triggers: Triggers) -> Decision:
    """One decision of the loop in the module docstring."""
    record = view.record
    if record is None:
        return Decision(None, state)
    state = replace(state, since_look=state.since_look + 1, activity=state.activity.seen(record))
    missed = deadline_missed(view, state.switched_at_s)
    moved = estimates_moved(view.estimates, state.looked_with, view.base_problem.cluster)
    if not missed and moved <= triggers.moved and state.since_look < triggers.window:
        return Decision(None, state)
    why = ("deadline missed" if missed else f"estimates moved {moved:.0%}" if moved > triggers.moved
           else f"window of {triggers.window}")
    links = [(lk.source, lk.target) for lk in view.base_problem.cluster.links]
    probes = state.activity.thin(links, view.now_s, triggers.quiet_s)
    state = replace(state, since_look=0, looked_with=view.estimates, activity=state.activity.used(probes, view.now_s))
    try:
        candidate = with_codecs(propose(view.problem, view.current), view)
    except InfeasibleError as err:
        return Decision(None, state, f"{name}: {why}; no plan meets the constraints ({err})", probes)
    if same_placement(candidate, view.current):
        return Decision(None, state, f"{name}: {why}; the plan in use is still the best found", probes)
    now, new = evaluate(view.current, view.problem), evaluate(candidate, view.problem)
    gain = describe(new.objective_value, now.objective_value)
    if new.feasible and not now.feasible:
        switch, why = True, f"{why}; the plan in use breaks {now.violations[0].kind}, the new one does not"
    elif new.feasible == now.feasible:
        switch = improves(new.objective_value, now.objective_value, 0.0 if missed else triggers.hysteresis)
        why = f"{why}; predicted objective {gain}"
    else:
        switch, why = False, f"{why}; the candidate breaks {new.violations[0].kind}"
    if not switch:
        return Decision(None, state, f"{name}: {why}: keep", probes)
    return Decision(candidate, replace(state, switched_at_s=view.now_s), f"{name}: {why}: switch", probes)

"""`resolve`: re-solve the whole problem with a registered solver, switching only for a clear gain.

The same loop as `partial` (`replan`: a look every `window` requests, when the estimates moved,
or after a deadline miss; `hysteresis`), but each look runs a full solver on the problem with the
current estimates applied. Option `solver` names any solver of `coinfer.solve.SOLVERS`; by
default (`default_solver`):
- two devices: `dads`, exact for any DAG by one minimum cut, a few milliseconds;
- a chain graph on more devices: `chain-dp`, exact over every placement, a few milliseconds;
- otherwise (a DAG on three or more devices, or a throughput objective): `ilp`, the only exact
  solver there, tens to hundreds of milliseconds, so a look every `window` requests keeps the
  cost per request low. Use `partial` when a look must stay in a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from coinfer.adapt.policies.replan import ReplanState, Triggers, replan
from coinfer.adapt.policies.switching import check_count, check_fraction
from coinfer.adapt.policy import Decision, View
from coinfer.adapt.probing import THIN_AFTER_S
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve import get_solver

WINDOW_REQUESTS = 20  # as partial
MOVED_FRACTION = 0.2  # as partial
HYSTERESIS = 0.03  # the adaptive paper's 3% (REFERENCE section 4 step 5)


def default_solver(problem: Problem) -> str:
    """The solver `resolve` uses when none is named (see the module docstring for why)."""
    if len(problem.cluster.devices) == 2:
        return "dads"
    if problem.graph.is_chain and not problem.objective.weights.get("bottleneck_s"):
        return "chain-dp"
    return "ilp"


@dataclass(frozen=True)
class ResolvePolicy:
    """Full re-solve with hysteresis; options: solver, window, moved, hysteresis, quiet_s."""

    name: ClassVar[str] = "resolve"
    solver: str | None = None
    window: int = WINDOW_REQUESTS
    moved: float = MOVED_FRACTION
    hysteresis: float = HYSTERESIS
    quiet_s: float = THIN_AFTER_S

    def __post_init__(self) -> None:
        if self.solver is not None:
            get_solver(self.solver)  # an unknown name fails now, listing the solvers
        check_count("window", self.window)
        check_fraction("hysteresis", self.hysteresis)
        check_fraction("moved", self.moved)

    def initial_state(self, view: View) -> ReplanState:
        return ReplanState()

    def decide(self, view: View, state: ReplanState) -> Decision:
        solve = get_solver(self.solver or default_solver(view.base_problem))

        def propose(problem: Problem, current: Plan) -> Plan:
            return solve(problem)

        triggers = Triggers(self.window, self.moved, self.hysteresis, self.quiet_s)
        return replan(self.name, view, state, propose, triggers)

"""`resolve`: re-solve the whole problem with a registered solver, switching only for a clear gain.

The same loop as `partial` (`replan`: a look every `window` requests, when the estimates moved,
or after a deadline miss; `hysteresis`), but each look runs a full solver on the problem with the
current estimates applied. Option `solver` names any solver of `coinfer.solve.SOLVERS`; by
default (`default_solver`):
- two devices: `dads`, exact for any DAG by one minimum cut, a few milliseconds;
- a chain graph on more devices: `chain-dp`, exact over every placement, a few milliseconds;
- otherwise (a DAG on three or more devices, or a throughput objective): `ilp`, the only exact
  solver there, tens to hundreds of milliseconds.

Option `granularity`: `auto` (the default) re-solves a captured op DAG that would need `ilp` at
block granularity instead (`solve.coarse`: each residual block, Inception module or transformer
layer kept whole, then expanded back to ops). MobileNetV2's blocks form a chain, so a look is one
`chain-dp` of 27 nodes (about 4 ms a look) instead of an ILP of 153 ops on three devices (about
50 ms). The candidate is costed at op granularity before any switch. `op` always solves the op
graph; `block` always contracts blocks when there are any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from coinfer.adapt.policies.replan import ReplanState, Triggers, replan
from coinfer.adapt.policies.switching import check_count, check_fraction
from coinfer.adapt.policy import Decision, View
from coinfer.adapt.probing import THIN_AFTER_S
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve import get_solver
from coinfer.solve.coarse import block_view

WINDOW_REQUESTS = 20  # as partial
MOVED_FRACTION = 0.2  # as partial
HYSTERESIS = 0.03  # the adaptive paper's 3% (REFERENCE section 4 step 5)
GRANULARITIES = ("auto", "op", "block")


def default_solver(problem: Problem) -> str:
    """The solver `resolve` uses when none is named (see the module docstring for why)."""
    if len(problem.cluster.devices) == 2:
        return "dads"
    if problem.graph.is_chain and not problem.objective.weights.get("bottleneck_s"):
        return "chain-dp"
    return "ilp"


@dataclass(frozen=True)
class ResolvePolicy:
    """Full re-solve with hysteresis; options: solver, window, moved, hysteresis, quiet_s, granularity."""

    name: ClassVar[str] = "resolve"
    solver: str | None = None
    window: int = WINDOW_REQUESTS
    moved: float = MOVED_FRACTION
    hysteresis: float = HYSTERESIS
    quiet_s: float = THIN_AFTER_S
    granularity: str = "auto"

    def __post_init__(self) -> None:
        if self.solver is not None:
            get_solver(self.solver)  # an unknown name fails now, listing the solvers
        if self.granularity not in GRANULARITIES:
            raise UserInputError(f"policy 'resolve': granularity must be one of {', '.join(GRANULARITIES)}, "
                                 f"not {self.granularity!r}")
        check_count("window", self.window)
        check_fraction("hysteresis", self.hysteresis)
        check_fraction("moved", self.moved)

    def initial_state(self, view: View) -> ReplanState:
        return ReplanState()

    def decide(self, view: View, state: ReplanState) -> Decision:
        def propose(problem: Problem, current: Plan) -> Plan:
            coarse = block_view(problem) if self._at_blocks(problem) else None
            if coarse is None:
                return get_solver(self.solver or default_solver(problem))(problem)
            return coarse.expand(get_solver(self.solver or default_solver(coarse.problem))(coarse.problem))

        triggers = Triggers(self.window, self.moved, self.hysteresis, self.quiet_s)
        return replan(self.name, view, state, propose, triggers)

    def _at_blocks(self, problem: Problem) -> bool:
        if self.granularity == "auto":
            return self.solver is None and default_solver(problem) == "ilp"
        return self.granularity == "block"

"""`partial`: adjust the cuts of the plan in use a little, as D3's partial adjustment does.

Paper: D3 (Zhang et al., arXiv 2101.05952; REFERENCE section 5) adjusts its device-edge-cloud
partitions *partially* at run time from measured processing times and network conditions instead
of re-partitioning the whole DNN. Here a look runs `coinfer.solve.hpa.hpa_adjust(view.problem,
view.current)`: steepest descent moving one stage boundary at a time, seeded by the plan in use,
on the problem with the current estimates applied (milliseconds on a 150-node graph). When and
whether it switches is `replan`'s loop: a look every `window` requests, when the estimates moved
by more than `moved`, or after a deadline miss; switch for a `hysteresis` gain. D3's own triggers
are not public; these defaults are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from coinfer.adapt.policies.replan import ReplanState, Triggers, replan
from coinfer.adapt.policies.switching import check_count, check_fraction
from coinfer.adapt.policy import Decision, View
from coinfer.adapt.probing import THIN_AFTER_S
from coinfer.solve.hpa import hpa_adjust

WINDOW_REQUESTS = 20  # ours: a look every 20 requests costs about 0.2 ms per request on a 150-node graph
MOVED_FRACTION = 0.2  # ours: a 20% change of a bandwidth or a speed is worth a look at once
HYSTERESIS = 0.03  # the adaptive paper's 3% (REFERENCE section 4 step 5)


@dataclass(frozen=True)
class PartialPolicy:
    """Partial adjustment with hysteresis; options: window, moved, hysteresis, quiet_s."""

    name: ClassVar[str] = "partial"
    window: int = WINDOW_REQUESTS
    moved: float = MOVED_FRACTION
    hysteresis: float = HYSTERESIS
    quiet_s: float = THIN_AFTER_S

    def __post_init__(self) -> None:
        check_count("window", self.window)
        check_fraction("hysteresis", self.hysteresis)
        check_fraction("moved", self.moved)

    def initial_state(self, view: View) -> ReplanState:
        return ReplanState()

    def decide(self, view: View, state: ReplanState) -> Decision:
        triggers = Triggers(self.window, self.moved, self.hysteresis, self.quiet_s)
        return replan(self.name, view, state, hpa_adjust, triggers)

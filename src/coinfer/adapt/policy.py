"""The contract every adaptive policy meets: a pure function of what has been observed.

A policy is called after every completed request with a `View` (the problem as currently
estimated, the plan in use, the static plan, the request just finished) and the state it returned
last time; it returns a `Decision`: keep the plan or switch to another, optionally probe links,
and its next state. It never touches sockets or clocks, so the runtime and the simulator call it
unchanged and a decision can be replayed and tested. Policies are registered by name in
`coinfer.adapt.policies.POLICIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from coinfer.adapt.estimates import Estimates
from coinfer.adapt.records import RequestRecord
from coinfer.plan import Plan
from coinfer.problem import Problem


@dataclass(frozen=True)
class View:
    """What a policy may look at when it decides."""

    now_s: float
    base_problem: Problem  # the deploy-time problem: profiles, cluster as configured, objective, deadline
    problem: Problem  # `base_problem` with the current estimates applied (`estimates.apply`)
    estimates: Estimates
    current: Plan  # the plan new requests are served with
    static: Plan  # the plan served first: the static baseline
    record: RequestRecord | None  # the request that just completed (None on the first call)
    served: int  # requests completed so far
    down: frozenset[str] = frozenset()  # devices the runtime's watchdog declared down (a plan on them is refused)
    degraded: frozenset[str] = frozenset()  # devices whose stages lately run far slower than they should


@dataclass(frozen=True)
class Decision:
    """Keep (`plan` None) or switch to `plan`; probe these links (source, target) now; why."""

    plan: Plan | None
    state: Any
    reason: str = ""
    probe_links: tuple[tuple[str, str], ...] = ()


class Policy(Protocol):
    """A named decision function and its initial state."""

    @property
    def name(self) -> str: ...  # read-only, so a frozen dataclass with a `name` class constant is a Policy

    def initial_state(self, view: View) -> Any: ...

    def decide(self, view: View, state: Any) -> Decision: ...


PolicyFactory = Callable[..., Policy]  # keyword options (hysteresis, window, solver...) -> Policy

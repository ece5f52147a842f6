"""A problem: what a solver or the cost model needs to judge a placement.

Problem = graph + cluster + the time of every node on every device + objective + constraints.
Node times are resolved before a Problem is made (see `coinfer.profile.resolve`), so this module,
the cost model and the solvers need neither torch nor a profiler.

Objectives are weighted sums of metrics, written `latency`, `energy`, `origin-energy`, `cost`,
`throughput` (which minimises the bottleneck stage time), `unreliability` (the probability that a
request fails, 1 - reliability), or `latency=1,energy=0.2`. A weight on unreliability is what a
failed request costs in the other terms' units: `latency=1,unreliability=2` counts a failure as
2 s more latency, so the objective is the expected latency with that penalty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from coinfer.cluster import Cluster
from coinfer.errors import ObjectiveError, ProfileError
from coinfer.graph import Graph

Metric = Literal["latency_s", "energy_j", "origin_energy_j", "cost_usd", "bottleneck_s", "unreliability"]

METRIC_NAMES: Mapping[str, Metric] = {
    "latency": "latency_s",
    "energy": "energy_j",
    "origin-energy": "origin_energy_j",
    "cost": "cost_usd",
    "throughput": "bottleneck_s",
    "unreliability": "unreliability",
}


@dataclass(frozen=True)
class Objective:
    """Minimise sum(weight * metric); see the module docstring for the names."""

    weights: Mapping[Metric, float] = field(default_factory=lambda: {"latency_s": 1.0})

    def __str__(self) -> str:
        names = {v: k for k, v in METRIC_NAMES.items()}
        if len(self.weights) == 1 and next(iter(self.weights.values())) == 1.0:
            return names[next(iter(self.weights))]
        return ",".join(f"{names[m]}={w:g}" for m, w in self.weights.items())


def parse_objective(text: str) -> Objective:
    """`latency`, `energy`, ..., or weighted `latency=1,energy=0.5` (see the module docstring)."""
    weights: dict[Metric, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, eq, value = part.partition("=")
        metric = METRIC_NAMES.get(name.strip()) or (name.strip() if name.strip() in get_args(Metric) else None)
        if name.strip() == "reliability":
            raise ObjectiveError("objective 'reliability': an objective is minimised, so weigh 'unreliability' "
                                 "(1 - reliability, the probability that a request fails) instead, e.g. "
                                 "'latency=1,unreliability=2', or set a floor with --min-reliability")
        if metric is None:
            raise ObjectiveError(f"unknown objective {name!r}; use one of {', '.join(METRIC_NAMES)} "
                                 f"or weighted terms like 'latency=1,energy=0.2'")
        try:
            weight = float(value) if eq else 1.0
        except ValueError:
            raise ObjectiveError(f"objective weight {value!r} for {name!r} is not a number") from None
        if weight < 0 or not math.isfinite(weight):
            raise ObjectiveError(f"objective weight for {name!r} must be a finite non-negative number, got {value}")
        weights[metric] = weight  # type: ignore[index]
    if not weights:
        raise ObjectiveError("empty objective; use e.g. 'latency' or 'latency=1,energy=0.2'")
    return Objective(weights)


@dataclass(frozen=True)
class Constraints:
    """Limits a plan must meet (the survey's C3..C6 and C2; memory per device is always checked).

    `request_rate_per_s` is the shared-capacity check: at that arrival rate every device (after
    its background load) and every link must be busy less than 100% of the time.
    `min_reliability` is the least probability that a request finds what it needs up
    (coinfer.cost.reliability); standbys are how a plan meets it (coinfer.solve.replicas).
    """

    deadline_s: float | None = None
    origin_energy_budget_j: float | None = None
    request_rate_per_s: float | None = None
    min_reliability: float | None = None

    def __post_init__(self) -> None:
        if self.min_reliability is not None and not 0.0 < self.min_reliability <= 1.0:
            raise ObjectiveError(f"min_reliability must be a probability in (0, 1], got {self.min_reliability}")


@dataclass(frozen=True)
class Problem:
    """Everything needed to cost a plan: see the module docstring."""

    graph: Graph
    cluster: Cluster
    node_time_s: Mapping[str, Mapping[str, float]]
    objective: Objective = field(default_factory=Objective)
    constraints: Constraints = field(default_factory=Constraints)
    time_sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for device in self.cluster.device_names:
            times = self.node_time_s.get(device)
            if times is None:
                raise ProfileError(f"no node times for device {device!r}; profile it or give it flops_per_s")
            missing = [n.id for n in self.graph.nodes if n.id not in times]
            if missing:
                raise ProfileError(
                    f"the times for device {device!r} miss {len(missing)} node(s) of graph "
                    f"{self.graph.name!r}, first {missing[:3]}; re-profile this graph"
                )

    @property
    def origin(self) -> str:
        return self.cluster.origin.name

    def without(self, devices: Iterable[str], links: Iterable[tuple[str, str]] = ()) -> Problem:
        """The same problem on the cluster less `devices` (see `Cluster.without`) and less the
        directed `links` (source, target): what is left when those are lost."""
        gone, cut = set(devices), set(links)
        if not gone and not cut:
            return self
        cluster = self.cluster.without(gone).without_links(cut)
        times = {d: t for d, t in self.node_time_s.items() if d not in gone}
        return replace(self, cluster=cluster, node_time_s=times)

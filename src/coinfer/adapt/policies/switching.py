"""When a policy looks again and when it switches: deadline misses, moved estimates, hysteresis.

Shared by every policy so that they agree on what a miss is and what "better" means:
- a *deadline miss* is a request sent under the plan now in use (at or after the moment it was
  chosen; requests in flight at a switch ran the old plan) whose measured latency exceeds
  `constraints.deadline_s`. A failed request is no miss: it has no latency, and failures are the
  runtime's to handle;
- *hysteresis* h: a new plan must be predicted at least a fraction h better than the current one,
  so measurement noise does not make the plan flap between near-equal splits (the adaptive
  paper's 3%, REFERENCE section 4 step 5);
- estimates have *moved* by the largest relative change of a link's bandwidth, a link's fixed
  time (against at least `LATENCY_FLOOR_S`, so a 0.1 ms link jittering to 0.2 ms is no move) or a
  device's speed factor.
"""

from __future__ import annotations

import dataclasses
import math

from coinfer.adapt.estimates import Estimates
from coinfer.adapt.policy import View
from coinfer.cluster import Cluster
from coinfer.errors import UserInputError
from coinfer.plan import Plan

LATENCY_FLOOR_S = 1e-3


def deadline_missed(view: View, since_s: float) -> bool:
    """The request just completed was sent at or after `since_s` and took longer than the deadline."""
    deadline_s = view.base_problem.constraints.deadline_s
    record = view.record
    return (deadline_s is not None and record is not None and record.latency_s is not None
            and record.sent_s >= since_s and record.latency_s > deadline_s)


def improves(new: float, old: float, hysteresis: float) -> bool:
    """`new` is below `old` by at least the fraction `hysteresis` (any finite value beats infinity)."""
    if not math.isfinite(new):
        return False
    if not math.isfinite(old):
        return True
    return new < old and new <= old * (1.0 - hysteresis)


def describe(new: float, old: float) -> str:
    """`old -> new (+x%)` for a reason string."""
    if old > 0 and math.isfinite(old) and math.isfinite(new):
        return f"{old:.4g} -> {new:.4g} ({(new - old) / old:+.1%})"
    return f"{old:.4g} -> {new:.4g}"


def estimates_moved(new: Estimates, old: Estimates, cluster: Cluster) -> float:
    """The largest relative change from `old` to `new` (configured values stand in for missing ones)."""
    largest = 0.0
    for link in cluster.links:
        key = (link.source, link.target)
        a, b = new.links.get(key), old.links.get(key)
        bw_a = a.bandwidth_bits_per_s if a else link.bandwidth_bits_per_s
        bw_b = b.bandwidth_bits_per_s if b else link.bandwidth_bits_per_s
        lat_a = a.latency_s if a else link.latency_s
        lat_b = b.latency_s if b else link.latency_s
        largest = max(largest, _ratio_change(bw_a, bw_b),
                      abs(lat_a - lat_b) / max(lat_b + link.overhead_s, LATENCY_FLOOR_S))
    for device in cluster.devices:
        factor_a = new.speed_factor.get(device.name, 1.0)
        factor_b = old.speed_factor.get(device.name, 1.0)
        largest = max(largest, _ratio_change(factor_a, factor_b))
    return largest


def _ratio_change(a: float, b: float) -> float:
    """max(a/b, b/a) - 1: a halving and a doubling are the same size of move."""
    if a <= 0 or b <= 0:
        return 0.0 if a == b else math.inf
    return max(a / b, b / a) - 1.0


def with_codecs(plan: Plan, view: View) -> Plan:
    """`plan` with the static plan's link codecs: the codecs chosen at deploy time stay with every plan."""
    return dataclasses.replace(plan, codecs=view.static.codecs) if view.static.codecs else plan


def same_placement(a: Plan, b: Plan) -> bool:
    return a.placement == b.placement


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserInputError(f"{name} must be a fraction in [0, 1) (0.03 is 3%), got {value}")


def check_count(name: str, value: int) -> None:
    if value < 1:
        raise UserInputError(f"{name} must be a positive number of requests, got {value}")

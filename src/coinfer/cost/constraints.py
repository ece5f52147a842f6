"""Which constraints a costed plan breaks, and by how much (the survey's C2-C6, our definitions).

- memory: a device's need (parameters + largest working set) exceeds its memory;
- deadline: the latency exceeds `deadline_s`;
- energy-budget: the origin's energy exceeds `origin_energy_budget_j` (its battery per request);
- capacity: at `request_rate_per_s`, a device or link would be busy more than 100% of the time;
- link: a value must cross between two devices that have no link (its time is infinite);
- reliability: the probability that a request succeeds is below `min_reliability`.
"""

from __future__ import annotations

from collections.abc import Mapping

from coinfer.cost.breakdown import Breakdown, Violation
from coinfer.problem import Problem
from coinfer.units import format_bytes


def violations(b: Breakdown, problem: Problem, resources_busy_s: Mapping[str, float]) -> tuple[Violation, ...]:
    found: list[Violation] = []
    for device, need in b.memory_by_device_bytes.items():
        have = problem.cluster.device(device).memory_bytes
        if need > have:
            found.append(Violation(
                "memory", device, need, have,
                f"device {device} needs {format_bytes(need)} but has {format_bytes(have)} "
                f"({format_bytes(need - have)} short); "
                f"move nodes with large parameters elsewhere or give it more memory_bytes",
            ))
    for t in b.transfers:
        if t.time_s == float("inf"):
            found.append(Violation(
                "link", f"{t.source}->{t.target}", t.size_bytes, 0.0,
                f"{t.tensor!r} must go from {t.source} to {t.target} but no link joins them; "
                f"add a link to the cluster or keep its producer and readers together",
            ))
    c = problem.constraints
    if c.deadline_s is not None and b.latency_s > c.deadline_s:
        found.append(Violation(
            "deadline", "latency", b.latency_s, c.deadline_s,
            f"latency {b.latency_s * 1e3:.1f} ms exceeds the deadline {c.deadline_s * 1e3:.1f} ms "
            f"by {(b.latency_s - c.deadline_s) * 1e3:.1f} ms",
        ))
    if c.origin_energy_budget_j is not None and b.origin_energy_j > c.origin_energy_budget_j:
        found.append(Violation(
            "energy-budget", problem.origin, b.origin_energy_j, c.origin_energy_budget_j,
            f"the origin {problem.origin} spends {b.origin_energy_j:.3g} J per request, over its budget "
            f"{c.origin_energy_budget_j:.3g} J by {b.origin_energy_j - c.origin_energy_budget_j:.3g} J",
        ))
    if c.min_reliability is not None and b.reliability < c.min_reliability:
        found.append(Violation(
            "reliability", "reliability", b.reliability, c.min_reliability,
            f"reliability {b.reliability:.6g} is below the minimum {c.min_reliability:g}; give its stages standbys "
            f"('first..last@primary+standby', or let the solver choose them) or use devices that fail less",
        ))
    if c.request_rate_per_s is not None:
        for resource, busy_s in resources_busy_s.items():
            load = c.request_rate_per_s * busy_s
            if load > 1.0:
                found.append(Violation(
                    "capacity", resource, load, 1.0,
                    f"{resource} would be {load:.0%} busy at {c.request_rate_per_s:g} requests/s "
                    f"(it keeps up with {1.0 / busy_s:.3g}/s at most)",
                ))
    return tuple(found)


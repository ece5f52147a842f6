"""The origin's waiting energy, folded into terms every solver already optimises.

`cost.evaluate` charges the origin its idle power for the part of the request it spends waiting
(`terms.waiting_energy_j`): P_idle * (L - busy_origin). Written out, the origin's energy is

    E_origin = (P_busy - P_idle) * busy_origin + transmit energy + P_idle * L,

so every plan's energy is its energy on a cluster whose origin draws P_busy - P_idle while
computing and nothing while waiting, plus P_idle * L. Any objective that weighs energy (or the
origin's energy, or money through the origin's electricity) then equals, plan for plan, the same
objective on that cluster with P_idle * (weight on joules) added to the weight on latency. The
solvers need no term of their own: `fold_waiting_energy` hands them that problem, and their
optima, reported objectives and ties are unchanged.

An origin energy budget cannot be folded this way (it would bound E_origin + P_idle * L, a
constraint no solver states), so solvers refuse it when the origin has idle power; `brute-force`,
which costs every plan with `cost.evaluate`, takes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import wraps

from coinfer.cluster import Device, Dvfs
from coinfer.cost.terms import JOULES_PER_KWH
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Metric, Objective, Problem


def fold_waiting_energy(problem: Problem, solver: str = "this solver") -> Problem:
    """`problem` with the origin's idle power moved into the objective's weight on latency."""
    origin = problem.cluster.origin
    idle_w = origin.idle_power_w
    if idle_w == 0.0:
        return problem
    if problem.constraints.origin_energy_budget_j is not None:
        raise UserInputError(
            f"{solver} cannot take an origin energy budget while origin {origin.name!r} has idle_power_w "
            f"({idle_w:g} W): the budget then bounds energy that grows with latency. Use --solver brute-force "
            f"on small graphs, or drop the budget or the idle power"
        )
    weights: dict[Metric, float] = dict(problem.objective.weights)
    joule_weight = (weights.get("energy_j", 0.0) + weights.get("origin_energy_j", 0.0)
                    + weights.get("cost_usd", 0.0) * origin.electricity_usd_per_kwh / JOULES_PER_KWH)
    if joule_weight > 0.0:
        weights["latency_s"] = weights.get("latency_s", 0.0) + idle_w * joule_weight
    devices = tuple(_without_idle(d) if d.origin else d for d in problem.cluster.devices)
    cluster = dataclasses.replace(problem.cluster, devices=devices)
    return dataclasses.replace(problem, cluster=cluster, objective=Objective(weights))


def _without_idle(origin: Device) -> Device:
    """The origin drawing P_busy - P_idle while computing and nothing while waiting."""
    busy_w = origin.busy_power_w - origin.idle_power_w
    dvfs = origin.dvfs
    if dvfs is not None:  # keep the clock (and so the speed); scale kappa to the lower power
        dvfs = Dvfs(busy_w / dvfs.clock_hz**3, dvfs.clock_hz, dvfs.flops_per_cycle)
    return dataclasses.replace(origin, power_w=busy_w, dvfs=dvfs, idle_power_w=0.0)


def folding(name: str, solver: Callable[[Problem], Plan]) -> Callable[[Problem], Plan]:
    """`solver` run on the folded problem (see the module docstring)."""

    @wraps(solver)
    def solve(problem: Problem) -> Plan:
        return solver(fold_waiting_energy(problem, solver=f"solver {name!r}"))

    return solve

"""`ilp`: the exact optimum for any DAG over any devices and link topology, as a MILP (HiGHS).

Model: exactly `coinfer.cost.evaluate`'s (the survey's unified model, REFERENCE section 1):
latency = compute + one hop per (value, other device reading it) + the result's return to the
origin + queueing once per loaded device used; energy, origin energy and money are sums of the
same terms; throughput minimises a bottleneck variable b >= every device's busy time (stretched
by its background load) and every directed link's busy time. The survey's multi-cut placement
is usually solved by heuristics (genetic, graph search); with the dedup-per-device linearisation
of `ilp_model` (after DADS, Hu et al., INFOCOM 2019, which sends a value once per device) the
problem is a MILP small enough for HiGHS to solve to proven optimality.

Constraints: memory per device, the deadline on latency, the origin's energy budget, capacity at
a request rate (rate x busy <= 1 per device and link), and links (a pair without a link can
never exchange a value). Limits are shrunk by `ilp_model.LIMIT_MARGIN` (relative) so that
HiGHS's feasibility tolerance cannot hand back a plan `evaluate` rejects.

Assumptions: weights are non-negative (the objective parser enforces it); node times are given.
Complexity: NP-hard in general (it contains the max-bottleneck partition); N D binaries and about
(N + E) D^2 rows. HiGHS proves optimality quickly on coarse graphs; on large op graphs it may stop
at `TIME_LIMIT_S`: the gap is then logged and the plan's `reported_objective` is evaluated anyway.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from coinfer.cost import evaluate
from coinfer.errors import InfeasibleError
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem
from coinfer.solve.ilp_model import LIMIT_MARGIN, Metrics, MilpModel, build, metrics

log = logging.getLogger(__name__)

TIME_LIMIT_S = 60.0
# HiGHS also stops at an absolute gap of 1e-6; scaling the objective so that a simple plan costs
# OBJECTIVE_SCALE makes that absolute gap a negligible relative one whatever the units (USD, J).
OBJECTIVE_SCALE = 1e4
DISP = False  # True prints the HiGHS log (for debugging a slow model)


@dataclass(frozen=True)
class IlpSolution:
    """A plan with what HiGHS proved about it: `mip_gap` is 0 when optimal."""

    plan: Plan
    optimal: bool
    mip_gap: float
    seconds: float


def ilp(problem: Problem) -> Plan:
    """The optimal plan for `problem` (see the module docstring); raises InfeasibleError."""
    return solve_ilp(problem).plan


def solve_ilp(problem: Problem, *, time_limit_s: float = TIME_LIMIT_S, solver: str = "ilp") -> IlpSolution:
    """Build the MILP, solve it with HiGHS, read the plan back and evaluate it."""
    start = time.perf_counter()
    model = build(problem)
    lin = metrics(model)
    objective = _objective(model, lin)
    # Subnormal coefficients (a price of 1e-313 USD per byte) would overflow the scaling below;
    # they are zero for any practical purpose.
    objective[np.abs(objective) < np.finfo(np.float64).tiny] = 0.0
    _limits(model, lin)
    a = csr_array((model.vals, (model.rows, model.cols)), shape=(len(model.row_lo), len(model.lb)))
    arguments = {"c": objective * _scale(problem, objective, model), "integrality": np.array(model.integer),
                 "bounds": Bounds(model.lb, model.ub), "constraints": LinearConstraint(a, model.row_lo, model.row_hi)}
    options = {"time_limit": time_limit_s, "mip_rel_gap": 0.0, "disp": DISP}
    res = milp(**arguments, options=options)
    if res.status == 2:
        # HiGHS's presolve has been seen to call a feasible model infeasible when a limit row has
        # large coefficients (an origin energy budget of 1e-9 J scaled to a right-hand side of 1);
        # confirm without presolve before telling the user there is no plan.
        res = milp(**arguments, options={**options, "presolve": False})
    if res.x is None:
        raise _infeasible(problem, timed_out=res.status == 1, time_limit_s=time_limit_s)
    placement = {node.id: model.devices[int(np.argmax(res.x[v * len(model.devices):(v + 1) * len(model.devices)]))]
                 for v, node in enumerate(problem.graph.nodes)}
    b = evaluate(Plan(problem.graph, placement), problem)
    gap = float(res.get("mip_gap") or 0.0)
    if res.status != 0:
        log.warning("ilp: HiGHS stopped (%s) with a gap of %.3g; the plan may not be optimal", res.message, gap)
    if b.violations:
        log.warning("ilp: the plan breaks %s (numerical tolerance)", ", ".join(v.kind for v in b.violations))
    plan = Plan(problem.graph, placement, solver, b.objective_value)
    return IlpSolution(plan, res.status == 0, gap, time.perf_counter() - start)


def _objective(model: MilpModel, lin: Metrics) -> np.ndarray:
    weights = model.problem.objective.weights
    c = np.zeros(len(model.lb))
    c += weights.get("latency_s", 0.0) * lin.latency_s
    c += weights.get("energy_j", 0.0) * sum(lin.energy_by_device_j, np.zeros_like(c))
    c += weights.get("origin_energy_j", 0.0) * lin.energy_by_device_j[model.devices.index(model.problem.origin)]
    c += weights.get("cost_usd", 0.0) * lin.cost_usd
    if weights.get("bottleneck_s", 0.0):
        model.bottleneck_var = b = model.var(0.0, math.inf)
        c = np.append(c, weights["bottleneck_s"])
        for resource in _resources(model, lin):
            model.row({**_sparse(resource), b: -1.0}, -math.inf, 0.0)
    return c


def _resources(model: MilpModel, lin: Metrics) -> list[np.ndarray]:
    """Busy time per request of every device (stretched by background load) and every link."""
    devs = [model.problem.cluster.device(name) for name in model.devices]
    stretched = [busy / (1.0 - dev.background.utilisation) if dev.background else busy
                 for busy, dev in zip(lin.busy_s, devs, strict=True)]
    return [*stretched, *lin.link_busy_s.values()]


def _limits(model: MilpModel, lin: Metrics) -> None:
    """Deadline, origin energy budget and capacity rows, each scaled to a right-hand side of 1."""
    c = model.problem.constraints
    shrink = 1.0 - LIMIT_MARGIN
    if c.deadline_s is not None:
        model.row(_sparse(lin.latency_s / c.deadline_s) if c.deadline_s > 0 else _sparse(lin.latency_s),
                  -math.inf, shrink if c.deadline_s > 0 else 0.0)
    if c.origin_energy_budget_j is not None:
        origin = lin.energy_by_device_j[model.devices.index(model.problem.origin)]
        budget = c.origin_energy_budget_j
        model.row(_sparse(origin / budget) if budget > 0 else _sparse(origin), -math.inf, shrink if budget > 0 else 0.0)
    if c.request_rate_per_s is not None:
        for resource in _resources(model, lin):
            model.row(_sparse(resource * c.request_rate_per_s), -math.inf, shrink)


def _sparse(vector: np.ndarray) -> dict[int, float]:
    return {int(i): float(vector[i]) for i in np.flatnonzero(vector)}


def _scale(problem: Problem, objective: np.ndarray, model: MilpModel) -> float:
    """OBJECTIVE_SCALE / the best finite single-device objective, keeping every scaled coefficient
    below 1e12 (HiGHS reads costs >= 1e20 as infinite; absurd inputs such as a 1e-200 W device would
    otherwise get there)."""
    largest = float(np.max(np.abs(objective), initial=0.0))
    refs = [evaluate(all_on(problem.graph, d), problem).objective_value for d in model.devices]
    finite = [r for r in refs if 0 < r < math.inf]
    ref = max(min(finite) if finite else largest, largest * 1e-8)
    scale = OBJECTIVE_SCALE / ref if ref > 0 else 1.0
    return scale if math.isfinite(scale) and math.isfinite(scale * largest) else 1.0


def _infeasible(problem: Problem, *, timed_out: bool, time_limit_s: float) -> InfeasibleError:
    if timed_out:
        return InfeasibleError(
            f"HiGHS found no plan within {time_limit_s:g} s (one may exist); raise the time limit or "
            f"solve the block-granularity graph (--granularity block)")
    c, cluster = problem.constraints, problem.cluster
    active: list[str] = []
    if any(not math.isinf(d.memory_bytes) for d in cluster.devices):
        active.append("memory (add memory_bytes to a device or use smaller nodes)")
    if len(cluster.links) < len(cluster.devices) * (len(cluster.devices) - 1):
        active.append("links (some devices cannot talk; add links)")
    if c.deadline_s is not None:
        active.append(f"deadline {c.deadline_s * 1e3:.3g} ms (raise it)")
    if c.origin_energy_budget_j is not None:
        active.append(f"origin energy budget {c.origin_energy_budget_j:.3g} J (raise it)")
    if c.request_rate_per_s is not None:
        active.append(f"capacity at {c.request_rate_per_s:g} requests/s (lower the rate)")
    if any(d.background is not None and d.background.utilisation >= 1 for d in cluster.devices):
        active.append("background load (a device's queue is unstable)")
    return InfeasibleError(
        f"no plan of graph {problem.graph.name!r} on cluster {problem.cluster.name!r} meets the constraints; "
        f"active: {'; '.join(active) or 'none'}. Relax one of them")

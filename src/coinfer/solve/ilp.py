"""`ilp`: the exact optimum for any DAG over any devices and link topology, as a MILP (HiGHS).

Model: exactly `coinfer.cost.evaluate`'s (the survey's unified model, REFERENCE section 1):
latency = compute + one hop per (value, other device reading it) + the result's return to the
origin + queueing once per loaded device used, a parallel group's members and hops counted by
its span (its slowest device, `ilp_model`); energy, origin energy and money are sums of the
same terms; throughput minimises a bottleneck variable b >= every device's busy time (stretched
by its background load) and every directed link's busy time. The survey's multi-cut placement
is usually solved by heuristics (genetic, graph search); with the dedup-per-device linearisation
of `ilp_model` (after DADS, Hu et al., INFOCOM 2019, which sends a value once per device) the
problem is a MILP small enough for HiGHS to solve to proven optimality.

Reliability (coinfer.solve.ilp_reliability): where something can fail and the objective weighs
unreliability or a reliability floor is set, R is a linear form over failure states, exact. When
every device pair has a link that never fails the MILP also chooses standbys (s[v,d]), jointly
with the placement, under the floor R >= min_reliability and the memory they take; otherwise it
prices the placement's reliability and leaves standbys and the floor to the greedy pass after it
(coinfer.solve.replicas). Among plans of equal objective the one with fewer standbys wins.

Constraints: memory per device, the deadline on latency, the origin's energy budget, capacity at
a request rate (rate x busy <= 1 per device and link), and links (a pair without a link can
never exchange a value). Limits are shrunk by `ilp_model.LIMIT_MARGIN` (relative) so that
HiGHS's feasibility tolerance cannot hand back a plan `evaluate` rejects.

Speed (exact): before the MILP, the best feasible plan among cheap ones (every single-device
plan; `pipeline-dp` for a bottleneck objective while its states are at most PIPELINE_MAX_STATES) is an
incumbent with objective F. Every metric is non-negative, so an optimal plan has latency <=
F / w_latency and bottleneck <= F / w_bottleneck; with the deadline and the request rate these
are `ilp_model.Caps`, and any node time or hop above a cap is ruled out before HiGHS sees the
model (fewer variables, and rows that tighten the LP: see `ilp_model`). The bottleneck objective
needs it most: its LP relaxation spreads every node over all devices and pays no transfer at
all, so without caps HiGHS took 5 s to over 60 s on 500-node op graphs, and 0.3-2.5 s with them
(benchmarks/solve_ilp_speed.py). HiGHS's plan is then compared with the incumbent, so a time-out never returns
a plan worse than the incumbent.

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
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult
from scipy.sparse import csr_array

from coinfer.cost import Breakdown, evaluate, terms
from coinfer.errors import InfeasibleError, UserInputError
from coinfer.plan import Plan, all_on
from coinfer.problem import Metric, Problem
from coinfer.solve.highs import milp
from coinfer.solve.ilp_model import (
    LIMIT_MARGIN,
    Caps,
    Metrics,
    MilpModel,
    build,
    metrics,
    pigeonhole_floor_s,
    single_resource_rows,
)
from coinfer.solve.ilp_reliability import MAX_FAILURE_STATES, reliability_form, standbys_exact, state_count
from coinfer.solve.pipeline_dp import dp_state_count, pipeline_dp
from coinfer.solve.replicas import MAX_STANDBYS_PER_STAGE, choose_standbys
from coinfer.solve.unreliability import wants_standbys

log = logging.getLogger(__name__)

TIME_LIMIT_S = 60.0
# HiGHS also stops at an absolute gap of 1e-6; scaling the objective so that a simple plan costs
# OBJECTIVE_SCALE makes that absolute gap a negligible relative one whatever the units (USD, J).
OBJECTIVE_SCALE = 1e4
DISP = False  # True prints the HiGHS log (for debugging a slow model)
# Relative slack on the caps an incumbent gives (see `_caps`): far above rounding, far below any
# difference between two plans that matters.
CAP_SLACK = 1e-6
# pipeline-dp as an incumbent: O(S M^2) time for S states (5 distinct devices: 160; 6 identical
# servers and an origin: 28) and M cuts, and M^2 floats of memory per class of devices.
PIPELINE_MAX_STATES = 160
PIPELINE_MAX_NODES = 1500
# Each standby costs this much of the scaled objective (a simple plan costs OBJECTIVE_SCALE): among
# plans equal to 1e-7 the one with fewer standbys wins, and a standby that buys nothing is not taken.
STANDBY_TIE_BREAK = 1e-3
# Where links can fail a failover's hops depend on which standby takes over; with one standby per
# node that is linear in the placement (coinfer.solve.ilp_reliability).
ONE_STANDBY_WITH_LINKS = 1


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
    """Find an incumbent, build the MILP under its caps, solve it with HiGHS, read the plan back."""
    start = time.perf_counter()
    terms_ = _reliability_terms(problem)
    singles = [evaluate(all_on(problem.graph, d), problem) for d in problem.cluster.device_names]
    incumbent = _incumbent(problem, singles, terms_)
    model = build(problem, _caps(problem, incumbent), standbys=terms_.most_standbys)
    arguments, scale = _arguments(model, singles, terms_)
    res = _run(arguments, time_limit_s, presolve=True)
    found = _read(res, model)
    if found is not None and _breaks_model(found[1], terms_):
        # HiGHS's presolve has also been seen to hand back a plan 14% over an origin energy budget
        # (coefficients spanning 1e-4..1e9 in that row); the model without presolve is trusted.
        res = _run(arguments, time_limit_s, presolve=False)
        found = _read(res, model)
    candidates = [pb for pb in (found, incumbent) if pb is not None]
    if not candidates:
        raise _infeasible(problem, timed_out=res.status == 1, time_limit_s=time_limit_s)
    # HiGHS's plan is at least as good as the incumbent up to its tolerances. The incumbent wins
    # after a time-out that found nothing better, and when the caps left the model infeasible: no
    # plan within LIMIT_MARGIN of the limits beats it then, so it is optimal as the model sees it.
    best, b = min(candidates, key=lambda pb: (_breaks_model(pb[1], terms_), pb[1].objective_value,
                                               _standby_count(pb[0])))
    optimal = res.status in (0, 2)
    gap = 0.0 if optimal else _gap(res, b.objective_value * scale, model.objective_offset * scale)
    if not optimal:
        log.warning("ilp: HiGHS stopped (%s) with a gap of %.3g; the plan may not be optimal", res.message, gap)
    if b.violations:
        log.warning("ilp: the plan breaks %s (numerical tolerance)", ", ".join(v.kind for v in b.violations))
    plan = Plan(problem.graph, best.placement, solver, b.objective_value, standbys=best.standbys)
    return IlpSolution(plan, optimal, gap, time.perf_counter() - start)


@dataclass(frozen=True)
class ReliabilityTerms:
    """How the MILP prices reliability (coinfer.solve.ilp_reliability): `standbys` adds the form R,
    standby variables and the floor R >= min_reliability; `with_links` puts the links in the
    failure states, and then a node has at most one standby. Without, the standbys and the floor
    are left to the greedy pass after the solver (coinfer.solve.replicas)."""

    standbys: bool = False
    with_links: bool = False

    @property
    def most_standbys(self) -> int:
        if not self.standbys:
            return 0
        return ONE_STANDBY_WITH_LINKS if self.with_links else MAX_STANDBYS_PER_STAGE


def _reliability_terms(problem: Problem) -> ReliabilityTerms:
    if not wants_standbys(problem):
        return ReliabilityTerms()
    if standbys_exact(problem) and state_count(problem, with_links=False) <= MAX_FAILURE_STATES:
        return ReliabilityTerms(standbys=True)
    if state_count(problem, with_links=True) <= MAX_FAILURE_STATES:
        return ReliabilityTerms(standbys=True, with_links=True)
    log.warning("ilp: over %d failure states (devices and links that can fail); the placement is solved without "
                "reliability, and the standby pass after it meets the floor or prices unreliability",
                MAX_FAILURE_STATES)
    return ReliabilityTerms()


def _breaks_model(b: Breakdown, terms_: ReliabilityTerms) -> bool:
    """A violation of a limit the MILP states (a reliability floor it leaves to the standby pass is not one)."""
    return any(v.kind != "reliability" or terms_.standbys for v in b.violations)


def _standby_count(plan: Plan) -> int:
    return sum(len(s) for s in plan.standbys.values())


def _arguments(model: MilpModel, singles: list[Breakdown],
               terms_: ReliabilityTerms) -> tuple[dict[str, Any], float]:
    """scipy.optimize.milp's arguments for the model, and the factor the objective is scaled by."""
    form = reliability_form(model, with_links=terms_.with_links) if terms_.standbys else {}
    lin = metrics(model)
    objective = _objective(model, lin, form)
    # Subnormal coefficients (a price of 1e-313 USD per byte) would overflow the scaling below;
    # they are zero for any practical purpose.
    objective[np.abs(objective) < np.finfo(np.float64).tiny] = 0.0
    _limits(model, lin)
    if terms_.standbys and model.problem.constraints.min_reliability is not None:
        floor = model.problem.constraints.min_reliability
        model.row(form, floor + (1.0 - floor) * LIMIT_MARGIN, math.inf)
    a = csr_array((model.vals, (model.rows, model.cols)), shape=(len(model.row_lo), len(model.lb)))
    scale = _scale(objective, singles)
    scaled = objective * scale
    for col in model.standby.values():
        scaled[col] += STANDBY_TIE_BREAK
    return {"c": scaled, "integrality": np.array(model.integer), "bounds": Bounds(model.lb, model.ub),
            "constraints": LinearConstraint(a, model.row_lo, model.row_hi)}, scale


def _run(arguments: dict[str, Any], time_limit_s: float, *, presolve: bool) -> OptimizeResult:
    options = {"time_limit": time_limit_s, "mip_rel_gap": 0.0, "disp": DISP, "presolve": presolve}
    res = milp(**arguments, options=options)
    if res.status == 2 and presolve:
        # HiGHS's presolve has been seen to call a feasible model infeasible when a limit row has
        # large coefficients (an origin energy budget of 1e-9 J scaled to a right-hand side of 1);
        # confirm without presolve before telling the user there is no plan.
        res = milp(**arguments, options={**options, "presolve": False})
    return res


def _read(res: OptimizeResult, model: MilpModel) -> tuple[Plan, Breakdown] | None:
    """HiGHS's plan (the device of largest x per node, and the standbys of s = 1, the least likely
    to fail first) with its evaluation, if it found one."""
    if res.x is None:
        return None
    k, problem = len(model.devices), model.problem
    graph, cluster = problem.graph, problem.cluster
    placement = {node.id: model.devices[int(np.argmax(res.x[v * k:(v + 1) * k]))] for v, node in enumerate(graph.nodes)}
    standbys: dict[str, list[str]] = {}
    for (v, d), col in model.standby.items():
        node, device = graph.nodes[v].id, model.devices[d]
        if res.x[col] > 0.5 and device != placement[node]:
            standbys.setdefault(node, []).append(device)
    order = {name: (cluster.device(name).failure_probability, i) for i, name in enumerate(model.devices)}
    plan = Plan(graph, placement, standbys={n: tuple(sorted(s, key=order.__getitem__)) for n, s in standbys.items()})
    return plan, evaluate(plan, problem)


def _incumbent(problem: Problem, singles: list[Breakdown], terms_: ReliabilityTerms) -> tuple[Plan, Breakdown] | None:
    """The best feasible plan among cheap ones: every single-device plan (with the greedy standbys
    that meet a reliability floor, when the MILP chooses standbys) and, for a bottleneck objective
    on a small cluster, `pipeline-dp`'s pipeline (25 ms for 500 nodes x 4 devices)."""
    plans = [(all_on(problem.graph, d), b) for d, b in zip(problem.cluster.device_names, singles, strict=True)]
    if terms_.standbys and not terms_.with_links and problem.constraints.min_reliability is not None:
        # (with links in the states the MILP allows one standby per node, fewer than the greedy pass)
        plans = [_with_greedy_standbys(p, problem) or (p, b) for p, b in plans]
    if (problem.objective.weights.get("bottleneck_s", 0.0) > 0 and dp_state_count(problem) <= PIPELINE_MAX_STATES
            and len(problem.graph.nodes) <= PIPELINE_MAX_NODES):
        try:
            piped = pipeline_dp(problem, say_fallback=False)
            plans.append((piped, evaluate(piped, problem)))
        except (InfeasibleError, UserInputError):
            pass  # no pipeline meets memory or links: the single-device plans remain
    feasible = [(p, b) for p, b in plans if not _breaks_model(b, terms_) and math.isfinite(b.objective_value)]
    return min(feasible, key=lambda pb: pb[1].objective_value) if feasible else None


def _with_greedy_standbys(plan: Plan, problem: Problem) -> tuple[Plan, Breakdown] | None:
    try:
        replicated = choose_standbys(plan, problem)
    except InfeasibleError:
        return None
    return replicated, evaluate(replicated, problem)


def _caps(problem: Problem, incumbent: tuple[Plan, Breakdown] | None) -> Caps:
    """Bounds every optimal plan meets: the limits, and what the incumbent's objective F leaves
    for one metric once every other weighted metric is at its floor: w_m m <= F - sum_{m' != m}
    w_m' floor_m' (every metric is at least its floor, `_floors`)."""
    c, weights = problem.constraints, problem.objective.weights
    floors = _floors(problem)
    latency = c.deadline_s * (1 + CAP_SLACK) if c.deadline_s is not None else math.inf
    bottleneck = (1 + CAP_SLACK) / c.request_rate_per_s if c.request_rate_per_s else math.inf
    if incumbent is not None:
        # CAP_SLACK keeps the incumbent (and any plan tied with it) clear of rounding.
        f = incumbent[1].objective_value * (1 + CAP_SLACK)
        floor_cost = {m: w * floors[m] for m, w in weights.items() if w > 0}
        if weights.get("latency_s", 0.0) > 0:
            rest = sum(v for m, v in floor_cost.items() if m != "latency_s")
            latency = min(latency, (f - rest) / weights["latency_s"])
        if weights.get("bottleneck_s", 0.0) > 0:
            rest = sum(v for m, v in floor_cost.items() if m != "bottleneck_s")
            bottleneck = min(bottleneck, (f - rest) / weights["bottleneck_s"])
    return Caps(latency, bottleneck, floors["latency_s"])


def _floors(problem: Problem) -> dict[Metric, float]:
    """What every plan spends at least of each metric: every node on its cheapest device for it,
    with no transfer (latency, energy and cost add up over nodes; the bottleneck is a max)."""
    devices = problem.cluster.devices
    floors: dict[Metric, float] = dict.fromkeys(("latency_s", "energy_j", "origin_energy_j", "cost_usd",
                                                 "bottleneck_s", "unreliability"), 0.0)
    for node in problem.graph.nodes:
        times = [(d, t) for d in devices if math.isfinite(t := problem.node_time_s[d.name][node.id])]
        if not times:
            continue  # no device can run it: no plan is feasible, and 0 is still a floor
        if node.id not in problem.graph.parallel_group_of:
            # a group's span is at least each member's time and each of its hops alone, so leaving its
            # members out keeps "floor + any one hop" and "floor + a member's time" below every latency
            floors["latency_s"] += min(t for _, t in times)
        floors["energy_j"] += min(terms.compute_energy_j(d, t) for d, t in times)
        floors["cost_usd"] += min(terms.device_cost_usd(d, t, terms.compute_energy_j(d, t)) for d, t in times)
        floors["bottleneck_s"] = max(floors["bottleneck_s"], min(terms.effective_busy_s(d, t) for d, t in times))
    return floors


def _gap(res: OptimizeResult, scaled_objective: float, scaled_offset: float) -> float:
    bound = res.get("mip_dual_bound")
    if bound is None or not math.isfinite(bound) or scaled_objective <= 0:
        return math.inf
    return max(0.0, (scaled_objective - float(bound) - scaled_offset) / scaled_objective)


def _objective(model: MilpModel, lin: Metrics, reliability: dict[int, float]) -> np.ndarray:
    weights = model.problem.objective.weights
    c = np.zeros(len(model.lb))
    if reliability and weights.get("unreliability", 0.0):
        # w (1 - R): the constant w stays out of the vector, in the model's offset
        model.objective_offset = weights["unreliability"]
        for col, p_state in reliability.items():
            c[col] -= weights["unreliability"] * p_state
    c += weights.get("latency_s", 0.0) * lin.latency_s
    c += weights.get("energy_j", 0.0) * sum(lin.energy_by_device_j, np.zeros_like(c))
    c += weights.get("origin_energy_j", 0.0) * lin.energy_by_device_j[model.devices.index(model.problem.origin)]
    c += weights.get("cost_usd", 0.0) * lin.cost_usd
    if weights.get("bottleneck_s", 0.0):
        # b is measured in units of its cap, so that every row is O(1). The cap itself goes into
        # one row per resource (busy <= cap), never into b's bound: with the bound b <= cap, HiGHS
        # 1.12's presolve returned suboptimal plans as optimal (test_ilp's regression tests keep
        # two 5-node cases; a 9-row MILP reproduces it without coinfer).
        cap = model.caps.bottleneck_s
        unit = cap if 0 < cap < math.inf else 1.0
        model.bottleneck_var = b = model.var(0.0, math.inf)
        c = np.append(c, weights["bottleneck_s"] * unit)
        for resource in _resources(model, lin):
            model.row({**_sparse(resource / unit), b: -1.0}, -math.inf, 0.0)
            if math.isfinite(cap):
                model.row(_sparse(resource / unit), -math.inf, cap / unit)
        single_resource_rows(model, b, unit)
        floor = pigeonhole_floor_s(model)
        if floor > 0:
            model.row({b: 1.0}, floor / unit, math.inf)
        c = np.append(c, np.zeros(len(model.lb) - len(c)))  # its auxiliary variables cost nothing
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


def _scale(objective: np.ndarray, singles: list[Breakdown]) -> float:
    """OBJECTIVE_SCALE / the best finite single-device objective, keeping every scaled coefficient
    below 1e12 (HiGHS reads costs >= 1e20 as infinite; absurd inputs such as a 1e-200 W device would
    otherwise get there)."""
    largest = float(np.max(np.abs(objective), initial=0.0))
    refs = [b.objective_value for b in singles]
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

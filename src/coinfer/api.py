"""The Python API in a few calls: capture, load a cluster, make a problem, plan, evaluate.

    import coinfer
    graph = coinfer.capture("torchvision:resnet18")
    cluster = coinfer.load_cluster("phone-edge-cloud")
    problem = coinfer.make_problem(graph, cluster, objective="latency")
    plan = coinfer.plan(problem, placement="conv1..layer2@phone | layer3..fc@edge")
    print(plan, coinfer.evaluate(plan, problem).latency_s)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from coinfer.cluster import Cluster
from coinfer.errors import UserInputError
from coinfer.graph import Graph
from coinfer.plan import Plan, parse_plan
from coinfer.problem import Constraints, Objective, Problem, parse_objective
from coinfer.profile.resolve import resolve_times
from coinfer.profile.timings import Profile
from coinfer.solve import get_solver

if TYPE_CHECKING:
    from coinfer.profile.analytic import Calibration


def make_problem(
    graph: Graph,
    cluster: Cluster,
    *,
    objective: str | Objective = "latency",
    deadline_s: float | None = None,
    origin_energy_budget_j: float | None = None,
    request_rate_per_s: float | None = None,
    min_reliability: float | None = None,
    profiles: Mapping[str, Profile] | None = None,
    calibration: Calibration | None = None,
) -> Problem:
    """A Problem with node times resolved per device (see `coinfer.profile.resolve`)."""
    times, sources = resolve_times(graph, cluster, profiles, calibration)
    goal = parse_objective(objective) if isinstance(objective, str) else objective
    limits = Constraints(deadline_s, origin_energy_budget_j, request_rate_per_s, min_reliability)
    return Problem(graph, cluster, times, goal, limits, sources)


def plan(problem: Problem, *, placement: str | Mapping[str, str] | None = None, solver: str | None = None) -> Plan:
    """A plan from a hand-written placement (one-line form or node->device mapping) or a solver.

    Under a `min_reliability` constraint the solver's plan gets the standbys that meet it, and
    under an objective that weighs unreliability those that lower it (coinfer.solve.replicas;
    InfeasibleError says the best reliability possible when none can): `ilp` and `brute-force`
    choose them jointly with the placement, and the greedy pass then finds nothing to add. A
    hand-written placement keeps the standbys it names."""
    if placement is not None and solver is not None:
        raise UserInputError("give either a placement or a solver, not both")
    if placement is None:
        return _solve_with_standbys(solver or "origin-only", problem)
    if isinstance(placement, str):
        return parse_plan(placement, problem.graph, problem.cluster.device_names)
    unknown = sorted(set(placement.values()) - set(problem.cluster.device_names))
    if unknown:
        raise UserInputError(f"placement names unknown device(s) {unknown}; devices: "
                             f"{', '.join(problem.cluster.device_names)}")
    return Plan(problem.graph, dict(placement))


def profile_on_workers(graph: Graph, workers: Mapping[str, str], *, key: str | Path | None = None,
                       worker_keys: str | Path | None = None, insecure: bool = False, warmup: int = 3,
                       repeats: int = 10) -> dict[str, Profile]:
    """Every node of `graph` measured on running workers (`coinfer worker`), by device: `workers`
    maps a device name to "HOST:PORT"; `key` is this client's NAME.key_secret and `worker_keys` a
    directory of DEVICE.key files (or a file), unless the workers run with --insecure. The profiles
    go to `make_problem(..., profiles=...)` (coinfer.runtime.remote_profile)."""
    from coinfer.runtime.client import ClientSecurity
    from coinfer.runtime.remote_profile import profile_workers
    from coinfer.runtime.security import load_keypair, load_public_keys

    addresses = {d: a if a.startswith("tcp://") else f"tcp://{a}" for d, a in workers.items()}
    security = None
    if not insecure:
        if key is None or worker_keys is None:
            raise UserInputError("profile_on_workers needs key= (this client's NAME.key_secret) and worker_keys= (a "
                                 "directory of DEVICE.key files), or insecure=True for workers started with --insecure")
        publics = load_public_keys(worker_keys)
        missing = [d for d in addresses if d not in publics]
        if missing:
            raise UserInputError(f"worker_keys {worker_keys} has no key for {', '.join(missing)}")
        security = ClientSecurity(load_keypair(key), {d: publics[d] for d in addresses})
    return profile_workers(graph, addresses, security, warmup=warmup, repeats=repeats)


def _solve_with_standbys(name: str, problem: Problem) -> Plan:
    """The solver's plan with the greedy standbys (coinfer.solve.replicas). A solver that cannot
    choose standbys treats a reliability floor as a limit on its placement (keeping everything on
    devices that never fail, whatever it costs), so it also solves without the floor, for the
    standbys to meet it; so does one that chooses them but found no plan under the floor (`ilp`
    allows one standby per node where links can fail, the greedy pass up to three). The better of
    the plans with their standbys wins."""
    from coinfer.cost import evaluate
    from coinfer.errors import InfeasibleError
    from coinfer.solve.replicas import choose_standbys
    from coinfer.solve.unreliability import CHOOSE_STANDBYS, wants_standbys

    solve = get_solver(name)
    floored = wants_standbys(problem) and problem.constraints.min_reliability is not None
    candidates: list[Plan] = []
    refusals: list[InfeasibleError] = []

    def attempt(each: Problem) -> None:
        try:
            candidates.append(choose_standbys(solve(each), problem))
        except InfeasibleError as exc:
            refusals.append(exc)

    attempt(problem)
    if floored and (name not in CHOOSE_STANDBYS or not candidates):
        attempt(replace(problem, constraints=replace(problem.constraints, min_reliability=None)))
    if not candidates:
        raise refusals[0]
    costs = [evaluate(c, problem) for c in candidates]
    return min(zip(candidates, costs, strict=True), key=lambda cb: (not cb[1].feasible, cb[1].objective_value))[0]

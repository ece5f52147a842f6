"""`ilp` is exact: it equals the brute-force oracle on small random problems, for every objective,
over full meshes and paths, with prices, background loads and every kind of constraint."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from coinfer.cluster import BackgroundLoad
from coinfer.cost import evaluate
from coinfer.errors import InfeasibleError
from coinfer.plan import all_on
from coinfer.problem import Constraints, Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.ilp import ilp
from tests.solve.random_problems import problems

OBJECTIVES = ["latency", "energy", "origin-energy", "cost", "throughput", "latency=1,energy=0.2,cost=100"]
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def priced_problems(draw: st.DrawFn, *, objective: str = "latency", full_mesh: bool = True,
                    max_nodes: int = 5) -> Problem:
    """`problems()` with device and link prices, electricity, overheads and background loads."""
    p = draw(problems(max_nodes=max_nodes, objective=objective, full_mesh=full_mesh))
    small = st.floats(0, 1e-3)
    devices = tuple(replace(
        d, price_usd_per_s=draw(small), electricity_usd_per_kwh=draw(st.floats(0, 0.3)),
        background=draw(st.none() | st.builds(BackgroundLoad, st.floats(1, 50), st.floats(60, 200))))
        for d in p.cluster.devices)
    links = tuple(replace(lk, overhead_s=draw(st.floats(0, 0.01)), price_usd_per_s=draw(small),
                          price_usd_per_byte=draw(st.floats(0, 1e-9))) for lk in p.cluster.links)
    return replace(p, cluster=replace(p.cluster, devices=devices, links=links))


@st.composite
def constrained_problems(draw: st.DrawFn, *, objective: str = "latency", full_mesh: bool = True) -> Problem:
    """Limits drawn around what the origin-only plan needs, so some bind and some are infeasible."""
    p = draw(priced_problems(objective=objective, full_mesh=full_mesh))
    local = evaluate(all_on(p.graph, p.origin), p)
    frac = st.floats(0.2, 2.0)
    memory = {d.name: draw(st.none() | frac) for d in p.cluster.devices}
    devices = tuple(d if memory[d.name] is None else replace(d, memory_bytes=memory[d.name] * sum(
        local.memory_by_device_bytes.values())) for d in p.cluster.devices)
    limits = Constraints(
        deadline_s=draw(st.none() | frac.map(lambda f: f * local.latency_s)),
        origin_energy_budget_j=draw(st.none() | frac.map(lambda f: f * local.origin_energy_j + 1e-9)),
        request_rate_per_s=draw(st.none() | frac.map(lambda f: f / local.bottleneck_s)),
    )
    return replace(p, cluster=replace(p.cluster, devices=devices), constraints=limits)


def tightened(problem: Problem, factor: float) -> Problem:
    """Every limit multiplied by `factor` (memory, deadline, energy budget; the rate divided)."""
    c = problem.constraints
    limits = Constraints(
        c.deadline_s and c.deadline_s * factor, c.origin_energy_budget_j and c.origin_energy_budget_j * factor,
        c.request_rate_per_s and c.request_rate_per_s / factor)
    devices = tuple(replace(d, memory_bytes=d.memory_bytes * factor) for d in problem.cluster.devices)
    return replace(problem, cluster=replace(problem.cluster, devices=devices), constraints=limits)


def assert_matches_oracle(problem: Problem) -> None:
    plan = ilp(problem)
    b = evaluate(plan, problem)
    assert plan.reported_objective == pytest.approx(b.objective_value, rel=1e-9, abs=1e-15)
    assert b.feasible, b.violations
    oracle = evaluate(brute_force(problem), problem)
    # HiGHS stops at an absolute gap of 1e-6 of the scaled objective (see ilp.OBJECTIVE_SCALE):
    # about 1e-10 of a single-device plan's objective, so compare on that scale.
    scale = min(evaluate(all_on(problem.graph, d), problem).objective_value for d in problem.cluster.device_names)
    assert b.objective_value == pytest.approx(oracle.objective_value, rel=1e-7, abs=max(1e-9 * scale, 1e-12))


@pytest.mark.parametrize("full_mesh", [True, False], ids=["mesh", "path"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_ilp_equals_brute_force(objective: str, full_mesh: bool) -> None:
    @SETTINGS
    @given(problem=priced_problems(objective=objective, full_mesh=full_mesh))
    def check(problem: Problem) -> None:
        assume(math.isfinite(evaluate(all_on(problem.graph, problem.origin), problem).objective_value))
        assert_matches_oracle(problem)

    check()


@pytest.mark.parametrize("objective", ["latency", "energy", "throughput", "cost"])
def test_ilp_equals_brute_force_under_constraints(objective: str) -> None:
    # The MILP shrinks each limit by 1e-5 (ilp_model.LIMIT_MARGIN) against solver tolerances, so its
    # optimum lies between the oracle's under the limits and under limits 1e-4 tighter.
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(problem=constrained_problems(objective=objective, full_mesh=True))
    def check(problem: Problem) -> None:
        loose = evaluate(brute_force(problem), problem)
        strict = tightened(problem, 1 - 1e-4)
        tight = evaluate(brute_force(strict), strict)  # limits change feasibility, never the objective
        try:
            plan = ilp(problem)
        except InfeasibleError:
            assert not tight.feasible
            return
        b = evaluate(plan, problem)
        assert b.feasible, b.violations
        assert plan.reported_objective == pytest.approx(b.objective_value, rel=1e-9, abs=1e-15)
        assert loose.feasible and b.objective_value >= loose.objective_value * (1 - 1e-7) - 1e-15
        if tight.feasible:
            assert b.objective_value <= tight.objective_value * (1 + 1e-7) + 1e-15

    check()


def test_hand_worked_toy(toy_problem: Problem) -> None:
    # phone 1 GFLOP/s (2 W), edge 10 GFLOP/s; link 1 MB/s, 10 ms + 5 ms per message, 1.5 W.
    # all on phone: 1 + 2 = 3 s.  all on edge: input 1 MB 1.015 s + 0.1 + 0.2 s + result 1 kB
    # 0.016 s = 1.331 s.  a@phone b@edge: 1 + 2 MB in 2.015 s + 0.2 + 0.016 = 3.231 s.
    # a@edge b@phone: 1.015 + 0.1 + 2.015 + 2 = 5.13 s.  Best: everything on the edge, 1.331 s.
    plan = ilp(toy_problem)
    assert dict(plan.placement) == {"a": "edge", "b": "edge"}
    assert plan.reported_objective == pytest.approx(1.331)
    # Throughput: all on edge is busiest on the uplink (1.015 s) against the phone's 3 s or the
    # 2.015 s uplink of a@phone b@edge.
    plan = ilp(replace(toy_problem, objective=replace(toy_problem.objective, weights={"bottleneck_s": 1.0})))
    assert dict(plan.placement) == {"a": "edge", "b": "edge"}
    assert plan.reported_objective == pytest.approx(1.015)


def test_infeasible_deadline_names_it(toy_problem: Problem) -> None:
    # The fastest plan takes 1.331 s (above), so a 1 s deadline cannot be met.
    problem = replace(toy_problem, constraints=Constraints(deadline_s=1.0))
    with pytest.raises(InfeasibleError, match="deadline 1e\\+03 ms"):
        ilp(problem)


def test_memory_forces_offload(toy_problem: Problem) -> None:
    # With 4 MB on the phone, b (4 MB of parameters + 2 MB working set) cannot stay there, and
    # a alone (1 MB + 3 MB) fits exactly: the energy optimum still puts all on the edge.
    devices = tuple(replace(d, memory_bytes=4e6) if d.origin else d for d in toy_problem.cluster.devices)
    problem = replace(toy_problem, cluster=replace(toy_problem.cluster, devices=devices))
    plan = ilp(problem)
    assert plan.placement["b"] == "edge"
    assert evaluate(plan, problem).feasible


def test_tiny_energy_budget_found_feasible_without_presolve() -> None:
    # Found by hypothesis: the origin draws no compute power but 1 W while sending, so only
    # "everything on the origin" (0 J) meets a 1e-9 J budget. HiGHS's presolve called the scaled
    # model infeasible; the solver confirms without presolve.
    from coinfer.api import make_problem
    from coinfer.cluster import Cluster, Device, Link
    from coinfer.graph import Graph, GraphInput, Node, TensorSpec

    def node(i: str, ins: tuple[str, ...], out: int) -> Node:
        return Node(i, ins, 1e6, out, 0)

    graph = Graph("g", (GraphInput("input", TensorSpec(1)),), (
        node("n0", ("input",), 13), node("n1", ("input",), 1), node("n2", ("n0",), 1),
        node("n3", ("n0", "n1"), 1), node("n4", ("input",), 1)))
    devices = (Device("d0", "end", 1e9, price_usd_per_s=6.4e-4, electricity_usd_per_kwh=0.25, origin=True),
               Device("d1", "edge", 1e9), Device("d2", "edge", 1e9))
    names = ("d0", "d1", "d2")
    links = tuple(Link(a, b, 1e5, power_w=1.0 if a == "d0" else 0.0) for a in names for b in names if a != b)
    problem = make_problem(graph, Cluster("c", devices, links), origin_energy_budget_j=1e-9)
    assert set(ilp(problem).placement.values()) == {"d0"}

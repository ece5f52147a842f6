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


def test_bottleneck_cap_kept_optimal_regression() -> None:
    # Found by hypothesis: with the bottleneck variable in seconds and bounded by its cap, HiGHS
    # 1.12's presolve returned 0.1015 s as optimal (b is now in units of its cap). d1 is 2.7x
    # faster than the origin d0; d0 -> d1 is 100 kbit/s, d1 -> d0 fast but 49.2 ms per message.
    # Optimum: n1 and n4 on d1 (n4 alone needs 0.106 s on d0). d1 -> d0 then carries n1's 2 B
    # (once, for both readers n2 and n3) and n4's result: 2 x 49.2 ms = 0.0984 s, above d1's
    # 0.066 s of compute, d0's 0.030 s and d0 -> d1's two 1 B messages (0.16 ms).
    from coinfer.api import make_problem
    from coinfer.cluster import Cluster, Device, Link
    from coinfer.graph import Graph, GraphInput, Node, TensorSpec

    def node(i: str, ins: tuple[str, ...], flops: float, out: int) -> Node:
        return Node(i, ins, flops, out, 0)

    graph = Graph("g", (GraphInput("input", TensorSpec(1)),), (
        node("n0", ("input",), 219880299.0, 1), node("n1", ("input",), 6710000000.0, 2),
        node("n2", ("n1",), 36784216.0, 1), node("n3", ("n1",), 2407357235.0, 547008),
        node("n4", ("n0",), 9568500901.0, 1)))
    devices = (Device("d0", "end", 90214354347.0, origin=True), Device("d1", "edge", 245681645563.0))
    links = (Link("d0", "d1", 100000.0), Link("d1", "d0", 570841940.0, latency_s=0.0491989801476741))
    problem = make_problem(graph, Cluster("c", devices, links), objective="throughput")
    plan = ilp(problem)
    assert {n for n, d in plan.placement.items() if d == "d1"} == {"n1", "n4"}
    assert plan.reported_objective == pytest.approx(2 * 0.0491989801476741, rel=1e-6)
    assert_matches_oracle(problem)


def test_presolve_plan_over_the_energy_budget_is_rechecked() -> None:
    # Found by hypothesis: no plan meets the origin's 1.47e-7 J budget (all on d0 spends 5e-6 W x
    # 33.4 ms = 1.67e-7 J; sending the 1.9 MB input anywhere costs the origin 0.08 J or more), but
    # HiGHS's presolve (budget row coefficients spanning 2e-4..8e8) returned all-on-d0 as optimal.
    # The solver re-solves without presolve when evaluate rejects a plan, and reports infeasible.
    from coinfer.cluster import Cluster, Device, Link
    from coinfer.graph import Graph, GraphInput, Node, TensorSpec
    from coinfer.problem import Objective

    graph = Graph("g", (GraphInput("input", TensorSpec(1919359)),), (
        Node("n0", ("input",), 8140338105.481344, 224, 665966), Node("n1", ("input",), 6765766647.76011, 65536, 506),
        Node("n2", ("input",), 573229053.1987922, 270, 1650)))
    devices = (
        Device("d0", "end", 463840029266.3482, power_w=5e-06, price_usd_per_s=1.192092896e-07,
               electricity_usd_per_kwh=0.0032748572644902612, origin=True),
        Device("d1", "edge", 1300000000.0, memory_bytes=2135016.636604071, power_w=0.48438681607152045,
               price_usd_per_s=0.00076610739283087, electricity_usd_per_kwh=0.2272192735953784,
               background=BackgroundLoad(48.708444716042145, 75.3553054089413)),
        Device("d2", "edge", 373460727135.20605, power_w=0.99999, price_usd_per_s=0.00012353661247907247,
               electricity_usd_per_kwh=5.759676341452437e-48, background=BackgroundLoad(2.00001, 84.71962026103937)))
    links = (
        Link("d0", "d1", 100001.0, 0.027543263156470894, 1.1754943508222875e-38, 0.8, 0.0008249400374809952,
             6.168019562081987e-10),
        Link("d0", "d2", 461094274.21918577, 0.039569460349572455, 0.004223804416403888, 1.92, 5e-324,
             6.971661312461527e-10),
        Link("d1", "d0", 999999999.9999999, 0.04190567247518409, 0.007304766865142335, 0.9816516417723264,
             0.0006510063346679892, 8.128584977741651e-10),
        Link("d1", "d2", 872036492.5999919, 0.01790903492198688, 0.007442935104878862, 1.8391756837095299,
             0.0003848341961269216, 3.144790780039722e-10),
        Link("d2", "d0", 285949897.5364518, 0.011277893113326345, 0.004853864443207888, 1.1569240414606563,
             0.0008713123260061302, 1e-300),
        Link("d2", "d1", 559964916.9478567, 0.0001, 0.009198004820290793, 2.535444312435655, 1.1395270699687775e-167,
             5.963301284199673e-10))
    times = {"d0": {"n0": 0.017549882700630317, "n1": 0.014586422518257997, "n2": 0.0012358335137772902},
             "d1": {"n0": 6.261798542677957, "n1": 5.204435882892392, "n2": 0.44094542553753246},
             "d2": {"n0": 0.021797039190507045, "n1": 0.018116407311847445, "n2": 0.0015349112009607985}}
    problem = Problem(graph, Cluster("c", devices, links), times, Objective({"bottleneck_s": 1.0}),
                      Constraints(origin_energy_budget_j=1.4672500185729477e-07))
    assert not evaluate(brute_force(problem), problem).feasible
    with pytest.raises(InfeasibleError):
        ilp(problem)

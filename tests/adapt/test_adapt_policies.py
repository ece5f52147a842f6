"""The registry, and the static, partial and resolve policies (reap has its own file)."""

from __future__ import annotations

import dataclasses

import pytest

from coinfer.adapt.estimates import Estimates, LinkEstimate, apply
from coinfer.adapt.policies import POLICIES, get_policy
from coinfer.adapt.policies.replan import ReplanState
from coinfer.adapt.policies.resolve import default_solver
from coinfer.adapt.policy import Decision, Policy, View
from coinfer.adapt.records import RequestRecord
from coinfer.adapt.synthetic import Replay
from coinfer.cluster import Cluster, Device, Link
from coinfer.errors import UserInputError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan, all_on, parse_plan
from coinfer.problem import Constraints, Problem
from coinfer.solve.hpa import hpa
from tests.adapt.helpers import chain_graph, edge_fog_cloud, phone_edge, problem_of, slower, with_link


def hpa_problem() -> Problem:
    # tests/solve/test_hpa.py's: phone 1 GFLOP/s, edge 100 GFLOP/s; a, b, c of 0.1 GFLOP and d of
    # 1 GFLOP with outputs 1 MB, 1 MB, 10 kB, 10 kB; input 1 MB. At 100 MB/s all goes to the edge;
    # at 100 kB/s the input alone takes 10 s and the cut after c (0.51 s) wins.
    sizes = [1_000_000, 1_000_000, 10_000, 10_000]
    nodes = tuple(Node(c, ("input",) if i == 0 else (chr(96 + i),), 1e9 if c == "d" else 1e8, s)
                  for i, (c, s) in enumerate(zip("abcd", sizes, strict=True)))
    graph = Graph("g", (GraphInput("input", TensorSpec(1_000_000)),), nodes)
    return problem_of(graph, phone_edge(8e8))


def test_get_policy_names_the_valid_policies_and_options() -> None:
    with pytest.raises(UserInputError, match="unknown policy 'nope'; policies: static, reap, partial, resolve"):
        get_policy("nope")
    with pytest.raises(UserInputError, match="no option colour; its options: window, moved, hysteresis"):
        get_policy("partial", colour="red")
    with pytest.raises(UserInputError, match="unknown solver"):
        get_policy("resolve", solver="magic")
    with pytest.raises(UserInputError, match="hysteresis must be a fraction"):
        get_policy("partial", hysteresis=3)
    policy = get_policy("partial", hysteresis="0.05", window="10")  # strings, as a command line gives them
    assert (policy.hysteresis, policy.window) == (0.05, 10)  # type: ignore[attr-defined]
    assert get_policy("reap", weights="0.5,0.5,0").weights == (0.5, 0.5, 0.0)  # type: ignore[attr-defined]
    with pytest.raises(UserInputError, match="option window of policy 'partial' should be int, got 'ten'"):
        get_policy("partial", window="ten")
    assert {name: get_policy(name).name for name in POLICIES} == {name: name for name in POLICIES}


def test_static_never_switches() -> None:
    problem = hpa_problem()
    loop = Replay(get_policy("static"), problem, hpa(problem))
    collapsed = with_link(problem, "phone", "edge", bandwidth_bits_per_s=8e5)
    decisions = [loop.step(problem if k < 20 else collapsed) for k in range(60)]
    assert all(d.plan is None and not d.probe_links for d in decisions)


def phone_nodes(plan: Plan) -> int:
    return sum(device == "phone" for device in plan.placement.values())


def test_partial_moves_the_cut_to_the_device_when_the_uplink_collapses_and_back() -> None:
    problem = hpa_problem()
    static = hpa(problem)
    assert str(static) == "a..d@edge"
    loop = Replay(get_policy("partial"), problem, static)
    assert all(loop.step().plan is None for _ in range(30))  # nothing changed: nothing to do
    collapsed = with_link(problem, "phone", "edge", bandwidth_bits_per_s=8e5)
    moved = next((k, d) for k in range(30) if (d := loop.step(collapsed)).plan is not None)
    assert moved[0] == 0  # the first slow hop moved the estimate by far more than 20%: a look at once
    assert phone_nodes(loop.current) >= 3 and "estimates moved" in moved[1].reason
    for _ in range(60):  # the uplink carries 10 kB a request now: too little to see it recover ...
        loop.step(collapsed)
    assert phone_nodes(loop.current) >= 3
    # ... so each look probes it, and when it recovers the plan goes back to the edge
    back = next((k for k in range(400) if loop.step(problem).plan is not None), None)
    assert back is not None and str(loop.current) == "a..d@edge"


def two_node_problem(a_on_edge_s: float) -> tuple[Problem, Plan]:
    """a then b; a@phone | b@edge takes 1 + 1 s, all on the edge a_on_edge_s + 1 s (links free)."""
    graph = chain_graph([1.0, 1.0], [1, 1], input_bytes=1)
    cluster = Cluster("c", (Device("phone", "end", 1e9, origin=True), Device("edge", "edge", 1e9)),
                      (Link("phone", "edge", 8e15), Link("edge", "phone", 8e15)))
    times = {"phone": {"n0": 1.0, "n1": 10.0}, "edge": {"n0": a_on_edge_s, "n1": 1.0}}
    problem = Problem(graph, cluster, times)
    return problem, parse_plan("n0@phone | n1@edge", graph, cluster.device_names)


def look_now(policy: Policy, problem: Problem, current: Plan, *, latency_s: float = 2.0) -> Decision:
    """One decision at a window end (the state says 19 requests since the last look)."""
    view = View(100.0, problem, problem, Estimates(), current, current, RequestRecord(0, 0, 90.0, latency_s), 20)
    state = policy.initial_state(view)
    assert isinstance(state, ReplanState)
    return policy.decide(view, dataclasses.replace(state, since_look=19, looked_with=Estimates()))


@pytest.mark.parametrize("name", ["partial", "resolve"])
def test_hysteresis_holds_on_a_one_percent_gain(name: str) -> None:
    problem, current = two_node_problem(0.98)  # all on the edge: 1.98 s against 2 s, 1% better
    decision = look_now(get_policy(name), problem, current)
    assert decision.plan is None and decision.reason.endswith("2 -> 1.98 (-1.0%): keep")
    problem, current = two_node_problem(0.90)  # 5% better: switch
    assert str(look_now(get_policy(name), problem, current).plan) == "n0..n1@edge"


@pytest.mark.parametrize("name", ["partial", "resolve"])
def test_a_deadline_miss_waives_the_hysteresis(name: str) -> None:
    problem, current = two_node_problem(0.98)
    problem = dataclasses.replace(problem, constraints=Constraints(deadline_s=2.5))
    decision = look_now(get_policy(name, window=1000), problem, current, latency_s=3.0)  # measured 3 s > 2.5 s
    assert str(decision.plan) == "n0..n1@edge" and "deadline missed" in decision.reason


def test_resolve_picks_an_exact_solver_for_the_problem() -> None:
    chain = chain_graph([1e8] * 4, [1000] * 4)
    assert default_solver(problem_of(chain, phone_edge())) == "dads"
    assert default_solver(problem_of(chain, edge_fog_cloud())) == "chain-dp"
    dag = Graph("dag", chain.inputs, (*chain.nodes, Node("join", ("n1", "n3"), 1e8, 1000)))
    assert default_solver(problem_of(dag, edge_fog_cloud())) == "ilp"


def test_resolve_follows_a_slower_device() -> None:
    # 10 x 0.1 GFLOP: best spread over fog and cloud; with the cloud 1000x slower it leaves the cloud.
    problem = problem_of(chain_graph([1e8] * 10, [10_000] * 10), edge_fog_cloud())
    loop = Replay(get_policy("resolve"), problem, all_on(problem.graph, "edge"))
    decisions = [loop.step() for _ in range(20)]
    assert decisions[-1].plan is not None and "cloud" in loop.current.devices_used
    slow_cloud = slower(problem, "cloud", 1000.0)
    for _ in range(40):
        loop.step(slow_cloud)
    assert "cloud" not in loop.current.devices_used


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_decisions_are_deterministic(name: str) -> None:
    problem = problem_of(chain_graph([1e8] * 10, [10_000] * 10), edge_fog_cloud(), deadline_s=0.6)
    static = all_on(problem.graph, "edge")

    def run() -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
        loop = Replay(get_policy(name, **({"baseline_runs": 5, "probe_runs": 3, "window_runs": 10}
                                         if name == "reap" else {})), problem, static)
        truths = [problem, with_link(problem, "edge", "fog", bandwidth_bits_per_s=1e5), slower(problem, "fog", 5.0)]
        out = []
        for k in range(90):
            d = loop.step(truths[k // 30])
            out.append((str(d.plan), d.reason, d.probe_links))
        return out

    first = run()
    assert first == run()
    if name != "static":
        assert any(plan != "None" for plan, _, _ in first)


def test_apply_and_views_do_not_change_the_base_problem() -> None:
    problem = hpa_problem()
    estimates = Estimates({("phone", "edge"): LinkEstimate(1.0, 1.0)}, {"edge": 3.0})
    applied = apply(problem, estimates)
    assert problem.cluster.link("phone", "edge").bandwidth_bits_per_s == 8e8  # type: ignore[union-attr]
    assert applied.cluster.link("phone", "edge").bandwidth_bits_per_s == 1.0  # type: ignore[union-attr]

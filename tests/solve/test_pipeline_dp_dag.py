"""pipeline-dp over a DAG's ideals: exact against brute force over every pipeline of contiguous parts.

The oracle enumerates chains of ideals {} < I_1 < ... < I_s = all nodes with a distinct device per
stage, and prices each plan with cost.evaluate. With free links (Tarnawski et al.'s setting) the DP
must equal it on any DAG, with memory limits and with interchangeable devices counted per class.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.errors import InfeasibleError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.cut_lattice import count_ideals, ideal_lattice, prefix_lattice
from coinfer.solve.pipeline_dp import pipeline_dp, pipeline_dp_order
from tests.solve.random_problems import problems

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def wide_dags(draw: st.DrawFn, max_nodes: int = 6) -> Graph:
    """DAGs with branches (each node reads 0-2 earlier nodes, or the input): many ideals."""
    n = draw(st.integers(1, max_nodes))
    nodes = []
    for i in range(n):
        preds = draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else []
        nodes.append(Node(f"n{i}", tuple(f"n{p}" for p in preds) or ("input",), flops=draw(st.floats(1e8, 1e10)),
                          output_bytes=draw(st.integers(1, 10**6)), param_bytes=draw(st.integers(0, 10**6))))
    return Graph("dag", (GraphInput("input", TensorSpec(1000)),), tuple(nodes))


@st.composite
def free_link_problems(draw: st.DrawFn) -> Problem:
    graph = draw(wide_dags())
    speeds = draw(st.lists(st.sampled_from([1e9, 2e9, 5e9]), min_size=2, max_size=4))
    memory = draw(st.sampled_from([math.inf, 1.5e6, 3e6]))
    devices = tuple(Device(f"d{i}", "end" if i == 0 else "edge", flops_per_s=s, origin=i == 0,
                           memory_bytes=memory if i else math.inf) for i, s in enumerate(speeds))
    links = tuple(Link(a.name, b.name, 1e15) for a in devices for b in devices if a is not b)
    return make_problem(graph, Cluster("free", devices, links), objective="throughput")


def ideals_of(graph: Graph) -> list[frozenset[str]]:
    ids = [n.id for n in graph.nodes]
    out = []
    for r in range(len(ids) + 1):
        for subset in itertools.combinations(ids, r):
            chosen = set(subset)
            if all(p in chosen for v in chosen for p in graph.node(v).inputs if p in graph.index):
                out.append(frozenset(chosen))
    return out


def contiguous_pipelines(problem: Problem) -> list[Plan]:
    """Every plan whose stages are differences of a chain of ideals, on distinct devices."""
    graph, devices = problem.graph, problem.cluster.device_names
    ideals = ideals_of(graph)
    everything = frozenset(n.id for n in graph.nodes)
    plans: list[Plan] = []

    def extend(cut: frozenset[str], stages: list[frozenset[str]]) -> None:
        if cut == everything:
            for order in itertools.permutations(devices, len(stages)):
                plans.append(Plan(graph, {v: d for stage, d in zip(stages, order, strict=True) for v in stage}))
            return
        if len(stages) == len(devices):
            return
        for nxt in ideals:
            if cut < nxt:
                extend(nxt, [*stages, nxt - cut])

    extend(frozenset(), [])
    return plans


def best_pipeline_s(problem: Problem) -> float:
    feasible = [b.bottleneck_s for b in (evaluate(p, problem) for p in contiguous_pipelines(problem)) if b.feasible]
    return min(feasible, default=math.inf)


@SETTINGS
@given(problem=free_link_problems())
def test_equals_brute_force_over_every_pipeline_of_contiguous_parts(problem: Problem) -> None:
    best = best_pipeline_s(problem)
    try:
        plan = pipeline_dp(problem)
    except InfeasibleError:
        assert best == math.inf
        return
    got = evaluate(plan, problem)
    assert got.feasible, got.violations
    assert plan.reported_objective == pytest.approx(got.objective_value, rel=1e-9)
    assert got.bottleneck_s == pytest.approx(best, rel=1e-9)
    # the order's prefixes are some of the ideals: never better
    try:
        ordered = evaluate(pipeline_dp_order(problem), problem).bottleneck_s
    except InfeasibleError:
        return
    assert ordered >= got.bottleneck_s * (1 - 1e-9)


def test_a_dag_where_cutting_across_the_order_pays() -> None:
    # input -> a -> {b, c} -> d on two equal devices of 1 GFLOP/s, free links; a 1 s, b 1 s, c 3 s, d 3 s.
    # The order a, b, c, d has the prefixes {a} | {b,c,d} (1 | 7 s), {a,b} | {c,d} (2 | 6), {a,b,c} | {d}
    # (5 | 3): at best 5 s. The DAG also has the ideal {a, c}: {a,c} | {b,d} is 4 | 4 s.
    def node(name: str, inputs: tuple[str, ...], gflop: float) -> Node:
        return Node(name, inputs, flops=gflop * 1e9, output_bytes=1)

    graph = Graph("diamond", (GraphInput("input", TensorSpec(1)),),
                  (node("a", ("input",), 1), node("b", ("a",), 1), node("c", ("a",), 3), node("d", ("b", "c"), 3)))
    devices = (Device("x", "end", 1e9, origin=True), Device("y", "edge", 1e9))
    cluster = Cluster("two", devices, (Link("x", "y", 1e15), Link("y", "x", 1e15)))
    problem = make_problem(graph, cluster, objective="throughput")
    assert evaluate(pipeline_dp_order(problem), problem).bottleneck_s == pytest.approx(5.0)
    plan = pipeline_dp(problem)
    assert evaluate(plan, problem).bottleneck_s == pytest.approx(4.0)
    assert plan.placement["a"] == plan.placement["c"] != plan.placement["b"] == plan.placement["d"]


@settings(max_examples=30, deadline=None)
@given(problem=problems(chain=True, max_nodes=6, objective="throughput"))
def test_on_a_chain_the_ideals_are_the_prefixes(problem: Problem) -> None:
    assert count_ideals(problem.graph, 100) == len(problem.graph.nodes) + 1
    dag, order = pipeline_dp(problem), pipeline_dp_order(problem)
    assert evaluate(dag, problem).bottleneck_s == pytest.approx(evaluate(order, problem).bottleneck_s, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(graph=wide_dags(max_nodes=8))
def test_the_ideals_are_exactly_the_predecessor_closed_sets(graph: Graph) -> None:
    lattice = ideal_lattice(graph, 1000)
    assert lattice is not None
    got = {frozenset(graph.nodes[v].id for v in range(len(graph.nodes)) if row[v]) for row in lattice.masks}
    assert got == set(ideals_of(graph)) and lattice.size == len(got)
    sizes = lattice.masks.sum(axis=1)
    assert list(sizes) == sorted(sizes)  # a subset always comes first
    for a, b in itertools.product(range(lattice.size), repeat=2):
        assert lattice.below[a, b] == (set(lattice.masks[a].nonzero()[0]) < set(lattice.masks[b].nonzero()[0]))
    prefixes = prefix_lattice(graph)
    assert prefixes.size == len(graph.nodes) + 1
    assert (prefixes.masks.sum(axis=1) == range(prefixes.size)).all()


def test_too_many_ideals_falls_back_to_the_order_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # 14 independent nodes: 2^14 = 16,384 ideals, over the bound
    graph = Graph("wide", (GraphInput("input", TensorSpec(1)),),
                  tuple(Node(f"n{i}", ("input",), flops=1e9, output_bytes=1) for i in range(14)))
    assert count_ideals(graph, 3000) is None
    devices = (Device("x", "end", 1e9, origin=True), Device("y", "edge", 1e9))
    problem = make_problem(graph, Cluster("two", devices, (Link("x", "y", 1e15), Link("y", "x", 1e15))),
                           objective="throughput")
    with caplog.at_level("WARNING"):
        plan = pipeline_dp(problem)
    assert "more than 3000 ideals" in caplog.text and "pipeline-dp-order" in caplog.text
    assert evaluate(plan, problem).bottleneck_s == pytest.approx(7.0)  # 7 nodes a device


def test_a_stage_is_held_to_its_own_working_set_not_its_cut_s() -> None:
    # r (0.1 s, 2 MB of weights) feeds h (2 s, a 4 MB output: a 4 MB working set) and c -> d (1 s each,
    # 1-byte values). y holds 1 MB, so r and h stay on x. The best pipeline is {r, h} on x, then {c, d}
    # on y (2.1 | 2 s). The cut {r, h, c, d} holds h's 4 MB, but the stage {c, d} does not, so it fits
    # y: the exact check behind the cheap bound must find it.
    graph = Graph("branches", (GraphInput("input", TensorSpec(1)),), (
        Node("r", ("input",), flops=1e8, output_bytes=1, param_bytes=2_000_000),
        Node("h", ("r",), flops=2e9, output_bytes=4_000_000),
        Node("c", ("r",), flops=1e9, output_bytes=1),
        Node("d", ("c",), flops=1e9, output_bytes=1)))
    devices = (Device("x", "end", 1e9, origin=True), Device("y", "edge", 1e9, memory_bytes=1e6))
    problem = make_problem(graph, Cluster("two", devices, (Link("x", "y", 1e15), Link("y", "x", 1e15))),
                           objective="throughput")
    plan = pipeline_dp(problem)
    assert dict(plan.placement) == {"r": "x", "h": "x", "c": "y", "d": "y"}
    assert evaluate(plan, problem).bottleneck_s == pytest.approx(2.1)

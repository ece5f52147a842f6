"""pipeline-dp over a DAG's ideals: exact against brute force over every pipeline of contiguous parts.

The oracle enumerates chains of ideals {} < I_1 < ... < I_s = all nodes with a distinct device per
stage, and prices each plan with cost.evaluate. With free links (Tarnawski et al.'s setting) the DP
must equal it on any DAG, with memory limits and with interchangeable devices counted per class.
"""

from __future__ import annotations

import importlib
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.errors import InfeasibleError, UserInputError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.cut_lattice import count_ideals, glued_units, ideal_lattice, prefix_lattice
from coinfer.solve.pipeline_dp import MAX_IDEALS, glueable_nodes, pipeline_dp, pipeline_dp_order, pipeline_dp_over
from tests.solve.random_problems import problems

# the module, which `coinfer.solve` shadows with its function of the same name
pipeline_dp_module = importlib.import_module("coinfer.solve.pipeline_dp")

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
    pairs = lattice.stage_pairs(np.ones(len(graph.nodes)), math.inf, 10**6)
    assert pairs is not None
    listed = list(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True))
    assert listed == sorted(listed, key=lambda ab: (ab[1], ab[0]))
    subsets = {(a, b) for a, b in itertools.product(range(lattice.size), repeat=2)
               if set(lattice.masks[a].nonzero()[0]) < set(lattice.masks[b].nonzero()[0])}
    assert set(listed) == subsets and len(listed) == len(subsets)
    prefixes = prefix_lattice(graph)
    assert prefixes.size == len(graph.nodes) + 1
    assert (prefixes.masks.sum(axis=1) == range(prefixes.size)).all()
    assert prefixes.stage_pairs(np.ones(len(graph.nodes)), math.inf, 10**6) is not None


def test_too_many_ideals_falls_back_to_the_order_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # 17 independent nodes: 2^17 = 131,072 ideals, over the bound; none is free, so none is glued
    graph = Graph("wide", (GraphInput("input", TensorSpec(1)),),
                  tuple(Node(f"n{i}", ("input",), flops=1e9, output_bytes=1) for i in range(17)))
    assert count_ideals(graph, MAX_IDEALS) is None
    devices = (Device("x", "end", 1e9, origin=True), Device("y", "edge", 1e9))
    problem = make_problem(graph, Cluster("two", devices, (Link("x", "y", 1e15), Link("y", "x", 1e15))),
                           objective="throughput")
    with caplog.at_level("WARNING"):
        plan = pipeline_dp(problem)
    assert f"more than {MAX_IDEALS:,} ideals" in caplog.text and "pipeline-dp-order" in caplog.text
    assert evaluate(plan, problem).bottleneck_s == pytest.approx(9.0)  # 9 nodes on one device, 8 on the other


def test_too_many_stage_pairs_falls_back_to_the_order_and_says_so(caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    graph = Graph("wide", (GraphInput("input", TensorSpec(1)),),
                  tuple(Node(f"n{i}", ("input",), flops=1e9, output_bytes=1) for i in range(6)))
    devices = (Device("x", "end", 1e9, origin=True), Device("y", "edge", 1e9))
    problem = make_problem(graph, Cluster("two", devices, (Link("x", "y", 1e15), Link("y", "x", 1e15))),
                           objective="throughput")
    monkeypatch.setattr(pipeline_dp_module, "MAX_STAGE_PAIRS", 40)  # the order's 21 pairs fit, the ideals' do not
    with caplog.at_level("WARNING"):
        plan = pipeline_dp(problem)
    assert "pair into more than 40 stages" in caplog.text and "pipeline-dp-order" in caplog.text
    assert evaluate(plan, problem).bottleneck_s == pytest.approx(3.0)
    monkeypatch.setattr(pipeline_dp_module, "MAX_STAGE_PAIRS", 10)
    with pytest.raises(UserInputError, match="pipeline-dp-order would pair more than 10 stages"):
        pipeline_dp_order(problem)


@st.composite
def problems_with_free_nodes(draw: st.DrawFn) -> Problem:
    """Free-link problems in which some nodes take no time anywhere (1-byte values; weights or none: those
    with weights may be glued only where memory cannot bind)."""
    problem = draw(free_link_problems())
    graph = problem.graph
    free = draw(st.lists(st.booleans(), min_size=len(graph.nodes), max_size=len(graph.nodes)))
    weights = draw(st.booleans())
    nodes = tuple(replace(v, flops=0.0, param_bytes=v.param_bytes if weights else 0, output_bytes=1) if f else v
                  for v, f in zip(graph.nodes, free, strict=True))
    graph = Graph(graph.name, graph.inputs, nodes)
    times = {d: {v.id: 0.0 if f else t[v.id] for v, f in zip(nodes, free, strict=True)}
             for d, t in problem.node_time_s.items()}
    return Problem(graph, problem.cluster, times, problem.objective)


@SETTINGS
@given(problem=problems_with_free_nodes())
def test_gluing_free_nodes_keeps_the_optimum(problem: Problem) -> None:
    best = best_pipeline_s(problem)
    free = glueable_nodes(problem)
    assert all(v.flops == 0 for v, f in zip(problem.graph.nodes, free, strict=True) if f)
    glued = ideal_lattice(problem.graph, 1000, free)
    assert glued is not None
    try:
        plan = pipeline_dp_over(problem, glued)
    except InfeasibleError:
        assert best == math.inf
        return
    assert evaluate(plan, problem).bottleneck_s == pytest.approx(best, rel=1e-9)
    with pytest.MonkeyPatch.context() as patch:
        # a bound between the glued graph's ideals and the graph's own: pipeline-dp searches the glued ones
        patch.setattr(pipeline_dp_module, "MAX_IDEALS", max(glued.size, 2))
        assert evaluate(pipeline_dp(problem), problem).bottleneck_s == pytest.approx(best, rel=1e-9)


def test_a_free_node_with_weights_is_not_glued_where_memory_binds() -> None:
    # a (2 GFLOP, 0.9 MB of weights) -> b (1 GFLOP), and f (no time, 0.5 MB) reads a. y (2 GFLOP/s) holds 1 MB.
    # Best: {a} on y (1 s), then {b, f} on x (1 s). Glued to a, f would keep a off y: 2 s at best.
    graph = Graph("leaf", (GraphInput("input", TensorSpec(1)),), (
        Node("a", ("input",), flops=2e9, output_bytes=1, param_bytes=900_000),
        Node("f", ("a",), flops=0.0, output_bytes=1, param_bytes=500_000),
        Node("b", ("a",), flops=1e9, output_bytes=1)))
    devices = (Device("x", "end", 1e9, origin=True), Device("y", "edge", 2e9, memory_bytes=1e6))
    problem = make_problem(graph, Cluster("two", devices, (Link("x", "y", 1e15), Link("y", "x", 1e15))),
                           objective="throughput")
    assert problem.node_time_s["x"]["f"] == problem.node_time_s["y"]["f"] == 0.0
    assert glueable_nodes(problem) == [False, False, False]
    lattice = ideal_lattice(graph, 100, glueable_nodes(problem))
    assert lattice is not None and lattice.size == 5
    assert evaluate(pipeline_dp_over(problem, lattice), problem).bottleneck_s == pytest.approx(1.0)
    roomy_devices = (devices[0], replace(devices[1], memory_bytes=2e6))
    roomy = make_problem(graph, Cluster("two", roomy_devices, problem.cluster.links), objective="throughput")
    assert glueable_nodes(roomy) == [False, True, False]  # memory cannot bind: its weights do not matter


def test_glued_units_merge_free_leaves_into_their_one_neighbour() -> None:
    # a -> b -> c, with free f1 reading a (a leaf), free f2 -> f3 -> b (a free chain into b), free g reading a and c
    def node(name: str, inputs: tuple[str, ...]) -> Node:
        return Node(name, inputs, flops=1.0, output_bytes=1)

    graph = Graph("leaves", (GraphInput("input", TensorSpec(1)),), (
        node("a", ("input",)), node("f1", ("a",)), node("f2", ("input",)), node("f3", ("f2",)),
        node("b", ("a", "f3")), node("c", ("b",)), node("g", ("a", "c"))))
    free = [v.id in {"f1", "f2", "f3", "g"} for v in graph.nodes]
    units = glued_units(graph, free)
    unit = dict(zip((v.id for v in graph.nodes), units, strict=True))
    assert unit["f1"] == unit["a"] and unit["f2"] == unit["f3"] == unit["b"]
    assert unit["g"] not in {unit["a"], unit["c"]}  # it touches two parts
    assert len(set(units)) == 4
    assert count_ideals(graph, 1000, free) == 5  # a chain of 4 units: {a,f1} -> {b,f2,f3} -> c -> g


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

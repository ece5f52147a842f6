"""Parallel groups (a tensor-parallel layer's shards): priced by their slowest device when spread,
sequentially on one device; the ILP states the same span and equals brute force on grouped graphs."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.cost.terms import transfer_time_s
from coinfer.errors import GraphFileError
from coinfer.files.graph_file import graph_from_dict, graph_to_dict
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.ilp import ilp
from tests.solve.random_problems import clusters

MB = 1_000_000


def layer(shards: int = 2, *, join_reads_fork: bool = False) -> Graph:
    """input -> fork -> shards (one group) -> join -> tail."""
    nodes = [Node("fork", ("input",), 2e8, 3 * MB)]
    nodes += [Node(f"s{j}", ("fork",), 4e9, MB, parallel_group="g") for j in range(shards)]
    nodes.append(Node("join", (*(f"s{j}" for j in range(shards)), *(("fork",) if join_reads_fork else ())), 1e8, MB))
    nodes.append(Node("tail", ("join",), 1e8, 1000))
    return Graph("layer", (GraphInput("input", TensorSpec(1000)),), tuple(nodes))


def two_devices() -> Cluster:
    devices = (Device("a", "end", flops_per_s=1e10, origin=True), Device("b", "edge", flops_per_s=1e10))
    return Cluster("ab", devices, (Link("a", "b", 8e8, latency_s=0.002), Link("b", "a", 8e8, latency_s=0.002)))


def test_spread_group_takes_its_slowest_device() -> None:
    problem = make_problem(layer(), two_devices())
    plan = Plan(problem.graph, {"fork": "a", "s0": "a", "s1": "b", "join": "a", "tail": "a"})
    b = evaluate(plan, problem)
    t = {n.id: n.flops / 1e10 for n in problem.graph.nodes}
    link = two_devices().link("a", "b")
    path_b = transfer_time_s(link, 3 * MB) + t["s1"] + transfer_time_s(link, MB)
    span = max(t["s0"], path_b)
    assert b.latency_s == pytest.approx(t["fork"] + span + t["join"] + t["tail"], rel=1e-12)
    sequential = t["fork"] + t["s0"] + path_b + t["join"] + t["tail"]
    assert b.latency_s < sequential
    (g,) = b.parallel_groups
    assert g.credit_s == pytest.approx(sequential - b.latency_s, rel=1e-12)
    assert b.compute_s + b.transfer_s == pytest.approx(b.latency_s, rel=1e-12)
    # busy time is not shared: both devices still compute their shard
    assert b.energy_j == pytest.approx(evaluate(all_on(problem.graph, "a"), problem).energy_j, rel=1e-12)


def test_group_on_one_device_is_sequential() -> None:
    problem = make_problem(layer(3), two_devices())
    plan = Plan(problem.graph, {"fork": "a", "s0": "b", "s1": "b", "s2": "b", "join": "b", "tail": "a"})
    b = evaluate(plan, problem)
    assert b.parallel_groups == ()
    assert b.latency_s == pytest.approx(b.compute_s + b.transfer_s)
    assert b.compute_s == pytest.approx(sum(n.flops for n in problem.graph.nodes) / 1e10, rel=1e-12)


def test_a_value_the_join_reads_too_is_not_a_fork() -> None:
    graph = layer(join_reads_fork=True)
    assert graph.parallel_groups["g"].forks == ()
    assert layer().parallel_groups["g"].forks == ("fork",)


def test_spread_group_starts_stages_of_its_own() -> None:
    graph = layer()
    spread = Plan(graph, {"fork": "a", "s0": "a", "s1": "b", "join": "a", "tail": "a"})
    assert [s.node_ids for s in spread.stages] == [("fork",), ("s0",), ("s1",), ("join", "tail")]
    together = Plan(graph, {"fork": "a", "s0": "a", "s1": "a", "join": "a", "tail": "a"})
    assert len(together.stages) == 1


@pytest.mark.parametrize(("nodes", "message"), [
    ([Node("a", ("input",), 1, 1, parallel_group="g"), Node("j", ("a",), 1, 1)], "has one member"),
    ([Node("a", ("input",), 1, 1, parallel_group="g"), Node("b", ("a",), 1, 1, parallel_group="g"),
      Node("j", ("b",), 1, 1)], "reads member 'a'"),
    ([Node("a", ("input",), 1, 1, parallel_group="g"), Node("b", ("input",), 1, 1, parallel_group="g"),
      Node("j", ("a",), 1, 1), Node("k", ("b", "j"), 1, 1)], "exactly one node"),
    ([Node("a", ("input",), 1, 1, parallel_group="g"), Node("b", ("input",), 1, 1, parallel_group="g")],
     "is a model output"),
])
def test_a_group_that_breaks_the_rule_is_refused_naming_it(nodes: list[Node], message: str) -> None:
    with pytest.raises(GraphFileError, match=message) as err:
        Graph("bad", (GraphInput("input", TensorSpec(4)),), tuple(nodes))
    assert "parallel group 'g'" in str(err.value)


def test_graph_file_keeps_groups() -> None:
    graph = layer()
    again = graph_from_dict(graph_to_dict(graph))
    assert [n.parallel_group for n in again.nodes] == [n.parallel_group for n in graph.nodes]


@st.composite
def grouped_problems(draw: st.DrawFn, objective: str) -> Problem:
    """One or two groups of 2-3 members, random sizes and speeds, over 2-3 devices."""
    nodes: list[Node] = []
    previous = "input"
    for g in range(draw(st.integers(1, 2))):
        fork = f"f{g}"
        nodes.append(Node(fork, (previous,), draw(st.floats(1e6, 1e9)), draw(st.integers(1, 4 * MB))))
        members = [f"g{g}s{j}" for j in range(draw(st.integers(2, 3)))]
        side = draw(st.booleans())  # a member also reads the model input (a value every layer reads)
        identical = draw(st.booleans())  # equal shards, as tensor parallelism makes (symmetry rows)
        shard = (draw(st.floats(1e6, 1e10)), draw(st.integers(1, 4 * MB)), draw(st.integers(0, MB)))
        for m in members:
            reads = (fork, "input") if side and (identical or m.endswith("0")) else (fork,)
            flops, out, params = shard if identical else (
                draw(st.floats(1e6, 1e10)), draw(st.integers(1, 4 * MB)), draw(st.integers(0, MB)))
            nodes.append(Node(m, reads, flops, out, param_bytes=params, parallel_group=f"g{g}"))
        previous = f"j{g}"
        nodes.append(Node(previous, (*members, *((fork,) if draw(st.booleans()) else ())),
                          draw(st.floats(1e6, 1e9)), draw(st.integers(1, 4 * MB))))
    graph = Graph("grouped", (GraphInput("input", TensorSpec(draw(st.integers(1, MB)))),), tuple(nodes))
    return make_problem(graph, draw(clusters()), objective=objective)


@pytest.mark.parametrize("objective", ["latency", "throughput", "latency=1,energy=0.2"])
def test_ilp_equals_brute_force_on_grouped_graphs(objective: str) -> None:
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(problem=grouped_problems(objective))
    def check(problem: Problem) -> None:
        assume(math.isfinite(evaluate(all_on(problem.graph, problem.origin), problem).objective_value))
        plan = ilp(problem)
        b = evaluate(plan, problem)
        assert plan.reported_objective == pytest.approx(b.objective_value, rel=1e-9, abs=1e-15)
        oracle = evaluate(brute_force(problem), problem)
        assert b.objective_value == pytest.approx(oracle.objective_value, rel=1e-7, abs=1e-12)

    check()


def test_ilp_spreads_shards_when_it_pays_and_not_over_a_slow_link() -> None:
    fast = make_problem(layer(), two_devices())
    spread = ilp(fast)
    assert spread.placement["s0"] != spread.placement["s1"]
    slow_links = tuple(replace(lk, bandwidth_bits_per_s=1e7) for lk in two_devices().links)
    slow = make_problem(layer(), replace(two_devices(), links=slow_links))
    together = ilp(slow)
    assert together.placement["s0"] == together.placement["s1"]

"""Solving at block granularity and placing at op granularity (`solve.coarse`), and `resolve`'s use of it."""

from __future__ import annotations

import itertools

import pytest

from coinfer.adapt.policies import get_policy
from coinfer.adapt.synthetic import Replay
from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem
from coinfer.solve import SOLVERS
from coinfer.solve.coarse import block_view
from tests.adapt.helpers import edge_fog_cloud, problem_of, slower


def residual_graph(inner_bytes: int = 40_000, a_flops: float = 3e8) -> Graph:
    """stem, two residual blocks (each a -> b -> add with the block's input), head: a DAG of ops
    whose blocks form a chain."""
    nodes = [Node("stem", ("input",), 2e8, 40_000)]
    previous = "stem"
    for k in (1, 2):
        a, b, add = f"b{k}.a", f"b{k}.b", f"b{k}.add"
        nodes += [Node(a, (previous,), a_flops, inner_bytes, block=f"b{k}"),
                  Node(b, (a,), 3e8, inner_bytes, block=f"b{k}"),
                  Node(add, (b, previous), 1e6, 40_000, block=f"b{k}")]
        previous = add
    nodes.append(Node("head", (previous,), 1e8, 4_000))
    return Graph("residual", (GraphInput("input", TensorSpec(150_000)),), tuple(nodes))


def test_the_block_view_sums_times_and_expands_to_every_op() -> None:
    problem = problem_of(residual_graph(), edge_fog_cloud())
    view = block_view(problem)
    assert view is not None and view.problem.graph.is_chain and not problem.graph.is_chain
    assert [n.id for n in view.problem.graph.nodes] == ["stem", "b1", "b2", "head"]
    for device, times in view.problem.node_time_s.items():
        assert times["b1"] == pytest.approx(sum(problem.node_time_s[device][op] for op in ("b1.a", "b1.b", "b1.add")))
    # every block-granular plan costs the same at both granularities here (each block sends one value)
    for devices in itertools.product(("edge", "fog", "cloud"), repeat=4):
        coarse = Plan(view.problem.graph, dict(zip(("stem", "b1", "b2", "head"), devices, strict=True)))
        fine = view.expand(coarse)
        assert fine.placement["b2.a"] == fine.placement["b2.add"] == devices[2]
        assert evaluate(fine, problem).objective_value == pytest.approx(evaluate(coarse, view.problem).objective_value)


def test_a_graph_without_blocks_has_no_block_view() -> None:
    graph = residual_graph()
    flat = Graph(graph.name, graph.inputs, tuple(Node(n.id, n.inputs, n.flops, n.output_bytes) for n in graph.nodes))
    assert block_view(problem_of(flat, edge_fog_cloud())) is None


def split_blocks_problem() -> Problem:
    """Small values inside the blocks and 8 Mbit/s links: the op optimum runs each block's `b` on
    the cloud and the rest on the fog, splitting both blocks (0.218 against 0.225 whole)."""
    return problem_of(residual_graph(inner_bytes=4_000, a_flops=3e7), edge_fog_cloud(bps=8e6))


def test_resolve_re_solves_a_dag_at_blocks_and_finds_the_block_optimum() -> None:
    problem = split_blocks_problem()
    view = block_view(problem)
    assert view is not None
    best_whole_blocks = evaluate(view.expand(SOLVERS["brute-force"](view.problem)), problem).objective_value
    assert best_whole_blocks > 1.02 * evaluate(SOLVERS["ilp"](problem), problem).objective_value
    loop = Replay(get_policy("resolve"), problem, all_on(problem.graph, "edge"))
    for _ in range(25):
        loop.step()
    assert evaluate(loop.current, problem).objective_value == pytest.approx(best_whole_blocks)
    for ops in view.members.values():  # every block stayed whole
        assert len({loop.current.placement[op] for op in ops}) == 1
    # and it still follows a change: a 1000x slower cloud is left
    for _ in range(40):
        loop.step(slower(problem, "cloud", 1000.0))
    assert "cloud" not in loop.current.devices_used


def test_resolve_at_op_granularity_finds_the_op_optimum() -> None:
    problem = split_blocks_problem()
    loop = Replay(get_policy("resolve", granularity="op"), problem, all_on(problem.graph, "edge"))
    for _ in range(25):
        loop.step()
    assert evaluate(loop.current, problem).objective_value == pytest.approx(
        evaluate(SOLVERS["ilp"](problem), problem).objective_value, rel=1e-7)
    with pytest.raises(UserInputError, match="granularity must be one of auto, op, block, not 'ops'"):
        get_policy("resolve", granularity="ops")

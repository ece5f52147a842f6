"""Routing a plan over a program's ops: who runs what, and who sends which value to whom."""

from __future__ import annotations

from coinfer.files.graph_file import graph_from_dict
from coinfer.plan import parse_plan
from coinfer.runtime.program import ProgramIndex, ProgramOp
from coinfer.runtime.routing import route

# input -> p -> {q, r}; s = q + r. One op per node, named like its node.
GRAPH = graph_from_dict({"version": 1, "name": "diamond", "input_bytes": 8, "nodes": [
    {"id": "p", "inputs": ["input"], "flops": 1, "output_bytes": 8},
    {"id": "q", "inputs": ["p"], "flops": 1, "output_bytes": 8},
    {"id": "r", "inputs": ["p"], "flops": 1, "output_bytes": 8},
    {"id": "s", "inputs": ["q", "r"], "flops": 1, "output_bytes": 8},
]})
PROGRAM = ProgramIndex(
    ops=(ProgramOp("p", "p", ("input",), ("p",)), ProgramOp("q", "q", ("p",), ("q",)),
         ProgramOp("r", "r", ("p",), ("r",)), ProgramOp("s", "s", ("q", "r"), ("s",))),
    specs={}, graph_inputs=("input",), outputs=("s",))


def test_a_value_read_on_two_other_devices_goes_once_to_each() -> None:
    plan = parse_plan("p@a | q@b | r@c | s@b", GRAPH, ("a", "b", "c"))
    routes = route(plan, PROGRAM, origin="a")
    assert routes["a"].sends == {"p": ("b", "c")}
    assert routes["c"].sends == {"r": ("b",)}
    assert routes["b"].sends == {"s": ("a",)}  # the result returns to the origin
    assert routes["a"].results == ("s",) and routes["b"].results == ()
    # b runs q then s: two stages (r on c sits between them in topological order)
    assert [s.ops for s in routes["b"].stages] == [("q",), ("s",)]
    assert routes["b"].stages[1].needs == {"q", "r"} and routes["b"].expects == {"p", "r"}


def test_the_origin_forwards_the_input_when_it_computes_nothing() -> None:
    plan = parse_plan("b", GRAPH, ("a", "b"))
    routes = route(plan, PROGRAM, origin="a")
    assert routes["a"].stages == () and routes["a"].sends == {"input": ("b",)}
    assert routes["a"].expects == {"input", "s"} and routes["a"].results == ("s",)


def test_a_stage_keeps_only_what_leaves_it() -> None:
    plan = parse_plan("p..r@a | s@b", GRAPH, ("a", "b"))
    stage = route(plan, PROGRAM, origin="a")["a"].stages[0]
    assert stage.ops == ("p", "q", "r") and stage.keep == ("q", "r") and stage.needs == {"input"}

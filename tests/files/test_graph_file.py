"""Graph files: the hand-written form, round trips, ordering and mistakes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinfer.errors import GraphFileError
from coinfer.files.graph_file import graph_digest, graph_from_dict, graph_to_dict, load_graph
from coinfer.graph import Graph, GraphInput, Node, TensorSpec, coarsen_to_blocks
from tests.conftest import TOY_CHAIN

ISSUE_EXAMPLE = {"version": 1, "input_bytes": 602112,
                 "nodes": [{"id": "a", "inputs": ["input"], "flops": 1.2e8, "output_bytes": 2.5e6},
                           {"id": "b", "inputs": ["a"], "flops": 1.8e8, "output_bytes": 4000}]}


def test_the_documented_example_loads() -> None:
    g = graph_from_dict(ISSUE_EXAMPLE)
    assert [n.id for n in g.nodes] == ["a", "b"]
    assert g.outputs == ("b",) and g.input_bytes == 602112 and g.is_chain


def test_nodes_in_any_order_are_sorted() -> None:
    doc = copy.deepcopy(ISSUE_EXAMPLE)
    doc["nodes"].reverse()
    assert [n.id for n in graph_from_dict(doc).nodes] == ["a", "b"]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["nodes"][1].update(inputs=["zzz"]), "cannot be ordered"),
    (lambda d: d["nodes"][1].update(id="a"), "used twice"),
    (lambda d: d["nodes"][0].update(flops=-1), "nodes.0.flops"),
    (lambda d: d["nodes"][0].pop("output_bytes"), "nodes.0.output_bytes: Field required"),
    (lambda d: d.pop("input_bytes"), "input_bytes"),
    (lambda d: d.update(version=7), "version 7 is not supported"),
    (lambda d: d["nodes"][0].update(inputs=["b"]), "cannot be ordered"),
])
def test_mistakes_are_named(change, expected) -> None:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(ISSUE_EXAMPLE)
    change(doc)
    with pytest.raises(GraphFileError, match=expected):
        graph_from_dict(doc, "g.json")


def test_not_json(tmp_path: Path) -> None:
    p = tmp_path / "g.json"
    p.write_text("{nodes: ")
    with pytest.raises(GraphFileError, match="not valid JSON at line 1"):
        load_graph(p)


def test_digest_ignores_the_name_but_not_the_numbers() -> None:
    g = graph_from_dict(TOY_CHAIN)
    renamed = graph_from_dict({**TOY_CHAIN, "name": "other"})
    heavier = copy.deepcopy(TOY_CHAIN)
    heavier["nodes"][0]["flops"] = 5e9
    assert graph_digest(g) == graph_digest(renamed) != graph_digest(graph_from_dict(heavier))


@st.composite
def random_dags(draw: st.DrawFn) -> Graph:
    n = draw(st.integers(1, 12))
    nodes = []
    for i in range(n):
        preds = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        inputs = tuple(f"n{p}" for p in preds) or ("input",)
        nodes.append(Node(f"n{i}", inputs, draw(st.floats(0, 1e9)), draw(st.integers(0, 10**7)),
                          draw(st.integers(0, 10**6)), block=draw(st.sampled_from([None, "blk"])) if i else None))
    return Graph("random", (GraphInput("input", TensorSpec(1000)),), tuple(nodes))


@given(random_dags())
def test_json_round_trip(g: Graph) -> None:
    assert graph_from_dict(graph_to_dict(g)) == g


def test_block_coarsening_keeps_totals() -> None:
    # x -> [b1: p -> q] -> y, with q also read by z: the block reads x and outputs q.
    nodes = (
        Node("x", ("input",), 1.0, 10), Node("p", ("x",), 2.0, 20, param_bytes=5, block="b1"),
        Node("q", ("p",), 3.0, 30, param_bytes=7, block="b1"), Node("y", ("q",), 4.0, 40),
        Node("z", ("q", "y"), 5.0, 50),
    )
    g = Graph("g", (GraphInput("input", TensorSpec(8)),), nodes)
    c = coarsen_to_blocks(g)
    assert [n.id for n in c.nodes] == ["x", "b1", "y", "z"]
    block = c.node("b1")
    assert (block.inputs, block.flops, block.param_bytes, block.output_bytes) == (("x",), 5.0, 12, 30)
    assert block.source_nodes == ("p", "q")
    assert c.total_flops == g.total_flops and c.outputs == ("z",)

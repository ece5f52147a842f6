"""Small hand-written graphs and profiles shared by the profile tests."""

from __future__ import annotations

from collections.abc import Mapping

from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.profile.timings import Profile


def chain(name: str, specs: list[tuple[str, float, int, int]], input_bytes: int = 1000) -> Graph:
    """A chain of nodes n0, n1, ... from (op, flops, output_bytes, param_bytes) tuples."""
    nodes, prev = [], "input"
    for k, (op, flops, out, params) in enumerate(specs):
        nodes.append(Node(f"n{k}", (prev,), flops, out, params, op=op))
        prev = f"n{k}"
    return Graph(name, (GraphInput("input", TensorSpec(input_bytes)),), tuple(nodes))


def measured(graph: Graph, times: Mapping[str, float], **settings: object) -> Profile:
    return Profile(graph.name, graph_digest(graph), "local", "measured", dict(times), {}, dict(settings))

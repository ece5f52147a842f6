"""Hypothesis strategies for small random problems: DAGs or chains over clusters of 2-3 devices."""

from __future__ import annotations

from hypothesis import strategies as st

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Problem


@st.composite
def graphs(draw: st.DrawFn, *, max_nodes: int = 6, chain: bool = False) -> Graph:
    n = draw(st.integers(1, max_nodes))
    nodes = []
    for i in range(n):
        if chain:
            preds = [i - 1] if i else []
        else:
            preds = draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else []
        inputs = tuple(f"n{p}" for p in preds) or ("input",)
        nodes.append(Node(f"n{i}", inputs, flops=draw(st.floats(1e6, 1e10)),
                          output_bytes=draw(st.integers(1, 5_000_000)), param_bytes=draw(st.integers(0, 10**6))))
    return Graph("random", (GraphInput("input", TensorSpec(draw(st.integers(1, 2_000_000)))),), tuple(nodes))


@st.composite
def clusters(draw: st.DrawFn, *, devices: int | None = None, full_mesh: bool = True) -> Cluster:
    k = devices if devices is not None else draw(st.integers(2, 3))
    names = [f"d{i}" for i in range(k)]
    devs = tuple(Device(name, "end" if i == 0 else "edge", flops_per_s=draw(st.floats(1e9, 1e12)),
                        power_w=draw(st.floats(0, 10)), origin=i == 0) for i, name in enumerate(names))
    links = []
    for i in range(k):
        for j in range(k):
            if i != j and (full_mesh or abs(i - j) == 1):
                links.append(Link(names[i], names[j], bandwidth_bits_per_s=draw(st.floats(1e5, 1e9)),
                                  latency_s=draw(st.floats(0, 0.05)), power_w=draw(st.floats(0, 3))))
    return Cluster("random", devs, tuple(links))


@st.composite
def problems(draw: st.DrawFn, *, max_nodes: int = 6, chain: bool = False, devices: int | None = None,
             objective: str = "latency", full_mesh: bool = True) -> Problem:
    return make_problem(draw(graphs(max_nodes=max_nodes, chain=chain)),
                        draw(clusters(devices=devices, full_mesh=full_mesh)), objective=objective)

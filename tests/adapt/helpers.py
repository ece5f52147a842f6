"""Tiny graphs and clusters, and truths derived from a problem (slower links and devices)."""

from __future__ import annotations

import dataclasses
from typing import Any

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Problem


def chain_graph(flops: list[float], out_bytes: list[int], input_bytes: int = 100_000) -> Graph:
    nodes = tuple(Node(f"n{k}", (f"n{k - 1}",) if k else ("input",), f, b)
                  for k, (f, b) in enumerate(zip(flops, out_bytes, strict=True)))
    return Graph("chain", (GraphInput("input", TensorSpec(input_bytes)),), nodes)


def edge_fog_cloud(*, return_link: bool = True, bps: float = 8e8, latency_s: float = 0.001) -> Cluster:
    """edge (origin, 1 GFLOP/s, 12 W) <-> fog (10 GFLOP/s, 10 W) <-> cloud (100 GFLOP/s, 50 W), with
    cloud -> edge for the result when `return_link`."""
    devices = (Device("edge", "end", 1e9, power_w=12.0, origin=True), Device("fog", "edge", 1e10, power_w=10.0),
               Device("cloud", "cloud", 1e11, power_w=50.0))
    pairs = [("edge", "fog"), ("fog", "edge"), ("fog", "cloud"), ("cloud", "fog")]
    if return_link:
        pairs.append(("cloud", "edge"))
    return Cluster("efc", devices, tuple(Link(a, b, bps, latency_s=latency_s) for a, b in pairs))


def phone_edge(bps: float = 8e8) -> Cluster:
    """phone (origin, 1 GFLOP/s) <-> edge (100 GFLOP/s), as in tests/solve/test_hpa.py."""
    return Cluster("pe", (Device("phone", "end", 1e9, origin=True), Device("edge", "edge", 1e11)),
                   (Link("phone", "edge", bps), Link("edge", "phone", bps)))


def with_link(problem: Problem, source: str, target: str, **changes: Any) -> Problem:
    links = tuple(dataclasses.replace(lk, **changes) if (lk.source, lk.target) == (source, target) else lk
                  for lk in problem.cluster.links)
    return dataclasses.replace(problem, cluster=dataclasses.replace(problem.cluster, links=links))


def slower(problem: Problem, device: str, factor: float) -> Problem:
    times = dict(problem.node_time_s)
    times[device] = {n: t * factor for n, t in times[device].items()}
    return dataclasses.replace(problem, node_time_s=times)


def problem_of(graph: Graph, cluster: Cluster, **options: Any) -> Problem:
    return make_problem(graph, cluster, **options)

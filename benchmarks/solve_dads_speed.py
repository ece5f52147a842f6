"""Median solve time of `dads` (and `neurosurgeon`) on a random 2,000-node DAG, one origin + one server.

Run: .venv/bin/python benchmarks/solve_dads_speed.py [nodes] [runs]. Each node reads its
predecessor and, with probability 1/2, one earlier node within 50 positions (skip connections, as
in ResNet/DenseNet). Node times are drawn per device (as measured profiles vary per op) and
transfers cost about as much as a node, so the best plan alternates sides many times and the
max-flow has real work to do. Times are printed, never asserted; the first run warms the graph's
cached lookups (`Graph.index`, `Graph.consumers`), which a planner re-solving one model reuses.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from coinfer.cluster import Cluster, Device, Link
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Problem, parse_objective
from coinfer.solve.dads import dads
from coinfer.solve.neurosurgeon import neurosurgeon


def random_dag(n: int, seed: int = 0) -> Graph:
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        inputs = [f"n{i - 1}"] if i else ["input"]
        if i > 1 and rng.random() < 0.5:
            inputs.append(f"n{rng.randrange(max(0, i - 50), i - 1)}")
        nodes.append(Node(f"n{i}", tuple(dict.fromkeys(inputs)), flops=rng.uniform(1e6, 1e9),
                          output_bytes=rng.randrange(1_000, 1_000_000)))
    return Graph("random-dag", (GraphInput("input", TensorSpec(600_000)),), tuple(nodes))


def cluster() -> Cluster:
    devices = (Device("phone", "end", 1e11, power_w=3.0, origin=True), Device("edge", "edge", 4e11, power_w=20.0))
    links = (Link("phone", "edge", 1e9, latency_s=1e-4, power_w=1.2), Link("edge", "phone", 2e9, latency_s=1e-4))
    return Cluster("bench", devices, links)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    graph, rng = random_dag(n), random.Random(1)
    node_time_s = {d: {node.id: rng.uniform(1e-3, 10e-3) for node in graph.nodes} for d in ("phone", "edge")}
    problem = Problem(graph, cluster(), node_time_s, parse_objective("latency=1,energy=0.01"))
    for solver in (dads, neurosurgeon):
        start = time.perf_counter()
        solver(problem)  # warm-up: graph.consumers and graph.index are cached after this
        cold_s = time.perf_counter() - start
        runs_s = []
        for _ in range(runs):
            start = time.perf_counter()
            plan = solver(problem)
            runs_s.append(time.perf_counter() - start)
        print(f"{solver.__name__}: {n} nodes, median {statistics.median(runs_s) * 1e3:.1f} ms over {runs} runs "
              f"(first run {cold_s * 1e3:.1f} ms), objective {plan.reported_objective:.6g}, {len(plan.stages)} stages")


if __name__ == "__main__":
    main()

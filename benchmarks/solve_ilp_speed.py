"""Time of the `ilp` solver on random 500-node DAGs and on captured models over 4 devices.

    .venv/bin/python benchmarks/solve_ilp_speed.py [--nodes 500] [--seeds 3] [--no-capture]

Prints one line per (graph, objective): build + solve seconds, whether HiGHS proved optimality,
the gap, and the objective. Timings are never asserted in tests (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import random
import time

from coinfer.api import make_problem
from coinfer.cluster import Cluster
from coinfer.files.cluster_file import load_cluster
from coinfer.graph import Graph, GraphInput, Node, TensorSpec, coarsen_to_blocks
from coinfer.solve.ilp import solve_ilp

OBJECTIVES = ("latency", "energy", "cost", "throughput", "latency=1,energy=0.1")


def random_dag(nodes: int, seed: int) -> Graph:
    """A DNN-like DAG: mostly a chain with skip edges (ResNet) and short fan-outs (Inception)."""
    rng = random.Random(seed)
    out: list[Node] = []
    for i in range(nodes):
        preds = {i - 1} if i else set()
        if i > 2 and rng.random() < 0.3:
            preds.add(rng.randrange(max(0, i - 8), i - 1))
        inputs = tuple(f"n{p}" for p in sorted(preds)) or ("input",)
        out.append(Node(f"n{i}", inputs, flops=rng.uniform(1e6, 5e8), output_bytes=rng.randint(1_000, 3_000_000),
                        param_bytes=rng.randint(0, 2_000_000)))
    return Graph(f"random-{nodes}-{seed}", (GraphInput("input", TensorSpec(600_000)),), tuple(out))


def bench(graph: Graph, cluster: Cluster) -> None:
    for objective in OBJECTIVES:
        problem = make_problem(graph, cluster, objective=objective)
        start = time.perf_counter()
        sol = solve_ilp(problem, time_limit_s=60.0)
        seconds = time.perf_counter() - start
        print(f"{graph.name:28s} {len(graph.nodes):4d} nodes  {objective:22s} {seconds:7.2f} s  "
              f"optimal={sol.optimal!s:5s} gap={sol.mip_gap:.2g} objective={sol.plan.reported_objective:.6g}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-capture", action="store_true")
    args = parser.parse_args()
    cluster = load_cluster("one-to-multiple")
    print(f"cluster one-to-multiple: {len(cluster.devices)} devices, {len(cluster.links)} directed links")
    for seed in range(args.seeds):
        bench(random_dag(args.nodes, seed), cluster)
    if not args.no_capture:
        from coinfer.capture import capture

        for spec in ("torchvision:resnet50", "torchvision:googlenet"):
            graph = capture(spec, granularity="op")
            bench(graph, cluster)
            bench(coarsen_to_blocks(graph), cluster)


if __name__ == "__main__":
    main()

"""Time of the `ilp` solver on random 500-node DAGs and on captured models over 4 devices.

    .venv/bin/python benchmarks/solve_ilp_speed.py [--nodes 500] [--seeds 3] [--runs 3]
        [--objectives latency,throughput] [--time-limit 60] [--no-capture]

Prints one line per (graph, objective): the median of `--runs` solves (build + solve seconds),
whether HiGHS proved optimality, the gap and the objective; then, per objective, the median and
the largest of those medians over the graphs. The cluster is the `one-to-multiple` preset (phone,
two edge servers, a cloud). Timings are never asserted in tests (shared machines are noisy).
To time the code of another checkout, put its `src` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict

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


def bench(graph: Graph, cluster: Cluster, objectives: list[str], runs: int, time_limit_s: float,
          medians: dict[str, list[float]]) -> None:
    for objective in objectives:
        problem = make_problem(graph, cluster, objective=objective)
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            sol = solve_ilp(problem, time_limit_s=time_limit_s)
            seconds.append(time.perf_counter() - start)
            if seconds[-1] > 2 * time_limit_s / 3:
                break  # at the limit: more runs say nothing new
        medians[objective].append(statistics.median(seconds))
        print(f"{graph.name:34s} {len(graph.nodes):4d} nodes  {objective:22s} {statistics.median(seconds):7.2f} s  "
              f"(runs {' '.join(f'{s:.2f}' for s in seconds)})  optimal={sol.optimal!s:5s} gap={sol.mip_gap:.2g} "
              f"objective={sol.plan.reported_objective:.6g}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--no-capture", action="store_true")
    args = parser.parse_args()
    objectives = args.objectives.split(",")
    cluster = load_cluster("one-to-multiple")
    print(f"cluster one-to-multiple: {len(cluster.devices)} devices, {len(cluster.links)} directed links")
    random_medians: dict[str, list[float]] = defaultdict(list)
    for seed in range(args.seeds):
        bench(random_dag(args.nodes, seed), cluster, objectives, args.runs, args.time_limit, random_medians)
    captured_medians: dict[str, list[float]] = defaultdict(list)
    if not args.no_capture:
        from coinfer.capture import capture

        for spec in ("torchvision:resnet50", "torchvision:googlenet"):
            graph = capture(spec, granularity="op")
            bench(graph, cluster, objectives, args.runs, args.time_limit, captured_medians)
            bench(coarsen_to_blocks(graph), cluster, objectives, args.runs, args.time_limit, captured_medians)
    for name, medians in (("random DAGs", random_medians), ("captured models", captured_medians)):
        for objective, values in medians.items():
            print(f"{name}, {objective}: median {statistics.median(values):.2f} s, largest {max(values):.2f} s "
                  f"over {len(values)} graphs")


if __name__ == "__main__":
    main()

"""Time of `pareto_front` (26 ilp solves) on ~70-node graphs over 4 devices.

    .venv/bin/python benchmarks/solve_pareto_speed.py [--nodes 70] [--seeds 3] [--runs 3] [--no-capture]

Graphs: random DNN-like DAGs (`solve_ilp_speed.random_dag`) and, unless --no-capture, ResNet-18
captured at op granularity (69 nodes); cluster `one-to-multiple`; objective latency=1,energy=0.1.
Prints the median of `--runs` runs per graph and the size of the front. Timings are never
asserted in tests. To time the code of another checkout, put its `src` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import statistics
import time

from solve_ilp_speed import random_dag

from coinfer.api import make_problem
from coinfer.files.cluster_file import load_cluster
from coinfer.graph import Graph
from coinfer.solve.pareto import pareto_front


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=70)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-capture", action="store_true")
    args = parser.parse_args()
    cluster = load_cluster("one-to-multiple")
    graphs: list[Graph] = [random_dag(args.nodes, seed) for seed in range(args.seeds)]
    if not args.no_capture:
        from coinfer.capture import capture

        graphs.append(capture("torchvision:resnet18", granularity="op"))
    medians = []
    for graph in graphs:
        problem = make_problem(graph, cluster, objective="latency=1,energy=0.1")
        seconds = []
        for _ in range(args.runs):
            start = time.perf_counter()
            front = pareto_front(problem)
            seconds.append(time.perf_counter() - start)
        medians.append(statistics.median(seconds))
        print(f"{graph.name:24s} {len(graph.nodes):4d} nodes  {medians[-1]:6.2f} s  "
              f"(runs {' '.join(f'{s:.2f}' for s in seconds)})  front of {len(front)}", flush=True)
    print(f"median {statistics.median(medians):.2f} s, largest {max(medians):.2f} s over {len(medians)} graphs")


if __name__ == "__main__":
    main()

"""Speed of chain-dp, hpa and hpa_adjust, and how far hpa lands from the optimum.

- chain-dp on a 500-layer chain over 4 devices (full mesh);
- hpa and hpa_adjust on resnet-sized random chains and DAGs (150 nodes, phone/edge/cloud);
  hpa_adjust after links scaled by 0.1x-10x and node times by 0.8x-1.2x;
- hpa's gap to the optimum: chain-dp on the chains, brute force on small DAGs (7 nodes).
Medians over a few seeds. Timings are for this machine only; never asserted in tests.

    .venv/bin/python benchmarks/solve_chain_speed.py
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import numpy as np

from coinfer.api import make_problem
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Problem
from coinfer.solve.brute_force import brute_force
from coinfer.solve.chain_dp import chain_dp
from coinfer.solve.hpa import hpa, hpa_adjust

TIERS = ("end", "edge", "cloud", "cloud")


def random_graph(rng: np.random.Generator, n: int, *, chain: bool) -> Graph:
    nodes = []
    for i in range(n):
        inputs = [f"n{i - 1}"] if i else ["input"]
        if not chain and i >= 3 and rng.random() < 0.3:  # a residual-style skip connection
            inputs.append(f"n{i - int(rng.integers(2, 4))}")
        nodes.append(Node(f"n{i}", tuple(inputs), flops=float(rng.uniform(1e7, 5e8)),
                          output_bytes=int(rng.uniform(1e4, 2e6) * (1 - 0.8 * i / n)),
                          param_bytes=int(rng.uniform(0, 2e6))))
    return Graph("random", (GraphInput("input", TensorSpec(600_000)),), tuple(nodes))


def random_cluster(rng: np.random.Generator, k: int) -> Cluster:
    speeds = (5e9, 5e10, 5e11, 8e11)
    devices = tuple(Device(f"d{i}", TIERS[i], float(speeds[i] * rng.uniform(0.5, 2)),  # type: ignore[arg-type]
                           power_w=float(rng.uniform(1, 5)) if i == 0 else 0.0, origin=i == 0) for i in range(k))
    links = tuple(Link(f"d{a}", f"d{b}", float(rng.uniform(1e7, 1e9)), latency_s=float(rng.uniform(0.001, 0.03)),
                       power_w=float(rng.uniform(0.5, 2)) if a == 0 else 0.0)
                  for a in range(k) for b in range(k) if a != b)
    return Cluster("random", devices, links)


def changed(problem: Problem, rng: np.random.Generator) -> Problem:
    links = tuple(dataclasses.replace(lk, bandwidth_bits_per_s=lk.bandwidth_bits_per_s * 10 ** rng.uniform(-1, 1))
                  for lk in problem.cluster.links)
    times = {d: {n: t * float(rng.uniform(0.8, 1.2)) for n, t in ts.items()} for d, ts in problem.node_time_s.items()}
    return dataclasses.replace(problem, cluster=dataclasses.replace(problem.cluster, links=links), node_time_s=times)


def median_ms(fn: Callable[[], object], runs: int = 5) -> float:
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def objective(plan: object, problem: Problem) -> float:
    return evaluate(plan, problem).objective_value  # type: ignore[arg-type]


def main() -> None:
    rng = np.random.default_rng(0)
    big = make_problem(random_graph(rng, 500, chain=True), random_cluster(rng, 4))
    print(f"chain-dp, 500 layers x 4 devices, latency:          {median_ms(lambda: chain_dp(big)):7.2f} ms")
    weighted = dataclasses.replace(big, objective=make_problem(big.graph, big.cluster,
                                                               objective="latency=1,energy=0.1").objective)
    print(f"chain-dp, 500 layers x 4 devices, latency+energy:   {median_ms(lambda: chain_dp(weighted)):7.2f} ms")

    for chain in (True, False):
        kind = "chain" if chain else "DAG  "
        t_hpa, t_adj, t_re, gaps, adj_gaps = [], [], [], [], []
        for seed in range(5):
            r = np.random.default_rng(seed + 1)
            problem = make_problem(random_graph(r, 150, chain=chain), random_cluster(r, 3),
                                   objective="latency=1,energy=0.1")
            plan = hpa(problem)
            later = changed(problem, r)
            t_hpa.append(median_ms(lambda p=problem: hpa(p), 3))  # type: ignore[misc]
            t_adj.append(median_ms(lambda p=later, c=plan: hpa_adjust(p, c), 5))  # type: ignore[misc]
            t_re.append(median_ms(lambda p=later: hpa(p), 3))  # type: ignore[misc]
            if chain:
                best, best_later = objective(chain_dp(problem), problem), objective(chain_dp(later), later)
                gaps.append(objective(plan, problem) / best - 1)
                adj_gaps.append(objective(hpa_adjust(later, plan), later) / best_later - 1)
            else:
                adj_gaps.append(objective(hpa_adjust(later, plan), later) / objective(hpa(later), later) - 1)
        print(f"hpa,        150-node {kind} x 3 devices: {statistics.median(t_hpa):7.2f} ms")
        print(f"hpa_adjust, 150-node {kind} x 3 devices: {statistics.median(t_adj):7.2f} ms "
              f"(a fresh hpa on the changed problem: {statistics.median(t_re):.2f} ms)")
        if chain:
            print(f"  gap to chain-dp: hpa median {statistics.median(gaps):.2%} max {max(gaps):.2%}; "
                  f"hpa_adjust after a change median {statistics.median(adj_gaps):.2%} max {max(adj_gaps):.2%}")
            same_size = [make_problem(random_graph(np.random.default_rng(s), 150, chain=True),
                                      random_cluster(np.random.default_rng(s), 3)) for s in range(3)]
            t_dp = statistics.median(median_ms(lambda p=p: chain_dp(p), 3) for p in same_size)  # type: ignore[misc]
            print(f"  chain-dp on the same size: {t_dp:.2f} ms")
        else:
            print(f"  hpa_adjust vs a fresh hpa after a change: median {statistics.median(adj_gaps):+.2%} "
                  f"max {max(adj_gaps):+.2%}")

    gaps, equal = [], 0
    for seed in range(12):
        r = np.random.default_rng(100 + seed)
        problem = make_problem(random_graph(r, 7, chain=False), random_cluster(r, 3), objective="latency=1,energy=0.1")
        start = time.perf_counter()
        got = objective(hpa(problem), problem)
        t_h = time.perf_counter() - start
        start = time.perf_counter()
        best = objective(brute_force(problem), problem)
        t_b = time.perf_counter() - start
        gaps.append(got / best - 1)
        equal += got <= best * (1 + 1e-9)
    print(f"hpa vs brute force, 7-node DAGs x 3 devices: equal in {equal}/12, median gap "
          f"{statistics.median(gaps):.2%}, max {max(gaps):.2%}; "
          f"hpa {t_h * 1e3:.1f} ms vs brute force {t_b * 1e3:.0f} ms (last instance)")


if __name__ == "__main__":
    main()

"""Standbys chosen with the placement: `ilp` against brute force and the greedy pass, and its time on real graphs.

    .venv/bin/python benchmarks/solve_replicas.py [--random 40] [--runs 3] [--no-capture]

Part 1, small random problems (2-3 nodes, 3 devices failing with probability 0, 1%, 5% or 30%,
memory that fits all, a few or one node; a floor of 0.9875 or 0.9994, or an unreliability weight):
how often `ilp` equals brute force (joint over placement and ordered standbys), and the greedy
path (`dads` then coinfer.solve.replicas) against the optimum: how often it meets a floor brute
force meets, and its median and worst excess objective.

Part 2, captured graphs on the `one-to-multiple` preset with edge1, edge2 and cloud failing with
2%, 3% and 1%, the phone's node times x30 (so that offloading pays) and its memory 64 MB (so that
it cannot stand by for everything, and standbys must come from servers that fail): the median of `--runs`
`ilp` solves (seconds), optimality, the plan and its reliability, for a floor and for weights.
Timings are never asserted in tests (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import statistics
import time

from coinfer.api import make_problem, plan
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.errors import InfeasibleError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Constraints, Problem, parse_objective
from coinfer.solve.brute_force import brute_force
from coinfer.solve.ilp import solve_ilp

GOALS = [("latency", 0.9875), ("latency", 0.9994), ("latency=1,unreliability=0.5", None),
         ("latency=1,unreliability=20", None), ("energy=1,unreliability=3", 0.9799)]


def random_problem(rng: random.Random) -> Problem:
    n = rng.randint(2, 3)
    nodes = tuple(Node(f"n{i}", (f"n{i - 1}",) if i and rng.random() < 0.7 else ("input",),
                       flops=rng.uniform(1e7, 1e10), output_bytes=rng.randint(1, 3_000_000),
                       param_bytes=rng.randint(0, 1_000_000)) for i in range(n))
    graph = Graph("random", (GraphInput("input", TensorSpec(rng.randint(1, 2_000_000))),), nodes)
    devices = tuple(Device(f"d{i}", "end" if i == 0 else "edge", flops_per_s=rng.uniform(1e9, 1e12),
                           power_w=rng.uniform(0, 10), origin=i == 0,
                           failure_probability=rng.choice([0.0, 0.01, 0.05, 0.3]),
                           memory_bytes=rng.choice([math.inf, 3e6, 1.2e6])) for i in range(3))
    links = tuple(Link(f"d{i}", f"d{j}", bandwidth_bits_per_s=rng.uniform(1e5, 1e9), latency_s=rng.uniform(0, 0.05))
                  for i in range(3) for j in range(3) if i != j)
    objective, floor = rng.choice(GOALS)
    problem = make_problem(graph, Cluster("random", devices, links), objective=objective)
    return dataclasses.replace(problem, constraints=Constraints(min_reliability=floor))


def part_random(count: int) -> None:
    rng = random.Random(7)
    equal = greedy_met = floors_met = 0
    excess: list[float] = []
    ilp_s: list[float] = []
    for _ in range(count):
        problem = random_problem(rng)
        oracle = evaluate(brute_force(problem), problem)
        start = time.perf_counter()
        try:
            solved = evaluate(solve_ilp(problem).plan, problem)
        except InfeasibleError:
            solved = None
        ilp_s.append(time.perf_counter() - start)
        if solved is None:
            equal += not oracle.feasible
        else:
            equal += solved.feasible == oracle.feasible and (
                not oracle.feasible or math.isclose(solved.objective_value, oracle.objective_value, rel_tol=1e-6))
        if not oracle.feasible:
            continue
        floors_met += problem.constraints.min_reliability is not None
        try:
            greedy = evaluate(plan(problem, solver="dads"), problem)
        except InfeasibleError:
            continue
        greedy_met += problem.constraints.min_reliability is not None and greedy.feasible
        excess.append(greedy.objective_value / oracle.objective_value - 1 if oracle.objective_value else 0.0)
    print(f"random problems: {count}; ilp equals brute force on {equal}; "
          f"ilp median {statistics.median(ilp_s) * 1e3:.1f} ms")
    print(f"greedy (dads + standby pass): meets {greedy_met} of the {floors_met} floors brute force meets; "
          f"objective above the optimum: median {statistics.median(excess):.2%}, worst {max(excess):.2%}")


def part_graphs(runs: int) -> None:
    import coinfer

    cluster = coinfer.load_cluster("one-to-multiple")
    failures = {"phone": 0.0, "edge1": 0.02, "edge2": 0.03, "cloud": 0.01}
    cluster = dataclasses.replace(cluster, devices=tuple(
        dataclasses.replace(d, failure_probability=failures[d.name],
                            memory_bytes=64e6 if d.name == "phone" else d.memory_bytes) for d in cluster.devices))
    for spec, granularity in (("torchvision:resnet18", "block"), ("torchvision:vgg16", "op"),
                              ("torchvision:resnet50", "block")):
        graph = coinfer.capture(spec, granularity=granularity)
        for objective, floor in (("latency", 0.9999), ("latency=1,unreliability=5", None),
                                 ("latency=1,unreliability=0.5", None)):
            problem = make_problem(graph, cluster, objective=objective, min_reliability=floor)
            slow = {k: 30 * v for k, v in problem.node_time_s["phone"].items()}
            problem = dataclasses.replace(problem, node_time_s={**problem.node_time_s, "phone": slow},
                                          objective=parse_objective(objective))
            times, solution = [], None
            for _ in range(runs):
                start = time.perf_counter()
                solution = solve_ilp(problem)
                times.append(time.perf_counter() - start)
            assert solution is not None
            b = evaluate(solution.plan, problem)
            print(f"{spec} ({len(graph.nodes)} nodes) {objective} floor {floor}: {statistics.median(times):.2f} s, "
                  f"optimal {solution.optimal}, R {b.reliability:.6f}, latency {b.latency_s * 1e3:.1f} ms, "
                  f"plan {solution.plan}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-capture", action="store_true")
    args = parser.parse_args()
    logging.getLogger("coinfer.solve.unreliability").setLevel(logging.ERROR)  # dads's warning, once per problem
    if args.random:
        part_random(args.random)
    if not args.no_capture:
        part_graphs(args.runs)


if __name__ == "__main__":
    main()

"""Throughput plans on the published workloads of Tarnawski et al. (NeurIPS 2020), against their DP's optimum.

msr-fiddle/dnn-partitioning ships operator and layer graphs of BERT, GNMT, ResNet-50 and
Inception-v3 with per-node times on a CPU and on an accelerator ("FPGA"), per-node memory
("size"), a memory limit per accelerator and how many there are. This script converts each
`throughput-inputs/*/*inference*.json` to a coinfer problem and prints, per workload: the number
of ideals, `pipeline-dp-order`, `pipeline-dp` (over the DAG's ideals) and `ilp` (their objective,
time and, for ilp, HiGHS's gap), and with `--msr-dp` the published DP's optimum, run here.

The conversion (communication set to zero, as in the published throughput experiments where edges
cost nothing on the accelerators' interconnect for this comparison):
- one coinfer device per accelerator ("acc0".."accK-1", identical: `maxSizePerFPGA` of memory) and
  `maxCPUs` CPUs ("cpu", the origin: no memory limit), every pair joined by a link of no cost;
- a node takes `fpgaLatency` ms on an accelerator and `cpuLatency` ms on the CPU (a node not
  supported on accelerators only runs on the CPU); its `size` is its parameter bytes; values have
  no bytes, so a stage's memory is the sum of its nodes' sizes, as in the published model.
The objective is the bottleneck (max load, ms per sample) of each plan, read with cost.evaluate.

    git clone https://github.com/msr-fiddle/dnn-partitioning /tmp/msr   # their workloads and DP
    g++ -O3 -std=c++17 -o /tmp/msr/dp /tmp/msr/throughput-dp/dp.cpp   # it carries nlohmann/json.hpp
    .venv/bin/python benchmarks/published_throughput.py /tmp/msr [--msr-dp /tmp/msr/dp] [--ilp-time-limit-s 60]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.problem import Problem, parse_objective
from coinfer.solve.cut_lattice import count_ideals
from coinfer.solve.ilp import solve_ilp
from coinfer.solve.pipeline_dp import MAX_IDEALS, glueable_nodes, pipeline_dp, pipeline_dp_order


def convert(doc: dict[str, Any], name: str) -> Problem:
    """A coinfer problem equal to the published one with communication set to zero (module docstring)."""
    nodes = {int(n["id"]): n for n in doc["nodes"]}
    preds: dict[int, list[int]] = {i: [] for i in nodes}
    for e in doc["edges"]:
        preds[int(e["destId"])].append(int(e["sourceId"]))
    order = _topological(nodes, preds)
    graph_nodes = tuple(
        Node(f"n{i}", tuple(f"n{p}" for p in preds[i]) or ("input",), flops=0.0, output_bytes=0,
             param_bytes=int(nodes[i]["size"]), op="published")
        for i in order)
    graph = Graph(name, (GraphInput("input", TensorSpec(0)),), graph_nodes)
    accelerators = [f"acc{k}" for k in range(int(doc["maxFPGAs"]))]
    devices = (Device("cpu", "end", 1e9, origin=True),
               *(Device(a, "edge", 1e9, memory_bytes=float(doc["maxSizePerFPGA"])) for a in accelerators))
    links = tuple(Link(x.name, y.name, math.inf) for x in devices for y in devices if x is not y)
    times: dict[str, dict[str, float]] = {"cpu": {f"n{i}": nodes[i]["cpuLatency"] / 1e3 for i in order}}
    for a in accelerators:
        times[a] = {f"n{i}": nodes[i]["fpgaLatency"] / 1e3 if nodes[i]["supportedOnFpga"] else math.inf
                    for i in order}
    return Problem(graph, Cluster(name, devices, links), times, parse_objective("throughput"),
                   time_sources={d.name: "published (msr-fiddle/dnn-partitioning)" for d in devices})


def _topological(nodes: dict[int, Any], preds: dict[int, list[int]]) -> list[int]:
    done: dict[int, None] = {}
    remaining = sorted(nodes)
    while remaining:
        ready = [i for i in remaining if all(p in done for p in preds[i])]
        if not ready:
            raise SystemExit("the workload's edges make a cycle")
        done.update(dict.fromkeys(ready))
        remaining = [i for i in remaining if i not in done]
    return list(done)


def _ideals_cell(problem: Problem) -> str:
    """The graph's ideals, and its glued form's when it has more than pipeline-dp's bound."""
    plain = count_ideals(problem.graph, MAX_IDEALS)
    if plain is not None:
        return f"{plain:,}"
    free = glueable_nodes(problem)
    glued = count_ideals(problem.graph, MAX_IDEALS, free) if any(free) else None
    return f"over {MAX_IDEALS:,}" + ("" if glued is None else f"; {glued:,} glued")


def run_msr_dp(binary: Path, doc: dict[str, Any], timeout_s: float) -> tuple[float | None, float]:
    """The published DP's optimum (ms per sample, its `maxLoad`) on the workload with every edge's cost
    set to zero, and its wall time; None when it fails (its message goes to stderr)."""
    free = {**doc, "edges": [{**e, "cost": 0.0} for e in doc["edges"]]}
    start = time.perf_counter()
    try:
        out = subprocess.run([str(binary)], input=json.dumps(free), capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"{binary}: no answer in {timeout_s:g} s", file=sys.stderr)
        return None, time.perf_counter() - start
    seconds = time.perf_counter() - start
    try:
        return float(json.loads(out.stdout)["maxLoad"]), seconds
    except (ValueError, KeyError, TypeError):
        print(f"{binary}: {out.stderr.strip().splitlines()[-1:] or out.returncode}", file=sys.stderr)
        return None, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("repository", type=Path, help="a checkout of msr-fiddle/dnn-partitioning")
    parser.add_argument("--msr-dp", type=Path, help="their throughput DP, built from throughput-dp/dp.cpp")
    parser.add_argument("--msr-dp-timeout-s", type=float, default=900.0, help="stop their DP after this long")
    parser.add_argument("--ilp-time-limit-s", type=float, default=60.0)
    parser.add_argument("--only", default="", help="comma-separated workload names to run (default: all inference)")
    args = parser.parse_args()
    workloads = sorted((args.repository / "throughput-inputs").glob("*/*inference*.json"))
    if args.only:
        workloads = [w for w in workloads if w.stem in args.only.split(",")]
    if not workloads:
        print(f"no throughput-inputs/*/*inference*.json under {args.repository}", file=sys.stderr)
        return 2
    print("| workload | nodes | ideals | published DP ms | pipeline-dp-order ms | pipeline-dp ms | ilp ms (gap) "
          "| times: published / order / dag / ilp |")
    print("|---|---|---|---|---|---|---|---|")
    for path in workloads:
        name = f"{path.parent.name}/{path.stem}"
        doc = json.loads(path.read_text())
        problem = convert(doc, path.stem)
        ideals = _ideals_cell(problem)
        published, published_s = (run_msr_dp(args.msr_dp, doc, args.msr_dp_timeout_s) if args.msr_dp
                                   else (None, math.nan))
        cells = []
        for solve in (pipeline_dp_order, pipeline_dp):
            start = time.perf_counter()
            plan = solve(problem)
            cells.append((evaluate(plan, problem).bottleneck_s * 1e3, time.perf_counter() - start))
        start = time.perf_counter()
        found = solve_ilp(problem, time_limit_s=args.ilp_time_limit_s)
        ilp_s = time.perf_counter() - start
        ilp_ms = evaluate(found.plan, problem).bottleneck_s * 1e3
        print(f"| {name} | {len(problem.graph.nodes)} | {ideals} "
              f"| {'-' if published is None else f'{published:.4f}'} | {cells[0][0]:.4f} | {cells[1][0]:.4f} "
              f"| {ilp_ms:.4f} ({found.mip_gap:.2%}) "
              f"| {published_s:.2f} / {cells[0][1]:.2f} / {cells[1][1]:.2f} / {ilp_s:.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

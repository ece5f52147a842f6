"""`coinfer demo`: the tour on an embedded default (resnet18 on the phone-edge-cloud preset).

Captures resnet18, measures every node on this machine, calibrates the roofline with those
measurements, predicts node times on the preset's phone, edge server and cloud GPU, and prints the
costed baseline plans next to a few hand-written splits.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from coinfer.api import make_problem, plan
from coinfer.cli.common import cache_dir, graph_from_args
from coinfer.cli.plan_cmd import baseline_plans
from coinfer.cli.profile_cmd import measure_here, save_local_calibration, summary
from coinfer.cost import evaluate
from coinfer.files.cluster_file import load_cluster
from coinfer.profile.calibration_file import load_calibration
from coinfer.report import comparison_table, plan_report

SPLITS = ("layer1", "layer2", "layer3", "layer4")


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="capture, profile and cost resnet18 on phone -> edge -> cloud",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default="torchvision:resnet18", help="a torchvision ResNet (default resnet18)")
    p.add_argument("--cluster", default="phone-edge-cloud", help="preset or cluster file")
    p.add_argument("--threads", type=int, default=1, help="torch threads while measuring (default 1: "
                   "steadier on a shared machine)")
    p.add_argument("--cache-dir", metavar="DIR", help="cache directory (default ~/.cache/coinfer)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    capture_args = argparse.Namespace(model=args.model, input_shape=None, seq_len=None, seed=0, layers=None,
                                      granularity="op", cache_dir=args.cache_dir, no_cache=False)
    started = time.perf_counter()
    graph = graph_from_args(capture_args)
    print(f"1. captured {graph.name}: {len(graph.nodes)} nodes, {len(graph.blocks)} blocks, "
          f"{graph.total_flops / 1e9:.2f} GFLOP, {graph.total_param_bytes / 1e6:.1f} MB of parameters "
          f"({time.perf_counter() - started:.1f} s)\n")

    profile_args = argparse.Namespace(cache_dir=args.cache_dir, warmup=2, repeats=5, threads=args.threads)
    measured = measure_here(graph, profile_args)
    calibration_path = save_local_calibration(graph, measured, profile_args)
    print("2. measured here, slowest nodes:")
    print(_indent(summary(graph, measured, 5)))
    print(f"   (roofline calibrated on these times: {calibration_path})\n")

    cluster = load_cluster(args.cluster)
    problem = make_problem(graph, cluster, calibration=load_calibration(calibration_path))
    print(f"3. cluster {cluster.name}: node times per device")
    for device, source in problem.time_sources.items():
        total = sum(problem.node_time_s[device].values())
        print(f"   {device:6s} {total * 1e3:8.2f} ms for the whole model   ({source})")
    print()

    rows = baseline_plans(problem)
    for split in SPLITS:
        if any(n.module.startswith(split) for n in graph.nodes):
            candidate = plan(problem, placement=f"{graph.nodes[0].id}..{split}@{cluster.origin.name} | "
                             f"{_after(graph, split)}..{graph.nodes[-1].id}@{cluster.servers[0].name}")
            rows.append((f"split after {split}", candidate, evaluate(candidate, problem)))
    print("4. costed plans (speed-up relative to origin-only):")
    print(_indent(comparison_table(rows)))
    best_name, best_plan, best = min(rows, key=lambda r: r[2].latency_s)
    print(f"\n5. the fastest of these: {best_name}\n")
    print(_indent(plan_report(best_plan, problem, best)))
    print(f"\ncache: {cache_dir(args)}   next: 'coinfer plan --help', 'coinfer presets', 'coinfer devices'")
    return 0


def _after(graph: Any, prefix: str) -> str:
    last = max(i for i, n in enumerate(graph.nodes) if n.module.startswith(prefix) or n.id.startswith(prefix))
    return str(graph.nodes[last + 1].id)


def _indent(text: str) -> str:
    return "\n".join("   " + line if line else line for line in text.splitlines())

"""`coinfer demo`: the whole flow on resnet18 over phone -> edge -> cloud, run for real.

Captures resnet18, measures every node on this machine, plans it over the phone-edge-cloud preset
(4G uplink), then runs the chosen plan and the baselines on local worker processes with the 4G
link emulated, printing predicted against measured latency, the measured speed-ups and the
verification against the unpartitioned model. This machine plays the phone (its measured times
are the phone's); edge and cloud stages compute here too, and are held to their predicted times
where this machine is faster than the device they play.
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
from coinfer.graph import Graph
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.profile.calibration_file import load_calibration
from coinfer.report import plan_report, table


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="capture, profile, plan and run resnet18 on phone -> edge -> cloud",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default="torchvision:resnet18", help="a torchvision ResNet (default resnet18)")
    p.add_argument("--cluster", default="phone-edge-cloud", help="preset or cluster file")
    p.add_argument("--solver", default="ilp", help="the solver whose plan is run (default ilp)")
    p.add_argument("--requests", type=int, default=20, help="requests per plan (default 20)")
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

    profile_args = argparse.Namespace(cache_dir=args.cache_dir, warmup=2, repeats=5, threads=1)
    measured = measure_here(graph, profile_args)
    calibration_path = save_local_calibration(graph, measured, profile_args)
    print("2. measured here, slowest nodes:")
    print(_indent(summary(graph, measured, 5)))
    print(f"   (roofline calibrated on these times: {calibration_path})\n")

    cluster = load_cluster(args.cluster)
    problem = make_problem(graph, cluster, profiles={cluster.origin.name: measured},
                           calibration=load_calibration(calibration_path))
    print(f"3. cluster {cluster.name}: node times per device ({cluster.origin.name} = this machine)")
    for device, source in problem.time_sources.items():
        total = sum(problem.node_time_s[device].values())
        print(f"   {device:6s} {total * 1e3:8.2f} ms for the whole model   ({source})")
    print()

    chosen = plan(problem, solver=args.solver)
    chosen_b = evaluate(chosen, problem)
    print(f"4. the {args.solver} solver's plan:\n")
    print(_indent(plan_report(chosen, problem, chosen_b)))
    baselines = [(name, p) for name, p, _ in baseline_plans(problem)]
    same = [name for name, p in baselines if str(p) == str(chosen)]
    candidates = [(f"{args.solver} plan" + (f" (= {same[0]})" if same else ""), chosen)]
    candidates += [(name, p) for name, p in baselines if str(p) != str(chosen)]
    split = _split(graph, problem, "layer2")
    if split is not None and str(split) != str(chosen):
        candidates.append(("split after layer2", split))
    print(f"\n5. running each plan on local workers, links emulated ({args.requests} requests each; "
          f"at most 5 for plans predicted over 200 ms):\n")
    print(_indent(_run_all(candidates, problem, args)))
    print(f"\ncache: {cache_dir(args)}   next: 'coinfer plan --help', 'coinfer run --help', 'coinfer presets'")
    return 0


def _run_all(candidates: list[tuple[str, Plan]], problem: Problem, args: argparse.Namespace) -> str:
    from coinfer.runtime.local import LocalWorkers
    from coinfer.runtime.reference import example_inputs
    from coinfer.runtime.run import RunOptions, run_plan

    inputs = example_inputs(problem.graph)
    rows: list[list[object]] = []
    measured: dict[str, float] = {}
    devices = problem.cluster.device_names
    with LocalWorkers(devices, cache_dir=cache_dir(args) / "local-workers") as workers, workers.client() as client:
        for version, (name, p) in enumerate(candidates, 1):
            predicted_s = evaluate(p, problem).latency_s
            requests = args.requests if predicted_s < 0.2 else min(args.requests, 5)
            options = RunOptions(requests=requests, emulate=True, verify=True, plan_version=version)
            r = run_plan(p, problem, client, workers.endpoint, options, inputs)
            p50 = r["latency_s"]["p50"]
            measured[name] = p50 if p50 is not None else float("inf")
            verdict = "bit-identical" if r["bit_identical"] else f"max err {r['max_abs_err']:.2g}"
            rows.append([name, str(p) if len(str(p)) <= 44 else str(p)[:41] + "...", predicted_s * 1e3,
                         measured[name] * 1e3, measured[name] / predicted_s, f"{r['ok']}/{r['requests']}", verdict])
    origin = next(v for k, v in measured.items() if "origin-only" in k)
    server = min(v for k, v in measured.items() if "server-only" in k)
    for row in rows:
        row[5:5] = [origin / measured[str(row[0])], server / measured[str(row[0])]]
    return table(["plan", "placement", "predicted ms", "measured ms", "meas/pred", "vs origin-only",
                  "vs best server-only", "ok", "verify"], rows)


def _split(graph: Graph, problem: Problem, prefix: str) -> Plan | None:
    if not any(n.module.startswith(prefix) for n in graph.nodes):
        return None
    return plan(problem, placement=f"{graph.nodes[0].id}..{prefix}@{problem.cluster.origin.name} | "
                f"{_after(graph, prefix)}..{graph.nodes[-1].id}@{problem.cluster.servers[0].name}")


def _after(graph: Any, prefix: str) -> str:
    last = max(i for i, n in enumerate(graph.nodes) if n.module.startswith(prefix) or n.id.startswith(prefix))
    return str(graph.nodes[last + 1].id)


def _indent(text: str) -> str:
    return "\n".join("   " + line if line else line for line in text.splitlines())

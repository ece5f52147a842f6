"""Measured against predicted end-to-end latency on emulated links (the runtime issue's accuracy table).

For each model and each DADS preset (Raspberry Pi 3B + server; uplink CAT1 0.13, 3G 1.1, 4G 5.85,
WiFi 18.88 Mbit/s), run three plans on local worker processes with the links and the Pi emulated:
the `dads` plan, server-only, and a split after the first third of the graph (so that every row
set exercises the links, since the Pi often keeps everything), and print the median measured
latency beside the cost model's prediction. Plans predicted over 1 s get 10 requests; over 10 s
they are skipped (a CAT1 upload of an image takes about 37 s).

What plays what: the server is this machine (its node times are measured here at 1 thread, so the
prediction is what this machine can deliver); the Pi is emulated (each Pi stage is held for the
Pi's predicted time, the catalog's sustained PyTorch speed, which is slower than this machine).
Links: `--shaping inproc` (default) or `kernel` (tc in network namespaces; root only).

    .venv/bin/python benchmarks/runtime_accuracy.py [--models resnet18,mobilenet_v2,vgg16] [--requests 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.cost import evaluate
from coinfer.files.cluster_file import load_cluster
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem
from coinfer.profile.measure import measure_cached
from coinfer.runtime.client import Client
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan
from coinfer.solve import get_solver

MODELS = ("resnet18", "mobilenet_v2", "vgg16")
UPLINKS = ("dads-cat1", "dads-3g", "dads-4g", "dads-wifi")
CACHE = Path.home() / ".cache" / "coinfer"


def _run(name: str, plan: Plan, problem: Problem, client: Client, workers: LocalWorkers, version: int,
         requests: int) -> dict[str, Any] | None:
    predicted = evaluate(plan, problem).latency_s
    if predicted > 10:
        print(f"| skipped | {name} predicted {predicted:.1f} s |", flush=True)
        return None
    options = RunOptions(requests=requests if predicted < 1 else 10, emulate=True, timeout_s=300,
                         plan_version=version)
    report = run_plan(plan, problem, client, workers.endpoint, options, example_inputs(problem.graph))
    p50 = report["latency_s"]["p50"]
    return {"name": name, "plan": str(plan), "predicted_s": predicted, "measured_p50_s": p50,
            "measured_p95_s": report["latency_s"]["p95"], "ratio": p50 / predicted if p50 else None,
            "ok": report["ok"], "requests": report["requests"], "stages": report["stages"]}


def _line(row: dict[str, Any]) -> str:
    short = row["plan"] if len(row["plan"]) < 50 else row["plan"][:47] + "..."
    return (f"{row['name']}: `{short}` | {row['predicted_s'] * 1e3:.1f} | {row['measured_p50_s'] * 1e3:.1f} | "
            f"{row['ratio']:.3f} | {row['measured_p95_s'] * 1e3:.1f} | {row['ok']}/{row['requests']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--uplinks", default=",".join(UPLINKS))
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--solver", default="dads")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    print("| model | uplink | plan | predicted ms | measured p50 ms | measured / predicted | p95 ms | ok |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        graph = capture(f"torchvision:{model}")
        here = measure_cached(graph, CACHE, warmup=2, repeats=5, threads=1)
        for preset in args.uplinks.split(","):
            cluster = load_cluster(preset)
            server = cluster.servers[0].name
            problem = make_problem(graph, cluster, profiles={server: here})
            third = len(graph.nodes) // 3
            plans = {args.solver: get_solver(args.solver)(problem), "server-only": all_on(graph, server),
                     "split at 1/3": Plan(graph, {n.id: problem.origin if i < third else server
                                                  for i, n in enumerate(graph.nodes)})}
            with LocalWorkers(cluster.device_names) as workers, \
                    workers.client() as client:
                for version, (name, plan) in enumerate(plans.items(), 1):
                    row = _run(name, plan, problem, client, workers, version, args.requests)
                    if row is not None:
                        rows.append({"model": model, "uplink": preset, **row})
                        print(f"| {model} | {preset.removeprefix('dads-')} | {_line(row)}", flush=True)
    ratios = [abs(r["ratio"] - 1) for r in rows if r["ratio"]]
    if ratios:
        print(f"\nmedian |measured/predicted - 1| = {statistics.median(ratios):.1%}; worst {max(ratios):.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measured against predicted end-to-end latency on emulated links (the runtime issue's accuracy table).

For each model and each DADS preset (Raspberry Pi 3B + server; uplink CAT1 0.13, 3G 1.1, 4G 5.85,
WiFi 18.88 Mbit/s), plan with `dads`, run the plan on local worker processes with the links
emulated and the Pi emulated, and print the median measured latency of N requests beside the
cost model's prediction.

What plays what: the server is this machine (its node times are measured here at 1 thread, so the
prediction is what this machine can deliver); the Pi is emulated (each Pi stage is held for the
Pi's calibrated-roofline time, which is slower than this machine). Links: `--shaping inproc`
(default) or `kernel` (tc in network namespaces; root only).

    .venv/bin/python benchmarks/runtime_accuracy.py [--models resnet18,mobilenet_v2,vgg16] [--requests 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.files.cluster_file import load_cluster
from coinfer.profile.analytic import calibrate
from coinfer.profile.measure import measure_cached
from coinfer.runtime.client import Client
from coinfer.runtime.executor import example_inputs
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.run import RunOptions, run_plan
from coinfer.solve import get_solver

MODELS = ("resnet18", "mobilenet_v2", "vgg16")
UPLINKS = ("dads-cat1", "dads-3g", "dads-4g", "dads-wifi")
CACHE = Path.home() / ".cache" / "coinfer"


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
        calibration = calibrate(here, graph)
        for preset in args.uplinks.split(","):
            cluster = load_cluster(preset)
            server = cluster.servers[0].name
            problem = make_problem(graph, cluster, profiles={server: here}, calibration=calibration)
            plan = get_solver(args.solver)(problem)
            devices = tuple(dict.fromkeys([problem.origin, *plan.devices_used]))
            with LocalWorkers(devices) as workers, Client({d: workers.endpoint(d) for d in devices}) as client:
                report = run_plan(plan, problem, client, workers.endpoint,
                                  RunOptions(requests=args.requests, emulate=True, timeout_s=300),
                                  example_inputs(graph))
            p50, predicted = report["latency_s"]["p50"], report["predicted"]["latency_s"]
            short = str(plan) if len(str(plan)) < 60 else str(plan)[:57] + "..."
            row = {"model": model, "uplink": preset, "plan": str(plan), "predicted_s": predicted, "measured_p50_s": p50,
                   "measured_p95_s": report["latency_s"]["p95"], "ratio": p50 / predicted if p50 else None,
                   "ok": report["ok"], "requests": report["requests"], "stages": report["stages"]}
            rows.append(row)
            print(f"| {model} | {preset.removeprefix('dads-')} | `{short}` | {predicted * 1e3:.1f} | "
                  f"{p50 * 1e3:.1f} | {p50 / predicted:.3f} | {report['latency_s']['p95'] * 1e3:.1f} | "
                  f"{report['ok']}/{report['requests']} |", flush=True)
    ratios = [abs(r["ratio"] - 1) for r in rows if r["ratio"]]
    if ratios:
        print(f"\nmedian |measured/predicted - 1| = {statistics.median(ratios):.1%}; worst {max(ratios):.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

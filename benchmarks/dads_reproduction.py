"""Reproduce the shape of DADS's results (Hu et al., INFOCOM 2019) with captured models.

For each model and each DADS uplink preset (Raspberry Pi 3 + server; CAT1 0.13, 3G 1.1, 4G 5.85,
WiFi 18.88 Mbit/s), solve with origin-only, server-only, neurosurgeon and dads, and print the
predicted latencies as a markdown table. Node times are the catalog's sustained PyTorch speeds
(coinfer.profile.sustained; nothing is measured), so the table is the same on any machine.

    .venv/bin/python benchmarks/dads_reproduction.py [--models resnet18,...] [--pi-slowdown 4] [--json out.json]

`--pi-slowdown F` multiplies every Pi node time by F (a Pi slower than predicted), to see whether
interior cuts, where DAG structure can matter, come into play.
"""

from __future__ import annotations

import argparse
import json
import sys

from coinfer.adapt.estimates import Estimates, apply
from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.cost import evaluate
from coinfer.files.cluster_file import load_cluster
from coinfer.solve import get_solver

MODELS = ("resnet18", "resnet50", "googlenet", "inception_v3", "mobilenet_v2", "vgg16", "alexnet")
UPLINKS = ("dads-cat1", "dads-3g", "dads-4g", "dads-wifi")
SOLVERS = ("origin-only", "server-only", "neurosurgeon", "dads")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--pi-slowdown", type=float, default=1.0, help="multiply the Pi's node times by this")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    print("| model | uplink | origin-only ms | server-only ms | neurosurgeon ms | dads ms | dads vs neurosurgeon "
          "| dads speed-up vs origin / server | nodes on the Pi | bytes sent up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        graph = capture(f"torchvision:{model}")
        for preset in UPLINKS:
            problem = make_problem(graph, load_cluster(preset))
            if args.pi_slowdown != 1.0:
                problem = apply(problem, Estimates(speed_factor={problem.origin: args.pi_slowdown}))
            result = {name: evaluate(get_solver(name)(problem), problem) for name in SOLVERS}
            ms = {name: b.latency_s * 1e3 for name, b in result.items()}
            dads = result["dads"]
            on_pi = sum(s.node_count for s in dads.stages if s.device == problem.origin)
            sent_up = sum(t.size_bytes for t in dads.transfers if t.source == problem.origin)
            gain = 1 - ms["dads"] / ms["neurosurgeon"]
            row = {"model": model, "uplink": preset, **{f"{k}_ms": v for k, v in ms.items()},
                   "dads_gain_over_neurosurgeon": gain, "nodes_on_origin": on_pi, "bytes_up": sent_up,
                   "nodes": len(graph.nodes)}
            rows.append(row)
            print(f"| {model} | {preset.removeprefix('dads-')} | {ms['origin-only']:.1f} | {ms['server-only']:.1f} | "
                  f"{ms['neurosurgeon']:.1f} | {ms['dads']:.1f} | {gain:.1%} | "
                  f"{ms['origin-only'] / ms['dads']:.2f}x / {ms['server-only'] / ms['dads']:.2f}x | "
                  f"{on_pi}/{len(graph.nodes)} | {sent_up / 1e3:.1f} kB |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

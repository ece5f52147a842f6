"""coinfer's runtime beside torch.distributed.pipelining on the same two-stage cut (loopback, 1 thread each).

For each model, the cut is placed at the beginning of the named module (as benchmarks/pipelining_peer.py
does for torch): coinfer runs it on two worker processes with unshaped links (latency: one request at a
time; throughput: 8 requests in flight, so stage 0 of request n+1 overlaps stage 1 of request n) and
torch runs it on two gloo ranks. Both compare outputs with the unpartitioned model.

    .venv/bin/python benchmarks/runtime_vs_pipelining.py [--requests 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan

sys.path.insert(0, str(Path(__file__).parent))
from _cuts import TWO_DEVICES, two_stage_cut
from pipelining_peer import measure_torch_pipelining

CUTS = (("resnet18", "layer3"), ("mobilenet_v2", "features.7"), ("vgg16", "features.17"))


def coinfer_cut(model: str, split_at: str, requests: int) -> dict[str, float]:
    plan, problem = two_stage_cut(model, split_at)
    graph = problem.graph
    out: dict[str, float] = {}
    with LocalWorkers(TWO_DEVICES) as workers, workers.client() as client:
        for version, in_flight in ((1, 1), (2, 8)):
            report = run_plan(plan, problem, client, workers.endpoint,
                              RunOptions(requests=requests, in_flight=in_flight, shaping="none", verify=version == 1,
                                         plan_version=version, warmup=3), example_inputs(graph))
            if in_flight == 1:
                out.update(p50=report["latency_s"]["p50"], p95=report["latency_s"]["p95"],
                           max_abs_err=report["max_abs_err"])
            else:
                out["throughput_rps"] = report["throughput_rps"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    print("| model @ cut | coinfer p50 ms | torch p50 ms | coinfer req/s (8 in flight) | torch req/s (8 microbatches) "
          "| coinfer max err | torch max err |")
    print("|---|---|---|---|---|---|---|")
    for model, split_at in CUTS:
        ours = coinfer_cut(model, split_at, args.requests)
        theirs = measure_torch_pipelining(model, split_at, requests=args.requests, microbatches=8, repeats=3)
        print(f"| {model} @ {split_at} | {ours['p50'] * 1e3:.1f} | {theirs['latency_s']['p50'] * 1e3:.1f} | "
              f"{ours['throughput_rps']:.1f} | {theirs['throughput_rps']:.1f} | {ours['max_abs_err']:.2g} | "
              f"{theirs['max_abs_err']:.2g} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Micro-batching on real workers: throughput and latency of resnet18 cut over two local workers, K = 1, 2, 4, 8.

The cut is placed at the beginning of layer3 (as in benchmarks/runtime_vs_pipelining.py); two worker
processes at 1 thread each, links unshaped loopback, no device emulation. For each K the same
`--requests` requests are sent twice: one batch at a time (the latency of a batch, which is each of
its requests' latency) and `--in-flight` batches at a time (the two stages pipeline: throughput).
Throughput counts requests, not batches. The first run of each K also verifies the outputs against
the unpartitioned model at batch K.

    .venv/bin/python benchmarks/micro_batching.py [--requests 96] [--in-flight 4] [--batches 1,2,4,8]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from _cuts import TWO_DEVICES, two_stage_cut

from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan


def measure(plan: Plan, problem: Problem, batches: list[int], requests: int, in_flight: int) -> list[dict[str, float]]:
    rows = []
    inputs = example_inputs(problem.graph)
    with LocalWorkers(TWO_DEVICES) as workers, workers.client() as client:
        for k in batches:
            base = RunOptions(requests=requests, shaping="none", warmup=2, micro_batch=k, timeout_s=300)
            one = run_plan(plan, problem, client, workers.endpoint,
                           replace(base, in_flight=1, verify=True, plan_version=2 * k), inputs)
            piped = run_plan(plan, problem, client, workers.endpoint,
                             replace(base, in_flight=in_flight, plan_version=2 * k + 1), inputs)
            for report in (one, piped):
                if report["failed"]:
                    raise SystemExit(f"K={k}: {report['failed']} requests failed: {report['errors'][:1]}")
            rows.append({"k": k, "p50_s": one["latency_s"]["p50"], "rps_one": one["throughput_rps"],
                         "p50_piped_s": piped["latency_s"]["p50"], "rps_piped": piped["throughput_rps"],
                         "max_abs_err": one["max_abs_err"], "bit_identical": one["bit_identical"]})
            print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict[str, float]) -> str:
    return (f"| {r['k']} | {r['p50_s'] * 1e3:.1f} | {r['rps_one']:.1f} | {r['p50_piped_s'] * 1e3:.1f} | "
            f"{r['rps_piped']:.1f} | {'yes' if r['bit_identical'] else 'no'} ({r['max_abs_err']:.2g}) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=96, help="requests per run (a multiple of every K)")
    parser.add_argument("--in-flight", type=int, default=4, help="batches outstanding in the pipelined run")
    parser.add_argument("--batches", default="1,2,4,8", help="the micro-batch sizes K")
    args = parser.parse_args()
    batches = [int(k) for k in args.batches.split(",")]
    plan, problem = two_stage_cut("resnet18", "layer3")
    print(f"| K | p50 ms (1 batch in flight) | req/s (1 batch in flight) | p50 ms ({args.in_flight} batches in flight) "
          f"| req/s ({args.in_flight} batches in flight) | bit-identical at batch K (max abs err) |")
    print("|---|---|---|---|---|---|")
    measure(plan, problem, batches, args.requests, args.in_flight)
    return 0


if __name__ == "__main__":
    sys.exit(main())

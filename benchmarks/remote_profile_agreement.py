"""A profile measured on a worker against one measured here, on the same machine and thread count.

    .venv/bin/python benchmarks/remote_profile_agreement.py [--models resnet18,mobilenet_v2] [--repeats 10]

`coinfer profile --worker` times each aten op of the worker's stage (coinfer.runtime.torch_stages);
`coinfer profile --device local` times each fx node of the exported program through an fx
interpreter (coinfer.profile.measure). Both run one thread here, with the same warm-up and repeats;
the worker is a local process (secure, no emulation). Printed per model: both totals, their ratio,
and the median and 90th percentile of |worker / local - 1| over nodes that take at least 0.1 ms in
the local profile. The machine is shared, so read the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import statistics

from coinfer.capture import capture
from coinfer.profile.measure import measure
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.remote_profile import profile_on_worker

MIN_NODE_S = 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print("| model | nodes | local ms | worker ms | worker / local | node error median | node error p90 |")
    print("|---|---|---|---|---|---|---|")
    with LocalWorkers(["w"], threads=1) as workers, workers.client() as client:
        for name in args.models.split(","):
            graph = capture(f"torchvision:{name}")
            here = measure(graph, warmup=args.warmup, repeats=args.repeats, threads=1)
            there = profile_on_worker(graph, "w", client, workers.endpoint, example_inputs(graph),
                                      warmup=args.warmup, repeats=args.repeats)
            errors = sorted(abs(there.node_time_s[n] / t - 1) for n, t in here.node_time_s.items() if t >= MIN_NODE_S)
            p90 = errors[int(0.9 * (len(errors) - 1))] if errors else float("nan")
            print(f"| {name} | {len(graph.nodes)} | {here.total_time_s * 1e3:.1f} | {there.total_time_s * 1e3:.1f} | "
                  f"{there.total_time_s / here.total_time_s:.2f} | {statistics.median(errors):.0%} | {p90:.0%} |")


if __name__ == "__main__":
    main()

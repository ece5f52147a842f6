"""How well do the predictors predict node times on models they were not fitted on?

Measures several models on this machine (threads fixed), then, leave-one-model-out: fits the
regression (coinfer.profile.regression) and calibrates the roofline (coinfer.profile.analytic) on
all the other models, predicts the held-out one and reports

- node MdAPE: the median over its nodes of |predicted - measured| / measured;
- total error: |sum predicted - sum measured| / sum measured (the whole-model latency).

Then the same two predictors fitted on the profile of one model only (`--one`, default resnet18:
what `coinfer profile --device regression --fit-on resnet18=PROFILE.json` does with a profile
measured on a worker), predicting every other model. The roofline with default (uncalibrated)
efficiencies and this machine's measured rates is the baseline. Usage:

    .venv/bin/python benchmarks/profile_prediction_error.py [--threads 1] [--repeats 5] [--quick] [--one resnet18]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable, Sequence

from coinfer.capture import capture
from coinfer.graph import Graph
from coinfer.profile import analytic, regression
from coinfer.profile.measure import cpu_model, measure, measure_cached
from coinfer.profile.timings import Profile

MODELS: tuple[tuple[str, dict[str, int]], ...] = (
    ("torchvision:resnet18", {}),
    ("torchvision:mobilenet_v2", {}),
    ("torchvision:vgg11", {}),
    ("torchvision:googlenet", {}),
    ("torchvision:densenet121", {}),
    ("torchvision:resnet50", {}),
    ("torchvision:efficientnet_b0", {}),
    ("hf:gpt2", {"layers": 2, "seq_len": 64}),
)
QUICK = ("torchvision:resnet18", "torchvision:mobilenet_v2", "hf:gpt2")

Pairs = Sequence[tuple[Graph, Profile]]
Predictor = Callable[[Pairs, Graph, Profile], Profile]


def errors(predicted: Profile, measured: Profile) -> tuple[float, float]:
    """(median absolute percentage error over nodes, absolute percentage error of the total)."""
    apes = [abs(predicted.node_time_s[k] - t) / t for k, t in measured.node_time_s.items() if t > 0]
    total = abs(predicted.total_time_s - measured.total_time_s) / measured.total_time_s
    return 100 * statistics.median(apes), 100 * total


def regression_predictor(train: Pairs, graph: Graph, measured: Profile) -> Profile:
    return regression.predict(regression.fit(train), graph, "local")


def roofline_predictor(train: Pairs, graph: Graph, measured: Profile) -> Profile:
    cal = analytic.calibrate_on(train)
    return analytic.predict(graph, analytic.local_spec(cal), cal)


def default_roofline_predictor(train: Pairs, graph: Graph, measured: Profile) -> Profile:
    # This machine's measured rates, but the default efficiencies and overhead: no fitting at all.
    rates = analytic.calibrate_on([(graph, measured)])
    bare = analytic.Calibration(rates.peak_flops_per_s, rates.memory_bandwidth_bytes_per_s,
                                analytic.DEFAULT_NODE_OVERHEAD_S["cpu"])
    return analytic.predict(graph, analytic.local_spec(bare), bare)


# name -> (predictor, fitted on the one model of --one rather than on all the others)
PREDICTORS: dict[str, tuple[Predictor, bool]] = {
    "regression (leave-one-out)": (regression_predictor, False),
    "roofline, calibrated (leave-one-out)": (roofline_predictor, False),
    "regression (one model)": (regression_predictor, True),
    "roofline, calibrated (one model)": (roofline_predictor, True),
    "roofline, default efficiencies": (default_roofline_predictor, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # One thread by default: on a shared machine, other processes stall OpenMP barriers and a
    # 2-thread measurement can grow tenfold; a single thread only loses its share of the core.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--cache-dir", default=None, help="reuse measured profiles from this directory")
    parser.add_argument("--one", default="resnet18", help="the model the one-model predictors are fitted on")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start_s = time.perf_counter()
    pairs: list[tuple[Graph, Profile]] = []
    for spec, options in MODELS:
        if args.quick and spec not in QUICK:
            continue
        graph = capture(spec, **options)  # type: ignore[arg-type]  # options are the int kwargs
        kw = {"warmup": args.warmup, "repeats": args.repeats, "threads": args.threads}
        profile = measure_cached(graph, args.cache_dir, **kw) if args.cache_dir else measure(graph, **kw)
        logging.info("%s: %d nodes, %.1f ms measured (load average %s)", graph.name, len(graph.nodes),
                     1e3 * profile.total_time_s, profile.settings.get("load_average_1min"))
        pairs.append((graph, profile))
    print(f"\nmachine: {cpu_model()}, threads {args.threads}, warmup {args.warmup}, repeats {args.repeats}")
    heads = " | ".join(f"{n}: node MdAPE % / total err %" for n in PREDICTORS)
    print(f"| model | nodes | measured ms | {heads} |")
    print("|---|---|---|" + "---|" * len(PREDICTORS))
    summary: dict[str, list[tuple[float, float]]] = {n: [] for n in PREDICTORS}
    one = [(g, p) for g, p in pairs if g.name == args.one]
    if not one:
        raise SystemExit(f"--one {args.one}: not among the measured models {[g.name for g, _ in pairs]}")
    for i, (graph, measured) in enumerate(pairs):
        others = pairs[:i] + pairs[i + 1:]
        cells = []
        for name, (predictor, from_one) in PREDICTORS.items():
            if from_one and graph.name == args.one:
                cells.append("(fitted on it)")
                continue
            node_err, total_err = errors(predictor(one if from_one else others, graph, measured), measured)
            summary[name].append((node_err, total_err))
            cells.append(f"{node_err:.0f} / {total_err:.0f}")
        row = " | ".join(cells)
        print(f"| {graph.name} | {len(graph.nodes)} | {1e3 * measured.total_time_s:.1f} | {row} |")
    cells = [f"{statistics.median(e[0] for e in v):.0f} / {statistics.median(e[1] for e in v):.0f}"
             for v in summary.values()]
    print("| **median over models** | | | " + " | ".join(cells) + " |")
    print(f"\n(total wall time {time.perf_counter() - start_s:.0f} s)")


if __name__ == "__main__":
    main()

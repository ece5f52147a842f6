"""`coinfer profile`: measure every node here, or predict its time on a catalogued device."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coinfer.cli.common import add_model_arguments, cache_dir, graph_from_args, print_json
from coinfer.errors import UserInputError
from coinfer.graph import Graph
from coinfer.profile.timings import Profile
from coinfer.report import table


def register(sub: Any) -> None:
    p = sub.add_parser(
        "profile", help="measure node times here, or predict them on a catalogued device",
        description="--device local measures every node on this machine (warm-up, repeats, median and "
        "interquartile spread, a fixed thread count) and calibrates the roofline with it; "
        "--device analytic:NAME predicts times on a catalogued device (see 'coinfer devices'); "
        "--device regression predicts from per-op-type regressions fitted on the measured models "
        "given with --fit-on.")
    add_model_arguments(p)
    p.add_argument("--device", default="local", metavar="local|analytic:NAME|regression",
                   help="where the times are for (default local)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs; the median is kept (default 10)")
    p.add_argument("--threads", type=int, help="torch threads while measuring (default: torch's default)")
    p.add_argument("--fit-on", metavar="MODEL,MODEL,...", help="with --device regression: the models to "
                   "measure here and fit the regression on (specs or graph files)")
    p.add_argument("--top", type=int, default=10, help="print the N slowest nodes (default 10)")
    p.add_argument("-o", "--output", type=Path, metavar="profile.json", help="write the profile here")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of tables")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    graph = graph_from_args(args)
    notes: list[str] = []
    if args.device == "local":
        profile = measure_here(graph, args)
        notes.append(f"calibrated the roofline on it: {save_local_calibration(graph, profile, args)}")
    elif args.device.startswith("analytic:"):
        profile = predict_on(graph, args.device.removeprefix("analytic:"), args)
    elif args.device == "regression":
        profile = regress(graph, args)
    else:
        raise UserInputError(f"--device {args.device!r}: use local, analytic:NAME (see 'coinfer devices') "
                             f"or regression")
    if args.output:
        from coinfer.profile.profile_file import save_profile

        save_profile(profile, args.output)
        notes.append(f"wrote {args.output}")
    if args.json:
        print_json({"graph": graph.name, "device": profile.device, "method": profile.method,
                    "total_time_s": profile.total_time_s, "nodes": len(profile.node_time_s),
                    "settings": dict(profile.settings), "output": str(args.output) if args.output else None})
        return 0
    print(summary(graph, profile, args.top))
    for note in notes:
        print(note)
    return 0


def measure_here(graph: Graph, args: argparse.Namespace) -> Profile:
    from coinfer.profile.measure import measure_cached

    if args.warmup < 0 or args.repeats < 1:
        raise UserInputError("--warmup must be >= 0 and --repeats >= 1")
    return measure_cached(graph, cache_dir(args), warmup=args.warmup, repeats=args.repeats, threads=args.threads)


def save_local_calibration(graph: Graph, profile: Profile, args: argparse.Namespace) -> Path:
    from coinfer.profile.analytic import calibrate
    from coinfer.profile.calibration_file import default_calibration_path, save_calibration

    path = default_calibration_path(cache_dir(args))
    if "peak_flops_per_s" in profile.settings:
        calibration = calibrate(profile, graph)
    else:  # an onnxruntime profile does not carry this machine's rates: measure them now
        from coinfer.profile.measure import measure_machine

        rates = measure_machine(args.threads)
        calibration = calibrate(profile, graph, peak_flops_per_s=rates.peak_flops_per_s,
                                memory_bandwidth_bytes_per_s=rates.memory_bandwidth_bytes_per_s,
                                node_overhead_s=rates.node_overhead_s)
    save_calibration(calibration, path)
    return path


def predict_on(graph: Graph, name: str, args: argparse.Namespace) -> Profile:
    from coinfer.profile.analytic import predict
    from coinfer.profile.calibration_file import default_calibration_path, load_calibration
    from coinfer.profile.catalog import device_spec

    path = default_calibration_path(cache_dir(args))
    calibration = load_calibration(path) if path.is_file() else None
    return predict(graph, device_spec(name), calibration)


def regress(graph: Graph, args: argparse.Namespace) -> Profile:
    from coinfer.profile import regression

    if not args.fit_on:
        raise UserInputError("--device regression needs --fit-on MODEL,MODEL,... (models to measure and fit on)")
    pairs = []
    for spec in args.fit_on.split(","):
        fit_args = argparse.Namespace(**{**vars(args), "model": spec.strip()})
        fit_graph = graph_from_args(fit_args)
        pairs.append((fit_graph, measure_here(fit_graph, fit_args)))
    model = regression.fit(pairs)
    return regression.predict(model, graph, "regression:local")


def summary(graph: Graph, profile: Profile, top: int) -> str:
    head = (f"{graph.name} on {profile.device} ({profile.method}): {profile.total_time_s * 1e3:.2f} ms over "
            f"{len(profile.node_time_s)} nodes")
    settings = ", ".join(f"{k}={v}" for k, v in profile.settings.items()
                         if k in ("threads", "warmup", "repeats", "torch_version", "cpu_model"))
    slowest = sorted(profile.node_time_s.items(), key=lambda kv: -kv[1])[:top]
    rows = [[node, graph.node(node).op, graph.node(node).flops / 1e6, t * 1e3,
             profile.node_spread_s.get(node, 0.0) * 1e3, t / profile.total_time_s * 100] for node, t in slowest]
    parts = [head]
    if settings:
        parts.append(settings)
    parts += ["", table(["node", "op", "MFLOP", "time ms", "spread ms", "% of total"], rows)]
    return "\n".join(parts)

"""`coinfer profile`: measure every node here, or predict its time on a catalogued device."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from coinfer.cli.common import add_model_arguments, cache_dir, graph_from_args, print_json
from coinfer.cli.run_cmd import add_key_arguments
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
        "given with --fit-on; --worker NAME=HOST:PORT measures every node on a running worker (coinfer worker) "
        "over the secure runtime: it gets the weights, measures with warm-up and repeats, and reports its host.")
    add_model_arguments(p)
    p.add_argument("--device", default="local", metavar="local|analytic:NAME|regression",
                   help="where the times are for (default local)")
    p.add_argument("--framework", choices=["pytorch", "onnxruntime", "peak"], help="with --device analytic:NAME: "
                   "predict what the device sustains under this framework, fitted to published latencies "
                   "(coinfer devices; default pytorch), or 'peak' for its datasheet peaks")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs; the median is kept (default 10)")
    p.add_argument("--threads", type=int, help="torch threads while measuring (default: torch's default)")
    p.add_argument("--fit-on", metavar="MODEL[=PROFILE],...", help="with --device regression: the models to fit "
                   "the regression on (specs or graph files), measured here, or MODEL=PROFILE.json to fit on a "
                   "profile measured elsewhere (coinfer profile --worker, run --save-profiles): the prediction is "
                   "then for that device")
    p.add_argument("--worker", action="append", default=[], metavar="NAME=HOST:PORT",
                   help="measure on this running worker, which plays device NAME (repeatable: one profile each)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="with --worker: the time one request may take")
    add_key_arguments(p)
    p.add_argument("--top", type=int, default=10, help="print the N slowest nodes (default 10)")
    p.add_argument("-o", "--output", type=Path, metavar="profile.json",
                   help="write the profile here (with several --worker: a directory, one NAME.json each)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of tables")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    graph = graph_from_args(args)
    if args.worker:
        return run_on_workers(graph, args)
    notes: list[str] = []
    if args.framework and not args.device.startswith("analytic:"):
        raise UserInputError("--framework predicts a catalogued device: use it with --device analytic:NAME")
    if args.device == "local":
        profile = measure_here(graph, args)
        notes.append(f"calibrated the roofline on it: {save_local_calibration(graph, profile, args)}")
    elif args.device.startswith("analytic:"):
        profile = predict_on(graph, args.device.removeprefix("analytic:"), args)
        calibrated_on = profile.settings.get("calibrated_on")
        if isinstance(calibrated_on, list) and calibrated_on:  # the datasheet roofline, this machine's efficiencies
            notes.append(f"datasheet peaks with efficiencies calibrated here on "
                         f"{', '.join(map(str, calibrated_on))} (coinfer profile --device local); "
                         + ("asked for with --framework peak" if args.framework == "peak" else
                            f"nothing published for this device under {args.framework or 'pytorch'}"))
        elif not profile.settings.get("calibrated"):
            sustained = profile.settings.get("sustained")
            notes.append(f"uncalibrated: nothing published for this device, {sustained['transferred_from']}'s fit "
                         f"transferred ({sustained['transfer_why']})" if isinstance(sustained, dict) else
                         "uncalibrated: datasheet peaks only (coinfer devices lists the fitted devices)")
            notes.append("measure on the device itself with --worker NAME=HOST:PORT")
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


def run_on_workers(graph: Graph, args: argparse.Namespace) -> int:
    """`--worker`: a profile per worker, measured there (coinfer.runtime.remote_profile)."""
    from coinfer.cli.run_cmd import client_security, parse_workers, weight_progress
    from coinfer.runtime.remote_profile import profile_workers

    if args.device != "local" or args.fit_on:
        raise UserInputError("--worker measures on the worker: it takes no --device or --fit-on")
    if args.threads is not None:
        raise UserInputError("--worker measures at the worker's own thread count (coinfer worker --threads)")
    given = parse_workers(",".join(args.worker))
    if len(given) != len(args.worker):
        raise UserInputError("--worker names a device twice; give each NAME=HOST:PORT once")
    security = client_security(args, tuple(given))
    print(f"measuring {graph.name} on {', '.join(given)}: {args.warmup} warm-up and {args.repeats} timed requests "
          "each", file=sys.stderr)
    with weight_progress() as shipped:
        profiles = list(profile_workers(graph, given, security, warmup=args.warmup, repeats=args.repeats,
                                        timeout_s=args.timeout_s, progress=shipped).values())
    written = _write_profiles(profiles, args.output)
    if args.json:
        print_json([{"graph": graph.name, "device": p.device, "method": p.method, "total_time_s": p.total_time_s,
                     "nodes": len(p.node_time_s), "settings": dict(p.settings), "output": w}
                    for p, w in zip(profiles, written, strict=True)])
        return 0
    for profile, where in zip(profiles, written, strict=True):
        print(summary(graph, profile, args.top))
        if where:
            print(f"wrote {where}; use it with --profile {profile.device}={where}")
        print()
    return 0


def _write_profiles(profiles: list[Profile], output: Path | None) -> list[str | None]:
    from coinfer.profile.profile_file import save_profile

    if output is None:
        return [None] * len(profiles)
    if len(profiles) == 1 and output.suffix == ".json":
        save_profile(profiles[0], output)
        return [str(output)]
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / f"{p.device}.json" for p in profiles]
    for profile, path in zip(profiles, paths, strict=True):
        save_profile(profile, path)
    return [str(p) for p in paths]


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

    if args.framework != "peak":
        from coinfer.profile.sustained import predict_sustained, sustained_fit

        fit = sustained_fit(name, args.framework or "pytorch")
        if fit is not None:
            return predict_sustained(graph, device_spec(name), fit)

    path = default_calibration_path(cache_dir(args))
    calibration = load_calibration(path) if path.is_file() else None
    return predict(graph, device_spec(name), calibration)


def regress(graph: Graph, args: argparse.Namespace) -> Profile:
    from coinfer.profile import regression

    if not args.fit_on:
        raise UserInputError("--device regression needs --fit-on MODEL,MODEL,... (models to measure and fit on)")
    from coinfer.profile.profile_file import load_profile

    pairs = []
    for item in (i.strip() for i in args.fit_on.split(",") if i.strip()):
        spec, eq, path = item.partition("=")
        fit_args = argparse.Namespace(**{**vars(args), "model": spec})
        fit_graph = graph_from_args(fit_args)
        pairs.append((fit_graph, load_profile(path, fit_graph) if eq else measure_here(fit_graph, fit_args)))
    devices = sorted({p.device for _, p in pairs})
    if len(devices) > 1:
        raise UserInputError(f"--fit-on mixes profiles of devices {', '.join(devices)}: a regression is of one device")
    model = regression.fit(pairs)
    return regression.predict(model, graph, f"regression:{devices[0]}")


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

"""`coinfer plan` (make and cost a plan) and `coinfer cost` (cost a saved plan)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from coinfer.api import make_problem, plan
from coinfer.cli.common import add_model_arguments, cache_dir, graph_from_args, print_json
from coinfer.cluster import Cluster
from coinfer.codec_model import Codec
from coinfer.cost import Breakdown, evaluate
from coinfer.errors import UserInputError
from coinfer.files.cluster_file import load_cluster
from coinfer.files.plan_file import link_codecs, load_plan, save_plan
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem
from coinfer.profile.analytic import Calibration
from coinfer.profile.timings import Profile
from coinfer.report import comparison_table, plan_report, predicted_block, stages_block, time_sources_line
from coinfer.solve import SOLVERS


def register(sub: Any) -> None:
    p = sub.add_parser("plan", help="place every node on a device and predict the cost",
                       description="Make a plan for MODEL on a cluster, from a hand-written placement or a "
                       "solver, and print its stages, predicted costs and the baselines beside it.")
    add_model_arguments(p)
    add_problem_arguments(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--placement", metavar="PLAN", help="one-line plan such as 'conv1..layer2@phone | "
                     "layer3..fc@edge', or a device name for everything there")
    how.add_argument("--solver", choices=sorted(SOLVERS), help="solver to use (default origin-only)")
    p.add_argument("--codec", action="append", default=[], metavar="[SOURCE->TARGET=]CODEC",
                   help="encode the tensors a link carries: 'fp16+lz4' for every link, or 'phone->edge=int8' "
                   "for one directed link (repeatable; a link's own --codec wins). Codecs: none, fp16, int8, "
                   "int8-channel, each optionally +lz4 or +zstd. Solvers place without them; the costs shown "
                   "(baselines included) count them")
    p.add_argument("-o", "--output", type=Path, metavar="plan.json", help="write the plan here")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the predicted latency of every single "
                   "cut between the origin and a server (Neurosurgeon's figure); with --solver pareto, the front")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(run=run_plan)

    c = sub.add_parser("cost", help="predict the costs of a saved plan",
                       description="Re-evaluate a plan file (it embeds its graph, cluster and node times).")
    c.add_argument("plan_file", type=Path, metavar="plan.json")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=run_cost)


def add_problem_arguments(p: argparse.ArgumentParser) -> None:
    """The cluster, objective, constraints and node-time sources (shared with `compare`)."""
    p.add_argument("--cluster", required=True, metavar="FILE|PRESET", help="cluster YAML file or preset name "
                   "(see 'coinfer presets')")
    p.add_argument("--objective", default="latency", help="latency | energy | origin-energy | cost | throughput | "
                   "unreliability, or weighted like 'latency=1,energy=0.2' or 'latency=1,unreliability=2' "
                   "(a failed request costs 2 s; default latency)")
    p.add_argument("--deadline-s", type=float, metavar="S", help="latency constraint, in seconds")
    p.add_argument("--energy-budget-j", type=float, metavar="J", help="energy budget of the origin per request")
    p.add_argument("--request-rate", type=float, metavar="PER_S", help="check that every device and link "
                   "keeps up with this many requests per second")
    p.add_argument("--min-reliability", type=float, metavar="R", help="the least probability that a request "
                   "finds its devices and links up, e.g. 0.999; a solver's plan gets the standbys that meet it")
    p.add_argument("--profile", action="append", default=[], metavar="DEVICE=profile.json",
                   help="use measured or saved times for a device (repeatable)")
    p.add_argument("--calibration", metavar="FILE|none", help="roofline calibration (default: this machine's, "
                   "saved by 'coinfer profile --device local', if any)")


def problem_from_args(args: argparse.Namespace) -> Problem:
    """The graph (captured or loaded), the cluster and the flags of `add_problem_arguments`."""
    return make_problem(
        graph_from_args(args), load_cluster(args.cluster), objective=args.objective, deadline_s=args.deadline_s,
        origin_energy_budget_j=args.energy_budget_j, request_rate_per_s=args.request_rate,
        min_reliability=getattr(args, "min_reliability", None),
        profiles=profiles_from_args(args.profile), calibration=calibration_from_args(args),
    )


def run_plan(args: argparse.Namespace) -> int:
    problem = problem_from_args(args)
    started = time.perf_counter()
    chosen = plan(problem, placement=args.placement, solver=args.solver)
    solve_time_s = time.perf_counter() - started
    codecs = codecs_from_args(args.codec, problem.cluster)
    if codecs:
        chosen = replace(chosen, codecs=codecs)
    breakdown = evaluate(chosen, problem)
    if args.output:
        save_plan(args.output, chosen, problem, breakdown, solve_time_s)
    if args.plot:
        _plot(args.plot, chosen, problem)
    baselines = baseline_plans(problem, codecs)
    if args.json:
        doc = plan_json(chosen, problem, breakdown)
        doc.update(solve_time_s=solve_time_s, baselines={name: predicted_block(b) for name, _, b in baselines})
        print_json(doc)
    else:
        print(plan_report(chosen, problem, breakdown))
        print()
        print(comparison_table([*baselines, ("this plan", chosen, breakdown)]))
        print("\n" + time_sources_line(problem))
        for written in (args.output, args.plot):
            if written:
                print(f"wrote {written}")
    return _exit_status(breakdown)


def run_cost(args: argparse.Namespace) -> int:
    chosen, problem = load_plan(args.plan_file)
    breakdown = evaluate(chosen, problem)
    if args.json:
        print_json(plan_json(chosen, problem, breakdown))
    else:
        print(plan_report(chosen, problem, breakdown))
    return _exit_status(breakdown)


def plan_json(chosen: Plan, problem: Problem, b: Breakdown) -> dict[str, Any]:
    doc: dict[str, Any] = {"plan": str(chosen), "solver": chosen.solver, "objective": str(problem.objective),
                           "placement": {n.id: chosen.placement[n.id] for n in problem.graph.nodes}}
    if chosen.codecs:
        doc["codecs"] = {f"{s}->{t}": str(c) for (s, t), c in chosen.codecs.items()}
    doc.update(predicted=predicted_block(b), stages=stages_block(b), time_sources=dict(problem.time_sources))
    return doc


def codecs_from_args(values: list[str], cluster: Cluster) -> dict[tuple[str, str], Codec]:
    """`--codec CODEC` (every directed link of the cluster) and `--codec SOURCE->TARGET=CODEC`."""
    entries: dict[str, str] = {}
    for value in (v for v in values if "=" not in v):
        entries.update({f"{lk.source}->{lk.target}": value for lk in cluster.links})
    for value in (v for v in values if "=" in v):
        link, _, text = value.partition("=")
        entries[link.strip()] = text
    return link_codecs(entries, cluster, "--codec")


def baseline_plans(problem: Problem, codecs: Mapping[tuple[str, str], Codec] | None = None,
                   ) -> list[tuple[str, Plan, Breakdown]]:
    """All on the origin, then all on each server: the rows every plan is compared with, costed
    with the same link `codecs` as the plan."""
    rows = []
    for device in [problem.cluster.origin, *problem.cluster.servers]:
        name = f"origin-only ({device.name})" if device.origin else f"server-only ({device.name})"
        p = replace(all_on(problem.graph, device.name, solver=name.split(" ")[0]), codecs=dict(codecs or {}))
        rows.append((name, p, evaluate(p, problem)))
    return rows


def _plot(path: Path, chosen: Plan, problem: Problem) -> None:
    from coinfer import plots

    if chosen.solver == "pareto":
        from coinfer.solve.pareto import pareto_front

        front = pareto_front(problem)
        plots.plot_front([(str(k), b) for k, (_, b) in enumerate(front, 1)], path)
        return
    used = [d for d in chosen.devices_used if d != problem.origin]
    plots.plot_cut_latencies(problem, path, server=used[0] if used else None, chosen=chosen)


def _exit_status(b: Breakdown) -> int:
    for v in b.violations:
        print(f"coinfer: infeasible plan: {v.message}", file=sys.stderr)
    return 0 if b.feasible else 1


def profiles_from_args(pairs: list[str]) -> dict[str, Profile]:
    from coinfer.profile.profile_file import load_profile

    out: dict[str, Profile] = {}
    for pair in pairs:
        device, eq, path = pair.partition("=")
        if not eq or not device or not path:
            raise UserInputError(f"--profile {pair!r} should look like DEVICE=profile.json")
        out[device] = load_profile(path)
    return out


def calibration_from_args(args: argparse.Namespace) -> Calibration | None:
    from coinfer.profile.calibration_file import default_calibration_path, load_calibration

    if args.calibration == "none":
        return None
    if args.calibration:
        return load_calibration(args.calibration)
    path = default_calibration_path(cache_dir(args))
    return load_calibration(path) if path.is_file() else None

"""`coinfer adapt`: serve a stream while a policy re-partitions it as links and loads change."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coinfer.cli.common import add_model_arguments, print_json
from coinfer.cli.plan_cmd import add_problem_arguments, problem_from_args
from coinfer.cli.run_cmd import (
    _progress,
    add_key_arguments,
    add_recovery_arguments,
    check_recovery_arguments,
    read_inputs,
    worker_site,
)
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.report import table, time_sources_line


def register(sub: Any) -> None:
    p = sub.add_parser("adapt", help="serve a request stream while an adaptive policy re-partitions it",
                       description="Serve N requests of MODEL (or of a saved PLAN's model) over the cluster, with "
                       "link bandwidth following a trace, while a policy (static, reap, partial, resolve) "
                       "switches plans live; report latency, energy, deadline misses, switches and lost requests. "
                       "Runs on local worker processes (default) or in the simulator (--simulate).")
    add_model_arguments(p)
    add_problem_arguments(p)
    p.add_argument("--static-solver", default="ilp", help="solver of the plan served first, the static baseline "
                   "(default ilp: the exact optimum for the configured cluster)")
    p.add_argument("--policy", default="partial", help="static | reap | partial | resolve (default partial)")
    p.add_argument("--compare", metavar="P1,P2,...", help="serve the same stream once per policy; one table")
    p.add_argument("--policy-option", action="append", default=[], metavar="[POLICY.]KEY=VALUE",
                   help="a policy option, e.g. window=50 or resolve.granularity=op (docs/adaptive.md lists them); "
                   "without POLICY it goes to every policy run that has KEY")
    p.add_argument("--trace", action="append", default=[], metavar="[SRC->DST=]FILE",
                   help="a link's bandwidth follows this trace (time_s mbit_per_s lines, ../shared/data/traces); "
                   "without SRC->DST, the origin's uplinks follow it")
    p.add_argument("--trace-speedup", type=float, default=1.0, help="play traces this many times faster")
    p.add_argument("--requests", type=int, default=200, help="requests to serve (default 200)")
    p.add_argument("--in-flight", type=int, default=1, metavar="K", help="requests outstanding at once")
    p.add_argument("--simulate", action="store_true", help="run in the discrete-event simulator, not on workers")
    p.add_argument("--workers", metavar="NAME=HOST:PORT,...", help="running workers; default: local processes")
    p.add_argument("--emulate", choices=["plan", "off"], default=None,
                   help="hold each stage for its predicted time on the device it plays (default plan when local)")
    p.add_argument("--threads", type=int, default=1, help="compute threads per local worker (default 1)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="give up on a request after this long")
    p.add_argument("--connect-timeout-s", type=float, default=10.0, help="how long a worker may take to answer")
    p.add_argument("--verify", action="store_true", help="check every output against the unpartitioned model")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="timeline: bandwidth, cut in use, latency")
    p.add_argument("--save-profiles", type=Path, metavar="DIR", help="save each device's node times measured while "
                   "serving as DIR/DEVICE.json (with --compare, DIR/POLICY/DEVICE.json), for plan --profile")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_recovery_arguments(p)
    add_key_arguments(p)
    p.set_defaults(run=run, shaping="inproc", local=True)


def run(args: argparse.Namespace) -> int:
    from coinfer.adapt.policies import get_policy
    from coinfer.api import plan

    check_recovery_arguments(args)
    if args.requests < 1 or args.in_flight < 1:
        raise UserInputError("--requests and --in-flight must be at least 1")
    if args.simulate and args.save_profiles:
        raise UserInputError("--save-profiles saves times measured on workers; the simulator measures none")
    problem = problem_from_args(args)
    names = [n.strip() for n in (args.compare or args.policy).split(",") if n.strip()]
    # unknown names and options fail here, before any worker starts
    options = policy_options(args.policy_option, names)
    policies = {name: get_policy(name, **options[name]) for name in names}
    static = plan(problem, solver=args.static_solver)  # as `coinfer plan` solves: standbys under a floor
    traces = link_traces(args.trace, args.trace_speedup, problem)
    reports = {}
    for name, policy in policies.items():
        if args.simulate:
            reports[name] = _simulate(problem, static, policy, traces, args)
        else:
            reports[name] = _serve(problem, static, policy, traces, args)
    if args.plot:
        _plot(args.plot, reports, problem)
    if args.json:
        print_json(reports if args.compare else reports[names[0]])
    else:
        print(f"static plan ({args.static_solver}): {static}")
        print(time_sources_line(problem))
        print(comparison(reports))
        for name, r in reports.items():
            for s in r["switches"][:20]:
                which = f" (request {s['request_id']})" if s["request_id"] is not None else ""
                print(f"{name}: switch at {s['at_s']:.1f} s{which} to {s['plan']}: {s['reason']}")
            for h in r.get("health", [])[:20]:
                if h["action"] != "noted":
                    print(f"{name}: {h['at_s']:.1f} s {h['device']} {h['state']} ({h['detail']}): {h['action']}")
        for name, r in reports.items():
            behind = r.get("emulation_behind") or {}
            if behind.get("stages"):
                print(f"{name}: emulation fell behind on {behind['stages']} of {behind['of']} stages "
                      f"({', '.join(f'{d}: {n}' for d, n in behind['by_device'].items())}; median "
                      f"{behind['median_ms']:.1f} ms, max {behind['max_ms']:.1f} ms): this machine computes them "
                      f"slower than the devices it plays. The table, the policy and the estimates use the played "
                      f"devices' times; this machine's latencies are under measured_latency_s in --json")
        for name, r in reports.items():
            if "bit_identical" in r:
                verdict = "bit-identical" if r["bit_identical"] else f"max abs error {r['max_abs_err']:.3g}"
                if not r["verified"]:
                    verdict = "FAILED: " + "; ".join(r["verify_problems"] or ["nothing compared"])
                print(f"{name}: verify: every output vs the unpartitioned model: {verdict}")
        for name, r in reports.items():
            for device, saved in (r.get("saved_profiles") or {}).items():
                print(f"{name}: profile of {device}: {saved['method']} ({saved['measured_nodes']} node(s) measured) "
                      f"-> {saved['path']}")
        if args.plot:
            print(f"wrote {args.plot}")
    lost = sum(r["lost"] + r["duplicated"] for r in reports.values())
    return 0 if lost == 0 and all(r.get("verified", True) for r in reports.values()) else 1


def policy_options(items: list[str], names: list[str]) -> dict[str, dict[str, str]]:
    """`--policy-option` values, per policy name (see the option's help)."""
    from coinfer.adapt.policies import option_names

    options: dict[str, dict[str, str]] = {name: {} for name in names}
    for item in items:
        key, eq, value = item.partition("=")
        policy, dot, key = key.rpartition(".")
        if not eq or not key:
            raise UserInputError(f"--policy-option {item!r}: write KEY=VALUE or POLICY.KEY=VALUE, e.g. window=50")
        if dot:
            if policy not in options:
                raise UserInputError(f"--policy-option {item!r}: policy {policy!r} is not run here "
                                     f"(running: {', '.join(names)})")
            options[policy][key] = value
            continue
        takers = [n for n in names if key in option_names(n)]
        if not takers:
            raise UserInputError(f"--policy-option {item!r}: none of {', '.join(names)} has an option {key!r}")
        for name in takers:
            options[name][key] = value
    return options


def link_traces(items: list[str], speedup: float, problem: Problem) -> dict[tuple[str, str], Any]:
    """`--trace [SRC->DST=]FILE`; a bare FILE is every link out of the origin."""
    from coinfer.cli.run_cmd import read_traces

    explicit = [i for i in items if "->" in i.partition("=")[0] and "=" in i]
    bare = [i for i in items if i not in explicit]
    origin = problem.origin
    uplinks = [f"{lk.source}->{lk.target}" for lk in problem.cluster.links if lk.source == origin]
    expanded = explicit + [f"{link}={path}" for path in bare for link in uplinks]
    return read_traces(expanded, speedup, problem, "--trace")


def _serve(problem: Problem, static: Plan, policy: Any, traces: dict[tuple[str, str], Any],
           args: argparse.Namespace) -> dict[str, Any]:
    from coinfer.runtime.adaptive import serve_adaptive, summary
    from coinfer.runtime.client import Client
    from coinfer.runtime.reference import reference_outputs
    from coinfer.runtime.run import RunOptions
    from coinfer.runtime.verify import compare_all

    inputs = read_inputs([], problem.graph)
    args.local = args.workers is None
    options = RunOptions(requests=args.requests, in_flight=args.in_flight, timeout_s=args.timeout_s,
                         connect_timeout_s=args.connect_timeout_s, traces=traces, shaping="inproc",
                         recover=not args.no_recover, down_after_s=args.down_after_s,
                         emulate=(args.emulate or ("plan" if args.local else "off")) == "plan")
    devices = problem.cluster.device_names
    with worker_site(args, tuple(devices), "inproc", problem) as site, \
            Client(site.client_workers, site.sink_host, security=site.security) as client, \
            _progress(args.requests) as bar:
        sink = site.client_address(client.sink_port) if site.client_address else None
        run = serve_adaptive(problem, static, policy, client, site.endpoint, options, lambda _: inputs,
                             client_address=sink, on_record=lambda _: bar(1))
    report = summary(run, problem)
    report.update(policy=policy.name, mode="workers", timeline=_timeline(run, problem, traces))
    if args.save_profiles:
        directory = args.save_profiles / policy.name if args.compare else args.save_profiles
        report["saved_profiles"] = _save_profiles(run, problem, directory, options)
    if args.verify:
        reference = reference_outputs(problem.graph, inputs, args.threads)
        comparison = compare_all((o.outputs, reference) for o in run.outcomes if o.ok)
        report.update(comparison.report())
    return report


def _save_profiles(run: Any, problem: Problem, directory: Path, options: Any) -> dict[str, Any]:
    """Each device's node times over the run (coinfer.runtime.measured_profiles), to DIRECTORY/DEVICE.json."""
    from coinfer.profile.profile_file import save_profile
    from coinfer.runtime.measured_profiles import refined_profile

    directory.mkdir(parents=True, exist_ok=True)
    settings = {"measured_on": "adapt", "emulation": "plan" if options.emulate else "off",
                "requests": run.node_samples.requests}
    saved = {}
    for device, times in sorted(run.node_samples.by_device.items()):
        profile = refined_profile(problem.graph, device, times, problem.node_time_s[device], settings)
        path = directory / f"{device}.json"
        save_profile(profile, path)
        saved[device] = {"path": str(path), "method": profile.method,
                         "measured_nodes": profile.settings["measured_nodes"]}
    return saved


def _timeline(run: Any, problem: Problem, traces: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """Per request: when it was sent, its latency (the played devices', see `runtime.adaptive._record`)
    and the plan version; per traced link, its bandwidth."""
    sent = [r.sent_s for r in run.records]
    return {"sent_s": sent, "latency_s": [r.latency_s for r in run.records],
            "plan_version": [r.plan_version for r in run.records],
            "cut_bytes": [run.cut_bytes.get(r.plan_version) for r in run.records],
            "link_bytes": link_bytes(run.records, problem),
            "bandwidth_bits_per_s": {f"{s}->{t}": [trace.bits_per_s_at(x) for x in sent]
                                     for (s, t), trace in traces.items()},
            "trace_steps": trace_steps(traces, max(sent, default=0.0)),
            "health": [{"at_s": h["at_s"], "device": h["device"], "state": h["state"], "action": h["action"]}
                       for h in run.health if h["state"] != "degraded" or h["action"] != "noted"]}


def trace_steps(traces: dict[tuple[str, str], Any], end_s: float) -> dict[str, dict[str, list[float]]]:
    """Each traced link's bandwidth at every change up to `end_s`: the plot draws the trace itself,
    not only its value when each request left (a request that waits out a slow link hides it)."""
    steps: dict[str, dict[str, list[float]]] = {}
    for (source, target), trace in traces.items():
        times = trace.changes_until(end_s)
        steps[f"{source}->{target}"] = {"time_s": times, "bits_per_s": [trace.bits_per_s_at(t) for t in times]}
    return steps


def link_bytes(records: Any, problem: Problem) -> dict[str, list[int]]:
    """Per directed link that carried traffic, the bytes each request sent over it (from its hops)."""
    links = [(lk.source, lk.target) for lk in problem.cluster.links]
    per_link = {f"{s}->{t}": [r.bytes_sent(s, t) for r in records] for s, t in links}
    return {name: sizes for name, sizes in per_link.items() if any(sizes)}


def _simulate(problem: Problem, static: Plan, policy: Any, traces: dict[tuple[str, str], Any],
              args: argparse.Namespace) -> dict[str, Any]:
    from coinfer.cost import evaluate
    from coinfer.sim.adaptive import simulate_adaptive

    result = simulate_adaptive(problem, policy, static=static, traces=traces, requests=args.requests,
                               in_flight=args.in_flight)
    cut = [evaluate(p, problem).cut_bytes for p in result.plans]  # by version (the simulator counts from 0)
    records = sorted(result.records, key=lambda r: r.sent_s)
    sent = [r.sent_s for r in records]
    return {
        "policy": policy.name, "mode": "simulated", "requests": result.sent, "ok": len(result.records) - sum(
            1 for r in result.records if not r.ok), "lost": result.lost, "duplicated": result.duplicated,
        "latency_s": {"p50": result.latency_p50_s, "p95": result.latency_p95_s, "mean": result.latency_mean_s},
        "energy_j_per_request": result.mean_energy_j, "energy_source": "model",
        "deadline_s": result.deadline_s, "deadline_misses": result.deadline_misses,
        "switches": [{"at_s": sw.at_s, "request_id": None, "from_version": sw.from_version,
                      "to_version": sw.to_version, "plan": sw.to_plan, "reason": sw.reason} for sw in result.switches],
        "throughput_rps": result.throughput_rps, "plans": {str(v): str(p) for v, p in enumerate(result.plans)},
        "timeline": {"sent_s": sent, "latency_s": [r.latency_s for r in records],
                     "plan_version": [r.plan_version for r in records],
                     "cut_bytes": [cut[r.plan_version] for r in records],
                     "link_bytes": link_bytes(records, problem),
                     "bandwidth_bits_per_s": {f"{a}->{b}": [trace.bits_per_s_at(x) for x in sent]
                                              for (a, b), trace in traces.items()},
                     "trace_steps": trace_steps(traces, max(sent, default=0.0))},
    }


def comparison(reports: dict[str, dict[str, Any]]) -> str:
    rows = []
    base = reports.get("static")
    for name, r in reports.items():
        lat = r["latency_s"]
        energy = r.get("energy_j_per_request")
        delta = ""
        if base is not None and name != "static" and lat["mean"] and base["latency_s"]["mean"]:
            delta = f"{(lat['mean'] / base['latency_s']['mean'] - 1) * 100:+.1f}%"
            if energy and base.get("energy_j_per_request"):
                delta += f" / {(energy / base['energy_j_per_request'] - 1) * 100:+.1f}%"
        rows.append([name, _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["mean"]), "-" if energy is None else energy,
                     r["deadline_misses"], len(r["switches"]), r["lost"], r["duplicated"], delta])
    return table(["policy", "p50 ms", "p95 ms", "mean ms", "energy J/req", "deadline misses", "switches", "lost",
                  "duplicated", "vs static (latency / energy)"], rows)


def _ms(value: float | None) -> object:
    return "-" if value is None else value * 1e3


def _plot(path: Path, reports: dict[str, dict[str, Any]], problem: Problem) -> None:
    from coinfer.plots import plot_adapt_timeline

    plot_adapt_timeline({name: r["timeline"] for name, r in reports.items()}, path,
                        deadline_s=problem.constraints.deadline_s)

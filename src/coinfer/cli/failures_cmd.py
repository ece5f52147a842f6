"""`coinfer failures`: a saved plan under simulated device failures, once per way of recovering, in one table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coinfer.cli.common import print_json
from coinfer.errors import UserInputError
from coinfer.report import table

RECOVERIES = ("replan", "replicas", "none")


def register(sub: Any) -> None:
    p = sub.add_parser("failures", help="simulate a plan while devices fail; compare ways of recovering",
                       description="Serve PLAN in the discrete-event simulator while devices go down and come "
                       "back (--outage, --failure-trace, or --mtbf-s/--mttr-s), recovering by re-planning, by "
                       "the plan's standbys, or not at all; report availability, requests lost, latency and "
                       "the time from each failure to the next answer (docs/failures.md).")
    p.add_argument("plan", metavar="PLAN", help="plan JSON file (coinfer plan ... -o plan.json)")
    p.add_argument("--outage", action="append", default=[], metavar="DEVICE=DOWN_S:UP_S",
                   help="DEVICE is down from DOWN_S to UP_S seconds into the run (UP_S 'inf': for good)")
    p.add_argument("--failure-trace", type=Path, metavar="FILE", help="outages, one 'DEVICE DOWN_S UP_S' a line")
    p.add_argument("--mtbf-s", action="append", default=[], metavar="DEVICE=S",
                   help="draw DEVICE's failures with this mean time between them (exponential)")
    p.add_argument("--mttr-s", action="append", default=[], metavar="DEVICE=S",
                   help="mean time to repair DEVICE (default a tenth of its MTBF)")
    p.add_argument("--until-s", type=float, default=300.0, help="draw failures over this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recovery", default=",".join(RECOVERIES), metavar="R1,R2",
                   help="replan | replicas | none, comma-separated (default all three)")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--in-flight", type=int, default=1)
    p.add_argument("--down-after-s", type=float, default=0.8, help="detection time (the runtime's watchdog bound)")
    p.add_argument("--redeploy-s", type=float, default=0.4, help="time to deploy a new plan (measure it: "
                   "benchmarks/chaos.py)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="a request waiting this long is lost")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from coinfer.files.plan_file import load_plan
    from coinfer.sim.failures import outages_from_rates, simulate_failures

    plan, problem = load_plan(args.plan)
    recoveries = [r.strip() for r in args.recovery.split(",") if r.strip()]
    bad = [r for r in recoveries if r not in RECOVERIES]
    if bad:
        raise UserInputError(f"--recovery {','.join(bad)}: use {', '.join(RECOVERIES)}")
    outages = [_outage(item, "--outage") for item in args.outage]
    if args.failure_trace:
        outages += _trace(args.failure_trace)
    if args.mtbf_s:
        outages += outages_from_rates(problem, _pairs(args.mtbf_s, "--mtbf-s"), _pairs(args.mttr_s, "--mttr-s"),
                                      args.until_s, args.seed)
    if not outages:
        raise UserInputError("no failures to simulate: give --outage, --failure-trace or --mtbf-s")
    for o in outages:
        if o.device not in problem.cluster.device_names:
            raise UserInputError(f"outage of {o.device!r}: the plan's cluster has no such device; devices: "
                                 f"{', '.join(problem.cluster.device_names)}")
    reports = {}
    for recovery in recoveries:
        result = simulate_failures(problem, plan, sorted(outages, key=lambda o: o.down_s), recovery=recovery,
                                   requests=args.requests, in_flight=args.in_flight, down_after_s=args.down_after_s,
                                   redeploy_s=args.redeploy_s, timeout_s=args.timeout_s)
        reports[recovery] = result.summary()
    if args.json:
        print_json({"plan": str(plan), "outages": [vars(o) for o in outages], "recoveries": reports})
        return 0
    print(f"plan: {plan}\n{len(outages)} outage(s): " + ", ".join(f"{o.device} {o.down_s:g}-{o.up_s:g} s"
                                                                   for o in outages[:10]))
    rows = []
    for name, r in reports.items():
        times = [x["to_next_answer_s"] for x in r["recoveries"] if x["to_next_answer_s"] is not None]  # type: ignore[attr-defined]
        rows.append([name, r["answered"], r["lost"], r["replayed"], r["availability"], r["p50_ms"], r["p99_ms"],
                     max(times) if times else "-"])
    print(table(["recovery", "answered", "lost", "replayed", "availability", "p50 ms", "p99 ms",
                 "worst failure->answer s"], rows))
    return 0


def _outage(text: str, flag: str) -> Any:
    from coinfer.sim.failures import Outage

    device, eq, span = text.partition("=")
    down, colon, up = span.partition(":")
    try:
        if not (eq and colon and device.strip()):
            raise ValueError(text)
        return Outage(device.strip(), float(down), float(up))
    except ValueError:
        raise UserInputError(f"{flag} {text!r} should look like edge=5:8 (down at 5 s, back at 8 s)") from None


def _trace(path: Path) -> list[Any]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UserInputError(f"--failure-trace {path}: {exc.strerror}") from None
    out = []
    for number, line in enumerate(lines, 1):
        parts = line.split("#")[0].split()
        if not parts:
            continue
        if len(parts) != 3:
            raise UserInputError(f"{path}:{number}: expected 'DEVICE DOWN_S UP_S', got {line.strip()!r}")
        out.append(_outage(f"{parts[0]}={parts[1]}:{parts[2]}", f"{path}:{number}:"))
    return out


def _pairs(items: list[str], flag: str) -> dict[str, float]:
    out = {}
    for item in items:
        device, eq, value = item.partition("=")
        try:
            out[device.strip()] = float(value)
        except ValueError:
            raise UserInputError(f"{flag} {item!r} should look like edge=60") from None
        if not eq or not out[device.strip()] > 0:
            raise UserInputError(f"{flag} {item!r} should look like edge=60 (a positive number of seconds)")
    return out

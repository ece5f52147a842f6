"""`coinfer compare`: every chosen solver on one problem, in one table."""

from __future__ import annotations

import argparse
import time
from typing import Any

from coinfer.api import plan as plan_with
from coinfer.cli.common import add_model_arguments, print_json
from coinfer.cli.plan_cmd import add_problem_arguments, problem_from_args
from coinfer.cost import evaluate
from coinfer.errors import CoinferError
from coinfer.report import predicted_block, table, time_sources_line
from coinfer.solve import SOLVERS, get_solver


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="run several solvers on one problem and tabulate them",
                       description="Solve one problem with each solver named in --solvers (default: all that "
                       "accept it) and print their predicted costs and solve times side by side.")
    add_model_arguments(p)
    add_problem_arguments(p)
    p.add_argument("--solvers", metavar="A,B,C", help=f"solvers to run (default all: {', '.join(SOLVERS)})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    problem = problem_from_args(args)
    graph = problem.graph
    names = [n.strip() for n in args.solvers.split(",")] if args.solvers else list(SOLVERS)
    for name in names:
        get_solver(name)  # an unknown name fails before any work
    results: list[dict[str, Any]] = []
    for name in names:
        started = time.perf_counter()
        try:
            # as `coinfer plan` solves: with the standbys a reliability floor or weight asks for
            plan = plan_with(problem, solver=name)
        except CoinferError as exc:  # a solver that cannot take this problem says why; the others still run
            results.append({"solver": name, "error": str(exc)})
            continue
        elapsed = time.perf_counter() - started
        b = evaluate(plan, problem)
        results.append({"solver": name, "plan": str(plan), "solve_time_s": elapsed, "predicted": predicted_block(b)})
    if args.json:
        print_json({"objective": str(problem.objective), "results": results,
                    "time_sources": dict(problem.time_sources)})
        return 0
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["solver"], "", "", "", "", "", "", "no", f"cannot: {r['error']}"])
            continue
        p = r["predicted"]
        rows.append([r["solver"], p["objective"], p["latency_s"] * 1e3, p["energy_j"], p["cost_usd"],
                     p["throughput_rps"], r["solve_time_s"] * 1e3, "yes" if p["feasible"] else "NO",
                     _short(r["plan"])])
    print(f"{graph.name} on {problem.cluster.name}, objective {problem.objective}\n")
    print(table(["solver", "objective", "latency ms", "energy J", "cost $", "throughput/s", "solve ms", "feasible",
                 "plan"], rows))
    print("\n" + time_sources_line(problem))
    return 0


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."

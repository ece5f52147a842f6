"""Solvers: pure functions Problem -> Plan, registered by name in `SOLVERS`.

Registered solvers see the origin's idle power folded into their objective (`solve.waiting`);
the ones that cost whole plans with `cost.evaluate`, and `pareto`, which folds each of its own
objectives so that its front keeps the true metrics, see the problem as it is. Solvers that cannot
price unreliability are handed the objective without it (`solve.unreliability`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.baselines import origin_only, server_only
from coinfer.solve.brute_force import brute_force
from coinfer.solve.chain_dp import chain_dp
from coinfer.solve.coedge import coedge
from coinfer.solve.dads import dads, dads_throughput
from coinfer.solve.ftp import ftp
from coinfer.solve.genetic import genetic
from coinfer.solve.hpa import hpa
from coinfer.solve.ilp import ilp
from coinfer.solve.memory_share import memory_share
from coinfer.solve.neurosurgeon import neurosurgeon
from coinfer.solve.pareto import pareto
from coinfer.solve.pipeline_dp import pipeline_dp, pipeline_dp_order
from coinfer.solve.tiled_brute_force import tiling_brute_force
from coinfer.solve.unreliability import pricing
from coinfer.solve.vsm import vsm
from coinfer.solve.waiting import folding

Solver = Callable[[Problem], Plan]

_FUNCTIONS: Mapping[str, Solver] = {
    "origin-only": origin_only,
    "server-only": server_only,
    "neurosurgeon": neurosurgeon,
    "dads": dads,
    "dads-throughput": dads_throughput,
    "chain-dp": chain_dp,
    "ilp": ilp,
    "hpa": hpa,
    "pipeline-dp": pipeline_dp,
    "pipeline-dp-order": pipeline_dp_order,
    "genetic": genetic,
    "pareto": pareto,
    "brute-force": brute_force,
    "ftp": ftp,
    "vsm": vsm,
    "coedge": coedge,
    "tiling-brute-force": tiling_brute_force,
    "exo": memory_share,
}
# These cost whole plans with cost.evaluate, or (pareto) fold each of their own objectives.
_COUNT_WAITING_THEMSELVES = frozenset({"origin-only", "server-only", "brute-force", "pareto", "ftp", "vsm", "coedge",
                                       "tiling-brute-force", "exo"})

SOLVERS: Mapping[str, Solver] = {
    name: pricing(name, fn if name in _COUNT_WAITING_THEMSELVES else folding(name, fn))
    for name, fn in _FUNCTIONS.items()}


def get_solver(name: str) -> Solver:
    try:
        return SOLVERS[name]
    except KeyError:
        raise UserInputError(f"unknown solver {name!r}; solvers: {', '.join(SOLVERS)}") from None

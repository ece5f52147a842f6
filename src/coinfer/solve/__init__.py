"""Solvers: pure functions Problem -> Plan, registered by name in `SOLVERS`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.baselines import origin_only, server_only
from coinfer.solve.brute_force import brute_force

Solver = Callable[[Problem], Plan]

SOLVERS: Mapping[str, Solver] = {
    "origin-only": origin_only,
    "server-only": server_only,
    "brute-force": brute_force,
}


def get_solver(name: str) -> Solver:
    try:
        return SOLVERS[name]
    except KeyError:
        raise UserInputError(f"unknown solver {name!r}; solvers: {', '.join(SOLVERS)}") from None

"""`tiling-brute-force`: the oracle for small tiled cases: every tiled plan of a bounded space, by `cost.evaluate`.

Space: every range from the start of a tileable segment (coinfer.solve.tiled_ranges) to each of its
ends where the map has just shrunk (`range_ends`), every grid of `grids` that fits its output,
every assignment of the tiles to the devices (k^tiles), both modes, every gather device, with
the nodes before the range on the origin and those after it on the gather device; plus every plan
with the whole model on one device. That is the space ftp and vsm search parts of, so on small
cases their plans are held against its best. Feasible plans beat infeasible ones; ties go to the
plan met first. Refused beyond `MAX_PLANS` plans: O(ranges x grids x k^tiles x 2 x k) evaluations of about 10 ms each.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from coinfer.cost.evaluate import evaluate
from coinfer.errors import PlanError, UserInputError
from coinfer.plan import Plan, all_on
from coinfer.plan_tiling import MODES, Mode
from coinfer.problem import Problem
from coinfer.solve.tiled_ranges import fits, range_ends, tileable_segments, tiled_plan

MAX_PLANS = 20_000
SMALL_GRIDS: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (2, 2))


def tiling_brute_force(problem: Problem, grids: Sequence[tuple[int, int]] = SMALL_GRIDS,
                       modes: Sequence[Mode] = MODES) -> Plan:
    graph, devices = problem.graph, problem.cluster.device_names
    ranges = [(seg.start, stop) for seg in tileable_segments(graph) for stop in range_ends(graph, seg, seg.start)]
    count = sum(len(devices) ** (g[0] * g[1]) for _ in ranges for g in grids) * len(modes) * len(devices)
    if count > MAX_PLANS:
        raise UserInputError(f"tiling-brute-force would price {count} tiled plans (limit {MAX_PLANS}); use ftp, vsm "
                             "or coedge, or a model with fewer cut points")
    base = dict(all_on(graph, problem.origin).placement)
    best: tuple[tuple[bool, float], Plan] | None = None
    candidates = [all_on(graph, d) for d in devices]
    for (start, stop), grid, mode, gather in itertools.product(ranges, grids, modes, devices):
        if not fits(graph, stop, grid):
            continue
        for assignment in itertools.product(devices, repeat=grid[0] * grid[1]):
            candidates.append(tiled_plan(problem, base, start, stop, assignment, grid, gather, mode, after=gather))
    for plan in candidates:
        try:
            b = evaluate(plan, problem)
        except PlanError:  # a tile device without the links it needs
            continue
        key = (not b.feasible, b.objective_value)
        if best is None or key < best[0]:
            best = (key, plan)
    assert best is not None  # the origin alone is always a plan
    winner = best[1]
    return Plan(graph, winner.placement, "tiling-brute-force", best[0][1], tilings=winner.tilings)

"""`ftp`: DeepThings' fused tile partitioning (Zhao, Mirzazad Barijough, Gerstlauer, TCAD 2018).

Paper (REFERENCE.md section 6): fuse the first L layers of a CNN, split the output of the last into
an N x M grid, and give the tiles to the edge devices; each tile computes its whole input region
(the overlap of neighbours recomputed), the gateway stitches the tiles and runs the rest of the
network. DeepThings chooses L and N x M offline and hands tiles out at run time by work stealing.

Here (our search, scored by `cost.evaluate` under the problem's objective and constraints, feasible
plans first, the whole model on any one device among them): the range runs from the start of the
first tileable segment (coinfer.solve.tiled_ranges) to one of its ends where the map has just
shrunk; the tile devices are the k devices, among those that links join to the origin, that run
the range fastest alone (its input sent there, then computed), k = 1 .. all of them; the gather
device is the origin or the first of them, and the rest of the model runs there. A first pass
prices every (L, k, gather) with the most square grid of k tiles, one per device; a second tries
every grid of `GRIDS` for the best tiled plan of the first (more tiles than devices balance unequal
speeds and shrink each device's working set, as DeepThings' 5x5 grids do), each with the tiles
round-robin and as work stealing would hand them out (`earliest_finish`: each tile, in order, to
the device that would finish it first). Not exact: L, the device sets and the assignment are a
search over a pruned space. The plan fixes the assignment that is priced; `coinfer run --steal`
lets the runtime move tiles from it when a device runs slower than predicted (coinfer.runtime.stealing).
"""

from __future__ import annotations

from collections.abc import Sequence

from coinfer.cost import terms
from coinfer.cost.evaluate import evaluate
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem
from coinfer.solve.tiled_ranges import (
    GRIDS,
    earliest_finish,
    first_segment,
    fits,
    range_ends,
    range_input,
    range_time_s,
    reachable_tile_devices,
    round_robin,
    square_grid,
    tiled_plan,
)


def _alone_s(problem: Problem, start: int, stop: int, device: str) -> float:
    """The range on `device` alone: its input sent there from the origin, then computed."""
    graph, origin = problem.graph, problem.origin
    sent = 0.0 if device == origin else terms.transfer_time_s(
        problem.cluster.link(origin, device), graph.tensor_bytes(range_input(graph, start)))
    return sent + range_time_s(problem, start, stop, device)


def ftp(problem: Problem, grids: Sequence[tuple[int, int]] = GRIDS) -> Plan:
    """The search of the module docstring; `grids` are the second pass's grids."""
    graph, origin = problem.graph, problem.origin
    segment = first_segment(graph, "ftp")
    base = dict(all_on(graph, origin).placement)
    best: tuple[tuple[bool, float], Plan] | None = None
    best_tiled: tuple[tuple[bool, float], Plan] | None = None  # what the second pass refines

    def consider(plan: Plan) -> None:
        nonlocal best, best_tiled
        b = evaluate(plan, problem)
        key = (not b.feasible, b.objective_value)
        priced = Plan(plan.graph, plan.placement, "ftp", b.objective_value, tilings=plan.tilings)
        if best is None or key < best[0]:
            best = (key, priced)
        if plan.tilings and (best_tiled is None or key < best_tiled[0]):
            best_tiled = (key, priced)

    for device in problem.cluster.device_names:  # the untiled alternatives: the whole model on one device
        consider(all_on(graph, device, "ftp"))
    for stop in range_ends(graph, segment, segment.start):
        tile_devices = reachable_tile_devices(problem, origin, origin)
        fastest = sorted(tile_devices, key=lambda d: _alone_s(problem, segment.start, stop, d))
        for k in range(1, len(fastest) + 1):
            chosen = tuple(fastest[:k])
            for gather in dict.fromkeys([origin, chosen[0]]):
                if any(problem.cluster.link(d, gather) is None for d in chosen if d != gather):
                    continue
                grid = square_grid(k)
                if not fits(graph, stop, grid):
                    continue
                consider(tiled_plan(problem, base, segment.start, stop, round_robin(chosen, k), grid, gather,
                                    after=gather, solver="ftp"))
    assert best is not None
    if best_tiled is not None:
        tiling = best_tiled[1].tilings[0]
        stop = graph.index[tiling.last]
        chosen = tiling.tile_devices
        for grid in grids:
            if grid[0] * grid[1] >= len(chosen) and grid != (tiling.tile_rows, tiling.tile_cols) and fits(
                    graph, stop, grid):
                count = grid[0] * grid[1]
                for assignment in dict.fromkeys([round_robin(chosen, count),
                                                 earliest_finish(problem, segment.start, stop, chosen, count)]):
                    consider(tiled_plan(problem, base, segment.start, stop, assignment, grid, tiling.gather,
                                        after=tiling.gather, solver="ftp"))
    return best[1]

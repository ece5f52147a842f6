"""`vsm`: D3's vertical separation module on the edge tier of an HPA plan (Zhang et al., arXiv 2101.05952).

Paper (REFERENCE.md section 5): D3 splits a DNN into device, edge and cloud parts with its
horizontal partition algorithm (HPA) and lets a vertical separation module split the edge part's
feature maps into tiles that independent edge nodes compute in parallel, without loss of
precision. The details are not public; this design is ours.

Here: the plan of `hpa` (coinfer.solve.hpa), then, for each of its stages on an edge-tier device,
every tileable range inside that stage (from its first node that follows a cut point to each of
its ends where the map has just shrunk: coinfer.solve.tiled_ranges) tiled over that device and the
k - 1 other edge devices fastest on the range (k = 2 .. all edge devices that links join to the
range's input and to the stage's device), one tile per device (the most square grid of k tiles),
fused or with halo exchange, stitched on the stage's device, the rest of the HPA plan unchanged.
Every candidate and the HPA plan itself are scored by `cost.evaluate` (feasible plans first); the
best wins, so vsm is never worse than hpa under the cost model. A cluster without an edge tier,
or an HPA plan without an edge stage, gives the HPA plan.
"""

from __future__ import annotations

from coinfer.cost.evaluate import evaluate
from coinfer.cost.tiled_plan import scatter_device
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.plan_tiling import MODES, Tiling
from coinfer.problem import Problem
from coinfer.solve.hpa import hpa
from coinfer.solve.tiled_ranges import (
    fits,
    range_ends,
    range_time_s,
    reachable_tile_devices,
    square_grid,
    tileable_segments,
    tiled_plan,
)
from coinfer.solve.waiting import folding


def vsm(problem: Problem) -> Plan:
    graph, cluster = problem.graph, problem.cluster
    base = folding("hpa", hpa)(problem)  # as the registry runs it: the origin's waiting energy counted
    best = (_key(base, problem), Plan(graph, base.placement, "vsm", evaluate(base, problem).objective_value))
    edge = [d.name for d in cluster.devices if d.tier == "edge"]
    if len(edge) < 2:
        return best[1]
    try:
        segments = tileable_segments(graph)
    except UserInputError:
        return best[1]
    position = 0
    for stage in base.stages:
        first, last = position, position + len(stage.node_ids) - 1
        position = last + 1
        if stage.device not in edge:
            continue
        for segment in segments:
            start = next((c + 1 for c in (segment.start - 1, *segment.cuts) if first <= c + 1 <= last), None)
            if start is None or start > segment.stop:
                continue
            for stop in (s for s in range_ends(graph, segment, start) if s <= last):
                probe = Plan(graph, base.placement, tilings=(Tiling(graph.nodes[start].id, graph.nodes[stop].id,
                                                                    (stage.device,), stage.device),))
                scatter = scatter_device(probe, problem, probe.tilings[0])
                reachable = set(reachable_tile_devices(problem, scatter, stage.device))
                others = sorted((d for d in edge if d != stage.device and d in reachable),
                                key=lambda d: range_time_s(problem, start, stop, d))
                for k in range(2, len(others) + 2):
                    devices = (stage.device, *others[:k - 1])
                    grid = square_grid(k)
                    if not fits(graph, stop, grid):
                        continue
                    for mode in MODES:
                        plan = tiled_plan(problem, base.placement, start, stop, devices, grid, stage.device, mode,
                                          solver="vsm")
                        key = _key(plan, problem)
                        if key < best[0]:
                            best = (key, Plan(graph, plan.placement, "vsm", key[1], tilings=plan.tilings))
    return best[1]


def _key(plan: Plan, problem: Problem) -> tuple[bool, float]:
    b = evaluate(plan, problem)
    return not b.feasible, b.objective_value

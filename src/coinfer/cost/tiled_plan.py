"""The tiled stages of a plan, priced for `cost.evaluate`: where each scatters from, and its cost.

A tiled stage (coinfer.plan_tiling) reads the range's input on its *scatter* device, the device
of the node that makes that input (the origin for the model input), and its output is on its
*gather* device, where the plan places the range's nodes. `tiled_stage_costs` prices each with
`coinfer.cost.tiled_stage.tiled_stage_cost` over the links of the problem's cluster, reading the
range's ops from the captured model (`coinfer.tiling.program_ops.cached_spatial_range`; the
model's program is exported once per process). A graph without a model source cannot be tiled.
"""

from __future__ import annotations

from coinfer.cost.tiled_stage import TiledStageCost, tiled_stage_cost
from coinfer.errors import PlanError
from coinfer.plan import Plan
from coinfer.plan_tiling import Tiling
from coinfer.problem import Problem
from coinfer.tiling.program_ops import cached_spatial_range


def scatter_device(plan: Plan, problem: Problem, tiling: Tiling) -> str:
    """Where the range's input is made: its producer's device, or the origin for a graph input."""
    graph = problem.graph
    inside = tiling_node_ids(plan, tiling)
    outside = [v for n in inside for v in graph.node(n).inputs if v not in set(inside)]
    if not outside:
        raise PlanError(f"tiled stage {tiling.first}..{tiling.last} reads nothing from before it; tile a range "
                        "that reads one feature map")
    return problem.origin if outside[0] in graph.input_names else plan.placement[outside[0]]


def tiling_node_ids(plan: Plan, tiling: Tiling) -> tuple[str, ...]:
    graph = plan.graph
    start, stop = graph.index[tiling.first], graph.index[tiling.last]
    return tuple(n.id for n in graph.nodes[start:stop + 1])


def tiled_stage_costs(plan: Plan, problem: Problem) -> tuple[TiledStageCost, ...]:
    """The price of each of `plan.tilings`, in their order (empty for a plan without tiled stages)."""
    out = []
    for tiling in plan.tilings:
        spatial = cached_spatial_range(problem.graph, tiling.first, tiling.last)
        height, width = spatial.output_size
        tiling.check_map(height, width)
        try:
            out.append(tiled_stage_cost(problem.graph, spatial, tiling.grid(height, width), tiling.devices,
                                        problem.node_time_s, problem.cluster, scatter_device(plan, problem, tiling),
                                        tiling.gather, mode=tiling.mode))
        except PlanError as exc:
            raise PlanError(f"tiled stage {tiling.first}..{tiling.last}: {exc}") from None
    return tuple(out)

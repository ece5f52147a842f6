"""Where a graph can be tiled, and tiled plans built from a choice: what the tiling solvers share.

A range can be tiled when one feature map enters it, one leaves it, and every op in it keeps
positions (coinfer.tiling.program_ops). So ranges start and end at *cut points*: positions of the
topological order after which exactly one value is live (the value of the node there; position
-1 is the model input of a single-input model). Between two consecutive cut points lies an
*interval*; a range of several consecutive intervals can be tiled exactly when each of them can
(every op keeps positions and the ends carry one map), so `tileable_segments` checks each
interval once and returns the maximal runs of tileable intervals.

`range_ends` thins a segment's cut points to those right after the map shrinks (a pooling or a
strided layer) and the segment's end: a tiled range ending there sends the smallest output of its
depth, and the solvers would otherwise price every layer of a long chain.

`tiled_plan` builds the plan a solver scores: the nodes before the range where they are, the
range tiled, the nodes after it on one device.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coinfer.errors import PlanError, UserInputError
from coinfer.graph import Graph
from coinfer.plan import Plan
from coinfer.plan_tiling import Mode, Tiling
from coinfer.problem import Problem
from coinfer.tiling.program_ops import cached_program, spatial_range

GRIDS: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (2, 3), (3, 2), (3, 3), (4, 2),
                                      (2, 4), (4, 4), (5, 5))


@dataclass(frozen=True)
class Segment:
    """Nodes `start`..`stop` (positions, both included) that any range between its cut points can tile."""

    start: int
    stop: int
    cuts: tuple[int, ...]  # the cut points inside, each a possible last node of a range; `stop` is the last


def cut_points(graph: Graph) -> tuple[int, ...]:
    """Positions after which only the value of the node there is live (-1: only the model input)."""
    n = len(graph.nodes)
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v] = i
    for output in graph.outputs:
        last_use[output] = n
    born = {node.id: i for i, node in enumerate(graph.nodes)}
    born.update({gi.name: -1 for gi in graph.inputs})
    # live[i]: values born at or before i and read after i
    opens: dict[int, int] = {}
    closes: dict[int, int] = {}
    for value, end in last_use.items():
        if value in born and end > born[value]:
            opens[born[value]] = opens.get(born[value], 0) + 1
            closes[end] = closes.get(end, 0) + 1
    cuts: list[int] = []
    live = 0
    for i in range(-1, n - 1):
        live += opens.get(i, 0) - closes.get(i, 0)
        name = graph.inputs[0].name if i == -1 else graph.nodes[i].id
        if live == 1 and last_use.get(name, -2) > i and (i >= 0 or len(graph.inputs) == 1):
            cuts.append(i)
    return tuple(cuts)


def tileable_segments(graph: Graph) -> tuple[Segment, ...]:
    """The maximal runs of consecutive intervals between cut points that can be tiled (module docstring)."""
    if graph.source is None or graph.source.spec.startswith("onnx:"):
        raise UserInputError(f"graph {graph.name!r} is not a captured PyTorch model, so its ops' windows are unknown "
                             "and no range can be tiled; capture it from PyTorch (coinfer capture), or plan it with a "
                             "layer solver (hpa, dads, ilp)")
    program = cached_program(graph)
    cuts = cut_points(graph)
    segments: list[Segment] = []
    run: list[int] = []  # cut points closing the tileable intervals of the current run
    run_start = None
    for a, b in itertools.pairwise(cuts):
        try:
            spatial_range(graph, graph.nodes[a + 1].id, graph.nodes[b].id, program)
            ok = True
        except PlanError:
            ok = False
        if ok:
            if run_start is None:
                run_start = a + 1
            run.append(b)
        elif run_start is not None:
            segments.append(Segment(run_start, run[-1], tuple(run)))
            run, run_start = [], None
    if run_start is not None:
        segments.append(Segment(run_start, run[-1], tuple(run)))
    return tuple(segments)


def first_segment(graph: Graph, solver: str) -> Segment:
    """The model's first tileable segment, or a clear refusal naming `solver`."""
    segments = tileable_segments(graph)
    if not segments:
        raise UserInputError(f"{solver}: no range of {graph.name!r} can be tiled (it has no run of convolutions, "
                             "pooling and activations between single feature maps); use a layer solver (hpa, "
                             "dads, ilp)")
    return segments[0]


def range_input(graph: Graph, start: int) -> str:
    """The value a range starting at position `start` reads: the model input, or the node before it."""
    return graph.inputs[0].name if start == 0 else graph.nodes[start - 1].id


def range_ends(graph: Graph, segment: Segment, start: int) -> tuple[int, ...]:
    """The cut points of `segment` after `start` where the map has just shrunk, and the segment's end."""
    ends = []
    previous = _map_area(graph, start - 1)
    for cut in segment.cuts:
        if cut < start:
            continue
        area = _map_area(graph, cut)
        if area is not None and previous is not None and area < previous:
            ends.append(cut)
        previous = area if area is not None else previous
    if segment.stop not in ends:
        ends.append(segment.stop)
    return tuple(ends)


def _map_area(graph: Graph, position: int) -> int | None:
    spec = graph.inputs[0].spec if position < 0 else (graph.nodes[position].outputs or (None,))[0]
    shape = spec.shape if spec is not None else None
    return shape[2] * shape[3] if shape is not None and len(shape) == 4 else None


def tiled_plan(problem: Problem, base: Mapping[str, str], start: int, stop: int, devices: Sequence[str],
               grid: tuple[int, int], gather: str, mode: Mode = "fused", after: str | None = None,
               row_sizes: tuple[int, ...] | None = None, solver: str = "placement") -> Plan:
    """`base` (node -> device) with nodes start..stop tiled on `devices` (row-major over `grid`) and
    stitched on `gather`; the nodes after `stop` move to `after` when it is given. One tile is no
    tiling: the range then simply runs on its device."""
    graph = problem.graph
    placement = dict(base)
    if after is not None:
        for node in graph.nodes[stop + 1:]:
            placement[node.id] = after
    single = len(set(devices)) == 1 and grid == (1, 1)
    for node in graph.nodes[start:stop + 1]:
        placement[node.id] = devices[0] if single else gather
    if single:
        return Plan(graph, placement, solver)
    tiling = Tiling(graph.nodes[start].id, graph.nodes[stop].id, tuple(devices), gather, grid[0], grid[1], mode,
                    row_sizes)
    return Plan(graph, placement, solver, tilings=(tiling,))


def square_grid(k: int) -> tuple[int, int]:
    """The most square grid of exactly k tiles (rows >= columns)."""
    cols = max(c for c in range(1, int(k ** 0.5) + 1) if k % c == 0)
    return k // cols, cols


def fits(graph: Graph, stop: int, grid: tuple[int, int]) -> bool:
    """Whether node `stop`'s output map has at least one position per tile row and column."""
    spec = (graph.nodes[stop].outputs or (None,))[0]
    shape = spec.shape if spec is not None else None
    return shape is not None and len(shape) == 4 and grid[0] <= shape[2] and grid[1] <= shape[3]


def round_robin(devices: Sequence[str], tiles: int) -> tuple[str, ...]:
    """Tile i on devices[i mod k]: every device gets a tile before any gets a second."""
    return tuple(devices[i % len(devices)] for i in range(tiles))


def earliest_finish(problem: Problem, start: int, stop: int, devices: Sequence[str], tiles: int) -> tuple[str, ...]:
    """Tiles handed out in order, each to the device that would finish it first (a tile taking its
    share of the range's time there): the assignment DeepThings' work stealing tends to, made static."""
    share = {d: range_time_s(problem, start, stop, d) / tiles for d in devices}
    load = dict.fromkeys(devices, 0.0)
    out = []
    for _ in range(tiles):
        device = min(devices, key=lambda d: load[d] + share[d])
        load[device] += share[device]
        out.append(device)
    return tuple(out)


def reachable_tile_devices(problem: Problem, scatter: str, gather: str) -> tuple[str, ...]:
    """Devices that links join to both the scatter and the gather device (or that are one of them)."""
    cluster = problem.cluster
    return tuple(d for d in cluster.device_names
                 if (d == scatter or cluster.link(scatter, d) is not None)
                 and (d == gather or cluster.link(d, gather) is not None))


def range_time_s(problem: Problem, start: int, stop: int, device: str) -> float:
    times = problem.node_time_s[device]
    return sum(times[n.id] for n in problem.graph.nodes[start:stop + 1])

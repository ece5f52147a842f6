"""A plan with tiled stages, lowered on the client to an ordinary plan over an expanded program.

Workers know nothing of tiles. For each tiled stage (coinfer.plan_tiling) the client rewrites the
range's part of the program into aten calls (coinfer.runtime.packaging.tile_calls) that compute it
tile by tile, exactly as `coinfer.tiling.reference` does, and gives every piece a node of an
expanded graph placed on the device that runs it. Fused tiles (here):

* `LAST#crop{i}` on the scatter device: `aten.slice` of the range's input to tile i's input region
  (`TileBounds.input_region`): a view, so only the crop's bytes go on the wire;
* `LAST#tile{i}` on tile i's device: the range's ops on the crop, each reading its own crop of every
  value it reads (`aten.slice`), padded by the tile only at the true borders of the map
  (`aten.constant_pad_nd`: zeros, or -inf before a max pool) and run with its own padding zeroed
  and ceil mode off; an in-place op writes a clone;
* `LAST` on the gather device (the range's last node keeps its id, so the rest of the graph reads
  it unchanged): `aten.cat` of each tile row along the width, then of the rows along the height,
  into the value the range's last op made.

Halo-exchange tiles (coinfer.runtime.packaging.halo_program) become one node per op and tile and
one per halo. Each crop, tile, halo and the stitch is its own stage (`Plan.stage_starts`), and
fused tiles on the scatter device come last, so a device sends its crops before computing its own
tile, sends each result as soon as it is made, and computes its tiles before it waits for the
others'. Under emulation each tile node is held to its predicted compute time (its share of the
range's node times, as coinfer.cost.tiled_stage prices it); crops, halos and the stitch take no
predicted time. Every call is an aten operator a worker resolves against `torch.ops.aten`, so the
worker's checks are the ordinary ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coinfer.cost.tiled_plan import scatter_device
from coinfer.cost.tiled_stage import tiled_stage_cost
from coinfer.graph import Graph, Node
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.packaging.halo_program import lower_halo
from coinfer.runtime.packaging.tile_calls import Context, Piece, context, emit_item, emit_op, refuse_empty
from coinfer.runtime.packaging.torch_program import TorchProgram
from coinfer.runtime.program import ProgramIndex
from coinfer.runtime.stealing import POOLED_TILE
from coinfer.tiling.bounds import tile_bounds
from coinfer.tiling.program_ops import cached_program, cached_spatial_range


@dataclass(frozen=True)
class LoweredPlan:
    """The ordinary plan, problem and program a tiled plan runs as (the original's graph expanded)."""

    plan: Plan
    problem: Problem
    program: TorchProgram
    sections: tuple[frozenset[str], ...]  # per tiled stage, the expanded nodes it became (its stitch included)


def lower_tilings(plan: Plan, problem: Problem, program: TorchProgram, steal: bool = False) -> LoweredPlan:
    """`plan`'s tiled stages rewritten as nodes of crops, tiles, halos and stitches (module docstring).

    With `steal`, fused tiles are `POOLED_TILE` nodes: any device of their stage may compute them,
    as the scatter device hands them out at run time (coinfer.runtime.stealing); halo tiles, which
    exchange with their neighbours at every op, stay where the plan put them."""
    graph = problem.graph
    fx = cached_program(graph)
    fx_nodes = {n.name: n for n in fx.graph.nodes}
    placeholders = {p: name for p, name in zip(fx.graph_signature.user_inputs, program.index.graph_inputs,
                                               strict=False)}
    nodes: list[Node] = list(graph.nodes)
    ops = list(program.index.ops)
    specs, calls, reads = dict(program.index.specs), dict(program.calls), dict(program.reads)
    placement, starts = dict(plan.placement), set(plan.stage_starts)
    times = {d: dict(t) for d, t in problem.node_time_s.items()}
    sections = []
    for tiling in plan.tilings:
        spatial = cached_spatial_range(graph, tiling.first, tiling.last)
        ctx = context(plan, problem, tiling, spatial, fx_nodes, placeholders, program)
        scatter = scatter_device(plan, problem, tiling)
        piece = lower_halo(ctx, scatter) if tiling.mode == "halo" else _lower_fused(ctx, scatter, steal)
        owned = set(piece.removed_ops)
        at = next(i for i, op in enumerate(ops) if op.name in owned)
        ops = [*ops[:at], *piece.ops, *(op for op in ops[at:] if op.name not in owned)]
        for name in owned:
            calls.pop(name, None)
            reads.pop(name, None)
        calls.update(piece.calls)
        reads.update(piece.reads)
        specs.update(piece.specs)
        range_ids = {n.id for n in ctx.range_nodes}
        at = next(i for i, n in enumerate(nodes) if n.id in range_ids)
        nodes = [*nodes[:at], *piece.nodes, *(n for n in nodes[at:] if n.id not in range_ids)]
        for node_id in range_ids:
            placement.pop(node_id, None)
            for device_times in times.values():
                device_times.pop(node_id, None)
        placement.update(piece.placement)
        starts.update(piece.starts)
        sections.append(frozenset(n.id for n in piece.nodes))
        stop = graph.index[tiling.last]
        if stop + 1 < len(graph.nodes):  # the stitch is a stage of its own: the sections' end
            starts.add(graph.nodes[stop + 1].id)
        for device, device_times in times.items():
            device_times.update(piece.times[device])
    expanded = Graph(graph.name, graph.inputs, tuple(nodes), graph.outputs, graph.granularity, graph.source)
    index = ProgramIndex(tuple(ops), specs, program.index.graph_inputs, program.index.outputs)
    lowered = Plan(expanded, placement, plan.solver, None, plan.codecs, dict(plan.standbys),
                   stage_starts=frozenset(starts))
    return LoweredPlan(lowered, replace(problem, graph=expanded, node_time_s=times),
                       TorchProgram(index, calls, reads, program.tensors), tuple(sections))


def _lower_fused(ctx: Context, scatter: str, steal: bool) -> Piece:
    tiling, spatial, problem = ctx.tiling, ctx.spatial, ctx.problem
    grid = tiling.grid(*spatial.output_size)
    regions = grid.tiles()
    bounds = [tile_bounds(spatial, r) for r in regions]
    priced = tiled_stage_cost(ctx.graph, spatial, grid, tiling.devices, problem.node_time_s, problem.cluster,
                              scatter, tiling.gather)
    piece = Piece(tuple(op.name for op in spatial.ops), tuple(problem.node_time_s))
    last = ctx.last
    crop_ids = [f"{last.id}#crop{i}" for i in range(len(regions))]
    tile_ids = [f"{last.id}#tile{i}" for i in range(len(regions))]
    for i, b in enumerate(bounds):  # crops, on the scatter device
        crop = f"{ctx.input_value}#crop{i}"
        piece.add_slice(crop, ctx.input_value, b.input_region, crop_ids[i])
        piece.specs[crop] = ctx.spec(spatial.input, b.input_region)
        piece.add_node(Node(crop_ids[i], (ctx.input_node,), 0.0, piece.specs[crop].size_bytes, op="tile-crop",
                            outputs=(piece.specs[crop],)), scatter, {})
    whole_s = {d: ctx.range_time_s(d) for d in problem.node_time_s}
    whole_positions = sum(spatial.sizes[op.name][0] * spatial.sizes[op.name][1] for op in spatial.ops)
    weighed: set[str] = set()  # devices already charged the range's weights (once, however many tiles)
    # tiles on other devices first, those on the scatter device last: its crops leave before it computes
    for i in sorted(range(len(regions)), key=lambda i: tiling.devices[i] == scatter):
        device, b = tiling.devices[i], bounds[i]
        held = {spatial.input: (f"{ctx.input_value}#crop{i}", b.input_region)}  # value -> (tile value, region)
        for op in spatial.ops:
            op_bounds, mine = b.ops[op.name], f"{op.name}#t{i}"
            if op.kind == "item":
                producer, region = held[op.inputs[0]]
                emit_item(piece, ctx, op, producer, mine, tile_ids[i], region)
                held[op.name] = (mine, region)
                continue
            refuse_empty(ctx, i, op, op_bounds)
            crops = {}
            for k, v in enumerate(op.inputs):
                value, region = held[v]
                if region != op_bounds.reads:
                    value_crop = f"{mine}#in{k}"
                    piece.add_slice(value_crop, value, op_bounds.reads.relative_to(region), tile_ids[i])
                    value = value_crop
                crops[v] = value
            emit_op(piece, ctx, op, op_bounds, crops, mine, tile_ids[i])
            held[op.name] = (mine, op_bounds.output)
        share = priced.tiles[i].compute_s / whole_s[device] if whole_s[device] > 0 else 0.0
        out_spec = piece.specs[held[spatial.output][0]]
        piece.add_node(Node(tile_ids[i], (crop_ids[i],), sum(n.flops for n in ctx.range_nodes)
                            * b.computed_positions / whole_positions, out_spec.size_bytes,
                            0 if device in weighed else sum(n.param_bytes for n in ctx.range_nodes),
                            op=POOLED_TILE if steal else "tile",
                            outputs=(out_spec,), module=last.module), device, {d: whole_s[d] * share for d in whole_s})
        weighed.add(device)
    # the stitch, on the gather device, under the last node's own id and its last op's value name
    rows, cols = grid.shape
    piece.add_grid_cat(spatial.output, [[f"{spatial.output}#t{r * cols + c}" for c in range(cols)]
                                        for r in range(rows)], last.id)
    piece.specs[spatial.output] = ctx.program.index.specs[spatial.output]
    piece.add_node(Node(last.id, tuple(tile_ids), 0.0, last.output_bytes, op="tile-stitch", outputs=last.outputs,
                        module=last.module), tiling.gather, {})
    return piece

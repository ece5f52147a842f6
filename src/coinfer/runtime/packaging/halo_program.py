"""A halo-exchange tiled stage (CoEdge) lowered to nodes: one per op and tile, one per halo.

As `coinfer.tiling.reference.run_halo_exchange` computes it, from `coinfer.tiling.halo.halo_bounds`:

* `LAST#crop{t}` on the scatter device: the range input's box tile t reads (its own part and the
  input's halo: one message, as the cost model prices it);
* `OP#tile{t}` on tile t's device, in the range's op order: the op's owned part of its output, from
  the region it reads of each input put together (`aten.cat` along the ownership grid) from the
  tile's own part and the halos it received, padded only at the true borders;
* `VALUE#halo{s}to{t}` on tile s's device, just before the first op that reads it: the box of its
  owned part of VALUE that tile t reads (`aten.slice`), sent to t's device (no message when both
  tiles share a device);
* `LAST` on the gather device: the owned parts of the range's output stitched.

So each device computes only its owned positions (redundancy 1) and waits for its neighbours' halos
op by op, the layer-synchronous schedule `coinfer.cost.tiled_stage` prices.
"""

from __future__ import annotations

from coinfer.errors import PlanError
from coinfer.graph import Node
from coinfer.runtime.packaging.tile_calls import Context, Piece, emit_item, emit_op, refuse_empty
from coinfer.tiling.geometry import Region
from coinfer.tiling.halo import HaloBounds, halo_bounds, intersection


def lower_halo(ctx: Context, scatter: str) -> Piece:
    tiling, spatial, problem = ctx.tiling, ctx.spatial, ctx.problem
    grid = tiling.grid(*spatial.output_size)
    halo = halo_bounds(spatial, grid)
    tiles = range(halo.tile_count)
    piece = Piece(tuple(op.name for op in spatial.ops), tuple(problem.node_time_s))
    last = ctx.last
    # (value, tile) -> (the tile's value name, the region it holds, the node that made it)
    held: dict[tuple[str, int], tuple[str, Region, str]] = {}
    for t in tiles:
        region = halo.held[spatial.input][t]
        if region.area == 0:
            raise PlanError(f"tiled stage {tiling.first}..{tiling.last}: tile {t} reads nothing of the range's input; "
                            "use fewer tiles on this range")
        crop, node = f"{ctx.input_value}#crop{t}", f"{last.id}#crop{t}"
        piece.add_slice(crop, ctx.input_value, region, node)
        piece.specs[crop] = ctx.spec(spatial.input, region)
        piece.add_node(Node(node, (ctx.input_node,), 0.0, piece.specs[crop].size_bytes, op="tile-crop",
                            outputs=(piece.specs[crop],)), scatter, {})
        held[(spatial.input, t)] = (crop, region, node)
    halos: dict[tuple[str, int, int], tuple[str, Region, str]] = {}
    ops_per_node = {n.id: sum(1 for op in spatial.ops if op.owner == n.id) for n in ctx.range_nodes}
    weighed: set[tuple[str, str]] = set()  # (node, device) pairs already charged the node's weights
    for op in spatial.ops:
        for h in halo.halos:  # the halos this op is the first to read, cut from their owners' parts
            if h.reader != op.name or h.value == spatial.input:
                continue
            source_value, source_region, source_node = held[(h.value, h.source)]
            name = f"{h.value}#halo{h.source}to{h.target}"
            piece.add_slice(name, source_value, h.region.relative_to(source_region), name)
            piece.specs[name] = ctx.spec(h.value, h.region)
            piece.add_node(Node(name, (source_node,), 0.0, piece.specs[name].size_bytes, op="tile-halo",
                                outputs=(piece.specs[name],)), tiling.devices[h.source], {})
            halos[(h.value, h.source, h.target)] = (name, h.region, name)
        whole = op.output_size[0] * op.output_size[1]
        owner = next(n for n in ctx.range_nodes if n.id == op.owner)
        for t in tiles:
            bounds = halo.ops[op.name][t]
            mine, node = f"{op.name}#t{t}", f"{op.name}#tile{t}"
            device = tiling.devices[t]
            if op.kind == "item":
                if (op.inputs[0], t) not in held:
                    continue
                producer, region, producer_node = held[(op.inputs[0], t)]
                emit_item(piece, ctx, op, producer, mine, node, region)
                inputs: tuple[str, ...] = (producer_node,)
                region_out = region
            else:
                if bounds.output.area == 0:  # a part thinner than the grid: this tile owns none of it
                    continue
                refuse_empty(ctx, t, op, bounds)
                crops, made_by = {}, []
                for k, v in enumerate(op.inputs):
                    crops[v], sources = _assemble(piece, ctx, halo, held, halos, v, t, bounds.reads, f"{mine}#in{k}",
                                                  node)
                    made_by += sources
                emit_op(piece, ctx, op, bounds, crops, mine, node)
                inputs, region_out = tuple(dict.fromkeys(made_by)), bounds.output
            share = region_out.area / whole / ops_per_node[op.owner] if whole else 0.0
            first_here = (op.owner, device) not in weighed
            weighed.add((op.owner, device))
            out_spec = piece.specs.get(mine)
            piece.add_node(Node(node, inputs, owner.flops * share, out_spec.size_bytes if out_spec else 0,
                                owner.param_bytes if first_here else 0, op="tile-op", module=owner.module,
                                outputs=(out_spec,) if out_spec else ()), device,
                           {d: problem.node_time_s[d][owner.id] * share for d in problem.node_time_s})
            held[(op.name, t)] = (mine, region_out, node)
    rows, cols = grid.shape
    parts = [[held[(spatial.output, r * cols + c)][0] for c in range(cols)] for r in range(rows)]
    piece.add_grid_cat(spatial.output, parts, last.id)
    piece.specs[spatial.output] = ctx.program.index.specs[spatial.output]
    piece.add_node(Node(last.id, tuple(held[(spatial.output, t)][2] for t in tiles), 0.0, last.output_bytes,
                        op="tile-stitch", outputs=last.outputs, module=last.module), tiling.gather, {})
    return piece


def _assemble(piece: Piece, ctx: Context, halo: HaloBounds, held: dict[tuple[str, int], tuple[str, Region, str]],
              halos: dict[tuple[str, int, int], tuple[str, Region, str]], value: str, tile: int, region: Region,
              name: str, owner: str) -> tuple[str, list[str]]:
    """`region` of `value` for `tile` as one of its values, and the nodes whose values it reads: a slice
    of the crop (the range input), or the tile's own part and its halos cut to the region and
    joined along the ownership grid."""
    if value == ctx.spatial.input:
        crop, crop_region, node = held[(value, tile)]
        if crop_region == region:
            return crop, [node]
        piece.add_slice(name, crop, region.relative_to(crop_region), owner)
        return name, [node]
    sources: list[tuple[Region, str, Region, str]] = []  # (piece, source value, its region, its node)
    for source, part in enumerate(halo.ownership[value].parts()):
        cut = intersection(region, part)
        if cut.area == 0:
            continue
        if source == tile:
            sources.append((cut, *held[(value, tile)]))
        else:
            sources.append((cut, *halos[(value, source, tile)]))
    if sum(cut.area for cut, *_ in sources) != region.area:
        raise PlanError(f"tile {tile} reads {region} of {value!r}, which its part and halos do not cover (a bug in "
                        "coinfer.runtime.packaging.halo_program)")
    if len(sources) == 1 and sources[0][2] == region:
        return sources[0][1], [sources[0][3]]
    rows: dict[int, list[str]] = {}
    for k, (cut, source_value, source_region, _) in enumerate(sorted(sources, key=lambda s: (s[0].rows.start,
                                                                                               s[0].cols.start))):
        part_name = f"{name}#part{k}"
        piece.add_slice(part_name, source_value, cut.relative_to(source_region), owner)
        rows.setdefault(cut.rows.start, []).append(part_name)
    if len(sources) == 1:
        return f"{name}#part0", [sources[0][3]]
    piece.add_grid_cat(name, list(rows.values()), owner)
    return name, [s[3] for s in sources]

"""A plan with tiled stages, lowered on the client to an ordinary plan over an expanded program.

Workers know nothing of tiles. For each tiled stage (coinfer.plan_tiling) the client rewrites the
range's part of the program into aten calls that compute it tile by tile, exactly as
`coinfer.tiling.reference.run_tile` does, and gives every piece a node of an expanded graph:

* `LAST#crop{i}` on the scatter device: `aten.slice` of the range's input to tile i's input region
  (`TileBounds.input_region`): a view, so only the crop's bytes go on the wire;
* `LAST#tile{i}` on tile i's device: the range's ops on the crop, each reading its own crop of every
  value it reads (`aten.slice`), padded by the tile only at the true borders of the map
  (`aten.constant_pad_nd`: zeros, or -inf before a max pool) and run with its own padding zeroed
  and ceil mode off; an in-place op on a shared or partly read value writes a clone;
* `LAST` on the gather device (the range's last node keeps its id, so the rest of the graph reads
  it unchanged): `aten.cat` of each tile row along the width, then of the rows along the height,
  into the value the range's last op made.

The crops, each tile and the stitch are separate stages (`Plan.stage_starts`), and the tiles on
the scatter device come last, so a device sends its crops before computing its own tile, sends
each tile as soon as it is done, and computes its tiles before it waits for the others'. Each tile node is held, under emulation,
to the tile's predicted compute time (coinfer.cost.tiled_stage); crops and the stitch take no
predicted time. Every call is an aten operator a worker resolves against `torch.ops.aten`, so the
worker's checks are the ordinary ones. Halo-exchange tiles are priced but not run here yet: such a
plan is refused before anything is deployed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from coinfer.cost.tiled_plan import scatter_device
from coinfer.cost.tiled_stage import tiled_stage_cost
from coinfer.errors import PlanError
from coinfer.graph import Graph, Node, TensorSpec
from coinfer.plan import Plan
from coinfer.plan_tiling import Tiling
from coinfer.problem import Problem
from coinfer.runtime.packaging.torch_program import TorchProgram
from coinfer.runtime.program import ProgramIndex, ProgramOp
from coinfer.tiling.bounds import SpatialRange, TileBounds, tile_bounds
from coinfer.tiling.program_ops import (
    CONVOLUTIONS,
    MAX_POOLS,
    bound_args,
    cached_program,
    cached_spatial_range,
    written_args,
)

SLICE, PAD, CAT, CLONE = "aten.slice.Tensor", "aten.constant_pad_nd.default", "aten.cat.default", "aten.clone.default"


@dataclass(frozen=True)
class LoweredPlan:
    """The ordinary plan, problem and program a tiled plan runs as (the original's graph expanded)."""

    plan: Plan
    problem: Problem
    program: TorchProgram


def lower_tilings(plan: Plan, problem: Problem, program: TorchProgram) -> LoweredPlan:
    """`plan`'s tiled stages rewritten as crop, tile and stitch nodes (module docstring)."""
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
    for tiling in plan.tilings:
        if tiling.mode != "fused":
            raise PlanError(f"tiled stage {tiling.first}..{tiling.last}: the runtime runs fused tiles; halo-exchange "
                            "tiles are priced by the cost model but not run yet (use mode fused to run it)")
        spatial = cached_spatial_range(graph, tiling.first, tiling.last)
        piece = _lower_one(graph, plan, problem, tiling, spatial, fx_nodes, placeholders, program)
        owned = set(piece.removed_ops)
        at = next(i for i, op in enumerate(ops) if op.name in owned)
        ops = [*ops[:at], *piece.ops, *(op for op in ops[at:] if op.name not in owned)]
        for name in owned:
            calls.pop(name, None)
            reads.pop(name, None)
        calls.update(piece.calls)
        reads.update(piece.reads)
        specs.update(piece.specs)
        start, stop = graph.index[tiling.first], graph.index[tiling.last]
        range_ids = {n.id for n in graph.nodes[start:stop + 1]}
        at = next(i for i, n in enumerate(nodes) if n.id in range_ids)
        nodes = [*nodes[:at], *piece.nodes, *(n for n in nodes[at:] if n.id not in range_ids)]
        for node_id in range_ids:
            placement.pop(node_id, None)
            for device_times in times.values():
                device_times.pop(node_id, None)
        placement.update(piece.placement)
        starts.update(piece.starts)
        for device, device_times in times.items():
            device_times.update(piece.times[device])
    expanded = Graph(graph.name, graph.inputs, tuple(nodes), graph.outputs, graph.granularity, graph.source)
    index = ProgramIndex(tuple(ops), specs, program.index.graph_inputs, program.index.outputs)
    lowered = Plan(expanded, placement, plan.solver, None, plan.codecs, dict(plan.standbys),
                   stage_starts=frozenset(starts))
    return LoweredPlan(lowered, replace(problem, graph=expanded, node_time_s=times),
                       TorchProgram(index, calls, reads, program.tensors))


@dataclass
class _Piece:
    """What one tiled stage becomes: nodes, their placement and times, ops, calls, specs."""

    removed_ops: tuple[str, ...]
    nodes: list[Node]
    placement: dict[str, str]
    starts: set[str]
    times: dict[str, dict[str, float]]
    ops: list[ProgramOp]
    calls: dict[str, dict[str, Any]]
    reads: dict[str, tuple[str, ...]]
    specs: dict[str, TensorSpec]


def _lower_one(graph: Graph, plan: Plan, problem: Problem, tiling: Tiling, spatial: SpatialRange,
               fx_nodes: Mapping[str, Any], placeholders: Mapping[str, str], program: TorchProgram) -> _Piece:
    height, width = spatial.output_size
    grid = tiling.grid(height, width)
    regions = grid.tiles()
    bounds = [tile_bounds(spatial, r) for r in regions]
    scatter = scatter_device(plan, problem, tiling)
    priced = tiled_stage_cost(graph, spatial, grid, tiling.devices, problem.node_time_s, problem.cluster, scatter,
                              tiling.gather)
    start, stop = graph.index[tiling.first], graph.index[tiling.last]
    range_nodes = graph.nodes[start:stop + 1]
    last = graph.node(tiling.last)
    input_value = placeholders.get(spatial.input, spatial.input)
    input_node = next(v for n in range_nodes for v in n.inputs if v not in {m.id for m in range_nodes})
    batch, dtype = _batch_and_dtype(program.index.specs[input_value])
    piece = _Piece(tuple(op.name for op in spatial.ops), [], {}, set(), {d: {} for d in problem.node_time_s},
                   [], {}, {}, {})
    whole_s = {d: sum(problem.node_time_s[d][n.id] for n in range_nodes) for d in problem.node_time_s}
    range_flops = sum(n.flops for n in range_nodes)
    range_params = sum(n.param_bytes for n in range_nodes)
    channels = {spatial.input: _channels(fx_nodes[spatial.input])}
    channels.update({op.name: _channels(fx_nodes[op.name]) for op in spatial.ops})
    crop_ids = [f"{last.id}#crop{i}" for i in range(len(regions))]
    tile_ids = [f"{last.id}#tile{i}" for i in range(len(regions))]
    for i, b in enumerate(bounds):  # crops, on the scatter device
        crop = f"{input_value}#crop{i}"
        piece.ops += _slice_ops(piece, crop, input_value, b.input_region, crop_ids[i])
        piece.specs[crop] = _spec(batch, channels[spatial.input], b.input_region.height, b.input_region.width, dtype)
        piece.nodes.append(Node(crop_ids[i], (input_node,), 0.0, piece.specs[crop].size_bytes, op="tile-crop",
                                source_nodes=tuple(op.name for op in piece.ops if op.owner == crop_ids[i]),
                                outputs=(piece.specs[crop],)))
        piece.placement[crop_ids[i]] = scatter
    # tiles on other devices first, those on the scatter device last: its crops leave before it computes
    order = sorted(range(len(regions)), key=lambda i: tiling.devices[i] == scatter)
    for i in order:
        device = tiling.devices[i]
        names = _tile_ops(piece, spatial, bounds[i], i, f"{input_value}#crop{i}", tile_ids[i], fx_nodes,
                          placeholders, program, channels, batch, dtype)
        cost = priced.tiles[i]
        share = cost.compute_s / whole_s[device] if whole_s[device] > 0 else 0.0
        out_spec = piece.specs[names[spatial.output]]
        piece.nodes.append(Node(tile_ids[i], (crop_ids[i],), range_flops * b_share(bounds[i], spatial, range_nodes),
                                out_spec.size_bytes, range_params, op="tile", module=last.module,
                                source_nodes=tuple(op.name for op in piece.ops if op.owner == tile_ids[i]),
                                outputs=(out_spec,)))
        piece.placement[tile_ids[i]] = device
        for d in piece.times:
            piece.times[d][tile_ids[i]] = whole_s[d] * share
    piece.starts.update({*tile_ids, last.id})  # each tile leaves as soon as it is done
    # the stitch, on the gather device, under the last node's own id and its last op's value name
    tile_rows, tile_cols = grid.shape
    row_values = []
    for r in range(tile_rows):
        parts = [f"{spatial.output}#t{r * tile_cols + c}" for c in range(tile_cols)]
        row = f"{spatial.output}#row{r}" if tile_rows > 1 else spatial.output
        _add_op(piece, row, last.id, {"target": CAT, "args": [[{"value": p} for p in parts], 3], "kwargs": {}},
                parts)
        piece.specs[row] = _spec(batch, channels[spatial.output], regions[r * tile_cols].height, width, dtype)
        row_values.append(row)
    if tile_rows > 1:
        _add_op(piece, spatial.output, last.id,
                {"target": CAT, "args": [[{"value": v} for v in row_values], 2], "kwargs": {}}, row_values)
    piece.specs[spatial.output] = program.index.specs[spatial.output]
    piece.nodes.append(Node(last.id, tuple(tile_ids), 0.0, last.output_bytes, op="tile-stitch", module=last.module,
                            source_nodes=tuple(op.name for op in piece.ops if op.owner == last.id),
                            outputs=last.outputs))
    piece.placement[last.id] = tiling.gather
    for d in piece.times:
        piece.times[d].update({c: 0.0 for c in crop_ids})
        piece.times[d][last.id] = 0.0
    return piece


def b_share(bounds: TileBounds, spatial: SpatialRange, range_nodes: Sequence[Node]) -> float:
    """The tile's computed positions over the whole range's (its FLOPs share, overlap included)."""
    whole = sum(spatial.sizes[op.name][0] * spatial.sizes[op.name][1] for op in spatial.ops)
    return bounds.computed_positions / whole if whole else 1.0


def _tile_ops(piece: _Piece, spatial: SpatialRange, bounds: TileBounds, i: int, crop: str, owner: str,
              fx_nodes: Mapping[str, Any], placeholders: Mapping[str, str], program: TorchProgram,
              channels: Mapping[str, int], batch: int, dtype: str | None) -> dict[str, str]:
    """Append tile i's ops; returns the range value name -> the tile's value name."""
    held = {spatial.input: (crop, bounds.input_region)}  # value -> (tile value name, region it holds)
    names = {spatial.input: crop}
    readers = spatial.readers()
    for op in spatial.ops:
        n = fx_nodes[op.name]
        op_bounds = bounds.ops[op.name]
        mine = f"{op.name}#t{i}"
        call = copy.deepcopy(program.calls[op.name])
        if op.kind == "item":
            producer, region = held[op.inputs[0]]
            _add_op(piece, mine, owner, _renamed(call, {placeholders.get(v, v): names[v] for v in op.inputs}),
                    [producer], program.reads.get(op.name, ()))
            held[op.name] = (mine, region)
            if not isinstance(fx_nodes[op.name].meta.get("val"), list | tuple):
                piece.specs[mine] = _spec(batch, channels[op.name], region.height, region.width, dtype)
        else:
            if op_bounds.output.area == 0 or op_bounds.reads.area == 0:
                raise PlanError(f"tile {i} ({bounds.tile}) computes none of op {op.name!r} of node {op.owner!r} or "
                                "reads only padding; use fewer tiles on this range")
            written = {getattr(a, "name", None) for a in written_args(n)}
            local: dict[str, str] = {}
            for v in op.inputs:
                value, region = held[v]
                crop_of = value
                if region != op_bounds.reads:
                    crop_of = f"{mine}#in{len(local)}"
                    piece.ops += _slice_ops(piece, crop_of, value, op_bounds.reads.relative_to(region), owner)
                if v in written and (len(readers[v]) > 1 or v == spatial.input or crop_of != value):
                    clone = f"{mine}#copy{len(local)}"
                    _add_op(piece, clone, owner, {"target": CLONE, "args": [{"value": crop_of}], "kwargs": {}},
                            [crop_of])
                    crop_of = clone
                if op.kind == "window" and op_bounds.padding.total:
                    p = op_bounds.padding
                    fill = {"float": "-inf"} if op.label in MAX_POOLS else 0.0
                    padded = f"{mine}#pad{len(local)}"
                    _add_op(piece, padded, owner, {"target": PAD, "args": [{"value": crop_of},
                                                                            [p.left, p.right, p.top, p.bottom], fill],
                                                   "kwargs": {}}, [crop_of])
                    crop_of = padded
                local[placeholders.get(v, v)] = crop_of
            if op.kind == "window":
                call = _tile_window_call(call, n, op.label)
            _add_op(piece, mine, owner, _renamed(call, local), list(local.values()), program.reads.get(op.name, ()))
            held[op.name] = (mine, op_bounds.output)
            if not isinstance(n.meta.get("val"), list | tuple):  # a multi-output op's value is no tensor
                piece.specs[mine] = _spec(batch, channels[op.name], op_bounds.output.height,
                                          op_bounds.output.width, dtype)
        names[op.name] = mine
    return names


def _tile_window_call(call: dict[str, Any], n: Any, label: str) -> dict[str, Any]:
    """The call with its own padding zeroed (the tile pads itself) and ceil mode off."""
    schema = [a.name for a in n.target._schema.arguments]
    changes: dict[str, Any] = {"padding": "valid" if isinstance(bound_args(n).get("padding"), str) else [0, 0]}
    if label not in CONVOLUTIONS:
        changes["ceil_mode"] = False
    for name, value in changes.items():
        position = schema.index(name)
        if position < len(call["args"]):
            call["args"][position] = value
        else:
            call["kwargs"][name] = value
    return call


def _renamed(tree: Any, names: Mapping[str, str]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"value"}:
            return {"value": names.get(tree["value"], tree["value"])}
        return {k: _renamed(v, names) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_renamed(v, names) for v in tree]
    return tree


def _slice_ops(piece: _Piece, name: str, source: str, region: Any, owner: str) -> list[ProgramOp]:
    """`name` = source[:, :, rows, cols] as two aten.slice calls (views; no copy)."""
    rows = f"{name}#rows"
    piece.calls[rows] = {"target": SLICE, "args": [{"value": source}, 2, region.rows.start, region.rows.stop, 1],
                         "kwargs": {}}
    piece.calls[name] = {"target": SLICE, "args": [{"value": rows}, 3, region.cols.start, region.cols.stop, 1],
                         "kwargs": {}}
    piece.reads[rows] = piece.reads[name] = ()
    return [ProgramOp(rows, owner, (source,), (rows,)), ProgramOp(name, owner, (rows,), (name,))]


def _add_op(piece: _Piece, name: str, owner: str, call: dict[str, Any], inputs: Sequence[str],
            weight_reads: tuple[str, ...] = ()) -> None:
    piece.ops.append(ProgramOp(name, owner, tuple(dict.fromkeys(inputs)), (name,)))
    piece.calls[name] = call
    piece.reads[name] = weight_reads


def _channels(n: Any) -> int:
    val = n.meta.get("val")
    if isinstance(val, list | tuple):
        val = val[0]
    return int(val.shape[1])


def _batch_and_dtype(spec: TensorSpec) -> tuple[int, str | None]:
    if spec.shape is None or len(spec.shape) != 4:
        raise PlanError(f"a tiled range reads a batch of feature maps (N, C, H, W), not a tensor of shape {spec.shape}")
    return spec.shape[0], spec.dtype


def _spec(batch: int, channels: int, height: int, width: int, dtype: str | None) -> TensorSpec:
    size = {"float16": 2, "bfloat16": 2, "float64": 8}.get(dtype or "float32", 4)
    return TensorSpec(batch * channels * height * width * size, (batch, channels, height, width), dtype)

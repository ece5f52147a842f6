"""Run a node range tile by tile with torch, as the bounds say: the reference that tiling is lossless.

`range_calls` resolves the aten calls of a `SpatialRange` once (weights looked up in the exported
program). `run_whole` runs them as the program does, on the whole input map: the unpartitioned
result. `run_tile` computes one output tile from exactly its input region
(`TileBounds.input_region`, a crop of the range's input) and nothing else:

* every value is computed on the region its consumers need (`TileBounds.values`) and each consumer
  reads its own crop of it (a residual add and a strided downsample read different boxes);
* a window op reads its crop, pads it itself where the crop meets the true border of the map, and
  runs with its own padding set to zero (and ceil mode off: the padded crop is exactly as long as
  the windows it holds). Zeros for convolution and average pooling (count_include_pad, the only
  kind program_ops accepts with padding), -inf for max pooling, whose padding never wins a max;
* an in-place op (relu_, add_) writes a copy when its input is shared or only partly read, so a
  crop another op still reads stays intact.

`run_tiled` computes every tile of a grid and stitches them into one map, which must equal
`run_whole`'s output. Tests use this; the runtime's tiled stages are to execute the same bounds.

`run_halo_exchange` is the halo-exchange mode (`coinfer.tiling.halo`): op by op over the range,
every tile computes only its owned part of the op's output, from its own part of each input and
the halos cut from the other tiles' owned results (never from the whole map), padding only at
the true borders; the owned parts of the output are stitched. No position is computed twice.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coinfer.capture.deps import require
from coinfer.errors import PlanError
from coinfer.tiling.bounds import OpBounds, SpatialOp, SpatialRange, TileBounds, tile_bounds
from coinfer.tiling.geometry import Region, TileGrid
from coinfer.tiling.halo import HaloBounds, halo_bounds, intersection
from coinfer.tiling.program_ops import CONVOLUTIONS, MAX_POOLS, bound_args, written_args

torch = require("torch", "running tiles")
functional = torch.nn.functional


class ValueRef:
    """A spatial value (the range input or an op's output) in a call's arguments, filled in at each run."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


@dataclass(frozen=True)
class RangeCall:
    """One call of the range: `args`/`kwargs` as the program has them (spatial values as `ValueRef`s,
    weights as tensors), `tile_args`/`tile_kwargs` the same with a window op's padding zeroed and ceil
    mode off (the tile pads itself), `written` the values it writes in place, and `example` a tensor
    (a fake or meta one will do) or tuple of them shaped like its output, for its channels and dtype.
    `range_calls` reads them from a program; tests also write them by hand."""

    op: SpatialOp
    target: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    tile_args: tuple[Any, ...]
    tile_kwargs: Mapping[str, Any]
    written: frozenset[str]
    example: Any  # the fx node's meta value (a fake tensor, or a tuple of them), for its channels and dtype


def range_calls(program: Any, spatial: SpatialRange) -> tuple[RangeCall, ...]:
    """The calls of `spatial`'s ops in `program` (an ExportedProgram), weights resolved."""
    weights = _weights(program)
    by_name = {n.name: n for n in program.graph.nodes}
    names = {spatial.input, *(op.name for op in spatial.ops)}

    def resolve(arg: Any, op: SpatialOp) -> Any:
        if hasattr(arg, "op") and hasattr(arg, "target"):  # an fx Node
            if arg.name in names:
                return ValueRef(arg.name)
            if arg.name in weights:
                return weights[arg.name]
            raise PlanError(f"op {op.name!r} of node {op.owner!r} reads {arg.name!r}, which is neither a value of "
                            "the range nor a weight of the program; read the range from the program it runs")
        if isinstance(arg, list | tuple):
            return [resolve(a, op) for a in arg]
        return arg

    calls = []
    for op in spatial.ops:
        n = by_name[op.name]
        args, kwargs = tuple(resolve(a, op) for a in n.args), {k: resolve(v, op) for k, v in n.kwargs.items()}
        tile_args, tile_kwargs = args, kwargs
        if op.kind == "window":
            padding = "valid" if isinstance(bound_args(n).get("padding"), str) else [0, 0]
            changes: dict[str, Any] = {"padding": padding}
            if op.label not in CONVOLUTIONS:
                changes["ceil_mode"] = False
            tile_args, tile_kwargs = _override(n, args, kwargs, changes)
        written = frozenset(a.name for a in written_args(n) if getattr(a, "name", None) in names)
        calls.append(RangeCall(op, n.target, args, kwargs, tile_args, tile_kwargs, written, n.meta.get("val")))
    return tuple(calls)


def run_whole(calls: Sequence[RangeCall], spatial: SpatialRange, range_input: Any) -> Any:
    """The range's output on its whole input map, each op called exactly as the program calls it."""
    values: dict[str, Any] = {spatial.input: range_input.clone()}  # in-place ops must not write the caller's
    with torch.inference_mode():
        for call in calls:
            values[call.op.name] = call.target(*_fill(call.args, values), **_fill(call.kwargs, values))
    return values[spatial.output]


def run_tile(calls: Sequence[RangeCall], spatial: SpatialRange, bounds: TileBounds, input_crop: Any) -> Any:
    """Output tile `bounds.tile` of the range, from `input_crop`: the range input's `bounds.input_region`."""
    want = (bounds.input_region.height, bounds.input_region.width)
    if input_crop.dim() != 4 or tuple(input_crop.shape[2:]) != want:
        raise PlanError(f"tile {bounds.tile} needs the input region {bounds.input_region} ({want[0]} x {want[1]}), "
                        f"not a tensor of shape {tuple(input_crop.shape)}")
    held: dict[str, tuple[Any, Region]] = {spatial.input: (input_crop, bounds.input_region)}
    readers = spatial.readers()
    last_use = {value: max((i for i, c in enumerate(calls) if value in c.op.inputs), default=-1) for value in readers}
    batch = input_crop.shape[0]
    with torch.inference_mode():
        for i, call in enumerate(calls):
            op_bounds = bounds.ops[call.op.name]
            if call.op.kind == "item":  # pick a result of a multi-output op: its region is the producer's
                producer, region = held[call.op.inputs[0]]
                held[call.op.name] = (operator.getitem(producer, 0), region)
            elif op_bounds.output.area == 0:
                held[call.op.name] = (_empty(call.example, batch, op_bounds.output), op_bounds.output)
            else:
                shared = {v for v in call.op.inputs if len(readers[v]) > 1 or v == spatial.input}
                crops = {v: _crop(held, v, op_bounds.reads, copy=v in call.written and (
                    v in shared or held[v][1] != op_bounds.reads)) for v in call.op.inputs}
                if call.op.kind == "window":
                    crops = {v: _pad(call.op, c, op_bounds) for v, c in crops.items()}
                    out = call.target(*_fill(call.tile_args, crops), **_fill(call.tile_kwargs, crops))
                else:
                    out = call.target(*_fill(call.args, crops), **_fill(call.kwargs, crops))
                held[call.op.name] = (out, op_bounds.output)
            for value in call.op.inputs:  # let a value go once its last reader has run
                if last_use[value] == i and value != spatial.output:
                    held.pop(value, None)
    out, region = held[spatial.output]
    if region != bounds.tile or tuple(out.shape[2:]) != (bounds.tile.height, bounds.tile.width):
        raise PlanError(f"tile {bounds.tile} came out as {tuple(out.shape)} over {region}; the range's bounds do not "
                        "match its ops (a bug in coinfer.tiling)")
    return out


def run_tiled(calls: Sequence[RangeCall], spatial: SpatialRange, range_input: Any, tiles: Sequence[Region]) -> Any:
    """Every tile of `tiles` computed from its own crop of `range_input`, stitched into the output map."""
    height, width = spatial.output_size
    pieces = []
    for tile in tiles:
        bounds = tile_bounds(spatial, tile)
        r = bounds.input_region
        crop = range_input[:, :, r.rows.start:r.rows.stop, r.cols.start:r.cols.stop]
        pieces.append((tile, run_tile(calls, spatial, bounds, crop)))
    return stitch(pieces, height, width)


def run_halo_exchange(calls: Sequence[RangeCall], spatial: SpatialRange, range_input: Any, grid: TileGrid,
                      halo: HaloBounds | None = None) -> Any:
    """The range's output with every tile computing only its owned parts, trading halos (module docstring)."""
    halo = halo if halo is not None else halo_bounds(spatial, grid)
    tiles = range(halo.tile_count)
    # owned[value][t]: tile t's owned part of the value, the only thing other tiles may take halos from
    owned: dict[str, list[Any]] = {spatial.input: [range_input[:, :, p.rows.start:p.rows.stop, p.cols.start:p.cols.stop]
                                                   for p in halo.ownership[spatial.input].parts()]}
    batch = range_input.shape[0]
    with torch.inference_mode():
        for call in calls:
            results = []
            for t in tiles:
                op_bounds = halo.ops[call.op.name][t]
                if call.op.kind == "item":  # an item keeps its producer's cuts: the owned part is the producer's
                    results.append(operator.getitem(owned[call.op.inputs[0]][t], 0))
                elif op_bounds.output.area == 0:
                    results.append(_empty(call.example, batch, op_bounds.output))
                else:
                    crops = {v: _gather_read(halo, owned, v, t, op_bounds.reads, copy=v in call.written)
                             for v in call.op.inputs}
                    if call.op.kind == "window":
                        crops = {v: _pad(call.op, c, op_bounds) for v, c in crops.items()}
                        results.append(call.target(*_fill(call.tile_args, crops), **_fill(call.tile_kwargs, crops)))
                    else:
                        results.append(call.target(*_fill(call.args, crops), **_fill(call.kwargs, crops)))
            owned[call.op.name] = results
    height, width = spatial.output_size
    return stitch(list(zip(halo.ownership[spatial.output].parts(), owned[spatial.output], strict=True)), height, width)


def _gather_read(halo: HaloBounds, owned: Mapping[str, Sequence[Any]], value: str, tile: int, region: Region,
                 copy: bool) -> Any:
    """`region` of `value` for `tile`, put together from its own part and the halos it received."""
    own = owned[value][tile]
    if region.area == 0:  # all padding
        return own.new_zeros((*own.shape[:2], region.height, region.width))
    pieces = [(tile, intersection(region, halo.owned(value, tile)))]
    pieces += [(h.source, intersection(region, h.region)) for h in halo.received(tile) if h.value == value]
    pieces = [(source, piece) for source, piece in pieces if piece.area]
    if sum(piece.area for _, piece in pieces) != region.area:
        raise PlanError(f"tile {tile} reads {region} of {value!r}, which its part and halos do not cover (a bug in "
                        "coinfer.tiling)")
    if len(pieces) == 1 and not copy:
        source, piece = pieces[0]
        r = piece.relative_to(halo.owned(value, source))
        return owned[value][source][:, :, r.rows.start:r.rows.stop, r.cols.start:r.cols.stop]
    out = own.new_full((*own.shape[:2], region.height, region.width), math.nan)
    for source, piece in pieces:
        r, at = piece.relative_to(halo.owned(value, source)), piece.relative_to(region)
        out[:, :, at.rows.start:at.rows.stop, at.cols.start:at.cols.stop] = (
            owned[value][source][:, :, r.rows.start:r.rows.stop, r.cols.start:r.cols.stop])
    return out


def stitch(pieces: Sequence[tuple[Region, Any]], height: int, width: int) -> Any:
    """One `height` x `width` map from (tile, tensor) pieces. Positions no piece covers stay NaN, so
    a comparison with the unpartitioned output cannot miss a gap."""
    if not pieces:
        raise PlanError("there are no tiles to stitch")
    first = pieces[0][1]
    out = torch.full((*first.shape[:2], height, width), math.nan, dtype=first.dtype)
    for tile, piece in pieces:
        out[:, :, tile.rows.start:tile.rows.stop, tile.cols.start:tile.cols.stop] = piece
    return out


# -- helpers -------------------------------------------------------------------------------------


def _crop(held: Mapping[str, tuple[Any, Region]], value: str, region: Region, copy: bool) -> Any:
    tensor, region_held = held[value]
    if region.area == 0:  # a crop that is all padding (a 1x1 conv padded by 2, at the border)
        return tensor.new_zeros((*tensor.shape[:2], region.height, region.width))
    r = region.relative_to(region_held)
    crop = tensor[:, :, r.rows.start:r.rows.stop, r.cols.start:r.cols.stop]
    return crop.clone() if copy else crop


def _pad(op: SpatialOp, crop: Any, op_bounds: OpBounds) -> Any:
    p = op_bounds.padding
    if p.total == 0:
        return crop
    fill = -math.inf if op.label in MAX_POOLS else 0.0
    return functional.pad(crop, (p.left, p.right, p.top, p.bottom), value=fill)


def _empty(example: Any, batch: int, region: Region) -> Any:
    """Zeros standing for a value no position of which this tile needs (only its shape is read)."""
    first = example[0] if isinstance(example, list | tuple) else example
    zeros = torch.zeros((batch, int(first.shape[1]), region.height, region.width), dtype=first.dtype)
    return (zeros,) if isinstance(example, list | tuple) else zeros


def _fill(tree: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(tree, ValueRef):
        return values[tree.name]
    if isinstance(tree, list | tuple):
        return [_fill(t, values) for t in tree]
    if isinstance(tree, dict):
        return {k: _fill(v, values) for k, v in tree.items()}
    return tree


def _override(n: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any],
              changes: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    names = [a.name for a in n.target._schema.arguments]
    new_args, new_kwargs = list(args), dict(kwargs)
    for name, value in changes.items():
        position = names.index(name)
        if position < len(new_args):
            new_args[position] = value
        else:
            new_kwargs[name] = value
    return tuple(new_args), new_kwargs


def _weights(program: Any) -> dict[str, Any]:
    """Placeholder (or get_attr) name -> the parameter, buffer or constant it stands for."""
    sig = program.graph_signature
    state, constants = program.state_dict, program.constants
    out: dict[str, Any] = {}
    for placeholder, key in [*sig.inputs_to_parameters.items(), *sig.inputs_to_buffers.items(),
                             *sig.inputs_to_lifted_tensor_constants.items()]:
        out[placeholder] = state[key] if key in state else constants[key]
    for n in program.graph.nodes:
        if n.op == "get_attr":
            out[n.name] = getattr(program.graph_module, str(n.target))
    return out

"""The ops of a node range as a DAG of spatial ops, and the regions one output tile needs of each.

A `SpatialRange` is what tiling needs to know of a range of consecutive nodes with one input and
one output: each op's name (the value it outputs), the coinfer node it belongs to, the spatial
values it reads, its window (conv and pooling) or none (pointwise ops, channel concatenation and
picking an item of a multi-output op keep positions), and the height and width of its input and
output maps. `coinfer.tiling.program_ops` reads one from a captured program; tests also write them
by hand. Pure Python, no torch.

`tile_bounds` walks the DAG backwards from an output region (DeepThings' fused tile partitioning,
generalised from a chain to a DAG): an op's output region is the bounding box of what its
consumers read of it (a value read by a residual add and by a strided downsample is computed once,
on the box holding both), a window op reads `geometry.window_input_need` of its input, and any
other op reads its own output region of each input. The region of the range's input is the tile's
input: everything a device needs to compute the tile with no exchange (fused mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from coinfer.errors import PlanError
from coinfer.tiling.geometry import InputNeed, Padding, Region, Window, hull_of, window_input_need, window_output_size

OpKind = Literal["window", "pointwise", "item"]
Size2d = tuple[int, int]  # (height, width) of a feature map, in positions


@dataclass(frozen=True)
class SpatialOp:
    """One op of a range. `kind` is "window" (conv, pooling: `window` is set), "pointwise" (keeps
    positions: activations, normalisation, residual add, concatenation along channels) or "item"
    (picks one result of a multi-output op such as native_batch_norm: no crop, no compute)."""

    name: str
    owner: str  # the coinfer node the op belongs to, for messages
    label: str  # the op, e.g. "aten.conv2d"
    kind: OpKind
    inputs: tuple[str, ...]  # the spatial values it reads: the range input or earlier ops' names
    input_size: Size2d
    output_size: Size2d
    window: Window | None = None

    def __post_init__(self) -> None:
        if (self.kind == "window") != (self.window is not None):
            raise PlanError(f"op {self.name!r} ({self.label}) of kind {self.kind!r} must have a window exactly when "
                            "it is a window op")
        if self.window is not None:
            expected = (window_output_size(self.window.rows, self.input_size[0]),
                        window_output_size(self.window.cols, self.input_size[1]))
            if expected != self.output_size:
                raise PlanError(f"op {self.name!r} ({self.label}) of node {self.owner!r}: its window maps "
                                f"{self.input_size} to {expected}, but the program says {self.output_size}")
        elif self.input_size != self.output_size:
            raise PlanError(f"op {self.name!r} ({self.label}) of node {self.owner!r} keeps positions, yet its input is "
                            f"{self.input_size} and its output {self.output_size}")


@dataclass(frozen=True)
class SpatialRange:
    """The spatial ops of a node range in execution order, reading `input` and producing `output`."""

    input: str
    input_size: Size2d
    ops: tuple[SpatialOp, ...]
    output: str
    sizes: Mapping[str, Size2d] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes: dict[str, Size2d] = {self.input: self.input_size}
        for op in self.ops:
            for value in op.inputs:
                if value not in sizes:
                    raise PlanError(f"op {op.name!r} of node {op.owner!r} reads {value!r}, which neither the range "
                                    "input nor an earlier op of the range makes")
                if sizes[value] != op.input_size:
                    raise PlanError(f"op {op.name!r} of node {op.owner!r} reads {value!r} of size {sizes[value]} as "
                                    f"if it were {op.input_size}")
            if op.name in sizes:
                raise PlanError(f"two values of the range are called {op.name!r}")
            sizes[op.name] = op.output_size
        if self.output not in sizes:
            raise PlanError(f"the range output {self.output!r} is made by no op of the range")
        object.__setattr__(self, "sizes", sizes)

    @property
    def output_size(self) -> Size2d:
        return self.sizes[self.output]

    def readers(self) -> Mapping[str, tuple[str, ...]]:
        """Value name -> the ops reading it, in execution order."""
        out: dict[str, list[str]] = {name: [] for name in self.sizes}
        for op in self.ops:
            for value in dict.fromkeys(op.inputs):
                out[value].append(op.name)
        return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class OpBounds:
    """What one op does for one tile: the region of its output it computes, the region of each
    input it reads (the crop), and the padding it applies itself (window ops; zero elsewhere)."""

    output: Region
    reads: Region
    padding: Padding = field(default_factory=Padding)


@dataclass(frozen=True)
class TileBounds:
    """The regions one output tile needs: `values[name]` is computed (the range input's is the tile's
    input region), `ops[name]` says what each op reads and pads."""

    tile: Region
    input_region: Region
    values: Mapping[str, Region]
    ops: Mapping[str, OpBounds]

    @property
    def computed_positions(self) -> int:
        """Output positions all ops of the range compute for this tile. Summed over the tiles and
        compared with the same sum for the whole output, it measures the overlap fused tiles recompute."""
        return sum(b.output.area for b in self.ops.values())


def tile_bounds(spatial: SpatialRange, tile: Region) -> TileBounds:
    """The regions of every value of `spatial` that computing output region `tile` needs (module docstring)."""
    height, width = spatial.output_size
    if not Region.whole(height, width).contains(tile) or tile.area == 0:
        raise PlanError(f"tile {tile} is not a non-empty part of the range's {height} x {width} output")
    needs: dict[str, list[Region]] = {spatial.output: [tile]}
    ops: dict[str, OpBounds] = {}
    values: dict[str, Region] = {}
    for op in reversed(spatial.ops):
        out = hull_of(needs.get(op.name, ()))
        # a value no later op reads (nor the range outputs) is not computed for this tile
        out = out if out.area else Region.of(0, 0, 0, 0)
        values[op.name] = out
        need = op_input_need(op, out)
        ops[op.name] = OpBounds(out, need.crop, need.padding)
        for value in op.inputs:
            needs.setdefault(value, []).append(need.crop)
    values[spatial.input] = hull_of(needs.get(spatial.input, ()))
    return TileBounds(tile, values[spatial.input], values, ops)


def op_input_need(op: SpatialOp, out: Region) -> InputNeed:
    """What `op` reads of each of its inputs, and pads itself, to compute output region `out`."""
    if op.window is None or out.area == 0:
        return InputNeed(out, Padding())
    return window_input_need(op.window, out, op.input_size[0], op.input_size[1])


def all_tile_bounds(spatial: SpatialRange, tiles: Sequence[Region]) -> tuple[TileBounds, ...]:
    """`tile_bounds` of each tile, in order."""
    return tuple(tile_bounds(spatial, t) for t in tiles)

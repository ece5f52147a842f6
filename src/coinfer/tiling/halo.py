"""Halo-exchange tile bounds (CoEdge, Zeng et al., ToN 2021): each tile owns a part of every map and trades halos.

Fused tiles (`bounds.tile_bounds`) recompute the overlap of neighbouring tiles' receptive fields.
In halo-exchange mode nothing is computed twice: every value of the range (the range input and
every op's output) is split among the tiles of one R x C grid, each tile computes only the part of
each op's output it *owns*, and before an op runs a tile receives from the owners of the
neighbouring parts the positions its windows read beyond its own part (the *halo*). More messages
(one per value and pair of tiles that trade), no redundant compute: redundancy exactly 1.

Ownership rule. The range output is split by the grid's cuts. Walking the range backwards, a
value's cuts are mapped from those of the last op (in execution order) that reads it:

* a pointwise op (and an item of a multi-output op) keeps positions, so its input has its cuts;
* a window op of stride s, padding-before p and extent e = d (f - 1) + 1 maps the cut c between
  its output positions c - 1 and c to the input cut `clip(c s - p + ceil((e - s) / 2), 0, H_in)`:
  the midpoint of the two windows' centres, rounded up. A 3x3 'same' convolution keeps cuts, a
  stride-2 pool or convolution doubles them, so owned parts stay centred under the output rows
  they feed and a tile's halo is split about evenly between the neighbours on either side (a cut
  at `c s - p`, the first row a window reads, would make halos one-sided and drift every cut up by
  p rows per layer: 90 of VGG16's 224 rows).

Cuts are non-decreasing from 0 to the map's size, so the owned parts of every map are a grid
that covers it exactly once; a part may be empty where a map is thinner than the grid at that
depth. A value no op reads (and that is not the output) is split in proportion to the output.

Halos. An op's output part is computed from `bounds.op_input_need` of it: a crop of each input
and the padding the tile applies itself at the true borders only (as in fused mode). What a tile
holds of a value is the bounding box of what its readers read (`HaloBounds.held`); the box of
what they read of another tile's part is a `Halo` that tile sends, once, before the first reader
that needs it. With a halo wider than a neighbour's part (a dilated window over a thin part), a halo
can come from a tile two parts away: "neighbour" means whoever owns the positions. The range
input's halos are listed like the others; the pricing folds them into the scatter (the scatter
device holds the whole input map). Pure Python, positions only: bytes need the channels, which
`coinfer.cost.tiled_stage` reads from the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from coinfer.errors import PlanError
from coinfer.tiling.bounds import OpBounds, SpatialOp, SpatialRange, TileBounds, op_input_need
from coinfer.tiling.geometry import Region, Span, TileGrid, Window1d, hull_of

EMPTY = Region.of(0, 0, 0, 0)


@dataclass(frozen=True)
class Ownership:
    """How the tiles split one value's map: tile (i, j) owns rows `[row_cuts[i], row_cuts[i+1])` x
    columns `[col_cuts[j], col_cuts[j+1])`. Cuts run non-decreasing from 0 to the map's height
    (width), so the parts cover the map exactly once; parts may be empty."""

    row_cuts: tuple[int, ...]
    col_cuts: tuple[int, ...]

    def __post_init__(self) -> None:
        for cuts in (self.row_cuts, self.col_cuts):
            if len(cuts) < 2 or cuts[0] != 0 or any(b < a for a, b in pairwise(cuts)):
                raise PlanError(f"ownership cuts must run non-decreasing from 0, not {list(cuts)} (a bug in "
                                "coinfer.tiling)")

    def parts(self) -> tuple[Region, ...]:
        """Each tile's owned part, row-major like `TileGrid.tiles`."""
        return tuple(Region(Span(r0, r1), Span(c0, c1))
                     for r0, r1 in pairwise(self.row_cuts) for c0, c1 in pairwise(self.col_cuts))


@dataclass(frozen=True)
class Halo:
    """Positions `region` of `value`, owned by tile `source`, that tile `target` reads: one message
    (unless the two tiles share a device), needed before the target runs op `reader`."""

    value: str
    source: int
    target: int
    region: Region
    reader: str


@dataclass(frozen=True)
class HaloBounds:
    """The halo-exchange plan of a range over a grid (module docstring). Tiles are indexed row-major.

    `ownership[value]` splits each value; `ops[op][t]` is what tile t does for op: the owned output
    part it computes, the crop of each input it reads and the border padding it applies;
    `held[value][t]` is the box of the value tile t's readers read (its own part of it plus halos);
    `halos` every halo, in execution order of the value that carries it.
    """

    grid: TileGrid
    ownership: Mapping[str, Ownership]
    ops: Mapping[str, tuple[OpBounds, ...]]
    held: Mapping[str, tuple[Region, ...]]
    halos: tuple[Halo, ...]

    @property
    def tile_count(self) -> int:
        rows, cols = self.grid.shape
        return rows * cols

    def owned(self, value: str, tile: int) -> Region:
        return self.ownership[value].parts()[tile]

    def received(self, tile: int) -> tuple[Halo, ...]:
        return tuple(h for h in self.halos if h.target == tile)

    def tile_ops(self, tile: int) -> dict[str, OpBounds]:
        """Op -> what tile `tile` does for it (the shape of `TileBounds.ops`)."""
        return {name: per_tile[tile] for name, per_tile in self.ops.items()}

    def computed_positions(self, tile: int) -> int:
        return sum(per_tile[tile].output.area for per_tile in self.ops.values())

    @property
    def redundancy(self) -> float:
        """Positions the tiles compute over those of the whole range: 1 when owned parts partition every map."""
        computed = sum(self.computed_positions(t) for t in range(self.tile_count))
        whole = sum(_whole(self.ownership[name]).area for name in self.ops)
        return computed / whole if whole else 1.0


def halo_bounds(spatial: SpatialRange, grid: TileGrid) -> HaloBounds:
    """Ownership, per-tile op bounds and halos of `spatial` split by `grid` of its output (module docstring)."""
    height, width = spatial.output_size
    if (grid.height, grid.width) != (height, width):
        raise PlanError(f"a {grid.height} x {grid.width} tile grid cannot split the range's {height} x {width} "
                        "output; make the grid from the range's output_size")
    ownership = _ownership(spatial, grid)
    tiles = range(len(grid.tiles()))
    ops: dict[str, tuple[OpBounds, ...]] = {}
    reads: dict[str, list[list[tuple[str, Region]]]] = {v: [[] for _ in tiles] for v in spatial.sizes}
    for op in spatial.ops:
        per_tile = []
        for t, part in enumerate(ownership[op.name].parts()):
            if part.area == 0:
                per_tile.append(OpBounds(EMPTY, EMPTY))
                continue
            need = op_input_need(op, part)
            per_tile.append(OpBounds(part, need.crop, need.padding))
            for value in op.inputs:
                reads[value][t].append((op.name, need.crop))
        ops[op.name] = tuple(per_tile)
    held = {v: tuple(hull_of(r for _, r in reads[v][t]) for t in tiles) for v in spatial.sizes}
    halos = []
    for value in (spatial.input, *(op.name for op in spatial.ops)):
        parts = ownership[value].parts()
        for target in tiles:
            for source, part in enumerate(parts):
                if source == target:
                    continue
                # the box of what the target's readers read of this part: one message, sent once
                touched = [(name, intersection(r, part)) for name, r in reads[value][target]]
                touched = [(name, piece) for name, piece in touched if piece.area]
                if touched:
                    halos.append(Halo(value, source, target, hull_of(p for _, p in touched), touched[0][0]))
    return HaloBounds(grid, ownership, ops, held, tuple(halos))


def intersection(a: Region, b: Region) -> Region:
    """The positions in both regions (an empty region where they do not meet)."""
    r0, r1 = max(a.rows.start, b.rows.start), min(a.rows.stop, b.rows.stop)
    c0, c1 = max(a.cols.start, b.cols.start), min(a.cols.stop, b.cols.stop)
    if r1 <= r0 or c1 <= c0:
        return EMPTY
    return Region.of(r0, r1, c0, c1)


def _ownership(spatial: SpatialRange, grid: TileGrid) -> dict[str, Ownership]:
    out = {spatial.output: Ownership(grid.row_cuts, grid.col_cuts)}
    height, width = spatial.output_size
    for op in reversed(spatial.ops):
        if op.name not in out:  # read by no op of the range: split in proportion to the output
            h, w = op.output_size
            out[op.name] = Ownership(tuple(c * h // height for c in grid.row_cuts),
                                     tuple(c * w // width for c in grid.col_cuts))
        for value in op.inputs:
            # reversed order: the first op to set a value's cuts is its last reader in execution order
            out.setdefault(value, _input_ownership(op, out[op.name]))
    return out


def _input_ownership(op: SpatialOp, output: Ownership) -> Ownership:
    if op.window is None:
        return output
    return Ownership(_input_cuts(op.window.rows, output.row_cuts, op.input_size[0]),
                     _input_cuts(op.window.cols, output.col_cuts, op.input_size[1]))


def _input_cuts(window: Window1d, cuts: tuple[int, ...], input_size: int) -> tuple[int, ...]:
    centre_offset = -((window.stride - window.extent) // 2)  # ceil((extent - stride) / 2)
    inner = (min(max(c * window.stride - window.padding_before + centre_offset, 0), input_size) for c in cuts[1:-1])
    return (0, *inner, input_size)


def _whole(ownership: Ownership) -> Region:
    return Region.of(0, ownership.row_cuts[-1], 0, ownership.col_cuts[-1])


def owned_view(halo: HaloBounds, spatial: SpatialRange, tile: int) -> TileBounds:
    """Tile `tile` of a halo plan as TileBounds: its owned part of every op, and the crop of the range
    input its scatter message carries (what it reads of it: its own part and the input's halo)."""
    values = {v: halo.owned(v, tile) for v in spatial.sizes}
    return TileBounds(halo.owned(spatial.output, tile), halo.held[spatial.input][tile], values, halo.tile_ops(tile))


def held_view(halo: HaloBounds, spatial: SpatialRange, tile: int) -> TileBounds:
    """What the tile holds of each value while it runs (its part and the halos it received), for memory."""
    held = {v: halo.owned(v, tile).hull(halo.held[v][tile]) for v in spatial.sizes}
    return TileBounds(held[spatial.output], held[spatial.input], held, {op.name: OpBounds(held[op.name], held[op.name])
                                                                        for op in spatial.ops})

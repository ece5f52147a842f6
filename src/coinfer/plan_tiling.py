"""A tiled stage of a plan: one range of nodes computed as tiles on several devices, and its text form.

In the one-line form of a plan (coinfer.plan) a tiled stage is a segment whose device is a tile
spec:

    features.0..features.16@tiles[2x2,fused](edge1,edge2,edge3,edge4)>edge1

`2x2` is the grid (tile rows x tile columns) of the range's output map, split into near-equal
tiles; `2x1,rows=30:22` also gives the sizes along an axis (unequal tiles, e.g. in proportion to
device speed; with sizes the grid may be left out: `rows=30:22` alone is two strips). The mode is
`fused` (each tile recomputes the overlap, DeepThings) or `halo` (per-op halo exchange, CoEdge).
The devices compute the tiles in row-major order, one per tile (a device may take several).
`>edge1` names the *gather* device that stitches the tiles and holds the range's output; the
plan places the range's nodes there, so the rest of the plan reads the output from it as from
any stage. Without `>`, the gather device is the one that reads the output next (the origin
when the range ends the model). The *scatter* device is where the range's input is: the device
of the node that makes it (the origin for the model input).

Only the text and the graph-level checks (`check_tilings`) live here; the bounds, the price and the execution of a
tiled stage are coinfer.tiling's, coinfer.cost.evaluate's and coinfer.runtime's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from coinfer.errors import PlanError

if TYPE_CHECKING:
    from coinfer.graph import Graph
    from coinfer.tiling.geometry import TileGrid

Mode = Literal["fused", "halo"]
MODES: tuple[Mode, ...] = ("fused", "halo")
SPEC_PREFIX = "tiles["
_GRID = re.compile(r"^(\d+)\s*x\s*(\d+)$")
_SIZES = re.compile(r"^(rows|cols)\s*=\s*(\d+(?:\s*:\s*\d+)*)$")


@dataclass(frozen=True)
class Tiling:
    """The nodes `first`..`last` (both included, topological order) tiled on `devices` (row-major, one
    per tile of a `tile_rows` x `tile_cols` grid), stitched on `gather`.

    `row_sizes` / `col_sizes` fix the tiles' heights and widths (None: near-equal, as
    `coinfer.tiling.equal_grid` splits them once the map's size is known)."""

    first: str
    last: str
    devices: tuple[str, ...]
    gather: str
    tile_rows: int = 1
    tile_cols: int = 1
    mode: Mode = "fused"
    row_sizes: tuple[int, ...] | None = None
    col_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PlanError(f"tiled stage {self.first}..{self.last}: mode must be 'fused' or 'halo', not {self.mode!r}")
        for axis, count, sizes in (("rows", self.tile_rows, self.row_sizes), ("cols", self.tile_cols, self.col_sizes)):
            if count < 1:
                raise PlanError(f"tiled stage {self.first}..{self.last}: a grid needs at least one tile along {axis}")
            if sizes is not None and (len(sizes) != count or min(sizes) < 1):
                raise PlanError(f"tiled stage {self.first}..{self.last}: {len(sizes)} {axis} sizes {list(sizes)} for "
                                f"{count} tile {axis}; give one positive size per tile")
        if len(self.devices) != self.tile_count:
            raise PlanError(f"tiled stage {self.first}..{self.last}: a {self.tile_rows}x{self.tile_cols} grid has "
                            f"{self.tile_count} tiles and needs one device each (row-major), but "
                            f"{len(self.devices)} are named: {', '.join(self.devices) or 'none'}")

    @property
    def tile_count(self) -> int:
        return self.tile_rows * self.tile_cols

    @property
    def tile_devices(self) -> tuple[str, ...]:
        """The devices that compute tiles, each once, in tile order."""
        return tuple(dict.fromkeys(self.devices))

    def grid(self, height: int, width: int) -> TileGrid:
        """The tile grid over a `height` x `width` output map."""
        from coinfer.tiling.geometry import equal_grid, grid_from_sizes, split_sizes

        if self.row_sizes is None and self.col_sizes is None:
            return equal_grid(height, width, self.tile_rows, self.tile_cols)
        rows = self.row_sizes or split_sizes(height, [1.0] * self.tile_rows, "rows")
        cols = self.col_sizes or split_sizes(width, [1.0] * self.tile_cols, "cols")
        try:
            return grid_from_sizes(rows, cols, height, width)
        except PlanError as exc:
            raise PlanError(f"tiled stage {self.first}..{self.last}: {exc}") from None

    def with_devices(self, devices: tuple[str, ...], gather: str | None = None) -> Tiling:
        return Tiling(self.first, self.last, devices, gather or self.gather, self.tile_rows, self.tile_cols,
                      self.mode, self.row_sizes, self.col_sizes)

    def spec(self) -> str:
        """The device part of the one-line form: `tiles[2x2,fused](a,b,c,d)>a`."""
        sizes = [f"{axis}={':'.join(map(str, given))}" for axis, given in (("rows", self.row_sizes),
                                                                            ("cols", self.col_sizes)) if given]
        grid = ",".join([f"{self.tile_rows}x{self.tile_cols}", *sizes])
        return f"{SPEC_PREFIX}{grid},{self.mode}]({','.join(self.devices)})>{self.gather}"

    def check_map(self, height: int, width: int) -> None:
        """Refuse a grid finer than the `height` x `width` output map, or sizes that do not add up to it."""
        for axis, count, length in (("rows", self.tile_rows, height), ("columns", self.tile_cols, width)):
            if count > length:
                raise PlanError(f"tiled stage {self.first}..{self.last}: {count} tile {axis} cannot split its "
                                f"{height}x{width} output map (every tile needs at least one position); use at most "
                                f"{length} tile {axis}")
        self.grid(height, width)


def check_tilings(graph: Graph, placement: Mapping[str, str], standbys: Mapping[str, tuple[str, ...]],
                  tilings: Sequence[Tiling]) -> None:
    """Refuse tiled stages that name unknown nodes, run backwards, overlap, are not placed on their
    gather device, have standbys, or do not fit the output map the graph records."""
    taken: dict[str, Tiling] = {}
    for tiling in tilings:
        where = f"tiled stage {tiling.first}..{tiling.last}"
        for end in (tiling.first, tiling.last):
            if end not in graph.index:
                raise PlanError(f"{where}: graph {graph.name!r} has no node {end!r}")
        start, stop = graph.index[tiling.first], graph.index[tiling.last]
        if stop < start:
            raise PlanError(f"{where}: {tiling.last!r} comes before {tiling.first!r} in topological order")
        for node in graph.nodes[start:stop + 1]:
            if node.id in taken:
                raise PlanError(f"node {node.id!r} is in two tiled stages ({where} overlaps "
                                f"{taken[node.id].first}..{taken[node.id].last})")
            taken[node.id] = tiling
            if placement[node.id] != tiling.gather:
                raise PlanError(f"{where}: node {node.id!r} is placed on {placement[node.id]!r}, but a tiled "
                                f"stage's nodes are placed on its gather device {tiling.gather!r}")
            if standbys.get(node.id):
                raise PlanError(f"{where}: node {node.id!r} has standbys; a tiled stage has none (when a tile "
                                "device is lost its tiles move to the other tile devices)")
        shape = next((o.shape for o in graph.node(tiling.last).outputs if o.shape), None)
        if shape is not None and len(shape) == 4:
            tiling.check_map(shape[2], shape[3])


def is_tile_spec(text: str) -> bool:
    """Whether a segment's device part is meant as a tile spec (then it is read, or refused, as one)."""
    return text.strip().startswith(SPEC_PREFIX.rstrip("["))


def parse_tile_spec(text: str, first: str, last: str, devices: tuple[str, ...]) -> tuple[Tiling | None, dict[str, Any]]:
    """Read `tiles[GRID,MODE](DEVICES)>GATHER` for the range first..last.

    Returns the Tiling, or (None, fields) when `>GATHER` is left out: the caller fills the gather
    device in once it knows who reads the range's output (`tiling_with_gather`)."""
    where = f"tiled stage {first}..{last}"
    match = re.match(r"^tiles\[(?P<grid>[^\]]*)\]\s*\((?P<devices>[^)]*)\)\s*(?:>\s*(?P<gather>\S+))?$", text.strip())
    if match is None:
        raise PlanError(f"{where}: {text!r} should look like 'tiles[2x2,fused](dev1,dev2,dev3,dev4)>dev1' "
                        "(grid RxC, sizes rows=A:B and cols=C:D; mode fused or halo; one device per tile; '>' the "
                        "device that stitches the tiles)")
    fields: dict[str, Any] = {"mode": "fused"}
    for item in (i.strip() for i in match["grid"].split(",") if i.strip()):
        grid, sizes = _GRID.match(item), _SIZES.match(item)
        if item in MODES:
            fields["mode"] = item
        elif grid:
            fields["tile_rows"], fields["tile_cols"] = int(grid[1]), int(grid[2])
        elif sizes:
            values = tuple(int(v) for v in sizes[2].split(":"))
            key = "row_sizes" if sizes[1] == "rows" else "col_sizes"
            fields[key] = values
        else:
            raise PlanError(f"{where}: {item!r} in {text!r} is no grid (2x3), sizes (rows=30:22) or mode "
                            f"({' or '.join(MODES)})")
    named = tuple(d.strip() for d in match["devices"].split(",") if d.strip())
    gather = match["gather"]
    for name in (*named, *([gather] if gather else [])):
        if name not in devices:
            raise PlanError(f"{where}: {text!r} names unknown device {name!r}; devices: {', '.join(devices)}")
    for key, count in (("row_sizes", "tile_rows"), ("col_sizes", "tile_cols")):
        fields.setdefault(count, len(fields.get(key, (1,))))
    fields.update(first=first, last=last, devices=named)
    if gather is None:
        return None, fields
    return Tiling(gather=gather, **fields), fields


def tiling_with_gather(fields: dict[str, Any], gather: str) -> Tiling:
    return Tiling(gather=gather, **fields)

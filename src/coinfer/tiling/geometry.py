"""Tile geometry, in pure Python: regions of a feature map, sliding windows, and tile grids.

Spatial tiling splits the output feature map of a node range into tiles that several devices
compute in parallel (DeepThings' fused tile partitioning, CoEdge's proportional split). This module
holds the arithmetic every other part of `coinfer.tiling` shares:

* `Span` and `Region`: half-open intervals `[start, stop)` of rows and columns of one map.
* `Window`: what a convolution or pooling op does to positions (kernel, stride, padding, dilation
  per spatial axis, and pooling's ceil mode). Pointwise ops have no window: they keep the region.
* `window_output_size` and `window_input_need`: the forward size rule and the backward recurrence.
  Output rows `[a, b)` of a window with kernel f, stride s, padding-before p, dilation d read input
  rows `[a*s - p, (b-1)*s - p + d*(f-1) + 1)`. Clipped to the map `[0, H_in)`, that is the crop a
  tile takes; the part outside the map is the padding the tile applies itself, so a tile pads
  exactly where the whole layer pads (at the true borders) and nowhere else, and computes exactly
  what the whole layer computes (REFERENCE.md section 6).
* `TileGrid`: a rows x columns partition of an output map, equal, proportional to weights (device
  speeds), from explicit sizes, or strips; its tiles cover the map exactly, without overlap.

Mistakes a user can make in a tile plan (a grid finer than the map, a zero-size tile, a weight that
is not positive) raise PlanError naming the size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from coinfer.errors import PlanError

Axis = Literal["rows", "cols"]


@dataclass(frozen=True, order=True)
class Span:
    """The half-open interval `[start, stop)` of positions along one axis (possibly empty)."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if self.stop < self.start:
            raise PlanError(f"the span [{self.start}, {self.stop}) ends before it starts")

    @property
    def size(self) -> int:
        return self.stop - self.start

    def hull(self, other: Span) -> Span:
        """The smallest span holding both; an empty span adds nothing."""
        if other.size == 0:
            return self
        if self.size == 0:
            return other
        return Span(min(self.start, other.start), max(self.stop, other.stop))

    def contains(self, other: Span) -> bool:
        return other.size == 0 or (self.start <= other.start and other.stop <= self.stop)

    def __str__(self) -> str:
        return f"[{self.start}, {self.stop})"


@dataclass(frozen=True, order=True)
class Region:
    """Rows `rows` x columns `cols` of one feature map: positions [r0, r1) x [c0, c1)."""

    rows: Span
    cols: Span

    @classmethod
    def of(cls, row_start: int, row_stop: int, col_start: int, col_stop: int) -> Region:
        return cls(Span(row_start, row_stop), Span(col_start, col_stop))

    @classmethod
    def whole(cls, height: int, width: int) -> Region:
        return cls(Span(0, height), Span(0, width))

    @property
    def height(self) -> int:
        return self.rows.size

    @property
    def width(self) -> int:
        return self.cols.size

    @property
    def area(self) -> int:
        return self.height * self.width

    def hull(self, other: Region) -> Region:
        """The bounding box of both regions; a region of zero area adds nothing."""
        if other.area == 0:
            return self
        if self.area == 0:
            return other
        return Region(self.rows.hull(other.rows), self.cols.hull(other.cols))

    def contains(self, other: Region) -> bool:
        return other.area == 0 or (self.rows.contains(other.rows) and self.cols.contains(other.cols))

    def relative_to(self, outer: Region) -> Region:
        """This region in the coordinates of a tensor holding `outer` (its top-left corner at 0, 0)."""
        if not outer.contains(self):
            raise PlanError(f"region {self} does not lie inside {outer}")
        return Region(Span(self.rows.start - outer.rows.start, self.rows.stop - outer.rows.start),
                      Span(self.cols.start - outer.cols.start, self.cols.stop - outer.cols.start))

    def __str__(self) -> str:
        return f"rows {self.rows} x cols {self.cols}"


def hull_of(regions: Iterable[Region]) -> Region:
    """The bounding box of `regions` (zero-area regions add nothing; none at all gives an empty region)."""
    out = Region.of(0, 0, 0, 0)
    for region in regions:
        out = out.hull(region)
    return out


# -- windows: convolution and pooling ---------------------------------------------------------


@dataclass(frozen=True)
class Window1d:
    """A sliding window along one axis. Padding may differ per side (a 'same' conv of even kernel)."""

    kernel: int
    stride: int = 1
    padding_before: int = 0
    padding_after: int = 0
    dilation: int = 1
    ceil_mode: bool = False  # pooling only: a last, partial window that starts inside the map

    def __post_init__(self) -> None:
        if self.kernel < 1 or self.stride < 1 or self.dilation < 1:
            raise PlanError(f"a window needs kernel, stride and dilation of at least 1, not {self}")
        if self.padding_before < 0 or self.padding_after < 0:
            raise PlanError(f"a window's padding cannot be negative: {self}")

    @property
    def extent(self) -> int:
        """Input positions one output position spans, first to last read: d*(f-1) + 1."""
        return self.dilation * (self.kernel - 1) + 1


@dataclass(frozen=True)
class Window:
    """A convolution's or pooling's window over rows and columns."""

    rows: Window1d
    cols: Window1d

    def along(self, axis: Axis) -> Window1d:
        return self.rows if axis == "rows" else self.cols


@dataclass(frozen=True)
class Padding:
    """Positions a tile adds outside the map on each side before applying a window with no padding."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def total(self) -> int:
        return self.top + self.bottom + self.left + self.right


@dataclass(frozen=True)
class InputNeed:
    """What a window op reads of its input for one output region: a crop of the map, and padding."""

    crop: Region
    padding: Padding


def window_output_size(window: Window1d, input_size: int) -> int:
    """Output positions of `window` over `input_size` input positions, by PyTorch's rule."""
    span = input_size + window.padding_before + window.padding_after - window.extent
    if span < 0:
        raise PlanError(f"a window of extent {window.extent} does not fit {input_size} positions padded by "
                        f"{window.padding_before} + {window.padding_after}")
    if not window.ceil_mode:
        return span // window.stride + 1
    size = -(-span // window.stride) + 1
    # PyTorch drops a last window that would start in the trailing padding (pooling_output_shape)
    if (size - 1) * window.stride >= input_size + window.padding_before:
        size -= 1
    return size


def span_need(window: Window1d, output: Span, input_size: int) -> tuple[Span, int, int]:
    """(crop, padding before, padding after) of the input that output positions `output` read.

    The receptive-field interval is `[a*s - p, (b-1)*s - p + d*(f-1) + 1)`. The crop is its part
    inside `[0, input_size)`; the padding is its part outside, counted per side. With ceil mode the
    last window may run past the trailing padding: those positions are counted as padding too, as
    the op ignores them (max: -inf; average pooling in ceil mode is refused upstream for that).
    """
    if output.size == 0:
        at = min(max(output.start * window.stride - window.padding_before, 0), input_size)
        return Span(at, at), 0, 0
    start = output.start * window.stride - window.padding_before
    stop = (output.stop - 1) * window.stride - window.padding_before + window.extent
    before = max(0, min(stop, 0) - start)
    after = max(0, stop - max(start, input_size))
    crop_start = min(max(start, 0), input_size)
    crop_stop = max(crop_start, min(stop, input_size))
    return Span(crop_start, crop_stop), before, after


def window_input_need(window: Window, output: Region, input_height: int, input_width: int) -> InputNeed:
    """The crop and border padding of the input that output region `output` of `window` reads."""
    rows, top, bottom = span_need(window.rows, output.rows, input_height)
    cols, left, right = span_need(window.cols, output.cols, input_width)
    return InputNeed(Region(rows, cols), Padding(top, bottom, left, right))


# -- tile grids -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileGrid:
    """A rows x columns partition of a `height` x `width` map by cut positions along each axis.

    `row_cuts` runs `0 = c0 < c1 < ... < cn = height` (tile row i covers `[c_i, c_{i+1})`), and
    `col_cuts` likewise, so the tiles cover the map exactly once. Tiles are listed row-major.
    """

    row_cuts: tuple[int, ...]
    col_cuts: tuple[int, ...]

    def __post_init__(self) -> None:
        for axis, cuts in (("row", self.row_cuts), ("column", self.col_cuts)):
            if len(cuts) < 2 or cuts[0] != 0:
                raise PlanError(f"tile {axis} cuts must start at 0 and hold at least one tile, not {list(cuts)}")
            sizes = [b - a for a, b in pairwise(cuts)]
            if min(sizes) <= 0:
                raise PlanError(f"tile {axis} cuts {list(cuts)} give a tile of {min(sizes)} {axis}s; "
                                "every tile needs at least one")

    @property
    def height(self) -> int:
        return self.row_cuts[-1]

    @property
    def width(self) -> int:
        return self.col_cuts[-1]

    @property
    def shape(self) -> tuple[int, int]:
        """(tile rows, tile columns) of the grid."""
        return len(self.row_cuts) - 1, len(self.col_cuts) - 1

    def tiles(self) -> tuple[Region, ...]:
        return tuple(Region(Span(r0, r1), Span(c0, c1))
                     for r0, r1 in pairwise(self.row_cuts)
                     for c0, c1 in pairwise(self.col_cuts))


def split_sizes(length: int, weights: Sequence[float], axis: Axis = "rows") -> tuple[int, ...]:
    """`length` positions in `len(weights)` parts of at least one position each, in proportion to `weights`.

    Cut k sits at the nearest integer to `length * W_k / W` (W_k the sum of the first k weights,
    halves rounded up so that moving a cut by a whole position moves its rounding by one), then is
    held at least one past the previous cut and at least one before the end for each part left.
    Where every part's share is at least one position the holds never bind, so each size is within
    one position of its share, and equal weights give sizes that differ by at most one.
    """
    word = "rows" if axis == "rows" else "columns"
    if not weights:
        raise PlanError(f"a split of {length} {word} needs at least one part")
    bad = [w for w in weights if not (isinstance(w, int | float) and math.isfinite(w) and w > 0)]
    if bad:
        raise PlanError(f"tile weights must be positive finite numbers (e.g. device speeds), not {bad[0]!r}")
    parts = len(weights)
    if parts > length:
        raise PlanError(f"{parts} tile {word} cannot split a feature map of {length} {word}: every tile needs at "
                        f"least one; use at most {length} tile {word}")
    total = float(sum(weights))
    cuts = [0]
    running = 0.0
    for k, weight in enumerate(weights[:-1], start=1):
        running += weight
        ideal = math.floor(length * running / total + 0.5)
        cuts.append(min(max(ideal, cuts[-1] + 1), length - (parts - k)))
    cuts.append(length)
    return tuple(b - a for a, b in pairwise(cuts))


def _cuts(sizes: Sequence[int]) -> tuple[int, ...]:
    out = [0]
    for size in sizes:
        out.append(out[-1] + size)
    return tuple(out)


def grid_from_sizes(row_sizes: Sequence[int], col_sizes: Sequence[int],
                    height: int | None = None, width: int | None = None) -> TileGrid:
    """The grid whose tile rows and columns have these sizes (checked against the map's, when given)."""
    for axis, sizes, length in (("rows", row_sizes, height), ("cols", col_sizes, width)):
        zero = [s for s in sizes if not isinstance(s, int) or s <= 0]
        if zero or not sizes:
            raise PlanError(f"tile sizes along {axis} must be positive integers, not {list(sizes)}")
        if length is not None and sum(sizes) != length:
            raise PlanError(f"tile sizes along {axis} {list(sizes)} add up to {sum(sizes)}, but the feature map has "
                            f"{length} {axis}")
    return TileGrid(_cuts(row_sizes), _cuts(col_sizes))


def equal_grid(height: int, width: int, tile_rows: int, tile_cols: int) -> TileGrid:
    """A `tile_rows` x `tile_cols` grid of near-equal tiles (sizes differ by at most one position)."""
    return weighted_grid(height, width, [1.0] * tile_rows, [1.0] * tile_cols)


def weighted_grid(height: int, width: int, row_weights: Sequence[float], col_weights: Sequence[float]) -> TileGrid:
    """A grid whose tile row heights follow `row_weights` and column widths `col_weights`."""
    _check_map(height, width)
    return grid_from_sizes(split_sizes(height, row_weights, "rows"), split_sizes(width, col_weights, "cols"))


def strips(height: int, width: int, weights: Sequence[float], axis: Axis = "rows") -> TileGrid:
    """Strips across the whole map, one per weight, sized in proportion: horizontal bands for
    `axis="rows"` (each all columns), vertical bands for `axis="cols"`."""
    if axis == "rows":
        return weighted_grid(height, width, weights, [1.0])
    return weighted_grid(height, width, [1.0], weights)


def _check_map(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise PlanError(f"a feature map of {height} x {width} positions has nothing to tile")


def check_cover(tiles: Sequence[Region], height: int, width: int) -> None:
    """Raise PlanError unless `tiles` cover the `height` x `width` map exactly once (for hand-written tiles).

    Tiles inside the map that do not overlap pairwise and whose areas add up to the map's cover it exactly.
    """
    whole = Region.whole(height, width)
    for tile in tiles:
        if tile.area == 0:
            raise PlanError(f"tile {tile} is empty; every tile needs at least one row and one column")
        if not whole.contains(tile):
            raise PlanError(f"tile {tile} reaches outside the {height} x {width} feature map")
    for i, a in enumerate(tiles):
        for b in tiles[i + 1:]:
            if _overlap(a.rows, b.rows) and _overlap(a.cols, b.cols):
                raise PlanError(f"tiles {a} and {b} overlap; each output position belongs to one tile")
    covered = sum(t.area for t in tiles)
    if covered != whole.area:
        raise PlanError(f"the tiles cover {covered} of the {whole.area} positions of the {height} x {width} "
                        "feature map; add tiles for the rest")


def _overlap(a: Span, b: Span) -> bool:
    return a.start < b.stop and b.start < a.stop

"""Tile geometry without torch: grids cover the map exactly once, and tile bounds are exactly the
positions the windows read (checked against a brute-force enumeration of every window)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coinfer.errors import PlanError
from coinfer.tiling import (
    Padding,
    Region,
    Span,
    SpatialOp,
    SpatialRange,
    TileGrid,
    Window,
    Window1d,
    check_cover,
    equal_grid,
    grid_from_sizes,
    strips,
    tile_bounds,
    weighted_grid,
    window_input_need,
    window_output_size,
)

FAST = settings(max_examples=150, deadline=None)


def _coverage(tiles: tuple[Region, ...], height: int, width: int) -> np.ndarray:
    count = np.zeros((height, width), dtype=np.int64)
    for t in tiles:
        count[t.rows.start:t.rows.stop, t.cols.start:t.cols.stop] += 1
    return count


@FAST
@given(height=st.integers(1, 120), width=st.integers(1, 120), data=st.data())
def test_weighted_grids_cover_the_map_exactly_once(height: int, width: int, data: st.DataObject) -> None:
    weight = st.floats(0.01, 100.0, allow_nan=False)
    row_weights = data.draw(st.lists(weight, min_size=1, max_size=min(height, 8)))
    col_weights = data.draw(st.lists(weight, min_size=1, max_size=min(width, 8)))
    grid = weighted_grid(height, width, row_weights, col_weights)
    tiles = grid.tiles()
    assert len(tiles) == len(row_weights) * len(col_weights) == grid.shape[0] * grid.shape[1]
    assert all(t.area > 0 for t in tiles)
    assert (_coverage(tiles, height, width) == 1).all()
    check_cover(tiles, height, width)
    # where every share is at least one row, each tile row is within one row of its share
    shares = [height * w / sum(row_weights) for w in row_weights]
    if min(shares) >= 1:
        sizes = [b - a for a, b in zip(grid.row_cuts, grid.row_cuts[1:], strict=False)]
        assert all(abs(size - share) <= 1 for size, share in zip(sizes, shares, strict=True))


@FAST
@given(height=st.integers(1, 200), width=st.integers(1, 200), data=st.data())
def test_equal_grids_and_strips_differ_by_at_most_one_position(height: int, width: int, data: st.DataObject) -> None:
    rows, cols = data.draw(st.integers(1, min(height, 12))), data.draw(st.integers(1, min(width, 12)))
    grid = equal_grid(height, width, rows, cols)
    heights = {t.height for t in grid.tiles()}
    widths = {t.width for t in grid.tiles()}
    assert max(heights) - min(heights) <= 1 and max(widths) - min(widths) <= 1
    assert (_coverage(grid.tiles(), height, width) == 1).all()
    bands = strips(height, width, [1.0] * cols, axis="cols")
    assert bands.shape == (1, cols) and all(t.height == height for t in bands.tiles())
    assert (_coverage(bands.tiles(), height, width) == 1).all()


def test_weights_set_the_sizes_in_proportion() -> None:
    # 12 rows at speeds 1:2:3 -> 2, 4, 6 rows; 10 columns at 1:1 -> 5, 5
    grid = weighted_grid(12, 10, [1, 2, 3], [1, 1])
    assert grid.row_cuts == (0, 2, 6, 12) and grid.col_cuts == (0, 5, 10)
    assert grid_from_sizes([2, 4, 6], [5, 5], 12, 10) == grid


def test_a_grid_finer_than_the_map_is_refused_naming_the_sizes() -> None:
    with pytest.raises(PlanError, match=r"5 tile rows cannot split a feature map of 4 rows.*at most 4"):
        equal_grid(4, 9, 5, 1)
    with pytest.raises(PlanError, match=r"10 tile columns cannot split a feature map of 9 columns"):
        strips(4, 9, [1.0] * 10, axis="cols")


@pytest.mark.parametrize("weights", [[1.0, 0.0], [1.0, -2.0], [float("nan")], [float("inf"), 1.0]])
def test_weights_that_are_not_positive_are_refused(weights: list[float]) -> None:
    with pytest.raises(PlanError, match="positive finite"):
        weighted_grid(8, 8, weights, [1.0])


def test_zero_size_tiles_and_wrong_totals_are_refused() -> None:
    with pytest.raises(PlanError, match="positive integers"):
        grid_from_sizes([4, 0, 4], [8])
    with pytest.raises(PlanError, match=r"add up to 7, but the feature map has 8 rows"):
        grid_from_sizes([4, 3], [8], height=8)
    with pytest.raises(PlanError, match="at least one"):
        TileGrid((0, 3, 3, 8), (0, 8))
    with pytest.raises(PlanError, match="nothing to tile"):
        equal_grid(0, 8, 1, 1)


def test_check_cover_names_the_overlap_the_gap_and_the_stray_tile() -> None:
    with pytest.raises(PlanError, match="overlap"):
        check_cover([Region.of(0, 5, 0, 8), Region.of(4, 8, 0, 8)], 8, 8)
    with pytest.raises(PlanError, match="cover 40 of the 64"):
        check_cover([Region.of(0, 5, 0, 8)], 8, 8)
    with pytest.raises(PlanError, match="outside"):
        check_cover([Region.of(0, 9, 0, 8)], 8, 8)
    with pytest.raises(PlanError, match="empty"):
        check_cover([Region.of(0, 0, 0, 8)], 8, 8)


def test_the_recurrence_pads_only_at_true_borders() -> None:
    conv3 = Window1d(3, 1, 1, 1)
    # output rows [0, 4) of 8: input rows [-1, 5) -> crop [0, 5), one row of padding above, none below
    need = window_input_need(Window(conv3, conv3), Region.of(0, 4, 4, 8), 8, 8)
    assert need.crop == Region.of(0, 5, 3, 8) and need.padding == Padding(top=1, bottom=0, left=0, right=1)
    # stride 2, kernel 3, padding 1: output rows [2, 4) read [3, 8) of 8 -> no padding at all
    strided = Window1d(3, 2, 1, 1)
    need = window_input_need(Window(strided, strided), Region.of(2, 4, 0, 1), 8, 8)
    assert need.crop.rows == Span(3, 8) and need.padding.bottom == 0 and need.padding.top == 0
    # a 1x1 convolution padded by 2: border outputs read only padding, so the crop is empty
    pointy = Window1d(1, 1, 2, 2)
    need = window_input_need(Window(pointy, pointy), Region.of(0, 2, 0, 1), 4, 4)
    assert need.crop.height == 0 and need.padding.top == 2
    # 'same' with an even kernel: PyTorch pads one row above and two below
    same4 = Window1d(4, 1, 1, 2)
    assert window_output_size(same4, 10) == 10
    need = window_input_need(Window(same4, same4), Region.of(8, 10, 0, 10), 10, 10)
    assert need.crop.rows == Span(7, 10) and need.padding.bottom == 2


def test_ceil_mode_adds_a_last_window_only_if_it_starts_inside_the_map() -> None:
    # 22 rows, kernel 3, stride 2, padding 1: (22 + 2 - 3) / 2 = 10.5 -> 11 windows, 12 with ceil mode
    assert window_output_size(Window1d(3, 2, 1, 1), 22) == 11
    assert window_output_size(Window1d(3, 2, 1, 1, ceil_mode=True), 22) == 12
    # 5 rows, kernel 2, stride 2, padding 1: ceil would give 4 windows, the 4th starting at row 5 (padding)
    assert window_output_size(Window1d(2, 2, 1, 1, ceil_mode=True), 5) == 3


# -- tile bounds against a brute-force enumeration of the windows ------------------------------


@st.composite
def window_pair(draw: st.DrawFn, kind: str) -> Window:
    """A random window over rows and one over columns (kernel 1-5, stride 1-3, padding 0-2, dilation 1-2)."""
    axes = []
    ceil_mode = kind == "max_pool" and draw(st.booleans())
    for _ in ("rows", "cols"):
        kernel, stride, dilation = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        cap = 2 if kind == "conv" else min(2, kernel // 2)  # PyTorch: pooling pads at most half its kernel
        padding = draw(st.integers(0, cap))
        axes.append(Window1d(kernel, stride, padding, padding, dilation, ceil_mode))
    return Window(axes[0], axes[1])


@st.composite
def window_chains(draw: st.DrawFn) -> SpatialRange | None:
    """A random stack of 1-4 convolutions and max pools over a 8-64 x 8-64 map (None if it does not fit)."""
    size = (draw(st.integers(8, 64)), draw(st.integers(8, 64)))
    ops: list[SpatialOp] = []
    value = "x"
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "max_pool"]))
        window = draw(window_pair(kind))
        try:
            out = (window_output_size(window.rows, size[0]), window_output_size(window.cols, size[1]))
        except PlanError:
            return None  # the window no longer fits the shrunken map
        ops.append(SpatialOp(f"op{i}", f"node{i}", f"aten.{kind}", "window", (value,), size, out, window))
        value, size = f"op{i}", out
    return SpatialRange("x", ops[0].input_size, tuple(ops), value)


def _reads(window: Window1d, outputs: Span) -> set[int]:
    """Every input position a window reads for `outputs`, counted one window tap at a time."""
    return {o * window.stride - window.padding_before + j * window.dilation
            for o in range(outputs.start, outputs.stop) for j in range(window.kernel)}


@settings(max_examples=300, deadline=None)
@given(spatial=window_chains(), data=st.data())
def test_tile_bounds_are_exactly_the_positions_the_windows_read(spatial: SpatialRange | None,
                                                                data: st.DataObject) -> None:
    assume(spatial is not None)  # a window that no longer fits the shrunken map
    assert spatial is not None
    height, width = spatial.output_size
    r0, c0 = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
    tile = Region.of(r0, data.draw(st.integers(r0 + 1, height)), c0, data.draw(st.integers(c0 + 1, width)))
    bounds = tile_bounds(spatial, tile)
    need = {"rows": tile.rows, "cols": tile.cols}
    for op in reversed(spatial.ops):  # walk back by enumeration, not by the closed form
        assert op.window is not None
        op_bounds = bounds.ops[op.name]
        if need["rows"].size == 0 or need["cols"].size == 0:
            # a later op read only padding along one axis: nothing of this op is needed
            assert op_bounds.output.area == 0 and op_bounds.reads.area == 0 and op_bounds.padding == Padding()
            need = {"rows": Span(0, 0), "cols": Span(0, 0)}
            continue
        pads = {"rows": (op_bounds.padding.top, op_bounds.padding.bottom),
                "cols": (op_bounds.padding.left, op_bounds.padding.right)}
        for axis, size in (("rows", op.input_size[0]), ("cols", op.input_size[1])):
            assert getattr(op_bounds.output, axis) == need[axis]
            reads = _reads(op.window.along(axis), need[axis])
            first, last = min(reads), max(reads)
            crop = getattr(op_bounds.reads, axis)
            # the first and last positions read span what the padded crop holds (strided windows skip
            # positions in between, but a crop is contiguous): the crop is that span inside the map ...
            inside = (max(first, 0), min(last, size - 1) + 1)
            assert crop == Span(*inside) if inside[0] < inside[1] else crop.size == 0
            # ... and the padding every position of it outside the map, on its side
            assert pads[axis] == (max(0, min(last, -1) - first + 1), max(0, last - max(first, size) + 1))
            assert pads[axis][0] + crop.size + pads[axis][1] == last - first + 1
            need[axis] = crop
    expected = Region(need["rows"], need["cols"])
    assert bounds.input_region == expected if expected.area else bounds.input_region.area == 0


def test_a_value_read_twice_is_computed_on_the_bounding_box_of_both_reads() -> None:
    # x (16 x 16) -> a = conv 3x3 pad 1 -> add(a, x): for output rows [0, 8), a reads x rows [0, 9)
    # and the add reads x rows [0, 8) -> x is needed on rows [0, 9) x the whole width's box
    conv = Window1d(3, 1, 1, 1)
    ops = (SpatialOp("a", "conv", "aten.conv2d", "window", ("x",), (16, 16), (16, 16), Window(conv, conv)),
           SpatialOp("sum", "add", "aten.add", "pointwise", ("a", "x"), (16, 16), (16, 16)))
    spatial = SpatialRange("x", (16, 16), ops, "sum")
    bounds = tile_bounds(spatial, Region.of(0, 8, 4, 12))
    assert bounds.input_region == Region.of(0, 9, 3, 13)
    assert bounds.ops["sum"].reads == Region.of(0, 8, 4, 12)
    assert bounds.ops["a"].reads == Region.of(0, 9, 3, 13) and bounds.ops["a"].padding == Padding(top=1)


def test_a_tile_outside_the_output_is_refused() -> None:
    conv = Window1d(3, 1, 1, 1)
    spatial = SpatialRange("x", (8, 8), (SpatialOp("a", "conv", "aten.conv2d", "window", ("x",), (8, 8), (8, 8),
                                                   Window(conv, conv)),), "a")
    with pytest.raises(PlanError, match="8 x 8 output"):
        tile_bounds(spatial, Region.of(0, 9, 0, 8))
    with pytest.raises(PlanError, match="program says"):
        SpatialOp("b", "conv", "aten.conv2d", "window", ("x",), (8, 8), (7, 8), Window(conv, conv))

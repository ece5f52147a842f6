"""Random stacks and DAGs of convolutions and pooling, run tile by tile with torch, equal the whole map.

Data and weights are small integers in float64, and average pools have kernels 1, 2 or 4: every sum
and every division is then exact in binary floating point, whatever order a kernel sums in, so the
stitched tiles must be bit-identical to the unpartitioned computation (torch.equal), and a tile
that read one wrong row or padded one row too many would show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from coinfer.errors import PlanError
from coinfer.tiling import Region, SpatialOp, SpatialRange, Window, Window1d, weighted_grid, window_output_size
from coinfer.tiling.reference import RangeCall, ValueRef, run_tiled, run_whole

FAST = settings(max_examples=100, deadline=None)
DTYPE = torch.float64
CONV = torch.ops.aten.conv2d.default
MAX_POOL = torch.ops.aten.max_pool2d.default
AVG_POOL = torch.ops.aten.avg_pool2d.default


@dataclass
class Builder:
    """A hand-written range: its spatial ops and the torch calls that compute them."""

    channels: int
    size: tuple[int, int]
    value: str = "x"

    def __post_init__(self) -> None:
        self.input_size = self.size
        self.ops: list[SpatialOp] = []
        self.calls: list[RangeCall] = []
        self.sizes = {"x": (self.channels, self.size)}

    def add(self, op: SpatialOp, target: Callable[..., Any], args: tuple[object, ...], tile_args: tuple[object, ...],
            channels: int, written: frozenset[str] = frozenset()) -> str:
        example = torch.empty((1, channels, *op.output_size), dtype=DTYPE, device="meta")
        self.ops.append(op)
        self.calls.append(RangeCall(op, target, args, {}, tile_args, {}, written, example))
        self.sizes[op.name] = (channels, op.output_size)
        return op.name

    def window(self, kind: str, window: Window, source: str, out_channels: int | None = None) -> str:
        channels, size = self.sizes[source]
        out = (window_output_size(window.rows, size[0]), window_output_size(window.cols, size[1]))
        name = f"v{len(self.ops)}"
        op = SpatialOp(name, f"node{len(self.ops)}", f"aten.{kind}", "window", (source,), size, out, window)
        r, c = window.rows, window.cols
        pad, stride, dilation = [r.padding_before, c.padding_before], [r.stride, c.stride], [r.dilation, c.dilation]
        kernel, x = [r.kernel, c.kernel], ValueRef(source)
        if kind == "conv2d":
            out_channels = out_channels or channels
            weight = torch.randint(-2, 3, (out_channels, channels, *kernel)).to(DTYPE)
            bias = torch.randint(-3, 4, (out_channels,)).to(DTYPE)
            return self.add(op, CONV, (x, weight, bias, stride, pad, dilation, 1),
                            (x, weight, bias, stride, [0, 0], dilation, 1), out_channels)
        if kind == "max_pool2d":
            return self.add(op, MAX_POOL, (x, kernel, stride, pad, dilation, r.ceil_mode),
                            (x, kernel, stride, [0, 0], dilation, False), channels)
        return self.add(op, AVG_POOL, (x, kernel, stride, pad), (x, kernel, stride, [0, 0]), channels)

    def pointwise(self, label: str, target: Callable[..., Any], sources: list[str], channels: int,
                  in_place: bool = False) -> str:
        size = self.sizes[sources[0]][1]
        name = f"v{len(self.ops)}"
        op = SpatialOp(name, f"node{len(self.ops)}", label, "pointwise", tuple(sources), size, size)
        refs = [ValueRef(s) for s in sources]
        args: tuple[object, ...] = ((refs, 1) if label == "aten.cat" else tuple(refs))
        return self.add(op, target, args, args, channels, frozenset(sources) if in_place else frozenset())

    def done(self, output: str) -> SpatialRange:
        return SpatialRange("x", self.input_size, tuple(self.ops), output)


@st.composite
def windows(draw: st.DrawFn, kind: str) -> Window:
    """Kernel 1-5, stride 1-3, padding 0-2, dilation 1-2 per axis, within PyTorch's limits per kind."""
    ceil_mode = kind == "max_pool2d" and draw(st.booleans())
    axes = []
    for _ in range(2):
        stride = draw(st.integers(1, 3))
        if kind == "avg_pool2d":  # kernels whose area divides exactly in binary; no dilation
            kernel, dilation = draw(st.sampled_from([1, 2, 4])), 1
            cap = kernel // 2
        else:
            kernel, dilation = draw(st.integers(1, 5)), draw(st.integers(1, 2))
            cap = 2 if kind == "conv2d" else kernel // 2  # PyTorch: pooling pads at most half its kernel
        padding = draw(st.integers(0, min(2, cap)))
        axes.append(Window1d(kernel, stride, padding, padding, dilation, ceil_mode))
    return Window(axes[0], axes[1])


def _stack(draw: st.DrawFn, builder: Builder, count: int) -> str | None:
    """`count` random window ops after the builder's current value; None when one no longer fits."""
    value = builder.value
    for _ in range(count):
        kind = draw(st.sampled_from(["conv2d", "conv2d", "max_pool2d", "avg_pool2d"]))
        window = draw(windows(kind))
        try:
            value = builder.window(kind, window, value)
        except PlanError:
            return None
    builder.value = value
    return value


@st.composite
def stacks(draw: st.DrawFn) -> tuple[Builder, SpatialRange] | None:
    builder = Builder(draw(st.integers(1, 3)), (draw(st.integers(8, 48)), draw(st.integers(8, 48))))
    if draw(st.booleans()):  # an in-place op on the range input: the caller's tensor must stay intact
        builder.value = builder.pointwise("aten.relu_", torch.ops.aten.relu_.default, ["x"], builder.channels,
                                          in_place=True)
    out = _stack(draw, builder, draw(st.integers(1, 4)))
    return None if out is None else (builder, builder.done(out))


@st.composite
def dags(draw: st.DrawFn) -> tuple[Builder, SpatialRange] | None:
    """prefix stack -> two branches joined by add or cat (a residual block, a strided downsample
    pair, an inception-like pair) -> suffix stack: values read by several ops of different reach."""
    builder = Builder(draw(st.integers(1, 3)), (draw(st.integers(12, 48)), draw(st.integers(12, 48))))
    if _stack(draw, builder, draw(st.integers(0, 2))) is None:
        return None
    stem = builder.value
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    branches = []
    for _ in range(2):
        # 2p = d(k-1) along both axes keeps floor((H - 1) / s) + 1 rows whatever the window, so
        # branches of one stride always meet; a stride-1 branch may be the identity (a residual)
        if stride == (1, 1) and draw(st.booleans()):
            branches.append(stem)
            continue
        kind = draw(st.sampled_from(["conv2d", "max_pool2d"]))
        axes = []
        for s in stride:
            same_size = [(1, 1, 0), (3, 1, 1), (5, 1, 2)] + ([(3, 2, 2)] if kind == "conv2d" else [])
            kernel, dilation, padding = draw(st.sampled_from(same_size))
            axes.append(Window1d(kernel, s, padding, padding, dilation))
        try:
            branches.append(builder.window(kind, Window(axes[0], axes[1]), stem))
        except PlanError:
            return None
    channels = builder.sizes[stem][0]
    if draw(st.booleans()):
        joined = builder.pointwise("aten.add", torch.ops.aten.add.Tensor, branches, channels)
        joined = builder.pointwise("aten.relu_", torch.ops.aten.relu_.default, [joined], channels, in_place=True)
    else:
        joined = builder.pointwise("aten.cat", torch.ops.aten.cat.default, branches, 2 * channels)
    builder.value = joined
    out = _stack(draw, builder, draw(st.integers(0, 2)))
    return None if out is None else (builder, builder.done(out))


def _integers(channels: int, size: tuple[int, int]) -> torch.Tensor:
    return torch.randint(-4, 5, (1, channels, *size)).to(DTYPE)


def _check_tiles_equal_whole(built: tuple[Builder, SpatialRange] | None, data: st.DataObject) -> None:
    assume(built is not None)  # a window that no longer fits the shrunken map
    assert built is not None
    builder, spatial = built
    height, width = spatial.output_size
    weight = st.floats(0.2, 5.0)
    grid = weighted_grid(height, width, data.draw(st.lists(weight, min_size=min(height, 2), max_size=min(height, 4))),
                         data.draw(st.lists(weight, min_size=min(width, 2), max_size=min(width, 4))))
    event(f"{grid.shape[0]} x {grid.shape[1]} tiles")
    x = _integers(builder.channels, builder.input_size)
    before = x.clone()
    whole = run_whole(builder.calls, spatial, x)
    tiled = run_tiled(builder.calls, spatial, x, grid.tiles())
    assert tiled.shape == whole.shape == (1, builder.sizes[spatial.output][0], height, width)
    assert not tiled.isnan().any()  # stitching leaves uncovered positions NaN
    assert torch.equal(tiled, whole)
    assert torch.equal(x, before)  # no tile wrote into the caller's input


@FAST
@given(built=stacks(), data=st.data())
def test_tiles_of_random_stacks_equal_the_whole_output_bit_for_bit(
        built: tuple[Builder, SpatialRange] | None, data: st.DataObject) -> None:
    _check_tiles_equal_whole(built, data)


@FAST
@given(built=dags(), data=st.data())
def test_tiles_of_random_branching_ranges_equal_the_whole_output_bit_for_bit(
        built: tuple[Builder, SpatialRange] | None, data: st.DataObject) -> None:
    _check_tiles_equal_whole(built, data)


def test_a_wrong_input_crop_is_refused_and_a_wrong_region_would_be_seen() -> None:
    from coinfer.tiling import tile_bounds
    from coinfer.tiling.reference import run_tile

    conv = Window1d(3, 1, 1, 1)
    builder = Builder(2, (16, 16))
    out = builder.window("conv2d", Window(conv, conv), "x")
    spatial = builder.done(out)
    bounds = tile_bounds(spatial, Region.of(0, 8, 0, 16))
    x = _integers(2, (16, 16))
    with pytest.raises(PlanError, match=r"needs the input region rows \[0, 9\)"):
        run_tile(builder.calls, spatial, bounds, x)
    # shifting the crop by one row changes the tile: the equality checks above can fail
    shifted = run_tile(builder.calls, spatial, bounds, x[:, :, 1:10])
    assert not torch.equal(shifted, run_whole(builder.calls, spatial, x)[:, :, :8])

"""Halo-exchange tiles (coinfer.tiling.halo, reference.run_halo_exchange) on random stacks and DAGs of windows.

The ranges are test_tile_stacks.py's random conv/pool stacks and branching ranges: small integers
in float64, so every sum is exact whatever order a kernel takes, and tiles that compute only their
owned parts from their own part plus the halos they received must equal the unpartitioned range
bit for bit (torch.equal). Beside that: owned parts tile every map exactly once, redundancy is
exactly 1, every halo lies inside the sender's owned part, and own part plus halos cover each read.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coinfer.errors import PlanError
from coinfer.tiling import Region, SpatialRange, Window, Window1d, equal_grid, tile_bounds, weighted_grid
from coinfer.tiling.halo import HaloBounds, halo_bounds, intersection
from coinfer.tiling.reference import run_halo_exchange, run_whole
from tests.tiling.test_tile_stacks import Builder, dags, stacks

FAST = settings(max_examples=80, deadline=None)
DTYPE = torch.float64


def _check_partition(spatial: SpatialRange, halo: HaloBounds) -> None:
    """Owned parts cover every map exactly once; reads are covered by own part + halos from owners."""
    for value, (height, width) in spatial.sizes.items():
        count = np.zeros((height, width), dtype=np.int64)
        for part in halo.ownership[value].parts():
            count[part.rows.start:part.rows.stop, part.cols.start:part.cols.stop] += 1
        assert (count == 1).all(), value
    assert halo.redundancy == 1.0
    for h in halo.halos:
        assert h.source != h.target
        assert halo.owned(h.value, h.source).contains(h.region)
        assert halo.held[h.value][h.target].contains(h.region)
    for op in spatial.ops:
        for t in range(halo.tile_count):
            reads = halo.ops[op.name][t].reads
            for value in op.inputs:
                covered = intersection(reads, halo.owned(value, t)).area + sum(
                    intersection(reads, h.region).area for h in halo.received(t) if h.value == value)
                assert covered == reads.area, (op.name, value, t)


def _check_halo_tiles_equal_whole(built: tuple[Builder, SpatialRange] | None, data: st.DataObject) -> None:
    assume(built is not None)
    assert built is not None
    builder, spatial = built
    height, width = spatial.output_size
    weight = st.floats(0.2, 5.0)
    grid = weighted_grid(height, width, data.draw(st.lists(weight, min_size=min(height, 2), max_size=min(height, 4))),
                         data.draw(st.lists(weight, min_size=min(width, 2), max_size=min(width, 4))))
    halo = halo_bounds(spatial, grid)
    _check_partition(spatial, halo)
    x = torch.randint(-4, 5, (1, builder.channels, *builder.input_size)).to(DTYPE)
    before = x.clone()
    whole = run_whole(builder.calls, spatial, x)
    tiled = run_halo_exchange(builder.calls, spatial, x, grid, halo)
    assert not tiled.isnan().any()
    assert torch.equal(tiled, whole)
    assert torch.equal(x, before)


@FAST
@given(built=stacks(), data=st.data())
def test_halo_exchange_tiles_of_random_stacks_equal_the_whole_output_bit_for_bit(
        built: tuple[Builder, SpatialRange] | None, data: st.DataObject) -> None:
    _check_halo_tiles_equal_whole(built, data)


@FAST
@given(built=dags(), data=st.data())
def test_halo_exchange_tiles_of_random_branching_ranges_equal_the_whole_output_bit_for_bit(
        built: tuple[Builder, SpatialRange] | None, data: st.DataObject) -> None:
    _check_halo_tiles_equal_whole(built, data)


def test_two_same_convolutions_in_two_strips_trade_one_row_each_way_per_convolution() -> None:
    # 8 x 4 map, two 3x3 'same' convolutions, strips rows [0, 4) and [4, 8): a 3x3 'same' window keeps
    # cuts, so every map is cut at row 4; each convolution's tile reads one row of the other's part.
    same = Window1d(3, 1, 1, 1)
    builder = Builder(1, (8, 4))
    spatial = builder.done(builder.window("conv2d", Window(same, same), builder.window("conv2d", Window(same, same),
                                                                                         "x")))
    halo = halo_bounds(spatial, equal_grid(8, 4, 2, 1))
    assert {v: o.row_cuts for v, o in halo.ownership.items()} == {"x": (0, 4, 8), "v0": (0, 4, 8), "v1": (0, 4, 8)}
    assert [(h.value, h.source, h.target, h.region, h.reader) for h in halo.halos] == [
        ("x", 1, 0, Region.of(4, 5, 0, 4), "v0"), ("x", 0, 1, Region.of(3, 4, 0, 4), "v0"),
        ("v0", 1, 0, Region.of(4, 5, 0, 4), "v1"), ("v0", 0, 1, Region.of(3, 4, 0, 4), "v1")]
    # the top tile pads row -1 itself (the true border) and nothing at the cut
    assert halo.ops["v0"][0].padding.top == 1 and halo.ops["v0"][0].padding.bottom == 0
    # fused tiles of the same grid compute conv v0 on rows [0, 5) and [3, 8): 8 positions twice
    fused = sum(tile_bounds(spatial, t).computed_positions for t in equal_grid(8, 4, 2, 1).tiles())
    assert fused == 64 + 8 and sum(halo.computed_positions(t) for t in range(2)) == 64


def test_strided_windows_map_cuts_back_to_the_middle_of_the_windows() -> None:
    # a 2x2 pool of stride 2 doubles a cut; a 3x3 convolution of stride 2, padding 1 too; a 7x7 stride 2
    # padding 3 (resnet's conv1) as well: ceil((e - s) / 2) - p = 0 for each
    builder = Builder(1, (64, 64))
    pool = builder.window("max_pool2d", Window(Window1d(2, 2), Window1d(2, 2)), "x")
    conv = builder.window("conv2d", Window(Window1d(3, 2, 1, 1), Window1d(3, 2, 1, 1)), pool)
    stem = builder.window("conv2d", Window(Window1d(7, 2, 3, 3), Window1d(7, 2, 3, 3)), conv)
    spatial = builder.done(stem)
    assert spatial.output_size == (8, 8)
    halo = halo_bounds(spatial, equal_grid(8, 8, 2, 1))
    assert [halo.ownership[v].row_cuts for v in ("x", pool, conv, stem)] == [(0, 32, 64), (0, 16, 32), (0, 8, 16),
                                                                               (0, 4, 8)]


def test_a_grid_of_another_size_is_refused() -> None:
    same = Window1d(3, 1, 1, 1)
    builder = Builder(1, (8, 4))
    spatial = builder.done(builder.window("conv2d", Window(same, same), "x"))
    with pytest.raises(PlanError, match="cannot split the range's 8 x 4 output"):
        halo_bounds(spatial, equal_grid(8, 8, 2, 1))

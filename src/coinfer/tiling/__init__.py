"""Spatial tiling: one node range's output split into tiles that several devices compute in parallel.

`geometry` holds regions, windows, the backward tile-bound recurrence and tile grids;
`bounds` the range as a DAG of spatial ops and `tile_bounds`, which walks it backwards from an
output tile to the region of every value the tile needs; `program_ops` reads that DAG from a
captured model's aten program; `reference` runs tiles with torch (imported only by it); `halo`
splits every map of the range among the tiles (`halo_bounds`) so that halo-exchange tiles compute
each position once and trade halos with their neighbours. The price of a tiled stage is the cost
model's (coinfer.cost.tiled_stage). Importing this package imports no torch.

    spatial = spatial_range(graph, "layer1.0.conv1", "layer2.1.relu.relu__8", program)
    grid = equal_grid(*spatial.output_size, tile_rows=2, tile_cols=2)
    bounds = [tile_bounds(spatial, tile) for tile in grid.tiles()]   # each tile's input region
"""

from __future__ import annotations

from coinfer.tiling.bounds import OpBounds, SpatialOp, SpatialRange, TileBounds, tile_bounds
from coinfer.tiling.geometry import (
    InputNeed,
    Padding,
    Region,
    Span,
    TileGrid,
    Window,
    Window1d,
    check_cover,
    equal_grid,
    grid_from_sizes,
    split_sizes,
    strips,
    weighted_grid,
    window_input_need,
    window_output_size,
)
from coinfer.tiling.halo import Halo, HaloBounds, Ownership, halo_bounds
from coinfer.tiling.program_ops import spatial_range

__all__ = [
    "Halo", "HaloBounds", "InputNeed", "OpBounds", "Ownership", "Padding",
    "Region", "Span", "SpatialOp", "SpatialRange", "TileBounds", "TileGrid", "Window",
    "Window1d", "check_cover", "equal_grid", "grid_from_sizes", "halo_bounds", "spatial_range", "split_sizes", "strips",
    "tile_bounds", "weighted_grid", "window_input_need", "window_output_size",
]

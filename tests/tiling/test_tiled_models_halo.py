"""Halo-exchange tiles of real captured models equal the unpartitioned range (reference.run_halo_exchange).

resnet18's layer1..layer2 (residual blocks, one with a strided 1x1 downsample: ownership and halos
apply to every value of the DAG) and VGG16's features, at the sizes test_tiled_models.py uses,
split 2x2, 1x3 and unevenly. Same tolerance and reason as there: float32, and PyTorch picks its
convolution kernel by the shape of the map, so a tile's convolution over its part plus halo can
sum its C_in*k*k terms in another order than the whole map's (at most 1e-5 of the output's largest
magnitude, the issue's bound). Every tile computes only its owned part: redundancy exactly 1.
"""

from __future__ import annotations

from typing import Any

import pytest

from coinfer.graph import Graph
from coinfer.tiling import SpatialRange, equal_grid, spatial_range, weighted_grid
from coinfer.tiling.halo import halo_bounds
from coinfer.tiling.reference import range_calls, run_halo_exchange, run_whole
from tests.tiling.model_ranges import assert_same_map, layer2_end, range_input

pytest.importorskip("torchvision")


def _check_halo_grids(graph: Graph, program: Any, spatial: SpatialRange, grids: list[Any]) -> None:
    calls = range_calls(program, spatial)
    x = range_input(graph, spatial)
    whole = run_whole(calls, spatial, x)
    for grid in grids:
        halo = halo_bounds(spatial, grid)
        assert halo.redundancy == 1.0 and halo.halos
        assert_same_map(run_halo_exchange(calls, spatial, x, grid, halo), whole)


def test_resnet18_layer1_to_layer2_in_halo_exchange_equals_the_whole_range(resnet18: tuple[Graph, Any]) -> None:
    graph, program = resnet18
    spatial = spatial_range(graph, "layer1.0.conv1", layer2_end(graph), program)
    height, width = spatial.output_size
    grids = [equal_grid(height, width, 2, 2), equal_grid(height, width, 1, 3),
             weighted_grid(height, width, [1.0, 2.5], [3.0, 1.0, 1.0])]
    _check_halo_grids(graph, program, spatial, grids)
    # the 16 x 16 output cut at row 8 is cut at row 16 of the 32 x 32 block input (the stride-2 block
    # doubles it: the 3x3 stride-2 convolution and the 1x1 downsample agree)
    halo = halo_bounds(spatial, grids[0])
    assert halo.ownership[spatial.input].row_cuts == (0, 16, 32)


def test_vgg16_features_in_halo_exchange_equal_the_whole_range(vgg16_features: tuple[Graph, Any]) -> None:
    graph, program = vgg16_features
    spatial = spatial_range(graph, "features.0", "features.30", program)
    height, width = spatial.output_size
    _check_halo_grids(graph, program, spatial, [equal_grid(height, width, 2, 2), equal_grid(height, width, 1, 3)])

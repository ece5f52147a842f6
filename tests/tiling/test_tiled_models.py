"""Tiled ranges of real captured models equal the unpartitioned range, and untileable ranges are refused.

VGG16's features, resnet18's layer1..layer2 (residual blocks, one with a strided 1x1 downsample)
and a held-back model with depthwise, grouped, dilated, strided and even-kernel 'same'
convolutions in a residual block (tests/tiling/tiling_models.py), split 2x2, 1x3 and unevenly.

Not bit-identical, by float32 summation order: PyTorch picks its convolution kernel by shape
(oneDNN's direct or blocked kernels for larger maps, im2col + GEMM for small ones), so a tile's
convolution over a small crop can sum its C_in*k*k terms in another order than the whole map's.
Measured (2x2 and 1x3, one thread), as a fraction of the output's largest magnitude: resnet18
layer1..layer2 at most 7e-7, VGG16 features.0..30 1.5e-6, the held-back model 1.1e-7 (one float32
ulp), VGG16 features.5..9 bit-identical. A one-row shift of a crop, or a row padded that should not
be, changes outputs by the output's own scale. The bit-exact
check of the bounds themselves is tests/tiling/test_tile_stacks.py (integer data in float64).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from coinfer.capture import build_model
from coinfer.errors import PlanError
from coinfer.graph import Graph
from coinfer.tiling import Region, SpatialRange, equal_grid, spatial_range, tile_bounds, weighted_grid
from coinfer.tiling.reference import range_calls, run_tiled, run_whole
from tests.tiling.model_ranges import assert_same_map, captured, layer2_end, range_input

pytest.importorskip("torchvision")

def _eager(graph: Graph) -> Any:
    """The eager model the graph was captured from, with the program's weights (same spec, same seed)."""
    assert graph.source is not None
    return build_model(graph.source)[0]


def _check_grids(graph: Graph, program: Any, spatial: SpatialRange, grids: list[Any]) -> torch.Tensor:
    calls = range_calls(program, spatial)
    x = range_input(graph, spatial)
    whole = run_whole(calls, spatial, x)
    assert tuple(whole.shape[2:]) == spatial.output_size
    for grid in grids:
        assert_same_map(run_tiled(calls, spatial, x, grid.tiles()), whole)
    return whole


def test_resnet18_layer1_to_layer2_tiled_equals_the_whole_range(resnet18: tuple[Graph, Any]) -> None:
    graph, program = resnet18
    spatial = spatial_range(graph, "layer1.0.conv1", layer2_end(graph), program)
    assert spatial.input == "max_pool2d" and spatial.input_size == (32, 32) and spatial.output_size == (16, 16)
    height, width = spatial.output_size
    grids = [equal_grid(height, width, 2, 2), equal_grid(height, width, 1, 3),
             weighted_grid(height, width, [1.0, 2.5], [3.0, 1.0, 1.0])]
    whole = _check_grids(graph, program, spatial, grids)
    # fused tiles read a halo, not the whole map: the top-left 8 x 8 tile reads rows and columns [0, 26)
    assert tile_bounds(spatial, Region.of(0, 8, 0, 8)).input_region == Region.of(0, 26, 0, 26)
    # and recompute the overlap: 2x2 tiles compute more positions, summed over all ops, than one whole tile
    whole_positions = tile_bounds(spatial, Region.whole(height, width)).computed_positions
    assert sum(tile_bounds(spatial, t).computed_positions for t in grids[0].tiles()) > whole_positions
    # and the range itself is what the eager model computes
    model = _eager(graph)
    with torch.inference_mode():
        eager = model.layer2(model.layer1(range_input(graph, spatial)))
    assert torch.equal(eager, whole)


@pytest.mark.parametrize(("first", "last"), [("features.0", "features.30"), ("features.5", "features.9")])
def test_vgg16_features_tiled_equals_the_whole_range(vgg16_features: tuple[Graph, Any], first: str,
                                                     last: str) -> None:
    graph, program = vgg16_features
    spatial = spatial_range(graph, first, last, program)
    height, width = spatial.output_size
    whole = _check_grids(graph, program, spatial, [equal_grid(height, width, 2, 2), equal_grid(height, width, 1, 3)])
    model = _eager(graph)
    with torch.inference_mode():
        eager = model.features[int(first.split(".")[1]):int(last.split(".")[1]) + 1](range_input(graph, spatial))
    assert torch.equal(eager, whole)


def test_grouped_dilated_convolutions_in_a_residual_block_tile_losslessly(
        dilated_residual: tuple[Graph, Any]) -> None:
    graph, program = dilated_residual
    spatial = spatial_range(graph, "stem.0", "down", program)
    kinds = {op.label for op in spatial.ops}
    assert {"aten.conv2d", "aten.avg_pool2d", "aten.max_pool2d", "aten.cat", "aten.add"} <= kinds
    assert spatial.output_size == (12, 10)  # the ceil-mode pool's last window down the 22 rows adds a row
    height, width = spatial.output_size
    grids = [equal_grid(height, width, 2, 2), equal_grid(height, width, 1, 3), equal_grid(height, width, 12, 10),
             weighted_grid(height, width, [1.0, 3.0, 2.0], [2.0, 1.0])]
    whole = _check_grids(graph, program, spatial, grids)
    model = _eager(graph)
    with torch.inference_mode():
        x = model.stem(range_input(graph, spatial))
        y = model.bn2(model.grouped(model.act1(model.bn1(model.depthwise(x)))))
        x = model.act2(y + model.shortcut(x))
        eager = model.down(torch.sigmoid(model.mix(torch.cat([model.same(x), model.pool(x)], dim=1))))
    assert torch.equal(eager, whole)


@pytest.mark.parametrize(("first", "last", "node"), [
    ("layer4.0.conv1", "fc", "avgpool"),  # global average pooling to 1 x 1
    ("flatten", "fc", "flatten"),
    ("layer1.0.conv1", "avgpool", "avgpool"),
])
def test_ranges_that_mix_positions_are_refused_naming_the_node(resnet18: tuple[Graph, Any], first: str, last: str,
                                                               node: str) -> None:
    graph, program = resnet18
    with pytest.raises(PlanError, match=rf"node '{node}' \(aten\.\w+\).*tile a range that ends before '{node}'"):
        spatial_range(graph, first, last, program)


def test_a_linear_head_is_refused_naming_the_node(dilated_residual: tuple[Graph, Any]) -> None:
    graph, program = dilated_residual
    with pytest.raises(PlanError, match=r"node 'adaptive_avg_pool2d'.*pools the 12 x 10 map to 1 x 1"):
        spatial_range(graph, "stem.0", "head", program)
    with pytest.raises(PlanError, match=r"node 'head' \(aten\.linear\).*not a batch of feature maps"):
        spatial_range(graph, "head", "head", program)


def test_a_range_with_two_outputs_or_backwards_ends_is_refused(resnet18: tuple[Graph, Any]) -> None:
    graph, program = resnet18
    # both maxpool's output and bn2's are read after the range, by layer1.0.add_
    with pytest.raises(PlanError, match=r"outputs one feature map, but 2 values"):
        spatial_range(graph, "maxpool", "layer1.0.bn2", program)
    with pytest.raises(PlanError, match="comes after"):
        spatial_range(graph, "layer2.0.conv1", "layer1.0.conv1", program)
    with pytest.raises(PlanError, match="no node 'layer9'"):
        spatial_range(graph, "layer1.0.conv1", "layer9", program)


def test_a_grid_finer_than_the_ranges_output_is_refused_naming_the_size(vgg16_features: tuple[Graph, Any]) -> None:
    graph, program = vgg16_features
    spatial = spatial_range(graph, "features.0", "features.30", program)
    assert spatial.output_size == (3, 3)  # 96 / 2^5
    with pytest.raises(PlanError, match=r"4 tile rows cannot split a feature map of 3 rows"):
        equal_grid(*spatial.output_size, 4, 1)


@pytest.mark.slow
def test_torchvision_vgg16_features_tile_inside_the_whole_model() -> None:
    graph, program = captured("torchvision:vgg16", input_shape=(1, 3, 96, 96))
    spatial = spatial_range(graph, "features.0", "features.30", program)
    _check_grids(graph, program, spatial, [equal_grid(3, 3, 2, 2), equal_grid(3, 3, 1, 3)])
    # VGG's adaptive pool stretches the 3 x 3 map to 7 x 7 for its classifier
    with pytest.raises(PlanError, match=r"node 'avgpool'.*pools the 3 x 3 map to 7 x 7"):
        spatial_range(graph, "features.0", "avgpool", program)

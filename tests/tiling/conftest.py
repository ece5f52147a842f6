"""Fixtures of the tiling tests: one torch thread for every test, and the captured models they tile."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from coinfer.graph import Graph
from tests.tiling.model_ranges import captured


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # benchmarks share this machine; both sides of each comparison run alike
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def resnet18() -> tuple[Graph, Any]:
    # 128 x 128: layer1 sees 32 x 32 and layer2 outputs 16 x 16, large enough that a 2x2 tile's input
    # is a true part of the map (its halo through 8 convolutions is 10 rows, not the whole map)
    return captured("torchvision:resnet18", input_shape=(1, 3, 128, 128))


@pytest.fixture(scope="module")
def vgg16_features() -> tuple[Graph, Any]:
    return captured("python:tests.tiling.tiling_models:vgg16_features")


@pytest.fixture(scope="module")
def dilated_residual() -> tuple[Graph, Any]:
    """The held-back model: dilated, strided, grouped and depthwise convolutions in a residual block."""
    return captured("python:tests.tiling.tiling_models:dilated_residual")

"""Captured models and the comparison the tiled-model tests share (fused and halo-exchange modes)."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from coinfer.capture import capture, load_program
from coinfer.graph import Graph
from coinfer.tiling import SpatialRange

REL_TOLERANCE = 1e-5  # of the output's largest magnitude: the bound where sums reorder


def captured(spec: str, **kw: Any) -> tuple[Graph, Any]:
    with warnings.catch_warnings():  # 'same' padding with an even kernel warns that it copies its input
        warnings.simplefilter("ignore", UserWarning)
        graph = capture(spec, **kw)
        assert graph.source is not None
        return graph, load_program(graph.source)


def range_input(graph: Graph, spatial: SpatialRange) -> torch.Tensor:
    producer = next((n for n in graph.nodes if spatial.input in n.source_nodes), None)
    shape = graph.inputs[0].spec.shape if producer is None else producer.outputs[0].shape
    assert shape is not None
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def assert_same_map(tiled: torch.Tensor, whole: torch.Tensor) -> None:
    assert tiled.shape == whole.shape
    assert not tiled.isnan().any(), "a position no tile covered"  # stitch leaves gaps NaN
    scale = float(whole.abs().max())
    assert scale > 0
    torch.testing.assert_close(tiled, whole, rtol=0.0, atol=REL_TOLERANCE * scale, equal_nan=False)


def layer2_end(graph: Graph) -> str:
    return [n.id for n in graph.nodes if n.id.startswith("layer2.")][-1]

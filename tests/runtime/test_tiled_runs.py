"""Tiled stages on real worker processes: each tile computed from its crop, stitched, equal to the whole model."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph
from coinfer.plan import parse_plan
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan
from tests.runtime.conftest import DEVICES, THREE

HELD_BACK = "python:tests.tiling.tiling_models:dilated_residual"


def captured(spec: str, **kw: Any) -> Graph:
    with warnings.catch_warnings():  # 'same' padding with an even kernel warns that it copies its input
        warnings.simplefilter("ignore", UserWarning)
        return capture(spec, **kw)


def run_tiled(graph: Graph, text: str, workers: LocalWorkers, version: int, requests: int = 2) -> dict[str, Any]:
    problem = make_problem(graph, cluster_from_dict(THREE, "three.yaml"))
    plan = parse_plan(text, graph, DEVICES)
    assert plan.tilings, "the plan has no tiled stage"
    with workers.client(timeout_s=30) as client:
        options = RunOptions(requests=requests, verify=True, shaping="none", plan_version=version, timeout_s=120)
        return run_plan(plan, problem, client, workers.endpoint, options, example_inputs(graph, seed=3))


def assert_lossless(report: dict[str, Any]) -> None:
    assert report["ok"] == report["requests"] and report["verified"], report["errors"]
    assert report["output_scale"] > 0, "the output is all zeros: nothing upstream was compared"
    assert report["bit_identical"] or report["max_abs_err"] <= 1e-5 * report["output_scale"], report


@pytest.fixture(scope="module")
def held_back() -> Graph:
    return captured(HELD_BACK)


@pytest.mark.parametrize(("version", "text"), [
    # a gathers and computes a tile; c takes two tiles
    (301, "stem.0..down@tiles[2x2,fused](a,b,c,c)>a | adaptive_avg_pool2d..head@a"),
    # unequal strips, gathered on c, whose output then crosses back to a
    (302, "stem.0..stem.2@a | depthwise..down@tiles[3x1,rows=5:4:3](b,c,b)>c | adaptive_avg_pool2d..head@a"),
    # one tile row of unequal columns over the two branches joined along channels
    (303, "stem.0..act2@b | same..down@tiles[1x2,cols=7:3](c,a)>b | adaptive_avg_pool2d..head@a"),
])
def test_tiled_plans_of_the_held_back_model_equal_the_unpartitioned_model(held_back: Graph, workers: LocalWorkers,
                                                                          version: int, text: str) -> None:
    report = run_tiled(held_back, text, workers, version)
    assert_lossless(report)
    tiles = [s for s in report["stages"] if "#tile" in s["stage"]]
    plan = parse_plan(text, held_back, DEVICES)
    assert len(tiles) == plan.tilings[0].tile_count
    assert all(s["runs"] >= report["requests"] for s in tiles), report["stages"]
    assert {s["device"] for s in tiles} == set(plan.tilings[0].devices)


@pytest.mark.parametrize(("version", "text"), [
    (311, "stem.0..down@tiles[2x2,halo](a,b,c,b)>a | adaptive_avg_pool2d..head@a"),
    (312, "stem.0..stem.2@a | depthwise..down@tiles[3x1,rows=5:4:3,halo](b,c,a)>c | adaptive_avg_pool2d..head@a"),
    (313, "stem.0..act2@b | same..down@tiles[2x3,halo](c,a,b,b,c,a)>b | adaptive_avg_pool2d..head@a"),
])
def test_halo_exchange_plans_of_the_held_back_model_equal_the_unpartitioned_model(
        held_back: Graph, workers: LocalWorkers, version: int, text: str) -> None:
    report = run_tiled(held_back, text, workers, version)
    assert_lossless(report)
    halos = [s for s in report["stages"] if "#halo" in s["stage"]]
    assert halos and all(s["runs"] >= report["requests"] for s in halos), report["stages"]


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "shape", "text"), [
    ("torchvision:resnet18", (1, 3, 128, 128), "conv1..maxpool@a | layer1..layer2@tiles[2x2,fused](a,b,c,b)>a | "
                                               "layer3..fc@c"),
    ("torchvision:resnet18", (1, 3, 128, 128), "conv1..maxpool@a | layer1..layer2@tiles[2x2,halo](a,b,c,b)>a | "
                                               "layer3..fc@c"),
    ("python:tests.tiling.tiling_models:vgg16_features", None,
     "features.0..features.16@tiles[3x1,rows=4:4:4,fused](b,c,a)>b | features.17..features.30@c"),
    ("python:tests.tiling.tiling_models:vgg16_features", None, "features.0..features.30@tiles[2x2,halo](a,b,c,a)>c"),
])
def test_tiled_plans_of_real_models_equal_the_unpartitioned_model(spec: str, shape: tuple[int, ...] | None, text: str,
                                                                  full_size_workers: LocalWorkers) -> None:
    graph = captured(spec, input_shape=shape) if shape else captured(spec)
    assert_lossless(run_tiled(graph, text, full_size_workers, 320 + len(text)))

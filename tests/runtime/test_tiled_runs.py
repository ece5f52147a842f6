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


def run_tiled(graph: Graph, text: str, workers: LocalWorkers, version: int, requests: int = 2,
              steal: bool = False) -> dict[str, Any]:
    problem = make_problem(graph, cluster_from_dict(THREE, "three.yaml"))
    plan = parse_plan(text, graph, DEVICES)
    assert plan.tilings, "the plan has no tiled stage"
    with workers.client(timeout_s=30) as client:
        options = RunOptions(requests=requests, verify=True, shaping="none", plan_version=version, timeout_s=120,
                             steal=steal)
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
    ("python:benchmarks.tiling_models:darknet16", None, "layers.0.0..layers.15.2@tiles[2x2,fused](b,c,a,b)>a"),
    ("python:benchmarks.tiling_models:darknet16", None, "steal: layers.0.0..layers.15.2@tiles[3x3,fused]"
                                                         "(b,c,a,b,c,a,b,c,a)>c"),
    ("python:benchmarks.tiling_models:darknet16", None, "layers.0.0..layers.7@a | layers.8.0..layers.15.2@tiles["
                                                         "3x1,rows=10:8:8,halo](c,b,a)>b"),
])
def test_tiled_plans_of_real_models_equal_the_unpartitioned_model(spec: str, shape: tuple[int, ...] | None, text: str,
                                                                  full_size_workers: LocalWorkers) -> None:
    graph = captured(spec, input_shape=shape) if shape else captured(spec)
    steal = text.startswith("steal: ")
    report = run_tiled(graph, text.removeprefix("steal: "), full_size_workers, 320 + len(text), steal=steal)
    assert_lossless(report)
    assert ("stealing" in report) == steal


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "steal"), [("halo", False), ("fused", True)])
def test_a_killed_tile_worker_costs_a_re_route_never_a_request(held_back: Graph, mode: str, steal: bool) -> None:
    from coinfer.runtime.delivery import run_requests
    from coinfer.runtime.deploy import deploy
    from coinfer.runtime.recovery import Recovery
    from coinfer.runtime.reference import reference_outputs
    from coinfer.runtime.verify import Comparison
    from coinfer.runtime.watchdog import Watchdog
    from tests.runtime.test_failures import after_answers

    problem = make_problem(held_back, cluster_from_dict(THREE, "three.yaml"))
    plan = parse_plan(f"stem.0..down@tiles[2x2,{mode}](b,c,b,c)>a | adaptive_avg_pool2d..head@a", held_back, DEVICES)
    x = example_inputs(held_back, seed=4)
    expected = reference_outputs(held_back, x, 1)
    options = RunOptions(plan_version=1, timeout_s=30, steal=steal)
    with LocalWorkers(DEVICES) as workers, workers.client(timeout_s=10) as client:
        outputs = tuple(deploy(client, plan, problem, workers.endpoint, options)["a"]["results"])
        with Watchdog(client.control_connection, DEVICES, down_after_s=0.5) as watchdog:
            recovery = Recovery(client, plan, problem, workers.endpoint, options, watchdog)
            assert [d for d, _ in recovery.failovers(plan)] == ["b", "c"]  # each tile device's loss is prepared
            recovery.prepare_standbys()
            outcomes = run_requests(client, "a", recovery.version, outputs, lambda _: x, 40, 3, 30.0,
                                    on_done=after_answers(8, lambda: workers.kill("c")), rerouter=recovery)
    assert sorted(o.request_id for o in outcomes) == list(range(1, 41))
    assert all(o.ok for o in outcomes), [o.errors for o in outcomes if not o.ok][:2]
    comparison = Comparison()
    for o in outcomes:
        comparison.add(o.outputs, expected, f"request {o.request_id}")
    assert comparison.ok and comparison.compared == 40, comparison.report()
    # c's tiles moved to b: the grid and mode stay, no re-solve
    assert recovery.current.tilings[0].devices == ("b", "b", "b", "b") and "c" not in recovery.current.devices_used

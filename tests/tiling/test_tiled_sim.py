"""The simulator runs tiled stages as the runtime does (lowered to crop, tile, halo and stitch
stages) and agrees with cost.evaluate."""

from __future__ import annotations

from typing import Any

import pytest

from coinfer.api import make_problem
from coinfer.cost import evaluate
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph
from coinfer.plan import parse_plan
from coinfer.sim import simulate
from tests.tiling.test_tiled_plans import CLUSTER, DEVICES, HEAD


@pytest.mark.parametrize("text", [
    f"stem.0..down@tiles[2x2](a,b,c,b)>c | {HEAD}",
    f"stem.0..down@tiles[2x2,halo](a,b,c,b)>a | {HEAD}",
    f"stem.0..stem.2@b | depthwise..down@tiles[3x1,rows=5:4:3,halo](b,c,a)>c | {HEAD}",
])
@pytest.mark.parametrize("execution", ["serial", "dataflow"])
def test_one_request_takes_what_evaluate_predicts(dilated_residual: tuple[Graph, Any], text: str,
                                                   execution: str) -> None:
    problem = make_problem(dilated_residual[0], cluster_from_dict(CLUSTER, "four.yaml"))
    plan = parse_plan(text, problem.graph, DEVICES)
    result = simulate(problem, plan, requests=2, execution=execution)  # type: ignore[arg-type]
    predicted = evaluate(plan, problem).latency_s
    assert [r.latency_s for r in result.records] == pytest.approx([predicted] * 2, rel=1e-9)
    tiles = {s.device for r in result.records for s in r.stages if any("#tile" in n for n in s.node_ids)}
    assert tiles == set(plan.tilings[0].tile_devices)  # the tiles ran on their devices


def test_pipelined_requests_overlap_their_tiles(dilated_residual: tuple[Graph, Any]) -> None:
    problem = make_problem(dilated_residual[0], cluster_from_dict(CLUSTER, "four.yaml"))
    plan = parse_plan(f"stem.0..down@tiles[2x1](b,c)>a | {HEAD}", problem.graph, DEVICES)
    one = simulate(problem, plan, requests=20, in_flight=1, execution="dataflow")
    four = simulate(problem, plan, requests=20, in_flight=4, execution="dataflow")
    assert four.throughput_rps > one.throughput_rps * 1.2

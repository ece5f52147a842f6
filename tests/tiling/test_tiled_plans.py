"""Plans with tiled stages: the one-line form, the plan file, the checks, failover, and cost.evaluate's price."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from coinfer.api import make_problem
from coinfer.cost import evaluate
from coinfer.cost.tiled_plan import scatter_device, tiled_stage_costs
from coinfer.errors import PlanError
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.files.plan_file import plan_from_dict, plan_to_dict
from coinfer.graph import Graph
from coinfer.plan import Plan, parse_plan
from coinfer.plan_tiling import Tiling
from coinfer.problem import Problem

DEVICES = ("a", "b", "c", "d")
CLUSTER: dict[str, Any] = {
    "devices": {"a": {"flops_per_s": 1e10, "origin": True, "power_w": 2.0, "idle_power_w": 0.5},
                "b": {"flops_per_s": 1e10, "power_w": 5.0}, "c": {"flops_per_s": 2e10, "power_w": 8.0},
                "d": {"flops_per_s": 2e10}},
    "links": [{"between": [x, y], "bandwidth_bits_per_s": 1e9, "latency_s": 0.0005, "power_w": 1.0}
              for x, y in (("a", "b"), ("a", "c"), ("b", "c"), ("a", "d"), ("b", "d"))],  # no c<->d link
}
HEAD = "adaptive_avg_pool2d..head@a"


@pytest.fixture(scope="module")
def problem(dilated_residual: tuple[Graph, Any]) -> Problem:
    return make_problem(dilated_residual[0], cluster_from_dict(CLUSTER, "four.yaml"))


def test_the_one_line_form_round_trips_with_grid_sizes_mode_and_gather(problem: Problem) -> None:
    graph = problem.graph
    for text in (f"stem.0..down@tiles[2x2,fused](a,b,c,b)>a | {HEAD}",
                 f"stem.0..down@tiles[2x1,rows=7:5,halo](b,c)>c | {HEAD}",
                 f"stem.0..stem.2@a | depthwise..down@tiles[1x3,cols=3:3:4,fused](a,b,a)>b | {HEAD}"):
        plan = parse_plan(text, graph, DEVICES)
        assert str(plan) == text
        again = parse_plan(str(plan), graph, DEVICES)
        assert again.tilings == plan.tilings and dict(again.placement) == dict(plan.placement)
    plan = parse_plan(f"stem.0..down@tiles[2x1,rows=7:5,halo](b,c)>c | {HEAD}", graph, DEVICES)
    (tiling,) = plan.tilings
    assert (tiling.tile_rows, tiling.tile_cols, tiling.row_sizes, tiling.mode) == (2, 1, (7, 5), "halo")
    assert plan.placement["mix"] == "c" and plan.placement["head"] == "a"  # range nodes on the gather device
    assert [s.tiling is not None for s in plan.stages] == [True, False]
    assert plan.devices_used == ("b", "c", "a")


def test_without_a_gather_device_the_next_reader_gathers(problem: Problem) -> None:
    plan = parse_plan("stem.0..down@tiles[2x2](b,c,b,c) | adaptive_avg_pool2d..head@d", problem.graph, DEVICES)
    assert plan.tilings[0].gather == "d" and plan.tilings[0].mode == "fused"
    assert str(plan).startswith("stem.0..down@tiles[2x2,fused](b,c,b,c)>d | ")


@pytest.mark.parametrize(("text", "words"), [
    ("stem.0..down@tiles[2x2,fused](a,b,c) | " + HEAD, ["2x2 grid has 4 tiles", "3 are named"]),
    ("stem.0..down@tiles[2x2,fused](a,b,c,x) | " + HEAD, ["unknown device 'x'"]),
    ("stem.0..down@tiles[2x2,spread](a,b,c,d) | " + HEAD, ["'spread'", "fused or halo"]),
    ("stem.0..down@tiles[13x1](" + ",".join(["a"] * 13) + ") | " + HEAD, ["13 tile rows", "12x10", "at most 12"]),
    ("stem.0..down@tiles[2x1,rows=6:5](a,b) | " + HEAD, ["add up to 11", "12 rows"]),
    ("stem.0..down@tiles 2x2 (a,b,c,d) | " + HEAD, ["should look like"]),
])
def test_bad_tile_specs_name_what_is_wrong(problem: Problem, text: str, words: list[str]) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(text, problem.graph, DEVICES)
    for word in words:
        assert word in str(info.value)


def test_a_range_that_mixes_positions_or_a_missing_link_is_refused_by_name(problem: Problem) -> None:
    through_pool = parse_plan("stem.0..flatten@tiles[2x1](a,b) | head@a", problem.graph, DEVICES)
    with pytest.raises(PlanError, match=r"'adaptive_avg_pool2d'.*tile a range that ends before"):
        evaluate(through_pool, problem)
    no_link = parse_plan(f"stem.0..down@tiles[2x1](c,d)>c | {HEAD}", problem.graph, DEVICES)
    with pytest.raises(PlanError, match="link d->c"):
        evaluate(no_link, problem)


def test_plans_overlap_or_misplace_tiled_nodes_are_refused(problem: Problem) -> None:
    graph = problem.graph
    tiling = Tiling("stem.0", "down", ("a", "b"), "a", 2, 1)
    placement = {n.id: "a" for n in graph.nodes}
    with pytest.raises(PlanError, match="gather device 'a'"):
        Plan(graph, {**placement, "mix": "b"}, tilings=(tiling,))
    with pytest.raises(PlanError, match="in two tiled stages"):
        Plan(graph, placement, tilings=(tiling, Tiling("mix", "down", ("a",), "a")))
    with pytest.raises(PlanError, match="standbys"):
        Plan(graph, placement, standbys={"mix": ("b",)}, tilings=(tiling,))


def test_the_plan_file_keeps_tiled_stages(problem: Problem) -> None:
    plan = parse_plan(f"stem.0..down@tiles[2x2,rows=8:4,halo](a,b,c,b)>b | {HEAD}", problem.graph, DEVICES)
    doc = json.loads(json.dumps(plan_to_dict(plan, problem, evaluate(plan, problem))))
    assert doc["tilings"] == [{"first": "stem.0", "last": "down", "grid": [2, 2], "mode": "halo",
                               "devices": ["a", "b", "c", "b"], "gather": "b", "row_sizes": [8, 4]}]
    assert doc["predicted"]["tiled_stages"][0]["mode"] == "halo"
    loaded, again = plan_from_dict(doc)
    assert loaded.tilings == plan.tilings and str(loaded) == str(plan)
    assert evaluate(loaded, again).latency_s == pytest.approx(evaluate(plan, problem).latency_s)
    doc["tilings"][0]["devices"][1] = "phone"
    with pytest.raises(PlanError, match="'tilings' names device"):
        plan_from_dict(doc)


def test_one_tile_on_the_range_device_costs_what_the_untiled_range_costs(problem: Problem) -> None:
    untiled = evaluate(parse_plan("stem.0..down@b | " + HEAD, problem.graph, DEVICES), problem)
    tiled = evaluate(parse_plan("stem.0..down@tiles[1x1](b)>b | " + HEAD, problem.graph, DEVICES), problem)
    for metric in ("latency_s", "compute_s", "transfer_s", "energy_j", "origin_energy_j", "cost_usd", "reliability",
                   "bottleneck_s"):
        assert getattr(tiled, metric) == pytest.approx(getattr(untiled, metric), rel=1e-9), metric
    assert tiled.memory_by_device_bytes["b"] == untiled.memory_by_device_bytes["b"]
    assert tiled.cut_bytes == untiled.cut_bytes


def test_evaluate_adds_the_tiled_stage_and_drops_the_hop_it_replaces(problem: Problem) -> None:
    plan = parse_plan(f"stem.0..down@tiles[2x2](a,b,c,b)>c | {HEAD}", problem.graph, DEVICES)
    b = evaluate(plan, problem)
    (stage,) = tiled_stage_costs(plan, problem)
    assert (stage.scatter, stage.gather) == (scatter_device(plan, problem, plan.tilings[0]), "c") == ("a", "c")
    assert b.tiled_stages == (stage,)
    # no hop carries the range input: the scatter sends crops instead; the output goes c -> a once
    assert [(t.tensor, t.source, t.target) for t in b.transfers] == [("down", "c", "a")]
    hop = b.transfers[0].time_s
    head_s = sum(problem.node_time_s["a"][n] for n in ("adaptive_avg_pool2d", "flatten", "head"))
    assert b.latency_s == pytest.approx(stage.latency_s + hop + head_s)
    assert b.compute_s == pytest.approx(stage.critical_compute_s + head_s)
    assert b.cut_bytes == stage.moved_bytes + b.transfers[0].size_bytes
    # energy: each device's tile compute at its busy power plus what it sends at the link's power
    busy = {d: x.compute_s for d, x in stage.devices.items()}
    sent = {d: sum(u.transfer_s for (s, _), u in stage.link_use.items() if s == d) for d in DEVICES}
    assert b.energy_by_device_j["b"] == pytest.approx(5.0 * busy["b"] + 1.0 * sent["b"])
    assert b.energy_by_device_j["c"] == pytest.approx(8.0 * busy["c"] + 1.0 * (sent["c"] + hop))
    # memory: every tile device holds the range's weights and its largest tile working set
    for device in ("b", "c"):
        assert b.memory_by_device_bytes[device] >= stage.devices[device].memory_bytes > stage.weights_bytes
    assert b.stages[0].compute_s == stage.critical_compute_s and b.stages[0].device == "c"


def test_reliability_counts_every_tile_device_and_link(dilated_residual: tuple[Graph, Any]) -> None:
    doc = json.loads(json.dumps(CLUSTER))
    doc["devices"]["b"]["failure_probability"] = 0.1
    doc["devices"]["d"]["failure_probability"] = 0.2
    doc["links"][0]["failure_probability"] = 0.05  # a<->b
    problem = make_problem(dilated_residual[0], cluster_from_dict(doc, "four.yaml"))
    plan = parse_plan(f"stem.0..down@tiles[2x1](b,d)>a | {HEAD}", problem.graph, DEVICES)
    # b and d compute tiles; a->b, b->a, a->d and d->a carry crops and tiles
    assert evaluate(plan, problem).reliability == pytest.approx(0.9 * 0.8 * 0.95 * 0.95)


def test_failover_gives_a_lost_devices_tiles_to_the_others(problem: Problem) -> None:
    plan = parse_plan(f"stem.0..down@tiles[2x2](a,b,c,b)>a | {HEAD}", problem.graph, DEVICES)
    moved = plan.failover(["b"])
    assert moved is not None and moved.tilings[0].devices == ("a", "a", "c", "c")
    assert math.isfinite(evaluate(moved, problem).latency_s)
    assert plan.failover(["a"]) is None  # the gather device (and origin) is gone

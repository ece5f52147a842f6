"""Work stealing over fused tiles: the scatter device's queues, the routes, the checks, and real runs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from coinfer.api import make_problem
from coinfer.errors import PlanError, WireError
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph, TensorSpec
from coinfer.plan import parse_plan
from coinfer.runtime.deploy import lowered_for_run
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.packaging import packager_for
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.routing import RunStage, route
from coinfer.runtime.run import RunOptions, run_plan
from coinfer.runtime.stealing import POOLED_TILE, PREFETCH_TILES, TOKEN, Dispatcher, PoolTile, TilePool
from coinfer.runtime.worker.pooled_tiles import PooledTiles
from tests.runtime.conftest import DEVICES, THREE
from tests.runtime.test_tiled_runs import HELD_BACK, assert_lossless, captured


def pool_of(planned: list[str], scatter: str = "s", gather: str = "g") -> TilePool:
    tiles = tuple(PoolTile(f"t{i}", f"c{i}", f"o{i}", d) for i, d in enumerate(planned))
    return TilePool("stitch", tiles, scatter, gather, tuple(dict.fromkeys(planned)))


def offer_all(dispatcher: Dispatcher, request_id: int = 1) -> list[tuple[str, str]]:
    sent: list[tuple[str, str]] = []
    for i in range(len(dispatcher.pool.tiles)):
        sent += [(d, c) for d, c, _ in dispatcher.offer(request_id, f"c{i}", np.full(1, i))]
    return sent


def test_first_sends_are_each_devices_own_tiles_up_to_the_prefetch_depth() -> None:
    d = Dispatcher(pool_of(["x", "x", "x", "y", "z", "z"]))
    assert PREFETCH_TILES == 2
    assert offer_all(d) == [("x", "c0"), ("x", "c1"), ("y", "c3"), ("z", "c4"), ("z", "c5")]
    assert d.stolen == 0  # nobody steals before being idle


def test_an_idle_device_steals_from_the_end_of_the_longest_queue() -> None:
    d = Dispatcher(pool_of(["x"] * 5 + ["y"] + ["z"] * 3))
    offer_all(d)  # x has c2, c3, c4 queued; z has c8
    assert [(dev, c) for dev, c, _ in d.done(1, "t5#done", "y")] == [("y", "c4")]
    assert d.stolen == 1
    assert [(dev, c) for dev, c, _ in d.done(1, "t0#done", "x")] == [("x", "c2")]  # x refills from its own queue
    assert [(dev, c) for dev, c, _ in d.done(1, "t6#done", "z")] == [("z", "c8")]
    assert [(dev, c) for dev, c, _ in d.done(1, "t4#done", "y")] == [("y", "c3")]  # the last one x had queued
    assert d.stolen == 2


def test_each_crop_is_handed_out_once_with_its_own_array() -> None:
    d = Dispatcher(pool_of(["x", "x", "x", "y"]))
    handed = {c: int(a[0]) for _, c, a in
              [s for i in range(4) for s in d.offer(7, f"c{i}", np.full(1, i))]}
    outstanding = [("x", "t0"), ("x", "t1"), ("y", "t3")]
    while outstanding:
        device, tile = outstanding.pop(0)
        for dev, c, a in d.done(7, f"{tile}#done", device):
            handed[c] = int(a[0])
            outstanding.append((dev, c.replace("c", "t")))
    assert handed == {"c0": 0, "c1": 1, "c2": 2, "c3": 3}
    assert d.requests == {}  # every tile reported: the request's queues are gone


def test_a_token_for_a_tile_not_sent_to_its_sender_is_refused() -> None:
    d = Dispatcher(pool_of(["x", "y"]))
    offer_all(d)
    with pytest.raises(WireError, match="was not sent to it"):
        d.done(1, "t0#done", "y")
    d.done(1, "t0#done", "x")
    with pytest.raises(WireError, match="was not sent to it"):
        d.done(1, "t0#done", "x")  # a replay
    with pytest.raises(WireError, match="was not sent to it"):
        d.done(2, "t1#done", "y")  # a request that never started


def _pooled_device(device: str, sent: list[tuple[str, str]], delivered: list[str],
                   queued: list[str]) -> PooledTiles:
    from coinfer.runtime.routing import DeviceRoute

    pool = pool_of(["s", "y"], scatter="s", gather="g")
    stages = {t.crop: RunStage(i, t.node_id, device, (t.node_id,), (t.node_id,), frozenset([t.crop]), (t.output,))
              for i, t in enumerate(pool.tiles)}
    r = DeviceRoute(device, (), frozenset(), {}, (), pool_stages=stages, pools=(pool,))

    def run(stage: RunStage, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {stage.keep[0]: next(iter(values.values())) * 2}

    return PooledTiles(r, {"c0": TensorSpec(4, (1,), "float32"), "c1": TensorSpec(4, (1,), "float32")},
                       lambda t, rid, name, a: sent.append((t, name)), lambda t, rid, name, a: sent.append((t, name)),
                       run, lambda rid, name, a: delivered.append(name), lambda rid, crop, a: queued.append(crop))


def test_a_pool_device_checks_every_crop_and_token_it_gets() -> None:
    sent: list[tuple[str, str]] = []
    y = _pooled_device("y", sent, [], [])
    crop = np.ones(1, dtype=np.float32)
    with pytest.raises(WireError, match="but s scatters it"):
        y.arrive(1, "c1", crop, "g")
    with pytest.raises(WireError, match=r"expected float32\[1\]"):
        y.arrive(1, "c1", np.ones(2, dtype=np.float32), "s")
    y.arrive(1, "c1", crop, "s")
    assert sent == [("g", "o1"), ("s", "t1#done")]  # the output to the gather device, the token to the scatter
    with pytest.raises(WireError, match="came twice"):
        y.arrive(1, "c1", crop, "s")
    s = _pooled_device("s", [], [], [])
    with pytest.raises(WireError, match="not uint8"):
        s.arrive(1, "t1#done", np.zeros(1, dtype=np.float32), "y")
    with pytest.raises(WireError, match="was not sent to it"):
        s.arrive(1, "t1#done", TOKEN, "y")


def test_the_scatter_device_queues_its_own_tiles_and_sends_the_others() -> None:
    sent: list[tuple[str, str]] = []
    queued: list[str] = []
    s = _pooled_device("s", sent, [], queued)
    for i in range(2):
        s.offer(1, f"c{i}", np.ones(1, dtype=np.float32))
    assert queued == ["c0"] and sent == [("y", "c1")]


# -- on a real model's lowered plan ------------------------------------------------------------

SKEWED = "stem.0..down@tiles[3x3,fused](a,a,a,a,a,a,a,b,c)>b | adaptive_avg_pool2d..head@a"
# a is 30x slower than b and c: under emulation its seven tiles take long, so b and c run dry and steal
SLOW_A: dict[str, Any] = {**THREE, "devices": {**THREE["devices"], "a": {"flops_per_s": 3e8, "origin": True}}}


@pytest.fixture(scope="module")
def held_back() -> Graph:
    return captured(HELD_BACK)


def test_stealing_pools_every_fused_tile_on_every_tile_device(held_back: Graph) -> None:
    problem = make_problem(held_back, cluster_from_dict(THREE, "three.yaml"))
    plan = parse_plan(SKEWED, held_back, DEVICES)
    lowered, _, packager = lowered_for_run(plan, problem, packager_for(held_back), steal=True)
    assert sum(n.op == POOLED_TILE for n in lowered.graph.nodes) == 9
    routes = route(lowered, packager.index, "a")
    for device in ("a", "b", "c"):
        assert len(routes[device].pool_stages) == 9, device
        assert not any("#tile" in s.label for s in routes[device].stages), device  # none fixed to a device
    (pool,) = routes["a"].pools
    assert (pool.scatter, pool.gather, pool.devices) == ("a", "b", ("a", "b", "c"))
    gather = routes["b"]
    assert all(gather.senders[t.output] == {"a", "b", "c"} for t in pool.tiles)
    assert not any(t.crop in routes["a"].sends for t in pool.tiles)  # the dispatcher sends them
    static, _, static_packager = lowered_for_run(plan, problem, packager_for(held_back))
    assert not route(static, static_packager.index, "a")["b"].pool_stages


def test_stealing_needs_a_fused_tiled_stage(held_back: Graph, workers: LocalWorkers) -> None:
    problem = make_problem(held_back, cluster_from_dict(THREE, "three.yaml"))
    plan = parse_plan("stem.0..down@tiles[2x1,halo](b,c)>a | adaptive_avg_pool2d..head@a", held_back, DEVICES)
    with workers.client() as client, pytest.raises(PlanError, match="no fused tiled stage"):
        run_plan(plan, problem, client, workers.endpoint, RunOptions(steal=True), example_inputs(held_back))


@pytest.mark.parametrize(("version", "steal"), [(321, False), (322, True)])
def test_idle_devices_steal_a_slow_devices_tiles_and_outputs_stay_exact(
        held_back: Graph, workers: LocalWorkers, version: int, steal: bool) -> None:
    problem = make_problem(held_back, cluster_from_dict(SLOW_A, "slow-a.yaml"))
    plan = parse_plan(SKEWED, held_back, DEVICES)
    options = RunOptions(requests=3, verify=True, emulate=True, shaping="none", plan_version=version,
                         timeout_s=120, steal=steal)
    with workers.client(timeout_s=30) as client:
        report = run_plan(plan, problem, client, workers.endpoint, options, example_inputs(held_back, seed=3))
    assert_lossless(report)
    tiles = [s for s in report["stages"] if "#tile" in s["stage"]]
    assert len(tiles) == 9 and all(s["runs"] == report["requests"] + 1 for s in tiles), tiles  # warm-up too
    if not steal:
        assert "stealing" not in report and not any("runs_by_device" in s for s in tiles)
        return
    assert report["stealing"]["stolen_tiles"] > 0, report["stealing"]
    moved = [s for s in tiles if s["device"] == "a" and set(s.get("runs_by_device", {})) - {"a"}]
    assert moved, tiles  # some of a's tiles ran on b or c
    assert sum(n for s in tiles for d, n in s.get("runs_by_device", {}).items() if d != s["device"]) \
        == report["stealing"]["stolen_tiles"]

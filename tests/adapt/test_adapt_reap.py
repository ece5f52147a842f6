"""reap: its estimate equals cost.evaluate on splits, its schedule, forced switches, fallback, refusal."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from coinfer.adapt.policies import get_policy
from coinfer.adapt.policies.reap import ReapState, chain_devices
from coinfer.adapt.policies.reap_model import ChainModel
from coinfer.adapt.synthetic import Replay
from coinfer.cluster import Cluster, Device, Link
from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan, all_on
from coinfer.problem import Problem
from tests.adapt.helpers import chain_graph, edge_fog_cloud, phone_edge, problem_of, slower, with_link

# 10 nodes of 0.1 GFLOP, 10 kB each: 0.1 s a node on the edge (12 W), 10 ms on the fog, 1 ms on the
# cloud; all on the edge takes 1 s and 12 J.
TEN = chain_graph([1e8] * 10, [10_000] * 10)


def skip_dag() -> Graph:
    """A DAG whose values cross both cuts: n0 is read by n1 and n4; n2 by n3 and the output join."""
    spec = [("n0", ("input",)), ("n1", ("n0",)), ("n2", ("n1",)), ("n3", ("n2",)), ("n4", ("n3", "n0")),
            ("n5", ("n4",)), ("join", ("n5", "n2"))]
    nodes = tuple(Node(name, inputs, 1e8 * (k + 1), 1000 * (k + 3)) for k, (name, inputs) in enumerate(spec))
    return Graph("skips", (GraphInput("input", TensorSpec(5000)),), nodes)


def full_mesh() -> Cluster:
    base = edge_fog_cloud()
    links = tuple(Link(a.name, b.name, 8e6 * (k + 1), latency_s=0.002 * k, power_w=0.5 * (a.name == "edge"))
                  for k, (a, b) in enumerate((a, b) for a in base.devices for b in base.devices if a != b))
    return Cluster("mesh", base.devices, links)


def waiting_edge(cluster: Cluster, idle_w: float = 9.0) -> Cluster:
    """The edge draws `idle_w` while it waits for the answer (the origin's waiting energy)."""
    return replace(cluster, devices=tuple(replace(d, idle_power_w=idle_w) if d.origin else d for d in cluster.devices))


@pytest.mark.parametrize("cluster", [full_mesh(), edge_fog_cloud(return_link=False), waiting_edge(full_mesh())],
                         ids=["mesh", "chain", "mesh-idle"])
def test_the_estimate_of_every_split_equals_evaluate(cluster: Cluster) -> None:
    problem = problem_of(skip_dag(), cluster)
    model = ChainModel.build(problem, chain_devices(cluster))
    est = model.estimate(model.profile_sigma, problem)
    runnable = model.runnable(cluster)
    n = model.n
    for i in range(n + 1):
        for j in range(i, n + 1):
            cost = evaluate(model.plan((i, j)), problem)
            assert runnable[i, j] == math.isfinite(cost.latency_s)
            assert model.split_of(model.plan((i, j))) == (i, j)
            if not runnable[i, j]:
                assert est.latency_s[i, j] == math.inf
                continue
            assert est.latency_s[i, j] == pytest.approx(cost.latency_s, rel=1e-12)
            assert est.total_energy_j[i, j] == pytest.approx(cost.energy_j, rel=1e-12)
            assert est.edge_energy_j[i, j] == pytest.approx(cost.origin_energy_j, rel=1e-12)
            one = model.estimate_plan(model.plan((i, j)), model.profile_sigma, problem)
            assert float(one.latency_s) == pytest.approx(cost.latency_s, rel=1e-12)


def test_split_of_reads_back_a_split_and_rejects_other_plans() -> None:
    problem = problem_of(TEN, edge_fog_cloud())
    model = ChainModel.build(problem, chain_devices(problem.cluster))
    assert model.split_of(model.plan((3, 7))) == (3, 7)
    assert model.split_of(model.plan((0, 10))) == (0, 10)  # all on the fog
    assert model.split_of(model.plan((4, 4))) == (4, 4)  # nothing on the fog
    assert model.split_of(all_on(TEN, "cloud")) == (0, 0)
    back = dict(model.plan((2, 5)).placement) | {"n9": "fog"}  # fog, cloud, then fog again
    assert model.split_of(Plan(TEN, back)) is None


def run(loop: Replay, steps: int, truth: Problem | None = None) -> list[tuple[int, str, str]]:
    """(request number, plan or '-', reason) of every decision that switched or said why."""
    out = []
    for _ in range(steps):
        d = loop.step(truth)
        if d.plan is not None or d.reason:
            out.append((loop.served, str(d.plan) if d.plan is not None else "-", d.reason))
    return out


def test_reap_walks_its_phases_in_order() -> None:
    problem = problem_of(TEN, edge_fog_cloud())
    loop = Replay(get_policy("reap"), problem, all_on(TEN, "edge"))
    first = loop.step()
    assert set(first.probe_links) == {("edge", "fog"), ("fog", "edge"), ("fog", "cloud"), ("cloud", "fog"),
                                      ("cloud", "edge")}  # the link models, measured once at the start
    events = run(loop, 194)
    # baseline 50 on the static split; probe splits at fifths (2, 4), (4, 6), (6, 8), 15 requests
    # each; back to the static split; the first window of 100 ends at request 195
    assert [(k, plan) for k, plan, _ in events[:4]] == [
        (50, "n0..n1@edge | n2..n3@fog | n4..n9@cloud"),
        (65, "n0..n3@edge | n4..n5@fog | n6..n9@cloud"),
        (80, "n0..n5@edge | n6..n7@fog | n8..n9@cloud"),
        (95, "n0..n9@edge"),
    ]
    assert "probes done" in events[3][2]
    # the first window: offloading all but nothing to the edge wins (the edge's 12 W dominate)
    assert events[4][0] == 195 and "window end" in events[4][2] and events[4][1] == "n0@fog | n1..n9@cloud"
    assert len(events) == 5
    state = loop.state
    assert isinstance(state, ReapState) and state.phase == "window" and state.count == 0
    # link probes are asked 5 requests before each window end
    asked = []
    for _ in range(100):
        if loop.step().probe_links:
            asked.append(loop.served)
    assert asked == [290]


def test_a_deadline_miss_forces_a_switch_even_to_a_worse_score() -> None:
    problem = problem_of(TEN, edge_fog_cloud(), deadline_s=0.6)
    loop = Replay(get_policy("reap"), problem, all_on(TEN, "edge"))
    events = run(loop, 110)
    # back on the static split (1 s, over the 0.6 s deadline) at 95; the miss forces a switch once
    # 5 requests ran on it, without waiting for the window end
    assert events[4][0] == 100 and "deadline missed" in events[4][2] and events[4][1] == "n0@fog | n1..n9@cloud"
    run(loop, 10)
    # one request delayed 0.7 s on the edge -> fog link misses the deadline on the best split: the
    # policy must leave it, to a split it scores higher
    forced = run(loop, 1, with_link(problem, "edge", "fog", latency_s=0.7))
    assert len(forced) == 1 and "deadline missed" in forced[0][2] and forced[0][1] != "-"
    assert "(+" in forced[0][2]  # the score got worse: no hysteresis could have allowed it


def test_reap_falls_back_to_the_static_split() -> None:
    problem = problem_of(TEN, edge_fog_cloud())
    loop = Replay(get_policy("reap"), problem, all_on(TEN, "edge"))
    run(loop, 195)
    assert loop.current.devices_used == ("fog", "cloud")
    crawling = slower(slower(problem, "fog", 1000.0), "cloud", 1000.0)
    events = run(loop, 100, crawling)
    assert events[-1][0] == 295 and "fall back to the static split" in events[-1][2]
    assert loop.current is loop.static


@pytest.mark.parametrize(("hysteresis", "switches"), [(0.03, False), (0.0, True)])
def test_hysteresis_holds_on_a_one_percent_better_score(hysteresis: float, switches: bool) -> None:
    # after the first window (0, 1) is in use; a cloud 2.62x slower makes all on the fog (0, 10)
    # score 1.0% better (0.08263 -> 0.08182): not enough for the paper's 3%
    problem = problem_of(TEN, edge_fog_cloud())
    loop = Replay(get_policy("reap", hysteresis=hysteresis), problem, all_on(TEN, "edge"))
    run(loop, 195)
    events = run(loop, 100, slower(problem, "cloud", 2.62))
    assert len(events) == 1 and "(-1.0%)" in events[0][2]
    assert (events[0][1] == "n0..n9@fog") == switches


def test_probe_splits_move_to_splits_the_links_can_run() -> None:
    # no cloud -> edge link: a split that uses the cloud cannot
    # return its result, so the probe splits keep the cloud empty
    problem = problem_of(TEN, edge_fog_cloud(return_link=False))
    state = get_policy("reap").initial_state(Replay(get_policy("static"), problem, all_on(TEN, "edge")).view(None))
    assert isinstance(state, ReapState)
    assert state.probe_splits == ((2, 10), (4, 10), (6, 10))
    assert not state.runnable[2, 4] and state.runnable[2, 10]


def test_reap_refuses_what_is_not_a_three_device_chain() -> None:
    two = problem_of(TEN, phone_edge())
    with pytest.raises(UserInputError, match=r"3 devices.*has 2 devices.*partial.*resolve"):
        Replay(get_policy("reap"), two, all_on(TEN, "phone"))
    # a star: the origin reaches both servers, which cannot talk to each other
    devices = edge_fog_cloud().devices
    star = Cluster("star", devices, (Link("edge", "fog", 1e8), Link("fog", "edge", 1e8), Link("edge", "cloud", 1e8),
                                     Link("cloud", "edge", 1e8)))
    with pytest.raises(UserInputError, match="in a line"):
        chain_devices(star)
    with pytest.raises(UserInputError, match="has 2 origins"):
        chain_devices(Cluster("two", (*devices[:2], Device("x", "cloud", 1e9, origin=True)), star.links))


def test_chain_order_follows_the_tiers_in_a_full_mesh() -> None:
    assert chain_devices(full_mesh()) == ("edge", "fog", "cloud")
    mesh = full_mesh()
    flipped = Cluster("flipped", (mesh.devices[0], mesh.devices[2], mesh.devices[1]), mesh.links)
    assert chain_devices(flipped) == ("edge", "fog", "cloud")


def test_reap_scores_a_static_plan_that_is_no_split() -> None:
    # the static plan goes fog -> cloud -> fog (chain-dp's kind); reap scores it by evaluate
    problem = problem_of(TEN, edge_fog_cloud())
    placement = {n.id: "fog" for n in TEN.nodes} | {"n5": "cloud", "n6": "cloud"}
    static = Plan(TEN, placement)
    loop = Replay(get_policy("reap"), problem, static)
    events = run(loop, 195)
    assert events[3][1] == str(static) and events[-1][0] == 195
    assert np.isfinite(loop.state.norms).all()

"""The simulator against the cost model: equal latency without contention, 1 / bottleneck throughput."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer.codec_model import Codec
from coinfer.cost import evaluate
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.sim import simulate
from tests.sim.toys import chain_graph, dag_graph, place, problem
from tests.solve.random_problems import problems

CHAIN_PLANS = [
    ("edge",) * 6,
    ("cloud",) * 6,
    ("edge", "edge", "fog", "fog", "cloud", "cloud"),
    ("edge", "fog", "fog", "fog", "fog", "fog"),
    ("edge", "cloud", "fog", "edge", "cloud", "edge"),  # back and forth, every link used
]
# stem, left, right, merge, aux, head. The first three send stem's output to two or three other
# devices; the last starts away from the origin, so the input itself is a hop.
DAG_PLANS = [
    ("edge", "fog", "cloud", "fog", "cloud", "edge"),
    ("edge", "fog", "cloud", "cloud", "fog", "cloud"),
    ("fog", "edge", "cloud", "edge", "fog", "edge"),
    ("cloud", "fog", "fog", "cloud", "edge", "fog"),
    ("edge",) * 6,
]


def one_at_a_time(plan: Plan, p: Problem, requests: int = 3) -> list[float]:
    result = simulate(p, plan, requests=requests, in_flight=1)
    return [r.latency_s for r in result.records if r.latency_s is not None]


@pytest.mark.parametrize("devices", CHAIN_PLANS, ids=lambda d: "-".join(d))
def test_a_chain_takes_what_evaluate_says(devices: tuple[str, ...]) -> None:
    p = problem(chain_graph())
    plan = place(p.graph, *devices)
    expected = evaluate(plan, p).latency_s
    for latency in one_at_a_time(plan, p):
        assert latency == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("devices", DAG_PLANS, ids=lambda d: "-".join(d))
def test_a_dag_with_a_value_read_on_several_devices_takes_what_evaluate_says(devices: tuple[str, ...]) -> None:
    p = problem(dag_graph())
    plan = place(p.graph, *devices)
    breakdown = evaluate(plan, p)
    result = simulate(p, plan, requests=3)
    for record in result.records:
        assert record.latency_s == pytest.approx(breakdown.latency_s, rel=1e-9)
        # Every hop the cost model counts, over the same link, with the same bytes, once.
        assert [(h.source, h.target, h.size_bytes) for h in record.hops] == \
               [(t.source, t.target, t.wire_bytes) for t in breakdown.transfers]
        assert sum(h.seconds for h in record.hops) == pytest.approx(breakdown.transfer_s, rel=1e-9)
        assert [s.device for s in record.stages] == [s.device for s in breakdown.stages]
        assert sum(s.seconds for s in record.stages) == pytest.approx(breakdown.compute_s, rel=1e-9)
        assert record.energy_by_device_j == pytest.approx(dict(breakdown.energy_by_device_j), rel=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_dags_and_placements_take_what_evaluate_says(data: st.DataObject) -> None:
    p = data.draw(problems(max_nodes=6))
    devices = data.draw(st.lists(st.sampled_from(p.cluster.device_names), min_size=len(p.graph.nodes),
                                 max_size=len(p.graph.nodes)))
    plan = place(p.graph, *devices)
    (latency,) = one_at_a_time(plan, p, requests=1)
    assert latency == pytest.approx(evaluate(plan, p).latency_s, rel=1e-9)


def test_a_codec_costs_its_time_and_its_wire_bytes() -> None:
    p = problem(chain_graph())
    plan = dataclasses.replace(place(p.graph, "edge", "edge", "fog", "fog", "cloud", "cloud"),
                               codecs={("edge", "fog"): Codec("fp16"), ("fog", "cloud"): Codec("int8", "lz4")})
    breakdown = evaluate(plan, p)
    record = simulate(p, plan, requests=1).records[0]
    assert record.latency_s == pytest.approx(breakdown.latency_s, rel=1e-9)
    assert [h.size_bytes for h in record.hops] == [t.wire_bytes for t in breakdown.transfers]
    assert record.hops[0].size_bytes < breakdown.transfers[0].size_bytes


def test_background_load_is_left_out_unless_asked_for() -> None:
    # fog carries M/M/1 background load: 1 / (40 - 10) s in system, charged once per request.
    p = problem(chain_graph(), loaded=True)
    plan = place(p.graph, "edge", "fog", "fog", "cloud", "fog", "edge")
    breakdown = evaluate(plan, p)
    assert breakdown.queueing_s == pytest.approx(1 / 30)
    (bare,) = one_at_a_time(plan, p, requests=1)
    assert bare == pytest.approx(breakdown.latency_s - breakdown.queueing_s, rel=1e-9)
    (charged,) = [r.latency_s for r in simulate(p, plan, requests=1, background="mean-delay").records]
    assert charged == pytest.approx(breakdown.latency_s, rel=1e-9)


def test_dataflow_equals_serial_on_chains_and_credits_branches_on_dags() -> None:
    chain = problem(chain_graph())
    plan = place(chain.graph, "edge", "cloud", "fog", "edge", "cloud", "edge")
    serial = simulate(chain, plan, requests=1).records[0].latency_s
    dataflow = simulate(chain, plan, requests=1, execution="dataflow").records[0].latency_s
    assert dataflow == pytest.approx(serial, rel=1e-12)

    # left on fog and right on cloud run at the same time once stem's output has left the edge:
    # the critical path is stem, then the longer of (hop to fog, left, hop back) and (hop to
    # cloud, right, hop back), then merge and head on the edge.
    dag = problem(dag_graph())
    plan = place(dag.graph, "edge", "fog", "cloud", "edge", "edge", "edge")
    b = evaluate(plan, dag)
    hop = {(t.source, t.target, t.tensor): t.time_s for t in b.transfers}
    work = {n.id: dag.node_time_s[plan.placement[n.id]][n.id] for n in dag.graph.nodes}
    via_fog = hop["edge", "fog", "stem"] + work["left"] + hop["fog", "edge", "left"]
    via_cloud = hop["edge", "cloud", "stem"] + work["right"] + hop["cloud", "edge", "right"]
    # aux reads right on the edge after merge: it waits for merge (the device runs stages in order).
    critical = work["stem"] + max(via_fog, via_cloud) + work["merge"] + work["aux"] + work["head"]
    got = simulate(dag, plan, requests=1, execution="dataflow").records[0].latency_s
    assert got == pytest.approx(critical, rel=1e-9)
    assert got is not None and got < b.latency_s


@pytest.mark.parametrize("devices", [("edge", "edge", "fog", "fog", "cloud", "cloud"),
                                     ("edge", "fog", "fog", "fog", "cloud", "cloud"),
                                     ("fog",) * 6])
def test_many_in_flight_pipeline_at_one_over_the_bottleneck(devices: tuple[str, ...]) -> None:
    # Links without propagation latency: the cost model counts a link's latency as busy time,
    # while a real (and the simulated) link keeps sending during it.
    p = problem(chain_graph(), link_latency=False)
    plan = place(p.graph, *devices)
    b = evaluate(plan, p)
    result = simulate(p, plan, requests=400, in_flight=8)
    ends = sorted(e for e in result.timeline.request_end_s)
    steady_rps = (len(ends) // 2 - 1) / (ends[-1] - ends[len(ends) // 2])
    assert steady_rps == pytest.approx(b.throughput_rps, rel=0.01)
    # and one request in flight is much slower whenever the plan spans several resources
    single = simulate(p, plan, requests=20, in_flight=1).throughput_rps
    assert single == pytest.approx(1 / b.latency_s, rel=1e-6)


def test_an_open_loop_below_capacity_sees_no_queue() -> None:
    p = problem(chain_graph())
    plan = place(p.graph, "edge", "edge", "fog", "fog", "cloud", "cloud")
    b = evaluate(plan, p)
    result = simulate(p, plan, requests=30, rate_per_s=0.5 / b.latency_s)
    assert all(r.latency_s == pytest.approx(b.latency_s, rel=1e-9) for r in result.records)
    assert [r.sent_s for r in result.records] == pytest.approx([i * 2 * b.latency_s for i in range(30)])


@pytest.mark.parametrize("devices", DAG_PLANS, ids=lambda d: "-".join(d))
def test_the_origin_waits_at_its_idle_power_as_evaluate_says(devices: tuple[str, ...]) -> None:
    p = problem(dag_graph())
    waiting = tuple(dataclasses.replace(d, idle_power_w=3.0) if d.origin else d for d in p.cluster.devices)
    p = dataclasses.replace(p, cluster=dataclasses.replace(p.cluster, devices=waiting))
    plan = place(p.graph, *devices)
    breakdown = evaluate(plan, p)
    (record,) = simulate(p, plan, requests=1).records
    assert record.energy_by_device_j == pytest.approx(dict(breakdown.energy_by_device_j), rel=1e-9)
    if set(devices) != {"edge"}:  # the edge waited for the other devices and the links
        assert breakdown.origin_energy_j > 5.0 * sum(s.seconds for s in record.stages if s.device == "edge")

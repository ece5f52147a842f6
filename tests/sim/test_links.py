"""Simulated links and devices: FIFO queueing, bandwidth traces, probes, slowdown traces."""

from __future__ import annotations

import pytest
import simpy

from coinfer.adapt.records import HopSample
from coinfer.api import make_problem
from coinfer.cluster import Cluster
from coinfer.cost import evaluate
from coinfer.errors import PlanError
from coinfer.shaping import BandwidthTrace, LinkShaper
from coinfer.sim import SpeedTrace, simulate
from coinfer.sim.conditions import Conditions
from coinfer.sim.network import PROBE_SIZES_BYTES, Process, SimCluster
from tests.sim.toys import chain_graph, cluster, place, problem

# edge -> fog: 80 Mbit/s = 10 MB/s, 2 ms latency, 1 ms overhead per message.
BYTES_PER_S, LATENCY_S, OVERHEAD_S = 10e6, 0.002, 0.001


def send_at(world: SimCluster, at_s: float, size: int, out: list[HopSample]) -> Process:
    yield world.env.timeout(at_s)
    out.append((yield from world.send("edge", "fog", size)))


def test_a_busy_link_queues_messages_first_come_first_served() -> None:
    env = simpy.Environment()
    world = SimCluster(env, cluster(), Conditions())
    got: list[HopSample] = []
    for at_s, size in ((0.0, 1_000_000), (0.01, 500_000), (0.02, 1_000)):
        env.process(send_at(world, at_s, size, got))
    env.run()
    # 1 MB holds the link 1 ms + 100 ms from 0; 500 kB waits until 0.101, then 1 + 50 ms; the
    # 1 kB message waits until 0.152. Each arrives one latency after its last byte left.
    first_free = OVERHEAD_S + 1e6 / BYTES_PER_S
    second_free = first_free + OVERHEAD_S + 5e5 / BYTES_PER_S
    third_free = second_free + OVERHEAD_S + 1e3 / BYTES_PER_S
    assert [h.at_s for h in got] == pytest.approx([first_free + LATENCY_S, second_free + LATENCY_S,
                                                   third_free + LATENCY_S])
    # A sample measures the message alone, not its wait behind the others.
    assert [h.seconds for h in got] == pytest.approx(
        [LATENCY_S + OVERHEAD_S + s / BYTES_PER_S for s in (1e6, 5e5, 1e3)])


def test_other_links_and_the_reverse_direction_do_not_queue() -> None:
    env = simpy.Environment()
    world = SimCluster(env, cluster(), Conditions())
    got: list[HopSample] = []

    def send(source: str, target: str) -> Process:
        got.append((yield from world.send(source, target, 1_000_000)))

    env.process(send("edge", "fog"))
    env.process(send("fog", "edge"))
    env.run()
    assert got[0].at_s == pytest.approx(got[1].at_s)


def test_a_trace_sets_the_bandwidth_the_way_the_link_shaper_says() -> None:
    # fog -> cloud follows 8 Mbit/s for 1 s, then 1 Mbit/s, repeating every 2 s.
    trace = BandwidthTrace((0.0, 1.0), (8e6, 1e6))
    p = problem(chain_graph())
    plan = place(p.graph, "edge", "edge", "fog", "cloud", "cloud", "cloud")
    constant = simulate(p, plan, requests=1).records[0]
    traced = simulate(p, plan, requests=5, traces={("fog", "cloud"): trace})
    hop_index = [(h.source, h.target) for h in constant.hops].index(("fog", "cloud"))
    assert constant.hops[hop_index].size_bytes == 400_000
    for record in traced.records:
        sample = record.hops[hop_index]
        # The sample's message was handed to the link when the previous hop of its request
        # ended; an independent shaper given that moment must agree.
        handed_s = sample.at_s - sample.seconds
        link = p.cluster.link("fog", "cloud")
        assert link is not None
        shaper = LinkShaper(trace, link.latency_s, link.overhead_s)
        assert shaper.arrival_s(handed_s, 400_000) == pytest.approx(sample.at_s, rel=1e-12)
    # The first request starts at a rate of 8 Mbit/s: 400 kB = 3.2 Mbit take 0.4 s unless the
    # rate drops on the way; the constant link (40 Mbit/s) took 80 ms.
    assert traced.records[0].hops[hop_index].seconds > constant.hops[hop_index].seconds
    latencies = {round(r.latency_s or 0.0, 9) for r in traced.records}
    assert len(latencies) > 1  # requests meet different bandwidth


def test_a_trace_drop_mid_message_is_integrated() -> None:
    # 8 Mbit/s for 0.5 s then 1 Mbit/s (long enough not to repeat): a 1 MB (8 Mbit) message
    # sent at 0 moves 3.992 Mbit in the first 0.5 s (after its 1 ms overhead), the rest at 1 Mbit/s.
    trace = BandwidthTrace((0.0, 0.5, 10.0), (8e6, 1e6, 1e6))
    env = simpy.Environment()
    world = SimCluster(env, cluster(), Conditions({("edge", "fog"): trace}))
    got: list[HopSample] = []
    env.process(send_at(world, 0.0, 1_000_000, got))
    env.run()
    moved = (0.5 - OVERHEAD_S) * 8e6
    assert got[0].at_s == pytest.approx(0.5 + (8e6 - moved) / 1e6 + LATENCY_S)


def test_a_probe_sends_two_small_and_two_large_messages_in_turn() -> None:
    env = simpy.Environment()
    world = SimCluster(env, cluster(), Conditions())
    got: list[HopSample] = []
    env.process(world.probe(("fog", "cloud"), got.append))
    env.run()
    assert [h.size_bytes for h in got] == list(PROBE_SIZES_BYTES) == [1_000, 1_000, 1_000_000, 1_000_000]
    assert all(h.probe and (h.source, h.target) == ("fog", "cloud") for h in got)
    link = cluster().link("fog", "cloud")
    assert link is not None
    assert [h.seconds for h in got] == pytest.approx(
        [link.latency_s + link.overhead_s + 8 * s / link.bandwidth_bits_per_s for s in PROBE_SIZES_BYTES])
    # one after another: each leaves when the previous one arrived
    assert got[-1].at_s == pytest.approx(sum(h.seconds for h in got))


def test_a_speed_trace_stretches_the_stage_it_overlaps() -> None:
    trace = SpeedTrace((1.0, 2.0), (3.0, 1.0))  # three times slower during [1, 2)
    assert trace.finish_s(0.0, 0.5) == 0.5
    # half the work before 1 s; a third of a second's work during [1, 2); the last sixth after
    assert trace.finish_s(0.5, 1.0) == pytest.approx(2.0 + (0.5 - 1 / 3))
    assert trace.finish_s(1.5, 1.0) == pytest.approx(1.5 + 0.5 + (1.0 - 0.5 / 3))
    p = problem(chain_graph())
    plan = place(p.graph, *(["cloud"] * 6))
    b = evaluate(plan, p)
    slowed = simulate(p, plan, requests=1, speed={"cloud": SpeedTrace((0.0,), (2.0,))}).records[0]
    assert slowed.latency_s == pytest.approx(b.latency_s + b.compute_s, rel=1e-9)
    assert [s.seconds for s in slowed.stages] == pytest.approx([2 * s.predicted_s for s in slowed.stages])


def test_unknown_links_and_missing_links_are_refused() -> None:
    p = problem(chain_graph())
    with pytest.raises(PlanError, match="lacks"):
        simulate(p, place(p.graph, *(["edge"] * 6)), traces={("edge", "moon"): BandwidthTrace((0.0,), (1e6,))})
    full = cluster()
    no_edge_cloud = Cluster("toy", full.devices, tuple(lk for lk in full.links
                                                       if {lk.source, lk.target} != {"edge", "cloud"}))
    cut = make_problem(p.graph, no_edge_cloud)
    with pytest.raises(PlanError, match="cloud->edge, edge->cloud, which cluster"):
        simulate(cut, place(p.graph, "edge", "cloud", "cloud", "cloud", "cloud", "cloud"))

"""Adapting while serving: epoch changes lose and duplicate nothing, probes reach the estimator,
runs are deterministic, and the result summarises and serialises."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from coinfer.adapt.policy import View
from coinfer.cost import evaluate
from coinfer.plan import Plan
from coinfer.shaping import BandwidthTrace
from coinfer.sim import SimResult, sent_bytes, simulate_adaptive
from coinfer.sim.network import PROBE_SIZES_BYTES
from tests.sim.toys import FakeEstimator, ScriptedPolicy, chain_graph, dag_graph, every, place, problem

TRACE = BandwidthTrace((0.0, 0.7, 1.3, 2.0), (40e6, 2e6, 20e6, 5e6))


def plans_of(graph_devices: list[tuple[str, ...]], dag: bool = False) -> dict[int, Plan]:
    p = problem(dag_graph() if dag else chain_graph())
    return {k: place(p.graph, *d) for k, d in enumerate(graph_devices)}


CHAIN_PLANS = [("edge", "edge", "fog", "fog", "cloud", "cloud"), ("cloud",) * 6,
               ("edge", "fog", "fog", "fog", "cloud", "edge")]


@pytest.mark.parametrize(("in_flight", "rate_per_s", "execution"),
                         [(1, None, "serial"), (6, None, "serial"), (6, None, "dataflow"), (1, 40.0, "serial")])
def test_epoch_changes_lose_and_duplicate_nothing(in_flight: int, rate_per_s: float | None, execution: str) -> None:
    p = problem(chain_graph())
    plans = plans_of(CHAIN_PLANS)
    policy = ScriptedPolicy(every(7, plans))
    result = simulate_adaptive(p, policy, static=plans[0], requests=300, in_flight=in_flight, rate_per_s=rate_per_s,
                               traces={("fog", "cloud"): TRACE}, estimator=FakeEstimator(),
                               execution=execution)  # type: ignore[arg-type]
    ids = Counter(r.request_id for r in result.records)
    assert sorted(ids) == list(range(300)) and set(ids.values()) == {1}
    assert (result.sent, result.lost, result.duplicated) == (300, 0, 0)
    assert len(result.switches) > 30 and policy.calls == list(range(1, 301))
    # Each request ran, whole, on the plan version current when it was sent: its stages are that
    # plan's, and versions never go back in the order requests were sent.
    for r in result.records:
        plan = result.plans[r.plan_version]
        assert [s.node_ids for s in r.stages] == [s.node_ids for s in plan.stages]
        assert [(s.device) for s in r.stages] == [s.device for s in plan.stages]
    by_send = sorted(result.records, key=lambda r: (r.sent_s, r.request_id))
    assert [r.plan_version for r in by_send] == sorted(r.plan_version for r in by_send)
    for s in result.switches:
        assert (str(result.plans[s.from_version]), str(result.plans[s.to_version])) == (s.from_plan, s.to_plan)
        later = [r for r in result.records if r.sent_s > s.at_s]
        assert all(r.plan_version >= s.to_version for r in later)


def test_a_switch_to_the_plan_in_use_is_no_switch() -> None:
    p = problem(chain_graph())
    plans = plans_of(CHAIN_PLANS[:1])
    result = simulate_adaptive(p, ScriptedPolicy(every(2, plans)), static=plans[0], requests=20,
                               estimator=FakeEstimator())
    assert result.switches == () and {r.plan_version for r in result.records} == {0}


def test_probes_send_the_two_point_probe_and_feed_the_estimator() -> None:
    p = problem(chain_graph())
    plan = place(p.graph, "edge", "edge", "fog", "fog", "cloud", "cloud")
    estimator = FakeEstimator()

    def script(view: View) -> tuple[Plan | None, tuple[tuple[str, str], ...]]:
        # asked at the first three completions; a probe still running is not started twice, one
        # that ended is started again
        return None, ((("fog", "cloud"), ("edge", "fog")) if view.served <= 3 else ())

    result = simulate_adaptive(p, ScriptedPolicy(script), static=plan, requests=12, estimator=estimator)
    probes = [h for h in estimator.hops if h.probe]
    assert probes == list(result.probes)
    for link in (("fog", "cloud"), ("edge", "fog")):
        sizes = [h.size_bytes for h in probes if (h.source, h.target) == link]
        assert sizes[:4] == list(PROBE_SIZES_BYTES) and len(sizes) in (4, 8, 12)
    # request traffic reaches the estimator as records, not as probes
    assert len(estimator.records) == 12 and not any(h.probe for r in estimator.records for h in r.hops)
    # Probes share the links with requests: the second request waits behind them; before they
    # start and once they are over, a request takes what the cost model says.
    predicted = evaluate(plan, p).latency_s
    probes_end_s = max(h.at_s for h in probes)
    first, second, last = result.records[0], result.records[1], result.records[-1]
    assert first.latency_s == pytest.approx(predicted, rel=1e-9)
    assert second.latency_s is not None and second.latency_s > predicted
    assert last.sent_s > probes_end_s and last.latency_s == pytest.approx(predicted, rel=1e-9)


def run_once() -> SimResult:
    p = problem(dag_graph())
    plans = plans_of([("edge", "fog", "cloud", "fog", "cloud", "edge"), ("edge",) * 6,
                      ("fog", "fog", "cloud", "cloud", "cloud", "edge")], dag=True)

    def script(view: View) -> tuple[Plan | None, tuple[tuple[str, str], ...]]:
        plan, _ = every(5, plans)(view)
        return plan, ((("edge", "fog"),) if view.served % 11 == 0 else ())

    return simulate_adaptive(p, ScriptedPolicy(script), static=plans[0], requests=80, in_flight=3,
                             traces={("edge", "fog"): TRACE}, estimator=FakeEstimator(), execution="dataflow")


def test_the_same_inputs_give_the_same_records() -> None:
    first, second = run_once(), run_once()
    assert first.records == second.records and first.switches == second.switches
    assert first.probes == second.probes and first.to_dict() == second.to_dict()


def test_the_result_summarises_and_serialises(tmp_path: Path) -> None:
    result = run_once()
    latencies = sorted(r.latency_s for r in result.records if r.latency_s is not None)
    assert result.latency_p50_s == pytest.approx((latencies[39] + latencies[40]) / 2)
    assert latencies[0] <= result.latency_p95_s <= latencies[-1]
    assert result.deadline_misses == sum(1 for x in latencies if x > 0.25)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["lost"] == 0 and len(data["records"]) == 80 and len(data["switches"]) == len(result.switches)
    timeline = data["timeline"]
    assert list(timeline["bandwidth_bits_per_s"]) == ["edge->fog"]
    assert len(timeline["grid_s"]) == len(timeline["version_at_grid"]) == len(timeline["bandwidth_bits_per_s"]
                                                                                  ["edge->fog"])
    # version 0 runs stem, left, right, merge, aux, head on edge, fog, cloud, fog, cloud, edge;
    # version 1 all on the edge (no server: the node count); version 2 from fog at 0, cloud at 2;
    # a switch back to an earlier plan is a new version
    first = timeline["first_position"]
    assert (first["fog"][:4], first["cloud"][:4]) == ([1, 6, 0, 1], [2, 6, 2, 2])
    edge_fog = [sent_bytes(r, ("edge", "fog")) for r in result.records if r.plan_version == 0]
    assert set(edge_fog) == {300_000}  # version 0 sends stem's output to fog once per request


def test_the_timeline_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from coinfer.sim import plot_timeline

    result = run_once()
    path = plot_timeline([result, result], tmp_path / "timeline.png", title="test")
    assert path.stat().st_size > 10_000

"""Failures in the simulator: recovery times worked out by hand, no request lost with recovery, lost without."""

from __future__ import annotations

import json

import pytest

from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.sim.failures import DETECTION_FRACTION, Outage, outages_from_rates, simulate_failures
from coinfer.solve.fallback import replacement_plan
from tests.sim.toys import chain_graph, place, problem

DOWN_AFTER_S, REDEPLOY_S = 0.8, 0.4
DETECT_S = DETECTION_FRACTION * DOWN_AFTER_S


def _setup() -> tuple:  # type: ignore[type-arg]
    p = problem(chain_graph())
    plan = place(p.graph, "edge", "edge", "fog", "fog", "cloud", "cloud")
    # the same placement, with edge standing by for fog's and cloud's stages
    replicated = plan.with_standbys({n: ("edge",) for n, d in plan.placement.items() if d != "edge"})
    return p, plan, replicated


def test_without_failures_every_latency_is_the_cost_models() -> None:
    p, plan, _ = _setup()
    result = simulate_failures(p, plan, [], requests=20)
    assert len(result.records) == 20 and not result.lost and result.availability == 1.0
    assert all(r.latency_s == pytest.approx(evaluate(plan, p).latency_s) for r in result.records)


def test_re_planning_loses_nothing_and_answers_after_detection_deploy_and_one_request() -> None:
    p, plan, _ = _setup()
    latency = evaluate(plan, p).latency_s
    down_s = 10.3 * latency  # request 10 (one at a time) is under way on the plan with fog
    result = simulate_failures(p, plan, [Outage("fog", down_s, float("inf"))], requests=40,
                               down_after_s=DOWN_AFTER_S, redeploy_s=REDEPLOY_S)
    assert sorted(r.request_id for r in result.records) == list(range(40)) and not result.lost
    assert result.replayed == 1
    replacement = replacement_plan(plan, p.without(["fog"]))
    assert "fog" not in replacement.devices_used
    (row,) = result.recoveries
    expected = DETECT_S + REDEPLOY_S + evaluate(replacement, p).latency_s
    assert row["action"] == "re-planned" and row["to_next_answer_s"] == pytest.approx(expected)
    # the replayed request's latency counts from its first send
    replayed = next(r for r in result.records if r.request_id == 10)
    assert replayed.latency_s == pytest.approx(down_s + expected - 10 * latency)
    assert result.availability == pytest.approx(1 - (DETECT_S + REDEPLOY_S) / result.elapsed_s)


def test_standbys_take_over_at_detection_without_a_redeploy() -> None:
    p, plan, replicated = _setup()
    latency = evaluate(plan, p).latency_s
    result = simulate_failures(p, replicated, [Outage("cloud", 5.5 * latency, 30 * latency)], recovery="replicas",
                               requests=60, down_after_s=DOWN_AFTER_S, redeploy_s=REDEPLOY_S)
    assert len(result.records) == 60 and not result.lost
    (row,) = result.recoveries
    moved = replicated.failover({"cloud"})
    assert isinstance(moved, Plan) and "cloud" not in moved.devices_used
    assert row["action"] == "failed over to standbys"
    assert row["to_next_answer_s"] == pytest.approx(DETECT_S + evaluate(moved, p).latency_s)
    # cloud comes back: the run returns to the first plan
    assert result.plans[-1] == str(replicated)


def test_without_recovery_requests_are_lost_after_the_timeout() -> None:
    p, plan, _ = _setup()
    latency = evaluate(plan, p).latency_s
    result = simulate_failures(p, plan, [Outage("fog", 3.5 * latency, 4.5 * latency)], recovery="none",
                               requests=10, timeout_s=1.0)
    assert result.lost == [3] and len(result.records) == 9
    assert result.availability < 1.0


def test_drawn_outages_are_seeded_and_the_origin_never_fails() -> None:
    p, _, _ = _setup()
    a = outages_from_rates(p, {"fog": 10.0, "cloud": 20.0}, {"fog": 1.0}, 200.0, seed=3)
    assert a == outages_from_rates(p, {"fog": 10.0, "cloud": 20.0}, {"fog": 1.0}, 200.0, seed=3)
    assert a and all(o.device in ("fog", "cloud") and o.down_s < 200.0 and o.up_s > o.down_s for o in a)
    with pytest.raises(UserInputError, match="origin 'edge' cannot fail"):
        outages_from_rates(p, {"edge": 10.0}, {}, 100.0)
    with pytest.raises(UserInputError, match="must end after it starts"):
        Outage("fog", 5.0, 4.0)


def test_the_failures_command_compares_the_ways_of_recovering(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from coinfer.cli import main
    from coinfer.files.plan_file import save_plan

    p, _, replicated = _setup()
    path = tmp_path / "plan.json"
    save_plan(path, replicated, p)
    trace = tmp_path / "outages.txt"
    trace.write_text("# device down up\nfog 0.5 2.0\n")
    assert main(["failures", str(path), "--failure-trace", str(trace), "--requests", "50", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["recoveries"]) == {"replan", "replicas", "none"}
    assert doc["recoveries"]["replicas"]["lost"] == 0 and doc["recoveries"]["replan"]["lost"] == 0
    assert main(["failures", str(path), "--outage", "mars=1:2"]) == 2
    assert "no such device" in capsys.readouterr().err

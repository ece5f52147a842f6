"""Failures on real worker processes: detection by heartbeats, re-planning, replay, exactly-once, re-joining."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from coinfer.api import make_problem
from coinfer.cost import evaluate
from coinfer.errors import UnreachableError
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.plan import Plan, parse_plan
from coinfer.problem import Problem
from coinfer.runtime.adaptive import serve_adaptive, summary
from coinfer.runtime.client import Outcome
from coinfer.runtime.delivery import run_requests
from coinfer.runtime.deploy import deploy
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.options import RunOptions
from coinfer.runtime.recovery import Recovery
from coinfer.runtime.reference import example_inputs, reference_outputs
from coinfer.runtime.verify import Comparison
from coinfer.runtime.watchdog import Watchdog
from coinfer.solve.fallback import replacement_plan
from tests.runtime.conftest import DEVICES, HOPPING, THREE, tiny_problem
from tests.runtime.test_live_switching import Rotate

# links of 20 ms into and out of b: whenever a request is in flight, a tensor is on its way to or from b
SLOW_B = {**THREE, "links": [{"between": [x, y], "bandwidth_bits_per_s": 1e9, "latency_s": 0.02 if "b" in (x, y)
                              else 0.0005} for x, y in (("a", "b"), ("b", "c"), ("a", "c"))]}


def _slow_b_problem(placement: str) -> tuple[Plan, Problem]:
    _, problem = tiny_problem("cnn", placement)
    slow = make_problem(problem.graph, cluster_from_dict(SLOW_B, "slow-b.yaml"))
    return parse_plan(placement, slow.graph, DEVICES), slow


def after_answers(count: int, action: Callable[[], object]) -> Callable[[Any], None]:
    """An `on_done` that starts `action` in a thread of its own when the `count`-th answer arrives."""
    answered = 0

    def on_done(_: Any) -> None:
        nonlocal answered
        answered += 1
        if answered == count:
            threading.Thread(target=action).start()
    return on_done


def _exactly_once_and_identical(outcomes: list[Outcome], count: int, first_id: int, expected: Any) -> None:
    assert sorted(o.request_id for o in outcomes) == list(range(first_id, first_id + count))
    failed = [o.errors for o in outcomes if not o.ok]
    assert not failed, failed[:2]
    comparison = Comparison()
    for o in outcomes:
        comparison.add(o.outputs, expected, f"request {o.request_id}")
    assert comparison.ok and comparison.bit_identical and comparison.compared == count, comparison.report()


# -- pure: the cluster less a device, and the plan that replaces a lost one ----------------------

def test_a_cluster_without_a_device_loses_its_links_and_never_the_origin() -> None:
    _, problem = tiny_problem("cnn", HOPPING)
    less = problem.without(["b"])
    assert less.cluster.device_names == ("a", "c") and set(less.node_time_s) == {"a", "c"}
    assert all("b" not in (lk.source, lk.target) for lk in less.cluster.links) and less.cluster.link("a", "c")
    assert problem.without([]) is problem
    with pytest.raises(ValueError, match="origin 'a' cannot leave"):
        problem.without(["a"])


def test_the_replacement_avoids_lost_devices_with_the_plans_own_solver() -> None:
    from coinfer.solve import get_solver

    _, problem = tiny_problem("cnn", HOPPING)
    plan = get_solver("ilp")(problem)
    for lost in (["b"], ["c"], ["b", "c"]):
        usable = problem.without(lost)
        replacement = replacement_plan(plan, usable)
        assert not set(replacement.devices_used) & set(lost)
        assert replacement.solver == "ilp" and evaluate(replacement, usable).feasible
        assert replacement.placement == get_solver("ilp")(usable).placement


def test_the_replacement_falls_back_when_the_plans_solver_is_infeasible_there() -> None:
    # origin-only cannot fit a on a device with 1 kB of memory; a fallback that offloads can
    from coinfer.solve import get_solver

    _, problem = tiny_problem("cnn", HOPPING)
    small = {**THREE, "devices": {**THREE["devices"], "a": {"flops_per_s": 1e10, "origin": True,
                                                               "memory_bytes": 1000}}}
    tight = make_problem(problem.graph, cluster_from_dict(small, "small-a.yaml"))
    plan = get_solver("origin-only")(tight)
    assert not evaluate(plan, tight).feasible
    replacement = replacement_plan(plan, tight.without(["b"]))
    assert evaluate(replacement, tight.without(["b"])).feasible and "b" not in replacement.devices_used


# -- the watchdog on a real worker ---------------------------------------------------------------

def _wait_for(watchdog: Watchdog, device: str, state: str, within_s: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < within_s:
        if watchdog.state(device) == state:
            return time.perf_counter() - start
        time.sleep(0.02)
    raise AssertionError(f"{device} not {state} within {within_s} s (it is {watchdog.state(device)})")


def test_the_watchdog_declares_a_stopped_or_killed_worker_down_within_its_bound_and_sees_it_back() -> None:
    with LocalWorkers(("x",)) as workers, workers.client() as client, \
            Watchdog(client.control_connection, ["x"], down_after_s=0.5) as watchdog:
        time.sleep(0.3)
        assert watchdog.state("x") == "up" and not watchdog.events()
        workers.pause("x")
        took = _wait_for(watchdog, "x", "down", 2.0)
        assert took <= 0.5 + 0.3  # the bound plus one heartbeat interval and scheduling slack
        workers.resume("x")
        _wait_for(watchdog, "x", "up", 2.0)
        workers.kill("x")
        _wait_for(watchdog, "x", "down", 2.0)
        workers.restart("x")
        _wait_for(watchdog, "x", "up", 5.0)
        events = [(e.device, e.state) for e in watchdog.events()]
    assert events == [("x", "down"), ("x", "up"), ("x", "down"), ("x", "up")]


def test_the_watchdog_refuses_a_bound_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="down_after_s must be positive"):
        Watchdog(lambda d: None, ["x"], down_after_s=0)


# -- exactly once ----------------------------------------------------------------------------------

def test_answers_of_another_attempt_are_dropped_as_stale(workers: LocalWorkers) -> None:
    plan, problem = tiny_problem("cnn", HOPPING)
    x = example_inputs(problem.graph, seed=3)
    with workers.client(timeout_s=10) as client:
        replies = deploy(client, plan, problem, workers.endpoint, RunOptions(plan_version=900))
        outputs = tuple(replies["a"]["results"])
        pending = {1: Outcome(1, time.perf_counter(), plan_version=901)}  # the attempt moved on to 901
        client.submit("a", 900, 1, x)
        deadline = time.perf_counter() + 5
        while client.stale_messages == 0 and time.perf_counter() < deadline:
            assert client.collect(pending, outputs, 0.1) == []
        assert client.stale_messages >= 1 and 1 in pending and not pending[1].outputs
        # a request whose attempt is the version its answer comes on completes, once
        pending = {2: Outcome(2, time.perf_counter(), plan_version=900)}
        client.submit("a", 900, 2, x)
        done: list[Outcome] = []
        while not done and time.perf_counter() < deadline + 5:
            done = client.collect(pending, outputs, 0.1)
        assert done and done[0].ok and not pending


# -- recovery by re-planning, end to end -------------------------------------------------------------

@contextlib.contextmanager
def _recovering(plan: Plan, problem: Problem, options: RunOptions,
                down_after_s: float) -> Iterator[tuple[LocalWorkers, Any, Recovery, tuple[str, ...]]]:
    """Workers a, b, c with `plan` deployed, watched, and a Recovery to reroute requests with; and
    the names of the plan's outputs."""
    with LocalWorkers(DEVICES) as workers, workers.client(timeout_s=10) as client:
        replies = deploy(client, plan, problem, workers.endpoint, options)
        with Watchdog(client.control_connection, DEVICES, down_after_s=down_after_s) as watchdog:
            recovery = Recovery(client, plan, problem, workers.endpoint, options, watchdog)
            yield workers, client, recovery, tuple(replies["a"]["results"])


@pytest.mark.slow  # real workers for 10-20 s: the slow tier keeps the fast one under 10 minutes
def test_a_killed_worker_costs_a_replay_never_a_request_and_is_readmitted_when_back() -> None:
    plan, problem = _slow_b_problem(HOPPING)
    x = example_inputs(problem.graph, seed=4)
    expected = reference_outputs(problem.graph, x, 1)
    with _recovering(plan, problem, RunOptions(plan_version=1, timeout_s=30), 0.5) as running:
        workers, client, recovery, outputs = running
        outcomes = run_requests(client, "a", recovery.version, outputs, lambda _: x, 60, 4, 30.0,
                                on_done=after_answers(10, lambda: workers.kill("b")), rerouter=recovery)
        _exactly_once_and_identical(outcomes, 60, 1, expected)
        assert "b" not in recovery.current.devices_used and recovery.version > 1
        assert any(e.device == "b" and e.action == "re-planned" for e in recovery.timeline)
        # every request in flight on the version that used b was sent again (4 were in flight)
        assert sum(o.attempts > 1 for o in outcomes) >= 1
        # b comes back: it is re-admitted and the run returns to the plan it started with
        workers.restart("b")
        first_id, deadline = 61, time.perf_counter() + 60
        while recovery.current.placement != plan.placement and time.perf_counter() < deadline:
            more = run_requests(client, "a", recovery.version, outputs, lambda _: x, 10, 4, 30.0,
                                first_id=first_id, rerouter=recovery)
            _exactly_once_and_identical(more, 10, first_id, expected)
            first_id += 10
        assert recovery.current.placement == plan.placement
        assert any(e.device == "b" and e.action == "back to the plan" for e in recovery.timeline)
        last = run_requests(client, "a", recovery.version, outputs, lambda _: x, 10, 4, 30.0,
                            first_id=first_id, rerouter=recovery)
        _exactly_once_and_identical(last, 10, first_id, expected)


@pytest.mark.slow  # real workers for 10-20 s: the slow tier keeps the fast one under 10 minutes
def test_losing_the_origin_ends_the_run_saying_so() -> None:
    plan, problem = tiny_problem("cnn", HOPPING)
    x = example_inputs(problem.graph, seed=4)
    with _recovering(plan, problem, RunOptions(plan_version=1, timeout_s=30), 0.3) as running:
        workers, client, recovery, outputs = running
        workers.kill("a")
        with pytest.raises(UnreachableError, match="the origin 'a' is down"):
            run_requests(client, "a", 1, outputs, lambda _: x, 1000, 2, 30.0, rerouter=recovery)


@pytest.mark.slow  # real workers for half a minute: the slow tier
def test_adaptive_serving_routes_around_a_lost_device_through_the_policy() -> None:
    plans_text = (HOPPING, "stem..add@b | left..head@c")
    static, problem = _slow_b_problem(plans_text[0])
    plans = tuple(parse_plan(p, problem.graph, DEVICES) for p in plans_text)
    x = example_inputs(problem.graph, seed=6)
    expected = reference_outputs(problem.graph, x, 1)
    with LocalWorkers(DEVICES) as workers, workers.client(timeout_s=10) as client:
        kill_b = after_answers(15, lambda: workers.kill("b"))
        run = serve_adaptive(problem, static, Rotate(plans, every=5), client, workers.endpoint,
                             RunOptions(requests=80, in_flight=3, plan_version=1, timeout_s=30, down_after_s=0.5),
                             lambda _: x, on_record=kill_b)
    report = summary(run, problem)
    assert report["lost"] == 0 and report["duplicated"] == 0
    _exactly_once_and_identical(run.outcomes, 80, 1, expected)
    failures = [s for s in run.switches if s.kind == "failure"]
    assert failures and "b down" in failures[0].reason
    # after the failure no plan on b was deployed: the rotation's plans on b were refused
    after = [s for s in run.switches if s.at_s >= failures[0].at_s]
    assert all("@b" not in s.plan for s in after)
    assert any(h["device"] == "b" and h["state"] == "down" for h in report["health"])
    assert np.isfinite(report["latency_s"]["p50"])


@pytest.mark.slow  # real workers for half a minute: the slow tier
def test_a_lost_primary_fails_over_to_its_standby_without_a_re_solve() -> None:
    placement = "stem..relu@a | block.0..add@b+c | left@a | right..head@c"
    plan, problem = _slow_b_problem(placement)
    assert plan.stages[1].standbys == ("c",)
    x = example_inputs(problem.graph, seed=8)
    expected = reference_outputs(problem.graph, x, 1)
    options = RunOptions(plan_version=1, timeout_s=30)
    solved: list[Any] = []

    def never(current: Plan, usable: Problem) -> Plan:  # a failover must not call the solver
        solved.append(current)
        return replacement_plan(current, usable)

    with LocalWorkers(DEVICES) as workers, workers.client(timeout_s=10) as client:
        replies = deploy(client, plan, problem, workers.endpoint, options)
        with Watchdog(client.control_connection, DEVICES, down_after_s=0.5) as watchdog:
            recovery = Recovery(client, plan, problem, workers.endpoint, options, watchdog, replan=never)
            (standby_version,) = recovery.prepare_standbys()  # b's stages on c, deployed beside the plan
            assert "b" not in recovery.prepared["b"][1].devices_used
            health = client.check("c", {"op": "health"})
            assert standby_version in health["versions"]  # c holds the standby's weights from now on
            answered, killed_at, first_after = 0, [], []

            def kill_b(o: Outcome) -> None:
                nonlocal answered
                answered += 1
                if answered == 10:
                    killed_at.append(time.perf_counter())
                    threading.Thread(target=workers.kill, args=("b",)).start()
                elif killed_at and o.plan_version == standby_version and not first_after:
                    first_after.append(time.perf_counter())

            outcomes = run_requests(client, "a", recovery.version, tuple(replies["a"]["results"]), lambda _: x,
                                    60, 4, 30.0, on_done=kill_b, rerouter=recovery)
    _exactly_once_and_identical(outcomes, 60, 1, expected)
    assert not solved
    assert [e.action for e in recovery.timeline if e.device == "b"] == ["failed over to standbys"]
    assert recovery.version == standby_version
    assert first_after and first_after[0] - killed_at[0] < 2.0  # the target with a replica


@pytest.mark.slow  # real workers for 10-20 s: the slow tier keeps the fast one under 10 minutes
def test_the_run_report_says_what_recovery_did(plan_file: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from coinfer.cli import main

    code = main(["run", str(plan_file), "--local", "--requests", "3", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["recovery"]["enabled"] and doc["recovery"]["timeline"] == []
    assert doc["recovery"]["replayed"] == 0 and doc["recovery"]["final_plan"] == doc["plan"]
    code = main(["run", str(plan_file), "--local", "--requests", "3", "--json", "--no-recover"])
    assert code == 0 and json.loads(capsys.readouterr().out)["recovery"] == {"enabled": False}
    assert main(["run", str(plan_file), "--local", "--down-after-s", "0"]) == 2
    assert "--down-after-s must be positive" in capsys.readouterr().err


@pytest.mark.slow  # real workers for half a minute: the slow tier
def test_a_worker_that_restarts_between_heartbeats_is_caught_and_costs_no_request() -> None:
    # the bound is far longer than the restart, so only the new incarnation (or the worker's own
    # "I do not hold that version") can tell: either way the requests in flight are replayed
    plan, problem = _slow_b_problem(HOPPING)
    x = example_inputs(problem.graph, seed=5)
    expected = reference_outputs(problem.graph, x, 1)
    with _recovering(plan, problem, RunOptions(plan_version=1, timeout_s=60), 30.0) as running:
        workers, client, recovery, outputs = running
        bounce_b = after_answers(10, lambda: (workers.kill("b"), workers.restart("b")))
        outcomes = run_requests(client, "a", recovery.version, outputs, lambda _: x, 120, 3, 60.0,
                                on_done=bounce_b, rerouter=recovery)
    _exactly_once_and_identical(outcomes, 120, 1, expected)
    b_events = [(e.state, e.action) for e in recovery.timeline if e.device == "b"]
    assert b_events and b_events[0][0] == "down", recovery.timeline

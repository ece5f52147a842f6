"""Chaos (slow tier): devices killed, stopped and cut off during a stream; each request answered once, bit-identical."""

from __future__ import annotations

import math
import threading
import time

import pytest

from benchmarks.chaos import Fault, chaos_run, check, recovery_figures, setup
from coinfer.runtime.client import Outcome
from coinfer.runtime.delivery import run_requests
from coinfer.runtime.deploy import deploy
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.netns import NetnsTopology, ShapedLink, kernel_shaping_unavailable
from coinfer.runtime.options import RunOptions
from coinfer.runtime.recovery import Recovery
from coinfer.runtime.reference import example_inputs, reference_outputs
from coinfer.runtime.verify import Comparison
from coinfer.runtime.watchdog import Watchdog
from tests.runtime.conftest import DEVICES, tiny_problem

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def resnet18() -> tuple:  # type: ignore[type-arg]
    return setup("resnet18")


def test_three_kills_cost_replays_and_never_a_request(resnet18) -> None:  # type: ignore[no-untyped-def]
    plan, problem, inputs, expected = resnet18
    # by answers, not seconds: the moments must come before the run ends on any machine
    faults = [Fault("kill", 1.0, after_answers=n) for n in (40, 160, 280)]
    result = chaos_run(plan, problem, inputs, expected, 400, 2, faults, restart_after_s=2.0)
    assert check(result, 400) == []
    rows = recovery_figures(result)
    assert len(rows) == 3 and all(r["device"] for r in rows)
    for row in rows:  # the target for re-planning on a LAN-like link
        assert row["to_next_answer_s"] is not None and row["to_next_answer_s"] <= 5.0, row
    assert sum(o.attempts > 1 for o in result.outcomes) >= 1
    assert [e["action"] for e in result.timeline if e["state"] == "down"].count("re-planned") == 3


def test_a_device_stopped_for_five_seconds_is_routed_around_and_readmitted(resnet18) -> None:  # type: ignore[no-untyped-def]
    plan, problem, inputs, expected = resnet18
    result = chaos_run(plan, problem, inputs, expected, 500, 2, [Fault("pause", 1.0, after_answers=40)], pause_s=5.0)
    assert check(result, 500) == []
    (row,) = recovery_figures(result)
    assert row["detected_after_s"] is not None and row["detected_after_s"] <= 1.5
    assert row["to_next_answer_s"] is not None and row["to_next_answer_s"] <= 5.0
    actions = [(e["device"], e["action"]) for e in result.timeline if e["device"] == row["device"]]
    assert (row["device"], "re-planned") in actions and (row["device"], "back to the plan") in actions


@pytest.mark.skipif(kernel_shaping_unavailable() is not None, reason=str(kernel_shaping_unavailable()))
def test_a_link_taken_down_in_the_kernel_is_detected_and_routed_around() -> None:
    # a -> b -> a -> c -> a on kernel-shaped links; the a-b veth is taken down while requests run
    plan, problem = tiny_problem("cnn", "stem..relu@a | block.0..add@b | left@a | right..head@c")
    x = example_inputs(problem.graph, seed=9)
    expected = reference_outputs(problem.graph, x, 1)
    links = [ShapedLink(s, t, 100e6) for s in DEVICES for t in DEVICES if s != t]
    options = RunOptions(plan_version=1, shaping="kernel", timeout_s=60)
    with NetnsTopology(DEVICES, links) as topology, LocalWorkers(DEVICES, topology=topology) as workers, \
            workers.client(timeout_s=10, sink_host="0.0.0.0") as client:
        def sink(device: str) -> str:
            return f"tcp://{topology.root_address(device)}:{client.sink_port}"

        replies = deploy(client, plan, problem, workers.endpoint, options, sink)
        outputs = tuple(replies["a"]["results"])
        with Watchdog(client.control_connection, DEVICES) as watchdog:
            recovery = Recovery(client, plan, problem, workers.endpoint, options, watchdog, sink)
            answered = 0
            cut_at: list[float] = []
            cutters: list[threading.Thread] = []

            def cut_after_twenty(_: Outcome) -> None:
                nonlocal answered
                answered += 1
                if answered == 20:
                    cut_at.append(time.perf_counter())
                    cutters.append(threading.Thread(target=topology.set_link_up, args=("a", "b", False)))
                    cutters[0].start()

            outcomes = run_requests(client, "a", recovery.version, outputs, lambda _: x, 200, 2, 60.0,
                                    on_done=cut_after_twenty, rerouter=recovery)
            served_after_cut = recovery.current
            # both ends must be down before they come back up: on a loaded machine the cutter's second
            # `ip link set` could otherwise land after the restore and leave the link cut for good
            cutters[0].join(timeout=30)
            assert not cutters[0].is_alive()
            # the link comes back: its receiver hears keepalives again and the run returns to its plan
            topology.set_link_up("a", "b", True)
            first_id, deadline = 1000, time.perf_counter() + 30
            while recovery.current.placement != plan.placement and time.perf_counter() < deadline:
                more = run_requests(client, "a", recovery.version, outputs, lambda _: x, 20, 2, 60.0,
                                    first_id=first_id, rerouter=recovery)
                assert all(o.ok for o in more)
                first_id += 20
            assert recovery.current.placement == plan.placement
    assert sorted(o.request_id for o in outcomes) == list(range(1, 201))
    assert all(o.ok for o in outcomes), [o.errors for o in outcomes if not o.ok][:2]
    comparison = Comparison()
    for o in outcomes:
        comparison.add(o.outputs, expected, f"request {o.request_id}")
    assert comparison.bit_identical and comparison.compared == 200
    cuts = [e for e in recovery.timeline if e.device in ("a->b", "b->a") and e.state == "down"]
    assert cuts and cuts[0].action == "re-planned"
    assert not math.isnan(cuts[0].at_s - cut_at[0]) and cuts[0].at_s - cut_at[0] <= 2.0
    # the plan served after the cut sent nothing between a and b
    assert not recovery.sends_over(served_after_cut) & {("a", "b"), ("b", "a")}

"""A link trace starts with the first request, however long the workers took to build the plan."""

from __future__ import annotations

import time

from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs
from coinfer.runtime.run import RunOptions, run_plan
from coinfer.shaping import BandwidthTrace
from tests.runtime.conftest import TWO_STAGES, client_for, tiny_problem

SLOW_BUILD_S = 3.0


def test_a_slow_first_deploy_does_not_use_up_the_trace(workers: LocalWorkers) -> None:
    # a -> b runs at 1 Gbit/s for the trace's first 2 s, then at 0.5 Mbit/s. The first deploy takes
    # 3 s (as a big model's build does); a trace started before it would throttle every request.
    plan, problem = tiny_problem("cnn", TWO_STAGES)
    trace = BandwidthTrace((0.0, 2.0, 1000.0), (1e9, 0.5e6, 0.5e6))
    slowed: list[str] = []

    def endpoint(device: str, seen_from: str | None = None) -> str:
        if not slowed:
            slowed.append(device)
            time.sleep(SLOW_BUILD_S)
        return workers.endpoint(device, seen_from)

    options = RunOptions(requests=3, warmup=0, plan_version=61, traces={("a", "b"): trace})
    with client_for(workers) as client:
        report = run_plan(plan, problem, client, endpoint, options, example_inputs(problem.graph, seed=2))
    assert slowed and report["ok"] == 3
    sent_bytes = next(s["sent_bytes"] for s in report["stages"] if s["device"] == "a")
    throttled_s = sent_bytes * 8 / 0.5e6
    assert throttled_s > 0.05  # the cut is big enough for the throttle to show
    assert report["latency_s"]["p50"] < throttled_s / 2

"""Live plan switches on real workers: none lost, none computed twice, outputs unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from coinfer.adapt.policy import Decision, View
from coinfer.errors import UserInputError
from coinfer.plan import Plan, parse_plan
from coinfer.runtime.adaptive import serve_adaptive, summary
from coinfer.runtime.local import LocalWorkers
from coinfer.runtime.reference import example_inputs, reference_outputs
from coinfer.runtime.run import RunOptions
from tests.runtime.conftest import DEVICES, tiny_problem

PLANS = ("stem..relu@a | block.0..add@b | left@a | right..head@c", "stem..add@b | left..head@c",
         "stem..head@a", "stem..relu@a | block.0..head@c")


@dataclass
class Rotate:
    """A test policy: switch to the next of `plans` every `every` requests, probing a -> c each time."""

    plans: tuple[Plan, ...]
    every: int
    name: str = "rotate"

    def initial_state(self, view: View) -> int:
        return 0

    def decide(self, view: View, state: Any) -> Decision:
        if view.served % self.every:
            return Decision(None, state)
        nxt = (state + 1) % len(self.plans)
        return Decision(self.plans[nxt], nxt, f"rotation {nxt}", probe_links=(("a", "c"),))


@pytest.mark.slow  # 16 s of live switches: the slow tier keeps the fast one under 10 minutes
def test_switching_every_few_requests_loses_nothing_and_stays_bit_identical(workers: LocalWorkers) -> None:
    static, problem = tiny_problem("cnn", PLANS[0])
    plans = tuple(parse_plan(p, problem.graph, DEVICES) for p in PLANS)
    x = example_inputs(problem.graph, seed=5)
    requests = 300
    with workers.client(timeout_s=5.0) as client:
        run = serve_adaptive(problem, static, Rotate(plans, every=7), client, workers.endpoint,
                             RunOptions(requests=requests, in_flight=4, plan_version=200, timeout_s=30), lambda _: x)
    report = summary(run, problem)
    assert report["lost"] == 0 and report["duplicated"] == 0
    assert sorted(o.request_id for o in run.outcomes) == list(range(1, requests + 1))
    assert len(run.switches) == requests // 7
    reference = reference_outputs(problem.graph, x, 1)
    for outcome in run.outcomes:
        assert outcome.ok
        for name, ref in reference.items():
            assert np.array_equal(outcome.outputs[name], ref), (outcome.request_id, name)
    # every version served some requests, each entirely under the version it started with
    versions = {r.plan_version for r in run.records}
    assert len(versions) > 30
    # telemetry: every request's records name the stages its plan runs, and the hops between devices
    for record in run.records:
        plan = plans[(record.plan_version - 200) % len(plans)]
        assert {s.device for s in record.stages} == set(plan.devices_used)
        crossing = {(h.source, h.target) for h in record.hops}
        assert crossing <= {(t.source, t.target) for t in _transfers(plan, problem)}
        assert all(h.seconds >= 0 for h in record.hops)
    # a switch delays no request: those in flight finish on the old version
    assert all(s.in_flight <= 4 for s in run.switches)


def test_probes_reach_the_estimator(workers: LocalWorkers) -> None:
    static, problem = tiny_problem("cnn", PLANS[2])  # all on a: no request traffic crosses any link
    plans = (static, static)
    x = example_inputs(problem.graph, seed=5)
    seen: list[Any] = []

    class Spy:
        def __init__(self) -> None:
            from coinfer.adapt.estimates import Estimator

            self.inner = Estimator(problem)

        def observe(self, record: Any) -> None:
            self.inner.observe(record)

        def observe_hop(self, sample: Any) -> None:
            seen.append(sample)
            self.inner.observe_hop(sample)

        def snapshot(self, now_s: float) -> Any:
            return self.inner.snapshot(now_s)

    with workers.client(timeout_s=5.0) as client:
        serve_adaptive(problem, static, Rotate(plans, every=5), client, workers.endpoint,
                       RunOptions(requests=20, plan_version=300), lambda _: x, estimator=Spy(),  # type: ignore[arg-type]
                       probe_sizes_bytes=(1024, 100_000))  # the test workers refuse messages over 200 kB
    assert seen and all(s.probe and (s.source, s.target) == ("a", "c") for s in seen)
    assert {s.size_bytes > 50_000 for s in seen} == {True, False}  # both probe sizes came back


def _transfers(plan: Plan, problem: Any) -> Any:
    from coinfer.cost import evaluate

    return evaluate(plan, problem).transfers


def test_adaptive_serving_refuses_micro_batching_before_it_deploys() -> None:
    # records, energy and switches are per request; a batch would mix K of them
    plan, problem = tiny_problem("cnn", "stem..head@a")
    with pytest.raises(UserInputError, match="micro_batch=1"):
        serve_adaptive(problem, plan, None, None, None, RunOptions(micro_batch=2), lambda _: {})  # type: ignore[arg-type]

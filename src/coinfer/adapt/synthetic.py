"""Offline replays: what a request would record if it ran exactly as a problem predicts.

`predicted_record(plan, truth, base, ...)` costs `plan` on `truth` (the cluster as it really is:
slower links, slower devices) and writes what the runtime would have measured: one StageSample
per stage (its `predicted_s` from `base`, the deploy-time problem, as the runtime fills it), one
HopSample per transfer, the end-to-end latency, and the modelled energy.

`Replay` is the runtime's loop without the runtime: requests one after another on a truth the
caller may change between requests, an Estimator fed with every record, the policy asked after
each, its plan switched to, and the links it names probed (on the truth, serially, with the
paper's probe sizes). Tests and benchmarks drive policies with it; `coinfer.sim` adds arrivals,
concurrency and queues.
"""

from __future__ import annotations

from typing import Any

from coinfer.adapt.energy import request_energy_by_device_j
from coinfer.adapt.estimates import Estimator, apply
from coinfer.adapt.policy import Decision, Policy, View
from coinfer.adapt.probing import PROBE_REPEATS, PROBE_SIZES_BYTES
from coinfer.adapt.records import HopSample, RequestRecord, StageSample
from coinfer.cost import Transfer, evaluate, terms
from coinfer.plan import Plan
from coinfer.problem import Problem


def predicted_record(plan: Plan, truth: Problem, base: Problem, *, request_id: int = 0, plan_version: int = 0,
                     sent_s: float = 0.0) -> RequestRecord:
    """The model input's sends, then stages one after another, each followed by its sends, then the
    result's return."""
    cost = evaluate(plan, truth)
    at_s = sent_s
    stages: list[StageSample] = []
    hops: list[HopSample] = []

    def send(chosen: list[Transfer]) -> None:
        nonlocal at_s
        for t in chosen:
            at_s += t.time_s
            hops.append(HopSample(t.source, t.target, t.wire_bytes, t.time_s, at_s))

    send([t for t in cost.transfers if t.tensor in truth.graph.input_names])
    for stage, stage_cost in zip(plan.stages, cost.stages, strict=True):
        at_s += stage_cost.queueing_s + stage_cost.compute_s
        predicted_s = sum(base.node_time_s[stage.device][n] for n in stage.node_ids)
        stages.append(StageSample(stage.device, stage.node_ids, stage_cost.compute_s, predicted_s, at_s))
        members = set(stage.node_ids)
        send([t for t in cost.transfers if t.tensor in members and not t.is_result])
    send([t for t in cost.transfers if t.is_result])
    energy = request_energy_by_device_j(truth.cluster, stages, hops, cost.latency_s)
    return RequestRecord(request_id, plan_version, sent_s, cost.latency_s, tuple(stages), tuple(hops), energy)


class Replay:
    """Serves requests one after another on a given truth, feeding an Estimator and asking `policy`."""

    def __init__(self, policy: Policy, base: Problem, static: Plan, *, estimator: Estimator | None = None) -> None:
        self.policy, self.base, self.static = policy, base, static
        self.estimator = estimator or Estimator(base)
        self.now_s = 0.0
        self.current = static
        self.served = 0
        self.version = 0
        self.state: Any = policy.initial_state(self.view(None))

    def view(self, record: RequestRecord | None) -> View:
        estimates = self.estimator.snapshot(self.now_s)
        return View(self.now_s, self.base, apply(self.base, estimates), estimates, self.current, self.static,
                    record, self.served)

    def serve(self, truth: Problem | None = None) -> RequestRecord:
        """One request on `truth` (default: the base problem), observed; the policy is not asked yet."""
        record = predicted_record(self.current, truth or self.base, self.base, request_id=self.served,
                                  plan_version=self.version, sent_s=self.now_s)
        self.now_s += record.latency_s if record.latency_s is not None else 0.0
        self.estimator.observe(record)
        self.served += 1
        return record

    def decide(self, view: View, truth: Problem | None = None) -> Decision:
        """Ask the policy about `view`, then switch and probe as it says."""
        decision = self.policy.decide(view, self.state)
        self.state = decision.state
        if decision.plan is not None:
            self.current, self.version = decision.plan, self.version + 1
        for source, target in decision.probe_links:
            self._probe(truth or self.base, source, target)
        return decision

    def step(self, truth: Problem | None = None) -> Decision:
        """Serve one request on `truth` and ask the policy."""
        record = self.serve(truth)
        return self.decide(self.view(record), truth)

    def _probe(self, truth: Problem, source: str, target: str) -> None:
        link = truth.cluster.link(source, target)
        for size in PROBE_SIZES_BYTES:
            for _ in range(PROBE_REPEATS):
                seconds = terms.transfer_time_s(link, size)
                self.now_s += seconds
                self.estimator.observe_hop(HopSample(source, target, size, seconds, self.now_s, probe=True))

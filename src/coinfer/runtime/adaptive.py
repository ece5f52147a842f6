"""Serving a stream while an adaptive policy re-partitions it live (`coinfer adapt`).

Every plan is deployed as its own version on every worker, with telemetry on: each worker reports,
per request, the time of each stage it ran and the hops that brought its values (timed by the
receiver from the sender's stamp, coinfer.runtime.wire). Those reports become `RequestRecord`s;
the estimator smooths them into link and device estimates, and after every request the policy
decides on the problem as estimated (coinfer.adapt.policy).

A switch is an epoch change: the new plan is deployed as version n+1 while version n keeps
serving; requests already sent finish on version n, every later request starts on n+1, and
version n is undeployed once its last request is done. No request is dropped or computed twice
(the report counts both by request id) and outputs stay those of the unpartitioned model.

A lost device is one more change of conditions (coinfer.runtime.recovery, on unless
`options.recover` is off): the watchdog declares it down, the policy is asked for a plan on the
cluster without it (the fallbacks of `coinfer run` when it has none), that plan is deployed, the
requests in flight on versions that used the device are replayed, and the switch is recorded with
kind "failure". While a device is down, policies see it in `View.down` and a plan of theirs on it is
refused; once it answers again it is re-admitted, and moving work back is the policy's decision.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from coinfer.adapt.energy import request_energy_by_device_j
from coinfer.adapt.estimates import Estimator, apply
from coinfer.adapt.policy import Policy, View
from coinfer.adapt.probing import PROBE_REPEATS, PROBE_SIZES_BYTES
from coinfer.adapt.records import HopSample, RequestRecord, StageSample
from coinfer.cost import evaluate
from coinfer.errors import CoinferError, UnreachableError, UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.client import Client, Outcome
from coinfer.runtime.delivery import Reroute, replay
from coinfer.runtime.deploy import with_run_weights
from coinfer.runtime.measured_profiles import NodeSamples
from coinfer.runtime.recovery import Recovery
from coinfer.runtime.run import ClientAddress, Endpoint, RunOptions, deploy, deploy_with_traces_from_now
from coinfer.runtime.watchdog import Watchdog
from coinfer.solve.fallback import replacement_plan

log = logging.getLogger(__name__)

BEHIND_TOLERANCE_S = 1e-3  # a sleep overshoots its target by a fraction of this; more is this machine's slowness
TELEMETRY_WAIT_S = 2.0  # how long a finished request waits for the last worker's report


@dataclass(frozen=True)
class Switch:
    at_s: float  # since the start of serving
    request_id: int  # the first request served by the new plan
    from_version: int
    to_version: int
    plan: str
    reason: str
    deploy_s: float  # deploying the new version on every worker
    in_flight: int  # requests sent under the old version and not yet done when it happened
    kind: str = "policy"  # policy: the policy chose it; failure: a device was lost or came back


@dataclass
class AdaptiveRun:
    """Everything `serve_adaptive` saw: one record per request, the switches, the decisions' cost."""

    records: list[RequestRecord] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    switches: list[Switch] = field(default_factory=list)
    decision_s: list[float] = field(default_factory=list)
    plans: dict[int, str] = field(default_factory=dict)  # version -> plan
    cut_bytes: dict[int, int] = field(default_factory=dict)  # version -> bytes crossing devices per request
    duplicated: int = 0
    stale_dropped: int = 0  # answers of an earlier attempt of a replayed request, dropped
    health: list[dict[str, Any]] = field(default_factory=list)  # the watchdog's verdicts and what was done
    elapsed_s: float = 0.0
    node_samples: NodeSamples = field(default_factory=NodeSamples)  # each device's node times, for saved profiles


def serve_adaptive(problem: Problem, static: Plan, policy: Policy, client: Client, endpoint: Endpoint,
                   options: RunOptions, inputs_for: Callable[[int], Mapping[str, np.ndarray]], *,
                   estimator: Estimator | None = None, client_address: ClientAddress | None = None,
                   on_record: Callable[[RequestRecord], None] | None = None,
                   probe_sizes_bytes: tuple[int, ...] = PROBE_SIZES_BYTES) -> AdaptiveRun:
    """Serve `options.requests` requests, starting on `static` and following `policy`.

    A probe sends each of `probe_sizes_bytes` PROBE_REPEATS times (REFERENCE section 4: 1 KB and
    1 MB, twice each); the receivers time them and the estimator fits the link from them."""
    if options.micro_batch != 1:  # telemetry, energy and switches are per request, not per batch
        raise UserInputError("adaptive serving sends one request at a time; run it with micro_batch=1")
    static, problem = with_run_weights(static, problem, options)
    options = replace(options, telemetry=True, weights=None)
    estimator = estimator or Estimator(problem)
    run = AdaptiveRun()
    # the traces start with the first request, and keep their epoch across switches
    replies, options = deploy_with_traces_from_now(client, static, problem, endpoint, options, client_address,
                                                   everywhere=True)
    output_names = tuple(replies[problem.origin]["results"])  # the same values under every plan
    run.plans[options.plan_version] = str(static)
    run.cut_bytes[options.plan_version] = evaluate(static, problem).cut_bytes
    with contextlib.ExitStack() as stack:
        watchdog = None
        if options.recover:
            watched = [d for d in problem.cluster.device_names if d in client.workers]
            watchdog = stack.enter_context(Watchdog(client.control_connection, watched,
                                                    down_after_s=options.down_after_s))
        loop = _Loop(problem, static, policy, client, endpoint, options, inputs_for, estimator, client_address,
                     on_record, probe_sizes_bytes, run, output_names, watchdog)
        loop.serve()
    return run


class _Loop:
    """One adaptive run's serving loop: requests, records, the policy's decisions, and recovery."""

    def __init__(self, problem: Problem, static: Plan, policy: Policy, client: Client, endpoint: Endpoint,
                 options: RunOptions, inputs_for: Callable[[int], Mapping[str, np.ndarray]], estimator: Estimator,
                 client_address: ClientAddress | None, on_record: Callable[[RequestRecord], None] | None,
                 probe_sizes_bytes: tuple[int, ...], run: AdaptiveRun, output_names: tuple[str, ...],
                 watchdog: Watchdog | None) -> None:
        self.problem, self.static, self.policy, self.client = problem, static, policy, client
        self.endpoint, self.options, self.inputs_for, self.estimator = endpoint, options, inputs_for, estimator
        self.client_address, self.on_record, self.run, self.output_names = client_address, on_record, run, output_names
        self.probe_sizes = [size for _ in range(PROBE_REPEATS) for size in probe_sizes_bytes]
        self.version, self.current = options.plan_version, static
        self.plans: dict[int, Plan] = {self.version: static}
        self.start_s, self.start_unix_s = time.perf_counter(), time.time()
        # a lost device goes through the policy first (`_failover`), then the fallbacks of coinfer run
        self.recovery = None if watchdog is None else Recovery(
            client, static, problem, endpoint, options, watchdog, client_address, everywhere=True,
            replan=self._failover, return_to_base=False)
        self.state = policy.initial_state(self._view(None))

    def _view(self, record: RequestRecord | None, problem: Problem | None = None) -> View:
        estimates = self.estimator.snapshot(time.perf_counter() - self.start_s)
        base = problem or self.problem
        r = self.recovery
        return View(time.perf_counter() - self.start_s, base, apply(base, estimates), estimates, self.current,
                    self.static, record, len(self.run.records), frozenset(r.down) if r else frozenset(),
                    r.watchdog.degraded if r else frozenset())

    def serve(self) -> None:
        client, run, options = self.client, self.run, self.options
        pending: dict[int, Outcome] = {}
        kept: dict[int, Mapping[str, np.ndarray]] = {}
        finished: list[tuple[Outcome, int, float]] = []  # done, waiting for the workers' reports
        next_id, last_id = 1, 1 + options.requests
        seen: set[int] = set()
        while next_id < last_id or pending or finished:
            if self.recovery is not None:
                change = self.recovery.reroute()
                if change is not None:
                    self._recovered(change, next_id, len(pending))
                    replay(client, self.problem.origin, pending, kept, change)
            while next_id < last_id and len(pending) < options.in_flight:
                kept[next_id] = self.inputs_for(next_id)
                pending[next_id] = Outcome(next_id, time.perf_counter(), plan_version=self.version)
                client.submit(self.problem.origin, self.version, next_id, kept[next_id])
                next_id += 1
            for outcome in client.collect(pending, self.output_names, 0.05):
                if outcome.errors and self.recovery is not None and self.recovery.lacks_version(outcome.errors):
                    outcome.errors.clear()  # a worker restarted: recovery routes around it, the request is replayed
                    outcome.outputs.clear()
                    pending[outcome.request_id] = outcome
                    continue
                kept.pop(outcome.request_id, None)
                if outcome.errors:
                    client.cancel(outcome.plan_version or self.version, outcome.request_id)
                finished.append((outcome, outcome.plan_version or self.version, time.perf_counter()))
            for outcome in _expire(client, pending, finished, options.timeout_s):
                kept.pop(outcome.request_id, None)
            for hop in client.probes:
                self.estimator.observe_hop(_hop(hop, self.start_unix_s, probe=True))
            client.probes.clear()
            for outcome, v in _ready(client, finished, self.plans, self.problem):
                if outcome.request_id in seen:
                    run.duplicated += 1
                    continue
                seen.add(outcome.request_id)
                self._observe(outcome, v, next_id, len(pending))
            self._retire(pending, finished)
        run.elapsed_s = time.perf_counter() - self.start_s
        run.duplicated += client.late_outputs
        run.stale_dropped = client.stale_messages
        if self.recovery is not None:
            run.health = self.recovery.report(self.start_s)
        run.outcomes.sort(key=lambda o: o.request_id)

    def _observe(self, outcome: Outcome, version: int, next_id: int, in_flight: int) -> None:
        """Record one finished request and let the policy decide on it."""
        run = self.run
        reports = self.client.telemetry.pop((version, outcome.request_id), [])
        run.node_samples.add(reports)
        record = _record(outcome, version, self.plans[version], self.problem, reports, self.start_s,
                         self.start_unix_s)
        run.records.append(record)
        run.outcomes.append(outcome)
        self.estimator.observe(record)
        if self.on_record is not None:
            self.on_record(record)
        decide_start = time.perf_counter()
        view = self._view(record)
        decision = self.policy.decide(view, self.state)
        run.decision_s.append(time.perf_counter() - decide_start)
        self.state = decision.state
        for source, target in decision.probe_links:
            if source not in view.down and target not in view.down:
                _probe(self.client, source, target, self.probe_sizes)
        plan = decision.plan
        if plan is None or plan.placement == self.current.placement:
            return
        if set(plan.devices_used) & view.down:
            log.warning("policy %s proposed %s, which runs on a device that is down; kept %s", self.policy.name,
                        plan, self.current)
            return
        deploy_start = time.perf_counter()
        new = self.recovery.next_version() if self.recovery else self.version + 1
        usable = self.problem.without(view.down)
        try:
            deploy(self.client, plan, usable, self.endpoint, replace(self.options, plan_version=new),
                   self.client_address, everywhere=True)
        except UnreachableError as exc:  # lost before the watchdog said so: recovery takes it from here
            if self.recovery is None:
                raise
            log.warning("switch to %s abandoned: %s", plan, exc)
            self.recovery.unreachable(exc)
            return
        self._switched(Switch(view.now_s, next_id, self.version, new, str(plan), decision.reason,
                              time.perf_counter() - deploy_start, in_flight), plan)
        if self.recovery is not None:
            self.recovery.adopt(new, plan)

    def _failover(self, current: Plan, usable: Problem) -> Plan:
        """The replacement for a plan that lost a device: the policy's choice on the cluster less the
        devices down, when it makes one that avoids them; else `replacement_plan`'s."""
        try:
            decision = self.policy.decide(self._view(None, usable), self.state)
        except CoinferError as exc:  # a policy built for the whole cluster (reap's three-device chain)
            log.info("policy %s cannot decide without the lost device: %s", self.policy.name, exc)
            return replacement_plan(current, usable)
        plan = decision.plan
        if plan is not None and set(plan.devices_used) <= set(usable.cluster.device_names):
            self.state = decision.state
            return plan
        return replacement_plan(current, usable)

    def _recovered(self, change: Reroute, next_id: int, in_flight: int) -> None:
        assert self.recovery is not None
        entry = self.recovery.timeline[-1]
        reason = f"{entry.device} {entry.state} ({entry.detail}): {entry.action}"
        self._switched(Switch(entry.at_s - self.start_s, next_id, self.version, change.version,
                              str(self.recovery.current), reason, entry.deploy_s, in_flight, "failure"),
                       self.recovery.current)

    def _switched(self, switch: Switch, plan: Plan) -> None:
        self.run.switches.append(switch)
        self.version, self.current = switch.to_version, plan
        self.plans[self.version] = plan
        self.run.plans[self.version] = str(plan)
        self.run.cut_bytes[self.version] = evaluate(plan, self.problem).cut_bytes

    def _retire(self, pending: Mapping[int, Outcome], finished: list[tuple[Outcome, int, float]]) -> None:
        """Undeploy every old version no request still runs on (and forget its plan)."""
        busy = {o.plan_version for o in pending.values() if o.plan_version is not None} | {v for _, v, _ in finished}
        if self.recovery is not None:
            self.recovery.retire(busy)
        else:
            _retire(self.client, self.plans, busy, self.version)
        for v in [v for v in self.plans if v != self.version and v not in busy]:
            del self.plans[v]


def _expire(client: Client, pending: dict[int, Outcome], finished: list[tuple[Outcome, int, float]],
            timeout_s: float) -> list[Outcome]:
    now = time.perf_counter()
    expired = []
    for rid in [r for r, o in pending.items() if now - o.sent_s > timeout_s]:
        outcome = pending.pop(rid)
        outcome.errors.append({"error": f"no result within {timeout_s:g} s"})
        version = outcome.plan_version or 0
        client.cancel(version, rid)
        finished.append((outcome, version, now))
        expired.append(outcome)
    return expired


def _ready(client: Client, finished: list[tuple[Outcome, int, float]], plans: Mapping[int, Plan],
           problem: Problem) -> list[tuple[Outcome, int]]:
    """Finished requests whose every worker has reported (or that waited TELEMETRY_WAIT_S), in order."""
    ready, keep = [], []
    now = time.perf_counter()
    for outcome, v, done_s in finished:
        reports = client.telemetry.get((v, outcome.request_id), [])
        expected = {problem.origin, *plans[v].devices_used}
        if not outcome.ok or {r.get("device") for r in reports} >= expected or now - done_s > TELEMETRY_WAIT_S:
            ready.append((outcome, v))
        else:
            keep.append((outcome, v, done_s))
    finished[:] = keep
    return sorted(ready, key=lambda ov: ov[0].request_id)


def _retire(client: Client, plans: Mapping[int, Plan], busy: set[int], current: int) -> None:
    """Undeploy, on every worker, each old version no request still runs on."""
    for v in [v for v in plans if v != current and v not in busy]:
        for device in client.workers:
            try:
                client.call(device, {"op": "undeploy", "plan_version": v}, 5.0)
            except Exception as exc:  # a worker that cannot be reached keeps a stale version, harmlessly
                log.warning("could not undeploy version %d on %s: %s", v, device, exc)


def _probe(client: Client, source: str, target: str, sizes_bytes: list[int]) -> None:
    if source not in client.workers:
        return
    try:
        client.check(source, {"op": "probe", "target": target, "sizes_bytes": sizes_bytes}, 5.0)
    except Exception as exc:  # a probe that cannot be sent leaves the old link estimate in place
        log.warning("probe %s -> %s failed: %s", source, target, exc)


def _hop(doc: Mapping[str, Any], start_unix_s: float, *, probe: bool = False) -> HopSample:
    return HopSample(str(doc["source"]), str(doc["target"]), int(doc["size_bytes"]), float(doc["seconds"]),
                     float(doc["at_unix_s"]) - start_unix_s, probe)


def _record(outcome: Outcome, version: int, plan: Plan, problem: Problem, reports: list[dict[str, Any]],
            start_s: float, start_unix_s: float) -> RequestRecord:
    """The request as the workers reported it.

    Under device emulation a stage's time is the emulated device's (the worker's target): the
    device being played takes that long, whatever this machine needs. When this machine is slower
    than the device it plays (a GPU's stage on a laptop CPU), the stage is held for the real
    compute time instead, and `behind_s` says by how much. The record is the played world: stage
    times at the played devices' speed and the latency less the stages' lag (one request's stages
    run one after another), so policies and estimates see the devices being played rather than
    this machine. `summary` reports the measured latency beside it.
    """
    stages: list[StageSample] = []
    hops: list[HopSample] = []
    for report in reports:
        device = str(report["device"])
        times = problem.node_time_s[device]
        for s in report["stages"]:
            node_ids = tuple(s["node_ids"])
            held_s, target_s = float(s["held_s"]), s.get("target_s")
            seconds = held_s if target_s is None else min(held_s, float(target_s))
            stages.append(StageSample(device, node_ids, seconds, sum(times[n] for n in node_ids),
                                      float(s["at_unix_s"]) - start_unix_s, held_s - seconds))
        hops.extend(_hop(h, start_unix_s) for h in report["hops"])
    del plan
    latency = None
    if outcome.ok and outcome.latency_s is not None:
        latency = outcome.latency_s - sum(s.behind_s for s in stages)
    energy = request_energy_by_device_j(problem.cluster, stages, hops, latency)
    queues = {str(r["device"]): int(r.get("inbox", 0)) for r in reports}
    return RequestRecord(outcome.request_id, version, outcome.sent_s - start_s, latency, tuple(stages), tuple(hops),
                         energy, queues)


def summary(run: AdaptiveRun, problem: Problem) -> dict[str, Any]:
    """The `coinfer adapt --json` figures of one run. Latencies are the played devices' (`_record`);
    `measured_latency_s` and `measured_deadline_misses` are this machine's, equal without lag."""
    ok = [r.latency_s for r in run.records if r.latency_s is not None]
    measured = [o.latency_s for o in run.outcomes if o.ok and o.latency_s is not None]
    deadline = problem.constraints.deadline_s
    energies = [r.energy_j for r in run.records if r.ok]
    lost = sum(1 for o in run.outcomes if not o.ok)
    return {
        "requests": len(run.outcomes), "ok": len(ok), "lost": lost, "duplicated": run.duplicated,
        "replayed": sum(1 for o in run.outcomes if o.attempts > 1), "stale_dropped": run.stale_dropped,
        "health": run.health,
        "latency_s": _percentiles(ok),
        "measured_latency_s": _percentiles(measured),
        "energy_j_per_request": statistics.fmean(energies) if energies else None,
        "energy_source": "model",
        "deadline_s": deadline,
        "deadline_misses": sum(1 for t in ok if deadline is not None and t > deadline),
        "measured_deadline_misses": sum(1 for t in measured if deadline is not None and t > deadline),
        "switches": [vars(s) for s in run.switches],
        "decision_ms": {"median": statistics.median(run.decision_s) * 1e3 if run.decision_s else None,
                        "max": max(run.decision_s) * 1e3 if run.decision_s else None},
        "throughput_rps": len(ok) / run.elapsed_s if run.elapsed_s > 0 else None,
        "plans": {str(v): p for v, p in run.plans.items()},
        "emulation_behind": _behind(run.records),
    }


def _percentiles(latencies_s: Sequence[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50": None, "p95": None, "mean": None}
    return {"p50": float(np.percentile(latencies_s, 50)), "p95": float(np.percentile(latencies_s, 95)),
            "mean": statistics.fmean(latencies_s)}


def _behind(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Stages this machine computed slower than the emulated device it played (see `_record`)."""
    stages = [s for r in records for s in r.stages]
    late = [s for s in stages if s.behind_s > BEHIND_TOLERANCE_S]
    return {"stages": len(late), "of": len(stages), "by_device": dict(Counter(s.device for s in late)),
            "median_ms": statistics.median(s.behind_s for s in late) * 1e3 if late else None,
            "max_ms": max(s.behind_s for s in late) * 1e3 if late else None}

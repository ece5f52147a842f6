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
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coinfer.adapt.energy import request_energy_by_device_j
from coinfer.adapt.estimates import Estimator, apply
from coinfer.adapt.policy import Policy, View
from coinfer.adapt.probing import PROBE_REPEATS, PROBE_SIZES_BYTES
from coinfer.adapt.records import HopSample, RequestRecord, StageSample
from coinfer.cost import evaluate
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.client import Client, Outcome
from coinfer.runtime.deploy import with_run_weights
from coinfer.runtime.run import ClientAddress, Endpoint, RunOptions, deploy, deploy_with_traces_from_now

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
    elapsed_s: float = 0.0


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
    probe_sizes = [size for _ in range(PROBE_REPEATS) for size in probe_sizes_bytes]
    static, problem = with_run_weights(static, problem, options)
    options = _with(options, telemetry=True, weights=None)
    estimator = estimator or Estimator(problem)
    run = AdaptiveRun()
    version = options.plan_version
    # the traces start with the first request, and keep their epoch across switches
    replies, options = deploy_with_traces_from_now(client, static, problem, endpoint, options, client_address,
                                                   everywhere=True)
    output_names = tuple(replies[problem.origin]["results"])  # the same values under every plan
    run.plans[version], run.cut_bytes[version] = str(static), evaluate(static, problem).cut_bytes
    current, plans = static, {version: static}
    start_s, start_unix_s = time.perf_counter(), time.time()
    view = _view(problem, estimator, current, static, None, 0, 0.0)
    state = policy.initial_state(view)
    pending: dict[int, tuple[Outcome, int]] = {}
    finished: list[tuple[Outcome, int, float]] = []  # done, waiting for the workers' reports
    next_id, last_id = 1, 1 + options.requests
    seen: set[int] = set()
    while next_id < last_id or pending or finished:
        while next_id < last_id and len(pending) < options.in_flight:
            pending[next_id] = (Outcome(next_id, time.perf_counter()), version)
            client.submit(problem.origin, version, next_id, inputs_for(next_id))
            next_id += 1
        outcomes = {rid: o for rid, (o, _) in pending.items()}
        for outcome in client.collect(outcomes, output_names, 0.05):
            _, v = pending.pop(outcome.request_id)
            if outcome.errors:
                client.cancel(v, outcome.request_id)
            finished.append((outcome, v, time.perf_counter()))
        _expire(client, pending, finished, options.timeout_s)
        for hop in client.probes:
            estimator.observe_hop(_hop(hop, start_unix_s, probe=True))
        client.probes.clear()
        for outcome, v in _ready(client, finished, plans, problem):
            if outcome.request_id in seen:
                run.duplicated += 1
                continue
            seen.add(outcome.request_id)
            record = _record(outcome, v, plans[v], problem, client.telemetry.pop((v, outcome.request_id), []),
                             start_s, start_unix_s)
            run.records.append(record)
            run.outcomes.append(outcome)
            estimator.observe(record)
            if on_record is not None:
                on_record(record)
            now_s = time.perf_counter() - start_s
            decide_start = time.perf_counter()
            view = _view(problem, estimator, current, static, record, len(run.records), now_s)
            decision = policy.decide(view, state)
            run.decision_s.append(time.perf_counter() - decide_start)
            state = decision.state
            for source, target in decision.probe_links:
                _probe(client, source, target, probe_sizes)
            if decision.plan is not None and decision.plan.placement != current.placement:
                deploy_start = time.perf_counter()
                new = version + 1
                deploy(client, decision.plan, problem, endpoint, _with(options, plan_version=new), client_address,
                       everywhere=True)
                run.switches.append(Switch(now_s, next_id, version, new, str(decision.plan), decision.reason,
                                           time.perf_counter() - deploy_start, len(pending)))
                version, current = new, decision.plan
                plans[version] = current
                run.plans[version], run.cut_bytes[version] = str(current), evaluate(current, problem).cut_bytes
        _retire(client, plans, pending, finished, version)
    run.elapsed_s = time.perf_counter() - start_s
    run.duplicated += client.late_outputs
    run.outcomes.sort(key=lambda o: o.request_id)
    return run


def _with(options: RunOptions, **changes: Any) -> RunOptions:
    from dataclasses import replace

    return replace(options, **changes)


def _view(problem: Problem, estimator: Estimator, current: Plan, static: Plan, record: RequestRecord | None,
          served: int, now_s: float) -> View:
    estimates = estimator.snapshot(now_s)
    return View(now_s, problem, apply(problem, estimates), estimates, current, static, record, served)


def _expire(client: Client, pending: dict[int, tuple[Outcome, int]], finished: list[tuple[Outcome, int, float]],
            timeout_s: float) -> None:
    now = time.perf_counter()
    for rid in [r for r, (o, _) in pending.items() if now - o.sent_s > timeout_s]:
        outcome, v = pending.pop(rid)
        outcome.errors.append({"error": f"no result within {timeout_s:g} s"})
        client.cancel(v, rid)
        finished.append((outcome, v, now))


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


def _retire(client: Client, plans: dict[int, Plan], pending: Mapping[int, tuple[Outcome, int]],
            finished: list[tuple[Outcome, int, float]], current: int) -> None:
    """Undeploy every old version no request still runs on."""
    busy = {v for _, v in pending.values()} | {v for _, v, _ in finished}
    for v in [v for v in plans if v != current and v not in busy]:
        for device in client.workers:
            try:
                client.call(device, {"op": "undeploy", "plan_version": v}, 5.0)
            except Exception as exc:  # a worker that cannot be reached keeps a stale version, harmlessly
                log.warning("could not undeploy version %d on %s: %s", v, device, exc)
        del plans[v]


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

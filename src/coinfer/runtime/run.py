"""Running a plan end to end: deploy to workers, serve requests, verify, and report measured beside predicted.

`run_plan` is what `coinfer run` and the demo call. It works with any workers reachable over TCP;
`coinfer.runtime.local.LocalWorkers` starts them on this machine. Link emulation follows the
plan's cluster: `inproc` shapes bandwidth, delay and per-message overhead in the sending worker
(coinfer.shaping); `kernel` leaves bandwidth to tc in network namespaces and adds only
the delay and overhead in-process; `none` sends as fast as the network goes.

With `micro_batch` K > 1 the client packs K requests into one batch (coinfer.runtime.batching):
workers run the stages at batch K, `in_flight` and `warmup` count batches, each request's latency
is its batch's, throughput counts requests, and the prediction is the batched plan's.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from coinfer.cost import Breakdown, evaluate
from coinfer.errors import WorkerError
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.report import predicted_block
from coinfer.runtime.batching import (
    FIRST_REQUEST_ID,
    at_batch,
    check_divisible,
    pack,
    run_batched_requests,
    slot,
    unpack,
)
from coinfer.runtime.client import Client, Outcome
from coinfer.runtime.delivery import run_requests
from coinfer.runtime.deploy import (
    check_stealable,
    deploy,
    deploy_with_traces_from_now,
    lowered_for_run,
    taking_part,
    with_run_weights,
)
from coinfer.runtime.options import ClientAddress, Endpoint, Progress, RunOptions, Shaping
from coinfer.runtime.packaging import packager_for
from coinfer.runtime.recovery import Recovery
from coinfer.runtime.verify import Comparison
from coinfer.runtime.watchdog import Watchdog

log = logging.getLogger(__name__)

__all__ = ["ClientAddress", "Endpoint", "RunOptions", "Shaping", "deploy", "deploy_with_traces_from_now", "run_plan",
           "taking_part"]


def run_plan(plan: Plan, problem: Problem, client: Client, endpoint: Endpoint, options: RunOptions,
             inputs: Mapping[str, np.ndarray], on_done: Callable[[Outcome], None] | None = None,
             client_address: ClientAddress | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Deploy, serve `options.requests` requests of `inputs`, and report (the `coinfer run --json` document).

    With `options.micro_batch` K, requests go K to a batch (each a copy of `inputs`) and `on_done`
    is called once per request. `options.weights` runs the model with that state dict (and
    `--verify` compares with the model holding it); `progress` hears of the weights shipped."""
    k = options.micro_batch
    check_divisible(options.requests, k)
    if options.steal:
        check_stealable(plan)
    plan, problem = with_run_weights(plan, problem, options)
    options = replace(options, weights=None)
    start = time.perf_counter()
    replies, options = deploy_with_traces_from_now(client, plan, problem, endpoint, options, client_address,
                                                   progress=progress)
    deploy_s = time.perf_counter() - start
    output_names = tuple(replies[problem.origin]["results"])
    version = options.plan_version
    batch = pack([inputs] * k)
    with _watching(client, plan, problem, endpoint, options, client_address) as recovery:
        if options.warmup:
            warm = run_requests(client, problem.origin, recovery.version if recovery else version, output_names,
                                lambda _: batch, options.warmup, 1, options.timeout_s, first_id=1_000_000_000,
                                rerouter=recovery)
            _raise_first_error(warm)
        start = time.perf_counter()
        outcomes = run_batched_requests(client, problem.origin, recovery.version if recovery else version,
                                        output_names, lambda _: inputs, options.requests, k, options.in_flight,
                                        options.timeout_s, FIRST_REQUEST_ID, on_done=on_done, rerouter=recovery)
        elapsed_s = time.perf_counter() - start
    batched_plan, batched_problem = at_batch(plan, problem, k)
    breakdown = evaluate(batched_plan, batched_problem)
    if plan.tilings:  # the workers ran (and count stages of) the lowered plan
        batched_plan, batched_problem, _ = lowered_for_run(plan, problem, packager_for(problem.graph), 1,
                                                           options.steal)
    stats = _worker_stats(client, replies, version)
    report = _summary(outcomes, elapsed_s, breakdown.latency_s)
    report.update(plan=str(plan), solver=plan.solver, deploy_s=deploy_s, in_flight=options.in_flight, micro_batch=k,
                  weights=problem.graph.source.options.get("weights") if problem.graph.source else None,
                  sent_weight_bytes={d: r["sent_weight_bytes"] for d, r in replies.items()},
                  emulation="plan" if options.emulate else "off", shaping=options.shaping,
                  predicted=_predicted(breakdown, k),
                  stages=_stages(batched_plan, batched_problem, stats),
                  errors=_distinct_errors(outcomes)[:10])
    report["recovery"] = _recovery_block(recovery, outcomes, client, start)
    if options.steal:
        report["stealing"] = _stealing_block(stats)
    if options.verify:
        report.update(_verify(problem.graph, batch, outcomes, int(replies[problem.origin]["threads"]), k))
    return report


@contextlib.contextmanager
def _watching(client: Client, plan: Plan, problem: Problem, endpoint: Endpoint, options: RunOptions,
              client_address: ClientAddress | None) -> Iterator[Recovery | None]:
    """A watchdog on every worker and the Recovery that acts on it, while requests run (None when
    `options.recover` is off: a lost device then fails its requests after the timeout)."""
    if not options.recover:
        yield None
        return
    watched = [d for d in problem.cluster.device_names if d in client.workers]
    with Watchdog(client.control_connection, watched, down_after_s=options.down_after_s) as watchdog:
        recovery = Recovery(client, plan, problem, endpoint, options, watchdog, client_address)
        recovery.prepare_standbys()
        yield recovery


def _recovery_block(recovery: Recovery | None, outcomes: list[Outcome], client: Client,
                    start_s: float) -> dict[str, Any]:
    """What the run did about failures: the timeline, requests replayed, stale answers dropped."""
    if recovery is None:
        return {"enabled": False}
    return {"enabled": True, "timeline": recovery.report(start_s), "final_plan": str(recovery.current),
            "standby_versions": {d: v for d, (v, _) in recovery.prepared.items()},
            "replayed": sum(1 for o in outcomes if o.attempts > 1), "stale_dropped": client.stale_messages,
            "down": sorted(recovery.down)}


def _predicted(breakdown: Breakdown, k: int) -> dict[str, Any]:
    """The cost model's block for one batch, with throughput in requests (K per batch) per second."""
    block = predicted_block(breakdown)
    block["throughput_rps"] = breakdown.throughput_rps * k
    return block


def _distinct_errors(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Every error once: the K requests of a failed batch share their batch's error objects."""
    return list({id(e): e for o in outcomes for e in o.errors}.values())


def _raise_first_error(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        if o.errors:
            e = o.errors[0]
            where = f"worker {e['worker']!r}: " if "worker" in e else ""
            raise WorkerError(f"the first request failed: {where}{e.get('error')}")


def _summary(outcomes: list[Outcome], elapsed_s: float, predicted_s: float) -> dict[str, Any]:
    ok = [o.latency_s for o in outcomes if o.ok and o.latency_s is not None]
    latency: dict[str, float | None] = {"p50": None, "p95": None, "mean": None}
    if ok:
        latency = {"p50": float(np.percentile(ok, 50)), "p95": float(np.percentile(ok, 95)),
                   "mean": statistics.fmean(ok)}
    return {
        "requests": len(outcomes), "ok": len(ok), "failed": len(outcomes) - len(ok), "latency_s": latency,
        "throughput_rps": len(ok) / elapsed_s if elapsed_s > 0 else None,
        "measured_over_predicted": (latency["p50"] / predicted_s) if latency["p50"] and predicted_s > 0 else None,
    }


def _worker_stats(client: Client, replies: Mapping[str, Any], version: int) -> dict[str, dict[str, Any]]:
    """Each reachable worker's stats of the run's plan version (its stages' times, tiles it let be stolen)."""
    return {d: client.check(d, {"op": "stats", "plan_version": version})
            for d in replies if d not in client.unreachable}


def _stages(plan: Plan, problem: Problem, stats: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per stage of the plan, predicted beside measured on its device. A stolen tile's stage ran on
    other devices too: `runs` counts them all, `runs_by_device` says where."""
    breakdown = evaluate(plan, problem)
    measured = {(device, s["index"]): s for device, st in stats.items() for s in st["stages"]}
    rows = []
    for index, (stage, cost) in enumerate(zip(plan.stages, breakdown.stages, strict=True)):
        m = measured.get((stage.device, index), {})
        by_device = {d: measured[(d, index)]["runs"] for d in stats if (d, index) in measured}
        row = {"stage": str(stage), "device": stage.device, "predicted_compute_s": cost.compute_s,
               "measured_compute_s": m.get("compute_s"), "held_s": m.get("held_s"),
               "emulated_s": m.get("emulated_s"), "runs": sum(by_device.values()), "sent_bytes": cost.sent_bytes}
        if set(by_device) - {stage.device}:
            row["runs_by_device"] = by_device
        rows.append(row)
    return rows


def _stealing_block(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What work stealing did: per tiled stage (by the node that stitches it), the tiles its scatter
    device handed to another device than the plan's, over every request the workers served (warm-up too)."""
    by_stage = {stitch: n for st in stats.values() for stitch, n in st.get("stolen_tiles", {}).items()}
    return {"stolen_tiles": sum(by_stage.values()), "by_stage": by_stage}


def _verify(graph: Any, batch: Mapping[str, np.ndarray], outcomes: list[Outcome], threads: int,
            k: int) -> dict[str, Any]:
    """Every request's outputs against its rows of the unpartitioned model's outputs on the same batch
    (coinfer.runtime.verify: a NaN, an infinity, a missing output or another shape fails it)."""
    from coinfer.runtime.reference import reference_outputs

    expected = unpack(reference_outputs(graph, batch, threads), k)
    comparison = Comparison()
    for o in outcomes:
        if o.ok:
            comparison.add(o.outputs, expected[slot(o.request_id, k)], f"request {o.request_id}")
    if not comparison.compared:
        comparison.problems.append("no request returned outputs to compare")
    return comparison.report()

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

import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from coinfer.cost import Breakdown, evaluate
from coinfer.errors import PlanError, WorkerError
from coinfer.files.plan_file import plan_to_dict
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
from coinfer.runtime.client import Client, Outcome, run_requests
from coinfer.shaping import BandwidthTrace

log = logging.getLogger(__name__)

Shaping = Literal["inproc", "kernel", "none"]
Endpoint = Callable[[str, "str | None"], str]  # (device, seen from device or None=client) -> tcp://...
ClientAddress = Callable[[str], str]  # device -> how that device's worker reaches the client's sink


@dataclass(frozen=True)
class RunOptions:
    requests: int = 10
    in_flight: int = 1  # requests (batches, with micro_batch > 1) outstanding at once; above 1 the stages pipeline
    warmup: int = 1  # requests (batches) sent first and not counted (first-call costs)
    emulate: bool = False  # hold each stage for the plan's predicted time on its device
    shaping: Shaping = "inproc"
    traces: Mapping[tuple[str, str], BandwidthTrace] = field(default_factory=dict)
    verify: bool = False
    timeout_s: float = 60.0
    plan_version: int = 1
    deploy_timeout_s: float = 300.0
    connect_timeout_s: float = 10.0  # how long a worker may take to answer its first health check
    telemetry: bool = False  # workers report every request's stage times and hops (adaptive serving)
    trace_epoch_unix_s: float | None = None  # when the link traces start (None: at deploy); kept across switches
    micro_batch: int = 1  # requests packed into one batch along dimension 0; `requests` must be a multiple of it


def taking_part(plan: Plan, problem: Problem) -> tuple[str, ...]:
    """The devices that compute, plus the origin, which always receives the input and the result."""
    return tuple(dict.fromkeys([problem.origin, *plan.devices_used]))


def deploy_body(plan: Plan, problem: Problem, device: str, endpoint: Endpoint, client_address: str,
                options: RunOptions, epoch_unix_s: float, devices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The deploy message for the worker playing `device`; it learns the links and addresses of
    `devices` (default: those taking part in the plan)."""
    cluster = problem.cluster
    devices = devices or taking_part(plan, problem)
    links: dict[str, Any] = {}
    for target in devices:
        link = cluster.link(device, target)
        if target == device or link is None or options.shaping == "none":
            continue
        doc: dict[str, Any] = {"latency_s": link.latency_s, "overhead_s": link.overhead_s}
        if options.shaping == "inproc":
            doc["bandwidth_bits_per_s"] = link.bytes_per_s * 8.0
            trace = options.traces.get((device, target))
            if trace is not None:
                doc["trace"] = {"start_s": list(trace.start_s), "bits_per_s": list(trace.bits_per_s),
                                "time_scale": trace.time_scale, "epoch_unix_s": epoch_unix_s}
        links[target] = doc
    return {
        "op": "deploy", "plan_version": options.plan_version, "device": device,
        "plan": plan_to_dict(plan, problem), "client": client_address, "emulate": options.emulate, "links": links,
        "telemetry": options.telemetry,
        "peers": {d: endpoint(d, device) for d in devices if d != device},
        # only when batching, so a worker of a version before micro-batching still serves plain runs
        **({"micro_batch": options.micro_batch} if options.micro_batch > 1 else {}),
    }


def deploy(client: Client, plan: Plan, problem: Problem, endpoint: Endpoint, options: RunOptions,
           client_address: ClientAddress | None = None, *, everywhere: bool = False) -> dict[str, Any]:
    """Deploy to every device taking part (the origin always does); their replies by device.

    `client_address` says how each worker reaches the client (default: the sink's own endpoint,
    right when everything runs on this machine's loopback). `everywhere` deploys to every worker
    of the cluster and tells each all the others' addresses (adaptive serving: any link may be
    probed, and the next plan may use any device)."""
    devices = taking_part(plan, problem)
    if everywhere:
        devices = tuple(dict.fromkeys([*devices, *(d for d in problem.cluster.device_names if d in client.workers)]))
    missing = [d for d in devices if d not in client.workers]
    if missing:
        raise PlanError(f"the plan runs on {', '.join(devices)} but no worker was given for {', '.join(missing)}; "
                        "pass --workers NAME=HOST:PORT for each, or --local")
    for (source, target) in [(s, t) for s in devices for t in devices if s != t]:
        if problem.cluster.link(source, target) is None and _sends(plan, problem, source, target):
            raise PlanError(f"the plan sends from {source} to {target}, but the cluster has no link between them")
    # every worker answers before any is loaded, so a dead one is named at once
    health = {device: client.check(device, {"op": "health"}, options.connect_timeout_s) for device in devices}
    epoch = options.trace_epoch_unix_s or time.time()
    replies = {}
    for device in devices:
        sink = client_address(device) if client_address is not None else client.sink_endpoint
        body = deploy_body(plan, problem, device, endpoint, sink, options, epoch, devices)
        replies[device] = {**client.check(device, body, options.deploy_timeout_s), "threads": health[device]["threads"]}
    return replies


def deploy_with_traces_from_now(client: Client, plan: Plan, problem: Problem, endpoint: Endpoint,
                                options: RunOptions, client_address: ClientAddress | None = None, *,
                                everywhere: bool = False) -> tuple[dict[str, Any], RunOptions]:
    """`deploy`, with the link traces starting when it returns rather than when it began.

    Building the stages can take seconds (VGG16's: tens), and a trace that started before would
    be that far along at the first request. With traces and no fixed epoch the plan is deployed
    twice: once to build (the executors are cached per graph), then again, quickly, with the
    epoch set to now, which restarts every traced link's shaper. Returns the replies and the
    options with that epoch, for the deploys of later plan versions."""
    replies = deploy(client, plan, problem, endpoint, options, client_address, everywhere=everywhere)
    if options.traces and options.trace_epoch_unix_s is None:
        options = replace(options, trace_epoch_unix_s=time.time())
        replies = deploy(client, plan, problem, endpoint, options, client_address, everywhere=everywhere)
    return replies, options


def _sends(plan: Plan, problem: Problem, source: str, target: str) -> bool:
    return any(t.source == source and t.target == target for t in evaluate(plan, problem).transfers)


def run_plan(plan: Plan, problem: Problem, client: Client, endpoint: Endpoint, options: RunOptions,
             inputs: Mapping[str, np.ndarray], on_done: Callable[[Outcome], None] | None = None,
             client_address: ClientAddress | None = None) -> dict[str, Any]:
    """Deploy, serve `options.requests` requests of `inputs`, and report (the `coinfer run --json` document).

    With `options.micro_batch` K, requests go K to a batch (each a copy of `inputs`) and `on_done`
    is called once per request."""
    k = options.micro_batch
    check_divisible(options.requests, k)
    start = time.perf_counter()
    replies, options = deploy_with_traces_from_now(client, plan, problem, endpoint, options, client_address)
    deploy_s = time.perf_counter() - start
    output_names = tuple(replies[problem.origin]["results"])
    version = options.plan_version
    batch = pack([inputs] * k)
    if options.warmup:
        warm = run_requests(client, problem.origin, version, output_names, lambda _: batch, options.warmup,
                            1, options.timeout_s, first_id=1_000_000_000)
        _raise_first_error(warm)
    start = time.perf_counter()
    outcomes = run_batched_requests(client, problem.origin, version, output_names, lambda _: inputs, options.requests,
                                    k, options.in_flight, options.timeout_s, FIRST_REQUEST_ID, on_done=on_done)
    elapsed_s = time.perf_counter() - start
    batched_plan, batched_problem = at_batch(plan, problem, k)
    breakdown = evaluate(batched_plan, batched_problem)
    report = _summary(outcomes, elapsed_s, breakdown.latency_s)
    report.update(plan=str(plan), solver=plan.solver, deploy_s=deploy_s, in_flight=options.in_flight, micro_batch=k,
                  emulation="plan" if options.emulate else "off", shaping=options.shaping,
                  predicted=_predicted(breakdown, k),
                  stages=_stages(batched_plan, batched_problem, client, replies, version),
                  errors=_distinct_errors(outcomes)[:10])
    if options.verify:
        report.update(_verify(problem.graph, batch, outcomes, int(replies[problem.origin]["threads"]), k))
    return report


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


def _stages(plan: Plan, problem: Problem, client: Client, replies: Mapping[str, Any],
            version: int) -> list[dict[str, Any]]:
    breakdown = evaluate(plan, problem)
    measured: dict[int, dict[str, Any]] = {}
    for device in replies:
        stats = client.check(device, {"op": "stats", "plan_version": version})
        measured.update({s["index"]: s for s in stats["stages"]})
    rows = []
    for index, (stage, cost) in enumerate(zip(plan.stages, breakdown.stages, strict=True)):
        m = measured.get(index, {})
        rows.append({"stage": str(stage), "device": stage.device, "predicted_compute_s": cost.compute_s,
                     "measured_compute_s": m.get("compute_s"), "held_s": m.get("held_s"),
                     "emulated_s": m.get("emulated_s"), "runs": m.get("runs", 0), "sent_bytes": cost.sent_bytes})
    return rows


def _verify(graph: Any, batch: Mapping[str, np.ndarray], outcomes: list[Outcome], threads: int,
            k: int) -> dict[str, Any]:
    """Every request's outputs against its rows of the unpartitioned model's outputs on the same batch."""
    from coinfer.runtime.executor import reference_outputs

    expected = unpack(reference_outputs(graph, batch, threads), k)
    worst, identical, scale = 0.0, True, 0.0
    for o in outcomes:
        for name, ref in expected[slot(o.request_id, k)].items():
            if name not in o.outputs:
                continue
            got = o.outputs[name]
            identical = identical and got.shape == ref.shape and bool(np.array_equal(got, ref))
            if got.shape == ref.shape and got.size:
                worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))))
            scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 0.0)
    return {"max_abs_err": worst, "bit_identical": identical, "output_scale": scale,
            "verified": any(o.outputs for o in outcomes)}

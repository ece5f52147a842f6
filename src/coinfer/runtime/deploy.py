"""Deploying a plan to workers, from the client: health, deploy, weight blobs, activate.

Every worker taking part answers a health check first (so a dead one is named before any is
loaded, with the exit status of an unreachable worker), and says where its data socket is. Then,
per worker: the deploy message (the plan, the program of its own stages, the blobs they read, its
peers' data addresses and keys; coinfer.runtime.packaging), whose reply lists the blobs the
worker's cache lacks; those blobs, streamed in acknowledged chunks; and `activate`. Only once
every worker is active does a request go out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from coinfer.capture.weights import with_weights
from coinfer.cost import evaluate
from coinfer.errors import PlanError
from coinfer.files.plan_file import plan_to_dict
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.client import Client
from coinfer.runtime.options import ClientAddress, Endpoint, Progress, RunOptions
from coinfer.runtime.packaging import DevicePackage, Packager, packager_for

if TYPE_CHECKING:
    from coinfer.runtime.packaging.tiled_program import LoweredPlan
from coinfer.runtime.routing import DeviceRoute, route

log = logging.getLogger(__name__)


def taking_part(plan: Plan, problem: Problem) -> tuple[str, ...]:
    """The devices that compute, plus the origin, which always receives the input and the result."""
    return tuple(dict.fromkeys([problem.origin, *plan.devices_used]))


def workers_needed(plan: Plan, problem: Problem) -> tuple[str, ...]:
    """The devices a run needs workers for: those taking part, and the plan's standbys."""
    return tuple(dict.fromkeys([*taking_part(plan, problem), *plan.standby_devices]))


def with_run_weights(plan: Plan, problem: Problem, options: RunOptions) -> tuple[Plan, Problem]:
    """The plan and problem whose graph names `options.weights` (unchanged when it is None)."""
    if options.weights is None:
        return plan, problem
    graph = with_weights(problem.graph, options.weights)
    return (Plan(graph, plan.placement, plan.solver, codecs=plan.codecs, standbys=plan.standbys,
                 tilings=plan.tilings), replace(problem, graph=graph))


def lowered_for_run(plan: Plan, problem: Problem, packager: Packager, micro_batch: int = 1,
                    steal: bool = False) -> tuple[Plan, Problem, Packager]:
    """A plan with tiled stages as the runtime runs it: the ordinary plan and problem over the expanded
    program (coinfer.runtime.packaging.tiled_program), and a packager of that program. `steal`
    pools the fused tiles for work stealing (coinfer.runtime.stealing)."""
    lowered, lowered_packager = lowering(plan, problem, packager, micro_batch, steal)
    return lowered.plan, lowered.problem, lowered_packager


def check_stealable(plan: Plan) -> None:
    """A run with work stealing needs a fused tiled stage to steal in (else the option would do nothing)."""
    if not any(t.mode == "fused" for t in plan.tilings):
        raise PlanError("work stealing (--steal) hands out fused tiles, and this plan has no fused tiled stage; "
                        "tile a range with tiles[RxC,fused](...) (docs/tiling.md) or drop --steal")


def lowering(plan: Plan, problem: Problem, packager: Packager, micro_batch: int = 1,
             steal: bool = False) -> tuple[LoweredPlan, Packager]:
    """`lowered_for_run`, with the lowered plan's sections (which expanded nodes each tiled stage became)."""
    from coinfer.runtime.packaging.tiled_program import lower_tilings

    if micro_batch != 1:
        raise PlanError("micro-batching does not run tiled stages: run the tiled plan at micro-batch 1")
    if packager.kind != "torch":
        raise PlanError("tiled stages run on PyTorch programs; an ONNX model's plan cannot tile (capture the model "
                        "from PyTorch)")
    lowered = lower_tilings(plan, problem, packager.torch, steal)
    key = (id(packager), str(plan))  # the program follows from the model and the plan's stages (stealing or not)
    if key not in _LOWERED:
        while len(_LOWERED) >= 2:
            _LOWERED.pop(next(iter(_LOWERED)))
        _LOWERED[key] = Packager.of_program(problem.graph, lowered.program)  # its weights hashed once
    return lowered, _LOWERED[key]


_LOWERED: dict[tuple[int, str], Packager] = {}


def data_endpoint(control_endpoint: str, data_port: int) -> str:
    """A worker's data socket, reached over the same host as its control socket."""
    return f"{control_endpoint.rpartition(':')[0]}:{data_port}"


def deploy_body(plan: Plan, problem: Problem, device: str, package: DevicePackage, peers: dict[str, str],
                client: Client, client_address: str, options: RunOptions, epoch_unix_s: float,
                devices: tuple[str, ...], incarnations: dict[str, str] | None = None) -> dict[str, Any]:
    """The deploy message for the worker playing `device` (coinfer.runtime.worker.deployment.DeployDoc)."""
    cluster = problem.cluster
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
    others = [d for d in devices if d != device]
    body: dict[str, Any] = {
        "op": "deploy", "plan_version": options.plan_version, "device": device,
        "plan": plan_to_dict(plan, problem), "program": package.program,
        "blobs": {sha: {"bytes": b.size_bytes, "kind": b.kind} for sha, b in package.blobs.items()},
        "client": client_address, "emulate": options.emulate, "links": links, "telemetry": options.telemetry,
        "peers": {d: peers[d] for d in others}, "micro_batch": options.micro_batch,
        "peer_incarnations": {d: i for d, i in (incarnations or {}).items() if d in others},
    }
    if options.session is not None:
        body["session"] = {"group": options.session.name, "max_sessions": options.session.max_sessions}
    if client.security is not None:
        body["client_key"] = client.public_key
        body["peer_keys"] = {d: client.worker_key(d) for d in others}
    return body


def deploy(client: Client, plan: Plan, problem: Problem, endpoint: Endpoint, options: RunOptions,
           client_address: ClientAddress | None = None, *, everywhere: bool = False,
           progress: Progress | None = None) -> dict[str, Any]:
    """Deploy to every device taking part (the origin always does); their activation replies by device.

    `client_address` says how each worker reaches the client (default: the sink's own endpoint,
    right when everything runs on this machine's loopback). `everywhere` deploys to every worker
    of the cluster and tells each all the others' addresses (adaptive serving: any link may be
    probed, and the next plan may use any device). `progress` hears of the weights as they go.
    The weights are those the problem's graph names (`with_run_weights` applies `options.weights`
    once, before the first deploy of a run)."""
    packager = packager_for(problem.graph, options.micro_batch)
    if plan.tilings:
        plan, problem, packager = lowered_for_run(plan, problem, packager, options.micro_batch, options.steal)
    devices = taking_part(plan, problem)
    if everywhere:
        devices = tuple(dict.fromkeys([*devices, *(d for d in problem.cluster.device_names
                                                   if d in client.workers and d not in client.unreachable)]))
    missing = [d for d in devices if d not in client.workers]
    if missing:
        raise PlanError(f"the plan runs on {', '.join(devices)} but no worker was given for {', '.join(missing)}; "
                        "pass --workers NAME=HOST:PORT for each, or --local")
    for (source, target) in [(s, t) for s in devices for t in devices if s != t]:
        if problem.cluster.link(source, target) is None and _sends(plan, problem, source, target):
            raise PlanError(f"the plan sends from {source} to {target}, but the cluster has no link between them")
    health = {device: client.check(device, {"op": "health"}, options.connect_timeout_s) for device in devices}
    routes = route(plan, packager.index, problem.origin)
    epoch = options.trace_epoch_unix_s or time.time()
    peers: dict[str, dict[str, str]] = {}
    for device in devices:
        port = int(health[device]["data_port"])
        client.connect_data(device, data_endpoint(endpoint(device, None), port))
        peers[device] = {d: data_endpoint(endpoint(d, device), int(health[d]["data_port"])) for d in devices}
    packages = {d: packager.package(routes.get(d) or DeviceRoute(d, (), frozenset(), {}, ())) for d in devices}
    wanted: dict[str, list[str]] = {}
    for device in devices:
        sink = client_address(device) if client_address is not None else client.sink_endpoint
        incarnations = {d: str(h["incarnation"]) for d, h in health.items() if "incarnation" in h}
        body = deploy_body(plan, problem, device, packages[device], peers[device], client, sink, options, epoch,
                           devices, incarnations)
        wanted[device] = list(client.check(device, body, options.deploy_timeout_s)["missing"])
    for device in devices:
        _send_weights(client, device, options, packages[device], wanted[device], packager.blob_bytes, progress)
    replies = {}
    for device in devices:
        reply = client.check(device, {"op": "activate", "plan_version": options.plan_version},
                             options.deploy_timeout_s)
        replies[device] = {**reply, "threads": health[device]["threads"], "sent_weight_bytes":
                           sum(packages[device].blobs[sha].size_bytes for sha in wanted[device])}
    return replies


def _send_weights(client: Client, device: str, options: RunOptions, package: DevicePackage, shas: list[str],
                  blob_bytes: Callable[[str], bytes], progress: Progress | None) -> None:
    unknown = [sha for sha in shas if sha not in package.blobs]
    if unknown:
        raise PlanError(f"worker {device!r} asked for blobs its deployment does not name ({unknown[0][:12]})")
    total = sum(package.blobs[sha].size_bytes for sha in shas)
    if not shas:
        return
    log.info("%s: sending %.1f MB of weights in %d blob(s) (%.1f MB already in its cache)", device, total / 1e6,
             len(shas), (package.total_blob_bytes - total) / 1e6)
    sent = 0

    def step(n: int) -> None:
        nonlocal sent
        sent += n
        if progress is not None:
            progress(device, sent, total)

    client.send_blobs(device, options.plan_version, shas, blob_bytes, package.labels, options.deploy_timeout_s, step)


def deploy_with_traces_from_now(client: Client, plan: Plan, problem: Problem, endpoint: Endpoint,
                                options: RunOptions, client_address: ClientAddress | None = None, *,
                                everywhere: bool = False,
                                progress: Progress | None = None) -> tuple[dict[str, Any], RunOptions]:
    """`deploy`, with the link traces starting when it returns rather than when it began.

    Shipping weights can take seconds, and a trace that started before would be that far along at
    the first request. With traces and no fixed epoch the plan is deployed twice: once to ship and
    build, then again, quickly (every blob is in the workers' caches), with the epoch set to now,
    which restarts every traced link's shaper. Returns the replies and the options with that epoch,
    for the deploys of later plan versions."""
    replies = deploy(client, plan, problem, endpoint, options, client_address, everywhere=everywhere,
                     progress=progress)
    if options.traces and options.trace_epoch_unix_s is None:
        options = replace(options, trace_epoch_unix_s=time.time())
        replies = deploy(client, plan, problem, endpoint, options, client_address, everywhere=everywhere)
    return replies, options


def _sends(plan: Plan, problem: Problem, source: str, target: str) -> bool:
    return any(t.source == source and t.target == target for t in evaluate(plan, problem).transfers)

"""A deploy message -> everything a worker needs to serve one plan version.

The coordinator sends each worker the whole self-contained plan document (graph, cluster, node
times, codecs), the device the worker plays, the addresses of its peers and of the client, and
how to emulate each outgoing link. The worker rebuilds the program from the graph's model source
(executors are cached per graph, so a new plan of the same model builds nothing), works out its
route, and checks that every value it must send is a tensor. At micro-batch K
(coinfer.runtime.batching) it builds the program at batch K, checks that its outputs split into K
requests, and holds each stage, when emulating, for the time the batched stage is predicted to take.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coinfer.errors import CoinferError, PlanError
from coinfer.files.graph_file import graph_digest
from coinfer.files.plan_file import plan_from_dict
from coinfer.graph import Graph
from coinfer.problem import Problem
from coinfer.runtime.batching import (
    batched_graph,
    batched_node_times,
    check_batched_outputs,
    check_same_dependencies,
)
from coinfer.runtime.executor import Executor, executor_for
from coinfer.runtime.routing import DeviceRoute, route
from coinfer.shaping import BandwidthTrace, LinkShaper

if TYPE_CHECKING:
    from coinfer.runtime.worker import WorkerConfig


class DeploymentError(CoinferError, ValueError):
    """A deploy message the worker cannot serve; the message says which field or stage and why."""


class TraceDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_s: list[float]
    bits_per_s: list[float]
    time_scale: float = 1.0
    epoch_unix_s: float  # when the trace's time 0 is, on the wall clock every process shares


class LinkDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bandwidth_bits_per_s: float | None = None  # None: the kernel (or nothing) limits bandwidth
    latency_s: float = Field(0.0, ge=0)
    overhead_s: float = Field(0.0, ge=0)
    trace: TraceDoc | None = None


class DeployDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: str
    plan_version: int = Field(ge=1)
    device: str
    plan: dict[str, Any]
    peers: dict[str, str]
    client: str
    links: dict[str, LinkDoc] = {}
    emulate: bool = False  # hold each stage for the plan's predicted time on this device
    telemetry: bool = False  # report each request's stage times and hops to the client (adaptive serving)
    micro_batch: int = Field(1, ge=1)  # requests the client packs into one batch along dimension 0


@dataclass(frozen=True)
class Deployment:
    plan_version: int
    device: str
    route: DeviceRoute
    executor: Executor
    peers: Mapping[str, str]
    client_address: str
    shapers: Mapping[str, LinkShaper]
    link_docs: Mapping[str, LinkDoc]  # what each shaper was built from (equal docs: keep the running shaper)
    codecs: Mapping[str, str]
    stage_time_s: Mapping[int, float]
    telemetry: bool = False


_EXECUTORS: dict[tuple[str, int], Executor] = {}  # by (graph digest, micro-batch)


def build_deployment(body: dict[str, Any], config: WorkerConfig) -> Deployment:
    try:
        doc = DeployDoc.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DeploymentError(f"deploy message: field {where}: {first['msg']}") from None
    try:
        plan, problem = plan_from_dict(doc.plan, f"deploy of plan version {doc.plan_version}")
    except CoinferError as exc:
        raise DeploymentError(str(exc)) from None
    if doc.device not in problem.cluster.device_names:
        raise DeploymentError(f"deploy: device {doc.device!r} is not in the plan's cluster "
                              f"({', '.join(problem.cluster.device_names)})")
    try:
        executor = _executor(problem.graph, config.threads, doc.micro_batch)
        routes = route(plan, executor.index, problem.origin)
    except CoinferError as exc:
        raise DeploymentError(f"deploy on {doc.device}: {exc}") from None
    mine = routes.get(doc.device) or DeviceRoute(doc.device, (), frozenset(), {}, ())
    _check_sendable(mine, executor)
    missing = sorted({t for ts in mine.sends.values() for t in ts} - set(doc.peers))
    if missing:
        raise DeploymentError(f"deploy on {doc.device}: no address for device(s) {missing}, which this device sends to")
    for stage in mine.stages:
        executor.prepare(stage)
    codecs = getattr(plan, "codecs", {}) or {}
    return Deployment(
        plan_version=doc.plan_version, device=doc.device, route=mine, executor=executor, peers=dict(doc.peers),
        client_address=doc.client, shapers={t: _shaper(link) for t, link in doc.links.items()}, link_docs=doc.links,
        codecs={t: str(c) for (s, t), c in codecs.items() if s == doc.device},
        stage_time_s=_stage_times(mine, problem, config, doc.emulate, doc.micro_batch),
        telemetry=doc.telemetry,
    )


def _executor(graph: Graph, threads: int, micro_batch: int) -> Executor:
    key = (graph_digest(graph), micro_batch)
    if key not in _EXECUTORS:
        executor = executor_for(graph, threads, micro_batch)
        if micro_batch > 1:
            check_batched_outputs(graph, executor.index, micro_batch)
            check_same_dependencies(graph, executor.index, micro_batch)
        _EXECUTORS[key] = executor
    return _EXECUTORS[key]


def _check_sendable(mine: DeviceRoute, executor: Executor) -> None:
    owner = {o: op.owner for op in executor.index.ops for o in op.outputs}
    for value in mine.sends:
        if value not in executor.index.specs:
            raise DeploymentError(
                f"the plan cuts after node {owner.get(value, value)!r}, whose value {value!r} is not a tensor "
                f"(a list or a number); move that cut one node earlier or later")


def _shaper(link: LinkDoc) -> LinkShaper:
    if link.trace is not None:
        t = link.trace
        trace = BandwidthTrace(tuple(t.start_s), tuple(t.bits_per_s), t.time_scale)
        start = time.monotonic() - (time.time() - t.epoch_unix_s)
        return LinkShaper(trace, link.latency_s, link.overhead_s, start)
    bandwidth = float("inf") if link.bandwidth_bits_per_s is None else link.bandwidth_bits_per_s
    return LinkShaper(bandwidth, link.latency_s, link.overhead_s)


def _stage_times(mine: DeviceRoute, problem: Problem, config: WorkerConfig, from_plan: bool,
                 micro_batch: int) -> dict[int, float]:
    """Per stage, the time emulation holds it for: the worker's own --emulate device's roofline, else
    the plan's times (at micro-batch K: of the batched graph, as coinfer.runtime.batching models it)."""
    node_time_s: Mapping[str, float]
    if config.emulate is not None:
        from coinfer.profile.analytic import predict
        from coinfer.profile.catalog import device_spec

        graph = batched_graph(problem.graph, micro_batch) if micro_batch > 1 else problem.graph
        node_time_s = predict(graph, device_spec(config.emulate)).node_time_s
    elif from_plan:
        node_time_s = problem.node_time_s.get(mine.device, {})
        if micro_batch > 1:
            batched = batched_node_times(problem, batched_graph(problem.graph, micro_batch), micro_batch)
            node_time_s = batched[mine.device]
    else:
        return {}
    missing = [n for s in mine.stages for n in s.node_ids if n not in node_time_s]
    if missing:
        raise PlanError(f"emulation needs a predicted time for every node on {mine.device}; {missing[:3]} have none")
    return {s.index: sum(node_time_s[n] for n in s.node_ids) for s in mine.stages}

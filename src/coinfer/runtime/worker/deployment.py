"""A deploy message -> everything a worker needs to serve one plan version, in two steps.

1. `parse_deploy` reads the message, which carries the self-contained plan document (graph,
   cluster, node times, codecs), the device the worker plays, the program document of its stages
   (coinfer.runtime.packaging) and the blobs that program reads, the data addresses and public
   keys of its peers, the client's sink and key, and how to emulate each outgoing link. It checks
   every field, works out the route (coinfer.runtime.routing) and checks that every value it must
   send is a tensor. Nothing is loaded and no blob is accepted before this step has passed.
2. `build_deployment`, once every blob is in the cache, loads the weights (memory-mapped from the
   cache's safetensors files) and builds the stage runner (coinfer.runtime.torch_stages or
   onnx_stages), checking each weight's dtype and shape against the program.

The graph's model source is never used by a worker: it is a label here. At micro-batch K the
client ships the batch-K program, and the worker holds each stage, when emulating, for the time
the batched stage is predicted to take.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coinfer.cost import memory_need_bytes
from coinfer.errors import CoinferError, PlanError
from coinfer.files.plan_file import plan_from_dict
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.batching import at_batch, batched_graph, batched_node_times
from coinfer.runtime.blobs import BlobInfo, check_sha256
from coinfer.runtime.program import ProgramIndex, index_from_doc
from coinfer.runtime.routing import DeviceRoute, route
from coinfer.runtime.stages import Stages
from coinfer.runtime.worker.config import WorkerConfig
from coinfer.runtime.worker.sessions import MAX_SESSIONS
from coinfer.shaping import BandwidthTrace, LinkShaper

# the dtypes a state tensor may have, and their item sizes
DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
               "int8": 1, "uint8": 1, "bool": 1}
Z85_KEY = r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$"  # a CURVE public key in z85


class DeploymentError(CoinferError, ValueError):
    """A deploy message the worker cannot serve; the message says which field or stage and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TraceDoc(_Strict):
    start_s: list[float] = Field(max_length=1_000_000)
    bits_per_s: list[float] = Field(max_length=1_000_000)
    time_scale: float = Field(1.0, gt=0)
    epoch_unix_s: float  # when the trace's time 0 is, on the wall clock every process shares


class LinkDoc(_Strict):
    bandwidth_bits_per_s: float | None = Field(None, gt=0)  # None: the kernel (or nothing) limits bandwidth
    latency_s: float = Field(0.0, ge=0, le=3600)
    overhead_s: float = Field(0.0, ge=0, le=3600)
    trace: TraceDoc | None = None


class BlobDoc(_Strict):
    bytes: int = Field(ge=0)
    kind: Literal["tensor", "onnx"] = "tensor"


class SessionDoc(_Strict):
    """The session group a stateful deployment keeps its sessions in (coinfer.runtime.worker.sessions)."""

    group: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    max_sessions: int = Field(ge=1, le=MAX_SESSIONS)


class DeployDoc(_Strict):
    op: Literal["deploy"]
    plan_version: int = Field(ge=1, lt=1 << 32)
    device: str = Field(min_length=1, max_length=200)
    plan: dict[str, Any]
    program: dict[str, Any]
    blobs: dict[str, BlobDoc] = Field(max_length=1_000_000)
    peers: dict[str, str]  # device -> the data endpoint of its worker
    peer_keys: dict[str, str] = {}  # device -> public key (z85), on secure workers
    # device -> the id its worker process drew at start: a peer that restarted gets a new link
    peer_incarnations: dict[str, str] = Field({}, max_length=10_000)
    client: str = Field(max_length=300)
    client_key: str | None = Field(None, pattern=Z85_KEY)
    links: dict[str, LinkDoc] = {}
    emulate: bool = False  # hold each stage for the plan's predicted time on this device
    telemetry: bool = False  # report each request's stage times and hops to the client (adaptive serving)
    micro_batch: int = Field(1, ge=1, le=1 << 16)  # requests the client packs into one batch along dimension 0
    session: SessionDoc | None = None  # a program with state (a causal LM's step) keeps it per session here


@dataclass(frozen=True)
class Pending:
    """A deploy message that passed every check and waits for its blobs."""

    doc: DeployDoc
    plan: Plan
    problem: Problem
    index: ProgramIndex
    route: DeviceRoute
    blobs: Mapping[str, BlobInfo]
    working_set_bytes: int  # activations the plan predicts this device holds at once, and its sessions' state
    received_s: float
    states: Mapping[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)  # state ref -> (shape, dtype)


@dataclass(frozen=True)
class Deployment:
    plan_version: int
    device: str
    route: DeviceRoute
    stages: Stages
    blobs: frozenset[str]  # the sha256 of every blob it holds (the cache keeps them)
    peers: Mapping[str, str]
    peer_keys: Mapping[str, bytes]
    peer_incarnations: Mapping[str, str]
    client_address: str
    client_key: bytes | None
    shapers: Mapping[str, LinkShaper]
    link_docs: Mapping[str, LinkDoc]  # what each shaper was built from (equal docs: keep the running shaper)
    codecs: Mapping[str, str]
    stage_time_s: Mapping[int, float]
    telemetry: bool = False
    node_time_s: Mapping[str, float] = field(default_factory=dict)  # emulation's time for each node it holds for
    session: SessionDoc | None = None


def parse_deploy(body: dict[str, Any], config: WorkerConfig) -> Pending:
    """Step 1 (the module docstring); DeploymentError names the field or stage that is wrong."""
    doc = _validate(body)
    where = f"deploy of plan version {doc.plan_version}"
    try:
        plan, problem = plan_from_dict(doc.plan, where)
    except CoinferError as exc:
        raise DeploymentError(str(exc)) from None
    if doc.device not in problem.cluster.device_names:
        raise DeploymentError(f"deploy: device {doc.device!r} is not in the plan's cluster "
                              f"({', '.join(problem.cluster.device_names)})")
    if config.secure and (doc.client_key is None or set(doc.peer_keys) != set(doc.peers)):
        raise DeploymentError(f"{where}: this worker is secure, so the deploy message must carry the client's key "
                              "and one public key for every peer it names")
    if doc.program.get("kind") not in ("torch", "onnx"):
        raise DeploymentError(f"{where}: field program.kind must be 'torch' or 'onnx'")
    try:
        index = index_from_doc(doc.program.get("index"), f"{where}: program.index")
        routes = route(plan, index, problem.origin)
        blobs = {check_sha256(sha, f"{where}: blobs"): BlobInfo(sha, b.bytes, b.kind) for sha, b in doc.blobs.items()}
    except CoinferError as exc:
        raise DeploymentError(f"deploy on {doc.device}: {exc}") from None
    mine = routes.get(doc.device) or DeviceRoute(doc.device, (), frozenset(), {}, ())
    _check_sendable(mine, index)
    pool_peers = {d for p in mine.pools for d in (p.scatter, p.gather, *p.devices)} - {doc.device}
    missing = sorted(({t for ts in mine.sends.values() for t in ts} | pool_peers) - set(doc.peers))
    if missing:
        raise DeploymentError(f"deploy on {doc.device}: no address for device(s) {missing}, which this device sends to")
    states = _state_docs(doc, where)
    batched_plan, batched_problem = at_batch(plan, problem, doc.micro_batch)
    params = sum(batched_problem.graph.node(n).param_bytes for s in mine.stages for n in s.node_ids)
    working = memory_need_bytes(batched_plan, batched_problem).get(doc.device, 0) - params
    # the graph counts one session's state among its nodes' parameters; the group may hold max_sessions
    sessions = doc.session.max_sessions if doc.session is not None else 0
    state_bytes = sum(prod(shape) * DTYPE_BYTES[dtype] for shape, dtype in states.values()) * sessions
    return Pending(doc, plan, problem, index, mine, blobs, max(0, working) + state_bytes, time.monotonic(), states)


def _state_docs(doc: DeployDoc, where: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """The program's declared state, each tensor's shape and dtype checked (nothing is allocated here)."""
    raw = doc.program.get("states", {})
    if not isinstance(raw, dict) or len(raw) > 100_000:
        raise DeploymentError(f"{where}: field program.states must be an object of state tensors")
    if raw and (doc.session is None or doc.program.get("kind") != "torch"):
        raise DeploymentError(f"{where}: the program keeps state between steps, so the deploy message must name a "
                              "session group (field session), and the program must be PyTorch's")
    out = {}
    for name, spec in raw.items():
        shape, dtype = (spec.get("shape"), spec.get("dtype")) if isinstance(spec, dict) else (None, None)
        if (not isinstance(name, str) or not 0 < len(name) <= 300 or not isinstance(shape, list) or len(shape) > 16
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 40 for d in shape)
                or dtype not in DTYPE_BYTES or set(spec) != {"shape", "dtype"}):
            raise DeploymentError(f"{where}: state {str(name)[:60]!r}: give shape (up to 16 sizes) and dtype "
                                  f"(one of {', '.join(DTYPE_BYTES)})")
        out[name] = (tuple(shape), dtype)
    return out


def _validate(body: dict[str, Any]) -> DeployDoc:
    try:
        return DeployDoc.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DeploymentError(f"deploy message: field {where}: {first['msg']}") from None


def _check_sendable(mine: DeviceRoute, index: ProgramIndex) -> None:
    owner = {o: op.owner for op in index.ops for o in op.outputs}
    for value in mine.sends:
        if value not in index.specs:
            raise DeploymentError(
                f"the plan cuts after node {owner.get(value, value)!r}, whose value {value!r} is not a tensor "
                f"(a list or a number); move that cut one node earlier or later")


def build_deployment(pending: Pending, loaded: Mapping[str, Any], config: WorkerConfig) -> Deployment:
    """Step 2 (the module docstring): `loaded` maps each blob's sha256 to its tensor, array or bytes."""
    doc, mine = pending.doc, pending.route
    where = f"deploy of plan version {doc.plan_version} on {doc.device}"
    try:
        stages = _stages(pending, loaded, config.threads)
        node_time_s = _emulated_node_times(mine, pending.problem, config, doc.emulate, doc.micro_batch)
    except CoinferError as exc:
        raise DeploymentError(f"{where}: {exc}") from None
    codecs = getattr(pending.plan, "codecs", {}) or {}
    return Deployment(
        plan_version=doc.plan_version, device=doc.device, route=mine, stages=stages,
        blobs=frozenset(pending.blobs), peers=dict(doc.peers),
        peer_keys={d: k.encode() for d, k in doc.peer_keys.items()},
        peer_incarnations={d: i[:64] for d, i in doc.peer_incarnations.items()}, client_address=doc.client,
        client_key=doc.client_key.encode() if doc.client_key else None,
        shapers={t: _shaper(link) for t, link in doc.links.items()}, link_docs=doc.links,
        codecs={t: str(c) for (s, t), c in codecs.items() if s == doc.device},
        stage_time_s={st.index: sum(node_time_s[n] for n in st.node_ids) for st in mine.runnable_stages}
        if node_time_s else {}, telemetry=doc.telemetry, node_time_s=node_time_s, session=doc.session,
    )


def _stages(pending: Pending, loaded: Mapping[str, Any], threads: int) -> Stages:
    program, stages = pending.doc.program, pending.route.runnable_stages
    if program["kind"] == "torch":
        import torch

        from coinfer.runtime.torch_stages import TorchStages

        weights = {ref: _weight(ref, w, loaded) for ref, w in _weight_docs(program.get("weights")).items()}
        states = {name: (shape, getattr(torch, dtype)) for name, (shape, dtype) in pending.states.items()}
        return TorchStages(pending.index, _mapping(program.get("calls"), "program.calls"), weights, stages, threads,
                           states)
    from coinfer.runtime.onnx_stages import OnnxStages

    stage_docs = _mapping(program.get("stages"), "program.stages")
    arrays = {}
    models: dict[str, bytes] = {}
    for key, stage_doc in stage_docs.items():
        stage_doc = _mapping(stage_doc, f"program.stages.{key}")
        model = str(stage_doc.get("model"))
        if not isinstance(loaded.get(model), bytes):
            raise PlanError(f"stage {key}: its ONNX sub-model {model[:12]} is not among the deployment's blobs")
        models[model] = loaded[model]
        for ref, w in _weight_docs(stage_doc.get("weights")).items():
            arrays[w["sha256"]] = _weight(ref, w, loaded)
    return OnnxStages(pending.index, stage_docs, models, arrays, stages, threads)


def _mapping(value: Any, field_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlanError(f"field {field_name} must be an object")
    return value


def _weight_docs(value: Any) -> dict[str, dict[str, Any]]:
    docs = _mapping(value if value is not None else {}, "program.weights")
    for ref, w in docs.items():
        if not (isinstance(w, dict) and set(w) == {"sha256", "dtype", "shape"} and isinstance(w["shape"], list)):
            raise PlanError(f"weight {ref!r}: give sha256, dtype and shape")
    return docs


def _weight(ref: str, w: Mapping[str, Any], loaded: Mapping[str, Any]) -> Any:
    tensor = loaded.get(w["sha256"])
    if tensor is None:
        raise PlanError(f"weight {ref!r}: its blob {str(w['sha256'])[:12]} is not among the deployment's blobs")
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype != w["dtype"] or [int(d) for d in tensor.shape] != w["shape"]:
        raise PlanError(f"weight {ref!r}: its blob holds {dtype}{list(tensor.shape)}, the program says "
                        f"{w['dtype']}{w['shape']}")
    return tensor


def _shaper(link: LinkDoc) -> LinkShaper:
    if link.trace is not None:
        t = link.trace
        trace = BandwidthTrace(tuple(t.start_s), tuple(t.bits_per_s), t.time_scale)
        start = time.monotonic() - (time.time() - t.epoch_unix_s)
        return LinkShaper(trace, link.latency_s, link.overhead_s, start)
    bandwidth = float("inf") if link.bandwidth_bits_per_s is None else link.bandwidth_bits_per_s
    return LinkShaper(bandwidth, link.latency_s, link.overhead_s)


def _emulated_node_times(mine: DeviceRoute, problem: Problem, config: WorkerConfig, from_plan: bool,
                         micro_batch: int) -> dict[str, float]:
    """Per node of this device's stages, the time emulation holds it for (a stage: the sum of its
    nodes'): the worker's own --emulate device's roofline, else the plan's times (at micro-batch K:
    of the batched graph, as coinfer.runtime.batching models it); empty without emulation."""
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
    missing = [n for s in mine.runnable_stages for n in s.node_ids if n not in node_time_s]
    if missing:
        raise PlanError(f"emulation needs a predicted time for every node on {mine.device}; {missing[:3]} have none")
    return {n: node_time_s[n] for s in mine.runnable_stages for n in s.node_ids}

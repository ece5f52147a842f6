"""Micro-batching: K consecutive requests packed along dimension 0 and served as one request.

The client concatenates the inputs of K requests along dimension 0 of every graph input, sends
the batch through the plan as one request (one request id on the wire), and splits every output
back into K equal slices along dimension 0, slice j being the answer to the batch's j-th request.
Workers run their stages on the batch-K program the client ships (coinfer.runtime.packaging) and
check every tensor they receive against the batch-K shapes. Each request's latency is its
batch's: from sending the batch to its last output.

What the cost model and device emulation assume at batch K (`at_batch`):

- every node's FLOPs and activation bytes grow K times; weights are read once per batch, so
  parameter bytes do not grow (this is what makes batching pay on memory-bound layers);
- a node's time on a device the cluster describes by its catalogued hardware (`time_model:
  roofline`) is the plan's time scaled by its predictor's own batch scaling on that hardware
  (the sustained roofline of its framework, or the datasheet's: coinfer.profile.resolve),
  predicted(batch K) / predicted(batch 1). When the plan's times are that prediction, this is
  exactly the prediction of the batched graph; measured or calibrated times keep their level and
  follow its shape. A device described by `flops_per_s` alone takes K times
  the plan's time, as FLOPs / rate gives;
- a request-rate constraint becomes a batch rate (rate / K).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from coinfer.cluster import Device
from coinfer.errors import CoinferError, PlanError, UserInputError, WorkerError
from coinfer.graph import Graph, GraphInput, ModelSource, Node, TensorSpec
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.runtime.client import Client, Outcome
from coinfer.runtime.delivery import Rerouter, run_requests
from coinfer.runtime.program import ProgramIndex

FIRST_REQUEST_ID = 1  # run_plan's first request id; a request's slot in its batch counts from it


# -- packing on the client ----------------------------------------------------------------------

def check_divisible(requests: int, micro_batch: int, requests_label: str = "requests=",
                    batch_label: str = "micro_batch=") -> None:
    """Every batch is full: a smaller last batch would need a second program at that batch size.
    The labels name the two numbers as the caller's user knows them (`--requests ` on the CLI)."""
    if micro_batch < 1:
        raise UserInputError(f"{batch_label}{micro_batch}: the micro-batch must be at least 1")
    if requests % micro_batch:
        fitting = -(-requests // micro_batch) * micro_batch
        raise UserInputError(f"{requests_label}{requests} is not a multiple of {batch_label}{micro_batch}: every "
                             f"batch packs {micro_batch} requests; use {requests_label}{fitting}")


def pack(requests: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The batch of `requests`: each input concatenated along dimension 0, in request order."""
    if len(requests) == 1:
        return dict(requests[0])
    return {name: np.concatenate([r[name] for r in requests], axis=0) for name in requests[0]}


def unpack(outputs: Mapping[str, np.ndarray], k: int) -> list[dict[str, np.ndarray]]:
    """The K per-request outputs of a batch: every output split into K equal slices along dimension 0."""
    if k == 1:
        return [dict(outputs)]
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] % k:
            raise WorkerError(f"output {name!r} of a batch of {k} has shape {list(array.shape)}, whose first "
                              f"dimension does not split into {k} requests")
    per_request: list[dict[str, np.ndarray]] = [{} for _ in range(k)]
    for name, array in outputs.items():
        for j, piece in enumerate(np.split(array, k, axis=0)):
            per_request[j][name] = piece
    return per_request


def slot(request_id: int, k: int, first_id: int = FIRST_REQUEST_ID) -> int:
    """Which row block of its batch request `request_id` is (requests are packed in id order)."""
    return (request_id - first_id) % k


def run_batched_requests(client: Client, origin: str, plan_version: int, output_names: tuple[str, ...],
                         inputs_for: Callable[[int], Mapping[str, np.ndarray]], requests: int, micro_batch: int,
                         in_flight: int = 1, timeout_s: float = 60.0, first_id: int = FIRST_REQUEST_ID,
                         on_done: Callable[[Outcome], None] | None = None,
                         rerouter: Rerouter | None = None) -> list[Outcome]:
    """Serve `requests` requests (ids first_id, first_id + 1, ...) packed `micro_batch` to a batch.

    Request first_id + i is slot i % K of batch i // K; batches go on the wire with ids first_id,
    first_id + 1, ... and at most `in_flight` batches are outstanding. Every request's outcome, in
    id order; `on_done` is called once per request. A batch is replayed whole when a device is lost
    (`rerouter`, coinfer.runtime.delivery)."""
    check_divisible(requests, micro_batch)
    k = micro_batch
    split: dict[int, list[Outcome]] = {}

    def first_request(batch_id: int) -> int:
        return first_id + (batch_id - first_id) * k

    def batch_inputs(batch_id: int) -> dict[str, np.ndarray]:
        return pack([inputs_for(first_request(batch_id) + j) for j in range(k)])

    def finished(batch: Outcome) -> None:
        split[batch.request_id] = request_outcomes(batch, k, first_request(batch.request_id))
        for outcome in split[batch.request_id]:
            if on_done is not None:
                on_done(outcome)

    batches = run_requests(client, origin, plan_version, output_names, batch_inputs, requests // k, in_flight,
                           timeout_s, first_id, on_done=finished, rerouter=rerouter)
    return [o for b in batches for o in split[b.request_id]]


def request_outcomes(batch: Outcome, k: int, first_request_id: int) -> list[Outcome]:
    """The K outcomes of a batch: its outputs' slices, its errors and its latency."""
    errors = batch.errors  # shared dicts: a report can count each batch's error once (by identity)
    pieces: list[dict[str, np.ndarray]] = [{} for _ in range(k)]
    latency_s = batch.latency_s
    if batch.ok:
        try:
            pieces = unpack(batch.outputs, k)
        except CoinferError as exc:
            errors, latency_s = [{"error": str(exc)}], None
    return [Outcome(first_request_id + j, batch.sent_s, pieces[j], list(errors), latency_s, batch.plan_version,
                    batch.attempts) for j in range(k)]


# -- the plan at batch K: cost model and emulation ----------------------------------------------

def at_batch(plan: Plan, problem: Problem, k: int) -> tuple[Plan, Problem]:
    """The plan and problem of one batch of K requests (the module docstring's assumptions)."""
    if k == 1:
        return plan, problem
    if plan.tilings:
        raise PlanError("micro-batching does not run tiled stages: run the tiled plan at micro-batch 1")
    graph = batched_graph(problem.graph, k)
    c = problem.constraints
    rate = None if c.request_rate_per_s is None else c.request_rate_per_s / k
    batched = Problem(graph, problem.cluster, batched_node_times(problem, graph, k), problem.objective,
                      replace(c, request_rate_per_s=rate), problem.time_sources)
    return Plan(graph, plan.placement, plan.solver, codecs=plan.codecs, standbys=plan.standbys), batched


def batched_graph(graph: Graph, k: int) -> Graph:
    """`graph` at batch K: inputs, FLOPs and activations K times larger, the same weights."""
    nodes = tuple(_batched_node(n, k) for n in graph.nodes)
    inputs = tuple(GraphInput(gi.name, _batched_spec(gi.spec, k)) for gi in graph.inputs)
    source = None if graph.source is None else _batched_source(graph.source, k)
    return Graph(graph.name, inputs, nodes, graph.outputs, graph.granularity, source)


def _batched_node(node: Node, k: int) -> Node:
    return replace(node, flops=node.flops * k, output_bytes=node.output_bytes * k,
                   outputs=tuple(_batched_spec(s, k) for s in node.outputs))


def _batched_spec(spec: TensorSpec, k: int) -> TensorSpec:
    shape = spec.shape if not spec.shape else (spec.shape[0] * k, *spec.shape[1:])
    return TensorSpec(spec.size_bytes * k, shape, spec.dtype)


def _batched_source(source: ModelSource, k: int) -> ModelSource:
    shapes = tuple(s if not s else (s[0] * k, *s[1:]) for s in source.input_shapes)
    return replace(source, input_shapes=shapes)


def batched_node_times(problem: Problem, graph_k: Graph, k: int) -> dict[str, dict[str, float]]:
    """Per device, every node's time at batch K (the module docstring's rule)."""
    out: dict[str, dict[str, float]] = {}
    for device in problem.cluster.devices:
        times = problem.node_time_s[device.name]
        if device.time_model == "roofline" and device.catalog is not None:
            ratio = roofline_batch_ratio(problem.graph, graph_k, k, device)
            out[device.name] = {n: t * ratio[n] for n, t in times.items()}
        else:
            out[device.name] = {n: t * k for n, t in times.items()}
    return out


def roofline_batch_ratio(graph: Graph, graph_k: Graph, k: int, device: Device) -> dict[str, float]:
    """Per node, predicted time at batch K over predicted time at batch 1 on the catalogued device.

    The prediction is the one the cluster asks for (its framework's sustained roofline, or the
    datasheet's), so the uncalibrated prediction of the batched graph is exactly what it gives."""
    from coinfer.profile.resolve import predict_device

    one, many = predict_device(graph, device)[0], predict_device(graph_k, device)[0]
    # the roofline's per-node overhead keeps every batch-1 time positive; K covers a zero anyway
    return {n: many[n] / one[n] if one[n] > 0 else float(k) for n in one}


# -- checks of a batch-K program (on the client, before anything is deployed) -----------------

def check_batched_outputs(graph: Graph, index: ProgramIndex, k: int) -> None:
    """Refuse a program whose outputs at batch K are not K per-request outputs stacked along dim 0.

    A model whose first input dimension is not a batch of independent samples (a sequence, a
    channel) shows it here: its outputs keep their shape or grow along another dimension."""
    owner = {v: op.owner for op in index.ops for v in op.outputs}
    for value in index.outputs:
        spec = index.specs.get(value)
        if value not in owner or spec is None or spec.shape is None:
            continue  # an output of unknown shape is checked when the client splits it
        alone = [s.shape for s in graph.node(owner[value]).outputs if s.shape is not None]
        if alone and not any(_stacks(spec.shape, shape, k) for shape in alone):
            raise PlanError(f"micro-batching: output {value!r} has shape {list(spec.shape)} at batch {k}, but "
                            f"{list(alone[0])} for one request, not {k} of those stacked along dimension 0: the "
                            "model's first input dimension is not a batch of independent samples; run it without "
                            "micro-batching")


def _stacks(batched: tuple[int, ...], alone: tuple[int, ...], k: int) -> bool:
    return len(batched) == len(alone) >= 1 and batched[0] == alone[0] * k and batched[1:] == alone[1:]


def check_same_dependencies(graph: Graph, index: ProgramIndex, k: int) -> None:
    """Refuse a batch-K program in which a node reads a node it did not read at batch 1.

    Routing orders stages by the graph; an op reading a value from a node the graph does not list
    as an input could wait on a later stage and never run."""
    owner = {v: op.owner for op in index.ops for v in op.outputs}
    for op in index.ops:
        allowed = set(graph.node(op.owner).inputs) | {op.owner}
        extra = sorted({owner[v] for v in op.inputs if v in owner} - allowed)
        if extra:
            raise PlanError(f"micro-batching: {graph.name} at batch {k} is wired differently from the graph captured "
                            f"at batch 1: op {op.name!r} of node {op.owner!r} reads node(s) {extra[:3]}, which that "
                            "node does not read there, so its node ids do not carry over; run it without "
                            "micro-batching")

"""Profiling on a user's own device: every node's time, measured by a worker over the secure runtime.

`profile_on_worker` deploys the whole graph to one worker as a one-device plan (the worker gets
only the weights, as any deployment does: no model file, no module), sends it `warmup` untimed and
then `repeats` timed requests of the graph's example inputs one at a time, with telemetry on, and
reads each node's time from the worker's reports: the worker times each aten op of a stage and adds
it to its node (coinfer.runtime.torch_stages), the same per-op accounting as the local profiler's
fx interpreter (coinfer.profile.measure). A worker that emulates a catalogued device (`coinfer
worker --emulate NAME`) reports the times of the device it plays instead (coinfer.runtime.worker.
compute), so an emulated slower device is profiled as that device. The profile is the median per
node over the timed requests, with the interquartile spread, and records the worker's host (CPU,
threads, library versions) in its settings, like a local one.

ONNX stages run as one onnxruntime session each, so their nodes cannot be timed apart; such a
model is refused with a message that says to profile it locally or as a PyTorch model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from coinfer.cluster import Cluster, Device
from coinfer.errors import ProfileError, WorkerError
from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph
from coinfer.plan import all_on
from coinfer.problem import Problem
from coinfer.profile.host import median_and_spread
from coinfer.profile.resolve import resolve_times
from coinfer.profile.timings import Profile
from coinfer.runtime.client import Client, ClientSecurity, facing_ip
from coinfer.runtime.delivery import run_requests
from coinfer.runtime.deploy import deploy
from coinfer.runtime.measured_profiles import NodeSamples, drain
from coinfer.runtime.options import ClientAddress, Endpoint, Progress, RunOptions

PROFILE_VERSION = 1
FIRST_REQUEST_ID = 1
TELEMETRY_WAIT_S = 5.0  # the last reports follow the last answer on the same socket


def profile_on_worker(graph: Graph, device: str, client: Client, endpoint: Endpoint, inputs: Mapping[str, np.ndarray],
                      *, warmup: int = 3, repeats: int = 10, timeout_s: float = 60.0,
                      client_address: ClientAddress | None = None, progress: Progress | None = None) -> Profile:
    """The measured profile of `graph` on the worker that plays `device` (see the module docstring)."""
    if warmup < 0 or repeats < 1:
        raise ProfileError("warmup must be >= 0 and repeats >= 1")
    problem = _one_device_problem(graph, device)
    options = RunOptions(requests=repeats, warmup=warmup, plan_version=PROFILE_VERSION, telemetry=True,
                         timeout_s=timeout_s, recover=False)
    health = client.check(device, {"op": "health"})
    replies = deploy(client, all_on(graph, device, "profile"), problem, endpoint, options, client_address,
                     progress=progress)
    output_names = tuple(replies[device]["results"])
    try:
        total = warmup + repeats
        outcomes = run_requests(client, device, PROFILE_VERSION, output_names, lambda _: inputs, total, 1, timeout_s,
                                first_id=FIRST_REQUEST_ID)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            raise WorkerError(f"profiling on {device}: request {failed[0].request_id} failed: "
                              f"{failed[0].errors[:1] or 'no answer within the timeout'}")
        timed = range(FIRST_REQUEST_ID + warmup, FIRST_REQUEST_ID + total)
        samples = _node_samples(client, graph, device, timed)
    finally:
        # a worker that cannot undeploy keeps the version until its next deploy, harmlessly
        with contextlib.suppress(WorkerError):
            client.call(device, {"op": "undeploy", "plan_version": PROFILE_VERSION})
    node_time_s: dict[str, float] = {}
    node_spread_s: dict[str, float] = {}
    for node in graph.nodes:
        node_time_s[node.id], node_spread_s[node.id] = median_and_spread(samples[node.id])
    reported = health.get("host")
    host: dict[str, Any] = reported if isinstance(reported, dict) else {}
    settings: dict[str, Any] = {
        "measured_on": "worker", "worker": endpoint(device, None), "threads": health.get("threads"),
        "warmup": warmup, "repeats": repeats, "emulate": health.get("emulate"), **host}
    return Profile(graph.name, graph_digest(graph), device, "measured", node_time_s, node_spread_s, settings)


def profile_workers(graph: Graph, workers: Mapping[str, str], security: ClientSecurity | None, *,
                    warmup: int = 3, repeats: int = 10, timeout_s: float = 60.0,
                    progress: Progress | None = None) -> dict[str, Profile]:
    """A measured profile per running worker (device -> tcp://HOST:PORT), one after the other, each
    with the graph's example inputs (coinfer.runtime.reference)."""
    from coinfer.runtime.reference import example_inputs

    faces = {d: facing_ip(address) for d, address in workers.items()}
    inputs = example_inputs(graph)
    with Client(dict(workers), "0.0.0.0", security=security) as client:

        def reach_client(device: str) -> str:
            return f"tcp://{faces[device]}:{client.sink_port}"

        return {device: profile_on_worker(graph, device, client, lambda d, _seen: workers[d], inputs, warmup=warmup,
                                          repeats=repeats, timeout_s=timeout_s, client_address=reach_client,
                                          progress=progress)
                for device in workers}


def _one_device_problem(graph: Graph, device: str) -> Problem:
    """A cluster of `device` alone: the plan only needs a place for every node, not its speed."""
    cluster = Cluster(f"profile-{device}", (Device(device, "end", flops_per_s=1e12, origin=True),), ())
    times, sources = resolve_times(graph, cluster)
    return Problem(graph, cluster, times, time_sources=sources)


def _node_samples(client: Client, graph: Graph, device: str, request_ids: range) -> dict[str, list[float]]:
    """Each node's time in each timed request, from the worker's telemetry."""
    keys = [(PROFILE_VERSION, rid) for rid in request_ids]
    drain(client, keys, TELEMETRY_WAIT_S)
    samples = NodeSamples()
    for key in keys:
        reports = client.telemetry.pop(key, None)
        if not reports:
            raise WorkerError(f"profiling on {device}: no stage report for request {key[1]}; is the worker's "
                              "coinfer as new as this one?")
        samples.add(reports, as_device=device)
    if device in samples.untimed:
        raise ProfileError(f"the worker on {device} cannot time the nodes of this model apart (an ONNX stage runs as "
                           "one session); profile it here with --device local, or capture it as a PyTorch model")
    times = samples.by_device[device]
    missing = [n.id for n in graph.nodes if len(times.get(n.id, ())) != len(request_ids)]
    if missing:
        raise WorkerError(f"profiling on {device}: the reports miss node(s) {missing[:3]}")
    return {n.id: times[n.id] for n in graph.nodes}

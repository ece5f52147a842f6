"""Node times from the workers' telemetry: what remote profiling and a run's saved profiles are made of.

With telemetry on, a worker reports after each request the time of every node of every stage it
ran (`node_s`, coinfer.runtime.worker.compute): measured op by op, or, while it emulates a device,
that device's times. `NodeSamples` gathers them per device and node over many requests;
`refined_profile` turns one device's samples into a profile for the whole graph: the median of
each node it ran, and for the nodes it did not run the prediction the plan was made with, scaled
by how far the measured nodes were from their own predictions (the ratio of the sums). A profile
whose every node was measured is "measured"; one with scaled predictions in it is "refined", and
its settings say how many nodes of each kind it holds.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph
from coinfer.problem import Problem
from coinfer.profile.host import median_and_spread
from coinfer.profile.timings import Profile
from coinfer.runtime.client import Client


class NodeSamples:
    """Each device's node times over the requests whose reports it was given."""

    def __init__(self) -> None:
        self.by_device: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.untimed: set[str] = set()  # devices whose executor cannot time nodes apart (ONNX stages)
        self.requests = 0

    def add(self, reports: Iterable[Mapping[str, Any]], as_device: str | None = None) -> None:
        """The telemetry reports of one request (one per worker it crossed), each under the name its
        worker gives itself, or all under `as_device` (a one-device deployment: the worker may have
        been started under another --name than the device it is profiled as)."""
        self.requests += 1
        for report in reports:
            device = as_device or str(report.get("device"))
            for stage in report.get("stages", []):
                node_s = stage.get("node_s")
                if node_s is None:
                    self.untimed.add(device)
                    continue
                for node, seconds in node_s.items():
                    self.by_device[device][str(node)].append(float(seconds))


def drain(client: Client, keys: Iterable[tuple[int, int]], wait_s: float) -> None:
    """Read the sink until every (plan version, request id) in `keys` has its reports, or `wait_s`
    passes: a worker sends a request's report after its answer, on the same connection."""
    wanted = list(keys)
    deadline = time.monotonic() + wait_s
    while any(k not in client.telemetry for k in wanted) and time.monotonic() < deadline:
        client.collect({}, (), 0.1)


def refined_profile(graph: Graph, device: str, samples: Mapping[str, list[float]],
                    predicted_s: Mapping[str, float], settings: Mapping[str, Any]) -> Profile:
    """A profile of every node of `graph` on `device` (see the module docstring)."""
    node_time_s: dict[str, float] = {}
    node_spread_s: dict[str, float] = {}
    for node, values in samples.items():
        if values:
            node_time_s[node], node_spread_s[node] = median_and_spread(values)
    measured_predicted = sum(predicted_s.get(n, 0.0) for n in node_time_s)
    scale = sum(node_time_s.values()) / measured_predicted if measured_predicted > 0 else 1.0
    rest = [n.id for n in graph.nodes if n.id not in node_time_s]
    for node in rest:
        node_time_s[node] = predicted_s[node] * scale
    extra: dict[str, Any] = {"measured_nodes": len(graph.nodes) - len(rest), "scaled_nodes": len(rest)}
    if rest:
        extra["scale"] = scale
    return Profile(graph.name, graph_digest(graph), device, "refined" if rest else "measured",
                   {n.id: node_time_s[n.id] for n in graph.nodes}, node_spread_s, {**settings, **extra})


def run_profiles(problem: Problem, client: Client, request_ids: range, settings: Mapping[str, Any],
                 wait_s: float = 2.0) -> tuple[dict[str, Profile], set[str]]:
    """The profile of every device that ran nodes in the requests `request_ids` of a run (any plan
    version: a re-planned run measures more devices), refined from the run's plan times; and the
    devices whose nodes could not be timed apart."""
    versions = {v for v, _ in client.telemetry} or {0}
    drain(client, [(max(versions), request_ids[-1])], wait_s)
    samples = NodeSamples()
    for (_, rid), reports in list(client.telemetry.items()):
        if rid in request_ids:
            samples.add(reports)
    profiles = {device: refined_profile(problem.graph, device, times, problem.node_time_s[device],
                                        {**settings, "requests": samples.requests})
                for device, times in samples.by_device.items() if device in problem.node_time_s}
    return profiles, samples.untimed - set(profiles)

"""Small hand-built graphs, a three-device cluster, and a scripted policy for the simulator's tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coinfer.adapt.estimates import Estimates
from coinfer.adapt.policy import Decision, View
from coinfer.adapt.records import HopSample, RequestRecord
from coinfer.api import make_problem
from coinfer.cluster import BackgroundLoad, Cluster, Device, Link
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.plan import Plan
from coinfer.problem import Problem

DEVICES = ("edge", "fog", "cloud")


def chain_graph() -> Graph:
    """input (600 kB) -> c0 .. c5, activations shrinking as in a CNN."""
    sizes = (800_000, 400_000, 400_000, 100_000, 50_000, 4_000)
    nodes = tuple(Node(f"c{i}", (f"c{i - 1}",) if i else ("input",), flops=(i + 1) * 4e8, output_bytes=size)
                  for i, size in enumerate(sizes))
    return Graph("chain", (GraphInput("input", TensorSpec(600_000)),), nodes)


def dag_graph() -> Graph:
    """stem's output is read by left, right and merge; aux (reading right) is a second output.

    input -> stem -> {left, right} -> merge(left, right, stem) -> head;  right -> aux
    """
    nodes = (
        Node("stem", ("input",), flops=5e8, output_bytes=300_000),
        Node("left", ("stem",), flops=8e8, output_bytes=150_000),
        Node("right", ("stem",), flops=1.2e9, output_bytes=120_000),
        Node("merge", ("left", "right", "stem"), flops=6e8, output_bytes=60_000),
        Node("aux", ("right",), flops=1e8, output_bytes=2_000),
        Node("head", ("merge",), flops=2e8, output_bytes=4_000),
    )
    return Graph("dag", (GraphInput("input", TensorSpec(200_000)),), nodes)


def cluster(*, loaded: bool = False, link_latency: bool = True) -> Cluster:
    """edge (origin, slow) -- fog -- cloud (fast), a full mesh of links, each direction its own.

    Every link has its own bandwidth, latency and per-message overhead so that a hop counted on
    the wrong link shows; `loaded` gives fog an M/M/1 background load (10 of 40 jobs/s).
    """
    devices = (
        Device("edge", "end", flops_per_s=2e10, power_w=5.0, origin=True),
        Device("fog", "edge", flops_per_s=8e10, power_w=30.0,
               background=BackgroundLoad(10.0, 40.0) if loaded else None),
        Device("cloud", "cloud", flops_per_s=4e11, power_w=200.0),
    )
    specs = {("edge", "fog"): (80e6, 0.002, 0.001), ("fog", "cloud"): (40e6, 0.005, 0.0005),
             ("edge", "cloud"): (10e6, 0.02, 0.002)}
    links = []
    for (a, b), (bits, latency, overhead) in specs.items():
        for s, t in ((a, b), (b, a)):
            links.append(Link(s, t, bits, latency if link_latency else 0.0, overhead, power_w=1.0))
    return Cluster("toy3", devices, tuple(links))


def problem(graph: Graph, **cluster_options: Any) -> Problem:
    return make_problem(graph, cluster(**cluster_options), deadline_s=0.25)


def place(graph: Graph, *devices: str) -> Plan:
    """Node i of `graph` on `devices[i]`."""
    return Plan(graph, {n.id: d for n, d in zip(graph.nodes, devices, strict=True)})


@dataclass
class FakeEstimator:
    """Remembers what it was fed; believes the cluster is as configured."""

    records: list[RequestRecord] = field(default_factory=list)
    hops: list[HopSample] = field(default_factory=list)

    def observe(self, record: RequestRecord) -> None:
        self.records.append(record)

    def observe_hop(self, sample: HopSample) -> None:
        self.hops.append(sample)

    def snapshot(self, now_s: float) -> Estimates:
        return Estimates()


@dataclass
class ScriptedPolicy:
    """A policy whose decisions are a function of (served, view): for forcing switches in tests."""

    script: Callable[[View], tuple[Plan | None, tuple[tuple[str, str], ...]]]
    name: str = "scripted"
    calls: list[int] = field(default_factory=list)

    def initial_state(self, view: View) -> Any:
        return 0

    def decide(self, view: View, state: Any) -> Decision:
        self.calls.append(view.served)
        plan, probes = self.script(view)
        return Decision(plan, state + 1, "scripted" if plan is not None else "", probes)


def every(n: int, plans: Mapping[int, Plan]) -> Callable[[View], tuple[Plan | None, tuple[tuple[str, str], ...]]]:
    """Switch to plans[k % len] after every n-th completed request."""
    def script(view: View) -> tuple[Plan | None, tuple[tuple[str, str], ...]]:
        if view.served % n:
            return None, ()
        return plans[(view.served // n) % len(plans)], ()
    return script

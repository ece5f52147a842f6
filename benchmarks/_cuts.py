"""Plans that cut a captured model inside its DAG structure: shared by tests/runtime/test_lossless_models.py
and benchmarks/lossless_survey.py. And `two_stage_cut`, the cut at the start of a named module over
two fast devices, shared by benchmarks/runtime_vs_pipelining.py and benchmarks/micro_batching.py.

A request goes a -> b -> c -> a: four stages, cut near 1/4, 1/2 and 3/4 of the nodes in topological
order, each cut moved (by at most `WINDOW` nodes) to where at least two tensors cross it when there is
such a place: inside a residual block, between inception branches, across attention's skip connection.
"""

from __future__ import annotations

from coinfer.api import make_problem
from coinfer.capture import capture
from coinfer.files.cluster_file import cluster_from_dict
from coinfer.graph import Graph
from coinfer.plan import Plan
from coinfer.problem import Problem

TWO_DEVICES = ("first", "second")
# Two devices on a 10 Gbit/s link: the transport, not the emulated network, is what is timed.
TWO = {"devices": {"first": {"flops_per_s": 1e10, "origin": True}, "second": {"flops_per_s": 1e10}},
       "links": [{"between": list(TWO_DEVICES), "bandwidth_bits_per_s": 1e10}]}
WINDOW = 15  # how far a cut may move from its target, in nodes: far enough to reach into the next block


def crossing_values(graph: Graph, k: int) -> int:
    """How many values made before position k are read at or after it."""
    before = {n.id for n in graph.nodes[:k]} | graph.input_names
    return len({i for n in graph.nodes[k:] for i in n.inputs if i in before})


def crossing_profile(graph: Graph) -> list[int]:
    """`crossing_values(graph, k)` for every k in 0..len(nodes), in one pass (a survey asks for all of them)."""
    made = {name: -1 for name in graph.input_names} | {n.id: i for i, n in enumerate(graph.nodes)}
    last_read: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for value in node.inputs:
            last_read[value] = i
    # value v crosses the cut before position k exactly when made[v] < k <= last_read[v]
    delta = [0] * (len(graph.nodes) + 2)
    for value, last in last_read.items():
        delta[made[value] + 1] += 1
        delta[last + 1] -= 1
    profile, running = [], 0
    for k in range(len(graph.nodes) + 1):
        running += delta[k]
        profile.append(running)
    return profile


def cut_near(graph: Graph, fraction: float, after: int = 0) -> int:
    """A cut position near `fraction` of the nodes, past position `after`, preferring two crossing tensors."""
    target = int(len(graph.nodes) * fraction)
    # `after` keeps the cuts of small graphs (windows overlapping) in order and their stages non-empty
    window = range(max(1, after + 1, target - WINDOW), min(len(graph.nodes) - 1, target + WINDOW))
    if not window:
        return min(after + 1, len(graph.nodes) - 1)
    return max(window, key=lambda k: (min(crossing_values(graph, k), 2), -abs(k - target)))


def hopping_plan(graph: Graph) -> Plan:
    """Stages a | b | c | a, cut by `cut_near` at 1/4, 1/2 and 3/4."""
    k1 = cut_near(graph, 0.25)
    k2 = cut_near(graph, 0.5, k1)
    k3 = cut_near(graph, 0.75, k2)
    devices = ["a"] * k1 + ["b"] * (k2 - k1) + ["c"] * (k3 - k2) + ["a"] * (len(graph.nodes) - k3)
    return Plan(graph, {n.id: d for n, d in zip(graph.nodes, devices, strict=True)})


def cut_positions(plan: Plan) -> list[int]:
    """Where each stage after the first begins (the positions of the plan's cuts)."""
    return [plan.graph.index[s.node_ids[0]] for s in plan.stages[1:]]


def two_stage_cut(model: str, split_at: str) -> tuple[Plan, Problem]:
    """torchvision:`model` cut where module `split_at` begins: before it on "first", the rest on "second"."""
    graph = capture(f"torchvision:{model}")
    start = next(i for i, n in enumerate(graph.nodes) if n.module == split_at or n.module.startswith(split_at + "."))
    plan = Plan(graph, {n.id: TWO_DEVICES[0] if i < start else TWO_DEVICES[1] for i, n in enumerate(graph.nodes)})
    return plan, make_problem(graph, cluster_from_dict(TWO, "two.yaml"))

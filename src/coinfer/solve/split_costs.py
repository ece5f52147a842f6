"""The objective of a two-tier split (the origin + one server) as linear costs, and picking a split.

A *split* is a boolean array `on_server` over the nodes in topological order: True puts the node
on `server`, False on the origin. Under `cost.evaluate` with two devices used, every additive
metric (latency, energy, origin energy, money) is a sum of
- a cost per node and side: compute time, busy energy, device price and electricity;
- a cost per value (graph input or node output) and direction, paid once when the value's
  producer is on one side and any of its readers on the other (uplink origin->server, downlink
  server->origin): transfer time, the sender's transmit energy, link prices, the sender's
  electricity for that energy; plus one downlink per `graph.outputs` entry left on the server
  (the result's return is a hop of its own even when an origin node already read the value);
- a fixed cost per side that computes anything: its queueing time in system.
`node_cost`, `up_cost`, `down_cost` and `fixed_cost` hold those costs already weighted by the
objective, built with the equations of `coinfer.cost.terms`. `bottleneck_s` is not additive; it
is `max(origin busy, server busy, uplink busy, downlink busy)` (busy times stretched by background
load, as `evaluate` counts them) and `objective` adds it exactly. A missing link makes a transfer
infinitely long (`up_ok`/`down_ok` False), which `evaluate` reports as a violation: solvers rank
such splits last. Costing a split is O(N + E) with numpy (E = reads of values by nodes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from coinfer.cluster import Device, Link
from coinfer.cost import terms
from coinfer.cost.evaluate import evaluate
from coinfer.plan import Plan, all_on
from coinfer.problem import Metric, Problem

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Weights = Mapping[Metric, float]

MAX_FEASIBILITY_CHECKS = 16  # `choose` calls `evaluate` at most this often per solve


@dataclass(frozen=True)
class SplitCosts:
    """Costs of every split between the origin and `server`; values are graph inputs then nodes."""

    origin: Device
    server: Device
    n_inputs: int
    value_of_read: Ints  # (E,) index of the value each read takes
    reader_of_read: Ints  # (E,) node index of the reader
    result_count: Ints  # (V,) times each value is listed in graph.outputs
    node_time_s: Floats  # (2, N) compute time on the origin (row 0) and the server (row 1)
    node_cost: Floats  # (2, N) weighted
    up_time_s: Floats  # (V,) origin->server; inf without a link
    down_time_s: Floats  # (V,) server->origin
    up_cost: Floats  # (V,) weighted
    down_cost: Floats  # (V,) weighted
    up_ok: bool
    down_ok: bool
    fixed_cost: tuple[float, float]  # weighted queueing of (origin, server) when it computes
    bottleneck_weight: float


def split_costs(problem: Problem, server: str) -> SplitCosts:
    graph, cluster = problem.graph, problem.cluster
    origin, srv = cluster.origin, cluster.device(server)
    n_inputs = len(graph.inputs)
    value_index = {gi.name: k for k, gi in enumerate(graph.inputs)}
    value_index.update({n.id: n_inputs + i for i, n in enumerate(graph.nodes)})
    readers = graph.consumers
    value_of_read = np.array([value_index[v] for v, rs in readers.items() for _ in rs], dtype=np.int64)
    reader_of_read = np.array([graph.index[r] for rs in readers.values() for r in rs], dtype=np.int64)
    result_count = np.zeros(n_inputs + len(graph.nodes), dtype=np.int64)
    for out in graph.outputs:
        result_count[value_index[out]] += 1
    sizes = np.array([gi.spec.size_bytes for gi in graph.inputs] + [n.output_bytes for n in graph.nodes], float)
    times = np.array([[problem.node_time_s[d.name][n.id] for n in graph.nodes] for d in (origin, srv)], float)
    w = problem.objective.weights
    up_link, down_link = cluster.link(origin.name, server), cluster.link(server, origin.name)
    up_time, up_cost = _transfer_costs(w, up_link, origin, True, sizes)
    down_time, down_cost = _transfer_costs(w, down_link, srv, False, sizes)
    fixed = tuple(w.get("latency_s", 0.0) * terms.queueing_time_s(d.background) if w.get("latency_s") else 0.0
                  for d in (origin, srv))
    return SplitCosts(
        origin, srv, n_inputs, value_of_read, reader_of_read, result_count, times,
        np.stack([_node_costs(w, origin, True, times[0]), _node_costs(w, srv, False, times[1])]),
        up_time, down_time, up_cost, down_cost, up_link is not None, down_link is not None,
        (fixed[0], fixed[1]), float(w.get("bottleneck_s", 0.0)),
    )


def _weighted(w: Weights, parts: Mapping[Metric, Floats]) -> Floats:
    """sum(weight * metric), skipping zero weights as `evaluate` does (so 0 * inf never occurs)."""
    total = np.zeros_like(next(iter(parts.values())))
    for metric, value in parts.items():
        if w.get(metric):
            total = total + w[metric] * value
    return total


def _node_costs(w: Weights, device: Device, is_origin: bool, time_s: Floats) -> Floats:
    # The equations of `terms` are linear; probing them with unit arguments gives their
    # coefficients, so the arithmetic stays theirs while running on whole arrays.
    energy = terms.compute_energy_j(device, 1.0) * time_s
    money = terms.device_cost_usd(device, 1.0, 0.0) * time_s + terms.device_cost_usd(device, 0.0, 1.0) * energy
    return _weighted(w, {"latency_s": time_s, "energy_j": energy, "origin_energy_j": energy * is_origin,
                         "cost_usd": money})


def _transfer_costs(w: Weights, link: Link | None, sender: Device, sender_is_origin: bool,
                    sizes: Floats) -> tuple[Floats, Floats]:
    """Time and weighted cost of sending each value once over `link` (terms.transfer_time_s etc.)."""
    if link is None:  # evaluate: infinite time, no energy, no price (and a "link" violation)
        time_s = np.full_like(sizes, np.inf)
        zero = np.zeros_like(sizes)
        return time_s, _weighted(w, {"latency_s": time_s, "energy_j": zero, "origin_energy_j": zero,
                                     "cost_usd": zero})
    time_s = terms.transfer_time_s(link, 0.0) + sizes / link.bytes_per_s  # same float ops as terms
    energy = terms.transmit_energy_j(link, 1.0) * time_s
    # terms.link_cost_usd charges nothing for an empty message, else per second and per byte.
    money = np.where(sizes > 0, link.price_usd_per_s * time_s + link.price_usd_per_byte * sizes, 0.0)
    money = money + terms.device_cost_usd(sender, 0.0, 1.0) * energy  # the sender's electricity
    return time_s, _weighted(w, {"latency_s": time_s, "energy_j": energy,
                                 "origin_energy_j": energy * sender_is_origin, "cost_usd": money})


def crossings(c: SplitCosts, on_server: Bools) -> tuple[Bools, Bools, Ints]:
    """Which values go up, which go down to origin readers, and how many result hops each makes."""
    value_on_server = np.concatenate([np.zeros(c.n_inputs, bool), on_server])
    reader_on_server = on_server[c.reader_of_read]
    n_values = len(value_on_server)
    any_server_reader = np.bincount(c.value_of_read, reader_on_server, n_values) > 0
    any_origin_reader = np.bincount(c.value_of_read, ~reader_on_server, n_values) > 0
    results = np.where(value_on_server, c.result_count, 0)
    return ~value_on_server & any_server_reader, value_on_server & any_origin_reader, results


def uses_missing_link(c: SplitCosts, on_server: Bools) -> bool:
    up, down, results = crossings(c, on_server)
    return bool((not c.up_ok and up.any()) or (not c.down_ok and (down.any() or results.any())))


def additive_cost(c: SplitCosts, on_server: Bools) -> float:
    """Weighted node and transfer costs of a split (no queueing, no bottleneck term)."""
    up, down, results = crossings(c, on_server)
    hops = results > 0
    return float(c.node_cost[1][on_server].sum() + c.node_cost[0][~on_server].sum() + c.up_cost[up].sum()
                 + c.down_cost[down].sum() + (c.down_cost[hops] * results[hops]).sum())


def bottleneck_s(c: SplitCosts, on_server: Bools) -> float:
    """evaluate's bottleneck: the busiest of the two devices (if used) and the two links."""
    up, down, results = crossings(c, on_server)
    hops = results > 0
    busy = [c.up_time_s[up].sum(), c.down_time_s[down].sum() + (c.down_time_s[hops] * results[hops]).sum()]
    for row, device, used in ((0, c.origin, ~on_server), (1, c.server, on_server)):
        if used.any():
            busy.append(terms.effective_busy_s(device, float(c.node_time_s[row][used].sum())))
    return float(max(busy))


def objective(c: SplitCosts, on_server: Bools) -> float:
    """The problem's objective of the split, as `cost.evaluate` computes it."""
    total = additive_cost(c, on_server)
    if (~on_server).any():
        total += c.fixed_cost[0]
    if on_server.any():
        total += c.fixed_cost[1]
    if c.bottleneck_weight:
        total += c.bottleneck_weight * bottleneck_s(c, on_server)
    return total


@dataclass(frozen=True)
class Split:
    """A candidate split; `rank` orders candidates (smaller first)."""

    rank: tuple[float, ...]
    costs: SplitCosts
    on_server: Bools


def to_plan(problem: Problem, split: Split, solver: str) -> Plan:
    """The plan of a split, reporting its objective computed afresh by `objective` (exact, unlike
    the running sums a solver may have ranked it by)."""
    origin, server = problem.origin, split.costs.server.name
    sides = split.on_server.tolist()
    placement = {n.id: server if s else origin for n, s in zip(problem.graph.nodes, sides, strict=True)}
    return Plan(problem.graph, placement, solver, objective(split.costs, split.on_server))


def origin_alone(problem: Problem, solver: str) -> Plan:
    """The plan of a cluster with no server: everything on the origin."""
    plan = all_on(problem.graph, problem.origin, solver)
    return replace(plan, reported_objective=evaluate(plan, problem).objective_value)


def choose(problem: Problem, candidates: Sequence[Split], solver: str) -> Plan:
    """The best-ranked candidate that meets every constraint, checked by `evaluate` on the
    `MAX_FEASIBILITY_CHECKS` best; the best-ranked one when none of those is feasible (its
    violations then say why). Skips `evaluate` when no constraint can bind (infinite memory, no
    deadline, budget or request rate; missing links are already ranked last)."""
    ranked = sorted(candidates, key=lambda s: s.rank)
    c = problem.constraints
    may_bind = any(d.memory_bytes != np.inf for d in problem.cluster.devices) or any(
        x is not None for x in (c.deadline_s, c.origin_energy_budget_j, c.request_rate_per_s))
    if may_bind:
        for split in ranked[:MAX_FEASIBILITY_CHECKS]:
            plan = to_plan(problem, split, solver)
            if evaluate(plan, problem).feasible:
                return plan
    return to_plan(problem, ranked[0], solver)

"""`neurosurgeon`: the best single cut of the topological order (Kang et al., ASPLOS 2017).

Model (REFERENCE section 2): nodes [0, j) run on the origin and [j, N) on one server, for every
j in 0..N and every server; the problem's objective is computed exactly as `cost.evaluate` does,
bottleneck term included (see `split_costs`). On a chain this is the paper's
`latency(j) = sum_{i<j} TM_i + D_j / B + sum_{i>=j} TC_i` plus the result's return; on a DAG the
cut at j sends every value produced before j (or the graph input) and read at or after j, and
each output produced at or after j returns to the origin, so it is the topological-order baseline
that DADS beats. Even on a chain a single cut is not always optimal under our cost model: a
server may run a heavy early layer and hand a small tensor back to the origin for a last layer
with a big output (origin -> server -> origin), which `dads` finds and this solver cannot.

Every cut is costed in O(N + E) in total (E = reads of values by nodes): a value produced at
position p and last read at position r crosses every cut j in (p, r], and a graph output produced
at p returns for every cut j <= p, so the transfer costs of all cuts are one difference array and
one prefix sum; node costs are prefix sums. Whole solve: O(S (N + E)) for S servers, plus at most
`split_costs.MAX_FEASIBILITY_CHECKS` calls of `evaluate` when a constraint can bind (memory,
deadline, energy budget, request rate): cuts are tried from the best objective down and the first
feasible one wins. Cuts that need a missing link rank after all others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coinfer.cluster import Device
from coinfer.cost import terms
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.split_costs import (
    MAX_FEASIBILITY_CHECKS,
    Bools,
    Floats,
    Ints,
    Split,
    SplitCosts,
    choose,
    origin_alone,
    split_costs,
)

NAME = "neurosurgeon"


@dataclass(frozen=True)
class CutTable:
    """Per cut j in 0..N: the additive cost, the full objective, and whether a missing link is used."""

    additive: Floats
    objective: Floats
    missing_link: Bools


def neurosurgeon(problem: Problem) -> Plan:
    n = len(problem.graph.nodes)
    if not problem.cluster.servers:
        return origin_alone(problem, NAME)
    candidates: list[Split] = []
    for server in problem.cluster.servers:
        costs = split_costs(problem, server.name)
        table = cut_table(costs)
        for j in np.lexsort((table.objective, table.missing_link))[:MAX_FEASIBILITY_CHECKS].tolist():
            rank = (float(table.missing_link[j]), float(table.objective[j]))
            candidates.append(Split(rank, costs, np.arange(n) >= j))
    return choose(problem, candidates, NAME)


def cut_table(c: SplitCosts) -> CutTable:
    n = c.node_cost.shape[1]
    cuts = np.arange(n + 1)
    producer = np.concatenate([np.full(c.n_inputs, -1), np.arange(n)])  # graph inputs: before node 0
    last_reader = np.full(len(producer), -1)
    np.maximum.at(last_reader, c.value_of_read, c.reader_of_read)
    read = last_reader >= 0
    up_lo, up_hi = producer[read] + 1, last_reader[read]  # value goes up for cuts j in (p, r]
    out = c.result_count > 0
    res_lo, res_hi = np.zeros(int(out.sum()), np.int64), producer[out]  # returns for cuts j <= p
    res_count = c.result_count[out]

    additive = (np.concatenate([[0.0], np.cumsum(c.node_cost[0])])
                + np.concatenate([np.cumsum(c.node_cost[1][::-1])[::-1], [0.0]])
                + _interval_sums(up_lo, up_hi, c.up_cost[read], n + 1)
                + _interval_sums(res_lo, res_hi, c.down_cost[out] * res_count, n + 1))
    uses_up = _interval_sums(up_lo, up_hi, np.ones(len(up_lo)), n + 1) > 0
    uses_down = _interval_sums(res_lo, res_hi, np.ones(len(res_lo)), n + 1) > 0
    missing = (uses_up & (not c.up_ok)) | (uses_down & (not c.down_ok))

    total = additive + np.where(cuts > 0, c.fixed_cost[0], 0.0) + np.where(cuts < n, c.fixed_cost[1], 0.0)
    if c.bottleneck_weight:
        links = np.maximum(_interval_sums(up_lo, up_hi, c.up_time_s[read], n + 1),
                           _interval_sums(res_lo, res_hi, c.down_time_s[out] * res_count, n + 1))
        origin = _busy(c.origin, np.concatenate([[0.0], np.cumsum(c.node_time_s[0])]), cuts > 0)
        server = _busy(c.server, np.concatenate([np.cumsum(c.node_time_s[1][::-1])[::-1], [0.0]]), cuts < n)
        total = total + c.bottleneck_weight * np.maximum(links, np.maximum(origin, server))
    return CutTable(additive, total, missing)


def _interval_sums(lo: Ints, hi: Ints, weight: Floats, size: int) -> Floats:
    """out[j] = sum of weight[k] over k with lo[k] <= j <= hi[k], by a difference array. Infinite
    weights are counted apart (a running sum of inf - inf would be nan)."""
    keep = hi >= lo
    lo, hi, weight = lo[keep], hi[keep], weight[keep]
    infinite = np.isinf(weight)
    diff = np.zeros(size + 1)
    np.add.at(diff, lo, np.where(infinite, 0.0, weight))
    np.add.at(diff, hi + 1, -np.where(infinite, 0.0, weight))
    count = np.zeros(size + 1)
    np.add.at(count, lo, infinite)
    np.add.at(count, hi + 1, -infinite.astype(float))
    sums = np.cumsum(diff)[:size]
    return np.where(np.cumsum(count)[:size] > 0, np.inf, sums)


def _busy(device: Device, busy_s: Floats, used: Bools) -> Floats:
    """terms.effective_busy_s per cut; a device that computes nothing is no resource at all."""
    stretched = np.array([terms.effective_busy_s(device, float(b)) for b in busy_s]) \
        if device.background is not None else busy_s
    return np.where(used, stretched, 0.0)

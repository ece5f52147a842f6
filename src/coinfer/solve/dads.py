"""`dads` and `dads-throughput`: two-tier splits of a DAG by s-t minimum cut (Hu, Bao, Wang, Liu,
"Dynamic Adaptive DNN Surgery for Inference Acceleration on the Edge", INFOCOM 2019).

Model (REFERENCE section 3, with `split_costs`): every node goes to the origin or one server; the
objective is the weighted sum of per-node, per-value-and-direction and per-used-side costs. Cut
graph: source s = origin side, sink t = server side, one vertex per node, and
- s -> v with the server cost of v (plus v's result returns), v -> t with its origin cost;
- a value u read by one node c: u -> c with u's uplink cost, c -> u with its downlink cost;
- a value u read by k >= 2 nodes: an uplink vertex a with u -> a (uplink cost) and a -> c (inf) for
  every reader c, and a downlink vertex b with c -> b (inf) and b -> u (downlink cost). A cut
  pays u -> a once when u is on the origin and any reader on the server, and b -> u once when u is
  on the server and any reader on the origin: the paper's auxiliary vertex, made exact for both
  directions (its construction assumes edge -> cloud transfers only); graph inputs are produced
  by s itself (uplink only);
- a transfer over a missing link gets an infinite capacity (never cut).
The cut's value is the additive objective; the source side runs on the origin. Queueing is a fixed
cost per side that computes: if the best cut P mixes sides, no mixed plan beats it; if it puts
everything on one side, no mixed plan beats that side alone; so the best of {P, origin-only,
server-only} is optimal. The best topological cut (`neurosurgeon`) is a candidate too, so `dads`
never loses to it. Several servers: solved once per server, best kept. A bottleneck weight is not
additive: the cut ignores it and candidates are compared with it (no optimality claim then).
Constraints are not in the cut: `split_costs.choose` returns the best feasible candidate.

Integers: scipy's maximum_flow takes int32 capacities, so costs are scaled so that the best
topological cut (an upper bound UB of the min cut) is 2^30 units; larger capacities clip to
2^31 - 1, which no minimum cut contains. Rounding each of the F finite capacities to a unit makes
the chosen split at most F * UB / 2^30 worse than the true optimum (about 1e-9 * UB per edge);
reported objectives are recomputed in floating point, exact. Complexity: O(N + E) to build,
Dinic's max-flow O(V^2 E) worst case (near linear on DNN graphs), O(N + E) to recover the side.

`dads-throughput` (DSH, the paper's heavy-load mode) minimises evaluate's bottleneck, the largest
of origin busy, uplink busy, downlink busy and server busy (busy times stretched by background
load): min cuts of alpha * t_origin + t_transfer + gamma * t_server over a coarse grid of
(alpha, gamma) in powers of 4, refined three times around the best by halving the log step; the
smallest evaluated bottleneck wins (ties: the objective), origin-only and server-only included.
The paper proves a 3-approximation; about 76 min cuts per server.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from coinfer.cost import terms
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.neurosurgeon import cut_table
from coinfer.solve.split_costs import (
    Bools,
    Floats,
    Split,
    SplitCosts,
    bottleneck_s,
    choose,
    objective,
    origin_alone,
    split_costs,
    uses_missing_link,
)

UNITS = 2**30  # integer units given to the upper bound of the min cut
INF = 2**31 - 1  # int32 "infinite" capacity


def dads(problem: Problem) -> Plan:
    if not problem.cluster.servers:
        return origin_alone(problem, "dads")
    n = len(problem.graph.nodes)
    candidates: list[Split] = []
    for server in problem.cluster.servers:
        c = split_costs(problem, server.name)
        table = cut_table(c)
        feasible = np.flatnonzero(~table.missing_link)  # all-origin (the last cut) is always there
        best_cut = int(feasible[np.argmin(table.additive[feasible])])
        sides = [np.arange(n) >= best_cut, np.zeros(n, bool), np.ones(n, bool)]
        if table.additive[best_cut] > 0:
            up = c.up_cost if c.up_ok else np.full_like(c.up_cost, np.inf)
            down = c.down_cost if c.down_ok else np.full_like(c.down_cost, np.inf)
            cost_s = c.node_cost[1] + _results(c, down)
            sides.append(min_cut(c, c.node_cost[0], cost_s, up, down, float(table.additive[best_cut])))
        candidates += [_ranked(c, s, (objective(c, s),)) for s in sides]
    return choose(problem, candidates, "dads")


def dads_throughput(problem: Problem) -> Plan:
    if not problem.cluster.servers:
        return origin_alone(problem, "dads-throughput")
    candidates: list[Split] = []
    for server in problem.cluster.servers:
        candidates += _throughput_candidates(split_costs(problem, server.name))
    return choose(problem, candidates, "dads-throughput")


def _throughput_candidates(c: SplitCosts) -> list[Split]:
    """DSH's grid search over (alpha, gamma) = (2^a, 2^g), plus origin-only and server-only."""
    t_origin = _stretched(c, 0)
    t_server = _stretched(c, 1) + _results(c, c.down_time_s)
    all_server_extra = float(c.up_time_s[:c.n_inputs][np.bincount(c.value_of_read, minlength=len(c.up_time_s))
                                                      [:c.n_inputs] > 0].sum())
    seen: dict[tuple[float, float], Split] = {}

    def solve(point: tuple[float, float]) -> tuple[float, ...]:
        if point not in seen:
            cost_o, cost_s = 2.0 ** point[0] * t_origin, 2.0 ** point[1] * t_server
            bound = min(float(cost_o.sum()), float(cost_s.sum()) + all_server_extra)
            sides = min_cut(c, cost_o, cost_s, c.up_time_s, c.down_time_s, bound) \
                if 0 < bound < np.inf else np.zeros(len(t_origin), bool)
            seen[point] = _ranked(c, sides, (bottleneck_s(c, sides), objective(c, sides)))
        return seen[point].rank

    coarse = [(float(a), float(g)) for a in range(-6, 7, 2) for g in range(-6, 7, 2)]
    centre = min(coarse, key=solve)
    for step in (1.0, 0.5, 0.25):
        around = [(centre[0] + da * step, centre[1] + dg * step) for da in (-1, 0, 1) for dg in (-1, 0, 1)]
        centre = min(around, key=solve)
    n = len(t_origin)
    trivial = [_ranked(c, s, (bottleneck_s(c, s), objective(c, s))) for s in (np.zeros(n, bool), np.ones(n, bool))]
    return [*seen.values(), *trivial]


def min_cut(c: SplitCosts, cost_o: Floats, cost_s: Floats, up: Floats, down: Floats, bound: float) -> Bools:
    """The split of least total cost (node costs per side, value costs per direction, inf = never
    cut) by max-flow on the graph of the module docstring; `bound` >= the min cut value, > 0."""
    capacity = _cut_graph(c, cost_o, cost_s, up, down, UNITS / bound)
    flow = maximum_flow(capacity, 0, 1).flow
    residual = capacity - flow  # reverse edges: 0 - (-f) = f
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, 0, directed=True, return_predecessors=False)
    on_origin = np.zeros(capacity.shape[0], bool)
    on_origin[reached] = True
    return ~on_origin[2:len(cost_o) + 2]


def _cut_graph(c: SplitCosts, cost_o: Floats, cost_s: Floats, up: Floats, down: Floats,
               scale: float) -> csr_array:
    """Vertices: s = 0, t = 1, node i = i + 2, then one uplink and one downlink vertex per value
    read by two or more nodes. Capacities in int32 units of 1 / scale, clipped to INF."""
    n, n_values = len(cost_o), len(up)
    value, reader = c.value_of_read, c.reader_of_read + 2
    producer = np.concatenate([np.zeros(c.n_inputs, np.int64), np.arange(n) + 2])  # inputs live on s
    from_node = value >= c.n_inputs  # graph inputs are never sent down
    fan_out = np.bincount(value, minlength=n_values)
    single = fan_out[value] == 1
    shared = np.flatnonzero(fan_out >= 2)
    up_vertex = np.full(n_values, -1)
    up_vertex[shared] = n + 2 + np.arange(len(shared))
    down_vertex = up_vertex + len(shared)
    shared_nodes = shared[shared >= c.n_inputs]
    one, many = single, ~single
    one_down, many_down = single & from_node, ~single & from_node
    edges = [  # (tail, head, capacity)
        (np.zeros(n, np.int64), np.arange(n) + 2, cost_s),
        (np.arange(n) + 2, np.ones(n, np.int64), cost_o),
        (producer[value[one]], reader[one], up[value[one]]),
        (reader[one_down], producer[value[one_down]], down[value[one_down]]),
        (producer[shared], up_vertex[shared], up[shared]),
        (up_vertex[value[many]], reader[many], np.full(int(many.sum()), np.inf)),
        (down_vertex[shared_nodes], producer[shared_nodes], down[shared_nodes]),
        (reader[many_down], down_vertex[value[many_down]], np.full(int(many_down.sum()), np.inf)),
    ]
    tails, heads, caps = (np.concatenate(part) for part in zip(*edges, strict=True))
    size = n + 2 + 2 * len(shared)
    graph = csr_array((caps, (tails, heads)), shape=(size, size))
    graph.sum_duplicates()
    units = np.minimum(np.rint(graph.data * scale), INF).astype(np.int32)  # inf -> INF
    return csr_array((units, graph.indices, graph.indptr), shape=(size, size))


def _stretched(c: SplitCosts, row: int) -> Floats:
    """Node times stretched by the device's background load, as evaluate's bottleneck counts them."""
    stretch = terms.effective_busy_s(c.origin if row == 0 else c.server, 1.0)  # inf when saturated
    return np.full_like(c.node_time_s[row], np.inf) if np.isinf(stretch) else c.node_time_s[row] * stretch


def _results(c: SplitCosts, per_hop: Floats) -> Floats:
    """Per node: what its result returns cost when it runs on the server (inf * 0 avoided)."""
    count = c.result_count[c.n_inputs:]
    return np.where(count > 0, per_hop[c.n_inputs:] * np.maximum(count, 1), 0.0)


def _ranked(c: SplitCosts, on_server: Bools, score: tuple[float, ...]) -> Split:
    return Split((float(uses_missing_link(c, on_server)), *score), c, on_server)

"""The mixed-integer linear program behind `ilp`: variables, rows and the metric vectors.

Every metric of `coinfer.cost.evaluate` is linear in the variables below, so each one is a dense
vector `m` with metric = m @ v; the objective is the weighted sum of those vectors and the
constraints bound them. Index sets: N nodes v, D devices d (origin o), values u (graph inputs,
which live on the origin, and node outputs), consumers C(u) of a value.

Variables (all in [0, 1] unless said otherwise):
- x[v,d] binary: node v runs on device d; sum_d x[v,d] = 1.
- y[u,d]: value u is read on device d; y[u,d] >= x[c,d] for every c in C(u).
- z[u,p,d]: value u is sent over the link p->d (one message however many readers d has, as in
  DADS): z[u,p,d] >= x[u,p] + y[u,d] - 1. A graph input needs no z: its hop o->d is y[u,d].
  Where p->d has no link the pair is forbidden instead, x[u,p] + y[u,d] <= 1.
  Two valid inequalities tighten the LP relaxation (they are products of assignment rows with
  x, in the spirit of RLT): sum_{p!=d} z[u,p,d] >= y[u,d] - x[u,d] (a value read on d and not
  made there arrives from somewhere) and sum_{d!=p} z[u,p,d] >= x[u,p] - x[c,p] (a value made on
  p and read elsewhere leaves p).
- The result's return o <- p is linear already: x[r,p] for every graph output r and p != o.
- used[d] >= x[v,d] when d has a queueing time (background load): charged once per request.
- mem[d] >= ws(v) x[v,d] / M_d (largest working set on d, as a fraction of the memory M_d), with
  sum_v params(v) x[v,d] / M_d + mem[d] <= 1.
- b >= 0 (only for the throughput objective): b >= busy_d / (1 - rho_d) and b >= link busy.

y, z and used may be continuous: every metric and every constraint grows with them, so the
solver sets them to their lower bounds, which are 0 or 1 once x is integral. Node times, queues
and missing links that make a placement infinitely costly are turned into forbidden x by bounds.
Size: N D binaries, about (N + E) D^2 rows for E edges.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from coinfer.cost import terms
from coinfer.problem import Problem

FloatArray = NDArray[np.float64]

# HiGHS accepts solutions within its feasibility tolerance (1e-6) of a row bound, and a plan
# sitting exactly on a limit can then end in a 'solve error' (seen: a node needing exactly a
# device's memory). Shrinking every limit by ten times the tolerance keeps such plans out cleanly.
LIMIT_MARGIN = 1e-5


@dataclass
class Hop:
    """A variable that, at 1, sends `size_bytes` over the link source->target (device indices)."""

    var: int
    source: int
    target: int
    size_bytes: int
    time_s: float


@dataclass
class MilpModel:
    """A MILP in scipy.optimize.milp's terms, plus what is needed to read the plan back."""

    problem: Problem
    devices: list[str]
    allowed: NDArray[np.bool_]
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    integer: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    row_lo: list[float] = field(default_factory=list)
    row_hi: list[float] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    used: dict[int, int] = field(default_factory=dict)
    bottleneck_var: int | None = None

    def var(self, lo: float = 0.0, hi: float = 1.0, integer: bool = False) -> int:
        self.lb.append(lo)
        self.ub.append(hi)
        self.integer.append(int(integer))
        return len(self.lb) - 1

    def row(self, terms_: dict[int, float], lo: float, hi: float) -> None:
        r = len(self.row_lo)
        for col, val in terms_.items():
            if val:
                self.rows.append(r)
                self.cols.append(col)
                self.vals.append(val)
        self.row_lo.append(lo)
        self.row_hi.append(hi)

    def x(self, v: int, d: int) -> int:
        """Column of x[v,d]: the first N*D columns, node-major."""
        return v * len(self.devices) + d


def build(problem: Problem) -> MilpModel:
    """The placement MILP for `problem` (rows for its constraints; objective via `metrics`)."""
    graph, cluster = problem.graph, problem.cluster
    devices = list(cluster.device_names)
    model = MilpModel(problem, devices, _allowed(problem, devices))
    for v in range(len(graph.nodes)):
        for d in range(len(devices)):
            model.var(0.0, float(model.allowed[v, d]), integer=True)
        model.row({model.x(v, d): 1.0 for d in range(len(devices))}, 1.0, 1.0)
    _transfers(model)
    _results(model)
    for d, name in enumerate(devices):
        if terms.queueing_time_s(cluster.device(name).background) > 0:
            model.used[d] = used = model.var()
            for v in range(len(graph.nodes)):
                model.row({used: 1.0, model.x(v, d): -1.0}, 0.0, math.inf)
    _memory(model)
    return model


def _allowed(problem: Problem, devices: list[str]) -> NDArray[np.bool_]:
    """x[v,d] may be 1: finite time and queue, the node's working set fits, the result can return."""
    graph, cluster, origin = problem.graph, problem.cluster, problem.origin
    outputs = set(graph.outputs)
    ok = np.ones((len(graph.nodes), len(devices)), dtype=bool)
    for d, name in enumerate(devices):
        dev = cluster.device(name)
        if math.isinf(terms.queueing_time_s(dev.background)) or math.isinf(terms.effective_busy_s(dev, 1.0)):
            ok[:, d] = False
        for v, node in enumerate(graph.nodes):
            if (math.isinf(problem.node_time_s[name][node.id]) or working_set_bytes(problem, v) > dev.memory_bytes
                    or (node.id in outputs and name != origin and cluster.link(name, origin) is None)):
                ok[v, d] = False
    return ok


def working_set_bytes(problem: Problem, v: int) -> int:
    """Inputs + output of node v: the memory it needs while it runs (as `memory_need_bytes`)."""
    graph = problem.graph
    node = graph.nodes[v]
    return node.output_bytes + sum(graph.tensor_bytes(src) for src in dict.fromkeys(node.inputs))


def _transfers(model: MilpModel) -> None:
    """y, z and their rows for every value with readers (see the module docstring)."""
    graph, cluster = model.problem.graph, model.problem.cluster
    devices, origin = model.devices, model.devices.index(model.problem.origin)
    k = len(devices)
    for gi in graph.inputs:
        readers = [graph.index[c] for c in graph.consumers[gi.name]]
        for d in range(k):
            link = cluster.link(devices[origin], devices[d])
            if d == origin or not readers:
                continue
            if link is None:
                for c in readers:
                    model.ub[model.x(c, d)] = 0.0
                continue
            y = model.var()
            model.hops.append(Hop(y, origin, d, gi.spec.size_bytes, terms.transfer_time_s(link, gi.spec.size_bytes)))
            for c in readers:
                model.row({y: 1.0, model.x(c, d): -1.0}, 0.0, math.inf)
    for u, node in enumerate(graph.nodes):
        readers = [graph.index[c] for c in graph.consumers[node.id]]
        if readers:
            _value_rows(model, u, node.output_bytes, readers)


def _value_rows(model: MilpModel, u: int, size: int, readers: list[int]) -> None:
    cluster, devices = model.problem.cluster, model.devices
    k = len(devices)
    y = [model.var() for _ in range(k)]
    z: dict[tuple[int, int], int] = {}
    for d in range(k):
        for c in readers:
            model.row({y[d]: 1.0, model.x(c, d): -1.0}, 0.0, math.inf)
        for p in range(k):
            if p == d:
                continue
            link = cluster.link(devices[p], devices[d])
            if link is None:
                model.row({model.x(u, p): 1.0, y[d]: 1.0}, -math.inf, 1.0)
                continue
            z[p, d] = model.var()
            model.hops.append(Hop(z[p, d], p, d, size, terms.transfer_time_s(link, size)))
            model.row({z[p, d]: 1.0, model.x(u, p): -1.0, y[d]: -1.0}, -1.0, math.inf)
    for d in range(k):  # arrives on d from somewhere
        into = {z[p, d]: 1.0 for p in range(k) if (p, d) in z}
        model.row({**into, y[d]: -1.0, model.x(u, d): 1.0}, 0.0, math.inf)
    for p in range(k):  # leaves p towards some reader
        out = {z[p, d]: 1.0 for d in range(k) if (p, d) in z}
        for c in readers:
            row = dict(out)
            row[model.x(u, p)] = -1.0
            row[model.x(c, p)] = row.get(model.x(c, p), 0.0) + 1.0
            model.row(row, 0.0, math.inf)


def _results(model: MilpModel) -> None:
    graph, cluster, devices = model.problem.graph, model.problem.cluster, model.devices
    origin = devices.index(model.problem.origin)
    for out in graph.outputs:
        v, size = graph.index[out], graph.node(out).output_bytes
        for p in range(len(devices)):
            link = cluster.link(devices[p], devices[origin])
            if p != origin and link is not None:
                model.hops.append(Hop(model.x(v, p), p, origin, size, terms.transfer_time_s(link, size)))


def _memory(model: MilpModel) -> None:
    graph, cluster = model.problem.graph, model.problem.cluster
    for d, name in enumerate(model.devices):
        have = cluster.device(name).memory_bytes
        if math.isinf(have):
            continue
        peak = model.var(0.0, math.inf)  # as a fraction of `have`: HiGHS drops coefficients below 1e-9
        for v in range(len(graph.nodes)):
            model.row({peak: 1.0, model.x(v, d): -working_set_bytes(model.problem, v) / have}, 0.0, math.inf)
        params = {model.x(v, d): n.param_bytes / have for v, n in enumerate(graph.nodes)}
        model.row({**params, peak: 1.0}, -math.inf, 1.0 - LIMIT_MARGIN)


@dataclass
class Metrics:
    """Dense coefficient vectors: metric = vector @ solution (see the module docstring)."""

    latency_s: FloatArray
    energy_by_device_j: list[FloatArray]
    cost_usd: FloatArray
    busy_s: list[FloatArray]
    link_busy_s: dict[tuple[int, int], FloatArray]


def metrics(model: MilpModel) -> Metrics:
    """The linear form of every metric `cost.evaluate` computes, over the model's variables."""
    problem, n = model.problem, len(model.lb)
    devs = [problem.cluster.device(name) for name in model.devices]
    k = len(devs)
    latency, cost = np.zeros(n), np.zeros(n)
    busy = [np.zeros(n) for _ in range(k)]
    energy = [np.zeros(n) for _ in range(k)]
    link_busy: dict[tuple[int, int], FloatArray] = defaultdict(lambda: np.zeros(n))
    for d, name in enumerate(model.devices):
        times = problem.node_time_s[name]
        for v, node in enumerate(problem.graph.nodes):
            if model.allowed[v, d]:
                busy[d][model.x(v, d)] = times[node.id]
    for d, used in model.used.items():
        latency[used] = terms.queueing_time_s(devs[d].background)
    for hop in model.hops:
        link = problem.cluster.link(model.devices[hop.source], model.devices[hop.target])
        latency[hop.var] += hop.time_s
        link_busy[hop.source, hop.target][hop.var] += hop.time_s
        energy[hop.source][hop.var] += terms.transmit_energy_j(link, hop.time_s)
        cost[hop.var] += terms.link_cost_usd(link, hop.time_s, hop.size_bytes)
    for d, dev in enumerate(devs):
        latency += busy[d]
        energy[d] += dev.busy_power_w * busy[d]
        cost += dev.price_usd_per_s * busy[d] + dev.electricity_usd_per_kwh * energy[d] / terms.JOULES_PER_KWH
    return Metrics(latency, energy, cost, busy, dict(link_busy))

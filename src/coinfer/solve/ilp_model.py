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
- s[v,d] binary, only when the model chooses standbys (`build(..., standbys=True)`): device d
  stands by for node v; x[v,d] + s[v,d] <= 1 and sum_d s[v,d] <= the most per node (three, or one
  where links can fail: coinfer.solve.ilp_reliability). A standby
  computes nothing and adds no latency, energy or money; it holds v's weights and needs v's working
  set when it takes over, so it counts in d's memory rows like x. What it buys is reliability:
  coinfer.solve.ilp_reliability.
- mem[d] >= ws(v) (x[v,d] + s[v,d]) / M_d (largest working set on d, as a fraction of the memory
  M_d), with sum_v params(v) (x[v,d] + s[v,d]) / M_d + mem[d] <= 1.
- sigma[g] >= 0 per parallel group g (coinfer.cost.parallel_groups): the group's span, at least
  what each device d spends on it, sigma[g] >= sum_{v in g} t[v,d] x[v,d] + the fork hops into d
  (z of g's fork values towards d) + the hops of g's members' outputs out of d. Latency counts
  sigma[g] instead of the members' times and those hops, which stay in busy times, energy and money.
  A group on one device has sigma[g] equal to their sum, as in the sequential model. Valid rows
  sigma[g] >= sum_d t[v,d] x[v,d] per member v (it runs whole somewhere) lift the LP bound, which
  would otherwise spread each member over every device and price the group at a fraction of one.
- b >= 0 (only for the throughput objective): b >= busy_d / (1 - rho_d) and b >= link busy, and
  the valid rows of `single_resource_rows`, which keep the LP from halving an unavoidable hop by
  splitting it over parallel links.

- Symmetry (only where servers are interchangeable, `coinfer.solve.symmetry`): for each pair a, b
  of consecutive interchangeable servers, sum_v x[v,b] <= sum_v x[v,a] (b runs no more nodes than
  a). Every plan has a permutation of equal cost that keeps these rows, so the optimum is
  unchanged, and branch and bound visits fewer mirror images of one plan. One row a pair: a
  first-use ordering with running sums (2N rows a pair) made HiGHS slower on random DAGs.
  Interchangeable members of a parallel group (identical shards): sum_d d x[a,d] <= sum_d d x[b,d]
  for consecutive ones, so their devices come in index order.

Caps (`Caps`): an upper bound on the latency and on the bottleneck that every optimal plan meets
(from an incumbent plan's objective, a deadline or a request rate; see `ilp`). Latency is at
least the compute floor (every node on its fastest device) plus any one hop, or with node v on d
the floor less v's fastest time plus its time on d; the bottleneck is at least any one stretched
node time or hop. So a node time or hop that breaks a cap rules the placement out exactly as a
missing link does: x[v,d] = 0, or the pair (u on p, read on d) is forbidden. Where some pairs are
forbidden, one row per reader c, x[u,p] + sum_{d not reachable from p} x[c,d] <= 1, says it
for the LP relaxation far more tightly than the pairwise rows; with a tight cap most large
values cannot leave a slow origin at all (x[u,p] <= x[c,p]), which is what lifts the
bottleneck objective's weak LP bound (every node spread evenly over the devices costs no
transfer at all in the relaxation).

y, z and used may be continuous: every metric and every constraint grows with them, so the
solver sets them to their lower bounds, which are 0 or 1 once x is integral. Node times, queues
and missing links that make a placement infinitely costly are turned into forbidden x by bounds.
Size: N D binaries, about (N + E) D^2 rows for E edges, less what the caps forbid.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from coinfer.cost import terms
from coinfer.problem import Problem
from coinfer.solve.symmetry import interchangeable_groups, interchangeable_members

FloatArray = NDArray[np.float64]

# HiGHS accepts solutions within its feasibility tolerance (1e-6) of a row bound, and a plan
# sitting exactly on a limit can then end in a 'solve error' (seen: a node needing exactly a
# device's memory). Shrinking every limit by ten times the tolerance keeps such plans out cleanly.
LIMIT_MARGIN = 1e-5


@dataclass(frozen=True)
class Caps:
    """Upper bounds (s) on the latency and on the bottleneck of every plan worth finding, and the
    compute time every plan spends at least (each node on its fastest device): latency counts it
    besides any one hop."""

    latency_s: float = math.inf
    bottleneck_s: float = math.inf
    latency_floor_s: float = 0.0

    @property
    def hop_s(self) -> float:
        """A single hop longer than this breaks a cap (hops count in latency and in link busy)."""
        return min(self.latency_s - self.latency_floor_s, self.bottleneck_s)


@dataclass
class Hop:
    """A variable that, at 1, sends `size_bytes` over the link source->target (device indices)."""

    var: int
    source: int
    target: int
    size_bytes: int
    time_s: float
    in_span: bool = False  # a parallel group's hop: latency counts it through the group's span


@dataclass
class MilpModel:
    """A MILP in scipy.optimize.milp's terms, plus what is needed to read the plan back."""

    problem: Problem
    devices: list[str]
    allowed: NDArray[np.bool_]
    caps: Caps = field(default_factory=Caps)
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    integer: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    row_lo: list[float] = field(default_factory=list)
    row_hi: list[float] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    sends: dict[int, list[Hop]] = field(default_factory=dict)  # node value u -> its z hops
    used: dict[int, int] = field(default_factory=dict)
    standby: dict[tuple[int, int], int] = field(default_factory=dict)  # (v, d) -> column of s[v,d]
    spans: dict[str, int] = field(default_factory=dict)  # parallel group -> column of sigma[g]
    spanned: set[int] = field(default_factory=set)  # node indices whose time latency counts via a span
    bottleneck_var: int | None = None
    objective_offset: float = 0.0  # a constant the objective vector leaves out (unscaled)

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


def build(problem: Problem, caps: Caps | None = None, *, standbys: int = 0) -> MilpModel:
    """The placement MILP for `problem` (rows for its constraints; objective via `metrics`),
    without the plans that break `caps`, and with standby variables for up to `standbys` per node
    (see the module docstring)."""
    graph, cluster = problem.graph, problem.cluster
    devices = list(cluster.device_names)
    caps = caps or Caps()
    model = MilpModel(problem, devices, _allowed(problem, devices, caps), caps)
    for v in range(len(graph.nodes)):
        for d in range(len(devices)):
            model.var(0.0, float(model.allowed[v, d]), integer=True)
        model.row({model.x(v, d): 1.0 for d in range(len(devices))}, 1.0, 1.0)
    if standbys:
        _standbys(model, standbys)
    _transfers(model)
    _results(model)
    _parallel_groups(model)
    for d, name in enumerate(devices):
        if terms.queueing_time_s(cluster.device(name).background) > 0:
            model.used[d] = used = model.var()
            for v in range(len(graph.nodes)):
                model.row({used: 1.0, model.x(v, d): -1.0}, 0.0, math.inf)
    _memory(model)
    for group in interchangeable_groups(problem):
        indices = [devices.index(name) for name in group]
        for a, b in itertools.pairwise(indices):
            _no_more_nodes_than(model, a, b)
    for run in interchangeable_members(problem):
        for a, b in itertools.pairwise(graph.index[m] for m in run):
            # member a's device index <= member b's (coinfer.solve.symmetry)
            model.row({**{model.x(a, d): float(d) for d in range(len(devices))},
                       **{model.x(b, d): -float(d) for d in range(len(devices))}}, -math.inf, 0.0)
    return model


def _standbys(model: MilpModel, most: int) -> None:
    """s[v,d] for every device that could run v (finite time and queue, its working set fits, it
    does not always fail), whatever the caps: a standby adds nothing to latency or busy time. A
    node on the origin has none (x[v,o] + s[v,d] <= 1): the origin cannot be failed over from."""
    problem, graph = model.problem, model.problem.graph
    origin = model.devices.index(problem.origin)
    for d, name in enumerate(model.devices):
        dev = problem.cluster.device(name)
        if (dev.failure_probability >= 1.0 or math.isinf(terms.queueing_time_s(dev.background))
                or math.isinf(terms.effective_busy_s(dev, 1.0))):
            continue
        for v, node in enumerate(graph.nodes):
            if math.isfinite(problem.node_time_s[name][node.id]) and working_set_bytes(problem, v) <= dev.memory_bytes:
                model.standby[v, d] = s = model.var(integer=True)
                model.row({s: 1.0, model.x(v, d): 1.0}, -math.inf, 1.0)
                model.row({s: 1.0, model.x(v, origin): 1.0}, -math.inf, 1.0)
    for v in range(len(graph.nodes)):
        row = {s: 1.0 for (node, _), s in model.standby.items() if node == v}
        if len(row) > most:
            model.row(row, -math.inf, most)


def _no_more_nodes_than(model: MilpModel, a: int, b: int) -> None:
    """sum_v x[v,b] <= sum_v x[v,a]: b runs no more nodes than a."""
    n = len(model.problem.graph.nodes)
    model.row({**{model.x(v, b): 1.0 for v in range(n)}, **{model.x(v, a): -1.0 for v in range(n)}}, -math.inf, 0.0)


def _allowed(problem: Problem, devices: list[str], caps: Caps) -> NDArray[np.bool_]:
    """x[v,d] may be 1: finite time and queue, the node's working set fits, the result can return,
    and neither its time nor its result's return breaks a cap."""
    graph, cluster, origin = problem.graph, problem.cluster, problem.origin
    outputs = set(graph.outputs)
    ok = np.ones((len(graph.nodes), len(devices)), dtype=bool)
    for d, name in enumerate(devices):
        dev = cluster.device(name)
        if math.isinf(terms.queueing_time_s(dev.background)) or math.isinf(terms.effective_busy_s(dev, 1.0)):
            ok[:, d] = False
        back = cluster.link(name, origin)
        for v, node in enumerate(graph.nodes):
            t = problem.node_time_s[name][node.id]
            # a parallel group's member is not in the floor (coinfer.solve.ilp._floors)
            others_s = caps.latency_floor_s - (0.0 if node.id in graph.parallel_group_of else
                                               min(problem.node_time_s[n][node.id] for n in devices))
            if (math.isinf(t) or others_s + t > caps.latency_s or terms.effective_busy_s(dev, t) > caps.bottleneck_s
                    or working_set_bytes(problem, v) > dev.memory_bytes
                    or (node.id in outputs and name != origin
                        and _over(terms.transfer_time_s(back, node.output_bytes), caps.hop_s))):
                ok[v, d] = False
    return ok


def _over(time_s: float, cap_s: float) -> bool:
    """A hop that takes longer than the cap, or cannot happen (no link: an infinite time)."""
    return time_s > cap_s or math.isinf(time_s)


def working_set_bytes(problem: Problem, v: int) -> int:
    """The memory node v needs while it runs (coinfer.cost.terms.working_set_bytes)."""
    return terms.working_set_bytes(problem.graph, problem.graph.nodes[v])


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
            if _over(terms.transfer_time_s(link, gi.spec.size_bytes), model.caps.hop_s):
                for c in readers:
                    model.ub[model.x(c, d)] = 0.0
                    model.allowed[c, d] = False
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
            time_s = terms.transfer_time_s(link, size)
            if _over(time_s, model.caps.hop_s):
                model.row({model.x(u, p): 1.0, y[d]: 1.0}, -math.inf, 1.0)
                continue
            z[p, d] = model.var()
            model.hops.append(Hop(z[p, d], p, d, size, time_s))
            model.sends.setdefault(u, []).append(model.hops[-1])
            model.row({z[p, d]: 1.0, model.x(u, p): -1.0, y[d]: -1.0}, -1.0, math.inf)
    for p in range(k):  # u made on p: every reader on p or on a device u may be sent to
        unreachable = [d for d in range(k) if d != p and (p, d) not in z]
        if unreachable and model.allowed[u, p]:
            for c in readers:
                model.row({model.x(u, p): 1.0, **{model.x(c, d): 1.0 for d in unreachable}}, -math.inf, 1.0)
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


def _parallel_groups(model: MilpModel) -> None:
    """sigma[g] and its rows, one per device (see the module docstring)."""
    problem, graph = model.problem, model.problem.graph
    for group in graph.parallel_groups.values():
        model.spans[group.name] = sigma = model.var(0.0, math.inf)
        members = [graph.index[m] for m in group.members]
        model.spanned.update(members)
        hops = [h for f in group.forks for h in model.sends.get(graph.index[f], [])]
        outs = [h for v in members for h in model.sends.get(v, [])]
        for h in (*hops, *outs):
            h.in_span = True
        for d, name in enumerate(model.devices):
            row: dict[int, float] = {sigma: 1.0}
            for v in members:
                if model.allowed[v, d]:
                    row[model.x(v, d)] = -problem.node_time_s[name][graph.nodes[v].id]
            for h in hops:
                if h.target == d:
                    row[h.var] = row.get(h.var, 0.0) - h.time_s
            for h in outs:
                if h.source == d:
                    row[h.var] = row.get(h.var, 0.0) - h.time_s
            model.row(row, 0.0, math.inf)
        for v in members:  # valid: a member runs whole on one device (tightens the LP, which splits it)
            model.row({sigma: 1.0, **{model.x(v, d): -problem.node_time_s[name][graph.nodes[v].id]
                                      for d, name in enumerate(model.devices) if model.allowed[v, d]}}, 0.0, math.inf)


def _results(model: MilpModel) -> None:
    graph, cluster, devices = model.problem.graph, model.problem.cluster, model.devices
    origin = devices.index(model.problem.origin)
    for out in graph.outputs:
        v, size = graph.index[out], graph.node(out).output_bytes
        for p in range(len(devices)):
            link = cluster.link(devices[p], devices[origin])
            if p != origin and link is not None:
                model.hops.append(Hop(model.x(v, p), p, origin, size, terms.transfer_time_s(link, size)))


def single_resource_rows(model: MilpModel, b: int, unit_s: float) -> None:
    """Valid rows b >= what one node or one value alone puts on one resource (only with b).

    The LP relaxation of the max splits an unavoidable hop over parallel links (a node reading
    the model input half on each of two edge servers puts half the input on each uplink), which
    halves its bound; these rows charge the whole hop whatever the split. Each holds at every
    integral point, so the optimum is unchanged:
    - node v, on whichever device d it runs, loads one resource with at least L[v,d] = the largest
      of its stretched time, the hop origin -> d of each graph input it reads, and its result's
      return d -> origin: b >= sum_d L[v,d] x[v,d];
    - a value u with one reader: at most one of its hops happens, b >= sum of time * z over them;
    - a value u with several readers, per reader c: a[u,c,d] >= x[c,d] - x[u,d] (0 <= a <= 1) is
      1 when c runs on d and u does not, and then some hop into d, of at least the shortest time
      h[u,d] into d, carries u: b >= sum_d h[u,d] a[u,c,d].
    """
    problem, cluster = model.problem, model.problem.cluster
    graph, origin = problem.graph, problem.origin
    outputs = set(graph.outputs)
    for v, node in enumerate(graph.nodes):
        row: dict[int, float] = {b: 1.0}
        for d, name in enumerate(model.devices):
            if not model.allowed[v, d]:
                continue
            load = terms.effective_busy_s(cluster.device(name), problem.node_time_s[name][node.id])
            if name != origin:
                for src in dict.fromkeys(node.inputs):
                    if src in graph.input_names:
                        load = max(load, terms.transfer_time_s(cluster.link(origin, name), graph.tensor_bytes(src)))
                if node.id in outputs:
                    load = max(load, terms.transfer_time_s(cluster.link(name, origin), node.output_bytes))
            row[model.x(v, d)] = -load / unit_s
        model.row(row, 0.0, math.inf)
    for u, hops in model.sends.items():
        readers = [graph.index[c] for c in graph.consumers[graph.nodes[u].id]]
        if len(readers) == 1:
            model.row({b: 1.0, **{h.var: -h.time_s / unit_s for h in hops}}, 0.0, math.inf)
            continue
        into: dict[int, float] = {}
        for h in hops:
            into[h.target] = min(into.get(h.target, math.inf), h.time_s)
        for c in readers:
            row = {b: 1.0}
            for d, time_s in into.items():
                a = model.var()
                row[a] = -time_s / unit_s
                model.row({a: 1.0, model.x(c, d): -1.0, model.x(u, d): 1.0}, 0.0, math.inf)
            model.row(row, 0.0, math.inf)


def pigeonhole_floor_s(model: MilpModel) -> float:
    """A floor on the bottleneck that the LP relaxation cannot see: of any j nodes, which run on the
    k_j devices allowed at least one of them, some device runs at least m = ceil(j / k_j), so its busy
    time is at least the sum of the m shortest of their (stretched) times on it (a device allowed fewer
    than m of them cannot be that device). The floor is the largest such bound over j, taking the j
    nodes with the longest shortest times. The LP spreads every node evenly over the devices (for
    24 equal BERT layers on 6 accelerators it prices 4 layers a device when integrally one runs 5);
    this row closes that pigeonhole gap. Valid at every integral point: the optimum is unchanged."""
    problem = model.problem
    graph, cluster = problem.graph, problem.cluster
    n = len(graph.nodes)
    times = np.full((n, len(model.devices)), math.inf)
    for d, name in enumerate(model.devices):
        device = cluster.device(name)
        for v, node in enumerate(graph.nodes):
            if model.allowed[v, d]:
                times[v, d] = terms.effective_busy_s(device, problem.node_time_s[name][node.id])
    if not np.isfinite(times).any(axis=1).all():
        return 0.0  # a node no device may run: the model is infeasible, and HiGHS says so
    order = np.argsort(-times.min(axis=1), kind="stable")
    floor = 0.0
    for j in range(2, n + 1):
        chosen = times[order[:j]]  # (j, devices)
        hosts = np.isfinite(chosen).any(axis=0)
        m = -(-j // int(hosts.sum()))
        if m < 2:
            continue
        ranked = np.sort(chosen[:, hosts], axis=0)  # inf (not allowed) last
        if ranked.shape[0] < m:
            continue
        loads = ranked[:m].sum(axis=0)  # inf where a device is allowed fewer than m of them
        if np.isfinite(loads).any():
            floor = max(floor, float(loads.min()))
    return floor


def _memory(model: MilpModel) -> None:
    graph, cluster = model.problem.graph, model.problem.cluster
    for d, name in enumerate(model.devices):
        have = cluster.device(name).memory_bytes
        if math.isinf(have):
            continue
        peak = model.var(0.0, math.inf)  # as a fraction of `have`: HiGHS drops coefficients below 1e-9
        params: dict[int, float] = {}
        for v, node in enumerate(graph.nodes):
            holds = [model.x(v, d), *([model.standby[v, d]] if (v, d) in model.standby else [])]
            ws = working_set_bytes(model.problem, v) / have
            model.row({peak: 1.0, **{col: -ws for col in holds}}, 0.0, math.inf)
            params.update({col: node.param_bytes / have for col in holds})
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
                if v not in model.spanned:
                    latency[model.x(v, d)] = times[node.id]
    for d, used in model.used.items():
        latency[used] = terms.queueing_time_s(devs[d].background)
    for sigma in model.spans.values():
        latency[sigma] = 1.0
    for hop in model.hops:
        link = problem.cluster.link(model.devices[hop.source], model.devices[hop.target])
        if not hop.in_span:
            latency[hop.var] += hop.time_s
        link_busy[hop.source, hop.target][hop.var] += hop.time_s
        energy[hop.source][hop.var] += terms.transmit_energy_j(link, hop.time_s)
        cost[hop.var] += terms.link_cost_usd(link, hop.time_s, hop.size_bytes)
    for d, dev in enumerate(devs):
        energy[d] += dev.busy_power_w * busy[d]
        cost += dev.price_usd_per_s * busy[d] + dev.electricity_usd_per_kwh * energy[d] / terms.JOULES_PER_KWH
    return Metrics(latency, energy, cost, busy, dict(link_busy))

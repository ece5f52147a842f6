"""`chain-dp`: the exact optimum for a chain graph, by dynamic programming over (layer, device).

Paper: the (i, j) split of the adaptive edge-fog-cloud partitioner (Deng et al., arXiv 2605.09623,
REFERENCE section 4) searches layers [0, i) on device 1, [i, j) on device 2 and the rest on device 3
by enumeration; the survey (REFERENCE section 1) costs such a chain as a sum over layers and hops.
This solver generalises the split: every layer may run on any device, so it searches exactly the
space `brute-force` searches, and the paper's k-device path splits are among the plans it weighs.

Model (exactly `cost.evaluate` restricted to a chain; layers are 0..N-1 in graph order): layer i
on device d costs its node time, energy, origin energy and money; if it differs from the device p
of layer i-1, the value of layer i-1 crosses the direct link p -> d (a missing link forbids the
move); graph inputs read by layer 0 cross from the origin; a graph output on a server returns to
the origin. All of these add up along the chain, so for an objective that is a weighted sum of
latency, energy, origin energy and cost the optimum is a shortest path through the trellis of
(layer, device): `best[i][d] = node[i][d] + min_p(best[i-1][p] + hop[i][p][d])`.

Terms that do not add up get extra state, keeping the search exact:
- queueing (once per loaded device a request computes on): the state adds the set of loaded
  devices visited (2^b for b loaded devices);
- deadline and origin-energy budget (constrained shortest path): each state keeps a Pareto front
  of labels (objective, latency, origin energy), pruned by the deadline against a lower bound of
  the latency still to come (label setting, exact);
- memory per device (parameters + largest working set): a layer whose own need exceeds a device's
  memory never goes there; a device whose allowed layers could together overflow it adds
  (parameter bytes, largest working set) on it to the labels, checked after every layer.
When no plan meets the constraints, the unconstrained optimum is returned (evaluate names the
violation). The throughput metric (bottleneck_s) is a max, not a sum: use `pipeline-dp`.

Complexity: O(N k^2) with numpy when no term needs labels (500 layers x 4 devices in about 3 ms);
with labels O(N k^2 2^b F^2) for Pareto fronts of size F (worst case exponential, small in
practice). Capacity (`request_rate_per_s`) is not enforced; evaluate reports it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from coinfer.cost import terms
from coinfer.errors import UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem

log = logging.getLogger(__name__)

Label = tuple[float, tuple[float, ...], int, "Label | None"]


def chain_dp(problem: Problem) -> Plan:
    """The plan of least objective for a chain graph; see the module docstring."""
    _check(problem)
    tab = tables(problem)
    limits = limits_of(problem, tab)
    found = _solve(tab, limits)
    if found is None:
        log.warning("chain-dp: no plan meets the constraints; returning the unconstrained optimum")
        found = _solve(tab, Limits.none(tab))
    assert found is not None  # all on the origin is always finite without constraints
    order, value = found
    placement = {n.id: tab.devices[d] for n, d in zip(problem.graph.nodes, order, strict=True)}
    return Plan(problem.graph, placement, "chain-dp", value)


def _check(problem: Problem) -> None:
    graph = problem.graph
    if not graph.is_chain:
        odd = next(n for i, n in enumerate(graph.nodes) if i and set(n.inputs) != {graph.nodes[i - 1].id})
        raise UserInputError(
            f"chain-dp needs a chain graph (each node reads only the one before it), but in graph "
            f"{graph.name!r} node {odd.id!r} reads {list(odd.inputs)}; for a DAG use dads (two devices) "
            f"or ilp (any number of devices), or pipeline-dp/hpa over the topological order"
        )
    if problem.objective.weights.get("bottleneck_s"):
        raise UserInputError(
            "chain-dp minimises metrics that add up along the chain; throughput (bottleneck_s) is a "
            "max over devices and links: use pipeline-dp for it"
        )


def _solve(tab: Tables, limits: Limits) -> tuple[list[int], float] | None:
    if not limits.dims and not tab.loaded.any():
        return _viterbi(tab, limits.allowed)
    return _labels(tab, limits)


def _viterbi(tab: Tables, allowed: np.ndarray) -> tuple[list[int], float] | None:
    """Shortest path through the (layer, device) trellis, vectorised over device pairs."""
    node = np.where(allowed, tab.node_obj, math.inf)  # (N, k)
    n, k = node.shape
    cost = tab.in_obj + node[0]
    back = np.zeros((n, k), dtype=np.intp)
    cols = np.arange(k)
    for i in range(1, n):
        total = cost[:, None] + tab.hop_obj[i]
        back[i] = total.argmin(axis=0)
        cost = total[back[i], cols] + node[i]
    last = int(cost.argmin())
    if not math.isfinite(cost[last]):
        return None
    order = [last]
    for i in range(n - 1, 0, -1):
        order.append(int(back[i][order[-1]]))
    return order[::-1], float(cost[last])


@dataclass
class _Front:
    """Labels of one state (device, loaded devices visited) none of which dominates another."""

    labels: list[Label]

    def add(self, label: Label) -> None:
        obj, res = label[0], label[1]
        for o, r, _, _ in self.labels:
            if o <= obj and all(a <= b for a, b in zip(r, res, strict=True)):
                return
        self.labels = [x for x in self.labels
                       if not (obj <= x[0] and all(a <= b for a, b in zip(res, x[1], strict=True)))]
        self.labels.append(label)


def _labels(tab: Tables, limits: Limits) -> tuple[list[int], float] | None:
    """Label-setting DP over (layer, device, loaded devices visited); labels carry resources."""
    n, k = tab.node_obj.shape
    fronts: dict[tuple[int, int], _Front] = {}
    for d in range(k):
        start: Label = (0.0, limits.zero, -1, None)
        _extend(fronts, tab, limits, start, -1, 0, d, 0)
    for i in range(1, n):
        previous, fronts = fronts, {}
        for (p, mask), front in previous.items():
            for label in front.labels:
                for d in range(k):
                    _extend(fronts, tab, limits, label, p, i, d, mask)
    finals = [lab for f in fronts.values() for lab in f.labels]
    if not finals:
        return None
    best: Label | None = min(finals, key=lambda lab: lab[0])
    value = best[0] if best is not None else math.inf
    order: list[int] = []
    while best is not None and best[2] >= 0:
        order.append(best[2])
        best = best[3]
    return order[::-1], value


def _extend(fronts: dict[tuple[int, int], _Front], tab: Tables, limits: Limits,
            label: Label, p: int, i: int, d: int, mask: int) -> None:
    if not limits.allowed[i, d]:
        return
    step = tab.in_obj[d] if i == 0 else tab.hop_obj[i, p, d]
    obj = label[0] + step + tab.node_obj[i, d]
    new_mask = mask
    if tab.loaded[d] and not mask >> d & 1:
        new_mask = mask | 1 << d
        obj += tab.queue_obj[d]
    if not math.isfinite(obj):
        return
    res = limits.step(label[1], tab, p, i, d, entering=new_mask != mask)
    if res is None:
        return
    fronts.setdefault((d, new_mask), _Front([])).add((obj, res, d, label))


# -- the trellis's step costs: cost.evaluate's terms, per layer and per hop ---------------------


@dataclass(frozen=True)
class LinkArrays:
    """Every directed link of `devices` as (k, k) arrays; a missing link has an infinite time."""

    fixed_s: np.ndarray
    bytes_per_s: np.ndarray
    power_w: np.ndarray
    price_usd_per_s: np.ndarray
    price_usd_per_byte: np.ndarray
    sender_usd_per_j: np.ndarray

    @classmethod
    def of(cls, problem: Problem, devices: tuple[str, ...]) -> LinkArrays:
        k = len(devices)
        arrays = {name: np.zeros((k, k)) for name in ("fixed", "bps", "power", "ps", "pb", "elec")}
        arrays["fixed"][:] = math.inf
        arrays["bps"][:] = 1.0
        for a, src in enumerate(devices):
            arrays["elec"][a, :] = problem.cluster.device(src).electricity_usd_per_kwh / terms.JOULES_PER_KWH
            for b, dst in enumerate(devices):
                link = problem.cluster.link(src, dst)
                if link is not None and a != b:
                    arrays["fixed"][a, b] = link.latency_s + link.overhead_s
                    arrays["bps"][a, b] = link.bytes_per_s
                    arrays["power"][a, b] = link.power_w
                    arrays["ps"][a, b] = link.price_usd_per_s
                    arrays["pb"][a, b] = link.price_usd_per_byte
        return cls(arrays["fixed"], arrays["bps"], arrays["power"], arrays["ps"], arrays["pb"], arrays["elec"])

    def metrics(self, size_bytes: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics of sending each size over every link, shape (len(size_bytes), k, k): the
        equations of `cost.terms` (transfer time, transmit energy, link cost), zero on the diagonal."""
        size = np.asarray(size_bytes, dtype=float)[:, None, None]
        with np.errstate(invalid="ignore"):
            time_s = self.fixed_s + size / self.bytes_per_s
            energy = np.where(time_s > 0, self.power_w * time_s, 0.0)
            cost = np.where(size != 0, self.price_usd_per_s * time_s + self.price_usd_per_byte * size, 0.0)
        cost = cost + self.sender_usd_per_j * energy
        origin = np.zeros_like(energy)
        origin[:, 0, :] = energy[:, 0, :]  # devices[0] is the origin, which pays for what it sends
        eye = np.eye(self.fixed_s.shape[0], dtype=bool)
        out = {"latency_s": time_s, "energy_j": energy, "origin_energy_j": origin, "cost_usd": cost}
        return {m: np.where(eye, 0.0, v) for m, v in out.items()}


def weigh(problem: Problem, metrics: dict[str, np.ndarray]) -> np.ndarray:
    """The objective sum(w * metric), skipping zero weights as evaluate does."""
    total = np.zeros_like(metrics["latency_s"])
    for m, w in problem.objective.weights.items():
        if w and m in metrics:
            total = total + w * metrics[m]
    return np.where(np.isinf(metrics["latency_s"]), math.inf, total)


@dataclass(frozen=True)
class Tables:
    """Step costs of the trellis. Devices: origin first, then servers in file order. `node_*`
    (N, k): layer i on device d, its return to the origin included when it is a graph output;
    `hop_*` (N, k, k): the value read by layer i sent from p to d; `in_*` (k,): the graph inputs
    layer 0 reads, sent from the origin; `queue_*` (k,): entering a loaded device."""

    devices: tuple[str, ...]
    node_obj: np.ndarray
    node_lat: np.ndarray
    node_oe: np.ndarray
    hop_obj: np.ndarray
    hop_lat: np.ndarray
    hop_oe: np.ndarray
    in_obj: np.ndarray
    in_lat: np.ndarray
    in_oe: np.ndarray
    loaded: np.ndarray
    queue_obj: np.ndarray
    queue_lat: np.ndarray
    param_bytes: np.ndarray
    live_bytes: np.ndarray
    memory_bytes: np.ndarray


def tables(problem: Problem) -> Tables:
    graph, cluster = problem.graph, problem.cluster
    devices = (problem.origin, *(d.name for d in cluster.servers))
    links = LinkArrays.of(problem, devices)
    times = np.array([[problem.node_time_s[d][n.id] for d in devices] for n in graph.nodes])
    dev = [cluster.device(d) for d in devices]
    power = np.array([d.busy_power_w for d in dev])
    energy = times * power
    node = {"latency_s": times, "energy_j": energy, "origin_energy_j": np.where(np.arange(len(dev)) == 0, energy, 0.0),
            "cost_usd": times * np.array([d.price_usd_per_s for d in dev])
            + energy * np.array([d.electricity_usd_per_kwh for d in dev]) / terms.JOULES_PER_KWH}
    outputs = set(graph.outputs)
    out_bytes = np.array([n.output_bytes if n.id in outputs else 0 for n in graph.nodes])
    is_out = np.array([n.id in outputs for n in graph.nodes])[:, None]
    # graph outputs on a server return from d to the origin (index 0)
    back = {m: np.where(is_out, v[:, :, 0], 0.0) for m, v in links.metrics(out_bytes).items()}
    node = {m: node[m] + back[m] for m in node}
    hop = links.metrics(np.array([0, *(n.output_bytes for n in graph.nodes[:-1])]))
    read = [graph.tensor_bytes(s) for s in dict.fromkeys(graph.nodes[0].inputs)]
    first = links.metrics(np.array(read, dtype=float))
    inp = {m: v[:, 0, :].sum(axis=0) for m, v in first.items()}
    queue = np.array([terms.queueing_time_s(d.background) for d in dev])
    w_lat = problem.objective.weights.get("latency_s", 0.0)
    live = [terms.working_set_bytes(graph, n) for n in graph.nodes]
    return Tables(
        devices, weigh(problem, node), node["latency_s"], node["origin_energy_j"],
        weigh(problem, hop), hop["latency_s"], hop["origin_energy_j"],
        weigh(problem, inp), inp["latency_s"], inp["origin_energy_j"],
        np.array([d.background is not None for d in dev]), queue * w_lat if w_lat else np.zeros_like(queue), queue,
        np.array([n.param_bytes for n in graph.nodes], dtype=float), np.array(live, dtype=float),
        np.array([d.memory_bytes for d in dev], dtype=float),
    )


@dataclass(frozen=True)
class Limits:
    """The constraints as label resources: [latency] if a deadline, [origin energy] if a budget,
    then (parameter bytes, largest working set) per device whose memory can bind."""

    allowed: np.ndarray
    deadline_s: float | None = None
    budget_j: float | None = None
    memory_devices: tuple[int, ...] = ()
    latency_floor_s: np.ndarray | None = None

    @classmethod
    def none(cls, tab: Tables) -> Limits:
        return cls(np.ones(tab.node_obj.shape, dtype=bool))

    @property
    def dims(self) -> int:
        return (self.deadline_s is not None) + (self.budget_j is not None) + 2 * len(self.memory_devices)

    @property
    def zero(self) -> tuple[float, ...]:
        return (0.0,) * self.dims

    def step(self, res: tuple[float, ...], tab: Tables, p: int, i: int, d: int, *,
             entering: bool) -> tuple[float, ...] | None:
        """The resources after layer i runs on d (previous layer on p), or None if over a limit."""
        out, j = list(res), 0
        if self.deadline_s is not None:
            hop = tab.in_lat[d] if i == 0 else tab.hop_lat[i, p, d]
            out[0] += hop + tab.node_lat[i, d] + (tab.queue_lat[d] if entering else 0.0)
            assert self.latency_floor_s is not None
            if out[0] + self.latency_floor_s[i + 1] > self.deadline_s:
                return None
            j = 1
        if self.budget_j is not None:
            out[j] += (tab.in_oe[d] if i == 0 else tab.hop_oe[i, p, d]) + tab.node_oe[i, d]
            if out[j] > self.budget_j:
                return None
            j += 1
        for b in self.memory_devices:
            if b == d:
                out[j] += tab.param_bytes[i]
                out[j + 1] = max(out[j + 1], tab.live_bytes[i])
                if out[j] + out[j + 1] > tab.memory_bytes[b]:
                    return None
            j += 2
        return tuple(out)


def limits_of(problem: Problem, tab: Tables) -> Limits:
    need = tab.param_bytes + tab.live_bytes
    allowed = need[:, None] <= tab.memory_bytes[None, :]
    binding = tuple(
        d for d in range(len(tab.devices)) if allowed[:, d].any()
        and tab.param_bytes[allowed[:, d]].sum() + tab.live_bytes[allowed[:, d]].max() > tab.memory_bytes[d]
    )
    c = problem.constraints
    floor = None
    if c.deadline_s is not None:
        fastest = np.where(allowed, tab.node_lat, math.inf).min(axis=1)
        floor = np.concatenate([np.cumsum(fastest[::-1])[::-1], [0.0]])
    return Limits(allowed, c.deadline_s, c.origin_energy_budget_j, binding, floor)

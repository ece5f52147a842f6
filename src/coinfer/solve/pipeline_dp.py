"""`pipeline-dp`: the throughput-optimal pipeline of contiguous stages, over any contiguous parts of a DAG.

Papers: PipeEdge (Hu et al., 2022; REFERENCE section 7) splits a model into stages over a chosen
subset and order of heterogeneous devices by dynamic programming over (layer prefix, set of devices
used), minimising the bottleneck stage time under per-device memory. Tarnawski et al. (NeurIPS
2020, msr-fiddle/dnn-partitioning) run the same recurrence over the DAG's ideals instead of one
order's prefixes, so a stage may be any contiguous part of the DAG. The activation bit-width
adaptation of PipeEdge is not part of this solver.

Model: a plan is a chain of cuts {} = I_0 < I_1 < ... < I_s = every node (`coinfer.solve.
cut_lattice`: the DAG's ideals for `pipeline-dp`, the prefixes of the graph's order for
`pipeline-dp-order`); stage t runs I_t - I_{t-1} on device d_t, every device used at most once.
Its bottleneck is what `cost.evaluate` calls `bottleneck_s`: the largest of
- each stage's compute time on its device, stretched by background load (`terms.effective_busy_s`),
- each hop's transfer time over its direct link (inf if there is none): the model input from the
  origin to the first stage (unless that is the origin), the values crossing each cut from d_{t-1}
  to d_t (node outputs in I_{t-1} read outside it), and the result from the last stage back.
For a chain every directed link then carries exactly one value, so this is evaluate's bottleneck
exactly; so it is for any DAG when communication is free. Otherwise, on a DAG, the DP assumes the
values crossing a cut are relayed stage to stage (the PipeEdge view), whereas evaluate sends a
value straight from its producer to every reader: there the DP is a heuristic, and the reported
objective is always evaluate's.

DP (ours, after PipeEdge and Tarnawski et al.): devices fall into classes of interchangeable ones
(`coinfer.solve.symmetry`; the origin is a class of its own), so a state counts the devices used
per class, c, rather than naming them: 6 identical servers make 7 counts, not 2^6 subsets. With q
the class of the last stage's device,
    B[I][c][q] = min_{I' < I, fits(q, I - I')} max(A[I'][c - e_q][q], busy_q(I - I')),
    A[I'][c'][q] = min_{p: c'_p >= 1} max(B[I'][c'][p], hop_{p->q}(I'))   (c' = 0: I' = {}, input hop),
and the answer is min over c, q of max(B[all][c][q], result hop q -> origin). fits(q, S): the
parameters of S plus its largest working set (`terms.working_set_bytes`) fit q's memory, evaluate's
memory need. The pairs (I', I) are listed sparsely (`CutLattice.stage_pairs`), and each state's
minimum over I' is one numpy pass over them (a segment minimum per I).

Search: first over the order's prefixes (`pipeline-dp-order`, N(N + 1)/2 pairs at most). Its
optimum U bounds the DAG's, so over the ideals only stages that some device can run within U are
paired: a stage outside that bound cannot be part of a pipeline better than U. Ideals are
enumerated up to `MAX_IDEALS` (the published solver's own limit); past it, nodes that cost nothing
on every device and touch one part of the graph only are glued to it (`cut_lattice.glued_units`)
and the glued graph's ideals are tried: that loses no optimum when links are free, the case where
this DP is exact on a DAG. Past the bound again, or past `MAX_STAGE_PAIRS` pairs, `pipeline-dp`
logs that it keeps the order's pipeline. The better of the two searches is returned.

Complexity: O(S P) time for S states (count vectors x classes) and P pairs, O(K P) memory for K
classes. The states are at most `MAX_STATES` (2^8 x 8: eight distinct devices), refused above.
reported_objective: evaluate's objective of the returned plan under `problem.objective` (for
objective "throughput" that is bottleneck_s).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from coinfer.cost import evaluate, terms
from coinfer.errors import InfeasibleError, UserInputError
from coinfer.graph import Graph
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.cut_lattice import CutLattice, StagePairs, ideal_lattice, prefix_lattice
from coinfer.solve.symmetry import interchangeable_groups

log = logging.getLogger(__name__)

MAX_IDEALS = 60_000  # as the published solver (msr-fiddle/dnn-partitioning's dp.cpp)
# A pair costs two indices and a time per class of devices: 20 million take about 1 GB with 2 classes.
MAX_STAGE_PAIRS = 20_000_000
MAX_STATES = 2 ** 8 * 8
# Pairs whose largest working set is worked out at once (pairs x nodes booleans).
PAIRS_PER_BLOCK = 1 << 15


@dataclass(frozen=True)
class Found:
    """A search's pipeline: (class, (cut a, cut b)) per stage in order, and the DP's objective."""

    lattice: CutLattice
    stages: list[tuple[int, tuple[int, int]]]
    value_s: float


def pipeline_dp(problem: Problem, *, say_fallback: bool = True) -> Plan:
    """The pipeline of least bottleneck over contiguous parts of the DAG; see the module docstring.
    `say_fallback=False` (for a caller that only wants a good pipeline) logs the fallback at debug."""
    classes = _classes(problem)
    ordered = _search_every_pair(problem, prefix_lattice(problem.graph), classes, "pipeline-dp")
    found, why = _over_ideals(problem, classes, ordered.value_s)
    if found is None:  # why is empty for a chain, whose only ideals are the order's prefixes
        if why:
            (log.warning if say_fallback else log.debug)(
                "pipeline-dp: %s; keeping the best pipeline over the prefixes of the node order "
                "(pipeline-dp-order), exact only along that order", why)
        return _plan(problem, classes, ordered, "pipeline-dp")
    plans = [_plan(problem, classes, f, "pipeline-dp") for f in (found, ordered) if math.isfinite(f.value_s)]
    if not plans:
        return _plan(problem, classes, found, "pipeline-dp")  # raises: nothing fits
    return min(plans, key=lambda plan: math.inf if plan.reported_objective is None else plan.reported_objective)


def pipeline_dp_order(problem: Problem) -> Plan:
    """PipeEdge's search: stages are ranges of the graph's one topological order."""
    classes = _classes(problem)
    found = _search_every_pair(problem, prefix_lattice(problem.graph), classes, "pipeline-dp-order")
    return _plan(problem, classes, found, "pipeline-dp-order")


def pipeline_dp_over(problem: Problem, lattice: CutLattice) -> Plan:
    """The best pipeline whose cuts are those of `lattice` (every pair of them searched)."""
    classes = _classes(problem)
    return _plan(problem, classes, _search_every_pair(problem, lattice, classes, "pipeline-dp"), "pipeline-dp")


def _search_every_pair(problem: Problem, lattice: CutLattice, classes: list[DeviceClass], solver: str) -> Found:
    """`_search` with no bound on a stage; refused, naming the solver, past MAX_STAGE_PAIRS pairs."""
    found = _search(problem, lattice, classes, math.inf)
    if found is None:
        raise UserInputError(
            f"{solver} would pair more than {MAX_STAGE_PAIRS:,} stages of the {lattice.size:,} cuts of "
            f"{problem.graph.name or 'the graph'} ({len(problem.graph.nodes)} nodes); capture the model at "
            "block granularity or use hpa or genetic")
    return found


def _over_ideals(problem: Problem, classes: list[DeviceClass], bound_s: float) -> tuple[Found | None, str]:
    """The DP over the DAG's ideals (or its glued form's), its stages bounded by `bound_s`; else why not."""
    graph = problem.graph
    name = graph.name or "the graph"
    lattice = ideal_lattice(graph, MAX_IDEALS)
    if lattice is None:
        free = glueable_nodes(problem)
        lattice = ideal_lattice(graph, MAX_IDEALS, free) if any(free) else None
        if lattice is None:
            glued = " even with its free nodes glued to their neighbours" if any(free) else ""
            return None, f"{name} has more than {MAX_IDEALS:,} ideals (contiguous cuts of its DAG){glued}"
        log.info("pipeline-dp: %s has more than %d ideals; searching the %d of its glued form",
                 name, MAX_IDEALS, lattice.size)
    if not lattice.glued and lattice.size == len(graph.nodes) + 1:
        return None, ""  # a chain: its ideals are the prefixes, which the order's search covered
    found = _search(problem, lattice, classes, bound_s)
    if found is None:
        return None, (f"{name}'s {lattice.size:,} ideals pair into more than {MAX_STAGE_PAIRS:,} stages that could "
                      "beat the order's pipeline")
    return found, ""


def glueable_nodes(problem: Problem) -> list[bool]:
    """Per node, whether it may be glued to its one neighbouring part at no loss when links are free: it
    takes no time on any device, and it changes no stage's memory: it holds no parameters and its working
    set is no larger than any neighbour's (so no stage's peak grows), unless memory cannot bind at all
    (every device holds the whole graph's parameters and its largest working set, as on GNMT's layer graph)."""
    graph = problem.graph
    live = [terms.working_set_bytes(graph, v) for v in graph.nodes]
    whole = sum(v.param_bytes for v in graph.nodes) + max(live, default=0)
    unbound = all(whole <= d.memory_bytes for d in problem.cluster.devices)
    out = []
    for v, node in enumerate(graph.nodes):
        near = [graph.index[x] for x in (*node.inputs, *graph.consumers[node.id]) if x in graph.index]
        costless = all(problem.node_time_s[d][node.id] == 0 for d in problem.node_time_s)
        out.append(costless and (unbound or (node.param_bytes == 0 and all(live[v] <= live[u] for u in near))))
    return out


def _plan(problem: Problem, classes: list[DeviceClass], found: Found, name: str) -> Plan:
    if not math.isfinite(found.value_s):
        raise InfeasibleError(
            f"{name} found no pipeline whose stages fit their devices' memory and whose hops have "
            "links; give devices more memory_bytes or add links")
    graph = problem.graph
    placement: dict[str, str] = {}
    used: dict[int, int] = {}
    for q, (a, b) in found.stages:
        device = classes[q].devices[used.get(q, 0)]
        used[q] = used.get(q, 0) + 1
        for v in found.lattice.stage_nodes(a, b):
            placement[graph.nodes[v].id] = device
    plan = Plan(graph, placement, name)
    return Plan(plan.graph, plan.placement, name, evaluate(plan, problem).objective_value)


@dataclass(frozen=True)
class DeviceClass:
    devices: tuple[str, ...]  # interchangeable devices, used in this order


def _classes(problem: Problem) -> list[DeviceClass]:
    grouped = {name: group for group in interchangeable_groups(problem) for name in group}
    classes = [DeviceClass((problem.origin,))]
    for server in problem.cluster.servers:
        group = grouped.get(server.name, [server.name])
        if group[0] == server.name:
            classes.append(DeviceClass(tuple(group)))
    return classes


def dp_state_count(problem: Problem) -> int:
    """The DP's states for this cluster: device-count vectors x classes (module docstring)."""
    classes = _classes(problem)
    return math.prod(len(c.devices) + 1 for c in classes) * len(classes)


def _search(problem: Problem, lattice: CutLattice, classes: list[DeviceClass], bound_s: float) -> Found | None:
    """The DP of the module docstring over `lattice`, pairing only stages some class runs within `bound_s`;
    None when that leaves more than MAX_STAGE_PAIRS pairs. An infeasible problem has value inf."""
    k, m = len(classes), lattice.size
    counts = _count_vectors(classes)
    if len(counts) * k > MAX_STATES:
        raise UserInputError(
            f"pipeline-dp would search {len(counts) * k} states (device counts per class x classes), more than "
            f"{MAX_STATES}: the cluster has {sum(len(c.devices) for c in classes)} devices in {k} classes of "
            "interchangeable ones. Drop devices from the cluster file or use hpa or genetic")
    node_s = np.array([[_effective_s(problem, c.devices[0], v.id) for v in problem.graph.nodes] for c in classes])
    pairs = lattice.stage_pairs(node_s.min(axis=0), bound_s, MAX_STAGE_PAIRS)
    if pairs is None:
        return None
    index = {c: i for i, c in enumerate(counts)}
    busy = [_stage_busy(problem, lattice, pairs, c.devices[0], node_s[q]) for q, c in enumerate(classes)]
    hop, in_hop, out_hop = _hops(problem, lattice, classes)
    best = np.full((len(counts), k, m), math.inf)

    def before(rest: tuple[int, ...], q: int) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
        """A[.][rest][q] per cut, and the class p of the stage before it."""
        if not any(rest):
            first = np.full(m, math.inf)
            first[0] = in_hop[q]
            return first, np.zeros(m, dtype=np.intp)
        options = np.maximum(best[index[rest]], hop[:, q, :])  # (p, a)
        options[[p for p in range(k) if not rest[p]]] = math.inf
        return options.min(axis=0), options.argmin(axis=0)

    for c in counts[1:]:  # by number of devices used, so c - e_q is done before c
        for q in (q for q in range(k) if c[q]):
            entry, _ = before(_one_less(c, q), q)
            best[index[c], q] = pairs.segment_min(np.maximum(entry[pairs.a], busy[q]), m)
    full = m - 1
    final = np.maximum(best[:, :, full], out_hop[None, :])
    last_c, last_q = (int(x) for x in np.unravel_index(int(final.argmin()), final.shape))
    value = float(final[last_c, last_q])
    if not math.isfinite(value):
        return Found(lattice, [], math.inf)
    stages: list[tuple[int, tuple[int, int]]] = []
    b, c, q = full, counts[last_c], last_q
    while any(c):  # walk back: the pair ending at b that gave best[c][q][b], and the class before it
        rest = _one_less(c, q)
        entry, came_from = before(rest, q)
        span = pairs.segment(b)
        totals = np.maximum(entry[pairs.a[span]], busy[q][span])
        a = int(pairs.a[span][int(totals.argmin())])
        stages.append((q, (a, b)))
        b, c, q = a, rest, int(came_from[a])
    return Found(lattice, stages[::-1], value)


def _one_less(counts: tuple[int, ...], q: int) -> tuple[int, ...]:
    return (*counts[:q], counts[q] - 1, *counts[q + 1:])


def _count_vectors(classes: list[DeviceClass]) -> list[tuple[int, ...]]:
    """Every vector of devices used per class, by total (the empty one first)."""
    return sorted(itertools.product(*(range(len(c.devices) + 1) for c in classes)), key=lambda c: (sum(c), c))


def _effective_s(problem: Problem, device: str, node_id: str) -> float:
    """A node's time on `device`, stretched by its background load (`terms.effective_busy_s`)."""
    return terms.effective_busy_s(problem.cluster.device(device), problem.node_time_s[device][node_id])


def _stage_busy(problem: Problem, lattice: CutLattice, pairs: StagePairs, device: str,
                node_s: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per pair, the stage's effective busy time on `device`; inf where it does not fit the device's memory
    (parameters + largest working set)."""
    graph = problem.graph
    busy = lattice.stage_sums(node_s, pairs)
    memory = problem.cluster.device(device).memory_bytes
    if math.isfinite(memory):
        params = lattice.stage_sums(np.array([v.param_bytes for v in graph.nodes], dtype=float), pairs)
        busy[~_fits(graph, lattice, pairs, params, memory)] = math.inf
    return busy


def _fits(graph: Graph, lattice: CutLattice, pairs: StagePairs, stage_params: NDArray[np.float64],
          memory_bytes: float) -> NDArray[np.bool_]:
    """Per pair: the stage's parameters plus its largest working set fit `memory_bytes`."""
    live = np.array([terms.working_set_bytes(graph, v) for v in graph.nodes], dtype=float)
    n = len(graph.nodes)
    if n == 0:
        return np.asarray(stage_params <= memory_bytes)
    if lattice.is_prefixes:  # stage (a, b) is nodes a..b-1: its peak is a range maximum (a sparse table)
        return np.asarray(stage_params + _range_max(live, pairs.a, pairs.b) <= memory_bytes)
    # Bounds first: the stage's peak is at most the largest working set anywhere in b, at least 0.
    masks = lattice.masks
    peak_in = np.where(masks, live[None, :], 0.0).max(axis=1)
    fits: NDArray[np.bool_] = np.asarray(stage_params + peak_in[pairs.b] <= memory_bytes)
    (open_pairs,) = np.nonzero(~fits & (stage_params <= memory_bytes))
    for lo in range(0, len(open_pairs), PAIRS_PER_BLOCK):
        chosen = open_pairs[lo:lo + PAIRS_PER_BLOCK]
        stage = masks[pairs.b[chosen]] & ~masks[pairs.a[chosen]]
        peak = np.where(stage, live[None, :], 0.0).max(axis=1)
        fits[chosen] = stage_params[chosen] + peak <= memory_bytes
    return fits


def _range_max(values: NDArray[np.float64], starts: NDArray[np.intp], stops: NDArray[np.intp]) -> NDArray[np.float64]:
    """max(values[s:t]) for each (s, t), t > s, from a sparse table of maxima over power-of-two spans."""
    table = [values]
    while 2 ** len(table) <= len(values):
        half = 2 ** (len(table) - 1)
        table.append(np.maximum(table[-1][:-half], table[-1][half:]))
    level = np.floor(np.log2(np.maximum(stops - starts, 1))).astype(np.intp)
    out = np.empty(len(starts))
    for j in np.unique(level):
        chosen = level == j
        span = 2 ** int(j)
        out[chosen] = np.maximum(table[j][starts[chosen]], table[j][stops[chosen] - span])
    return out


def _hops(problem: Problem, lattice: CutLattice,
          classes: list[DeviceClass]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """hop[p, q, a]: time to send what crosses cut a from class p to class q (relayed, for a DAG);
    in_hop[q]: the inputs from the origin to a first stage on q; out_hop[q]: results to the origin."""
    graph, origin = problem.graph, problem.origin
    k = len(classes)
    crossing = lattice.crossing_bytes(graph)
    read = [graph.tensor_bytes(i.name) for i in graph.inputs if graph.consumers[i.name]]
    hop = np.zeros((k, k, lattice.size))
    in_hop, out_hop = np.zeros(k), np.zeros(k)
    for p, source in enumerate(classes):
        for q, target in enumerate(classes):
            src = source.devices[0]
            dst = target.devices[0] if p != q else (target.devices[1] if len(target.devices) > 1 else None)
            if dst is None:
                continue  # a class of one device never follows itself
            link = problem.cluster.link(src, dst)
            hop[p, q] = [terms.transfer_time_s(link, float(x)) if x else 0.0 for x in crossing]
        first = source.devices[0]
        if first != origin:
            in_hop[p] = sum(terms.transfer_time_s(problem.cluster.link(origin, first), size) for size in read)
            back = problem.cluster.link(first, origin)
            out_hop[p] = sum(terms.transfer_time_s(back, graph.tensor_bytes(o)) for o in graph.outputs)
    return hop, in_hop, out_hop

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
memory need. Each state's minimum over I' is one numpy operation on an M x M matrix (M cuts); the
largest working set of every pair is exact for prefixes (a running maximum) and, over ideals,
worked out only for pairs that the cheap bounds leave undecided.

Complexity: O(S M^2) time and O(K M^2) memory for S states (count vectors x classes) and K classes.
Ideals are enumerated up to `MAX_IDEALS`; past it `pipeline-dp` logs so and searches the order's
prefixes instead (N + 1 of them). The states are at most `MAX_STATES` (2^8 x 8: eight distinct
devices), refused above.
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
from coinfer.solve.cut_lattice import CutLattice, ideal_lattice, prefix_lattice
from coinfer.solve.symmetry import interchangeable_groups

log = logging.getLogger(__name__)

# M^2 float64 per device class and one per state: 3,000 ideals take 72 MB a matrix.
MAX_IDEALS = 3000
MAX_STATES = 2 ** 8 * 8
# Pairs of cuts whose largest working set is worked out at once (pairs x nodes booleans).
PAIRS_PER_BLOCK = 1 << 15


def pipeline_dp(problem: Problem, *, say_fallback: bool = True) -> Plan:
    """The pipeline of least bottleneck over contiguous parts of the DAG; see the module docstring.
    `say_fallback=False` (for a caller that only wants a good pipeline) skips the warning."""
    lattice = ideal_lattice(problem.graph, MAX_IDEALS)
    if lattice is None:
        say = log.warning if say_fallback else log.debug
        say("pipeline-dp: %s has more than %d ideals (contiguous cuts of its DAG); searching the "
            "prefixes of its node order instead (pipeline-dp-order), exact only along that order",
            problem.graph.name or "the graph", MAX_IDEALS)
        lattice = prefix_lattice(problem.graph)
    return _solve(problem, lattice, "pipeline-dp")


def pipeline_dp_order(problem: Problem) -> Plan:
    """PipeEdge's search: stages are ranges of the graph's one topological order."""
    return _solve(problem, prefix_lattice(problem.graph), "pipeline-dp-order")


def _solve(problem: Problem, lattice: CutLattice, name: str) -> Plan:
    classes = _classes(problem)
    stages = _search(problem, lattice, classes)
    graph = problem.graph
    placement: dict[str, str] = {}
    used: dict[int, int] = {}
    for q, (a, b) in stages:
        device = classes[q].devices[used.get(q, 0)]
        used[q] = used.get(q, 0) + 1
        for v in lattice.stage_nodes(a, b):
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


def _search(problem: Problem, lattice: CutLattice, classes: list[DeviceClass]) -> list[tuple[int, tuple[int, int]]]:
    """(class, (cut a, cut b)) for each stage in order: the stage runs masks[b] - masks[a]."""
    k, m = len(classes), lattice.size
    counts = _count_vectors(classes)
    if len(counts) * k > MAX_STATES:
        raise UserInputError(
            f"pipeline-dp would search {len(counts) * k} states (device counts per class x classes), more than "
            f"{MAX_STATES}: the cluster has {sum(len(c.devices) for c in classes)} devices in {k} classes of "
            "interchangeable ones. Drop devices from the cluster file or use hpa or genetic")
    index = {c: i for i, c in enumerate(counts)}
    busy = [_busy_matrix(problem, lattice, c.devices[0]) for c in classes]
    hop, in_hop, out_hop = _hops(problem, lattice, classes)
    full = m - 1
    best = np.full((len(counts), k, m), math.inf)
    start = np.zeros((len(counts), k, m), dtype=np.intp)  # the cut a of the last stage
    prev = np.zeros((len(counts), k, m), dtype=np.intp)  # the class p before it, per cut a
    for c in counts[1:]:  # by number of devices used, so c - e_q is done before c
        for q in (q for q in range(k) if c[q]):
            rest = _one_less(c, q)
            if not any(rest):
                before = np.full(m, math.inf)
                before[0] = in_hop[q]
            else:
                r = index[rest]
                options = np.maximum(best[r], hop[:, q, :])  # (p, a)
                options[[p for p in range(k) if not rest[p]]] = math.inf
                prev[index[c], q] = options.argmin(axis=0)
                before = options.min(axis=0)
            total = np.maximum(before[:, None], busy[q])  # (a, b)
            start[index[c], q] = total.argmin(axis=0)
            best[index[c], q] = total.min(axis=0)
    final = np.maximum(best[:, :, full], out_hop[None, :])
    last_c, last_q = (int(x) for x in np.unravel_index(int(final.argmin()), final.shape))
    if not math.isfinite(final[last_c, last_q]):
        raise InfeasibleError(
            "pipeline-dp found no pipeline whose stages fit their devices' memory and whose hops have "
            "links; give devices more memory_bytes or add links")
    stages: list[tuple[int, tuple[int, int]]] = []
    b, c, q = full, counts[last_c], last_q
    while any(c):
        a = int(start[index[c], q, b])
        stages.append((q, (a, b)))
        p = int(prev[index[c], q, a])
        c = _one_less(c, q)
        b, q = a, p
    return stages[::-1]


def _one_less(counts: tuple[int, ...], q: int) -> tuple[int, ...]:
    return (*counts[:q], counts[q] - 1, *counts[q + 1:])


def _count_vectors(classes: list[DeviceClass]) -> list[tuple[int, ...]]:
    """Every vector of devices used per class, by total (the empty one first)."""
    return sorted(itertools.product(*(range(len(c.devices) + 1) for c in classes)), key=lambda c: (sum(c), c))


def _busy_matrix(problem: Problem, lattice: CutLattice, device: str) -> NDArray[np.float64]:
    """busy[a, b]: effective busy time on `device` of the stage masks[b] - masks[a]; inf if a is not
    below b or the stage does not fit the device's memory (parameters + largest working set)."""
    graph = problem.graph
    dev = problem.cluster.device(device)
    times = lattice.sums(np.array([problem.node_time_s[device][v.id] for v in graph.nodes], dtype=float))
    params = lattice.sums(np.array([v.param_bytes for v in graph.nodes], dtype=float))
    span = times[None, :] - times[:, None]
    if dev.background is not None:
        free = 1.0 - dev.background.utilisation
        span = span / free if free > 0 else np.full_like(span, math.inf)
    ok = lattice.below.copy()
    if math.isfinite(dev.memory_bytes):
        ok &= _fits(graph, lattice, params[None, :] - params[:, None], dev.memory_bytes)
    return np.where(ok, span, math.inf)


def _fits(graph: Graph, lattice: CutLattice, stage_params: NDArray[np.float64],
          memory_bytes: float) -> NDArray[np.bool_]:
    """fits[a, b]: the stage's parameters plus its largest working set fit `memory_bytes`."""
    live = np.array([terms.working_set_bytes(graph, v) for v in graph.nodes], dtype=float)
    n = len(graph.nodes)
    if lattice.is_prefixes:  # stage (i, j) is nodes i..j-1: its peak is a running maximum
        upper = np.triu(np.ones((n, n), dtype=bool))
        peak_ij = np.maximum.accumulate(np.where(upper, live[None, :], 0.0), axis=1)  # peak over [i, j-1]
        peak = np.zeros((n + 1, n + 1))
        peak[:n, 1:] = peak_ij
        return lattice.below & (stage_params + peak <= memory_bytes)
    # Bounds first: the stage's peak is at most the largest working set anywhere in b, at least 0.
    masks = lattice.masks
    peak_in = np.where(masks, live[None, :], 0.0).max(axis=1) if n else np.zeros(lattice.size)
    fits = lattice.below & (stage_params + peak_in[None, :] <= memory_bytes)
    open_a, open_b = np.nonzero(lattice.below & ~fits & (stage_params <= memory_bytes))
    for lo in range(0, len(open_a), PAIRS_PER_BLOCK):
        a, b = open_a[lo:lo + PAIRS_PER_BLOCK], open_b[lo:lo + PAIRS_PER_BLOCK]
        stage = masks[b] & ~masks[a]
        peak = np.where(stage, live[None, :], 0.0).max(axis=1)
        fits[a, b] = stage_params[a, b] + peak <= memory_bytes
    return fits


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

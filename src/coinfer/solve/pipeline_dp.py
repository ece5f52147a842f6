"""`pipeline-dp`: the throughput-optimal pipeline of contiguous stages (PipeEdge, 2022).

Paper: PipeEdge (Hu et al., 2022; REFERENCE section 7) splits a model into contiguous stages over a
chosen subset and order of heterogeneous devices by dynamic programming over (layer prefix, set of
devices used), minimising the bottleneck stage time (compute or transfer) under per-device memory.
The activation bit-width adaptation of the paper is not part of this solver.

Model: layers are the graph's nodes in topological order, 0..N-1. A plan is a sequence of stages,
stage s covering the half-open range [b_{s-1}, b_s) on device d_s, every device used at most once.
Its bottleneck is what `cost.evaluate` calls `bottleneck_s`: the largest of
- each stage's compute time on its device, stretched by background load (`terms.effective_busy_s`),
- each hop's transfer time over its direct link (inf if there is none): the model input from the
  origin to the first stage (unless that is the origin), the values crossing each boundary from
  d_{s-1} to d_s, and the result from the last stage back to the origin.
For a chain every directed link then carries exactly one value, so this is evaluate's bottleneck
exactly. For a DAG the DP assumes the values crossing a boundary are relayed stage to stage (the
PipeEdge view), whereas evaluate sends a value straight from its producer to every reader: there
the DP is a heuristic, and the reported objective is always evaluate's.

DP (ours, after PipeEdge): B[j][U][d] = the least bottleneck of a pipeline covering layers [0, j)
with devices U whose last stage is on d:
    B[j][U][d] = min_{i<j, fits(d, i, j)} max(A[i][U-d][d], busy_d(i, j)),
    A[i][U'][d] = min_{p in U'} max(B[i][U'][p], hop_{p->d}(i))   (U' empty: i = 0, input hop),
and the answer is min over U, d of max(B[N][U][d], result hop d -> origin). fits(d, i, j): the
parameters of [i, j) plus its largest working set fit d's memory (evaluate's memory need).
The inner min over i is done for all j at once with numpy on an (N+1) x (N+1) matrix.

Complexity: O(2^k k (k N + N^2)) time for k devices, N layers; k <= 8 (refused above).
reported_objective: evaluate's objective of the returned plan under `problem.objective` (for
objective "throughput" that is bottleneck_s).
"""

from __future__ import annotations

import math

import numpy as np

from coinfer.cost import evaluate, terms
from coinfer.errors import InfeasibleError, UserInputError
from coinfer.plan import Plan
from coinfer.problem import Problem

MAX_DEVICES = 8


def pipeline_dp(problem: Problem) -> Plan:
    """The pipeline of least bottleneck; see the module docstring."""
    devices = (problem.origin, *(d.name for d in problem.cluster.servers))
    if len(devices) > MAX_DEVICES:
        raise UserInputError(
            f"pipeline-dp searches every subset and order of devices (2^k states) and takes at most "
            f"{MAX_DEVICES} devices; the cluster has {len(devices)}. Drop devices from the cluster file "
            f"or use hpa or genetic"
        )
    stages = _search(problem, devices)
    placement = {problem.graph.nodes[n].id: devices[d] for d, (i, j) in stages for n in range(i, j)}
    plan = Plan(problem.graph, placement, "pipeline-dp")
    return Plan(plan.graph, plan.placement, "pipeline-dp", evaluate(plan, problem).objective_value)


def _search(problem: Problem, devices: tuple[str, ...]) -> list[tuple[int, tuple[int, int]]]:
    """(device index, [i, j)) for each stage, in order."""
    k, n = len(devices), len(problem.graph.nodes)
    busy = [_busy_matrix(problem, name) for name in devices]
    hop, in_hop, out_hop = _hops(problem, devices)
    best = np.full((1 << k, k, n + 1), math.inf)
    start = np.zeros((1 << k, k, n + 1), dtype=np.intp)  # i of the last stage
    prev = np.zeros((1 << k, k, n + 1), dtype=np.intp)  # device p before it, per i
    for used in range(1, 1 << k):
        for d in (d for d in range(k) if used >> d & 1):
            rest = used ^ (1 << d)
            if rest == 0:
                before = np.full(n + 1, math.inf)
                before[0] = in_hop[d]
            else:
                options = np.maximum(best[rest], hop[:, d, :])  # (p, i)
                options[[p for p in range(k) if not rest >> p & 1]] = math.inf
                prev[used, d] = options.argmin(axis=0)
                before = options.min(axis=0)
            total = np.maximum(before[:, None], busy[d])  # (i, j)
            start[used, d] = total.argmin(axis=0)
            best[used, d] = total.min(axis=0)
    final = np.maximum(best[:, :, n], out_hop[None, :])
    last_used, last = (int(x) for x in np.unravel_index(int(final.argmin()), final.shape))
    if not math.isfinite(final[last_used, last]):
        raise InfeasibleError(
            "pipeline-dp found no pipeline whose stages fit their devices' memory and whose hops have "
            "links; give devices more memory_bytes or add links"
        )
    stages: list[tuple[int, tuple[int, int]]] = []
    j, u, dev = n, last_used, last
    while u:
        i = int(start[u, dev, j])
        stages.append((dev, (i, j)))
        u, dev, j = u ^ (1 << dev), int(prev[u, dev, i]), i
    return stages[::-1]


def _busy_matrix(problem: Problem, device: str) -> np.ndarray:
    """busy[i, j]: effective busy time of layers [i, j) on `device`; inf if i >= j or they do not
    fit its memory (parameters + largest working set, as evaluate computes the need)."""
    graph = problem.graph
    n = len(graph.nodes)
    dev = problem.cluster.device(device)
    times = np.concatenate([[0.0], np.cumsum([problem.node_time_s[device][v.id] for v in graph.nodes])])
    params = np.concatenate([[0.0], np.cumsum([v.param_bytes for v in graph.nodes])])
    live = np.array([v.output_bytes + sum(graph.tensor_bytes(s) for s in dict.fromkeys(v.inputs))
                     for v in graph.nodes], dtype=float)
    upper = np.triu(np.ones((n, n), dtype=bool))
    peak = np.maximum.accumulate(np.where(upper, live[None, :], 0.0), axis=1)  # peak[i, j-1]
    need = np.full((n + 1, n + 1), math.inf)
    need[:n, 1:] = np.where(upper, params[None, 1:] - params[:n, None] + peak, math.inf)
    busy = np.full((n + 1, n + 1), math.inf)
    span = times[None, :] - times[:, None]
    ok = np.isfinite(need) & (need <= dev.memory_bytes)
    busy[ok] = [terms.effective_busy_s(dev, float(s)) for s in span[ok]] if dev.background else span[ok]
    return busy


def _hops(problem: Problem, devices: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hop[p, d, i]: time to send what crosses boundary i from p to d (relayed, for a DAG);
    in_hop[d]: the inputs from the origin to a first stage on d; out_hop[d]: results to the origin."""
    graph, origin = problem.graph, problem.origin
    n, k = len(graph.nodes), len(devices)
    crossing = np.zeros(n + 1)
    for v in graph.nodes:
        readers = [graph.index[c] for c in graph.consumers[v.id]]
        if readers:
            crossing[graph.index[v.id] + 1: max(readers) + 1] += v.output_bytes
    read = [graph.tensor_bytes(i.name) for i in graph.inputs if graph.consumers[i.name]]
    hop = np.zeros((k, k, n + 1))
    in_hop, out_hop = np.zeros(k), np.zeros(k)
    for a, src in enumerate(devices):
        for b, dst in enumerate(devices):
            if a != b:
                link = problem.cluster.link(src, dst)
                hop[a, b] = [terms.transfer_time_s(link, float(x)) if x else 0.0 for x in crossing]
        if src != origin:
            ahead = problem.cluster.link(origin, src)
            in_hop[a] = sum(terms.transfer_time_s(ahead, size) for size in read)
            back = problem.cluster.link(src, origin)
            out_hop[a] = sum(terms.transfer_time_s(back, graph.tensor_bytes(o)) for o in graph.outputs)
    return hop, in_hop, out_hop

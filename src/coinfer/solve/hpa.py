"""`hpa`: a fast device-edge-cloud layer partitioner with partial re-adjustment, after D3's HPA.

Paper: D3 (Zhang et al., arXiv 2101.05952; REFERENCE section 5) names a heuristic "horizontal
partition algorithm" that splits a DNN into device, edge and cloud parts and, at run time, adjusts
the partitions *partially* from measured node times and bandwidths instead of re-partitioning.
Its details are not public: this design is ours.

Model: nodes in topological order 0..N-1; a *path* is a sequence of devices, the origin first and
then up to two servers in tier order (end, edge, cloud; both orders within one tier); a plan is a
path plus boundaries 0 <= b_1 <= ... <= b_{m-1} <= N, stage s covering [b_{s-1}, b_s) (a stage
may be empty). Plans are scored by `BatchCost`, which is `cost.evaluate` vectorised over many
placements at once (every objective and constraint; feasible plans first). For a DAG every value
goes straight from its producer to each device reading it, exactly as evaluate counts it.

- `hpa(problem)`: for each path, a greedy start, the best single cut between any two of its stages
  (the Neurosurgeon scan over the topological order, one batch of (N+1) x pairs plans), then
  steepest descent moving one boundary at a time by up to `WINDOW` nodes while the objective
  improves. The best path wins.
- `hpa_adjust(problem, current)`: the partial adjustment: the same descent seeded by the current
  plan's stages (an empty origin stage is put first and servers it does not use are appended as
  empty stages, so work can move onto them again), for a problem whose node times or links
  changed. A plan that is still a local optimum comes back unchanged.

Complexity: a batch of P plans costs O(P (N + E) k) numpy work (E graph edges, k devices); hpa
scores O(paths (N + iterations WINDOW)) plans, hpa_adjust O(iterations WINDOW m). Not exact: the
search is confined to three contiguous stages per path and stops at a local optimum.
"""

from __future__ import annotations

import math

import numpy as np

from coinfer.cost import terms
from coinfer.plan import Plan
from coinfer.problem import Problem
from coinfer.solve.chain_dp import LinkArrays
from coinfer.solve.waiting import fold_waiting_energy

WINDOW = 8
SCORE_CHUNK_ELEMENTS = 1 << 22  # placements x nodes x devices scored at once (a few 32 MB arrays)
TIER_RANK = {"end": 0, "edge": 1, "cloud": 2}
Path = tuple[int, ...]


def hpa(problem: Problem) -> Plan:
    """Greedy cut per path, then boundary descent; see the module docstring."""
    batch = BatchCost(problem)
    best: tuple[tuple[bool, float], Path, np.ndarray] | None = None
    for path in _paths(problem, batch):
        bounds = _greedy(batch, path)
        key, bounds = _descend(batch, path, bounds)
        if best is None or key < best[0]:
            best = (key, path, bounds)
    assert best is not None  # the origin alone is always a path
    return _plan(problem, batch, best[1], best[2], best[0][1])


def hpa_adjust(problem: Problem, current: Plan) -> Plan:
    """Move only the boundaries of `current` that must move for `problem`'s new times and links."""
    batch = BatchCost(fold_waiting_energy(problem, "hpa's adjustment"))
    where = {name: i for i, name in enumerate(batch.devices)}
    stages = current.stages
    path: Path = tuple(where[s.device] for s in stages)
    ends = np.cumsum([len(s.node_ids) for s in stages])[:-1]
    if path[0] != 0:  # an empty first stage on the origin, so work can come back to it
        path, ends = (0, *path), np.concatenate([[0], ends])
    spare = [d for d in _servers_by_tier(problem, batch) if d not in path]
    path = path + tuple(spare)
    bounds = np.concatenate([ends, np.full(len(spare), len(problem.graph.nodes))]).astype(np.intp)
    key, bounds = _descend(batch, path, bounds)
    return _plan(problem, batch, path, bounds, key[1])


def _servers_by_tier(problem: Problem, batch: BatchCost) -> list[int]:
    servers = [i for i in range(1, len(batch.devices))]
    return sorted(servers, key=lambda i: TIER_RANK[problem.cluster.device(batch.devices[i]).tier])


def _paths(problem: Problem, batch: BatchCost) -> list[Path]:
    """The origin, then one or two servers in non-decreasing tier order."""
    servers = _servers_by_tier(problem, batch)
    rank = {i: TIER_RANK[problem.cluster.device(batch.devices[i]).tier] for i in servers}
    paths: list[Path] = [(0,)] if not servers else []
    for a in servers:
        seconds = [b for b in servers if b != a and rank[b] >= rank[a]]
        paths.extend((0, a, b) for b in seconds)
        if not seconds:
            paths.append((0, a))
    return paths


def _score(batch: BatchCost, path: Path, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`batch.score` of the placements of boundary rows `bounds`, a chunk of rows at a time: scoring
    holds a few (P, N, k) arrays, so the N + 1 cuts of a 10,000-node graph at once would need
    gigabytes."""
    rows = max(1, SCORE_CHUNK_ELEMENTS // max(1, batch.n * len(batch.devices)))
    parts = [batch.score(_assign(path, bounds[i:i + rows], batch.n)) for i in range(0, len(bounds), rows)]
    return np.concatenate([v for v, _ in parts]), np.concatenate([b for _, b in parts])


def _assign(path: Path, bounds: np.ndarray, n: int) -> np.ndarray:
    """Placements (P, N) of device indices for boundary rows `bounds` (P, m-1)."""
    stage = (np.arange(n)[None, None, :] >= bounds[:, :, None]).sum(axis=1)
    out: np.ndarray = np.asarray(path, dtype=np.intp)[stage]
    return out


def _greedy(batch: BatchCost, path: Path) -> np.ndarray:
    """The best single cut c between stages a < b of the path: [0, c) on a, [c, N) on b."""
    n, m = batch.n, len(path)
    if m == 1:
        return np.zeros(0, dtype=np.intp)
    rows = []
    stage = np.arange(m - 1)
    for a in range(m):
        for b in range(a + 1, m):
            for c in range(n + 1):
                rows.append(np.where(stage < a, 0, np.where(stage < b, c, n)))
    candidates = np.array(rows, dtype=np.intp)
    value, bad = _score(batch, path, candidates)
    best: np.ndarray = candidates[int(np.lexsort((value, bad))[0])]
    return best


def _descend(batch: BatchCost, path: Path, bounds: np.ndarray) -> tuple[tuple[bool, float], np.ndarray]:
    """Steepest descent over moves of one boundary by 1..WINDOW nodes, while the score improves."""
    n = batch.n
    value, bad = batch.score(_assign(path, bounds[None, :], n))
    key = (bool(bad[0]), float(value[0]))
    steps = np.array([s for s in range(-WINDOW, WINDOW + 1) if s], dtype=np.intp)
    while len(bounds):
        low = np.concatenate([[0], bounds[:-1]])
        high = np.concatenate([bounds[1:], [n]])
        moved = np.repeat(bounds[None, :], len(bounds) * len(steps), axis=0)
        which = np.repeat(np.arange(len(bounds)), len(steps))
        moved[np.arange(len(moved)), which] += np.tile(steps, len(bounds))
        ok = (moved[np.arange(len(moved)), which] >= low[which]) & (moved[np.arange(len(moved)), which] <= high[which])
        moved = moved[ok]
        if not len(moved):
            break
        value, bad = _score(batch, path, moved)
        i = int(np.lexsort((value, bad))[0])
        if (bool(bad[i]), float(value[i])) >= key:
            break
        key, bounds = (bool(bad[i]), float(value[i])), moved[i]
    return key, bounds


def _plan(problem: Problem, batch: BatchCost, path: Path, bounds: np.ndarray, value: float) -> Plan:
    assign = _assign(path, bounds[None, :], batch.n)[0]
    placement = {node.id: batch.devices[d] for node, d in zip(problem.graph.nodes, assign, strict=True)}
    return Plan(problem.graph, placement, "hpa", value)


class BatchCost:
    """`cost.evaluate`'s objective and feasibility for many placements at once (numpy).

    Placements are (P, N) arrays of device indices into `devices` (the origin first, then the
    servers in file order). Same equations as evaluate, summed in another order (equal to ~1e-12).
    """

    def __init__(self, problem: Problem) -> None:
        graph, cluster = problem.graph, problem.cluster
        self.devices = (problem.origin, *(d.name for d in cluster.servers))
        self.n = len(graph.nodes)
        dev = [cluster.device(d) for d in self.devices]
        self.times = np.array([[problem.node_time_s[d][v.id] for d in self.devices] for v in graph.nodes])
        self.power = np.array([d.busy_power_w for d in dev])
        self.price = np.array([d.price_usd_per_s for d in dev])
        self.elec = np.array([d.electricity_usd_per_kwh for d in dev]) / terms.JOULES_PER_KWH
        self.queue = np.array([terms.queueing_time_s(d.background) for d in dev])
        self.free = np.array([1.0 - d.background.utilisation if d.background else 1.0 for d in dev])
        self.memory = np.array([d.memory_bytes for d in dev], dtype=float)
        self.links = LinkArrays.of(problem, self.devices)
        self.n_inputs = len(graph.inputs)
        names = [*(i.name for i in graph.inputs), *(v.id for v in graph.nodes)]
        slot = {name: i for i, name in enumerate(names)}
        self.value_bytes = np.array([graph.tensor_bytes(name) for name in names], dtype=float)
        pairs = [(slot[src], graph.index[v.id]) for v in graph.nodes for src in dict.fromkeys(v.inputs)]
        self.edge_value = np.array([p[0] for p in pairs], dtype=np.intp)
        self.edge_reader = np.array([p[1] for p in pairs], dtype=np.intp)
        self.outputs = np.array([graph.index[o] for o in graph.outputs], dtype=np.intp)
        self.param = np.array([v.param_bytes for v in graph.nodes], dtype=float)
        self.live = np.array([v.output_bytes + sum(graph.tensor_bytes(s) for s in dict.fromkeys(v.inputs))
                              for v in graph.nodes], dtype=float)
        self.weights = {m: w for m, w in problem.objective.weights.items() if w}
        self.constraints = problem.constraints

    def score(self, assign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(objective value, infeasible) per placement row."""
        k = len(self.devices)
        onehot = assign[:, :, None] == np.arange(k)
        used = onehot.any(axis=1)
        busy = np.einsum("pnk,nk->pk", onehot, self.times)
        hop_s, paid_s, sent = self._hops(assign)
        lk = self.links
        missing = np.isinf(lk.fixed_s)
        energy_links = np.where(missing, 0.0, lk.power_w * np.where(missing, 0.0, hop_s))
        energy = busy * self.power + energy_links.sum(axis=2)
        link_usd = np.where(missing, 0.0, lk.price_usd_per_s * np.where(missing, 0.0, paid_s)
                            + lk.price_usd_per_byte * sent).sum(axis=(1, 2))
        metrics = {
            "latency_s": busy.sum(axis=1) + hop_s.sum(axis=(1, 2)) + np.where(used, self.queue, 0.0).sum(axis=1),
            "energy_j": energy.sum(axis=1),
            "origin_energy_j": energy[:, 0],
            "cost_usd": (busy * self.price + energy * self.elec).sum(axis=1) + link_usd,
        }
        with np.errstate(divide="ignore"):
            stretched = np.where(used, np.where(self.free > 0, busy / self.free, math.inf), 0.0)
        metrics["bottleneck_s"] = np.maximum(stretched.max(axis=1), hop_s.max(axis=(1, 2)))
        value = sum((w * metrics[m] for m, w in self.weights.items()), np.zeros(len(assign)))
        need = np.einsum("pnk,n->pk", onehot, self.param) + (onehot * self.live[None, :, None]).max(axis=1)
        bad = (np.where(used, need > self.memory, False).any(axis=1) | np.isinf(hop_s).any(axis=(1, 2)))
        c = self.constraints
        if c.deadline_s is not None:
            bad |= metrics["latency_s"] > c.deadline_s
        if c.origin_energy_budget_j is not None:
            bad |= metrics["origin_energy_j"] > c.origin_energy_budget_j
        if c.request_rate_per_s is not None:
            worst = np.maximum(stretched.max(axis=1), hop_s.max(axis=(1, 2)))
            bad |= c.request_rate_per_s * worst > 1.0
        return value, bad

    def _hops(self, assign: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per placement and directed link (P, k, k): seconds of hops, seconds of hops that carry
        bytes (what a per-second link price charges), and bytes sent."""
        p, k = len(assign), len(self.devices)
        where = np.concatenate([np.zeros((p, self.n_inputs), dtype=np.intp), assign], axis=1)
        reads = np.zeros((p, len(self.value_bytes), k), dtype=bool)
        reads[np.arange(p)[:, None], self.edge_value[None, :], assign[:, self.edge_reader]] = True
        reads &= where[:, :, None] != np.arange(k)
        lk = self.links
        rows = np.arange(p)[:, None, None]
        src = np.broadcast_to(where[:, :, None], reads.shape)
        dst = np.broadcast_to(np.arange(k), reads.shape)
        size = np.broadcast_to(self.value_bytes[None, :, None], reads.shape)
        one = lk.fixed_s[src, dst] + size / lk.bytes_per_s[src, dst]
        flat = (rows * k + src) * k + dst
        hop_s = self._sum(flat[reads], one[reads], p, k)
        paid_s = self._sum(flat[reads & (size > 0)], one[reads & (size > 0)], p, k)
        sent = self._sum(flat[reads], size[reads], p, k)
        out_src = assign[:, self.outputs]
        back = out_src != 0
        out_size = np.broadcast_to(self.value_bytes[self.n_inputs + self.outputs], out_src.shape)
        out_one = lk.fixed_s[out_src, 0] + out_size / lk.bytes_per_s[out_src, 0]
        out_flat = (np.arange(p)[:, None] * k + out_src) * k
        hop_s += self._sum(out_flat[back], out_one[back], p, k)
        paid_s += self._sum(out_flat[back & (out_size > 0)], out_one[back & (out_size > 0)], p, k)
        sent += self._sum(out_flat[back], out_size[back], p, k)
        return hop_s, paid_s, sent

    @staticmethod
    def _sum(flat: np.ndarray, weight: np.ndarray, p: int, k: int) -> np.ndarray:
        return np.bincount(flat, weights=weight, minlength=p * k * k).reshape(p, k, k)

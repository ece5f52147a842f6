"""Where a pipeline can cut a graph: its ideals, or the prefixes of one topological order.

An ideal (downset) of a DAG is a set of nodes that holds every predecessor of each of its nodes:
what has run once a pipeline's first stages are done. A pipeline of s stages is a chain of ideals
{} = I_0 < I_1 < ... < I_s = all nodes, and stage t runs I_t - I_{t-1}, a contiguous part of the DAG
(no path leaves it and comes back). Tarnawski et al. (NeurIPS 2020, msr-fiddle/dnn-partitioning)
search exactly these; the prefixes of one topological order are the special case that PipeEdge
searches (a chain has no other ideals). The number of ideals grows with the graph's width (a
DAG of b parallel chains of length l has (l + 1)^b), so enumeration stops at a bound and says so.

Gluing: a node that costs nothing (`glued_units`' caller decides what that means) and touches one
other part of the graph only may be kept in that part's stage. Its ideals are then those of the
graph with the node merged into its neighbour, often far fewer (GNMT's layer graph: over 300,000
ideals, 17,914 glued), as the published solver's first step does.

`CutLattice.masks[i]` is cut i as a boolean row over the graph's nodes (graph order); cuts are
sorted by size, so a strict subset always comes first. A DP over cuts looks at pairs (a, b) with
cut a a strict subset of cut b, stage b - a: `stage_pairs` lists them, sparsely, leaving out the
stages that a bound on their time rules out (M cuts have up to M^2 / 2 pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from coinfer.graph import Graph

# Cuts of the block that a pair search tests at once against the cuts below them (block x cuts floats).
PAIR_BLOCK = 256
# Relative slack on a stage-time bound: rounding in the sums never drops a stage the bound allows.
BOUND_SLACK = 1e-9


@dataclass(frozen=True)
class StagePairs:
    """Pairs (a, b) of cuts, cut a a strict subset of cut b, sorted by b then a. `ends` are the
    distinct b in order and `starts` the index of each one's first pair (a segment per b)."""

    a: NDArray[np.intp]
    b: NDArray[np.intp]
    ends: NDArray[np.intp] = field(init=False, repr=False, compare=False)
    starts: NDArray[np.intp] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ends, starts = np.unique(self.b, return_index=True)
        object.__setattr__(self, "ends", ends.astype(np.intp))
        object.__setattr__(self, "starts", starts.astype(np.intp))

    def segment_min(self, values: NDArray[np.float64], size: int) -> NDArray[np.float64]:
        """Per cut b (of `size`), the least of `values` (one per pair) over the pairs ending at b; inf if none."""
        out = np.full(size, np.inf)
        if len(values):
            out[self.ends] = np.minimum.reduceat(values, self.starts)
        return out

    def segment(self, b: int) -> slice:
        """The pairs ending at cut b."""
        i = int(np.searchsorted(self.ends, b))
        if i == len(self.ends) or self.ends[i] != b:
            return slice(0, 0)
        stop = int(self.starts[i + 1]) if i + 1 < len(self.starts) else len(self.a)
        return slice(int(self.starts[i]), stop)


@dataclass(frozen=True)
class CutLattice:
    """The cuts a pipeline may make, sorted by size (row 0 is empty, the last is every node).

    Prefixes are not stored as masks (10,000 layers would take 100 MB of them): cut i is the first i
    nodes of the graph's order, and sums over a cut are running sums."""

    kind: str  # "ideals" or "prefixes"
    node_count: int
    ideal_masks: NDArray[np.bool_] | None = None  # (ideals, nodes) for kind "ideals"
    glued: bool = False  # ideals of the graph with free nodes merged into their neighbours

    @property
    def size(self) -> int:
        return self.node_count + 1 if self.ideal_masks is None else int(self.ideal_masks.shape[0])

    @property
    def is_prefixes(self) -> bool:
        return self.ideal_masks is None

    @property
    def masks(self) -> NDArray[np.bool_]:
        """(cuts, nodes): cut i as a boolean row over the graph's nodes."""
        if self.ideal_masks is None:
            return np.tri(self.size, self.node_count, -1, dtype=bool)
        return self.ideal_masks

    def sums(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per cut, the sum of a per-node quantity over its nodes (finite values)."""
        if self.ideal_masks is None:
            return np.concatenate([[0.0], np.cumsum(values)])
        return self.ideal_masks.astype(np.float64) @ values

    def stage_sums(self, values: NDArray[np.float64], pairs: StagePairs) -> NDArray[np.float64]:
        """Per pair, the sum of a per-node quantity over the stage; inf where the stage holds an inf."""
        infinite = np.isinf(values)
        sums = self.sums(np.where(infinite, 0.0, values))
        out = sums[pairs.b] - sums[pairs.a]
        if infinite.any():
            count = self.sums(infinite.astype(np.float64))
            out[count[pairs.b] != count[pairs.a]] = np.inf
        return out

    def stage_nodes(self, a: int, b: int) -> list[int]:
        """Node indices of the stage from cut a to cut b (a below b)."""
        if self.ideal_masks is None:
            return list(range(a, b))
        return [int(v) for v in np.flatnonzero(self.ideal_masks[b] & ~self.ideal_masks[a])]

    def stage_pairs(self, key_s: NDArray[np.float64], bound_s: float, limit: int) -> StagePairs | None:
        """Every pair (a, b), cut a a strict subset of cut b, whose stage sums `key_s` (per node, >= 0; inf
        for a node no stage may hold) to at most `bound_s`; None when there are more than `limit`."""
        infinite = np.isinf(key_s)
        keys = self.sums(np.where(infinite, 0.0, key_s))
        blocked = self.sums(infinite.astype(np.float64))  # an inf node in the stage: no stage
        bound = bound_s * (1 + BOUND_SLACK) if np.isfinite(bound_s) else np.inf
        if self.ideal_masks is None:
            return _prefix_pairs(keys, blocked, bound, limit)
        return _ideal_pairs(self.ideal_masks, keys, blocked, bound, limit)

    def crossing_bytes(self, graph: Graph) -> NDArray[np.float64]:
        """Per cut, the bytes of the node outputs inside it that a node outside it reads."""
        n = self.node_count
        if self.ideal_masks is None:
            crossing = np.zeros(n + 1)
            for v in graph.nodes:
                last = max((graph.index[c] for c in graph.consumers[v.id]), default=None)
                if last is not None:
                    crossing[graph.index[v.id] + 1: last + 1] += v.output_bytes
            return crossing
        reads = np.zeros((n, n), dtype=np.float32)  # reads[v, r]: node r reads v's output
        for v in graph.nodes:
            for r in graph.consumers[v.id]:
                reads[graph.index[v.id], graph.index[r]] = 1.0
        read_outside = ((~self.ideal_masks).astype(np.float32) @ reads.T) > 0  # (cut, v)
        sizes = np.array([v.output_bytes for v in graph.nodes], dtype=float)
        crossing = (self.ideal_masks & read_outside).astype(np.float64) @ sizes
        return np.asarray(crossing, dtype=np.float64)


def _prefix_pairs(keys: NDArray[np.float64], blocked: NDArray[np.float64], bound: float,
                  limit: int) -> StagePairs | None:
    """Prefix a is below prefix b when a < b; running sums never decrease, so each b's a form a range."""
    ends = np.arange(1, len(keys))
    lowest = np.searchsorted(keys, keys[ends] - bound, side="left") if np.isfinite(bound) else np.zeros_like(ends)
    lowest = np.maximum(lowest, np.searchsorted(blocked, blocked[ends], side="left"))
    counts = np.maximum(ends - lowest, 0)
    if int(counts.sum()) > limit:
        return None
    b = np.repeat(ends, counts)
    a = np.repeat(lowest, counts) + (np.arange(len(b)) - np.repeat(np.cumsum(counts) - counts, counts))
    return StagePairs(a.astype(np.intp), b.astype(np.intp))


def _ideal_pairs(masks: NDArray[np.bool_], keys: NDArray[np.float64], blocked: NDArray[np.float64], bound: float,
                 limit: int) -> StagePairs | None:
    """Blocks of cuts b (by key) against the cuts a whose key lies at most `bound` below theirs."""
    m = len(masks)
    order = np.lexsort((masks.sum(axis=1), keys))  # by key, then size: a subset never comes after
    sorted_keys = keys[order]
    inside = masks[order].astype(np.float32)
    outside = 1.0 - inside
    found_a: list[NDArray[np.intp]] = []
    found_b: list[NDArray[np.intp]] = []
    total = 0
    for lo in range(0, m, PAIR_BLOCK):
        hi = min(m, lo + PAIR_BLOCK)
        first = int(np.searchsorted(sorted_keys, sorted_keys[lo] - bound, side="left")) if np.isfinite(bound) else 0
        # rounding can put a subset of equal key just after the block: look a little past it
        last = int(np.searchsorted(sorted_keys, sorted_keys[hi - 1] * (1 + BOUND_SLACK), side="right"))
        subset = (inside[first:last] @ outside[lo:hi].T) == 0  # (a, b): a has no node outside b
        a_pos, b_pos = np.nonzero(subset)
        a_idx, b_idx = order[a_pos + first], order[b_pos + lo]
        keep = (a_idx != b_idx) & (keys[b_idx] - keys[a_idx] <= bound) & (blocked[b_idx] == blocked[a_idx])
        a_idx, b_idx = a_idx[keep], b_idx[keep]
        total += len(a_idx)
        if total > limit:
            return None
        found_a.append(a_idx)
        found_b.append(b_idx)
    a = np.concatenate(found_a) if found_a else np.zeros(0, dtype=np.intp)
    b = np.concatenate(found_b) if found_b else np.zeros(0, dtype=np.intp)
    by_end = np.lexsort((a, b))
    return StagePairs(a[by_end].astype(np.intp), b[by_end].astype(np.intp))


def prefix_lattice(graph: Graph) -> CutLattice:
    """The N + 1 prefixes of the graph's own (topological) node order."""
    return CutLattice("prefixes", len(graph.nodes))


def count_ideals(graph: Graph, limit: int, free: Sequence[bool] | None = None) -> int | None:
    """How many ideals the graph has (with `free` nodes glued, when given), or None past `limit`."""
    found = _enumerate(graph, _units(graph, free), limit)
    return None if found is None else len(found)


def ideal_lattice(graph: Graph, limit: int, free: Sequence[bool] | None = None) -> CutLattice | None:
    """Every ideal of the graph (of its glued form, when `free` marks the nodes that may be glued), or
    None when there are more than `limit` of them."""
    n = len(graph.nodes)
    units = _units(graph, free)
    found = _enumerate(graph, units, limit)
    if found is None:
        return None
    bits = np.array([[ideal >> units[v] & 1 for v in range(n)] for ideal in found], dtype=bool).reshape(len(found), n)
    return CutLattice("ideals", n, bits, glued=len(set(units)) < n)


def _units(graph: Graph, free: Sequence[bool] | None) -> list[int]:
    """Each node's unit: its glued one when `free` is given, else a unit of its own."""
    return glued_units(graph, free) if free is not None else list(range(len(graph.nodes)))


def glued_units(graph: Graph, free: Sequence[bool]) -> list[int]:
    """Per node, the unit it belongs to once every part made only of free nodes that touches exactly one
    other part is merged into it, until none is left (units numbered in graph order)."""
    n = len(graph.nodes)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for v, node in enumerate(graph.nodes):
        for value in node.inputs:
            if value in graph.index:
                neighbours[v].add(graph.index[value])
                neighbours[graph.index[value]].add(v)
    parent = list(range(n))

    def root(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    members: dict[int, list[int]] = {v: [v] for v in range(n)}
    merged = True
    while merged:
        merged = False
        for r in list(members):
            if r not in members or not all(free[v] for v in members[r]):
                continue
            touching = {root(u) for v in members[r] for u in neighbours[v]} - {r}
            if len(touching) == 1:
                (into,) = touching
                parent[r] = into
                members[into].extend(members.pop(r))
                merged = True
    numbering: dict[int, int] = {}
    return [numbering.setdefault(root(v), len(numbering)) for v in range(n)]


def _enumerate(graph: Graph, units: list[int], limit: int) -> list[int] | None:
    """Ideals of the graph of units as bit masks over unit numbers, level by level (by size), or None
    past `limit`. Each ideal carries the units it may take next, so a step costs the graph's width."""
    count = max(units, default=-1) + 1
    preds = [0] * count
    succs: list[set[int]] = [set() for _ in range(count)]
    for v, node in enumerate(graph.nodes):
        for value in node.inputs:
            if value in graph.index and units[graph.index[value]] != units[v]:
                preds[units[v]] |= 1 << units[graph.index[value]]
                succs[units[graph.index[value]]].add(units[v])
    level: dict[int, tuple[int, ...]] = {0: tuple(u for u in range(count) if preds[u] == 0)}
    found = [0]
    while level:
        following: dict[int, tuple[int, ...]] = {}
        for ideal, ready in level.items():
            for u in ready:
                grown = ideal | 1 << u
                if grown in following:
                    continue
                following[grown] = (*(w for w in ready if w != u),
                                    *(w for w in sorted(succs[u]) if preds[w] & grown == preds[w]))
                if len(found) + len(following) > limit:  # checked as it grows: one level can be huge
                    return None
        found.extend(following)
        level = following
    return found

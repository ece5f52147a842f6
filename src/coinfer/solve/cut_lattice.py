"""Where a pipeline can cut a graph: its ideals, or the prefixes of one topological order.

An ideal (downset) of a DAG is a set of nodes that holds every predecessor of each of its nodes:
what has run once a pipeline's first stages are done. A pipeline of s stages is a chain of ideals
{} = I_0 < I_1 < ... < I_s = all nodes, and stage t runs I_t - I_{t-1}, a contiguous part of the DAG
(no path leaves it and comes back). Tarnawski et al. (NeurIPS 2020, msr-fiddle/dnn-partitioning)
search exactly these; the prefixes of one topological order are the special case that PipeEdge
searches (a chain has no other ideals). The number of ideals grows with the graph's width (a
DAG of b parallel chains of length l has (l + 1)^b), so enumeration stops at a bound and says so.

`CutLattice.masks[i]` is cut i as a boolean row over the graph's nodes (graph order); cuts are
sorted by size, so a strict subset always comes first. `below[a, b]` is True when ideal a is a
strict subset of ideal b: stage (a, b) is then the nodes of b not in a.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from coinfer.graph import Graph


@dataclass(frozen=True)
class CutLattice:
    """The cuts a pipeline may make, sorted by size (row 0 is empty, the last is every node).

    Prefixes are not stored as masks (10,000 layers would take 100 MB of them): cut i is the first i
    nodes of the graph's order, and sums over a cut are running sums."""

    kind: str  # "ideals" or "prefixes"
    node_count: int
    ideal_masks: NDArray[np.bool_] | None = None  # (ideals, nodes) for kind "ideals"
    below: NDArray[np.bool_] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ideal_masks is None:
            below = np.triu(np.ones((self.size, self.size), dtype=bool), 1)
        else:
            m = self.ideal_masks.astype(np.float32)
            # a is a subset of b when a has no node outside b; float32 counts are exact up to 2^24 nodes
            below = (m @ (1.0 - m).T) == 0
            np.fill_diagonal(below, False)
        object.__setattr__(self, "below", below)

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
        """Per cut, the sum of a per-node quantity over its nodes."""
        if self.ideal_masks is None:
            return np.concatenate([[0.0], np.cumsum(values)])
        return self.ideal_masks.astype(np.float64) @ values

    def stage_nodes(self, a: int, b: int) -> list[int]:
        """Node indices of the stage from cut a to cut b (a below b)."""
        if self.ideal_masks is None:
            return list(range(a, b))
        return [int(v) for v in np.flatnonzero(self.ideal_masks[b] & ~self.ideal_masks[a])]

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


def prefix_lattice(graph: Graph) -> CutLattice:
    """The N + 1 prefixes of the graph's own (topological) node order."""
    return CutLattice("prefixes", len(graph.nodes))


def count_ideals(graph: Graph, limit: int) -> int | None:
    """How many ideals the graph has, or None when there are more than `limit`."""
    found = _enumerate(graph, limit)
    return None if found is None else len(found)


def ideal_lattice(graph: Graph, limit: int) -> CutLattice | None:
    """Every ideal of the graph, or None when there are more than `limit` of them."""
    found = _enumerate(graph, limit)
    if found is None:
        return None
    n = len(graph.nodes)
    bits = np.array([[ideal >> v & 1 for v in range(n)] for ideal in found], dtype=bool).reshape(len(found), n)
    return CutLattice("ideals", n, bits)


def _enumerate(graph: Graph, limit: int) -> list[int] | None:
    """Ideals as bit masks over node indices, level by level (by size), or None past `limit`."""
    preds = [0] * len(graph.nodes)
    for v, node in enumerate(graph.nodes):
        for value in node.inputs:
            if value in graph.index:
                preds[v] |= 1 << graph.index[value]
    level, found = [0], [0]
    while level:
        following: dict[int, None] = {}
        for ideal in level:
            for v, need in enumerate(preds):
                if not ideal >> v & 1 and need & ideal == need:
                    following[ideal | 1 << v] = None
        if len(found) + len(following) > limit:
            return None
        found.extend(following)
        level = list(following)
    return found

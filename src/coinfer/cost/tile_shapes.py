"""Sizes of a tiled range: positions and bytes of each value, and a tile's share of each node.

Used by the pricing of tiled stages (`coinfer.cost.tiled_stage`) and its schedule: how many output
positions a tile computes of each node (its time is that share of the node's whole time), the
bytes of a region of a value (channels x area x element size, from the graph's tensor specs) and a
tile's working set (`cost.terms.working_set_bytes` on the range shrunk to the tile). Pure Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from coinfer.cost import terms
from coinfer.errors import PlanError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.tiling.bounds import SpatialRange, TileBounds
from coinfer.tiling.geometry import Region


def range_nodes(graph: Graph, spatial: SpatialRange) -> tuple[Node, ...]:
    """The graph's nodes from the first to the last that owns an op of `spatial`, in graph order."""
    owners = [graph.index[op.owner] for op in spatial.ops if op.owner in graph.index]
    if not owners:
        raise PlanError(f"no op of the range names a node of graph {graph.name!r}; read the range from this graph")
    return graph.nodes[min(owners):max(owners) + 1]


class RangeShapes:
    """Per-node and per-value sizes of the range, and each tile's share of them."""

    def __init__(self, graph: Graph, spatial: SpatialRange, nodes: Sequence[Node]) -> None:
        self.graph, self.spatial, self.nodes = graph, spatial, nodes
        ids = {n.id for n in nodes}
        self.ops_of: dict[str, list[str]] = defaultdict(list)
        for op in spatial.ops:
            if op.kind != "item":  # an item picks a result: no positions of its own to compute
                self.ops_of[op.owner].append(op.name)
        self.external = tuple(dict.fromkeys(v for n in nodes for v in n.inputs if v not in ids))
        self.whole_positions = sum(area(spatial.sizes[op.name]) for op in spatial.ops)
        self.weights_bytes = sum(n.param_bytes for n in nodes)
        self.owner = {op.name: op.owner for op in spatial.ops}
        output_owner = self.owner[spatial.output]
        self.input_bytes_whole = map_bytes(graph, self.external[0], spatial.input_size) if self.external else 0
        self.output_bytes_whole = map_bytes(graph, output_owner, spatial.output_size)

    def computed(self, node_id: str, bounds: TileBounds, owned_only: bool = False) -> tuple[int, int]:
        """(positions the tile computes of the node's ops, positions of the whole ops). A node with no
        op is run in full by every fused tile (1, 1), and in halo mode by its output tile's share."""
        names = self.ops_of.get(node_id)
        if not names:
            return (bounds.tile.area, area(self.spatial.output_size)) if owned_only else (1, 1)
        return (sum(bounds.ops[name].output.area for name in names),
                sum(area(self.spatial.sizes[name]) for name in names))

    def node_compute_s(self, node_id: str, bounds: TileBounds, times: Mapping[str, float],
                       owned_only: bool = False) -> float:
        part, whole = self.computed(node_id, bounds, owned_only)
        return times[node_id] * part / whole

    def step_compute_s(self, node_id: str, op: str | None, bounds: TileBounds, times: Mapping[str, float]) -> float:
        """Halo mode: the node's time for one of its ops (`op`), in proportion to the positions the
        tile owns of it against the node's whole ops; a node with no op (None) on its output share."""
        if op is None:
            return self.node_compute_s(node_id, bounds, times, owned_only=True)
        whole = sum(area(self.spatial.sizes[name]) for name in self.ops_of[node_id])
        return times[node_id] * bounds.ops[op].output.area / whole

    def compute_s(self, bounds: TileBounds, times: Mapping[str, float]) -> float:
        return sum(self.node_compute_s(node.id, bounds, times) for node in self.nodes)

    def value_bytes(self, value: str, region: Region) -> int:
        """Bytes of `region` of a value of the range: channels x area x element size, from the graph's
        spec of its node's output of that size (the specs name node outputs, not every op's)."""
        size = self.spatial.sizes[value]
        if value == self.spatial.input:
            return self.input_bytes_whole * region.area // area(size)
        owner = self.owner[value]
        return map_bytes(self.graph, owner, size) * region.area // area(size)

    def redundancy(self, node_id: str, bounds: Sequence[TileBounds]) -> float:
        whole = self.computed(node_id, bounds[0])[1]
        return sum(self.computed(node_id, b)[0] for b in bounds) / whole

    def input_bytes(self, bounds: TileBounds) -> int:
        return self.input_bytes_whole * bounds.input_region.area // area(self.spatial.input_size)

    def output_bytes(self, bounds: TileBounds) -> int:
        return self.output_bytes_whole * bounds.tile.area // area(self.spatial.output_size)

    def working_set_bytes(self, bounds: TileBounds) -> int:
        """`terms.working_set_bytes` of each node on a copy of the range whose values are shrunk to the tile."""
        shrunk = []
        for node in self.nodes:
            part, whole = self.computed(node.id, bounds)
            shrunk.append(replace(node, output_bytes=node.output_bytes * part // whole, outputs=()))
        in_share = bounds.input_region.area, area(self.spatial.input_size)
        inputs = tuple(GraphInput(v, TensorSpec(self.graph.tensor_bytes(v) * in_share[0] // in_share[1]))
                       for v in self.external)
        tile_graph = Graph(f"{self.graph.name} tile", inputs, tuple(shrunk))
        return max(terms.working_set_bytes(tile_graph, n) for n in tile_graph.nodes)


def map_bytes(graph: Graph, value: str, size: tuple[int, int]) -> int:
    """Bytes of the feature map `value` (a node id or graph input) of `size` positions: the tensor of
    that height and width among the value's specs, or all of its bytes when the specs carry no shapes."""
    specs = graph.value_specs(value)
    for spec in specs:
        if spec.shape is not None and len(spec.shape) == 4 and tuple(spec.shape[2:]) == size:
            return spec.size_bytes
    return sum(spec.size_bytes for spec in specs)


def area(size: tuple[int, int]) -> int:
    return size[0] * size[1]

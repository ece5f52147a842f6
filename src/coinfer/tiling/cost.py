"""What one fused tiled stage costs: each tile's compute, the scatter and gather, memory, energy, overlap.

A tiled stage (DeepThings' fused tile partitioning, REFERENCE.md section 6) takes the range's input
map on the *scatter* device, sends each tile device the crop its tiles read
(`TileBounds.input_region`), lets every tile device compute its tiles with no exchange (fused mode:
overlaps are recomputed), and sends each output tile to the *gather* device, which stitches them.
`tiled_stage_cost` prices that, reusing `coinfer.cost.terms` for every equation it shares with
`cost.evaluate` (transfer time, compute and transmit energy, a node's working set). Pure Python.

Model and assumptions (ours where the papers are silent):

* Compute: a node's time is proportional to the output positions it computes. A tile computes
  fraction f = (positions of the node's output the tile computes, `TileBounds.ops[...].output`,
  halo overlap included) / (positions of the whole output) of each node, so its time is
  `sum_n f_n * T_n(device)` with `T_n` the profile's whole-node time at batch 1. A node owning
  several ops weighs them by positions; a node owning none is charged in full. Per-call overheads,
  which make small tiles relatively slower on real hardware, are not modelled.
* Transfers: each crop and each output tile is one message, `terms.transfer_time_s` (latency +
  per-message overhead + bytes / bandwidth), of `channels x area x element size` bytes read from
  the graph's tensor specs. A tile on the scatter device needs no scatter message, a tile on the
  gather device no gather message. A device with several tiles gets one crop per tile (the crops
  of neighbouring tiles overlap; fetching their hull once is not modelled). No codec.
* Timing is a schedule, not a sum: a message holds its resources for `transfer_time_s - latency`
  (the wire time of coinfer.shaping's FIFO link) and arrives one latency later. With
  `contention="links"` the resource is the directed link, as coinfer's simulator and emulated
  runtime links treat it (each directed link is its own FIFO, so the scatter device's messages to
  different peers overlap and those to one peer queue). With `contention="ports"` every device has
  one outgoing and one incoming port (a switched LAN at one port speed): the scatter device's
  crops go out one after another and the gather device takes in one output tile at a time. Crops
  are sent round-robin over the tile devices (every device's first tile, then every second one),
  all before any output tile; a device computes its tiles one after another in arrival order, and
  sends each as soon as it is done. The stage's latency runs from the input ready on the scatter
  device to the last output tile at the gather device; with one tile per device and
  `contention="links"` it is `max over tiles (scatter + compute + gather)`.
* Memory of a tile device: the range's weights (every tile device holds them all) plus the largest
  working set of one node while it computes one of its tiles: `terms.working_set_bytes` with every
  value shrunk to the region the tile computes of it. That is the measure `cost.evaluate` uses for
  a stage, so one tile of the whole map on one device needs exactly what the untiled range does;
  like it, it counts a node's inputs and output (and a convolution's two extra buffers), not a
  residual's skip value held across a block. The scatter device's whole input map and the gather
  device's stitched output are reported apart (`held_map_bytes`): a layer cut needs them as well.
* Energy per device: `terms.compute_energy_j` of its compute time plus `terms.transmit_energy_j`
  of each message it sends (charged to the sender, as in `cost.evaluate`). Idle power is not
  counted: the stage is a part of a request, and `cost.evaluate` charges waiting to the origin.
* Redundancy: positions computed summed over the tiles / positions of the whole range, per node
  and in total; 1 means no overlap (one tile, or pointwise ops only), more is recomputed halo.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from coinfer.cluster import Cluster, Link
from coinfer.cost import terms
from coinfer.cost.evaluate import value_specs
from coinfer.errors import PlanError
from coinfer.graph import Graph, GraphInput, Node, TensorSpec
from coinfer.tiling.bounds import SpatialRange, TileBounds, tile_bounds
from coinfer.tiling.geometry import Region, TileGrid, check_cover

Contention = Literal["links", "ports"]
Resource = tuple[str, str, str]  # ("link", source, target), ("out", device, "") or ("in", device, "")


@dataclass(frozen=True)
class TileCost:
    """One tile: where it runs, what it computes, what moves, and when (seconds from the stage's start)."""

    index: int  # position in the grid's row-major tile list
    device: str
    tile: Region  # the output region it produces
    input_region: Region  # the crop of the range input it reads
    computed_positions: int  # output positions of all the range's ops it computes, overlap included
    compute_s: float
    working_set_bytes: int  # the largest working set of one node of the range, for this tile
    input_bytes: int  # its crop: channels x crop area x element size (sent unless on the scatter device)
    output_bytes: int  # its output tile (sent unless on the gather device)
    scatter_s: float  # the crop's transfer time; 0 on the scatter device
    gather_s: float  # the output tile's transfer time; 0 on the gather device
    input_ready_s: float
    compute_start_s: float
    compute_end_s: float
    output_ready_s: float  # at the gather device


@dataclass(frozen=True)
class DeviceCost:
    """One device of the stage (a tile device, the scatter device or the gather device)."""

    device: str
    tiles: tuple[int, ...]  # indices of the tiles it computes
    compute_s: float
    received_bytes: int  # crops that came over a link
    sent_bytes: int  # what it sent over links: crops (scatter device) and output tiles
    send_s: float  # the transfer time of what it sent
    weights_bytes: int  # the range's weights, when it computes a tile
    working_set_bytes: int  # the largest over its tiles
    held_map_bytes: int  # the whole input map (scatter device) and stitched output (gather device)
    energy_j: float

    @property
    def memory_bytes(self) -> int:
        """Weights plus the largest tile working set: comparable with `TiledStageCost.whole_memory_bytes`."""
        return self.weights_bytes + self.working_set_bytes


@dataclass(frozen=True)
class TiledStageCost:
    """A fused tiled stage priced per tile, per device and in total (model: module docstring)."""

    scatter: str
    gather: str
    contention: Contention
    tiles: tuple[TileCost, ...]
    devices: Mapping[str, DeviceCost]
    latency_s: float  # input ready at the scatter device -> last output tile at the gather device
    scatter_bytes: int  # crops sent over links
    gather_bytes: int  # output tiles sent over links
    redundancy: float  # computed positions over the tiles / positions of the whole range (>= 1)
    redundancy_by_node: Mapping[str, float]
    weights_bytes: int  # of the whole range
    whole_working_set_bytes: int  # the largest working set of one node on the whole map
    whole_compute_s: Mapping[str, float]  # the untiled range on each device of the stage

    @property
    def moved_bytes(self) -> int:
        return self.scatter_bytes + self.gather_bytes

    @property
    def energy_j(self) -> float:
        return sum(d.energy_j for d in self.devices.values())

    @property
    def whole_memory_bytes(self) -> int:
        """What one device holding the whole range needs (`cost.evaluate`'s measure for a stage)."""
        return self.weights_bytes + self.whole_working_set_bytes

    @property
    def max_tile_device_memory_bytes(self) -> int:
        return max(d.memory_bytes for d in self.devices.values() if d.tiles)


def tiled_stage_cost(graph: Graph, spatial: SpatialRange, tiles: TileGrid | Sequence[Region],
                     devices: Sequence[str], node_time_s: Mapping[str, Mapping[str, float]], cluster: Cluster,
                     scatter: str, gather: str, contention: Contention = "links") -> TiledStageCost:
    """Price the fused tiled stage computing `spatial` (a range of `graph`) as `tiles` on `devices`.

    `tiles` is a grid of the range's output or hand-written regions covering it once; `devices[i]`
    computes tile i (row-major for a grid). `node_time_s[device][node]` is the whole node's time
    at batch 1 (a Problem's), `cluster` gives the devices' power and the links. The range's input
    is on `scatter`, its stitched output goes to `gather`. Raises PlanError for a tile list that
    does not cover the output, a device count that does not match, an unknown device, missing node
    times, or a tile device that no link joins to the scatter or gather device (naming the link).
    """
    regions = _tiles(spatial, tiles)
    if len(devices) != len(regions):
        raise PlanError(f"{len(regions)} tiles need one device each, but {len(devices)} devices were given")
    involved = list(dict.fromkeys([scatter, *devices, gather]))
    for device in involved:
        if device not in cluster.device_names:
            raise PlanError(f"the tiled stage names device {device!r}, which cluster {cluster.name!r} lacks; "
                            f"devices: {', '.join(cluster.device_names)}")
    nodes = range_nodes(graph, spatial)
    _check_times(node_time_s, nodes, dict.fromkeys(devices))
    links = _links(cluster, devices, scatter, gather)
    shapes = _RangeShapes(graph, spatial, nodes)
    bounds = [tile_bounds(spatial, r) for r in regions]
    schedule = _Schedule(contention)
    tile_costs = schedule.run(shapes, bounds, devices, node_time_s, links, scatter, gather)
    return TiledStageCost(
        scatter=scatter, gather=gather, contention=contention, tiles=tile_costs,
        devices=_device_costs(involved, tile_costs, shapes, cluster, links, scatter, gather),
        latency_s=max(t.output_ready_s for t in tile_costs),
        scatter_bytes=sum(t.input_bytes for t in tile_costs if t.device != scatter),
        gather_bytes=sum(t.output_bytes for t in tile_costs if t.device != gather),
        redundancy=sum(b.computed_positions for b in bounds) / shapes.whole_positions,
        redundancy_by_node={n.id: shapes.redundancy(n.id, bounds) for n in nodes},
        weights_bytes=shapes.weights_bytes,
        whole_working_set_bytes=max(terms.working_set_bytes(graph, n) for n in nodes),
        whole_compute_s={d: sum(node_time_s[d][n.id] for n in nodes) for d in dict.fromkeys(devices)},
    )


def range_nodes(graph: Graph, spatial: SpatialRange) -> tuple[Node, ...]:
    """The graph's nodes from the first to the last that owns an op of `spatial`, in graph order."""
    owners = [graph.index[op.owner] for op in spatial.ops if op.owner in graph.index]
    if not owners:
        raise PlanError(f"no op of the range names a node of graph {graph.name!r}; read the range from this graph")
    return graph.nodes[min(owners):max(owners) + 1]


def _tiles(spatial: SpatialRange, tiles: TileGrid | Sequence[Region]) -> tuple[Region, ...]:
    height, width = spatial.output_size
    if isinstance(tiles, TileGrid):
        if (tiles.height, tiles.width) != (height, width):
            raise PlanError(f"a {tiles.height} x {tiles.width} tile grid cannot split the range's {height} x {width} "
                            "output; make the grid from the range's output_size")
        return tiles.tiles()
    regions = tuple(tiles)
    check_cover(regions, height, width)
    return regions


def _check_times(node_time_s: Mapping[str, Mapping[str, float]], nodes: Sequence[Node],
                 devices: Mapping[str, None]) -> None:
    for device in devices:
        times = node_time_s.get(device)
        missing = [n.id for n in nodes if times is None or n.id not in times]
        if missing:
            raise PlanError(f"no time for node {missing[0]!r} on device {device!r} ({len(missing)} of the range's "
                            "nodes missing); resolve the node times for every tile device (make_problem)")


def _links(cluster: Cluster, devices: Sequence[str], scatter: str, gather: str) -> dict[tuple[str, str], Link]:
    out: dict[tuple[str, str], Link] = {}
    for device in dict.fromkeys(devices):
        for source, target, leg in ((scatter, device, "scatter"), (device, gather, "gather")):
            if source == target:
                continue
            link = cluster.link(source, target)
            if link is None:
                raise PlanError(f"a tile on {device!r} needs the link {source}->{target} for the {leg} of the tiled "
                                f"stage, but cluster {cluster.name!r} has no such link; add it or put the tile "
                                "on a device that has it")
            out[(source, target)] = link
    return out


class _RangeShapes:
    """Per-node and per-value sizes of the range, and each tile's share of them."""

    def __init__(self, graph: Graph, spatial: SpatialRange, nodes: Sequence[Node]) -> None:
        self.graph, self.spatial, self.nodes = graph, spatial, nodes
        ids = {n.id for n in nodes}
        self.ops_of: dict[str, list[str]] = defaultdict(list)
        for op in spatial.ops:
            if op.kind != "item":  # an item picks a result: no positions of its own to compute
                self.ops_of[op.owner].append(op.name)
        self.external = tuple(dict.fromkeys(v for n in nodes for v in n.inputs if v not in ids))
        self.whole_positions = sum(_area(spatial.sizes[op.name]) for op in spatial.ops)
        self.weights_bytes = sum(n.param_bytes for n in nodes)
        output_owner = next(op.owner for op in spatial.ops if op.name == spatial.output)
        self.input_bytes_whole = _map_bytes(graph, self.external[0], spatial.input_size) if self.external else 0
        self.output_bytes_whole = _map_bytes(graph, output_owner, spatial.output_size)

    def computed(self, node_id: str, bounds: TileBounds) -> tuple[int, int]:
        """(positions the tile computes of the node's ops, positions of the whole ops); (1, 1) with no op."""
        names = self.ops_of.get(node_id)
        if not names:
            return 1, 1
        return (sum(bounds.ops[name].output.area for name in names),
                sum(_area(self.spatial.sizes[name]) for name in names))

    def compute_s(self, bounds: TileBounds, times: Mapping[str, float]) -> float:
        total = 0.0
        for node in self.nodes:
            part, whole = self.computed(node.id, bounds)
            total += times[node.id] * part / whole
        return total

    def redundancy(self, node_id: str, bounds: Sequence[TileBounds]) -> float:
        whole = self.computed(node_id, bounds[0])[1]
        return sum(self.computed(node_id, b)[0] for b in bounds) / whole

    def input_bytes(self, bounds: TileBounds) -> int:
        return self.input_bytes_whole * bounds.input_region.area // _area(self.spatial.input_size)

    def output_bytes(self, bounds: TileBounds) -> int:
        return self.output_bytes_whole * bounds.tile.area // _area(self.spatial.output_size)

    def working_set_bytes(self, bounds: TileBounds) -> int:
        """`terms.working_set_bytes` of each node on a copy of the range whose values are shrunk to the tile."""
        shrunk = []
        for node in self.nodes:
            part, whole = self.computed(node.id, bounds)
            shrunk.append(replace(node, output_bytes=node.output_bytes * part // whole, outputs=()))
        in_share = bounds.input_region.area, _area(self.spatial.input_size)
        inputs = tuple(GraphInput(v, TensorSpec(self.graph.tensor_bytes(v) * in_share[0] // in_share[1]))
                       for v in self.external)
        tile_graph = Graph(f"{self.graph.name} tile", inputs, tuple(shrunk))
        return max(terms.working_set_bytes(tile_graph, n) for n in tile_graph.nodes)


class _Schedule:
    """The stage's timeline: messages hold FIFO resources (module docstring), devices compute in turn."""

    def __init__(self, contention: Contention) -> None:
        if contention not in ("links", "ports"):
            raise PlanError(f"contention must be 'links' or 'ports', not {contention!r}")
        self.contention = contention
        self.free_s: dict[Resource, float] = defaultdict(float)

    def send(self, link: Link, size_bytes: int, ready_s: float) -> tuple[float, float]:
        """(transfer time, arrival time) of a message ready at `ready_s`, after those sent before it."""
        transfer_s = terms.transfer_time_s(link, size_bytes)
        held: tuple[Resource, ...] = (
            (("link", link.source, link.target),) if self.contention == "links"
            else (("out", link.source, ""), ("in", link.target, "")))
        start = max(ready_s, *(self.free_s[r] for r in held))
        for r in held:
            self.free_s[r] = start + transfer_s - link.latency_s  # the wire is free once the last byte left
        return transfer_s, start + transfer_s

    def run(self, shapes: _RangeShapes, bounds: Sequence[TileBounds], devices: Sequence[str],
            node_time_s: Mapping[str, Mapping[str, float]], links: Mapping[tuple[str, str], Link],
            scatter: str, gather: str) -> tuple[TileCost, ...]:
        rank: dict[int, int] = {}
        seen: dict[str, int] = defaultdict(int)
        for i, device in enumerate(devices):
            rank[i], seen[device] = seen[device], seen[device] + 1
        arrival: dict[int, tuple[float, float]] = {}  # tile -> (scatter time, ready time)
        for i in sorted(range(len(devices)), key=lambda i: (rank[i], i)):
            device = devices[i]
            arrival[i] = ((0.0, 0.0) if device == scatter
                          else self.send(links[(scatter, device)], shapes.input_bytes(bounds[i]), 0.0))
        computed: dict[int, tuple[float, float, float]] = {}  # tile -> (compute, start, end)
        for device in dict.fromkeys(devices):
            clock = 0.0
            for i in sorted((i for i, d in enumerate(devices) if d == device), key=lambda i: (arrival[i][1], i)):
                compute_s = shapes.compute_s(bounds[i], node_time_s[device])
                start = max(clock, arrival[i][1])
                clock = start + compute_s
                computed[i] = (compute_s, start, clock)
        out: list[TileCost] = []
        for i in sorted(range(len(devices)), key=lambda i: (computed[i][2], i)):
            device, b = devices[i], bounds[i]
            gather_s, ready = ((0.0, computed[i][2]) if device == gather
                               else self.send(links[(device, gather)], shapes.output_bytes(b), computed[i][2]))
            out.append(TileCost(
                index=i, device=device, tile=b.tile, input_region=b.input_region,
                computed_positions=b.computed_positions, compute_s=computed[i][0],
                working_set_bytes=shapes.working_set_bytes(b), input_bytes=shapes.input_bytes(b),
                output_bytes=shapes.output_bytes(b), scatter_s=arrival[i][0], gather_s=gather_s,
                input_ready_s=arrival[i][1], compute_start_s=computed[i][1], compute_end_s=computed[i][2],
                output_ready_s=ready,
            ))
        return tuple(sorted(out, key=lambda t: t.index))


def _device_costs(involved: Sequence[str], tiles: Sequence[TileCost], shapes: _RangeShapes, cluster: Cluster,
                  links: Mapping[tuple[str, str], Link], scatter: str, gather: str) -> dict[str, DeviceCost]:
    out: dict[str, DeviceCost] = {}
    for device in involved:
        mine = [t for t in tiles if t.device == device]
        # (link, bytes, transfer time) of each message this device sends
        sends = [(links[(scatter, t.device)], t.input_bytes, t.scatter_s)
                 for t in tiles if device == scatter and t.device != scatter]
        sends += [(links[(device, gather)], t.output_bytes, t.gather_s) for t in mine if device != gather]
        compute_s = sum(t.compute_s for t in mine)
        energy_j = terms.compute_energy_j(cluster.device(device), compute_s)
        energy_j += sum(terms.transmit_energy_j(link, s) for link, _, s in sends)
        held = (shapes.input_bytes_whole if device == scatter else 0) + (
            shapes.output_bytes_whole if device == gather else 0)
        out[device] = DeviceCost(
            device=device, tiles=tuple(t.index for t in mine), compute_s=compute_s,
            received_bytes=sum(t.input_bytes for t in mine if device != scatter),
            sent_bytes=sum(size for _, size, _ in sends), send_s=sum(s for _, _, s in sends),
            weights_bytes=shapes.weights_bytes if mine else 0,
            working_set_bytes=max((t.working_set_bytes for t in mine), default=0),
            held_map_bytes=held, energy_j=energy_j,
        )
    return out


def _map_bytes(graph: Graph, value: str, size: tuple[int, int]) -> int:
    """Bytes of the feature map `value` (a node id or graph input) of `size` positions: the tensor of
    that height and width among the value's specs, or all of its bytes when the specs carry no shapes."""
    specs = value_specs(graph, value)
    for spec in specs:
        if spec.shape is not None and len(spec.shape) == 4 and tuple(spec.shape[2:]) == size:
            return spec.size_bytes
    return sum(spec.size_bytes for spec in specs)


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]

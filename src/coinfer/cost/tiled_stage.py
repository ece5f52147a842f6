"""What one tiled stage costs: each tile's compute, the scatter and gather, memory, energy, overlap.

A tiled stage (DeepThings' fused tile partitioning, REFERENCE.md section 6) takes the range's input
map on the *scatter* device, sends each tile device the crop its tiles read
(`TileBounds.input_region`), lets every tile device compute its tiles with no exchange (fused mode:
overlaps are recomputed), and sends each output tile to the *gather* device, which stitches them.
`tiled_stage_cost` prices that (or halo-exchange tiles, below), reusing `coinfer.cost.terms` for
every equation it shares with `cost.evaluate` (transfer time, compute and transmit energy, a node's
working set); `coinfer.cost.tile_shapes` gives a tile's share of each node and value and
`coinfer.cost.tile_schedule` the timeline. Pure Python.

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

Halo-exchange mode (`mode="halo"`, CoEdge; ownership and halos: `coinfer.tiling.halo`):

* Compute: a tile computes only its owned part of each op, so f_n above counts owned positions
  (redundancy exactly 1; a node owning no op is charged by the output tile's share).
* Scatter as in fused mode, but each crop is the tile's owned part of the input plus the input's
  halo (the scatter device holds the whole map, so that halo costs no extra message).
* Halos: for every value and ordered pair of tiles on different devices whose windows read the
  other's part, one message of the box read (`terms.transfer_time_s`, latency included, bytes
  from the value's node's spec), sent when the sender has finished the op making the value, on
  the same FIFO resources as the crops. Tiles on one device share memory: no message.
* Schedule (layer-by-layer synchronisation): op by op in execution order (a block node's ops one
  after another, its time shared among them by the positions each computes; a node with no
  spatial op is one step), every device runs its tiles in index order; tile t starts op o at
  max(its device free, its crop arrived, every halo that o reads on t arrived). Each output tile
  leaves for the gather device when its last op is done. Messages are queued on a resource in the
  order their ops run, which is their
  ready order per directed link; with `contention="ports"` messages from two devices into one
  port are queued by op, not by the exact ready time (a small approximation).
* Memory: what the tile holds of each value (owned part plus halos) in the working set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coinfer.cluster import Cluster, Link
from coinfer.cost import terms
from coinfer.cost.tile_schedule import Contention, Exchange, StageSchedule, TileCost
from coinfer.cost.tile_shapes import RangeShapes, range_nodes
from coinfer.errors import PlanError
from coinfer.graph import Graph, Node
from coinfer.plan_tiling import Mode  # "fused": recompute the overlap (DeepThings); "halo": trade halos per op (CoEdge)
from coinfer.tiling.bounds import SpatialRange, tile_bounds
from coinfer.tiling.geometry import Region, TileGrid, check_cover
from coinfer.tiling.halo import HaloBounds, halo_bounds, owned_view

__all__ = ["Contention", "DeviceCost", "LinkUse", "Mode", "TileCost", "TiledStageCost", "range_nodes",
           "tiled_stage_cost"]



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
class LinkUse:
    """What a tiled stage sends over one directed link: messages, bytes, and their transfer time."""

    messages: int
    size_bytes: int
    transfer_s: float


@dataclass(frozen=True)
class TiledStageCost:
    """A fused tiled stage priced per tile, per device and in total (model: module docstring)."""

    scatter: str
    gather: str
    contention: Contention
    mode: Mode
    tiles: tuple[TileCost, ...]
    devices: Mapping[str, DeviceCost]
    latency_s: float  # input ready at the scatter device -> last output tile at the gather device
    scatter_bytes: int  # crops sent over links
    gather_bytes: int  # output tiles sent over links
    halo_bytes: int  # halo mode: halos sent between tile devices over links (0 in fused mode)
    messages: int  # sent over links: crops, output tiles and (halo mode) halos
    halo_messages: int  # of those, halos
    redundancy: float  # computed positions over the tiles / positions of the whole range (>= 1)
    redundancy_by_node: Mapping[str, float]
    weights_bytes: int  # of the whole range
    whole_working_set_bytes: int  # the largest working set of one node on the whole map
    whole_compute_s: Mapping[str, float]  # the untiled range on each device of the stage
    link_use: Mapping[tuple[str, str], LinkUse]  # directed link -> what the stage sends over it

    @property
    def critical_compute_s(self) -> float:
        """The busiest device's compute: the part of `latency_s` that is computing, the rest waits on links."""
        return max(d.compute_s for d in self.devices.values())

    @property
    def moved_bytes(self) -> int:
        return self.scatter_bytes + self.gather_bytes + self.halo_bytes

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
                     scatter: str, gather: str, contention: Contention = "links",
                     mode: Mode = "fused") -> TiledStageCost:
    """Price the tiled stage computing `spatial` (a range of `graph`) as `tiles` on `devices`.

    `mode="fused"` recomputes the overlap (each tile runs the whole range on its crop);
    `mode="halo"` has each tile compute only its owned parts and trade halos (`coinfer.tiling.halo`;
    `tiles` must then be a TileGrid, the ownership rule needs its cuts). Model: module docstring.

    `tiles` is a grid of the range's output or hand-written regions covering it once; `devices[i]`
    computes tile i (row-major for a grid). `node_time_s[device][node]` is the whole node's time
    at batch 1 (a Problem's), `cluster` gives the devices' power and the links. The range's input
    is on `scatter`, its stitched output goes to `gather`. Raises PlanError for a tile list that
    does not cover the output, a device count that does not match, an unknown device, missing node
    times, or a tile device that no link joins to the scatter or gather device (naming the link).
    """
    if mode not in ("fused", "halo"):
        raise PlanError(f"mode must be 'fused' or 'halo', not {mode!r}")
    if mode == "halo" and not isinstance(tiles, TileGrid):
        raise PlanError("halo-exchange mode splits every map at the grid's cuts; give a TileGrid, not a list of "
                        "regions")
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
    shapes = RangeShapes(graph, spatial, nodes)
    schedule = StageSchedule(contention)
    exchanges: list[Exchange] = []
    if mode == "fused":
        bounds = [tile_bounds(spatial, r) for r in regions]
        tile_costs = schedule.run(shapes, bounds, devices, node_time_s, links, scatter, gather)
    else:
        assert isinstance(tiles, TileGrid)
        halo = halo_bounds(spatial, tiles)
        links.update(_halo_links(cluster, halo, devices, spatial.input))
        bounds = [owned_view(halo, spatial, t) for t in range(len(regions))]
        tile_costs, exchanges = schedule.run_halo(shapes, halo, bounds, devices, node_time_s, links, scatter, gather)
    return TiledStageCost(
        scatter=scatter, gather=gather, contention=contention, mode=mode, tiles=tile_costs,
        devices=_device_costs(involved, tile_costs, shapes, cluster, links, scatter, gather, exchanges),
        latency_s=max(t.output_ready_s for t in tile_costs),
        scatter_bytes=sum(t.input_bytes for t in tile_costs if t.device != scatter),
        gather_bytes=sum(t.output_bytes for t in tile_costs if t.device != gather),
        halo_bytes=sum(e.size_bytes for e in exchanges), halo_messages=len(exchanges),
        messages=len(exchanges) + sum((t.device != scatter) + (t.device != gather) for t in tile_costs),
        redundancy=sum(b.computed_positions for b in bounds) / shapes.whole_positions,
        redundancy_by_node={n.id: shapes.redundancy(n.id, bounds) for n in nodes},
        weights_bytes=shapes.weights_bytes,
        whole_working_set_bytes=max(terms.working_set_bytes(graph, n) for n in nodes),
        whole_compute_s={d: sum(node_time_s[d][n.id] for n in nodes) for d in dict.fromkeys(devices)},
        link_use=_link_use(tile_costs, exchanges, scatter, gather),
    )


def _link_use(tiles: Sequence[TileCost], exchanges: Sequence[Exchange], scatter: str,
              gather: str) -> dict[tuple[str, str], LinkUse]:
    sends = [((scatter, t.device), t.input_bytes, t.scatter_s) for t in tiles if t.device != scatter]
    sends += [((t.device, gather), t.output_bytes, t.gather_s) for t in tiles if t.device != gather]
    sends += [((e.source, e.target), e.size_bytes, e.transfer_s) for e in exchanges]
    out: dict[tuple[str, str], LinkUse] = {}
    for key, size, time_s in sends:
        seen = out.get(key, LinkUse(0, 0, 0.0))
        out[key] = LinkUse(seen.messages + 1, seen.size_bytes + size, seen.transfer_s + time_s)
    return out


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


def _device_costs(involved: Sequence[str], tiles: Sequence[TileCost], shapes: RangeShapes, cluster: Cluster,
                  links: Mapping[tuple[str, str], Link], scatter: str, gather: str,
                  exchanges: Sequence[Exchange] = ()) -> dict[str, DeviceCost]:
    out: dict[str, DeviceCost] = {}
    for device in involved:
        mine = [t for t in tiles if t.device == device]
        # (link, bytes, transfer time) of each message this device sends
        sends = [(links[(scatter, t.device)], t.input_bytes, t.scatter_s)
                 for t in tiles if device == scatter and t.device != scatter]
        sends += [(links[(device, gather)], t.output_bytes, t.gather_s) for t in mine if device != gather]
        sends += [(links[(e.source, e.target)], e.size_bytes, e.transfer_s) for e in exchanges if e.source == device]
        compute_s = sum(t.compute_s for t in mine)
        energy_j = terms.compute_energy_j(cluster.device(device), compute_s)
        energy_j += sum(terms.transmit_energy_j(link, s) for link, _, s in sends)
        held = (shapes.input_bytes_whole if device == scatter else 0) + (
            shapes.output_bytes_whole if device == gather else 0)
        out[device] = DeviceCost(
            device=device, tiles=tuple(t.index for t in mine), compute_s=compute_s,
            received_bytes=sum(t.input_bytes for t in mine if device != scatter) + sum(
                e.size_bytes for e in exchanges if e.target == device),
            sent_bytes=sum(size for _, size, _ in sends), send_s=sum(s for _, _, s in sends),
            weights_bytes=shapes.weights_bytes if mine else 0,
            working_set_bytes=max((t.working_set_bytes for t in mine), default=0),
            held_map_bytes=held, energy_j=energy_j,
        )
    return out


def _halo_links(cluster: Cluster, halo: HaloBounds, devices: Sequence[str],
                range_input: str) -> dict[tuple[str, str], Link]:
    out: dict[tuple[str, str], Link] = {}
    for h in halo.halos:
        if h.value == range_input:  # comes with the scatter crop
            continue
        source, target = devices[h.source], devices[h.target]
        if source == target or (source, target) in out:
            continue
        link = cluster.link(source, target)
        if link is None:
            raise PlanError(f"tile {h.target} on {target!r} needs a halo of {h.value!r} from tile {h.source} on "
                            f"{source!r}, but cluster {cluster.name!r} has no link {source}->{target}; add it or "
                            "put neighbouring tiles on joined devices")
        out[(source, target)] = link
    return out

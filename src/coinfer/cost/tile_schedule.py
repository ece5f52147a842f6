"""The timeline of a tiled stage: messages on FIFO links or ports, devices computing their tiles in turn.

A message holds its resources for `transfer_time_s - latency` (the wire time of coinfer.shaping's
FIFO link) and arrives one latency later. With `contention="links"` the resource is the directed
link, as coinfer's simulator and emulated links treat it; with `"ports"` every device has one
outgoing and one incoming port. `StageSchedule.run` times fused tiles (each runs the whole range
on its crop), `run_halo` halo-exchange tiles op by op (coinfer.cost.tiled_stage's module docstring
gives both schedules). Pure Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from coinfer.cluster import Link
from coinfer.cost import terms
from coinfer.cost.tile_shapes import RangeShapes
from coinfer.errors import PlanError
from coinfer.tiling.bounds import TileBounds
from coinfer.tiling.geometry import Region
from coinfer.tiling.halo import Halo, HaloBounds, held_view

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
    halo_received_bytes: int = 0  # halo mode: what other devices' tiles sent it


@dataclass(frozen=True)
class Exchange:
    """One halo message between two tile devices."""

    source: str
    target: str
    size_bytes: int
    transfer_s: float


class StageSchedule:
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

    def scatter(self, shapes: RangeShapes, bounds: Sequence[TileBounds], devices: Sequence[str],
                links: Mapping[tuple[str, str], Link], scatter: str) -> dict[int, tuple[float, float]]:
        """Tile -> (scatter time, input ready time): crops round-robin over the tile devices."""
        rank: dict[int, int] = {}
        seen: dict[str, int] = defaultdict(int)
        for i, device in enumerate(devices):
            rank[i], seen[device] = seen[device], seen[device] + 1
        arrival: dict[int, tuple[float, float]] = {}
        for i in sorted(range(len(devices)), key=lambda i: (rank[i], i)):
            device = devices[i]
            arrival[i] = ((0.0, 0.0) if device == scatter
                          else self.send(links[(scatter, device)], shapes.input_bytes(bounds[i]), 0.0))
        return arrival

    def run_halo(self, shapes: RangeShapes, halo: HaloBounds, bounds: Sequence[TileBounds], devices: Sequence[str],
                 node_time_s: Mapping[str, Mapping[str, float]], links: Mapping[tuple[str, str], Link],
                 scatter: str, gather: str) -> tuple[tuple[TileCost, ...], list[Exchange]]:
        """Halo mode: op by op, each device runs its tiles' owned parts in index order; a tile starts
        an op once its device is free and the halos the op reads have arrived (module docstring).

        Op by op, not node by node: in a block graph one node holds several convolutions, and a
        halo made by one of them is read by the next inside the same node (resnet18's blocks)."""
        tiles = range(len(devices))
        arrival = self.scatter(shapes, bounds, devices, links, scatter)
        steps = halo_steps(shapes)
        step_of = _step_of_values(shapes, steps)
        waits: dict[tuple[int, int], list[Halo]] = defaultdict(list)  # (tile, reading step) -> halos it waits for
        made_by: dict[int, list[Halo]] = defaultdict(list)  # step -> halos of the values it makes
        for h in halo.halos:
            if h.value != shapes.spatial.input:  # the input's halo comes with the scatter crop
                waits[(h.target, step_of[h.reader])].append(h)
                made_by[step_of[h.value]].append(h)
        clock: dict[str, float] = defaultdict(float)
        done: dict[tuple[int, int], float] = {}
        halo_arrival: dict[Halo, float] = {}
        compute_s: dict[int, float] = defaultdict(float)
        first_start_s: dict[int, float] = {}
        received: dict[int, int] = defaultdict(int)
        exchanges: list[Exchange] = []
        for s, (node_id, op) in enumerate(steps):
            for t in tiles:
                device = devices[t]
                start = max(clock[device], arrival[t][1], *(halo_arrival[h] for h in waits[(t, s)]))
                spent = shapes.step_compute_s(node_id, op, bounds[t], node_time_s[device])
                first_start_s.setdefault(t, start)
                clock[device] = done[(t, s)] = start + spent
                compute_s[t] += spent
            for h in sorted(made_by[s], key=lambda h: (done[(h.source, s)], h.source, h.target)):
                ready, source, target = done[(h.source, s)], devices[h.source], devices[h.target]
                if source == target:  # tiles of one device share its memory
                    halo_arrival[h] = ready
                    continue
                size = shapes.value_bytes(h.value, h.region)
                transfer_s, halo_arrival[h] = self.send(links[(source, target)], size, ready)
                exchanges.append(Exchange(source, target, size, transfer_s))
                received[h.target] += size
        last = len(steps) - 1
        out: list[TileCost] = []
        for t in sorted(tiles, key=lambda t: (done[(t, last)], t)):
            device, b, end = devices[t], bounds[t], done[(t, last)]
            gather_s, ready = ((0.0, end) if device == gather
                               else self.send(links[(device, gather)], shapes.output_bytes(b), end))
            out.append(TileCost(
                index=t, device=device, tile=b.tile, input_region=b.input_region,
                computed_positions=b.computed_positions, compute_s=compute_s[t],
                working_set_bytes=shapes.working_set_bytes(held_view(halo, shapes.spatial, t)),
                input_bytes=shapes.input_bytes(b), output_bytes=shapes.output_bytes(b), scatter_s=arrival[t][0],
                gather_s=gather_s, input_ready_s=arrival[t][1], compute_start_s=first_start_s[t], compute_end_s=end,
                output_ready_s=ready, halo_received_bytes=received[t],
            ))
        return tuple(sorted(out, key=lambda c: c.index)), exchanges

    def run(self, shapes: RangeShapes, bounds: Sequence[TileBounds], devices: Sequence[str],
            node_time_s: Mapping[str, Mapping[str, float]], links: Mapping[tuple[str, str], Link],
            scatter: str, gather: str) -> tuple[TileCost, ...]:
        arrival = self.scatter(shapes, bounds, devices, links, scatter)
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


def halo_steps(shapes: RangeShapes) -> list[tuple[str, str | None]]:
    """The range's compute steps in execution order: (node, op) for each op that computes, and
    (node, None) for a node with no spatial op (it runs once, on its share of the output)."""
    steps: list[tuple[str, str | None]] = []
    for node in shapes.nodes:
        names = shapes.ops_of.get(node.id)
        steps.extend((node.id, name) for name in names) if names else steps.append((node.id, None))
    return steps


def _step_of_values(shapes: RangeShapes, steps: Sequence[tuple[str, str | None]]) -> dict[str, int]:
    """Value -> the step that makes it. An item (one result of a multi-output op) is made with the op
    it picks from."""
    step_of = {op: s for s, (_, op) in enumerate(steps) if op is not None}
    for op in shapes.spatial.ops:
        if op.name not in step_of and op.inputs and op.inputs[0] in step_of:
            step_of[op.name] = step_of[op.inputs[0]]
    return step_of

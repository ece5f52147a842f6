"""A plan: the device every node runs on, with a one-line printable form.

`str(plan)` lists the *stages* (maximal runs of consecutive nodes, in topological order, on one
device) as `first..last@device`, joined by ` | `:

    conv1..layer2.1.relu_1@phone | layer3.0.conv1..fc@edge

`parse_plan` reads that form back. It also accepts shorthands a person would type: a bare device
name (`edge`: every node there), a single node (`fc@edge`), and module prefixes as range ends
(`conv1..layer2@phone` runs from the first node of `conv1` to the last node under `layer2`). Ranges
are half-open nowhere: both ends are included. Every node must be covered exactly once.

Replicas (the survey's replicated partitions): `layer3..fc@edge+cloud+edge2` runs the stage on
`edge` (its primary) and keeps it ready on `cloud`, then `edge2` (its standbys, in the order
failover tries them). A standby holds the stage's weights from deployment on; the runtime moves
the stage to it without a re-solve when its primary is lost (coinfer.runtime.recovery), and the
cost model's reliability counts it (coinfer.cost.reliability).

Tiled stages (coinfer.plan_tiling): `features.0..features.16@tiles[2x2,fused](e1,e2,e3,e4)>e1`
computes the range as four tiles on e1..e4 and stitches them on e1; the plan places the range's
nodes on the gather device (e1), and `Plan.tilings` says how they are really computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coinfer.codec_model import NO_CODEC, Codec
from coinfer.errors import PlanError
from coinfer.graph import Graph, ParallelGroup
from coinfer.plan_tiling import Tiling, check_tilings, is_tile_spec, parse_tile_spec, tiling_with_gather


@dataclass(frozen=True)
class Stage:
    """A maximal run of nodes [first, last] (both included, topological order) on one device, with
    the same standby devices (none unless the plan has replicas)."""

    device: str
    node_ids: tuple[str, ...]
    standbys: tuple[str, ...] = ()
    tiling: Tiling | None = None  # a tiled stage: `device` is its gather device

    @property
    def replicas(self) -> tuple[str, ...]:
        """The primary, then the standbys in failover order."""
        return (self.device, *self.standbys)

    def __str__(self) -> str:
        first, last = self.node_ids[0], self.node_ids[-1]
        span = first if first == last else f"{first}..{last}"
        return f"{span}@{self.tiling.spec() if self.tiling else '+'.join(self.replicas)}"

    @property
    def compute_devices(self) -> tuple[str, ...]:
        """The devices that compute the stage: its tile devices, or its device."""
        return self.tiling.tile_devices if self.tiling else (self.device,)


@dataclass(frozen=True)
class Plan:
    """Where every node of `graph` runs; `placement` maps node id -> device name.

    `solver` names what produced it (a solver name, or "placement" for a hand-written one);
    `reported_objective` is the objective value the solver believed its plan has (None for a
    hand-written plan), which tests hold equal to `cost.evaluate`'s. `codecs` maps a directed
    (source, target) device pair to the codec of that link; a link not listed sends raw bytes.
    Solvers leave it empty; `cost.evaluate` prices what it lists. `standbys` maps a node id to the
    devices that stand by for it (see the module docstring); a node not listed has none.
    `tilings` are its tiled stages (coinfer.plan_tiling): each range's nodes are placed on its
    gather device. `stage_starts` names nodes that begin a new stage although the node before runs
    on the same device (a tiled plan lowered for the runtime keeps a device's crops, its tile and
    the stitch apart, so that each is sent or started as soon as it can be). The members and the
    join of a parallel group spread over devices (a tensor-parallel layer's shards and their sum)
    start stages of their own too, so that a device sends the fork's value before it runs its own
    shard, and runs its shard before it waits for the others' at the join.
    """

    graph: Graph
    placement: Mapping[str, str]
    solver: str = "placement"
    reported_objective: float | None = None
    codecs: Mapping[tuple[str, str], Codec] = field(default_factory=dict)
    standbys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tilings: tuple[Tiling, ...] = ()
    stage_starts: frozenset[str] = frozenset()  # nodes that start a stage even after a node on their device

    def __post_init__(self) -> None:
        missing = [n.id for n in self.graph.nodes if n.id not in self.placement]
        if missing:
            raise PlanError(
                f"the plan leaves {len(missing)} node(s) unplaced, first {missing[:3]}; "
                f"every node needs a device"
            )
        extra = [k for k in self.placement if k not in self.graph.index]
        if extra:
            raise PlanError(f"the plan places unknown node(s) {extra[:3]}; graph {self.graph.name!r} has no such node")
        for node_id, standby in self.standbys.items():
            if node_id not in self.graph.index:
                raise PlanError(f"the plan gives standbys to unknown node {node_id!r}")
            if self.placement[node_id] in standby:
                raise PlanError(f"node {node_id!r}: standby {self.placement[node_id]!r} is the device it runs on; a "
                                "standby must be another device (a replica on its own primary survives nothing)")
            if len(set(standby)) != len(standby):
                raise PlanError(f"node {node_id!r} names a standby twice: {'+'.join(standby)}")
        check_tilings(self.graph, self.placement, self.standbys, self.tilings)
        strays = sorted(n for n in self.stage_starts if n not in self.graph.index)
        if strays:
            raise PlanError(f"the plan starts stages at unknown node(s) {strays[:3]}")
        loops = [f"{s}->{t}" for s, t in self.codecs if s == t]
        if loops:
            raise PlanError(f"codecs name link(s) {loops} from a device to itself; a codec belongs to a link "
                            f"between two different devices")

    @property
    def tiled_node_ids(self) -> frozenset[str]:
        """The nodes that tiled stages compute (empty for a plan without them)."""
        return frozenset(self._tiling_by_node)

    def tiling_of(self, node_id: str) -> Tiling | None:
        """The tiled stage that computes `node_id`, if one does."""
        return self._tiling_by_node.get(node_id)

    @property
    def _tiling_by_node(self) -> Mapping[str, Tiling]:
        out: dict[str, Tiling] = {}
        for tiling in self.tilings:
            start, stop = self.graph.index[tiling.first], self.graph.index[tiling.last]
            out.update({n.id: tiling for n in self.graph.nodes[start:stop + 1]})
        return out

    @property
    def spread_groups(self) -> tuple[ParallelGroup, ...]:
        """The graph's parallel groups whose members run on two or more devices (run at once)."""
        return tuple(g for g in self.graph.parallel_groups.values()
                     if len({self.placement[m] for m in g.members}) > 1)

    @property
    def _spread_group_starts(self) -> frozenset[str]:
        """The members and joins of the spread groups: each starts a stage of its own."""
        return frozenset(n for g in self.spread_groups for n in (*g.members, g.join))

    def codec(self, source: str, target: str) -> Codec:
        """The codec of the directed link source -> target (`none` unless `codecs` lists it)."""
        return self.codecs.get((source, target), NO_CODEC)

    @property
    def stages(self) -> tuple[Stage, ...]:
        runs: list[Stage] = []
        tiled = self._tiling_by_node
        starts = self.stage_starts | self._spread_group_starts
        for node in self.graph.nodes:
            device, standby = self.placement[node.id], tuple(self.standbys.get(node.id, ()))
            tiling = tiled.get(node.id)
            if runs and (runs[-1].device, runs[-1].standbys, runs[-1].tiling) == (device, standby, tiling) and (
                    node.id not in starts):
                runs[-1] = Stage(device, (*runs[-1].node_ids, node.id), standby, tiling)
            else:
                runs.append(Stage(device, (node.id,), standby, tiling))
        return tuple(runs)

    @property
    def devices_used(self) -> tuple[str, ...]:
        """The devices that compute (the primaries and tile devices) or gather tiles, in the order of the nodes."""
        return tuple(dict.fromkeys(d for s in self.stages for d in (*s.compute_devices, s.device)))

    @property
    def standby_devices(self) -> tuple[str, ...]:
        """The devices that stand by for some node and compute nothing (a primary can be both)."""
        used = set(self.devices_used)
        return tuple(d for d in dict.fromkeys(d for n in self.graph.nodes for d in self.standbys.get(n.id, ()))
                     if d not in used)

    @property
    def has_standbys(self) -> bool:
        return any(self.standbys.get(n.id) for n in self.graph.nodes)

    def with_standbys(self, standbys: Mapping[str, tuple[str, ...]]) -> Plan:
        """This plan with `standbys` instead of its own (node id -> standby devices)."""
        return Plan(self.graph, self.placement, self.solver, self.reported_objective, self.codecs,
                    {n: tuple(s) for n, s in standbys.items() if s}, self.tilings, self.stage_starts)

    def failover(self, down: Iterable[str]) -> Plan | None:
        """The plan the runtime moves to when `down` are lost, without a re-solve: each node on its first
        replica that is up, keeping the later ones as its standbys; None when a node has no replica up.
        A tiled stage gives a lost device's tiles to its tile devices that are up, in turn (the grid
        stays); with none up, or its gather device lost, None."""
        gone = set(down)
        tilings: list[Tiling] = []
        for tiling in self.tilings:
            alive = [d for d in tiling.tile_devices if d not in gone]
            if not alive or tiling.gather in gone:
                return None
            spare = iter(alive * tiling.tile_count)
            tilings.append(tiling.with_devices(tuple(d if d not in gone else next(spare) for d in tiling.devices)))
        placement: dict[str, str] = {}
        standbys: dict[str, tuple[str, ...]] = {}
        for node in self.graph.nodes:
            alive = [d for d in (self.placement[node.id], *self.standbys.get(node.id, ())) if d not in gone]
            if not alive:
                return None
            placement[node.id], standbys[node.id] = alive[0], tuple(alive[1:])
        return Plan(self.graph, placement, self.solver, None, self.codecs,
                    {n: s for n, s in standbys.items() if s}, tuple(tilings), self.stage_starts)

    def __str__(self) -> str:
        return " | ".join(str(s) for s in self.stages)


def all_on(graph: Graph, device: str, solver: str = "placement") -> Plan:
    return Plan(graph, {n.id: device for n in graph.nodes}, solver)


def parse_plan(text: str, graph: Graph, devices: tuple[str, ...]) -> Plan:
    """Read the one-line form (see the module docstring) for `graph` over `devices`."""
    text = text.strip()
    if text in devices:
        return all_on(graph, text)
    placement: dict[str, str] = {}
    standbys: dict[str, tuple[str, ...]] = {}
    tilings: list[Tiling] = []
    open_gathers: list[dict[str, Any]] = []  # tiled stages without '>': their gather is who reads them next
    for segment in (s.strip() for s in text.split("|")):
        span, at, where = segment.rpartition("@")
        if not at or not span:
            raise PlanError(f"plan segment {segment!r} should look like 'first..last@device' or 'node@device'")
        if is_tile_spec(where) and where.strip() not in devices:
            first, _, last = span.partition("..")
            start = _resolve(first, graph, want_last=False)
            end = _resolve(last or first, graph, want_last=True)
            if end < start:
                raise PlanError(f"plan segment {segment!r}: {last!r} comes before {first!r} in topological order")
            tiling, fields = parse_tile_spec(where, graph.nodes[start].id, graph.nodes[end].id, devices)
            for node in graph.nodes[start : end + 1]:
                if node.id in placement:
                    raise PlanError(f"node {node.id!r} is placed twice (segment {segment!r} overlaps an earlier one)")
                placement[node.id] = tiling.gather if tiling else ""
            if tiling:
                tilings.append(tiling)
            else:
                open_gathers.append(fields)
            continue
        device, *standby = (d.strip() for d in where.split("+"))
        for name in (device, *standby):
            if name not in devices:
                raise PlanError(f"plan segment {segment!r} names unknown device {name!r}; devices: "
                                f"{', '.join(devices)}")
        first, _, last = span.partition("..")
        start = _resolve(first, graph, want_last=False)
        end = _resolve(last or first, graph, want_last=True)
        if end < start:
            raise PlanError(f"plan segment {segment!r}: {last!r} comes before {first!r} in topological order")
        for node in graph.nodes[start : end + 1]:
            if node.id in placement:
                raise PlanError(f"node {node.id!r} is placed twice (segment {segment!r} overlaps an earlier one)")
            placement[node.id] = device
            if standby:
                standbys[node.id] = tuple(standby)
    for fields in open_gathers:
        gather = _next_reader_device(graph, fields["last"], placement, devices[0])
        tilings.append(tiling_with_gather(fields, gather))
        start, stop = graph.index[fields["first"]], graph.index[fields["last"]]
        placement.update({n.id: gather for n in graph.nodes[start:stop + 1]})
    try:
        return Plan(graph, placement, standbys=standbys, tilings=tuple(tilings))
    except PlanError as exc:
        raise PlanError(f"plan {text!r}: {exc}") from None


def _next_reader_device(graph: Graph, last: str, placement: Mapping[str, str], origin: str) -> str:
    """The device of the first node that reads `last` (the origin when nothing does: a model output)."""
    readers = [placement.get(c) for c in graph.consumers.get(last, ())]
    return next((d for d in readers if d), origin)


def _resolve(name: str, graph: Graph, *, want_last: bool) -> int:
    """Position of node `name`, or of the first/last node whose id or module lies under `name`."""
    if name in graph.index:
        return graph.index[name]
    under = [i for i, n in enumerate(graph.nodes) if _within(n.id, name) or _within(n.module, name)
             or (n.block is not None and _within(n.block, name))]
    if not under:
        raise PlanError(f"plan names {name!r}, which is no node or module of graph {graph.name!r}")
    return under[-1] if want_last else under[0]


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")

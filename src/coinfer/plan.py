"""A plan: the device every node runs on, with a one-line printable form.

`str(plan)` lists the *stages* (maximal runs of consecutive nodes, in topological order, on one
device) as `first..last@device`, joined by ` | `:

    conv1..layer2.1.relu_1@phone | layer3.0.conv1..fc@edge

`parse_plan` reads that form back. It also accepts shorthands a person would type: a bare device
name (`edge`: every node there), a single node (`fc@edge`), and module prefixes as range ends
(`conv1..layer2@phone` runs from the first node of `conv1` to the last node under `layer2`). Ranges
are half-open nowhere: both ends are included. Every node must be covered exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from coinfer.codec_model import NO_CODEC, Codec
from coinfer.errors import PlanError
from coinfer.graph import Graph


@dataclass(frozen=True)
class Stage:
    """A maximal run of nodes [first, last] (both included, topological order) on one device."""

    device: str
    node_ids: tuple[str, ...]

    def __str__(self) -> str:
        first, last = self.node_ids[0], self.node_ids[-1]
        span = first if first == last else f"{first}..{last}"
        return f"{span}@{self.device}"


@dataclass(frozen=True)
class Plan:
    """Where every node of `graph` runs; `placement` maps node id -> device name.

    `solver` names what produced it (a solver name, or "placement" for a hand-written one);
    `reported_objective` is the objective value the solver believed its plan has (None for a
    hand-written plan), which tests hold equal to `cost.evaluate`'s. `codecs` maps a directed
    (source, target) device pair to the codec of that link; a link not listed sends raw bytes.
    Solvers leave it empty; `cost.evaluate` prices what it lists.
    """

    graph: Graph
    placement: Mapping[str, str]
    solver: str = "placement"
    reported_objective: float | None = None
    codecs: Mapping[tuple[str, str], Codec] = field(default_factory=dict)

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
        loops = [f"{s}->{t}" for s, t in self.codecs if s == t]
        if loops:
            raise PlanError(f"codecs name link(s) {loops} from a device to itself; a codec belongs to a link "
                            f"between two different devices")

    def codec(self, source: str, target: str) -> Codec:
        """The codec of the directed link source -> target (`none` unless `codecs` lists it)."""
        return self.codecs.get((source, target), NO_CODEC)

    @property
    def stages(self) -> tuple[Stage, ...]:
        runs: list[Stage] = []
        for node in self.graph.nodes:
            device = self.placement[node.id]
            if runs and runs[-1].device == device:
                runs[-1] = Stage(device, (*runs[-1].node_ids, node.id))
            else:
                runs.append(Stage(device, (node.id,)))
        return tuple(runs)

    @property
    def devices_used(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.placement[n.id] for n in self.graph.nodes))

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
    for segment in (s.strip() for s in text.split("|")):
        span, at, device = segment.rpartition("@")
        if not at or not span:
            raise PlanError(f"plan segment {segment!r} should look like 'first..last@device' or 'node@device'")
        if device not in devices:
            raise PlanError(f"plan segment {segment!r} names unknown device {device!r}; devices: {', '.join(devices)}")
        first, _, last = span.partition("..")
        start = _resolve(first, graph, want_last=False)
        end = _resolve(last or first, graph, want_last=True)
        if end < start:
            raise PlanError(f"plan segment {segment!r}: {last!r} comes before {first!r} in topological order")
        for node in graph.nodes[start : end + 1]:
            if node.id in placement:
                raise PlanError(f"node {node.id!r} is placed twice (segment {segment!r} overlaps an earlier one)")
            placement[node.id] = device
    return Plan(graph, placement)


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

"""The DNN as a DAG of nodes in topological order.

A `Graph` is what every later stage reads: solvers and the cost model see only node ids, FLOPs,
parameter bytes and output bytes; the runtime also uses `source` (the model it came from) and
`Node.source_nodes` (the fx or ONNX nodes a coinfer node stands for). Chains, DAGs and
transformers are all just graphs; a *block* is a named group of nodes that a solver may keep
whole (`coarsen_to_blocks` turns each into a single node).

The input of the model is named by `GraphInput.name` (`"input"` for single-input models); a node
whose `inputs` list a graph input reads the model input. Graph outputs are `Graph.outputs`, by
default the nodes no one consumes.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

from coinfer.errors import GraphFileError

GRAPH_FORMAT_VERSION = 1
DEFAULT_INPUT_NAME = "input"

Granularity = Literal["op", "block"]


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and size of one tensor; shape and dtype are None for hand-written graphs."""

    size_bytes: int
    shape: tuple[int, ...] | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class GraphInput:
    """One input of the model (an image batch, token ids, an attention mask)."""

    name: str
    spec: TensorSpec


@dataclass(frozen=True)
class Node:
    """One operation (or, at block granularity, one block) of the model.

    `inputs` are ids of producer nodes or names of graph inputs. `outputs` lists the tensors the
    node produces when they are known (a captured graph); `output_bytes` is their total and is what
    crosses a cut placed after this node. `param_bytes` are the weights the node holds (a weight
    two nodes read counts once, at the first); `param_read_bytes`, when given, what one run of it
    reads of weights instead (an embedding gathers a few rows of its table; a tied LM head reads a
    table another node holds), which is what the roofline streams through memory.
    `parallel_group` names a set of nodes that may run at once on different devices: they read
    no output of each other and one node outside the set (its join) reads all their outputs, as
    the shards of a tensor-parallel layer and their sum do (`Graph.parallel_groups`; the cost
    model prices a group spread over devices by its slowest device, coinfer.cost.parallel_groups).
    """

    id: str
    inputs: tuple[str, ...]
    flops: float
    output_bytes: int
    param_bytes: int = 0
    op: str = ""
    outputs: tuple[TensorSpec, ...] = ()
    module: str = ""
    block: str | None = None
    source_nodes: tuple[str, ...] = ()
    param_read_bytes: int | None = None  # None: it reads its param_bytes
    parallel_group: str | None = None

    @property
    def weight_bytes_read(self) -> int:
        """What one run of the node reads of weights (`param_read_bytes`, else `param_bytes`)."""
        return self.param_bytes if self.param_read_bytes is None else self.param_read_bytes


@dataclass(frozen=True)
class ModelSource:
    """How to rebuild the model a graph was captured from (so a runtime can build its stages)."""

    spec: str
    input_shapes: tuple[tuple[int, ...], ...] = ()
    seed: int = 0
    options: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    """A DAG of nodes in topological order; see the module docstring."""

    name: str
    inputs: tuple[GraphInput, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...] = ()
    granularity: Granularity = "op"
    source: ModelSource | None = None

    def __post_init__(self) -> None:
        _check_topological(self.inputs, self.nodes)
        if not self.outputs:
            consumed = {i for n in self.nodes for i in n.inputs}
            object.__setattr__(
                self, "outputs", tuple(n.id for n in self.nodes if n.id not in consumed)
            )
        unknown = [o for o in self.outputs if o not in self.index]
        if unknown:
            raise GraphFileError(f"graph {self.name!r}: outputs name unknown nodes {unknown}")
        _ = self.parallel_groups  # checked when the graph is made, not when a plan is priced

    @cached_property
    def parallel_groups(self) -> Mapping[str, ParallelGroup]:
        """Each `parallel_group` name -> its members (in order) and its join, checked."""
        members: dict[str, list[str]] = {}
        for n in self.nodes:
            if n.parallel_group is not None:
                members.setdefault(n.parallel_group, []).append(n.id)
        return {name: _parallel_group(self, name, tuple(ids)) for name, ids in members.items()}

    @cached_property
    def parallel_group_of(self) -> Mapping[str, ParallelGroup]:
        """Member node id -> its group."""
        return {m: g for g in self.parallel_groups.values() for m in g.members}

    # -- lookups (computed once; the graph is immutable) ------------------------------------

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Position of each node id in topological order."""
        return {n.id: i for i, n in enumerate(self.nodes)}

    @cached_property
    def input_names(self) -> frozenset[str]:
        return frozenset(i.name for i in self.inputs)

    @cached_property
    def consumers(self) -> Mapping[str, tuple[str, ...]]:
        """Ids of the nodes reading each node id or graph input name."""
        readers: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        readers.update({i.name: [] for i in self.inputs})
        for n in self.nodes:
            for src in dict.fromkeys(n.inputs):
                readers[src].append(n.id)
        return {k: tuple(v) for k, v in readers.items()}

    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[self.index[node_id]]
        except KeyError:
            raise GraphFileError(
                f"graph {self.name!r} has no node {node_id!r}; "
                f"nodes run from {self.nodes[0].id!r} to {self.nodes[-1].id!r}"
            ) from None

    def tensor_bytes(self, producer: str) -> int:
        """Bytes of the value named `producer` (a node id or a graph input name)."""
        if producer in self.index:
            return self.node(producer).output_bytes
        for gi in self.inputs:
            if gi.name == producer:
                return gi.spec.size_bytes
        raise GraphFileError(f"graph {self.name!r} has no node or input {producer!r}")

    def value_specs(self, value: str) -> tuple[TensorSpec, ...]:
        """The tensors of a value: a node's `outputs` (one float32 tensor of `output_bytes` when the
        graph does not list them), or a graph input's spec."""
        if value in self.input_names:
            return tuple(i.spec for i in self.inputs if i.name == value)
        node = self.node(value)
        return node.outputs or (TensorSpec(node.output_bytes),)

    # -- totals ------------------------------------------------------------------------------

    @property
    def total_flops(self) -> float:
        return sum(n.flops for n in self.nodes)

    @property
    def total_param_bytes(self) -> int:
        return sum(n.param_bytes for n in self.nodes)

    @property
    def input_bytes(self) -> int:
        return sum(i.spec.size_bytes for i in self.inputs)

    @property
    def output_bytes(self) -> int:
        """Bytes of the model's outputs (what must return to the origin)."""
        return sum(self.node(o).output_bytes for o in self.outputs)

    @property
    def is_chain(self) -> bool:
        """True when every node reads only its predecessor (or the input, for the first)."""
        for i, n in enumerate(self.nodes):
            expected = {self.nodes[i - 1].id} if i else self.input_names
            if not set(n.inputs) <= expected or (i and not n.inputs):
                return False
        return True

    @property
    def blocks(self) -> Mapping[str, tuple[str, ...]]:
        """Block name -> ids of its nodes, in topological order."""
        groups: dict[str, list[str]] = {}
        for n in self.nodes:
            if n.block is not None:
                groups.setdefault(n.block, []).append(n.id)
        return {k: tuple(v) for k, v in groups.items()}


@dataclass(frozen=True)
class ParallelGroup:
    """Nodes that may run at once (`members`), the node that reads all their outputs (`join`), and
    the values only they read (`forks`: what a device of the group must receive before its members
    start, the broadcast of a tensor-parallel layer's input)."""

    name: str
    members: tuple[str, ...]
    join: str
    forks: tuple[str, ...]


def _parallel_group(graph: Graph, name: str, members: tuple[str, ...]) -> ParallelGroup:
    where = f"graph {graph.name!r}: parallel group {name!r}"
    if len(members) < 2:
        raise GraphFileError(f"{where} has one member ({members[0]!r}); a group needs two or more, "
                             "or drop its 'parallel_group'")
    inside = set(members)
    joins: set[str] = set()
    for m in members:
        reads_member = [s for s in graph.node(m).inputs if s in inside]
        if reads_member:
            raise GraphFileError(f"{where}: member {m!r} reads member {reads_member[0]!r}; members must not "
                                 "depend on each other")
        if m in graph.outputs:
            raise GraphFileError(f"{where}: member {m!r} is a model output; a group's outputs go to its join")
        joins.update(graph.consumers[m])
    if len(joins) != 1:
        raise GraphFileError(f"{where}: its members' outputs are read by {sorted(joins) or 'nothing'}; "
                             "exactly one node outside the group must read them all")
    join = joins.pop()
    unread = [m for m in members if graph.consumers[m] != (join,)]
    if unread:
        raise GraphFileError(f"{where}: member {unread[0]!r} is not read by the join {join!r}")
    forks = dict.fromkeys(s for m in members for s in graph.node(m).inputs
                          if s in graph.index and set(graph.consumers[s]) <= inside)
    return ParallelGroup(name, members, join, tuple(forks))


def _check_topological(inputs: Sequence[GraphInput], nodes: Sequence[Node]) -> None:
    """Reject duplicate ids, dangling references and nodes listed before their producers."""
    if not nodes:
        raise GraphFileError("a graph needs at least one node in 'nodes'")
    seen = {i.name for i in inputs}
    if len(seen) != len(inputs):
        raise GraphFileError("graph input names must be unique")
    for n in nodes:
        if n.id in seen:
            raise GraphFileError(f"node id {n.id!r} is used twice (ids must be unique)")
        missing = [src for src in n.inputs if src not in seen]
        if missing:
            raise GraphFileError(
                f"node {n.id!r} reads {missing}, which is neither a graph input nor a node "
                f"listed before it; list nodes in topological order and check the spelling"
            )
        seen.add(n.id)


def topological_order(nodes: Iterable[Node], input_names: Iterable[str]) -> tuple[Node, ...]:
    """Kahn's algorithm, always taking the earliest-listed ready node, so a list that is already
    topological comes back unchanged. Raises on duplicate ids, a cycle or a dangling input."""
    listed = list(nodes)
    position: dict[str, int] = {}
    for k, n in enumerate(listed):
        if n.id in position:
            raise GraphFileError(f"node id {n.id!r} is used twice (ids must be unique)")
        position[n.id] = k
    known = set(input_names)
    waiting = [len({s for s in dict.fromkeys(n.inputs) if s not in known}) for n in listed]
    readers: dict[str, list[int]] = {}
    for k, n in enumerate(listed):
        for src in dict.fromkeys(n.inputs):
            if src not in known:
                readers.setdefault(src, []).append(k)
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    ordered: list[Node] = []
    while ready:
        k = heapq.heappop(ready)
        ordered.append(listed[k])
        for r in readers.get(listed[k].id, []):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(ordered) < len(listed):
        done = {n.id for n in ordered}
        stuck = {n.id: [s for s in n.inputs if s not in done and s not in known] for n in listed
                 if n.id not in done}
        first = dict(list(stuck.items())[:5])
        raise GraphFileError(f"the nodes cannot be ordered: a cycle, or inputs that name nothing ({first})")
    return tuple(ordered)


def coarsen_to_blocks(graph: Graph) -> Graph:
    """Contract every block into one node: the block-granularity view of a graph.

    A block node reads the values its members read from outside the block, sums their FLOPs and
    parameters, and outputs the member values read outside the block (or returned by the model).
    Nodes in no block stay as they are. Blocks come from module boundaries, which are convex in a
    traced graph, so the contraction keeps the graph acyclic (checked by the constructor).
    """
    if graph.granularity == "block":
        return graph
    member_of = {n.id: n.block for n in graph.nodes if n.block is not None}
    if not member_of:
        return replace(graph, granularity="block")

    def rep(value: str) -> str:
        return member_of.get(value, value)

    external_reads: set[str] = set(graph.outputs)
    for n in graph.nodes:
        external_reads.update(src for src in n.inputs if rep(src) != rep(n.id))

    merged: dict[str, Node] = {}
    order: list[str] = []
    for n in graph.nodes:
        key = rep(n.id)
        inputs = tuple(dict.fromkeys(rep(s) for s in n.inputs if rep(s) != key))
        outs = n.outputs if n.id in external_reads else ()
        out_bytes = n.output_bytes if n.id in external_reads else 0
        if key not in merged:
            order.append(key)
            merged[key] = Node(
                id=key, inputs=inputs, flops=n.flops, output_bytes=out_bytes,
                param_bytes=n.param_bytes, op=n.op if n.block is None else "block",
                outputs=outs, module=n.module if n.block is None else key,
                block=n.block, source_nodes=n.source_nodes or (n.id,), param_read_bytes=n.param_read_bytes,
            )
            continue
        m = merged[key]
        reads = None if m.param_read_bytes is None and n.param_read_bytes is None else \
            m.weight_bytes_read + n.weight_bytes_read
        merged[key] = replace(
            m,
            inputs=tuple(dict.fromkeys(m.inputs + inputs)),
            flops=m.flops + n.flops,
            output_bytes=m.output_bytes + out_bytes,
            param_bytes=m.param_bytes + n.param_bytes,
            param_read_bytes=reads,
            outputs=m.outputs + outs,
            source_nodes=m.source_nodes + (n.source_nodes or (n.id,)),
        )
    nodes = topological_order((merged[k] for k in order), graph.input_names)
    outputs = tuple(dict.fromkeys(rep(o) for o in graph.outputs))
    return replace(graph, nodes=nodes, outputs=outputs, granularity="block")

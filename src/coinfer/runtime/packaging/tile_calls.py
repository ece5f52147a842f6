"""The aten calls a lowered tiled stage is made of, and the nodes that own them (shared by both modes).

A lowered tiled stage (coinfer.runtime.packaging.tiled_program) is a `Piece`: nodes of the expanded
graph with their devices and predicted times, and the ops, calls and value specs those nodes own.
Every call here is an aten operator (`aten.slice`, `aten.constant_pad_nd`, `aten.cat`,
`aten.clone`) or a call of the captured program with its values renamed, so a worker runs it with
the checks it applies to any program.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coinfer.errors import PlanError
from coinfer.graph import Graph, Node, TensorSpec
from coinfer.plan import Plan
from coinfer.plan_tiling import Tiling
from coinfer.problem import Problem
from coinfer.runtime.packaging.torch_program import TorchProgram
from coinfer.runtime.program import ProgramOp
from coinfer.tiling.bounds import OpBounds, SpatialOp, SpatialRange
from coinfer.tiling.geometry import Region
from coinfer.tiling.program_ops import CONVOLUTIONS, MAX_POOLS, bound_args, written_args

SLICE, PAD, CAT, CLONE = "aten.slice.Tensor", "aten.constant_pad_nd.default", "aten.cat.default", "aten.clone.default"
ELEMENT_BYTES = {"float16": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class Context:
    """What lowering one tiled stage reads: the range, the program's fx nodes and calls, shapes."""

    graph: Graph
    problem: Problem
    tiling: Tiling
    spatial: SpatialRange
    fx_nodes: Mapping[str, Any]
    placeholders: Mapping[str, str]  # placeholder name -> graph input name (what the index calls it)
    program: TorchProgram
    range_nodes: tuple[Node, ...]
    input_value: str  # the range input as the index names it
    input_node: str  # the node (or graph input) that makes it
    batch: int
    dtype: str | None

    @property
    def last(self) -> Node:
        return self.range_nodes[-1]

    def channels(self, value: str) -> int:
        val = self.fx_nodes[value].meta.get("val")
        if isinstance(val, list | tuple):
            val = val[0]
        return int(val.shape[1])

    def spec(self, value: str, region: Region) -> TensorSpec:
        size = ELEMENT_BYTES.get(self.dtype or "float32", 4)
        shape = (self.batch, self.channels(value), region.height, region.width)
        return TensorSpec(size * shape[0] * shape[1] * shape[2] * shape[3], shape, self.dtype)

    def is_tensor(self, value: str) -> bool:
        """A value a spec can describe (a multi-output op's value is a tuple)."""
        return not isinstance(self.fx_nodes[value].meta.get("val"), list | tuple)

    def range_time_s(self, device: str) -> float:
        return sum(self.problem.node_time_s[device][n.id] for n in self.range_nodes)


def context(plan: Plan, problem: Problem, tiling: Tiling, spatial: SpatialRange, fx_nodes: Mapping[str, Any],
            placeholders: Mapping[str, str], program: TorchProgram) -> Context:
    graph = problem.graph
    start, stop = graph.index[tiling.first], graph.index[tiling.last]
    range_nodes = graph.nodes[start:stop + 1]
    inside = {n.id for n in range_nodes}
    input_value = placeholders.get(spatial.input, spatial.input)
    spec = program.index.specs[input_value]
    if spec.shape is None or len(spec.shape) != 4:
        raise PlanError(f"tiled stage {tiling.first}..{tiling.last} reads a tensor of shape {spec.shape}, not a batch "
                        "of feature maps (N, C, H, W)")
    return Context(graph, problem, tiling, spatial, fx_nodes, placeholders, program, range_nodes, input_value,
                   next(v for n in range_nodes for v in n.inputs if v not in inside), spec.shape[0], spec.dtype)


@dataclass
class Piece:
    """What one tiled stage becomes: nodes, their placement and times, and the ops, calls, specs they own."""

    removed_ops: tuple[str, ...]
    devices: tuple[str, ...]  # every device of the problem, for the times
    nodes: list[Node] = field(default_factory=list)
    placement: dict[str, str] = field(default_factory=dict)
    starts: set[str] = field(default_factory=set)
    times: dict[str, dict[str, float]] = field(default_factory=dict)
    ops: list[ProgramOp] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    reads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    specs: dict[str, TensorSpec] = field(default_factory=dict)

    def add_op(self, name: str, owner: str, call: dict[str, Any], inputs: Sequence[str],
               weight_reads: tuple[str, ...] = ()) -> None:
        self.ops.append(ProgramOp(name, owner, tuple(dict.fromkeys(inputs)), (name,)))
        self.calls[name] = call
        self.reads[name] = weight_reads

    def add_slice(self, name: str, source: str, region: Region, owner: str) -> None:
        """`name` = source[:, :, rows, cols] (two aten.slice calls: views, no copy)."""
        rows = f"{name}#rows"
        self.add_op(rows, owner, {"target": SLICE, "args": [{"value": source}, 2, region.rows.start,
                                                            region.rows.stop, 1], "kwargs": {}}, [source])
        self.add_op(name, owner, {"target": SLICE, "args": [{"value": rows}, 3, region.cols.start,
                                                            region.cols.stop, 1], "kwargs": {}}, [rows])

    def add_grid_cat(self, name: str, rows: Sequence[Sequence[str]], owner: str) -> None:
        """`name` = the values of `rows` (a grid, row-major) put together: each row along the width,
        then the rows along the height. A single value is taken as it is (a clone, so `name` exists)."""
        if len(rows) == 1 and len(rows[0]) == 1:
            self.add_op(name, owner, {"target": CLONE, "args": [{"value": rows[0][0]}], "kwargs": {}}, rows[0])
            return
        joined = []
        for r, row in enumerate(rows):
            if len(row) == 1:
                joined.append(row[0])
                continue
            value = name if len(rows) == 1 else f"{name}#row{r}"
            self.add_op(value, owner, {"target": CAT, "args": [[{"value": v} for v in row], 3], "kwargs": {}}, row)
            joined.append(value)
        if len(rows) > 1:
            self.add_op(name, owner, {"target": CAT, "args": [[{"value": v} for v in joined], 2], "kwargs": {}},
                        joined)

    def add_node(self, node: Node, device: str, time_s: Mapping[str, float]) -> None:
        """`node` (owning the ops added for it) on `device`, starting its own stage."""
        owned = tuple(op.name for op in self.ops if op.owner == node.id)
        self.nodes.append(Node(node.id, node.inputs, node.flops, node.output_bytes, node.param_bytes, node.op,
                               node.outputs, node.module, None, owned))
        self.placement[node.id] = device
        self.starts.add(node.id)
        for d in self.devices:
            self.times.setdefault(d, {})[node.id] = time_s.get(d, 0.0)


def emit_op(piece: Piece, ctx: Context, op: SpatialOp, bounds: OpBounds, crops: Mapping[str, str], mine: str,
            owner: str) -> None:
    """Op `op` of the range for one tile: from `crops` (range value -> the tile's value holding exactly
    `bounds.reads` of it), cloned where the op writes in place, padded at the true borders, run with
    its own padding zeroed; its output is the tile's value `mine`."""
    n = ctx.fx_nodes[op.name]
    call = copy.deepcopy(ctx.program.calls[op.name])
    written = {getattr(a, "name", None) for a in written_args(n)}
    local: dict[str, str] = {}
    for k, v in enumerate(op.inputs):
        value = crops[v]
        if v in written:  # the crop may be a view of a value other readers or tiles still need
            clone = f"{mine}#copy{k}"
            piece.add_op(clone, owner, {"target": CLONE, "args": [{"value": value}], "kwargs": {}}, [value])
            value = clone
        if op.kind == "window" and bounds.padding.total:
            p = bounds.padding
            fill: Any = {"float": "-inf"} if op.label in MAX_POOLS else 0.0
            padded = f"{mine}#pad{k}"
            piece.add_op(padded, owner, {"target": PAD, "args": [{"value": value}, [p.left, p.right, p.top, p.bottom],
                                                                  fill], "kwargs": {}}, [value])
            value = padded
        local[ctx.placeholders.get(v, v)] = value
    if op.kind == "window":
        call = _tile_window_call(call, n, op.label)
    piece.add_op(mine, owner, renamed(call, local), list(local.values()), ctx.program.reads.get(op.name, ()))
    if ctx.is_tensor(op.name):
        piece.specs[mine] = ctx.spec(op.name, bounds.output)


def emit_item(piece: Piece, ctx: Context, op: SpatialOp, producer: str, mine: str, owner: str,
              region: Region) -> None:
    """An item of a multi-output op (max_pool2d_with_indices' first result) of the tile's producer value."""
    call = renamed(copy.deepcopy(ctx.program.calls[op.name]), {ctx.placeholders.get(op.inputs[0], op.inputs[0]):
                                                               producer})
    piece.add_op(mine, owner, call, [producer], ctx.program.reads.get(op.name, ()))
    if ctx.is_tensor(op.name):
        piece.specs[mine] = ctx.spec(op.name, region)


def refuse_empty(ctx: Context, tile: int, op: SpatialOp, bounds: OpBounds) -> None:
    if bounds.output.area == 0 or bounds.reads.area == 0:
        raise PlanError(f"tiled stage {ctx.tiling.first}..{ctx.tiling.last}: tile {tile} computes none of op "
                        f"{op.name!r} of node {op.owner!r} or reads only padding there; use fewer tiles on this range")


def renamed(tree: Any, names: Mapping[str, str]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"value"}:
            return {"value": names.get(tree["value"], tree["value"])}
        return {k: renamed(v, names) for k, v in tree.items()}
    if isinstance(tree, list):
        return [renamed(v, names) for v in tree]
    return tree


def _tile_window_call(call: dict[str, Any], n: Any, label: str) -> dict[str, Any]:
    """The call with its own padding zeroed (the tile pads itself) and ceil mode off."""
    schema = [a.name for a in n.target._schema.arguments]
    changes: dict[str, Any] = {"padding": "valid" if isinstance(bound_args(n).get("padding"), str) else [0, 0]}
    if label not in CONVOLUTIONS:
        changes["ceil_mode"] = False
    for name, value in changes.items():
        position = schema.index(name)
        if position < len(call["args"]):
            call["args"][position] = value
        else:
            call["kwargs"][name] = value
    return call

"""An `onnx:` model, on the client, as what workers run: its index, one sub-model per stage, its initializers.

A stage's sub-model holds the stage's nodes, its `needs` as graph inputs and its `keep` values as
graph outputs, with types from ONNX shape inference, and no initializer data: the initializers it
reads travel as weight blobs (safetensors), and the worker puts them back before building the
onnxruntime session. A user's state dict replaces initializers by name.

At micro-batch K (coinfer.runtime.batching) the model's inputs must have a symbolic first
dimension (a dynamic batch, as `torch.onnx.export(..., dynamic_shapes=...)` writes it): the
client fixes it at K and infers shapes again, so every stage model and every received tensor's
check use batch-K shapes. A file exported with a fixed batch is refused with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from coinfer.capture.api import load_onnx
from coinfer.capture.deps import require
from coinfer.capture.weights import check_state_dict, source_state_dict
from coinfer.errors import PlanError
from coinfer.graph import Graph, TensorSpec
from coinfer.runtime.batching import check_batched_outputs, check_same_dependencies
from coinfer.runtime.program import ProgramIndex, ProgramOp
from coinfer.runtime.routing import RunStage


@dataclass(frozen=True)
class OnnxStage:
    model: bytes  # the serialized sub-model, without initializer data
    feeds: Mapping[str, str]  # sub-model input name -> value name
    weights: tuple[str, ...]  # initializer names it reads


class OnnxProgram:
    """The index of an ONNX model and, per stage, its sub-model (see the module docstring)."""

    def __init__(self, graph: Graph, micro_batch: int = 1) -> None:
        assert graph.source is not None
        self.onnx = require("onnx", "onnx: models")
        placeholders = str(graph.source.options.get("placeholders", "")).split(",")
        model = load_onnx(graph.source)
        if micro_batch > 1:
            model = at_batch(model, placeholders, micro_batch, graph.source.spec)
        self.model = self.onnx.shape_inference.infer_shapes(model)
        g = self.model.graph
        self.tensors: dict[str, np.ndarray] = {t.name: self.onnx.numpy_helper.to_array(t) for t in g.initializer}
        user = source_state_dict(graph)
        if user is not None:
            arrays = {k: v.detach().numpy() for k, v in user.items()}
            check_state_dict(arrays, self.tensors, f"weights file {graph.source.options.get('weights')}")
            self.tensors.update(arrays)
        self.rename = dict(zip(placeholders, (gi.name for gi in graph.inputs), strict=True))
        self.types = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}
        self.index, self.by_op = self._index(graph)
        if micro_batch > 1:
            check_batched_outputs(graph, self.index, micro_batch)
            check_same_dependencies(graph, self.index, micro_batch)

    def _value(self, name: str) -> str:
        return self.rename.get(name, name)

    def _index(self, graph: Graph) -> tuple[ProgramIndex, dict[str, Any]]:
        ops, by_op = [], {}
        for onnx_node, node in zip(self.model.graph.node, graph.nodes, strict=True):
            reads = tuple(dict.fromkeys(self._value(i) for i in onnx_node.input if i and i not in self.tensors))
            ops.append(ProgramOp(node.id, node.id, reads, tuple(o for o in onnx_node.output if o)))
            by_op[node.id] = onnx_node
        specs: dict[str, TensorSpec] = {}
        for name, vi in self.types.items():
            t = vi.type.tensor_type
            if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
                shape = tuple(int(d.dim_value) for d in t.shape.dim)
                dtype = self.onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
                specs[self._value(name)] = TensorSpec(int(np.prod(shape)) * dtype.itemsize, shape, dtype.name)
        outputs = tuple(o.name for o in self.model.graph.output)
        return ProgramIndex(tuple(ops), specs, tuple(gi.name for gi in graph.inputs), outputs), by_op

    def stage(self, stage: RunStage) -> OnnxStage:
        helper = self.onnx.helper
        nodes = [self.by_op[o] for o in stage.ops]
        original = {v: k for k, v in self.rename.items()}
        feeds = {original.get(v, v): v for v in sorted(stage.needs)}
        inputs = [self._value_info(name) for name in feeds]
        outputs = [self._value_info(v) for v in stage.keep]
        weights = tuple(dict.fromkeys(i for n in nodes for i in n.input if i in self.tensors))
        sub = helper.make_graph(nodes, f"stage{stage.index}", inputs, outputs)
        model = helper.make_model(sub, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        return OnnxStage(model.SerializeToString(), feeds, weights)

    def _value_info(self, name: str) -> Any:
        if name not in self.types:
            raise PlanError(f"ONNX shape inference gave no type for value {name}; export the model with static shapes")
        return self.types[name]


def at_batch(model: Any, placeholders: list[str], k: int, spec: str) -> Any:
    """A copy of `model` whose user inputs have batch K: their symbolic first dimension fixed at K."""
    batched = type(model)()
    batched.CopyFrom(model)
    inputs = {vi.name: vi for vi in batched.graph.input}
    for name in placeholders:
        dims = inputs[name].type.tensor_type.shape.dim
        if not dims:
            raise PlanError(f"micro-batching: input {name!r} of {spec} is a scalar, with no dimension to stack "
                            "requests along; run it without micro-batching")
        if dims[0].HasField("dim_value"):
            shape = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]
            raise PlanError(f"micro-batching needs a dynamic batch dimension, but input {name!r} of {spec} has the "
                            f"fixed shape {shape}; export the model with a symbolic first dimension "
                            "(torch.onnx.export's dynamic_shapes or dynamic_axes), or run it without micro-batching")
        dims[0].dim_value = k  # replaces the symbolic name; shape inference then fixes every value that follows it
    return batched

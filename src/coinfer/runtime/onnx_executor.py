"""Stages of an `onnx:` model: each stage is cut out as its own ONNX model and run in onnxruntime.

A stage's model holds the stage's nodes, the initializers they read, its `needs` as graph inputs
and its `keep` values as graph outputs, with types from ONNX shape inference. Sessions are built
once per stage (`prepare`) and kept; onnxruntime's thread pools are capped at the worker's
thread count.

At micro-batch K (coinfer.runtime.batching) the model's inputs must have a symbolic first
dimension (a dynamic batch, as `torch.onnx.export(..., dynamic_shapes=...)` writes it): the
executor fixes it at K and infers shapes again, so every stage model and every received tensor's
check use batch-K shapes. A file exported with a fixed batch is refused with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from coinfer.capture.api import load_onnx
from coinfer.capture.deps import require
from coinfer.errors import PlanError
from coinfer.graph import Graph, TensorSpec
from coinfer.runtime.executor import StageFailure
from coinfer.runtime.program import ProgramIndex, ProgramOp
from coinfer.runtime.routing import RunStage


class OnnxExecutor:
    def __init__(self, graph: Graph, threads: int, micro_batch: int = 1) -> None:
        assert graph.source is not None
        self.onnx = require("onnx", "onnx: models")
        self.ort = require("onnxruntime", "running onnx: models")
        self.threads = threads
        placeholders = str(graph.source.options.get("placeholders", "")).split(",")
        model = load_onnx(graph.source)
        if micro_batch > 1:
            model = at_batch(model, placeholders, micro_batch, graph.source.spec)
        self.model = self.onnx.shape_inference.infer_shapes(model)
        g = self.model.graph
        self.initializers = {t.name: t for t in g.initializer}
        self.rename = dict(zip(placeholders, (gi.name for gi in graph.inputs), strict=True))
        self.types = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}
        self.index, self.by_op = self._index(graph)
        self.sessions: dict[int, Any] = {}

    def _value(self, name: str) -> str:
        return self.rename.get(name, name)

    def _index(self, graph: Graph) -> tuple[ProgramIndex, dict[str, Any]]:
        ops, by_op = [], {}
        for onnx_node, node in zip(self.model.graph.node, graph.nodes, strict=True):
            reads = tuple(dict.fromkeys(self._value(i) for i in onnx_node.input if i and i not in self.initializers))
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

    def prepare(self, stage: RunStage) -> None:
        if stage.index in self.sessions or not stage.ops:
            return
        helper = self.onnx.helper
        nodes = [self.by_op[o] for o in stage.ops]
        original = {v: k for k, v in self.rename.items()}
        inputs = [self._value_info(original.get(v, v)) for v in sorted(stage.needs)]
        outputs = [self._value_info(v) for v in stage.keep]
        used = {i for n in nodes for i in n.input}
        inits = [t for name, t in self.initializers.items() if name in used]
        sub = helper.make_graph(nodes, f"stage{stage.index}", inputs, outputs, inits)
        model = helper.make_model(sub, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.sessions[stage.index] = self.ort.InferenceSession(model.SerializeToString(), options,
                                                               providers=["CPUExecutionProvider"])

    def _value_info(self, name: str) -> Any:
        if name not in self.types:
            raise StageFailure(name, "onnx", KeyError(f"shape inference gave no type for value {name}; "
                                                      "export the model with static shapes"))
        return self.types[name]

    def run(self, stage: RunStage, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not stage.ops:
            return {}
        self.prepare(stage)
        original = {v: k for k, v in self.rename.items()}
        feed = {original.get(v, v): values[v] for v in stage.needs}
        try:
            result = self.sessions[stage.index].run(list(stage.keep), feed)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise StageFailure(stage.node_ids[0], "onnxruntime", exc) from exc
        return dict(zip(stage.keep, (np.asarray(r) for r in result), strict=True))


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


def onnx_reference(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The whole ONNX model's outputs on `inputs` in onnxruntime."""
    assert graph.source is not None
    ort = require("onnxruntime", "running onnx: models")
    model = load_onnx(graph.source)
    placeholders = str(graph.source.options.get("placeholders", "")).split(",")
    feed = {p: inputs[gi.name] for p, gi in zip(placeholders, graph.inputs, strict=True)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session.run(names, feed), strict=True))

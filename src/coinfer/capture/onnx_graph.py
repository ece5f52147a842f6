"""An ONNX model -> coinfer Graph: one node per ONNX node, FLOPs from `onnx_flops`.

Shapes come from onnx.shape_inference; symbolic dimensions (a dynamic batch `N`) are taken as 1,
with a logged warning. Initializer bytes are the `param_bytes` of their first reader. Node ids are
the ONNX node names (`op_type_index` for unnamed nodes) and are also the `source_nodes`. A single
graph input is named `input`; `source.options["placeholders"]` keeps the ONNX input names. ONNX
files carry no module hierarchy, so nodes have no block.
"""

from __future__ import annotations

import logging
from math import prod
from pathlib import Path
from typing import Any

from coinfer.capture.deps import require
from coinfer.capture.onnx_flops import onnx_node_flops
from coinfer.errors import CaptureError, ModelSpecError
from coinfer.graph import DEFAULT_INPUT_NAME, Graph, GraphInput, ModelSource, Node, TensorSpec

log = logging.getLogger(__name__)


def capture_onnx(path: str, spec: str) -> Graph:
    """The Graph of the ONNX model at `path` (`spec` is recorded as its source)."""
    onnx = require("onnx", "onnx: models")
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(path))
    except Exception as exc:  # onnx raises DecodeError, ValidationError, InferenceError ...
        raise ModelSpecError(f"onnx:{path} is not a readable ONNX model ({type(exc).__name__}: "
                             f"{exc}); check the file (onnx.checker.check_model)") from None
    g = model.graph
    specs = _value_specs(onnx, model)
    init_names = {t.name for t in g.initializer}
    user = [i.name for i in g.input if i.name not in init_names]
    rename = {n: (DEFAULT_INPUT_NAME if len(user) == 1 else n) for n in user}
    producer: dict[str, str] = dict(rename)  # value name -> node id or graph input name
    nodes = _nodes(g, specs, producer, init_names)
    inputs = tuple(GraphInput(rename[n], specs.get(n) or TensorSpec(0)) for n in user)
    outputs = tuple(dict.fromkeys(producer[o.name] for o in g.output if o.name in producer
                                  and producer[o.name] not in rename.values()))
    source = ModelSource(spec, tuple(s.spec.shape or () for s in inputs), 0,
                         {"placeholders": ",".join(user)})
    try:
        return Graph(Path(path).stem, inputs, nodes, outputs, "op", source)
    except ValueError as exc:
        raise CaptureError(f"onnx:{path}: the ONNX graph does not form a DAG coinfer can use: {exc}; "
                           "check it with onnx.checker.check_model(model, full_check=True)") from None


def _nodes(g: Any, specs: dict[str, TensorSpec], producer: dict[str, str],
           init_names: set[str]) -> tuple[Node, ...]:
    """One Node per ONNX node; fills `producer` with the values each node outputs."""
    ids = _node_ids(g.node, set(producer.values()))
    nodes, unknown, seen_params = [], set(), set()
    for node, node_id in zip(g.node, ids, strict=True):
        outs = tuple(specs[o] for o in node.output if o in specs)
        trans_a = any(a.name == "transA" and a.i for a in node.attribute)
        flops = onnx_node_flops(node.op_type, [_shape(specs, i) for i in node.input],
                                [_shape(specs, o) for o in node.output if o], trans_a)
        if flops is None:
            unknown.add(node.op_type)
        params = [i for i in dict.fromkeys(node.input) if i in init_names and i not in seen_params]
        seen_params.update(params)
        nodes.append(Node(
            id=node_id, inputs=tuple(dict.fromkeys(producer[i] for i in node.input if i in producer)),
            flops=flops or 0.0, output_bytes=sum(s.size_bytes for s in outs),
            param_bytes=sum(specs[p].size_bytes for p in params if p in specs), op=node.op_type,
            outputs=outs, source_nodes=(node.name or node_id,),
        ))
        producer.update({o: node_id for o in node.output if o})
    if unknown:
        log.warning("%s: no FLOP formula for ONNX ops %s; counted as 0 FLOPs", g.name, sorted(unknown))
    return tuple(nodes)


def _shape(specs: dict[str, TensorSpec], name: str) -> tuple[int, ...] | None:
    spec = specs.get(name)
    return spec.shape if spec is not None else None


def _value_specs(onnx: Any, model: Any) -> dict[str, TensorSpec]:
    """Value name -> TensorSpec for every value whose type shape inference knows."""
    g = model.graph
    specs: dict[str, TensorSpec] = {}
    symbolic: set[str] = set()
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
            continue
        dims = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                symbolic.add(d.dim_param or "?")
                dims.append(1)
        specs[vi.name] = _spec(onnx, tuple(dims), t.elem_type)
    for init in g.initializer:
        specs[init.name] = _spec(onnx, tuple(int(d) for d in init.dims), init.data_type)
    if symbolic:
        log.warning("symbolic dimensions %s taken as 1; export with fixed shapes for exact sizes",
                    sorted(symbolic))
    return specs


def _spec(onnx: Any, shape: tuple[int, ...], elem_type: int) -> TensorSpec:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    return TensorSpec(prod(shape) * dtype.itemsize, shape, dtype.name)


def _node_ids(onnx_nodes: Any, reserved: set[str]) -> list[str]:
    taken = set(reserved)
    ids = []
    for i, node in enumerate(onnx_nodes):
        base = node.name or f"{node.op_type}_{i}"
        candidate, k = base, 2
        while candidate in taken:
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate)
        ids.append(candidate)
    return ids

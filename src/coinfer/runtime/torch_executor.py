"""Stages of a PyTorch model: the captured torch.export program, run op by op over a node subset.

The worker rebuilds the program with `coinfer.capture.load_program(graph.source)`; its fx node
names are the graph's `source_nodes`, so a stage is simply the fx nodes its coinfer nodes own,
run in program order. Weights, buffers and constants are read from the program itself. Values
cross the stage boundary as numpy arrays that share memory with the tensors (no copies) except
where a received frame is read-only.

At micro-batch K (coinfer.runtime.batching) the worker exports the same model (same seed, same
weights) with every example input repeated K times along dimension 0. Export is deterministic, so
the fx node names, and with them the graph's node ids, usually carry over; that is checked, not
assumed (here: the same fx node names running the same ops; coinfer.runtime.batching: the same
dependencies between nodes), and a model whose program changes with the batch is refused with the
names. GPT-2 is one: at batch K it expands its position ids and causal mask to the batch, which
adds an op and shifts the names of the ops after it.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import numpy as np

from coinfer.capture.api import build_model, load_program
from coinfer.capture.deps import require
from coinfer.capture.exporting import export_program, no_mha_fastpath
from coinfer.capture.spec import parse_spec
from coinfer.capture.tensors import tensor_spec
from coinfer.errors import PlanError
from coinfer.graph import DEFAULT_INPUT_NAME, Graph, ModelSource, TensorSpec
from coinfer.runtime.executor import StageFailure
from coinfer.runtime.program import ProgramIndex, ProgramOp
from coinfer.runtime.routing import RunStage


class TorchExecutor:
    """Runs stages of the exported program of `graph.source` (see the module docstring)."""

    def __init__(self, graph: Graph, threads: int, micro_batch: int = 1) -> None:
        assert graph.source is not None
        self.torch = require("torch", "the runtime")
        self.torch.set_num_threads(threads)
        self.program = load_program(graph.source) if micro_batch == 1 else batched_program(graph.source, micro_batch)
        self.nodes = {n.name: n for n in self.program.graph.nodes}
        self.owner = {s: node.id for node in graph.nodes for s in node.source_nodes}
        if micro_batch > 1:
            _check_same_ops(self.program, graph, micro_batch)
        self.user_inputs = _user_input_names(self.program)
        self.constants = _lifted_constants(self.program)
        self.index = self._index()

    def _index(self) -> ProgramIndex:
        ops, specs = [], {}
        for n in self.nodes.values():
            if n.op != "call_function":
                continue
            if n.name not in self.owner:
                raise StageFailure("?", n.name, KeyError(f"fx node {n.name} belongs to no graph node; capture again"))
            reads = tuple(dict.fromkeys(self._value_name(a) for a in n.all_input_nodes if self._is_value(a)))
            ops.append(ProgramOp(n.name, self.owner[n.name], reads, (n.name,)))
            spec = tensor_spec(n.meta.get("val"))
            if spec is not None:
                specs[n.name] = spec
        for placeholder, name in self.user_inputs.items():
            spec = tensor_spec(self.nodes[placeholder].meta.get("val"))
            specs[name] = spec or TensorSpec(0)
        sig = self.program.graph_signature
        outputs = tuple(o for o in sig.user_outputs if o in self.nodes and self.nodes[o].op == "call_function")
        return ProgramIndex(tuple(ops), specs, tuple(self.user_inputs.values()), outputs)

    def _is_value(self, node: Any) -> bool:
        return node.op == "call_function" or node.name in self.user_inputs

    def _value_name(self, node: Any) -> str:
        return str(self.user_inputs.get(node.name, node.name))

    def prepare(self, stage: RunStage) -> None:
        del stage  # torch runs ops directly; nothing to build

    def run(self, stage: RunStage, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        local: dict[str, Any] = {}

        def read(node: Any) -> Any:
            name = node.name
            if name in local:
                return local[name]
            if name in self.constants:
                return self.constants[name]
            value = values[self._value_name(node)]
            tensor = torch.from_numpy(value if value.flags.writeable else value.copy())
            local[name] = tensor
            return tensor

        with torch.inference_mode(), no_mha_fastpath():
            for name in stage.ops:
                node = self.nodes[name]
                args = torch.fx.node.map_arg(node.args, read)
                kwargs = torch.fx.node.map_arg(node.kwargs, read)
                try:
                    local[name] = node.target(*args, **kwargs)
                except Exception as exc:  # any op error is the stage's failure, reported by node
                    raise StageFailure(self.owner[name], _op_label(node.target), exc) from exc
        return {v: _to_numpy(local[v], v) for v in stage.keep}


def batched_program(source: ModelSource, k: int) -> Any:
    """The program of `source` exported with every example input repeated K times along dimension 0."""
    if parse_spec(source.spec).kind == "export":
        raise PlanError(f"micro-batching: {source.spec} is a saved torch.export program, fixed at the batch it was "
                        "exported with; give the model as python:MODULE:CALLABLE (or export it to ONNX with a "
                        "dynamic batch dimension), or run it without micro-batching")
    torch = require("torch", "the runtime")
    model, inputs = build_model(source)
    scalars = [i for i, t in enumerate(inputs) if t.dim() == 0]
    if scalars:
        raise PlanError(f"micro-batching: input {scalars[0]} of {source.spec} is a scalar, with no dimension to "
                        "stack requests along; run it without micro-batching")
    return export_program(model, tuple(torch.cat([t] * k, dim=0) for t in inputs), f"{source.spec} at batch {k}")


def _check_same_ops(program: Any, graph: Graph, k: int) -> None:
    """Refuse a batch-K program whose fx nodes are not the graph's: other names, or other ops under a name."""
    by_name = {n.name: n for n in program.graph.nodes if n.op == "call_function"}
    captured = {s for node in graph.nodes for s in node.source_nodes}
    missing, extra = sorted(captured - set(by_name)), sorted(set(by_name) - captured)
    # a block node's op is "block"; an op node's is the op of its first fx node
    changed = [n.id for n in graph.nodes if n.op not in ("", "block") and n.source_nodes
               and n.source_nodes[0] in by_name and _op_label(by_name[n.source_nodes[0]].target) != n.op]
    if missing or extra or changed:
        captured_at = f"the graph captured at batch {_batch_of(graph)}"
        what = (f"lacks fx nodes {missing[:5]} that {captured_at} has" if missing
                else f"has fx nodes {extra[:5]} that {captured_at} lacks" if extra
                else f"runs other ops than {captured_at} for the nodes {changed[:5]}")
        raise PlanError(f"micro-batching: {graph.name} exported at batch {k} {what}, so its node ids do not carry "
                        "over; run it without micro-batching")


def _batch_of(graph: Graph) -> str:
    shape = graph.inputs[0].spec.shape if graph.inputs else None
    return str(shape[0]) if shape else "1"


def torch_reference(graph: Graph, inputs: Mapping[str, np.ndarray], threads: int = 1) -> dict[str, np.ndarray]:
    """The eager model's outputs on `inputs`, keyed like the program's output values.

    Run with the workers' thread count: CPU kernels split reductions by thread, so the same model
    on the same input differs in the last bits between thread counts. And with
    nn.MultiheadAttention's fused fast path off, as capture exported it: the fused kernel differs
    from the exported ops by about 1e-6 (torchvision's ViTs), which is the reference's kernel
    choice, not the partition's.
    """
    assert graph.source is not None
    torch = require("torch", "the runtime")
    model, _ = build_model(graph.source)
    args = [torch.from_numpy(np.array(inputs[gi.name])) for gi in graph.inputs]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode(), no_mha_fastpath():
            flat = _flatten(model(*args))
    finally:
        torch.set_num_threads(previous)
    wanted = list(load_program(graph.source).graph_signature.user_outputs)
    if len(flat) != len(wanted):
        raise StageFailure("output", "reference", ValueError(f"the eager model returned {len(flat)} tensors, "
                                                             f"the program {len(wanted)}"))
    return {name: t.detach().numpy() for name, t in zip(wanted, flat, strict=True)}


def _flatten(out: Any) -> list[Any]:
    if hasattr(out, "to_tuple"):  # transformers ModelOutput
        out = out.to_tuple()
    if isinstance(out, list | tuple):
        return [t for item in out for t in _flatten(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _flatten(item)]
    return [out]


def _user_input_names(program: Any) -> dict[str, str]:
    """Placeholder name -> graph input name (as coinfer.capture.fx_graph names them)."""
    names = list(program.graph_signature.user_inputs)
    return {p: (DEFAULT_INPUT_NAME if len(names) == 1 else p) for p in names}


def _lifted_constants(program: Any) -> dict[str, Any]:
    """Placeholder name -> tensor for every weight, buffer and lifted constant of the program."""
    sig = program.graph_signature
    state = program.state_dict
    out: dict[str, Any] = {}
    out.update({p: state[k] for p, k in sig.inputs_to_parameters.items()})
    out.update({p: state[k] if k in state else program.constants[k] for p, k in sig.inputs_to_buffers.items()})
    out.update({p: program.constants[k] for p, k in sig.inputs_to_lifted_tensor_constants.items()})
    out.update({n.name: getattr(program.graph_module, str(n.target)) for n in program.graph.nodes
                if n.op == "get_attr"})
    return out


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if not hasattr(value, "numpy"):
        raise StageFailure(name, "send", TypeError(f"value {name} is a {type(value).__name__}, not a tensor; "
                                                   "place the cut elsewhere"))
    return np.asarray(value.detach().contiguous().numpy())


def _op_label(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    return str(getattr(target, "overloadpacket", getattr(target, "__name__", target)))

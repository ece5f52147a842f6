"""A captured PyTorch model, on the client, as what workers run: its index, its calls, its weights.

The client rebuilds the exact program the graph was captured from (`coinfer.capture.load_program`:
same spec, same seed, so the same fx node names), lays the user's state dict over its weights
(coinfer.capture.weights), and describes every fx node as a call (coinfer.runtime.aten_calls). A
worker gets only the calls and weights of its own stages.

Weights are named by their state-dict key (`conv1.weight`, as the user knows them), lifted
constants by `constant:NAME` and attributes by `attr:NAME`.

A causal LM's step program (coinfer.capture.causal_lm) writes its KV cache in place: every tensor
an op of such a program writes into is *state*, `{"state": REF}` in the calls, never shipped (its
shape and dtype are: a worker makes it, zeros, once per session; coinfer.runtime.worker.sessions).
In any other program a written weight is copied afresh for each run, so requests stay independent.

At micro-batch K (coinfer.runtime.batching) the client exports the same model (same seed, same
weights) with every example input repeated K times along dimension 0. Export is deterministic, so
the fx node names, and with them the graph's node ids, usually carry over; that is checked, not
assumed (here: the same fx node names running the same ops; coinfer.runtime.batching: the same
dependencies between nodes, and outputs that stack), and a model whose program changes with the
batch is refused with the names. GPT-2 is one: at batch K it expands its position ids and causal
mask to the batch, which adds an op and shifts the names of the ops after it.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coinfer.capture.api import build_model, load_program
from coinfer.capture.deps import require
from coinfer.capture.exporting import export_program
from coinfer.capture.mutation import written_placeholders
from coinfer.capture.spec import parse_spec
from coinfer.capture.tensors import tensor_spec
from coinfer.capture.weights import built_with_weights, check_state_dict, source_state_dict
from coinfer.errors import PlanError
from coinfer.graph import DEFAULT_INPUT_NAME, Graph, ModelSource, TensorSpec
from coinfer.runtime.aten_calls import encode_call
from coinfer.runtime.batching import check_batched_outputs, check_same_dependencies
from coinfer.runtime.program import ProgramIndex, ProgramOp


@dataclass(frozen=True)
class TorchProgram:
    """Everything workers may be sent of one model at one batch size."""

    index: ProgramIndex
    calls: Mapping[str, dict[str, Any]]  # op name -> call JSON
    reads: Mapping[str, tuple[str, ...]]  # op name -> weight refs the call reads
    tensors: Mapping[str, Any]  # weight ref -> torch tensor (the user's weights where given)
    states: Mapping[str, TensorSpec] = field(default_factory=dict)  # state ref -> its shape and dtype
    state_reads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # op name -> state refs it touches


def torch_program(graph: Graph, micro_batch: int = 1) -> TorchProgram:
    assert graph.source is not None
    require("torch", "the runtime")
    program = load_program(graph.source) if micro_batch == 1 else batched_program(graph.source, micro_batch)
    nodes = {n.name: n for n in program.graph.nodes}
    owner = {s: node.id for node in graph.nodes for s in node.source_nodes}
    if micro_batch > 1:
        _check_same_ops(program, graph, micro_batch)
    tensors, ref_of_placeholder = _weights(program, graph)
    user_inputs = _user_input_names(program)
    written = written_placeholders(program, ref_of_placeholder) if is_step_program(graph) else set()
    state_of = {p: ref_of_placeholder[p] for p in written}

    def ref_of(node: Any) -> dict[str, Any]:
        if node.name in user_inputs:
            return {"value": user_inputs[node.name]}
        if node.name in state_of:
            return {"state": state_of[node.name]}
        if node.name in ref_of_placeholder:
            return {"weight": ref_of_placeholder[node.name]}
        return {"value": node.name}

    ops, specs, calls, reads, state_reads = [], {}, {}, {}, {}
    for n in nodes.values():
        if n.op != "call_function":
            continue
        if n.name not in owner:
            raise PlanError(f"fx node {n.name} belongs to no node of graph {graph.name!r}; capture the model again")
        inputs = tuple(dict.fromkeys(user_inputs.get(a.name, a.name) for a in n.all_input_nodes
                                     if a.op == "call_function" or a.name in user_inputs))
        ops.append(ProgramOp(n.name, owner[n.name], inputs, (n.name,)))
        calls[n.name] = encode_call(n, ref_of)
        reads[n.name] = tuple(dict.fromkeys(ref_of_placeholder[a.name] for a in n.all_input_nodes
                                            if a.name in ref_of_placeholder and a.name not in state_of))
        state_reads[n.name] = tuple(dict.fromkeys(state_of[a.name] for a in n.all_input_nodes if a.name in state_of))
        spec = tensor_spec(n.meta.get("val"))
        if spec is not None:
            specs[n.name] = spec
    for placeholder, name in user_inputs.items():
        specs[name] = tensor_spec(nodes[placeholder].meta.get("val")) or TensorSpec(0)
    outputs = tuple(o for o in program.graph_signature.user_outputs if o in nodes and nodes[o].op == "call_function")
    index = ProgramIndex(tuple(ops), specs, tuple(user_inputs.values()), outputs)
    if micro_batch > 1:
        check_batched_outputs(graph, index, micro_batch)
        check_same_dependencies(graph, index, micro_batch)
    states = {ref: tensor_spec(tensors[ref]) or TensorSpec(0) for ref in state_of.values()}
    return TorchProgram(index, calls, reads, {r: t for r, t in tensors.items() if r not in states}, states,
                        state_reads)


def is_step_program(graph: Graph) -> bool:
    """Whether `graph` is a causal LM's step program, whose written tensors persist across steps."""
    return graph.source is not None and "context" in graph.source.options


def _weights(program: Any, graph: Graph) -> tuple[dict[str, Any], dict[str, str]]:
    """(ref -> tensor, placeholder or get_attr node name -> ref), the user's state dict laid over."""
    sig = program.graph_signature
    state, constants = program.state_dict, program.constants
    tensors: dict[str, Any] = {}
    refs: dict[str, str] = {}
    for placeholder, key in [*sig.inputs_to_parameters.items(), *sig.inputs_to_buffers.items()]:
        refs[placeholder] = key
        tensors[key] = state[key] if key in state else constants[key]  # a non-persistent buffer is a constant
    for placeholder, key in sig.inputs_to_lifted_tensor_constants.items():
        refs[placeholder] = f"constant:{key}"
        tensors[refs[placeholder]] = constants[key]
    for n in program.graph.nodes:
        if n.op == "get_attr":
            refs[n.name] = f"attr:{n.target}"
            tensors[refs[n.name]] = getattr(program.graph_module, str(n.target))
    user = None if graph.source is None or built_with_weights(graph.source.options) else source_state_dict(graph)
    if user is not None:
        check_state_dict(user, state, f"weights file {graph.source.options.get('weights') if graph.source else ''}")
        tensors.update({k: user[k] for k in state})
    return tensors, refs


def _user_input_names(program: Any) -> dict[str, str]:
    """Placeholder name -> graph input name (as coinfer.capture.fx_graph names them)."""
    names = list(program.graph_signature.user_inputs)
    return {p: (DEFAULT_INPUT_NAME if len(names) == 1 else p) for p in names}


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
               and n.source_nodes[0] in by_name and op_label(by_name[n.source_nodes[0]].target) != n.op]
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


def op_label(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    return str(getattr(target, "overloadpacket", getattr(target, "__name__", target)))

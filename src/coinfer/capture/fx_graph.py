"""An exported program (torch.export) -> a coinfer Graph of one node per call_function fx node.

* Weights, buffers and constants are placeholders, not nodes: their bytes are the `param_bytes`
  of the first node that reads them (a tied weight is counted once).
* `operator.getitem` nodes that pick outputs of a multi-output op are folded into that op: readers
  read the producer's id, whose `outputs` are the items used.
* Node ids come from the innermost module path of `nn_module_stack`: the path itself when that
  module produced exactly one node and has no sub-modules that produced nodes (`conv1`,
  `layer1.0.conv1`, `fc`), else path + "." + fx name (`layer1.0.add_`, `layer1.0.relu.relu__1`
  for a ReLU module called twice); nodes of the root module keep their fx name (`flatten`);
  clashes get `_2`, `_3` ...
* A single user input is named `input` (graph.DEFAULT_INPUT_NAME); several keep their placeholder
  names. `placeholder_names` maps graph input names back to the program's placeholders.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from coinfer.capture.blocks import Stack
from coinfer.capture.flops import NodeRun
from coinfer.capture.tensors import tensor_spec
from coinfer.graph import DEFAULT_INPUT_NAME, GraphInput, Node, TensorSpec

BlockOf = Callable[[Stack], "str | None"]


def module_stack(node: Any) -> Stack:
    return [(str(path), str(cls)) for path, cls in (node.meta.get("nn_module_stack") or {}).values()]


def graph_inputs(program: Any) -> tuple[dict[str, str], tuple[GraphInput, ...]]:
    """(placeholder name -> graph input name, the graph inputs) of the program's user inputs."""
    names = list(program.graph_signature.user_inputs)
    by_name = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    rename = {p: (DEFAULT_INPUT_NAME if len(names) == 1 else p) for p in names}
    inputs = tuple(
        GraphInput(rename[p], tensor_spec(by_name[p].meta.get("val")) or TensorSpec(0)) for p in names
    )
    return rename, inputs


def build_nodes(program: Any, run: NodeRun, block_of: BlockOf) -> tuple[Node, ...]:
    """The coinfer nodes of `program`, in the fx graph's (topological) order."""
    fx_nodes = [n for n in program.graph.nodes if n.op == "call_function"]
    folded = _getitem_producers(fx_nodes)
    members: dict[str, list[Any]] = {}  # producer name -> its folded getitem fx nodes
    for n in fx_nodes:
        if n.name in folded:
            members.setdefault(folded[n.name], []).append(n)
    kept = [n for n in fx_nodes if n.name not in folded]
    rename, _ = graph_inputs(program)
    ids = _node_ids(kept, reserved=set(rename.values()))
    param_bytes = _param_bytes_by_first_reader(program)
    read_bytes = _param_bytes_read(program)

    def source_of(arg: Any) -> str | None:
        if arg.op == "placeholder":
            return rename.get(arg.name)  # None for weights, buffers and constants
        if arg.op == "call_function":
            return ids[folded.get(arg.name, arg.name)]
        return None  # get_attr of a submodule (torch.cond branches)

    nodes = []
    for n in kept:
        parts = [n, *members.get(n.name, ())]
        # a multi-output op outputs the items its getitems pick; any other op its own value
        outs = parts[1:] or [n]
        specs = tuple(s for s in (tensor_spec(o.meta.get("val")) or run.tensors.get(o.name)
                                  for o in outs) if s is not None)
        inputs = (source_of(a) for a in n.all_input_nodes)
        nodes.append(Node(
            id=ids[n.name], inputs=tuple(dict.fromkeys(i for i in inputs if i is not None)),
            flops=sum(run.flops.get(p.name, 0.0) for p in parts),
            output_bytes=sum(s.size_bytes for s in specs), param_bytes=param_bytes.get(n.name, 0),
            op=_op_name(n.target), outputs=specs, module=_innermost(n),
            block=block_of(module_stack(n)), source_nodes=tuple(p.name for p in parts),
            param_read_bytes=read_bytes[n.name] if read_bytes.get(n.name, 0) != param_bytes.get(n.name, 0) else None,
        ))
    return tuple(nodes)


def output_ids(program: Any, nodes: Sequence[Node]) -> tuple[str, ...]:
    """Ids of the nodes producing the program's user outputs (inputs passed through are skipped)."""
    by_source = {s: n.id for n in nodes for s in n.source_nodes}
    return tuple(dict.fromkeys(by_source[o] for o in program.graph_signature.user_outputs
                               if o in by_source))


def placeholder_names(program: Any) -> dict[str, str]:
    """Graph input name -> placeholder name in `program.graph` (how load_program users feed it)."""
    return {v: k for k, v in graph_inputs(program)[0].items()}


def _getitem_producers(fx_nodes: Sequence[Any]) -> dict[str, str]:
    """getitem node name -> the non-getitem call_function node it (transitively) reads."""
    producer: dict[str, str] = {}
    for n in fx_nodes:
        if n.target is not operator.getitem or not n.args:
            continue
        src = n.args[0]
        if getattr(src, "op", None) == "call_function":
            producer[n.name] = producer.get(src.name, src.name)
    return producer


def _node_ids(kept: Sequence[Any], reserved: set[str]) -> dict[str, str]:
    per_path: dict[str, int] = {}
    for n in kept:
        per_path[_innermost(n)] = per_path.get(_innermost(n), 0) + 1
    # A module with sub-modules (a BasicBlock whose only own op is the residual add) never
    # lends its bare path to a node: that name belongs to the module, and usually to its block.
    for path in {p for n in kept for p, _ in module_stack(n)}:
        parent = path.rpartition(".")[0]
        while parent:
            per_path[parent] = max(per_path.get(parent, 0), 2)
            parent = parent.rpartition(".")[0]
    ids: dict[str, str] = {}
    taken = set(reserved)
    for n in kept:
        path = _innermost(n)
        base = n.name if not path else path if per_path[path] == 1 else f"{path}.{n.name}"
        candidate, k = base, 2
        while candidate in taken:
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate)
        ids[n.name] = candidate
    return ids


def _innermost(node: Any) -> str:
    stack = module_stack(node)
    return stack[-1][0] if stack else ""


def _param_bytes_by_first_reader(program: Any) -> dict[str, int]:
    """call_function node name -> bytes of the weights, buffers and constants it reads first."""
    user = set(program.graph_signature.user_inputs)
    order = {n.name: i for i, n in enumerate(program.graph.nodes)}
    out: dict[str, int] = {}
    for p in program.graph.nodes:
        if p.op != "placeholder" or p.name in user:
            continue
        readers = [u for u in p.users if u.op == "call_function"]
        spec = tensor_spec(p.meta.get("val"))
        if readers and spec is not None:
            first = min(readers, key=lambda u: order[u.name])
            out[first.name] = out.get(first.name, 0) + spec.size_bytes
    return out


def _param_bytes_read(program: Any) -> dict[str, int]:
    """call_function node name -> bytes of weights one run of it reads: every weight it reads whole
    (a tied weight too, though another node holds it), except that an embedding reads only the rows
    it gathers (its output's bytes)."""
    user = set(program.graph_signature.user_inputs)
    out: dict[str, int] = {}
    for n in program.graph.nodes:
        if n.op != "call_function":
            continue
        weights = [a for a in n.all_input_nodes if a.op == "placeholder" and a.name not in user]
        total = 0
        for w in weights:
            spec = tensor_spec(w.meta.get("val"))
            if spec is None:
                continue
            gathered = _op_name(n.target) == "aten.embedding" and n.args and n.args[0] is w
            out_spec = tensor_spec(n.meta.get("val")) if gathered else None
            total += out_spec.size_bytes if out_spec is not None else spec.size_bytes
        if total:
            out[n.name] = total
    return out


def _op_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:  # OpOverload aten.add.Tensor -> "aten.add"
        return str(packet)
    return getattr(target, "__name__", str(target))

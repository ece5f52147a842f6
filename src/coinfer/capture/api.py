"""capture / load_program / build_model: any PyTorch model -> coinfer Graph, and back.

`capture` records everything needed to rebuild the exact exported program in `Graph.source`
(spec, input shapes, seed, `layers`/`seq_len`), so `load_program(graph.source)` gives a program
whose fx node names are the `source_nodes` of the graph's nodes. `options["placeholders"]` lists
the program's user-input placeholder names in the order of `Graph.inputs` (a single input is
called `input` in the graph; `x` in a torchvision program).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from coinfer.capture import blocks as blocks_mod
from coinfer.capture import fx_graph
from coinfer.capture.deps import require
from coinfer.capture.exporting import export_program
from coinfer.capture.flops import run_nodes
from coinfer.capture.models import build, load_exported
from coinfer.capture.spec import ParsedSpec, parse_spec
from coinfer.capture.tensors import tensor_spec
from coinfer.errors import ModelSpecError
from coinfer.graph import Graph, ModelSource, coarsen_to_blocks

log = logging.getLogger(__name__)


def capture(
    spec: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    seq_len: int | None = None,
    seed: int = 0,
    layers: int | None = None,
    granularity: Literal["op", "block"] = "op",
    weights: str | None = None,
) -> Graph:
    """The coinfer Graph of the model named by a MODEL spec (forms in coinfer.capture.spec).

    `input_shape` is the full shape of the one model input (batch first; default 1x3x224x224 for
    images, 299 for inception_v3, (1, seq_len) for text); `seq_len` (text models, default 128)
    and `layers` (number of transformer layers) apply to hf: models; `seed` fixes the random
    weights and inputs. `granularity="block"` contracts every block into one node. `weights` names a
    state-dict file (coinfer.capture.weights) that runs replace the random weights with.
    """
    if granularity not in ("op", "block"):
        raise ModelSpecError(f"granularity must be 'op' or 'block', not {granularity!r}")
    start_s = time.perf_counter()
    parsed = parse_spec(spec)
    if parsed.kind == "onnx":
        from coinfer.capture.onnx_graph import capture_onnx

        if input_shape is not None or seq_len is not None or layers is not None:
            raise ModelSpecError("onnx: models take their shapes from the file; drop input_shape, "
                                 "seq_len and layers")
        graph = capture_onnx(parsed.target, spec)
    else:
        graph = _capture_torch(parsed, spec, input_shape, seed, layers, seq_len)
    log.info("captured %s: %d nodes, %.3g GFLOPs in %.1f s", spec, len(graph.nodes),
             graph.total_flops / 1e9, time.perf_counter() - start_s)
    if weights is not None:
        from coinfer.capture.weights import with_weights

        graph = with_weights(graph, weights)
    return coarsen_to_blocks(graph) if granularity == "block" else graph


def _capture_torch(parsed: ParsedSpec, spec: str, input_shape: tuple[int, ...] | None, seed: int,
                   layers: int | None, seq_len: int | None) -> Graph:
    options: dict[str, str | int] = {}
    if layers is not None:
        options["layers"] = layers
    if seq_len is not None:
        options["seq_len"] = seq_len
    model, inputs = build(parsed, input_shape, seed, layers, seq_len)
    program = _export(parsed, model, inputs)
    options["placeholders"] = ",".join(fx_graph.placeholder_names(program).values())
    source = ModelSource(spec, tuple(tuple(int(d) for d in t.shape) for t in inputs), seed, options)
    # A loaded export: program's module() has only plain attribute holders, not the model's
    # classes, so its blocks come from the class names in nn_module_stack instead.
    eager = None if parsed.kind == "export" else model
    return graph_from_program(program, inputs, parsed.name, source, eager)


def capture_step(spec: str, tokens: int, context: int, *, seed: int = 0, layers: int | None = None,
                 weights: str | None = None, tensor_parallel: str | None = None) -> tuple[Graph, dict[str, int]]:
    """The op-granularity Graph of a causal LM's step program (coinfer.capture.causal_lm): `tokens` new
    tokens over a KV cache of `context` positions; and per node, the bytes of state it holds (its KV
    cache, which a step writes in place: one session's, counted in the node's `param_bytes`). The
    graph's source says what it is (options `step_tokens` and `context`), so the runtime rebuilds the
    same step program from it. `tensor_parallel` splits layers into shards
    (coinfer.capture.tensor_parallel; option `tensor_parallel`, per layer)."""
    parsed = parse_spec(spec)
    if parsed.kind != "hf":
        raise ModelSpecError(f"generation runs hf: causal language models (hf:gpt2, hf:llama), not {spec}")
    from coinfer.capture.causal_lm import build_step
    from coinfer.capture.mutation import written_placeholders

    options: dict[str, str | int] = {"step_tokens": tokens, "context": context}
    if layers is not None:
        options["layers"] = layers
    if tensor_parallel:
        options["tensor_parallel"] = tensor_parallel
    user_weights = None
    if weights is not None and tensor_parallel:  # the shards slice the user's weights (build_step)
        from coinfer.capture.weights import read_state_dict

        user_weights = read_state_dict(weights)
    model, inputs = build_step(parsed.target, tokens, context, layers, seed, tensor_parallel, user_weights)
    program = _export(parsed, model, inputs)
    options["placeholders"] = ",".join(fx_graph.placeholder_names(program).values())
    source = ModelSource(spec, tuple(tuple(int(d) for d in t.shape) for t in inputs), seed, options)
    graph = graph_from_program(program, inputs, parsed.name, source, model)
    if weights is not None:
        from coinfer.capture.weights import with_weights

        graph = with_weights(graph, weights)
    user = set(program.graph_signature.user_inputs)
    weights_in = {n.name for n in program.graph.nodes if n.op == "placeholder" and n.name not in user}
    owner = {s: node.id for node in graph.nodes for s in node.source_nodes}
    order = {n.name: i for i, n in enumerate(program.graph.nodes)}
    state: dict[str, int] = {}
    for p in (n for n in program.graph.nodes if n.name in written_placeholders(program, weights_in)):
        first = min((u for u in p.users if u.op == "call_function"), key=lambda u: order[u.name])
        spec_of = tensor_spec(p.meta.get("val"))
        node = owner[first.name]
        state[node] = state.get(node, 0) + (spec_of.size_bytes if spec_of is not None else 0)
    return graph, state


def graph_from_program(program: Any, inputs: tuple[Any, ...], name: str,
                       source: ModelSource | None, model: Any | None = None) -> Graph:
    """The op-granularity Graph of an exported program run on `inputs`."""
    run = run_nodes(program, inputs)
    stacks = [fx_graph.module_stack(n) for n in program.graph.nodes if n.op == "call_function"]
    facts = blocks_mod.facts_from_stacks(stacks)
    if model is not None:
        facts.update(blocks_mod.facts_from_module(model))
    nodes = fx_graph.build_nodes(program, run, lambda stack: blocks_mod.block_of(stack, facts))
    _, graph_inputs = fx_graph.graph_inputs(program)
    return Graph(name, graph_inputs, nodes, fx_graph.output_ids(program, nodes), "op", source)


def load_program(source: ModelSource) -> Any:
    """The torch.export.ExportedProgram `capture` exported for `source` (same weights, same fx
    node names). Feed it through `program.module()(*inputs)`; the placeholder of each graph input
    is listed in `source.options["placeholders"]`."""
    parsed = parse_spec(source.spec)
    if parsed.kind == "onnx":
        raise ModelSpecError(f"{source.spec} is an ONNX model; use coinfer.capture.load_onnx")
    if parsed.kind == "export":
        return load_exported(parsed.target)
    model, inputs = build_model(source)
    return _export(parsed, model, inputs)


def build_model(source: ModelSource) -> tuple[Any, tuple[Any, ...]]:
    """The eager model (eval mode) and the example inputs a graph was captured with."""
    parsed = parse_spec(source.spec)
    layers, seq_len = source.options.get("layers"), source.options.get("seq_len")
    if "context" in source.options:  # a causal LM's step program (capture_step)
        from coinfer.capture.causal_lm import build_step
        from coinfer.capture.weights import built_with_weights, options_state_dict

        tensor_parallel = source.options.get("tensor_parallel")
        state = options_state_dict(source.options) if built_with_weights(source.options) else None
        return build_step(parsed.target, int(source.options["step_tokens"]), int(source.options["context"]),
                          _int_or_none(layers), source.seed, str(tensor_parallel) if tensor_parallel else None, state)
    shape = source.input_shapes[0] if parsed.kind in ("torchvision", "hf") and source.input_shapes else None
    if parsed.kind == "hf" and seq_len is not None:
        shape = None  # seq_len alone reproduces it; passing both is allowed only when they agree
    return build(parsed, shape, source.seed, _int_or_none(layers), _int_or_none(seq_len))


def load_onnx(source: ModelSource) -> Any:
    """The onnx.ModelProto of an onnx: graph source (its node names are the `source_nodes`)."""
    parsed = parse_spec(source.spec)
    if parsed.kind != "onnx":
        raise ModelSpecError(f"{source.spec} is not an onnx: spec; use load_program for it")
    onnx = require("onnx", "onnx: models")
    return onnx.load(parsed.target)


def _export(parsed: ParsedSpec, model: Any, inputs: tuple[Any, ...]) -> Any:
    if parsed.kind == "export":
        return load_exported(parsed.target)
    _check_runs(parsed, model, inputs)
    what = f"{parsed.kind}:{parsed.target}" + (f":{parsed.attr}" if parsed.attr else "")
    return export_program(model, inputs, what)


def _check_runs(parsed: ParsedSpec, model: Any, inputs: tuple[Any, ...]) -> None:
    """Run the model once so a wrong input shape is a clear user error, not an export trace."""
    torch = require("torch", "capture")
    shapes = [tuple(t.shape) for t in inputs]
    try:
        with torch.no_grad():
            model(*inputs)
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(
            f"{parsed.kind}:{parsed.target} cannot run on inputs of shape {shapes}: {first}; "
            "pass an input_shape the model accepts (e.g. (1, 3, 224, 224) for image classifiers)"
        ) from None


def _int_or_none(value: str | int | None) -> int | None:
    return None if value is None else int(value)

"""The unpartitioned model, on the client: example inputs, and the outputs every plan must reproduce.

`reference_outputs` runs the whole model the graph was captured from, with the weights the
graph's source names (the user's state dict, coinfer.capture.weights), on the same inputs a run
sends: the eager PyTorch model, or the whole ONNX model in onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from coinfer.errors import PlanError
from coinfer.graph import Graph


def reference_outputs(graph: Graph, inputs: Mapping[str, np.ndarray], threads: int = 1) -> dict[str, np.ndarray]:
    """The unpartitioned model's outputs on `inputs`, by graph output value (for --verify), computed
    with the workers' thread count."""
    if graph.source is None:
        raise PlanError(f"graph {graph.name!r} has no model source, so there is no model to verify against")
    if graph.source.spec.startswith("onnx:"):
        return onnx_reference(graph, inputs, threads)
    return torch_reference(graph, inputs, threads)


def torch_reference(graph: Graph, inputs: Mapping[str, np.ndarray], threads: int = 1) -> dict[str, np.ndarray]:
    """The eager model's outputs on `inputs`, keyed like the program's output values.

    Run with the workers' thread count: CPU kernels split reductions by thread, so the same model
    on the same input differs in the last bits between thread counts. And with
    nn.MultiheadAttention's fused fast path off, as capture exported it: the fused kernel differs
    from the exported ops by about 1e-6 (torchvision's ViTs), which is the reference's kernel
    choice, not the partition's.
    """
    from coinfer.capture.api import build_model, load_program
    from coinfer.capture.deps import require
    from coinfer.capture.exporting import no_mha_fastpath
    from coinfer.capture.weights import built_with_weights, source_state_dict
    from coinfer.runtime.stages import StageFailure

    assert graph.source is not None
    torch = require("torch", "the runtime")
    model, _ = build_model(graph.source)
    state = None if built_with_weights(graph.source.options) else source_state_dict(graph)
    if state is not None:
        model.load_state_dict(state, strict=True)
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


def onnx_reference(graph: Graph, inputs: Mapping[str, np.ndarray], threads: int = 1) -> dict[str, np.ndarray]:
    """The whole ONNX model's outputs on `inputs` in onnxruntime (with the user's initializers), its
    thread pool capped at the workers' thread count, as theirs is (reductions split by thread)."""
    from coinfer.capture.api import load_onnx
    from coinfer.capture.deps import require
    from coinfer.capture.weights import source_state_dict

    assert graph.source is not None
    ort = require("onnxruntime", "running onnx: models")
    onnx = require("onnx", "onnx: models")
    model = load_onnx(graph.source)
    state = source_state_dict(graph)
    if state is not None:
        for t in model.graph.initializer:
            t.CopyFrom(onnx.numpy_helper.from_array(state[t.name].detach().numpy(), t.name))
    placeholders = str(graph.source.options.get("placeholders", "")).split(",")
    feed = {p: inputs[gi.name] for p, gi in zip(placeholders, graph.inputs, strict=True)}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session.run(names, feed), strict=True))


def _flatten(out: Any) -> list[Any]:
    if hasattr(out, "to_tuple"):  # transformers ModelOutput
        out = out.to_tuple()
    if isinstance(out, list | tuple):
        return [t for item in out for t in _flatten(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _flatten(item)]
    return [out]


def example_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs matching the graph's inputs: N(0, 1) floats, token ids below 1000."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for gi in graph.inputs:
        shape, dtype = gi.spec.shape, gi.spec.dtype or "float32"
        if shape is None:
            raise PlanError(f"graph input {gi.name!r} has no shape; pass --input-file")
        if dtype.startswith("float"):
            out[gi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            out[gi.name] = np.ones(shape, dtype=bool)
        else:
            out[gi.name] = rng.integers(0, 1000, size=shape).astype(dtype)
    return out

"""Running a stage's ops: the interface both executors share, and choosing one for a graph.

PyTorch models run in PyTorch (`torch_executor`), `onnx:` models in onnxruntime
(`onnx_executor`). Both rebuild the exact program the graph was captured from (same seed, same
weights), so every worker holds identical weights without shipping them, and both report a
failing op by the coinfer node that owns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from coinfer.errors import PlanError, WorkerError
from coinfer.graph import Graph
from coinfer.runtime.program import ProgramIndex
from coinfer.runtime.routing import RunStage


class StageFailure(WorkerError):
    """An op of a stage raised; carries the coinfer node and the exception text."""

    def __init__(self, node_id: str, op: str, error: BaseException) -> None:
        self.node_id, self.op = node_id, op
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.error = f"{type(error).__name__}: {text}" if text else type(error).__name__
        super().__init__(f"node {node_id!r} (op {op}) raised {self.error}")


class Executor(Protocol):
    """Runs stages of one program on numpy values in and out."""

    index: ProgramIndex

    def prepare(self, stage: RunStage) -> None:
        """Build whatever running `stage` needs (an onnxruntime session), ahead of the first request."""

    def run(self, stage: RunStage, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The stage's `keep` values, computed from `values` (which hold at least its `needs`)."""


def executor_for(graph: Graph, threads: int, micro_batch: int = 1) -> Executor:
    """The executor of the program `graph` was captured from, rebuilt at `micro_batch` times the
    captured batch (coinfer.runtime.batching)."""
    if graph.source is None:
        raise PlanError(f"graph {graph.name!r} has no model source (a hand-written graph); the runtime can only run "
                        "captured models: coinfer capture MODEL -o graph.json, then plan that")
    if graph.source.spec.startswith("onnx:"):
        from coinfer.runtime.onnx_executor import OnnxExecutor

        return OnnxExecutor(graph, threads, micro_batch)
    from coinfer.runtime.torch_executor import TorchExecutor

    return TorchExecutor(graph, threads, micro_batch)


def reference_outputs(graph: Graph, inputs: Mapping[str, np.ndarray], threads: int = 1) -> dict[str, np.ndarray]:
    """The unpartitioned model's outputs on `inputs`, by graph output value (for --verify), computed
    with the workers' thread count."""
    if graph.source is None:
        raise PlanError(f"graph {graph.name!r} has no model source, so there is no model to verify against")
    if graph.source.spec.startswith("onnx:"):
        from coinfer.runtime.onnx_executor import onnx_reference

        return onnx_reference(graph, inputs)
    from coinfer.runtime.torch_executor import torch_reference

    return torch_reference(graph, inputs, threads)


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



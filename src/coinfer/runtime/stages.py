"""Running a stage's ops on a worker: the interface both stage runners share, and their failure.

A worker runs what its deployment carries and nothing else: PyTorch programs op by op
(`torch_stages`: aten calls over weights the deployment shipped), ONNX programs stage by stage
in onnxruntime (`onnx_stages`: the sub-models it shipped). Both report a failing op by the
coinfer node that owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from coinfer.errors import WorkerError
from coinfer.runtime.program import ProgramIndex
from coinfer.runtime.routing import RunStage


class StageFailure(WorkerError):
    """An op of a stage raised; carries the coinfer node and the exception text."""

    def __init__(self, node_id: str, op: str, error: BaseException) -> None:
        self.node_id, self.op = node_id, op
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.error = f"{type(error).__name__}: {text}" if text else type(error).__name__
        super().__init__(f"node {node_id!r} (op {op}) raised {self.error}")


class Stages(Protocol):
    """Runs the stages of one deployment on numpy values in and out."""

    index: ProgramIndex

    @property
    def state_makers(self) -> Mapping[str, Callable[[], Any]]:
        """Per state tensor of the stages, how a new session makes it (empty for stateless programs)."""

    def run(self, stage: RunStage, values: Mapping[str, np.ndarray],
            node_s: dict[str, float] | None = None, state: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """The stage's `keep` values, computed from `values` (which hold at least its `needs`). With
        `node_s`, also the compute time of each of its nodes, added there, where the executor can tell
        them apart (remote profiling, coinfer.profile.remote). `state` is the request's session state,
        for a program that keeps some (coinfer.runtime.worker.sessions; PyTorch programs only)."""

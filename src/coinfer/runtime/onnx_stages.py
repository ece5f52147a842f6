"""Stages of an `onnx:` program on a worker: each stage's shipped sub-model, run in onnxruntime.

A stage's sub-model arrives without initializer data; the worker checks it (no external data,
which would make onnxruntime open a file the model names; operators only from the standard
domains and onnxruntime's own contrib domain), puts back the initializers from the deployment's
weight blobs, and builds one session per stage with onnxruntime's thread pools capped at the
worker's thread count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from coinfer.errors import WireError
from coinfer.runtime.program import ProgramIndex
from coinfer.runtime.routing import RunStage
from coinfer.runtime.stages import StageFailure

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


class OnnxStages:
    state_makers: Mapping[str, Any] = {}  # an ONNX program keeps no state between requests

    def __init__(self, index: ProgramIndex, stages_doc: Mapping[str, Any], models: Mapping[str, bytes],
                 weights: Mapping[str, np.ndarray], stages: Sequence[RunStage], threads: int) -> None:
        import onnx
        import onnxruntime as ort

        self.index = index
        self.sessions: dict[int, Any] = {}
        self.feeds: dict[int, Mapping[str, str]] = {}
        for stage in stages:
            if not stage.ops:
                continue
            doc = stages_doc.get(str(stage.index))
            where = f"the ONNX sub-model of stage {stage.label}"
            if not isinstance(doc, dict) or not isinstance(doc.get("feeds"), dict):
                raise WireError(f"{where}: the deployment holds no model and feeds for it")
            model = onnx.ModelProto()
            try:
                model.ParseFromString(models[doc["model"]])
            except Exception as exc:  # protobuf's DecodeError and friends
                raise WireError(f"{where} does not parse as ONNX ({type(exc).__name__})") from None
            _check_safe(model, where)
            for name, weight_doc in dict(doc.get("weights", {})).items():
                model.graph.initializer.append(onnx.numpy_helper.from_array(weights[weight_doc["sha256"]], name))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            try:
                self.sessions[stage.index] = ort.InferenceSession(model.SerializeToString(), options,
                                                                  providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime's Fail / InvalidGraph
                raise WireError(f"{where} does not load in onnxruntime: {str(exc).splitlines()[0]}") from None
            self.feeds[stage.index] = {str(k): str(v) for k, v in doc["feeds"].items()}

    def run(self, stage: RunStage, values: Mapping[str, np.ndarray],
            node_s: dict[str, float] | None = None, state: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        # one onnxruntime session per stage: its nodes' times cannot be told apart, so node_s stays as it is;
        # an ONNX program keeps no state (a deployment with a session group is PyTorch's, checked at deploy)
        if not stage.ops:
            return {}
        feed = {name: values[value] for name, value in self.feeds[stage.index].items()}
        try:
            result = self.sessions[stage.index].run(list(stage.keep), feed)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise StageFailure(stage.node_ids[0], "onnxruntime", exc) from exc
        return dict(zip(stage.keep, (np.asarray(r) for r in result), strict=True))


def _check_safe(model: Any, where: str) -> None:
    """Refuse what would make onnxruntime reach outside the message: external data, foreign domains."""
    import onnx

    tensors = [*model.graph.initializer, *(a.t for n in _all_nodes(model.graph) for a in n.attribute
                                           if a.type == onnx.AttributeProto.TENSOR)]
    if any(t.data_location == onnx.TensorProto.EXTERNAL or t.external_data for t in tensors):
        raise WireError(f"{where} refers to external data files; a worker opens no file a model names")
    domains = {n.domain for n in _all_nodes(model.graph)} | {o.domain for o in model.opset_import}
    foreign = sorted(domains - ALLOWED_DOMAINS)
    if foreign or model.functions:
        raise WireError(f"{where} uses operator domains {foreign or 'in local functions'}; a worker runs only "
                        f"the standard ones ({', '.join(sorted(d or 'ai.onnx' for d in ALLOWED_DOMAINS))})")


def _all_nodes(graph: Any) -> list[Any]:
    """Every node, subgraphs (If, Loop, Scan bodies) included."""
    out = []
    for node in graph.node:
        out.append(node)
        for a in node.attribute:
            if a.HasField("g"):
                out.extend(_all_nodes(a.g))
            for sub in a.graphs:
                out.extend(_all_nodes(sub))
    return out

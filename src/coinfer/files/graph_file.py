"""Graph JSON documents (format version 1), documented field by field in docs/formats.md.

The short hand-written form is accepted as it is:

    {"version": 1, "input_bytes": 602112,
     "nodes": [{"id": "a", "inputs": ["input"], "flops": 1.2e8, "output_bytes": 2.5e6}, ...]}

Captured graphs add `name`, `inputs` (name, shape, dtype, bytes of each model input), `outputs`,
`granularity`, `source` (how to rebuild the model) and, per node, `op`, `param_bytes`, `module`,
`block`, `tensors` and `source_nodes`. Nodes may be listed in any order; they are sorted
topologically on load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coinfer.errors import GraphFileError
from coinfer.files.validation import check_version, read_json, validate
from coinfer.graph import (
    DEFAULT_INPUT_NAME,
    GRAPH_FORMAT_VERSION,
    Graph,
    GraphInput,
    ModelSource,
    Node,
    TensorSpec,
    topological_order,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorDoc(_Strict):
    bytes: int = Field(ge=0)
    shape: list[int] | None = None
    dtype: str | None = None


class InputDoc(TensorDoc):
    name: str


class NodeDoc(_Strict):
    id: str = Field(min_length=1)
    inputs: list[str]
    flops: float = Field(ge=0)
    output_bytes: float = Field(ge=0)
    param_bytes: float = Field(default=0, ge=0)
    param_read_bytes: float | None = Field(default=None, ge=0)
    op: str = ""
    tensors: list[TensorDoc] = []
    module: str = ""
    block: str | None = None
    source_nodes: list[str] = []
    parallel_group: str | None = Field(default=None, min_length=1)


class SourceDoc(_Strict):
    spec: str
    input_shapes: list[list[int]] = []
    seed: int = 0
    options: dict[str, str | int] = {}


class GraphDoc(_Strict):
    version: Literal[1]
    name: str = "graph"
    input_bytes: float | None = Field(default=None, ge=0)
    inputs: list[InputDoc] | None = None
    outputs: list[str] = []
    granularity: Literal["op", "block"] = "op"
    source: SourceDoc | None = None
    nodes: list[NodeDoc] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_input_form(self) -> GraphDoc:
        if self.inputs is None and self.input_bytes is None:
            raise ValueError("give the model input as 'input_bytes' (one input named 'input') or 'inputs'")
        return self


def graph_from_dict(doc: Any, where: str | Path = "<graph>") -> Graph:
    """Validate a graph document and build the Graph; errors name `where` and the field."""
    check_version(doc, GRAPH_FORMAT_VERSION, where, GraphFileError, "re-capture the model")
    parsed = validate(GraphDoc, doc, where, GraphFileError)
    if parsed.inputs is not None:
        inputs = tuple(GraphInput(i.name, _spec(i)) for i in parsed.inputs)
    else:
        inputs = (GraphInput(DEFAULT_INPUT_NAME, TensorSpec(int(parsed.input_bytes or 0))),)
    nodes = [
        Node(
            id=n.id, inputs=tuple(n.inputs), flops=float(n.flops), output_bytes=int(n.output_bytes),
            param_bytes=int(n.param_bytes), op=n.op, outputs=tuple(_spec(t) for t in n.tensors),
            module=n.module, block=n.block, source_nodes=tuple(n.source_nodes),
            param_read_bytes=None if n.param_read_bytes is None else int(n.param_read_bytes),
            parallel_group=n.parallel_group,
        )
        for n in parsed.nodes
    ]
    source = None
    if parsed.source is not None:
        s = parsed.source
        source = ModelSource(s.spec, tuple(tuple(x) for x in s.input_shapes), s.seed, dict(s.options))
    try:
        ordered = topological_order(nodes, (i.name for i in inputs))
        return Graph(parsed.name, inputs, ordered, tuple(parsed.outputs), parsed.granularity, source)
    except GraphFileError as exc:
        raise GraphFileError(f"{where}: {exc}") from None


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    """The JSON document of a graph; `graph_from_dict(graph_to_dict(g)) == g`."""
    doc: dict[str, Any] = {
        "version": GRAPH_FORMAT_VERSION,
        "name": graph.name,
        "granularity": graph.granularity,
        "inputs": [{"name": i.name, **_tensor(i.spec)} for i in graph.inputs],
        "outputs": list(graph.outputs),
    }
    if graph.source is not None:
        s = graph.source
        doc["source"] = {"spec": s.spec, "input_shapes": [list(x) for x in s.input_shapes],
                         "seed": s.seed, "options": dict(s.options)}
    doc["nodes"] = [_node(n) for n in graph.nodes]
    return doc


def load_graph(path: str | Path) -> Graph:
    path = Path(path)
    return graph_from_dict(read_json(path, GraphFileError, "graph"), path)


def save_graph(graph: Graph, path: str | Path) -> None:
    Path(path).write_text(json.dumps(graph_to_dict(graph), indent=1) + "\n")


def graph_digest(graph: Graph) -> str:
    """A short stable fingerprint of the graph's structure and numbers (not of its name)."""
    doc = graph_to_dict(graph)
    doc.pop("name")
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _spec(t: TensorDoc) -> TensorSpec:
    return TensorSpec(t.bytes, tuple(t.shape) if t.shape is not None else None, t.dtype)


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"shape": list(spec.shape) if spec.shape is not None else None, "dtype": spec.dtype,
            "bytes": spec.size_bytes}


def _node(n: Node) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": n.id, "op": n.op, "inputs": list(n.inputs), "flops": n.flops,
                           "param_bytes": n.param_bytes, "output_bytes": n.output_bytes}
    if n.param_read_bytes is not None:
        doc["param_read_bytes"] = n.param_read_bytes
    if n.parallel_group is not None:
        doc["parallel_group"] = n.parallel_group
    if n.outputs:
        doc["tensors"] = [_tensor(t) for t in n.outputs]
    if n.module:
        doc["module"] = n.module
    if n.block is not None:
        doc["block"] = n.block
    if n.source_nodes:
        doc["source_nodes"] = list(n.source_nodes)
    return doc

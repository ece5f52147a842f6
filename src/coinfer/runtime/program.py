"""What the runtime executes, without torch: the ops of a program and the values they pass.

A captured Graph names coinfer nodes; the program it came from (an exported torch program or an
ONNX model) has finer *ops* (fx nodes, ONNX nodes), each owned by one coinfer node (its
`source_nodes`). Ops read and write *values*: for torch an fx node's name is the name of the value
it outputs; for ONNX values are the model's tensor names. Graph inputs are values named like the
graph's inputs (`input`). Weights are not values: every stage that reads a weight holds it.

The client sends every worker the index of the whole program (`index_to_doc`), so that each
computes the same routes (coinfer.runtime.routing); only the calls and weights of its own stages
come with it (coinfer.runtime.packaging). `index_from_doc` is the worker's strict reading of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coinfer.errors import WireError
from coinfer.graph import TensorSpec

MAX_NAME_CHARS = 300  # value and op names: fx names, ONNX tensor names, coinfer node ids


@dataclass(frozen=True)
class ProgramOp:
    """One executable op: `owner` is the coinfer node it belongs to."""

    name: str
    owner: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class ProgramIndex:
    """The ops of a program in execution order, the specs of their values, and its outputs.

    `graph_inputs` maps a graph input name to the value the program reads it as (both are the
    graph input name in this index; executors translate to placeholder names themselves).
    """

    ops: tuple[ProgramOp, ...]
    specs: Mapping[str, TensorSpec]
    graph_inputs: tuple[str, ...]
    outputs: tuple[str, ...]


# -- the index as JSON -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpecDoc(_Strict):
    bytes: int = Field(ge=0)
    shape: list[int] | None = Field(None, max_length=16)
    dtype: str | None = Field(None, max_length=16)


class OpDoc(_Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    owner: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    inputs: list[str] = Field(max_length=10_000)
    outputs: list[str] = Field(max_length=10_000)


class IndexDoc(_Strict):
    ops: list[OpDoc]
    specs: dict[str, SpecDoc]
    graph_inputs: list[str]
    outputs: list[str]


def index_to_doc(index: ProgramIndex) -> dict[str, Any]:
    return {
        "ops": [{"name": o.name, "owner": o.owner, "inputs": list(o.inputs), "outputs": list(o.outputs)}
                for o in index.ops],
        "specs": {name: {"bytes": s.size_bytes, "shape": None if s.shape is None else list(s.shape), "dtype": s.dtype}
                  for name, s in index.specs.items()},
        "graph_inputs": list(index.graph_inputs),
        "outputs": list(index.outputs),
    }


def index_from_doc(doc: Any, where: str) -> ProgramIndex:
    """The index a deploy message carries, checked field by field (WireError names the field)."""
    try:
        parsed = IndexDoc.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise WireError(f"{where}: field {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    names = [*parsed.graph_inputs, *parsed.specs, *(v for o in parsed.ops for v in (o.name, *o.outputs))]
    bad = next((n for n in names if not (0 < len(n) <= MAX_NAME_CHARS and n.isprintable())), None)
    if bad is not None:
        raise WireError(f"{where}: the name {bad[:80]!r} is empty, too long or holds control characters")
    made = set(parsed.graph_inputs)
    for op in parsed.ops:
        unknown = [v for v in op.inputs if v not in made]
        if unknown:
            raise WireError(f"{where}: op {op.name!r} reads {unknown[:3]}, which no earlier op makes")
        made.update(op.outputs)
    missing = [v for v in parsed.outputs if v not in made]
    if missing:
        raise WireError(f"{where}: outputs {missing[:3]} are made by no op")
    ops = tuple(ProgramOp(o.name, o.owner, tuple(o.inputs), tuple(o.outputs)) for o in parsed.ops)
    specs = {name: TensorSpec(s.bytes, None if s.shape is None else tuple(s.shape), s.dtype)
             for name, s in parsed.specs.items()}
    return ProgramIndex(ops, specs, tuple(parsed.graph_inputs), tuple(parsed.outputs))

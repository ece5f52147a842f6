"""What the runtime executes, without torch: the ops of a program and the values they pass.

A captured Graph names coinfer nodes; the program it came from (an exported torch program or an
ONNX model) has finer *ops* (fx nodes, ONNX nodes), each owned by one coinfer node (its
`source_nodes`). Ops read and write *values*: for torch an fx node's name is the name of the value
it outputs; for ONNX values are the model's tensor names. Graph inputs are values named like the
graph's inputs (`input`). Weights are not values: every stage that reads a weight holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from coinfer.graph import TensorSpec


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

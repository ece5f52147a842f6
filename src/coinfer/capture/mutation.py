"""Which tensors an exported program writes in place: from each op's schema, the arguments it writes.

A causal LM's step program (coinfer.capture.causal_lm) writes its KV cache into buffers with
`aten.index_copy_`; the runtime keeps such tensors per session (coinfer.runtime.packaging.torch_program)
and the planner counts their bytes per session (coinfer.llm.steps).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any


def written_positions(target: Any) -> set[int | str]:
    """The argument positions (and keyword names) an op writes into, from its schema's alias info."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        return set()
    out: set[int | str] = set()
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            out.update({i, arg.name})
    return out


def written_placeholders(program: Any, among: Container[str]) -> set[str]:
    """The placeholders (named in `among`: weights, buffers, constants) that some op writes into."""
    written: set[str] = set()
    for n in program.graph.nodes:
        if n.op != "call_function":
            continue
        positions = written_positions(n.target)
        for key, arg in [*enumerate(n.args), *n.kwargs.items()]:
            if key in positions and getattr(arg, "name", None) in among:
                written.add(arg.name)
    return written

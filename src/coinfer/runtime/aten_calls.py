"""One op of an exported PyTorch program as JSON, and back: the form in which a stage's program travels.

A call is `{"target": "aten.conv2d.default", "args": [...], "kwargs": {...}}`. Arguments are JSON
numbers, booleans, null, strings and lists, plus tagged objects, each with exactly one key:

    {"value": NAME}          a value of the program (another op's output or a graph input)
    {"weight": REF}          a parameter, buffer or constant (REF names it in the deployment's weights)
    {"weight": REF, "copy": true}   the same, for an op that writes into that argument (a fresh copy each run)
    {"state": REF}           a tensor the program keeps across runs of one session and writes in place
                             (a causal LM's KV cache; coinfer.runtime.worker.sessions)
    {"float": "inf"}         a float JSON cannot write: "inf", "-inf" or "nan"
    {"dtype": "float32"}     a torch.dtype       {"device": "cpu"}            a torch.device
    {"layout": "strided"}    a torch.layout      {"memory_format": "channels_last"}

Why not torch.export.save: its archive pickles the state dict (read back weights-only, but it is
still pickle) and always holds every weight of the model, while a stage holds only its own; and a
stage is a piece of the graph, not a program torch can load on its own.

What a worker runs is resolved only against `torch.ops.aten` (plus `operator.getitem`, which
picks one result of a multi-output op): a target string that is not an aten operator overload
named exactly so is refused, as are the few aten operators that touch files or storages
(`UNSAFE_OPS`). So a deploy message can choose among tensor kernels, never name code to import.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from coinfer.capture.mutation import written_positions
from coinfer.errors import WireError

GETITEM = "operator.getitem"
_TARGET = re.compile(r"^aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")
# aten operators that read or write files or raw storages: nothing a captured model needs
UNSAFE_OPS = frozenset({"from_file", "_nnpack_available", "set_", "_storage", "save", "load"})
MEMORY_FORMATS = ("contiguous_format", "preserve_format", "channels_last", "channels_last_3d")
FLOAT_WORDS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
MAX_ARG_DEPTH = 8


# -- encoding, on the client --------------------------------------------------------------------


def encode_call(node: Any, ref_of: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The JSON of fx node `node` (a call_function); `ref_of(arg_node)` gives a {"value"} or {"weight"} tag."""
    target = node.target
    name: str | None = GETITEM if target is operator.getitem else _target_name(target)
    if name is None:
        raise WireError(f"fx node {node.name} calls {target!r}, which is not an aten operator; only exported "
                        "aten programs can be deployed (capture the model again)")
    written = written_positions(target)

    def encode(value: Any, position: int | str | None) -> Any:
        if hasattr(value, "op") and hasattr(value, "target"):  # an fx Node
            tag = dict(ref_of(value))
            if "weight" in tag and position in written:
                tag["copy"] = True
            return tag
        if isinstance(value, list | tuple):  # cat([a, b]), index(x, [None, i]): nodes inside lists
            return [encode(v, position) for v in value]
        return _encode_literal(value, node.name)

    args = [encode(a, i) for i, a in enumerate(node.args)]
    kwargs = {k: encode(v, k) for k, v in node.kwargs.items()}
    return {"target": name, "args": args, "kwargs": kwargs}


def _target_name(target: Any) -> str | None:
    namespace = getattr(target, "namespace", None)
    packet = getattr(target, "_overloadpacket", None)
    overload = getattr(target, "_overloadname", None)
    if namespace != "aten" or packet is None or overload is None:
        return None
    return f"aten.{packet.__name__}.{overload}"


def _encode_literal(value: Any, where: str) -> Any:
    import torch

    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": str(value)}
    if isinstance(value, list | tuple):
        return [_encode_literal(v, where) for v in value]
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise WireError(f"fx node {where} has an argument of type {type(value).__name__} ({value!r}), which a stage "
                    "program cannot carry")


# -- decoding, on the worker --------------------------------------------------------------------


class Ref:
    """A placeholder in a decoded call for a value or a weight, filled in at each run."""

    __slots__ = ("copy", "kind", "name")

    def __init__(self, kind: str, name: str, copy: bool = False) -> None:
        self.kind, self.name, self.copy = kind, name, copy


def resolve_target(name: Any, where: str) -> Callable[..., Any]:
    """The callable a target string names: an aten operator overload, or operator.getitem."""
    if name == GETITEM:
        return operator.getitem
    import torch

    match = _TARGET.match(name) if isinstance(name, str) else None
    if match is None:
        raise WireError(f"{where}: target {str(name)[:80]!r} is not of the form aten.NAME.OVERLOAD")
    op_name, overload = match.groups()
    if op_name in UNSAFE_OPS:
        raise WireError(f"{where}: target {name} is an aten operator a stage may not run")
    try:
        op = getattr(getattr(torch.ops.aten, op_name), overload)
    except (AttributeError, RuntimeError):
        raise WireError(f"{where}: this worker's PyTorch {torch.__version__} has no operator {name}") from None
    if not isinstance(op, torch._ops.OpOverload) or op.namespace != "aten" or _target_name(op) != name:
        raise WireError(f"{where}: target {name} is not an aten operator overload")
    return op


def decode_args(doc: Any, where: str, depth: int = 0) -> Any:
    """A call's argument tree with tagged objects turned into torch values and `Ref`s."""
    if depth > MAX_ARG_DEPTH:
        raise WireError(f"{where}: arguments nest deeper than {MAX_ARG_DEPTH}")
    if doc is None or isinstance(doc, bool | int | float | str):
        return doc
    if isinstance(doc, list):
        return [decode_args(d, where, depth + 1) for d in doc]
    if isinstance(doc, dict):
        return _decode_tag(doc, where)
    raise WireError(f"{where}: an argument of JSON type {type(doc).__name__}")


def _decode_tag(doc: Mapping[str, Any], where: str) -> Any:
    import torch

    keys = set(doc)
    if keys in ({"weight"}, {"weight", "copy"}) and isinstance(doc["weight"], str):
        return Ref("weight", doc["weight"], doc.get("copy") is True)
    if len(keys) != 1:
        raise WireError(f"{where}: a tagged argument has keys {sorted(keys)[:4]}, expected exactly one")
    (key, text), = doc.items()
    if not isinstance(text, str):
        raise WireError(f"{where}: tag {key!r} holds a {type(text).__name__}, expected text")
    if key in ("value", "state"):
        return Ref(key, text)
    if key == "float" and text in FLOAT_WORDS:
        return FLOAT_WORDS[text]
    if key == "dtype" and isinstance(getattr(torch, text, None), torch.dtype):
        return getattr(torch, text)
    if key == "device" and text == "cpu":
        return torch.device("cpu")
    if key == "layout" and text == "strided":
        return torch.strided
    if key == "memory_format" and text in MEMORY_FORMATS:
        return getattr(torch, text)
    raise WireError(f"{where}: tag {key!r} with {text[:40]!r} is not one a stage program may hold")

"""A user's trained weights: a state-dict file read safely, checked against the model, and recorded in its source.

Two formats, both read without running code from the file:

- safetensors (`.safetensors`): a JSON header and raw bytes;
- a PyTorch checkpoint (`.pt`, `.pth`, `.bin`), read with `torch.load(weights_only=True)`, PyTorch's
  restricted unpickler that builds only tensors and plain containers and refuses anything else.
  A checkpoint holding `{"state_dict": ...}` or `{"model_state_dict": ...}` is unwrapped.

Keys are those of the model's `state_dict()` (parameters and persistent buffers; for `onnx:`
models the initializer names). The file must give every one of them, with the model's shape and
dtype, and nothing else; the error lists what is missing, what is unexpected and what differs.

`with_weights(graph, path)` records the file and its sha256 in the graph's source
(`options["weights"]`, `options["weights_sha256"]`), so a plan made with it runs with it, and a
file that changed since is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from coinfer.capture.deps import require
from coinfer.errors import WeightsError
from coinfer.graph import Graph

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_WRAPPERS = ("state_dict", "model_state_dict")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def with_weights(graph: Graph, path: str | Path | None) -> Graph:
    """`graph` whose source names the state-dict file `path` (None: the source's own random weights)."""
    if graph.source is None:
        raise WeightsError(f"graph {graph.name!r} has no model source to load weights into; capture the model")
    options = {k: v for k, v in graph.source.options.items() if k not in ("weights", "weights_sha256")}
    if path is not None:
        file = Path(path).resolve()
        if not file.is_file():
            raise WeightsError(f"--weights {path}: no such file")
        options.update(weights=str(file), weights_sha256=file_sha256(file))
    return replace(graph, source=replace(graph.source, options=options))


def source_state_dict(graph: Graph) -> dict[str, Any] | None:
    """The state dict the graph's source names (None: keep the model's own weights), checked to be
    the file the plan was made with."""
    return options_state_dict(graph.source.options if graph.source is not None else {})


def built_with_weights(options: Mapping[str, Any]) -> bool:
    """Whether a source's model holds the user's weights as built: a tensor-parallel step program slices
    them into its shards (coinfer.capture.causal_lm.build_step), so its names are not the file's and
    nothing is laid over it afterwards."""
    return bool(options.get("tensor_parallel")) and "context" in options


def options_state_dict(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The state dict a model source's options name (`with_weights`), checked against its sha256."""
    path = options.get("weights")
    if path is None:
        return None
    recorded = options.get("weights_sha256")
    if recorded is not None and file_sha256(str(path)) != recorded:
        raise WeightsError(f"weights file {path} changed since the plan was made (its sha256 is no longer "
                           f"{str(recorded)[:12]}...); plan again, or pass --weights {path} to use it as it is now")
    return read_state_dict(str(path))


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Name -> torch tensor from a safetensors file or a weights-only PyTorch checkpoint."""
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"weights file {file}: no such file")
    torch = require("torch", "loading weights")
    if file.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"weights file {file} is not a readable safetensors file ({exc})") from None
    if file.suffix not in TORCH_SUFFIXES:
        raise WeightsError(f"weights file {file}: give a .safetensors file or a PyTorch state dict "
                           f"({', '.join(TORCH_SUFFIXES)}), not {file.suffix or 'a file without a suffix'}")
    try:
        loaded = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler raises UnpicklingError and others for what it refuses
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"weights file {file} does not load as a weights-only state dict ({first}); save "
                           "model.state_dict() with torch.save, or as safetensors") from None
    for key in _WRAPPERS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"weights file {file} holds a {type(loaded).__name__}, not a mapping of names to "
                           "tensors; save model.state_dict()")
    return {str(k): v for k, v in loaded.items()}


def check_state_dict(state: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Refuse a state dict whose keys, shapes or dtypes differ from the model's (`expected`)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    differ = [f"{k} is {_describe(state[k])}, the model has {_describe(expected[k])}"
              for k in sorted(set(state) & set(expected))
              if _describe(state[k]) != _describe(expected[k])]
    if missing or unexpected or differ:
        parts = ([f"missing {len(missing)} key(s): {', '.join(missing[:5])}"] if missing else []) + \
                ([f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:5])}"] if unexpected else []) + \
                ([f"{len(differ)} differ: {'; '.join(differ[:3])}"] if differ else [])
        raise WeightsError(f"{where} does not fit the model: {'; '.join(parts)}. Save the state dict of this "
                           "very model (model.state_dict()), or check the model spec")


def _describe(tensor: Any) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"

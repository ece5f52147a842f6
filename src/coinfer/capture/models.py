"""Build the eager model and its example inputs from a MODEL spec (see `spec.py`).

Weights are random but reproducible: `torch.manual_seed(seed)` right before the model is built,
and inputs come from a separate generator seeded the same way, so building twice from one
`ModelSource` gives the same weights, the same inputs and (through torch.export) the same fx node
names. `export:` programs carry their own weights and example inputs.
"""

from __future__ import annotations

import importlib
import logging
import zipfile
from typing import Any

from coinfer.capture.deps import require
from coinfer.capture.hf import build_hf, is_text_model
from coinfer.capture.spec import ParsedSpec, unknown_name
from coinfer.errors import ModelSpecError

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIDE = 224
# Models whose native resolution is above their minimum (inception_v3 runs at 224 too, but was
# designed for, and is always benchmarked at, 299x299).
_NATIVE_SIDE = {"inception_v3": 299}
# Pinned so the same seed keeps giving the same weights when torchvision changes its default
# (it warns that it will, for these two).
_BUILD_KWARGS: dict[str, dict[str, Any]] = {"googlenet": {"init_weights": True},
                                            "inception_v3": {"init_weights": True}}

Built = tuple[Any, tuple[Any, ...]]  # (torch.nn.Module in eval mode, example input tensors)


def build(parsed: ParsedSpec, input_shape: tuple[int, ...] | None, seed: int,
          layers: int | None = None, seq_len: int | None = None) -> Built:
    """The eval-mode module and example inputs for a parsed spec (not for onnx: specs)."""
    if seq_len is not None and not (parsed.kind == "hf" and is_text_model(parsed.target)):
        raise ModelSpecError(f"seq_len applies to hf: text models (gpt2, llama, bert), not {parsed.kind}:"
                             f"{parsed.target}; give input_shape instead")
    if layers is not None and parsed.kind != "hf":
        raise ModelSpecError(f"layers applies to hf: models only, not {parsed.kind}: specs")
    if input_shape is not None and parsed.kind in ("export", "python"):
        raise ModelSpecError(f"input_shape cannot change a {parsed.kind}: model; its example inputs "
                             "fix the shapes (re-export, or change what the callable returns)")
    if input_shape is not None and not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ModelSpecError(f"input_shape={input_shape}: give positive integers, e.g. (1, 3, 224, 224)")
    if parsed.kind == "torchvision":
        return _torchvision(parsed.target, input_shape, seed)
    if parsed.kind == "hf":
        if seq_len is not None:
            if input_shape is not None and input_shape[-1] != seq_len:
                raise ModelSpecError(f"seq_len={seq_len} disagrees with input_shape={input_shape}; give one")
            input_shape = input_shape or (1, seq_len)
        return build_hf(parsed.target, input_shape, layers, seed)
    if parsed.kind == "python":
        return _python(parsed.target, parsed.attr, seed)
    if parsed.kind == "export":
        return _exported(parsed.target)
    raise ModelSpecError(f"{parsed.kind}: models have no torch module; use load_onnx for onnx: specs")


def torchvision_default_shape(name: str) -> tuple[int, ...]:
    """1x3xSxS with S = 224, raised to the smallest min_size any of the model's weights declare
    (the weight-free model accepts what its smallest-input weights do; vit_h_14 has 224 and 518)."""
    models = require("torchvision", "torchvision: models").models
    side = _NATIVE_SIDE.get(name, DEFAULT_IMAGE_SIDE)
    try:
        sizes = [w.meta.get("min_size", (1, 1)) for w in models.get_model_weights(name)]
    except ValueError:  # a model with no published weights
        sizes = []
    if sizes:
        side = max(side, min(max(s) for s in sizes))
    return (1, 3, side, side)


def _torchvision(name: str, input_shape: tuple[int, ...] | None, seed: int) -> Built:
    torch = require("torch", "torchvision: models")
    tv = require("torchvision", "torchvision: models")
    names = tv.models.list_models(module=tv.models)
    if name not in names:
        raise unknown_name("torchvision (classification models)", name, names)
    torch.manual_seed(seed)
    model = tv.models.get_model(name, weights=None, **_BUILD_KWARGS.get(name, {})).eval()
    shape = input_shape or torchvision_default_shape(name)
    return model, (torch.randn(shape, generator=torch.Generator().manual_seed(seed)),)


def _python(module_name: str, attr: str, seed: int) -> Built:
    torch = require("torch", "python: models")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(f"python:{module_name}:{attr}: cannot import {module_name!r} ({exc}); "
                             "make sure it is on sys.path (PYTHONPATH) and imports cleanly") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelSpecError(f"python:{module_name}:{attr}: {module_name!r} has no callable {attr!r}")
    torch.manual_seed(seed)
    result = fn()
    ok = isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)
    inputs = result[1] if ok else None
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not ok or not isinstance(inputs, tuple) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ModelSpecError(f"python:{module_name}:{attr} returned {type(result).__name__}; it must "
                             "return (torch.nn.Module, tuple of example input tensors)")
    return result[0].eval(), inputs


def _exported(path: str) -> Built:
    program = load_exported(path)
    args, kwargs = program.example_inputs or ((), {})
    if kwargs or not args:
        raise ModelSpecError(f"export:{path} stores no positional example inputs; re-export with "
                             "torch.export.export(model, args) and save it again")
    return program.module(), tuple(args)


def load_exported(path: str) -> Any:
    """torch.export.load with a clear error for files that are not exported programs."""
    torch = require("torch", "export: models")
    try:
        return torch.export.load(path)
    except (OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelSpecError(f"export:{path} is not a readable torch.export program ({exc}); "
                             "save one with torch.export.save(torch.export.export(model, args), path)"
                             ) from None

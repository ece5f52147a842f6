"""Any PyTorch or ONNX model -> coinfer Graph (`capture`), and back to runnable programs.

    capture("torchvision:resnet18")                 # op granularity, random weights (seed 0)
    capture("hf:gpt2", layers=2, seq_len=64)        # transformers architecture, no download
    capture("export:model.pt2"), capture("onnx:model.onnx"), capture("python:pkg.mod:build")

`load_program(graph.source)` rebuilds the torch.export program (fx node names = `source_nodes`),
`load_onnx` returns the ONNX model, `build_model` the eager module and example inputs.
Importing this package does not import torch; each function does, raising
MissingDependencyError with the extra to install when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coinfer.capture.api import build_model, capture, load_onnx, load_program

__all__ = ["build_model", "capture", "load_onnx", "load_program"]


def __getattr__(name: str) -> Any:
    # Lazy: coinfer.capture.api imports nothing heavy at module level, but keeping the public
    # names behind __getattr__ leaves room for it to, without slowing `import coinfer.capture`.
    if name in __all__:
        from coinfer.capture import api

        return getattr(api, name)
    raise AttributeError(f"module 'coinfer.capture' has no attribute {name!r}")

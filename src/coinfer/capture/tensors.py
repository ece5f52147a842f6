"""TensorSpec of a torch tensor (real or fake), without importing torch."""

from __future__ import annotations

from math import prod
from typing import Any

from coinfer.graph import TensorSpec


def tensor_spec(value: Any) -> TensorSpec | None:
    """Shape, dtype (`float32`) and bytes (numel x element size) of a tensor; None for anything
    else, and for a fake tensor whose sizes are data-dependent symbols (unknown until run)."""
    if not hasattr(value, "shape") or not hasattr(value, "element_size"):
        return None
    if not all(isinstance(d, int) for d in value.shape):  # SymInt sizes of nonzero, masks ...
        return None
    shape = tuple(int(d) for d in value.shape)
    return TensorSpec(prod(shape) * value.element_size(), shape, str(value.dtype).removeprefix("torch."))

"""Optional dependencies, imported only when a feature needs them.

`import coinfer.capture` must work on an install without torch (the planner runs on hand-written
graphs), so every torch, transformers or onnx import goes through `require`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from coinfer.errors import MissingDependencyError

# module -> the extra that installs it (see [project.optional-dependencies] in pyproject.toml)
_EXTRA = {
    "torch": "torch",
    "torchvision": "torch",
    "transformers": "hf",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}


def require(module: str, feature: str) -> ModuleType:
    """Import `module` or raise MissingDependencyError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA.get(module.split(".")[0], "all")
        raise MissingDependencyError(
            f"{feature} needs the Python package {module!r}, which is not installed ({exc}); "
            f"install it with: pip install 'coinfer[{extra}]'"
        ) from None

"""torch.export with the settings capture relies on, and export failures turned into CaptureError.

Export is non-strict (`strict=False`): the model's Python runs as is and only tensor operations
are traced, which accepts far more real models than TorchDynamo's strict mode. The
nn.MultiheadAttention fast path is switched off while exporting and counting: the fused
`_native_multi_head_attention` kernel it calls is invisible to FlopCounterMode, so torchvision's
ViT attention would count as zero FLOPs.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coinfer.capture.deps import require
from coinfer.errors import CaptureError

WORKAROUNDS = (
    "rewrite data-dependent branches with torch.cond (or make them depend on shapes only); "
    "or wrap the model so the branch is fixed and pass python:MODULE:CALLABLE; "
    "or export it yourself (torch.export.export, then torch.export.save) and pass export:PATH; "
    "or export it to ONNX and pass onnx:PATH"
)


@contextlib.contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """Disable the nn.MultiheadAttention fast path, restoring the previous setting afterwards."""
    torch = require("torch", "capture")
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def export_program(model: Any, inputs: tuple[Any, ...], what: str) -> Any:
    """torch.export.export(model, inputs, strict=False), or CaptureError naming what failed."""
    torch = require("torch", "capture")
    with no_mha_fastpath(), torch.no_grad():
        try:
            return torch.export.export(model, inputs, strict=False)
        except Exception as exc:  # torch.export raises many unrelated types; all become CaptureError
            raise CaptureError(describe_export_failure(exc, what)) from exc


def describe_export_failure(exc: BaseException, what: str) -> str:
    """One message naming the construct (the op or the model source line) and the workarounds."""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    first = first.rstrip(".")
    if len(first) > 300:
        first = first[:300] + "..."
    where = _user_frame(exc)
    kind = "data-dependent control flow" if "data-dependent" in str(exc) or "DataDependent" in (
        type(exc).__name__) else f"{type(exc).__name__}"
    at = f" at {where}" if where else ""
    return f"torch.export could not capture {what}: {kind}{at}: {first}. Workarounds: {WORKAROUNDS}"


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside torch and coinfer: the model line that failed."""
    # trailing separators: torchvision's files must not pass for torch's
    torch_dir = str(Path(str(require("torch", "capture").__file__)).parent) + os.sep
    own_dir = str(Path(__file__).parent) + os.sep
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not f.filename.startswith((torch_dir, own_dir))
            and "contextlib" not in f.filename]
    if not user:
        return ""
    f = user[-1]
    line = f" `{f.line.strip()}`" if f.line else ""
    return f"{f.filename}:{f.lineno} in {f.name}{line}"

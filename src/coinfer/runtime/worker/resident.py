"""The weights a worker holds in memory, shared by every deployment that reads them.

A blob is loaded once (memory-mapped from its file in the blob cache: the page cache holds it,
not a copy on the heap) and kept while at least one deployment holds it; when the last one is
undeployed it is dropped from memory (its file stays in the cache for the next deployment).
So a live plan switch that keeps most weights on a device loads only the new ones, and memory
follows the deployments a worker holds, not the ones it ever held.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from coinfer.runtime.blobs import ALIGN, TENSOR_KEY, BlobInfo

log = logging.getLogger(__name__)

Framework = Literal["torch", "onnx"]


class ResidentWeights:
    """sha256 -> loaded blob, with the deployments (plan versions) holding each. Thread-safe."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self._holders: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def resident(self) -> set[str]:
        with self._lock:
            return set(self._loaded)

    def bytes_held(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def acquire(self, version: int, blobs: Iterable[BlobInfo], path_of: Callable[[str], Path],
                framework: Framework) -> dict[str, Any]:
        """Load what is not loaded yet; `version` now holds exactly these blobs (a redeployed version lets
        go of the ones it no longer reads). sha256 -> tensor, array or bytes (torch tensors for a
        PyTorch program, numpy arrays for an ONNX one)."""
        out = {}
        blobs = list(blobs)
        for blob in blobs:
            with self._lock:
                value = self._loaded.get(blob.sha256)
            if value is None:
                value = _load(blob, path_of(blob.sha256), framework)
            with self._lock:
                value = self._loaded.setdefault(blob.sha256, value)
                self._sizes[blob.sha256] = blob.size_bytes
                self._holders.setdefault(blob.sha256, set()).add(version)
            out[blob.sha256] = value
        self._release(version, keep=set(out))
        return out

    def release(self, version: int) -> None:
        self._release(version, keep=set())

    def _release(self, version: int, keep: set[str]) -> None:
        with self._lock:
            for sha in [s for s, holders in self._holders.items() if version in holders and s not in keep]:
                self._holders[sha].discard(version)
                if not self._holders[sha]:
                    del self._holders[sha], self._loaded[sha], self._sizes[sha]


def _load(blob: BlobInfo, path: Path, framework: Framework) -> Any:
    if blob.kind == "onnx":
        return path.read_bytes()
    from safetensors import safe_open

    # torch maps the file (the page cache holds the weights); numpy reads it into memory
    with safe_open(str(path), framework="pt" if framework == "torch" else "np") as f:
        keys = list(f.keys())
        if keys != [TENSOR_KEY]:
            raise ValueError(f"blob {blob.sha256[:12]} holds tensors {keys[:3]}, expected one named {TENSOR_KEY!r}")
        tensor = f.get_tensor(TENSOR_KEY)
    if framework == "torch" and tensor.data_ptr() % ALIGN:
        # kernels round differently on less aligned memory (coinfer.runtime.blobs): a private copy
        log.info("blob %s is not %d-byte aligned in its file; holding a copy", blob.sha256[:12], ALIGN)
        tensor = tensor.clone()
    return tensor

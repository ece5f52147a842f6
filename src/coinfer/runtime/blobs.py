"""Weight blobs: what a deployment ships besides its program, named by the sha256 of their bytes.

A blob is one safetensors file holding one tensor named `tensor` (a parameter, buffer or constant
of a stage), or, for an `onnx:` model, one stage's ONNX sub-model without its initializers. Blobs
are content-addressed: the deploy message lists each one's sha256 and size, the worker answers
with the ones its cache lacks, and only those travel, in chunks of `CHUNK_BYTES` (BLOB messages of
coinfer.runtime.wire, header name = sha256, shape = (offset, total)). So a redeploy, a restarted
worker with its cache, or a live plan switch sends only what is new on that device; and a weight
that two stages (or two deployments) share is held once.

safetensors is the format because reading it runs no code (a JSON header, then raw bytes; never
pickle) and because a file of it can be memory-mapped: a worker's weights are the page cache of
its blob files, not a second copy in its heap. For that the tensor's bytes must start on a
`ALIGN`-byte boundary: CPU kernels (oneDNN, MKL) take other code paths on less aligned memory and
round differently in the last bit, so an 8-byte aligned weight (what safetensors guarantees)
breaks bit-identity. `tensor_blob` pads the header's metadata so the data lands aligned; the
worker copies any tensor that arrives unaligned anyway (coinfer.runtime.worker.resident).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from coinfer.errors import WireError

BlobKind = Literal["tensor", "onnx"]
SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 8 << 20  # one BLOB message; the client keeps WINDOW of them unacknowledged
WINDOW = 4
TENSOR_KEY = "tensor"
PAD_KEY = "pad"  # a metadata entry of filler that aligns the tensor's data
ALIGN = 64  # torch's own CPU allocator alignment


@dataclass(frozen=True)
class BlobInfo:
    """What the deploy message says of one blob."""

    sha256: str
    size_bytes: int
    kind: BlobKind = "tensor"


def sha256_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_blob(tensor: Any) -> bytes:
    """The safetensors bytes of one torch tensor (made contiguous; a view's base is not shipped),
    its data `ALIGN`-aligned in the file (see the module docstring)."""
    import torch
    from safetensors.torch import save

    t = tensor.detach().contiguous()
    # The header's length follows from a one-element tensor's: only the shape and the byte count
    # differ, written as compact JSON. The writer pads the header with spaces to a multiple of 8, so
    # aim the filler at a length = 56 mod 64 (then 8 + header = 0 mod 64) from at least 8 bytes away.
    probe = save({TENSOR_KEY: torch.zeros(1, dtype=t.dtype)}, metadata={PAD_KEY: ""})
    grow = len(json.dumps(list(t.shape), separators=(",", ":"))) - len("[1]") + len(str(t.nbytes)) - \
        len(str(t.element_size()))
    base = int.from_bytes(probe[:8], "little") + grow
    target = base + 8 + (ALIGN - 8 - (base + 8) % ALIGN) % ALIGN
    return save({TENSOR_KEY: t}, metadata={PAD_KEY: "_" * (target - base)})


def array_blob(array: Any) -> bytes:
    """The safetensors bytes of one numpy array."""
    import numpy as np
    from safetensors.numpy import save

    return save({TENSOR_KEY: np.ascontiguousarray(array)})


def check_sha256(name: Any, where: str) -> str:
    if not isinstance(name, str) or not SHA256.match(name):
        raise WireError(f"{where}: {str(name)[:80]!r} is not a sha256 (64 lowercase hex digits)")
    return name

"""Per-link encodings of tensors: `encode(array, codec)` and `decode(meta, payload, dtype, shape, codec)`.

The codecs, their text forms and which tensors they apply to are described in
`coinfer.codec_model`; this module does the work with numpy (and lz4 / zstandard, imported only
when a link uses them). An encoded tensor is two byte strings, never pickle:

- `meta`: empty, except for int8 quantisers: `channels` scales then `channels` offsets (the
  minimum of each channel), little-endian float32 (float64 for float64 tensors). The decoded value
  is `offset + q * scale`, q in 0..255, so its error is at most one step `scale = (max - min) / 255`
  (half a step from rounding, up to another half from casting back to a narrower float).
- `payload`: the quantised elements (little-endian), compressed as one lz4 frame (default level)
  or one zstd frame (level `ZSTD_LEVEL`, content size in the header) when the codec says so. For
  `none` it is a zero-copy memoryview of the (C-contiguous) array.

`decode` checks everything it can against the dtype and shape the receiver was told: the meta
length, the payload length (decompressed length for compressors), bool bytes and int8 scales.
A mismatch raises WireError naming what was expected and what came.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coinfer.codec_model import Codec, channel_axis, effective_codec, meta_bytes
from coinfer.errors import MissingDependencyError, WireError

SUPPORTED_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
# zstd's level 1 is its fastest standard level. On the activations of benchmarks/codec_speed.py
# level 3 compressed no better (median ratio 1.925 vs 1.917 on float32, 1.77 vs 1.81 on int8) at
# two thirds of the speed, a bad trade on a link.
ZSTD_LEVEL = 1
FP16_OVERFLOW = 65520.0  # the smallest magnitude that float16 rounds to infinity

Buffer = bytes | bytearray | memoryview
Floats = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Encoded:
    """One tensor as it goes on the wire: `meta` (int8 scales/offsets) and `payload`."""

    meta: bytes
    payload: bytes | memoryview

    @property
    def nbytes(self) -> int:
        return len(self.meta) + memoryview(self.payload).nbytes


def encode(array: np.ndarray, codec: Codec) -> Encoded:
    """The wire form of `array` under `codec` (see the module docstring for the layout)."""
    dtype = _check_dtype(array.dtype.name)
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    applied = effective_codec(codec, dtype)
    meta = b""
    data: np.ndarray = a
    if applied.quantise == "fp16":
        data = _to_fp16(a)
    elif applied.quantise in ("int8", "int8-channel"):
        data, meta = _quantise_int8(a, per_channel=applied.quantise == "int8-channel")
    raw = data.reshape(-1).view(np.uint8).data  # a memoryview of the array: no copy
    if applied.compress == "lz4":
        return Encoded(meta, _lz4().compress(raw))
    if applied.compress == "zstd":
        return Encoded(meta, _zstd().ZstdCompressor(level=ZSTD_LEVEL).compress(raw))
    return Encoded(meta, raw)


def decode(meta: Buffer, payload: Buffer, dtype: str, shape: tuple[int, ...], codec: Codec) -> np.ndarray:
    """The array of `dtype` and `shape` that `encode` turned into (meta, payload).

    For `none` the result views `payload` (read-only if the payload is); otherwise it is new.
    """
    _check_dtype(dtype)
    if any(not isinstance(d, int | np.integer) or d < 0 for d in shape):
        raise WireError(f"cannot decode a tensor of shape {list(shape)}: dimensions must be non-negative integers")
    shape = tuple(int(d) for d in shape)
    applied = effective_codec(codec, dtype)
    numel = math.prod(shape)
    element_bytes = {"none": np.dtype(dtype).itemsize, "fp16": 2}.get(applied.quantise, 1)
    expected_meta = meta_bytes(applied, dtype, shape)
    got_meta = memoryview(meta).nbytes
    if got_meta != expected_meta:
        raise WireError(f"codec {applied} on a {dtype} tensor of shape {list(shape)} needs {expected_meta} meta "
                        f"bytes, {got_meta} came; the sender used another codec or shape, or the message is corrupt")
    raw = _decompress(payload, applied, numel * element_bytes)
    if applied.quantise == "none":
        out = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
        if dtype == "bool" and numel and np.frombuffer(raw, dtype=np.uint8).max() > 1:
            raise WireError("a bool tensor came with bytes other than 0 and 1; the payload is corrupt")
        return out
    if applied.quantise == "fp16":
        return np.frombuffer(raw, dtype="<f2").reshape(shape).astype(dtype)
    return _dequantise_int8(np.frombuffer(raw, dtype=np.uint8).reshape(shape), bytes(meta), dtype,
                            per_channel=applied.quantise == "int8-channel")


def _check_dtype(dtype: str) -> str:
    if dtype == "bfloat16":
        raise WireError("bfloat16 tensors cannot be encoded: numpy has no bfloat16; convert the tensor to "
                        "float32 (or float16) before it is sent")
    if dtype not in SUPPORTED_DTYPES:
        raise WireError(f"the codecs carry {', '.join(SUPPORTED_DTYPES)} tensors, not {dtype}; convert it first")
    return dtype


def _to_fp16(a: np.ndarray) -> np.ndarray:
    # Finite values from 65520 up round to infinity in float16; two min/max passes find them far
    # faster than checking the converted array (numpy's float16 conversion is the slow step).
    peak = max(float(a.max()), -float(a.min())) if a.size else 0.0
    if math.isfinite(peak) and peak >= FP16_OVERFLOW:
        raise WireError(f"codec fp16 cannot carry this tensor: it holds values up to {peak:.4g}, beyond float16's "
                        f"range of 65504; use int8 or none on this link")
    return a.astype("<f2")


def _quantise_int8(a: np.ndarray, *, per_channel: bool) -> tuple[np.ndarray, bytes]:
    """q = round((x - lo) / scale) per tensor or channel, and the meta bytes (scales, offsets)."""
    work = _work_dtype(a.dtype.name)
    axis = channel_axis(a.ndim) if per_channel else None
    shape = [1] * a.ndim
    if axis is not None:
        shape[axis] = a.shape[axis]
    others = tuple(d for d in range(a.ndim) if d != axis)
    channels = a.shape[axis] if axis is not None else 1
    if a.size == 0:
        lo: Floats = np.zeros(channels, dtype=np.float64)
        hi: Floats = lo
    else:
        lo = a.min(axis=others).astype(np.float64).reshape(-1)
        hi = a.max(axis=others).astype(np.float64).reshape(-1)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise WireError("codec int8 cannot carry a tensor holding NaN or infinity (its range has no finite "
                        "scale); use fp16 or none on this link")
    scale: Floats = ((hi - lo) / 255.0).astype(work)
    offset: Floats = lo.astype(work)
    divisor = np.where(scale > 0, scale, 1).reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint((a.astype(work, copy=False) - offset.reshape(shape)) / divisor)
    q8 = np.clip(q, 0, 255).astype(np.uint8)
    meta = np.concatenate([scale, offset]).astype(work).tobytes()
    return q8, meta


def _dequantise_int8(q: np.ndarray, meta: bytes, dtype: str, *, per_channel: bool) -> np.ndarray:
    work = _work_dtype(dtype)
    values: Floats = np.frombuffer(meta, dtype=work)
    scale, offset = values[: values.size // 2], values[values.size // 2 :]
    if not (np.isfinite(values).all() and (scale >= 0).all()):
        raise WireError("the int8 meta holds a negative or non-finite scale or offset; the message is corrupt")
    axis = channel_axis(q.ndim) if per_channel else None
    shape = [1] * q.ndim
    if axis is not None:
        shape[axis] = q.shape[axis]
    out: Floats = offset.reshape(shape) + q.astype(work) * scale.reshape(shape)
    return out.astype(dtype)


def _work_dtype(dtype: str) -> np.dtype[np.floating[Any]]:
    """Precision of the int8 scales and arithmetic: float64 for float64 tensors, else float32 (LE)."""
    return np.dtype("<f8" if dtype == "float64" else "<f4")


def _decompress(payload: Buffer, codec: Codec, expected: int) -> Buffer:
    """The quantised bytes: `payload` itself, or its one lz4/zstd frame, checked to be `expected` long."""
    got = memoryview(payload).nbytes
    if codec.compress == "none":
        if got != expected:
            raise WireError(f"codec {codec} needs a payload of {expected} bytes for this dtype and shape, "
                            f"{got} came; the sender used another codec or shape, or the message is corrupt")
        return payload
    raw, complete = _lz4_frame(payload, expected) if codec.compress == "lz4" else _zstd_frame(payload, expected)
    if not complete or len(raw) != expected:
        raise WireError(f"the {codec.compress} payload ({got} bytes) decompresses to {len(raw)}"
                        f"{'' if complete else ' or more'} bytes, the dtype and shape need {expected}; the "
                        f"sender used another codec or shape, or the message is corrupt")
    return raw


def _lz4_frame(payload: Buffer, expected: int) -> tuple[bytes, bool]:
    frame = _lz4().LZ4FrameDecompressor()
    try:
        raw: bytes = frame.decompress(payload, max_length=expected)
    except RuntimeError as exc:  # how python-lz4 reports a malformed frame
        raise WireError(f"the lz4 payload ({memoryview(payload).nbytes} bytes) does not decompress ({exc}); "
                        f"the message is corrupt or was encoded with another codec") from None
    return raw, bool(frame.eof and not frame.unused_data)


def _zstd_frame(payload: Buffer, expected: int) -> tuple[bytes, bool]:
    zstd = _zstd()
    try:
        # The frame header states its content size; checking it first keeps a corrupt header from
        # making the receiver allocate whatever it claims.
        size = zstd.frame_content_size(payload)
        if size != expected:
            stated = "no content size" if size == -1 else f"{size} bytes"
            raise WireError(f"the zstd frame header states {stated}, the dtype and shape need {expected} bytes; "
                            f"the sender used another codec or shape, or the message is corrupt")
        frame = zstd.ZstdDecompressor().decompressobj()
        raw: bytes = frame.decompress(payload)
    except zstd.ZstdError as exc:
        raise WireError(f"the zstd payload ({memoryview(payload).nbytes} bytes) does not decompress ({exc}); "
                        f"the message is corrupt or was encoded with another codec") from None
    return raw, bool(frame.eof and not frame.unused_data)


def _lz4() -> Any:
    try:
        import lz4.frame
    except ImportError:
        raise MissingDependencyError("codec lz4 needs the lz4 package: pip install coinfer[runtime]") from None
    return lz4.frame


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        raise MissingDependencyError("codec zstd needs the zstandard package: pip install coinfer[runtime]") from None
    return zstandard

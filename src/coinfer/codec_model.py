"""Per-link codecs as data, and the cost model's view of them (stdlib only: the planner needs no numpy).

A codec is a quantiser, optionally followed by a compressor, written `QUANTISER[+COMPRESSOR]`:

    none          raw bytes (lossless, zero-copy)
    fp16          float32/float64 -> float16 (relative error <= 2^-11 in float16's normal range)
    int8          per-tensor affine: q = round((x - lo) / scale), scale = (max - min) / 255
    int8-channel  per-channel affine over the channel axis (`channel_axis`)
    +lz4, +zstd   a lossless compressor over the quantised bytes; `lz4` alone means `none+lz4`

Quantisers apply to floating tensors only: integer and bool tensors (token ids, masks) are sent as
they are, still compressed if asked (`effective_codec`). fp16 leaves float16/bfloat16 tensors
unchanged. The per-channel axis is dim 1 for tensors of 4 or more dims (C of NCHW), the last dim
for 2-D and 3-D ones (the hidden size of (B, T, C)), and the whole tensor for 0-D and 1-D ones.

The encoded form of the runtime (`coinfer.runtime.codec`) has `meta` (the int8 scales and
offsets: `channels` scales then `channels` offsets, little-endian float32, or float64 for float64
tensors; empty for the other quantisers) and `payload` (the quantised, maybe compressed, bytes).
`wire_bytes` predicts `len(meta) + len(payload)`: exactly without a compressor, and through a
nominal measured compression ratio with one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from coinfer.errors import CodecError
from coinfer.graph import TensorSpec

Quantiser = Literal["none", "fp16", "int8", "int8-channel"]
Compressor = Literal["none", "lz4", "zstd"]
QUANTISERS: tuple[Quantiser, ...] = get_args(Quantiser)
COMPRESSORS: tuple[Compressor, ...] = get_args(Compressor)

# Bytes per element of the dtypes graphs name (torch's names without the "torch." prefix).
DTYPE_BYTES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}
FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16"})
ASSUMED_DTYPE = "float32"  # what a tensor of a hand-written graph (no dtype) is taken to be

# Nominal compression ratios (quantised bytes / compressed bytes) on activations, per
# (quantiser, compressor): medians over 79 intermediate float32 tensors, measured by
# `benchmarks/codec_speed.py` (lz4.frame default level, zstd level 1): the outputs of every
# ReLU/ReLU6 call, residual block and pool of resnet18 (27 tensors) and mobilenet_v2 (52), built
# by `coinfer.capture.build_model` (torchvision architectures, seed-0 random weights, one
# 1x3x224x224 N(0,1) input). ReLU outputs are about half zeros (median 49%), which is what the
# compressors find; the two models alone gave 1.57 / 1.65 (none+lz4), 1.82 / 1.92 (none+zstd),
# 1.41 / 1.41 (int8+lz4), 1.74 / 1.83 (int8+zstd). A pretrained model on real images has sparser
# activations and compresses better, so these are on the cautious side. Tensors that are not
# ReLU outputs (token ids, attention masks, un-activated block outputs) may compress very
# differently: the figure is nominal, for planning.
COMPRESSION_RATIO: dict[tuple[Quantiser, Compressor], float] = {
    ("none", "lz4"): 1.65, ("none", "zstd"): 1.92,
    ("fp16", "lz4"): 1.50, ("fp16", "zstd"): 1.92,
    ("int8", "lz4"): 1.41, ("int8", "zstd"): 1.81,
    ("int8-channel", "lz4"): 1.38, ("int8-channel", "zstd"): 1.67,
}

# Encode and decode speed of each codec, in raw (unencoded) bytes per second: medians over the
# same 79 tensors (each timed as the median of 5 runs) by `benchmarks/codec_speed.py`, on this
# project's machine (AMD EPYC, numpy 2.4, one thread, 2 cores shared with other jobs, so +-30%).
# `none` costs nothing: its payload is a view of the array. numpy's float32 -> float16 cast is
# the slow step of fp16 (1.5 GB/s on resnet18, 0.14 GB/s on mobilenet_v2, whose tiny random-weight
# activations become float16 subnormals); int8 is a handful of vectorised passes.
CODEC_SPEED_BYTES_PER_S: dict[tuple[Quantiser, Compressor], tuple[float, float]] = {
    ("none", "none"): (math.inf, math.inf),
    ("none", "lz4"): (1.28e9, 6.71e9), ("none", "zstd"): (6.41e8, 1.57e9),
    ("fp16", "none"): (6.81e8, 1.22e9), ("fp16", "lz4"): (4.53e8, 1.03e9), ("fp16", "zstd"): (3.73e8, 7.57e8),
    ("int8", "none"): (5.14e9, 9.89e9), ("int8", "lz4"): (2.46e9, 6.21e9), ("int8", "zstd"): (1.54e9, 3.35e9),
    ("int8-channel", "none"): (2.84e9, 6.26e9), ("int8-channel", "lz4"): (1.84e9, 4.87e9),
    ("int8-channel", "zstd"): (1.30e9, 2.91e9),
}


@dataclass(frozen=True)
class Codec:
    """How one directed link encodes the tensors it carries; `str` gives the text form back."""

    quantise: Quantiser = "none"
    compress: Compressor = "none"

    def __post_init__(self) -> None:
        if self.quantise not in QUANTISERS or self.compress not in COMPRESSORS:
            raise CodecError(f"no codec {self.quantise!r}+{self.compress!r}; {_VALID}")

    def __str__(self) -> str:
        return self.quantise if self.compress == "none" else f"{self.quantise}+{self.compress}"

    @property
    def is_lossless(self) -> bool:
        """True when decoding gives back the exact tensor (no quantiser; compressors are lossless)."""
        return self.quantise == "none"


NO_CODEC = Codec()
ALL_CODECS: tuple[Codec, ...] = tuple(Codec(q, c) for q in QUANTISERS for c in COMPRESSORS)
_VALID = ("valid codecs are QUANTISER[+COMPRESSOR] with QUANTISER one of " + ", ".join(QUANTISERS)
          + " and COMPRESSOR one of lz4, zstd (e.g. 'fp16+lz4'), or a compressor alone ('zstd' = 'none+zstd')")
_BY_TEXT: dict[str, Codec] = {str(c): c for c in ALL_CODECS} | {c: Codec("none", c) for c in COMPRESSORS[1:]}


def parse_codec(text: str) -> Codec:
    """The codec written as `text` (forms in the module docstring); a bad form raises CodecError."""
    codec = _BY_TEXT.get(text.strip().lower())
    if codec is None:
        raise CodecError(f"cannot read codec {text!r}; {_VALID}")
    return codec


def effective_codec(codec: Codec, dtype: str | None) -> Codec:
    """The codec actually applied to a tensor of `dtype`: quantisers skip integer and bool tensors,
    and fp16 skips tensors that already have 2-byte floats. None (unknown) counts as float32."""
    dtype = dtype if dtype in DTYPE_BYTES else ASSUMED_DTYPE
    if codec.quantise == "none":
        return codec
    if dtype not in FLOAT_DTYPES or (codec.quantise == "fp16" and DTYPE_BYTES[dtype] <= 2):
        return Codec("none", codec.compress)
    return codec


def channel_axis(ndim: int) -> int | None:
    """The axis int8-channel keeps one scale per index of: dim 1 from 4-D up (C of NCHW), the last
    dim of 2-D and 3-D tensors ((B, C), (B, T, C)), None (the whole tensor) below 2-D."""
    if ndim >= 4:
        return 1
    return ndim - 1 if ndim >= 2 else None


def meta_bytes(codec: Codec, dtype: str | None, shape: tuple[int, ...] | None) -> int:
    """Bytes of the int8 scales and offsets (0 for other quantisers); see the module docstring.
    An unknown shape counts as one channel."""
    codec = effective_codec(codec, dtype)
    if codec.quantise not in ("int8", "int8-channel"):
        return 0
    axis = channel_axis(len(shape)) if shape is not None and codec.quantise == "int8-channel" else None
    channels = shape[axis] if shape is not None and axis is not None else 1
    return 2 * channels * (8 if dtype == "float64" else 4)


def wire_bytes(codec: Codec, spec: TensorSpec) -> int:
    """Predicted bytes of one tensor on the wire under `codec`: meta plus (maybe compressed) payload."""
    dtype = spec.dtype if spec.dtype in DTYPE_BYTES else ASSUMED_DTYPE
    applied = effective_codec(codec, dtype)
    if applied.quantise == "none":
        payload = spec.size_bytes
    else:
        numel = math.prod(spec.shape) if spec.shape is not None else spec.size_bytes // DTYPE_BYTES[dtype]
        payload = numel * (2 if applied.quantise == "fp16" else 1)
    if applied.compress != "none":
        payload = math.ceil(payload / COMPRESSION_RATIO[(applied.quantise, applied.compress)])
    return meta_bytes(applied, dtype, spec.shape) + payload


def codec_time_s(codec: Codec, size_bytes: float) -> float:
    """Encode plus decode time of a tensor of `size_bytes` raw bytes, from the measured speeds.
    Pass the `effective_codec` of the tensor's dtype: a skipped quantiser costs nothing."""
    encode_bytes_per_s, decode_bytes_per_s = CODEC_SPEED_BYTES_PER_S[(codec.quantise, codec.compress)]
    return size_bytes / encode_bytes_per_s + size_bytes / decode_bytes_per_s
